//! `-w json`: one line of JSON per answer, byte for byte what Go's
//! `encoding/json` writes for etcdctl: integers unquoted (even uint64 IDs),
//! bytes in padded base64, and `<`, `>`, `&` escaped.

use std::io;

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::ser::{CharEscape, Formatter};

/// Serialises `value` the way Go does, followed by a newline.
pub(crate) fn line<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value.serialize(&mut serializer)?;
    out.push(b'\n');
    Ok(out)
}

/// The string escaping of Go's `encoding/json`, which differs from serde_json's
/// default in the HTML-sensitive characters and in `\b`/`\f`.
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut start = 0;
        for (index, ch) in fragment.char_indices() {
            let escaped = match ch {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..index])?;
            writer.write_all(escaped.as_bytes())?;
            start = index + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W>(&mut self, writer: &mut W, char_escape: CharEscape) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let escaped = match char_escape {
            CharEscape::Quote => "\\\"".to_owned(),
            CharEscape::ReverseSolidus => "\\\\".to_owned(),
            CharEscape::Solidus => "/".to_owned(),
            CharEscape::LineFeed => "\\n".to_owned(),
            CharEscape::CarriageReturn => "\\r".to_owned(),
            CharEscape::Tab => "\\t".to_owned(),
            CharEscape::Backspace => "\\u0008".to_owned(),
            CharEscape::FormFeed => "\\u000c".to_owned(),
            CharEscape::AsciiControl(byte) => format!("\\u{byte:04x}"),
        };
        writer.write_all(escaped.as_bytes())
    }
}

/// Standard padded base64, Go's encoding of `[]byte` in JSON.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (index, byte)| {
            group | u32::from(*byte) << (16 - 8 * index)
        });
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (group >> (18 - 6 * position)) & 0x3f;
                text.push(char::from(ALPHABET[index as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// `serialize_with` for a byte field.
pub(crate) fn base64_bytes<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&base64(bytes))
}

/// `serialize_with` for a list of byte strings: null when empty, as Go
/// writes a nil slice.
pub(crate) fn base64_list<S: Serializer>(
    list: &[Vec<u8>],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if list.is_empty() {
        return serializer.serialize_none();
    }
    let mut seq = serializer.serialize_seq(Some(list.len()))?;
    for bytes in list {
        seq.serialize_element(&base64(bytes))?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn text<T: Serialize>(value: &T) -> String {
        String::from_utf8(line(value).expect("serialises")).expect("utf-8")
    }

    fn header(revision: i64) -> Option<Header> {
        Some(Header {
            cluster_id: 324952591200643719,
            member_id: 3319814642761637952,
            revision,
            raft_term: 2,
        })
    }

    fn kv(key: &str, value: &str, revision: i64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            value: value.as_bytes().to_vec(),
            lease: 0,
        }
    }

    #[test]
    fn base64_pads_like_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"k"), "aw==");
        assert_eq!(base64(b"key1"), "a2V5MQ==");
        assert_eq!(base64(b"value0"), "dmFsdWUw");
        assert_eq!(base64(b"v5b"), "djVi");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn range_matches_etcdctl() {
        let result = RangeResult {
            header: header(2),
            kvs: vec![kv("key1", "v1", 2)],
            more: false,
            count: 1,
        };
        assert_eq!(
            text(&result),
            "{\"header\":{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":2,\"raft_term\":2},\
             \"kvs\":[{\"key\":\"a2V5MQ==\",\"create_revision\":2,\"mod_revision\":2,\"version\":1,\"value\":\"djE=\"}],\"count\":1}\n"
        );
        let empty = RangeResult {
            header: header(19),
            ..RangeResult::default()
        };
        assert_eq!(
            text(&empty),
            "{\"header\":{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":19,\"raft_term\":2}}\n"
        );
    }

    #[test]
    fn txn_shows_the_oneof_wrappers() {
        let inner = Some(Header {
            revision: 21,
            ..Header::default()
        });
        let result = TxnResult {
            header: header(21),
            succeeded: false,
            responses: vec![
                TxnOpResult {
                    response: TxnOpKind::Put(PutResult {
                        header: inner.clone(),
                        prev_kv: None,
                    }),
                },
                TxnOpResult {
                    response: TxnOpKind::DeleteRange(DeleteResult {
                        header: inner,
                        deleted: 1,
                        prev_kvs: vec![],
                    }),
                },
            ],
        };
        assert_eq!(
            text(&result),
            "{\"header\":{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":21,\"raft_term\":2},\
             \"responses\":[{\"Response\":{\"ResponsePut\":{\"header\":{\"revision\":21}}}},\
             {\"Response\":{\"ResponseDeleteRange\":{\"header\":{\"revision\":21},\"deleted\":1}}}]}\n"
        );
    }

    #[test]
    fn watch_uses_clientv3_field_names() {
        let result = WatchResult {
            header: Header {
                cluster_id: 7,
                member_id: 8,
                revision: 0,
                raft_term: 2,
            },
            events: vec![Event {
                kind: EVENT_DELETE,
                kv: Some(KeyValue {
                    key: b"k2".to_vec(),
                    mod_revision: 32,
                    ..KeyValue::default()
                }),
                prev_kv: None,
            }],
            compact_revision: 12,
            canceled: true,
            created: false,
            cancel_reason: "ignored".to_owned(),
        };
        assert_eq!(
            text(&result),
            "{\"Header\":{\"cluster_id\":7,\"member_id\":8,\"raft_term\":2},\
             \"Events\":[{\"type\":1,\"kv\":{\"key\":\"azI=\",\"mod_revision\":32}}],\
             \"CompactRevision\":12,\"Canceled\":true,\"Created\":false}\n"
        );
    }

    #[test]
    fn lease_replies_inline_the_header() {
        let grant = LeaseGrantResult {
            header: header(36),
            id: 2324035611027987528,
            ttl: 100,
            error: String::new(),
        };
        assert_eq!(
            text(&grant),
            "{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":36,\"raft_term\":2,\
             \"ID\":2324035611027987528,\"TTL\":100,\"Error\":\"\"}\n"
        );
        let ttl = LeaseTimeToLiveResult {
            header: header(38),
            id: 4660,
            ttl: -1,
            granted_ttl: 0,
            keys: vec![],
        };
        assert_eq!(
            text(&ttl),
            "{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":38,\"raft_term\":2,\
             \"id\":4660,\"ttl\":-1,\"granted-ttl\":0,\"keys\":null}\n"
        );
        let list = LeaseListResult {
            header: header(36),
            leases: vec![LeaseId { id: 5 }],
        };
        assert!(text(&list).ends_with(",\"raft_term\":2,\"leases\":[{\"id\":5}]}\n"));
    }

    #[test]
    fn members_and_status_use_proto_json_names() {
        let members = MembersResult {
            header: Some(Header {
                cluster_id: 1,
                member_id: 2,
                revision: 0,
                raft_term: 2,
            }),
            members: vec![
                Member {
                    id: 2,
                    name: "n1".to_owned(),
                    peer_urls: vec!["http://127.0.0.1:23800".to_owned()],
                    client_urls: vec!["http://127.0.0.1:23790".to_owned()],
                    is_learner: false,
                },
                Member {
                    id: 3,
                    peer_urls: vec!["http://127.0.0.1:23801".to_owned()],
                    is_learner: true,
                    ..Member::default()
                },
            ],
        };
        assert_eq!(
            text(&members),
            "{\"header\":{\"cluster_id\":1,\"member_id\":2,\"raft_term\":2},\"members\":[\
             {\"ID\":2,\"name\":\"n1\",\"peerURLs\":[\"http://127.0.0.1:23800\"],\"clientURLs\":[\"http://127.0.0.1:23790\"]},\
             {\"ID\":3,\"peerURLs\":[\"http://127.0.0.1:23801\"],\"isLearner\":true}]}\n"
        );
        let status = vec![EndpointStatus {
            endpoint: "127.0.0.1:23790".to_owned(),
            status: Status {
                header: header(39),
                version: "3.4.23".to_owned(),
                db_size: 24576,
                leader: 3319814642761637952,
                raft_index: 59,
                raft_term: 2,
                raft_applied_index: 59,
                errors: vec![],
                db_size_in_use: 20480,
                is_learner: false,
            },
        }];
        assert_eq!(
            text(&status),
            "[{\"Endpoint\":\"127.0.0.1:23790\",\"Status\":{\"header\":{\"cluster_id\":324952591200643719,\
             \"member_id\":3319814642761637952,\"revision\":39,\"raft_term\":2},\"version\":\"3.4.23\",\"dbSize\":24576,\
             \"leader\":3319814642761637952,\"raftIndex\":59,\"raftTerm\":2,\"raftAppliedIndex\":59,\"dbSizeInUse\":20480}}]\n"
        );
    }

    #[test]
    fn strings_escape_like_go() {
        let health = vec![EndpointHealth {
            endpoint: "a<b>&c".to_owned(),
            health: false,
            took: "961.627µs".to_owned(),
            error: "x\u{8}\u{c}\u{1}\"\\\n".to_owned(),
        }];
        assert_eq!(
            text(&health),
            "[{\"endpoint\":\"a\\u003cb\\u003e\\u0026c\",\"health\":false,\"took\":\"961.627µs\",\
             \"error\":\"x\\u0008\\u000c\\u0001\\\"\\\\\\n\"}]\n"
        );
    }
}
