//! Go's text conventions, reproduced where etcdctl's output depends on them:
//! durations (`1.5ms`), `go-humanize` byte sizes (`25 kB`), `%q` quoting,
//! string-literal unquoting and `strconv` parse errors.

use std::num::IntErrorKind;
use std::time::Duration;

/// Parses a Go duration such as `2s`, `500ms` or `1m30s`, as etcdctl's
/// timeout flags accept them.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration \"{text}\"");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || negative {
        return Err(invalid());
    }
    let mut total_nanos = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration \"{text}\""))?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            unit => {
                return Err(format!(
                    "time: unknown unit \"{unit}\" in duration \"{text}\""
                ))
            }
        };
        total_nanos += number * unit_nanos;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Formats a duration the way Go's `time.Duration.String` does.
pub(crate) fn duration_string(duration: Duration) -> String {
    const MICRO: u128 = 1_000;
    const MILLI: u128 = 1_000_000;
    const SECOND: u128 = 1_000_000_000;
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < MICRO {
        return format!("{nanos}ns");
    }
    if nanos < MILLI {
        return with_fraction(nanos, MICRO, 3, "µs");
    }
    if nanos < SECOND {
        return with_fraction(nanos, MILLI, 6, "ms");
    }
    let whole_seconds = nanos / SECOND;
    let hours = whole_seconds / 3600;
    let minutes = (whole_seconds / 60) % 60;
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    let seconds_nanos = (whole_seconds % 60) * SECOND + nanos % SECOND;
    text.push_str(&with_fraction(seconds_nanos, SECOND, 9, "s"));
    text
}

fn with_fraction(value: u128, unit: u128, digits: usize, suffix: &str) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return format!("{whole}{suffix}");
    }
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}{suffix}", fraction.trim_end_matches('0'))
}

/// A byte count in SI units, as `go-humanize`'s `Bytes` prints it (etcdctl's
/// DB SIZE column).
pub(crate) fn humanize_bytes(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if size < 10 {
        return format!("{size} B");
    }
    let size = size as f64;
    let exponent = (size.ln() / 1000f64.ln()).floor();
    let unit = UNITS[(exponent as usize).min(UNITS.len() - 1)];
    let value = (size / 1000f64.powf(exponent) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// Go's `%q` of a byte string: a double-quoted literal with Go escapes.
pub(crate) fn quote(bytes: &[u8]) -> String {
    let mut text = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '"' => text.push_str("\\\""),
                '\\' => text.push_str("\\\\"),
                '\u{7}' => text.push_str("\\a"),
                '\u{8}' => text.push_str("\\b"),
                '\u{c}' => text.push_str("\\f"),
                '\n' => text.push_str("\\n"),
                '\r' => text.push_str("\\r"),
                '\t' => text.push_str("\\t"),
                '\u{b}' => text.push_str("\\v"),
                ch if (ch as u32) < 0x20 || ch == '\u{7f}' => {
                    text.push_str(&format!("\\x{:02x}", ch as u32));
                }
                ch if ch.is_control() || (ch.is_whitespace() && ch != ' ') => {
                    let code = ch as u32;
                    if code < 0x10000 {
                        text.push_str(&format!("\\u{code:04x}"));
                    } else {
                        text.push_str(&format!("\\U{code:08x}"));
                    }
                }
                ch => text.push(ch),
            }
        }
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text.push('"');
    text
}

/// Go's `strconv.Unquote` for a double-quoted or back-quoted literal, as
/// etcdctl uses it on quoted words. `None` is Go's "invalid syntax".
pub(crate) fn unquote(literal: &str) -> Option<Vec<u8>> {
    if let Some(raw) = literal
        .strip_prefix('`')
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return (!raw.contains('`')).then(|| raw.replace('\r', "").into_bytes());
    }
    let body = literal.strip_prefix('"')?.strip_suffix('"')?;
    let mut bytes = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '"' | '\n' => return None,
            '\\' => unescape(&mut chars, &mut bytes)?,
            ch => {
                let mut buffer = [0u8; 4];
                bytes.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    Some(bytes)
}

fn unescape(chars: &mut std::str::Chars<'_>, bytes: &mut Vec<u8>) -> Option<()> {
    let simple = |byte: u8, bytes: &mut Vec<u8>| {
        bytes.push(byte);
        Some(())
    };
    match chars.next()? {
        'a' => simple(0x07, bytes),
        'b' => simple(0x08, bytes),
        'f' => simple(0x0c, bytes),
        'n' => simple(b'\n', bytes),
        'r' => simple(b'\r', bytes),
        't' => simple(b'\t', bytes),
        'v' => simple(0x0b, bytes),
        '\\' => simple(b'\\', bytes),
        '"' => simple(b'"', bytes),
        'x' => {
            let value = take_digits(chars, 2, 16)?;
            simple(u8::try_from(value).ok()?, bytes)
        }
        first @ '0'..='7' => {
            let rest = take_digits(chars, 2, 8)?;
            let value = first.to_digit(8)? * 64 + rest;
            simple(u8::try_from(value).ok()?, bytes)
        }
        'u' => push_char(take_digits(chars, 4, 16)?, bytes),
        'U' => push_char(take_digits(chars, 8, 16)?, bytes),
        _ => None,
    }
}

fn take_digits(chars: &mut std::str::Chars<'_>, count: usize, radix: u32) -> Option<u32> {
    let mut value = 0u32;
    for _ in 0..count {
        value = value.checked_mul(radix)? + chars.next()?.to_digit(radix)?;
    }
    Some(value)
}

fn push_char(code: u32, bytes: &mut Vec<u8>) -> Option<()> {
    let ch = char::from_u32(code)?;
    let mut buffer = [0u8; 4];
    bytes.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
    Some(())
}

/// Go's `strconv.ParseInt(text, radix, 64)`, with Go's error text.
pub(crate) fn parse_i64(text: &str, radix: u32) -> Result<i64, String> {
    i64::from_str_radix(text, radix).map_err(|error| strconv_error("ParseInt", text, error.kind()))
}

/// Go's `strconv.ParseUint(text, radix, 64)`, with Go's error text.
pub(crate) fn parse_u64(text: &str, radix: u32) -> Result<u64, String> {
    if text.starts_with('+') {
        return Err(strconv_error(
            "ParseUint",
            text,
            &IntErrorKind::InvalidDigit,
        ));
    }
    u64::from_str_radix(text, radix).map_err(|error| strconv_error("ParseUint", text, error.kind()))
}

fn strconv_error(function: &str, text: &str, kind: &IntErrorKind) -> String {
    let reason = match kind {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
        _ => "invalid syntax",
    };
    format!(
        "strconv.{function}: parsing {}: {reason}",
        quote(text.as_bytes())
    )
}

/// An I/O error as Go prints the underlying syscall error: lowercase, no
/// `(os error N)` suffix.
pub(crate) fn io_error_text(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" (os error ") {
        Some(index) => &text[..index],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(duration_string(Duration::ZERO), "0s");
        assert_eq!(duration_string(Duration::from_nanos(100)), "100ns");
        assert_eq!(duration_string(Duration::from_nanos(961_627)), "961.627µs");
        assert_eq!(
            duration_string(Duration::from_nanos(1_097_008)),
            "1.097008ms"
        );
        assert_eq!(duration_string(Duration::from_millis(5)), "5ms");
        assert_eq!(duration_string(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_string(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration_string(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn byte_sizes_print_like_go_humanize() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(9), "9 B");
        assert_eq!(humanize_bytes(10), "10 B");
        assert_eq!(humanize_bytes(999), "999 B");
        assert_eq!(humanize_bytes(1000), "1.0 kB");
        assert_eq!(humanize_bytes(24_576), "25 kB");
        assert_eq!(humanize_bytes(20_480), "20 kB");
        assert_eq!(humanize_bytes(2_097_152), "2.1 MB");
    }

    #[test]
    fn quoting_escapes_like_go() {
        assert_eq!(quote(b"key"), "\"key\"");
        assert_eq!(quote(b""), "\"\"");
        assert_eq!(quote(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote(b"tab\there\n"), "\"tab\\there\\n\"");
        assert_eq!(quote(b"\x00\xff"), "\"\\x00\\xff\"");
        assert_eq!(quote("µ".as_bytes()), "\"µ\"");
    }

    #[test]
    fn unquoting_follows_go_literals() {
        assert_eq!(unquote("\"a b\""), Some(b"a b".to_vec()));
        assert_eq!(unquote("\"a\\tb\\x41\""), Some(b"a\tbA".to_vec()));
        assert_eq!(unquote("\"\\101\\u00e9\""), Some("Aé".as_bytes().to_vec()));
        assert_eq!(unquote("\"\\xff\""), Some(vec![0xff]));
        assert_eq!(unquote("`raw \\n`"), Some(b"raw \\n".to_vec()));
        assert_eq!(unquote("\"bad \\q\""), None);
        assert_eq!(unquote("\"it\\'s\""), None);
        assert_eq!(unquote("\"open"), None);
    }

    #[test]
    fn int_errors_read_like_strconv() {
        assert_eq!(parse_i64("ff", 16), Ok(255));
        assert_eq!(
            parse_i64("abc", 10),
            Err("strconv.ParseInt: parsing \"abc\": invalid syntax".to_owned())
        );
        assert_eq!(
            parse_u64("zz", 16),
            Err("strconv.ParseUint: parsing \"zz\": invalid syntax".to_owned())
        );
        assert_eq!(
            parse_i64("99999999999999999999", 10),
            Err(
                "strconv.ParseInt: parsing \"99999999999999999999\": value out of range".to_owned()
            )
        );
    }

    #[test]
    fn io_errors_read_like_go() {
        let error = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_error_text(&error), "no such file or directory");
    }
}
