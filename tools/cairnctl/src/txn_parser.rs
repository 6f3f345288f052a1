//! The text `txn` reads from stdin, in etcdctl's grammar.
//!
//! A compare is `<target>("<key>") <op> "<operand>"`: targets `version`
//! (`ver`), `create` (`c`), `mod` (`m`), `value` (`val`) and `lease`; ops `=`,
//! `!=`, `<` and `>`; key and operand are Go string literals, double-quoted
//! with escapes or back-quoted. Revisions and versions are decimal; a lease
//! is hexadecimal, as etcdctl prints lease IDs.
//!
//! An op is a `put`, `get` or `del` command line with the same flags as the
//! commands, split into words like a shell would, roughly: double-quoted
//! words are Go literals, single-quoted words are taken as they are.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::{Parser, Subcommand};

use crate::args::{DelArgs, GetArgs, PutArgs};
use crate::go_fmt;

/// What a compare looks at, with the operand it is compared against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

/// How a compare relates the key's current state to the operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareResult {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One parsed compare line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compare {
    pub key: Vec<u8>,
    pub result: CompareResult,
    pub target: CompareTarget,
}

/// One parsed op line, with the same arguments as the command it names.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum TxnOpSpec {
    Put(PutArgs),
    Get(GetArgs),
    Del(DelArgs),
}

/// A line that does not parse, with etcdctl's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ParseError(pub String);

#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct OpLine {
    #[command(subcommand)]
    op: TxnOpSpec,
}

/// Parses one compare line.
pub(crate) fn parse_compare(line: &str) -> Result<Compare, ParseError> {
    let line = line.trim();
    let Some((target, rest)) = line.split_once('(') else {
        return Err(ParseError(format!("malformed comparison: {line}")));
    };
    let scanned = scan_compare_tail(rest);
    let (Some(key), Some(op), Some(value)) = (&scanned.key, &scanned.op, &scanned.value) else {
        return Err(ParseError(format!(
            "malformed comparison: {line}; got {target}({}) {} {}",
            go_fmt::quote(scanned.key.as_deref().unwrap_or_default()),
            scanned.op.as_deref().unwrap_or_default(),
            go_fmt::quote(scanned.value.as_deref().unwrap_or_default()),
        )));
    };
    let number = |radix: u32| {
        std::str::from_utf8(value)
            .ok()
            .and_then(|text| i64::from_str_radix(text, radix).ok())
            .ok_or_else(|| ParseError(format!("invalid txn compare request: {line}")))
    };
    let target = match target {
        "ver" | "version" => CompareTarget::Version(number(10)?),
        "c" | "create" => CompareTarget::Create(number(10)?),
        "m" | "mod" => CompareTarget::Mod(number(10)?),
        "val" | "value" => CompareTarget::Value(value.clone()),
        "lease" => CompareTarget::Lease(number(16)?),
        unknown => {
            return Err(ParseError(format!(
                "malformed comparison: {line} (unknown target {unknown})"
            )))
        }
    };
    let result = match op.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        unknown => {
            return Err(ParseError(format!(
                "malformed comparison: {line} (unknown result op {unknown})"
            )))
        }
    };
    Ok(Compare {
        key: key.clone(),
        result,
        target,
    })
}

/// What `"key") op "value"` yielded, up to the first thing that did not scan
/// (Go's `fmt.Sscanf(rest, "%q) %s %q", …)`).
#[derive(Debug, Default)]
struct ScannedCompare {
    key: Option<Vec<u8>>,
    op: Option<String>,
    value: Option<Vec<u8>>,
}

fn scan_compare_tail(rest: &str) -> ScannedCompare {
    let mut scanned = ScannedCompare::default();
    let mut scanner = Scanner { rest };
    scanner.skip_spaces();
    scanned.key = scanner.quoted();
    if scanned.key.is_none() || !scanner.literal(')') {
        return scanned;
    }
    scanner.skip_spaces();
    scanned.op = scanner.word();
    if scanned.op.is_none() {
        return scanned;
    }
    scanner.skip_spaces();
    scanned.value = scanner.quoted();
    scanned
}

struct Scanner<'a> {
    rest: &'a str,
}

impl Scanner<'_> {
    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn literal(&mut self, expected: char) -> bool {
        match self.rest.strip_prefix(expected) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn word(&mut self) -> Option<String> {
        let end = self
            .rest
            .find(char::is_whitespace)
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let word = self.rest[..end].to_owned();
        self.rest = &self.rest[end..];
        Some(word)
    }

    /// A Go string literal at the start of the input.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        let end = literal_end(self.rest)?;
        let value = go_fmt::unquote(&self.rest[..=end])?;
        self.rest = &self.rest[end + 1..];
        Some(value)
    }
}

/// Where the Go string literal that opens `text` closes: the next unescaped
/// `"` after a `"`, or the next `` ` `` after a `` ` ``.
fn literal_end(text: &str) -> Option<usize> {
    let mut chars = text.char_indices();
    match chars.next()?.1 {
        '"' => {
            let mut escaped = false;
            for (index, ch) in chars {
                match ch {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => return Some(index),
                    _ => {}
                }
            }
            None
        }
        '`' => chars.find(|(_, ch)| *ch == '`').map(|(index, _)| index),
        _ => None,
    }
}

/// The whitespace etcdctl splits op lines at (RE2's `\s`).
fn is_separator(ch: char) -> bool {
    matches!(ch, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// Splits an op line into words. A double-quoted word is a Go literal (a
/// bad escape is an error); a single-quoted word is taken verbatim; a quote
/// that never closes is skipped; anything else runs to the next space.
pub(crate) fn split_words(line: &str) -> Result<Vec<Vec<u8>>, ParseError> {
    let mut words = Vec::new();
    let mut rest = line.trim_start_matches(is_separator);
    while let Some(first) = rest.chars().next() {
        match first {
            '"' => match literal_end(rest) {
                Some(end) => {
                    let word = go_fmt::unquote(&rest[..=end])
                        .ok_or_else(|| ParseError("invalid syntax".to_owned()))?;
                    words.push(word);
                    rest = &rest[end + 1..];
                }
                None => rest = &rest[1..],
            },
            '\'' => match rest[1..].find('\'') {
                Some(length) => {
                    words.push(rest.as_bytes()[1..=length].to_vec());
                    rest = &rest[length + 2..];
                }
                None => rest = &rest[1..],
            },
            _ => {
                let end = rest.find(is_separator).unwrap_or(rest.len());
                words.push(rest.as_bytes()[..end].to_vec());
                rest = &rest[end..];
            }
        }
        rest = rest.trim_start_matches(is_separator);
    }
    Ok(words)
}

/// Parses one op line into the arguments of the command it names.
pub(crate) fn parse_op(line: &str) -> Result<TxnOpSpec, ParseError> {
    let line = line.trim();
    let words = split_words(line)?;
    if words.len() < 2 {
        // etcdctl's wording, though the line is an op.
        return Err(ParseError(format!("invalid txn compare request: {line}")));
    }
    OpLine::try_parse_from(words.into_iter().map(OsString::from_vec))
        .map(|parsed| parsed.op)
        .map_err(|_| ParseError(format!("invalid txn request: {line}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(target: CompareTarget, key: &str, result: CompareResult) -> Compare {
        Compare {
            key: key.as_bytes().to_vec(),
            result,
            target,
        }
    }

    #[test]
    fn compares_of_every_target() {
        assert_eq!(
            parse_compare("mod(\"key1\") > \"0\""),
            Ok(compare(
                CompareTarget::Mod(0),
                "key1",
                CompareResult::Greater
            ))
        );
        assert_eq!(
            parse_compare("value(\"k\") = \"v\"\n"),
            Ok(compare(
                CompareTarget::Value(b"v".to_vec()),
                "k",
                CompareResult::Equal
            ))
        );
        assert_eq!(
            parse_compare("ver(\"k\") != \"3\""),
            Ok(compare(
                CompareTarget::Version(3),
                "k",
                CompareResult::NotEqual
            ))
        );
        assert_eq!(
            parse_compare("c(\"k\") < \"100\""),
            Ok(compare(
                CompareTarget::Create(100),
                "k",
                CompareResult::Less
            ))
        );
        assert_eq!(
            parse_compare("lease(\"k\") = \"694d77aa9e38260f\""),
            Ok(compare(
                CompareTarget::Lease(0x694d77aa9e38260f),
                "k",
                CompareResult::Equal
            ))
        );
    }

    #[test]
    fn compare_literals_are_go_strings() {
        assert_eq!(
            parse_compare("val(\"a b\\t\")   =   \"x\\\"y\""),
            Ok(compare(
                CompareTarget::Value(b"x\"y".to_vec()),
                "a b\t",
                CompareResult::Equal
            ))
        );
        assert_eq!(
            parse_compare("value(`raw\\n`) = `v`"),
            Ok(compare(
                CompareTarget::Value(b"v".to_vec()),
                "raw\\n",
                CompareResult::Equal
            ))
        );
        assert_eq!(
            parse_compare("value(\"k\") = \"v\" and anything after"),
            Ok(compare(
                CompareTarget::Value(b"v".to_vec()),
                "k",
                CompareResult::Equal
            ))
        );
    }

    #[test]
    fn malformed_compares_say_what_scanned() {
        let error = |line: &str| parse_compare(line).err().map(|error| error.0);
        assert_eq!(
            error("version(key2) = \"2\""),
            Some("malformed comparison: version(key2) = \"2\"; got version(\"\")  \"\"".to_owned())
        );
        assert_eq!(
            error("mod(\"k\")>\"0\""),
            Some("malformed comparison: mod(\"k\")>\"0\"; got mod(\"k\") >\"0\" \"\"".to_owned())
        );
        assert_eq!(
            error("foo(\"key2\") = \"2\""),
            Some("malformed comparison: foo(\"key2\") = \"2\" (unknown target foo)".to_owned())
        );
        assert_eq!(
            error("version(\"key2\") = \"x\""),
            Some("invalid txn compare request: version(\"key2\") = \"x\"".to_owned())
        );
        assert_eq!(
            error("version(\"k\") <= \"1\""),
            Some("malformed comparison: version(\"k\") <= \"1\" (unknown result op <=)".to_owned())
        );
        assert_eq!(
            error("no parenthesis"),
            Some("malformed comparison: no parenthesis".to_owned())
        );
    }

    #[test]
    fn words_split_like_etcdctl() {
        let words = |line: &str| {
            split_words(line).map(|words| {
                words
                    .into_iter()
                    .map(|word| String::from_utf8(word).expect("utf-8"))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            words("put k v\n"),
            Ok(vec!["put".into(), "k".into(), "v".into()])
        );
        assert_eq!(
            words("put \"a b\" 'c d'"),
            Ok(vec!["put".into(), "a b".into(), "c d".into()])
        );
        assert_eq!(
            words("put k5 \"a\\tb\\x41\""),
            Ok(vec!["put".into(), "k5".into(), "a\tbA".into()])
        );
        assert_eq!(
            words("put k4 a'b c'd"),
            Ok(vec!["put".into(), "k4".into(), "a'b".into(), "c'd".into()])
        );
        assert_eq!(
            words("put k7 ab\"cd ef\""),
            Ok(vec![
                "put".into(),
                "k7".into(),
                "ab\"cd".into(),
                "ef\"".into()
            ])
        );
        assert_eq!(
            words("get \"unterminated"),
            Ok(vec!["get".into(), "unterminated".into()])
        );
        assert_eq!(words("   "), Ok(vec![]));
        assert_eq!(
            split_words("put k \"\\q\""),
            Err(ParseError("invalid syntax".to_owned()))
        );
    }

    #[test]
    fn ops_take_their_commands_flags() {
        let Ok(TxnOpSpec::Put(put)) = parse_op("put k v --prev-kv --lease=1a") else {
            panic!("not a put");
        };
        assert_eq!(put.args, [OsString::from("k"), OsString::from("v")]);
        assert!(put.prev_kv);
        assert_eq!(put.lease, "1a");
        let Ok(TxnOpSpec::Get(get)) = parse_op("get key --prefix --limit=1") else {
            panic!("not a get");
        };
        assert!(get.prefix);
        assert_eq!(get.limit, 1);
        let Ok(TxnOpSpec::Del(del)) = parse_op("del a b") else {
            panic!("not a del");
        };
        assert_eq!(del.args, [OsString::from("a"), OsString::from("b")]);
    }

    #[test]
    fn bad_ops_read_like_etcdctl() {
        let error = |line: &str| parse_op(line).err().map(|error| error.0);
        assert_eq!(
            error("get"),
            Some("invalid txn compare request: get".to_owned())
        );
        assert_eq!(
            error("foo bar"),
            Some("invalid txn request: foo bar".to_owned())
        );
        assert_eq!(
            error("put k v --bogus"),
            Some("invalid txn request: put k v --bogus".to_owned())
        );
    }
}
