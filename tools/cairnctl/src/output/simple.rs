//! `-w simple`, etcdctl's default: bare keys and values one per line, and
//! one-line sentences for everything else. Keys and values are written as
//! raw bytes, as Go prints them.

use crate::go_fmt;
use crate::model::{
    DeleteResult, EndpointHealth, EndpointStatus, KeyValue, LeaseGrantResult, LeaseKeepAliveResult,
    LeaseListResult, LeaseTimeToLiveResult, MemberAddResult, MembersResult, PutResult, RangeResult,
    TxnOpKind, TxnResult, WatchResult, EVENT_DELETE,
};
use crate::output::rows;

/// How keys and values are written.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SimpleOptions {
    /// `--hex`: every byte as `\xNN`.
    pub hex: bool,
    /// `get --print-value-only`: values without their keys.
    pub value_only: bool,
}

fn line(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(text);
    out.push(b'\n');
}

fn bytes_text(bytes: &[u8], options: SimpleOptions) -> Vec<u8> {
    if options.hex {
        bytes
            .iter()
            .flat_map(|byte| format!("\\x{byte:02x}").into_bytes())
            .collect()
    } else {
        bytes.to_vec()
    }
}

fn key_value(out: &mut Vec<u8>, kv: &KeyValue, options: SimpleOptions) {
    if !options.value_only {
        line(out, &bytes_text(&kv.key, options));
    }
    line(out, &bytes_text(&kv.value, options));
}

/// `put`: OK, then the previous pair if asked for.
pub(crate) fn put(result: &PutResult, options: SimpleOptions) -> Vec<u8> {
    let mut out = Vec::new();
    line(&mut out, b"OK");
    if let Some(prev) = &result.prev_kv {
        key_value(&mut out, prev, options);
    }
    out
}

/// `get`: every pair, key line then value line.
pub(crate) fn get(result: &RangeResult, options: SimpleOptions) -> Vec<u8> {
    let mut out = Vec::new();
    for kv in &result.kvs {
        key_value(&mut out, kv, options);
    }
    out
}

/// `get --count-only`: the number of keys in the range.
pub(crate) fn count(result: &RangeResult) -> Vec<u8> {
    format!("{}\n", result.count).into_bytes()
}

/// `del`: how many keys went, then the previous pairs if asked for.
pub(crate) fn delete(result: &DeleteResult, options: SimpleOptions) -> Vec<u8> {
    let mut out = Vec::new();
    line(&mut out, result.deleted.to_string().as_bytes());
    for kv in &result.prev_kvs {
        key_value(&mut out, kv, options);
    }
    out
}

/// `txn`: SUCCESS or FAILURE, then each op's answer after a blank line.
pub(crate) fn txn(result: &TxnResult, options: SimpleOptions) -> Vec<u8> {
    let mut out = Vec::new();
    let verdict: &[u8] = if result.succeeded {
        b"SUCCESS"
    } else {
        b"FAILURE"
    };
    line(&mut out, verdict);
    for op in &result.responses {
        out.push(b'\n');
        let text = match &op.response {
            TxnOpKind::Put(put_result) => put(put_result, options),
            TxnOpKind::Range(range) => get(range, options),
            TxnOpKind::DeleteRange(deleted) => delete(deleted, options),
            TxnOpKind::Txn(inner) => txn(inner, options),
        };
        out.extend_from_slice(&text);
    }
    out
}

/// `watch`: each event's type, its previous pair if any, then its pair.
pub(crate) fn watch(result: &WatchResult, options: SimpleOptions) -> Vec<u8> {
    let mut out = Vec::new();
    for event in &result.events {
        let kind: &[u8] = if event.kind == EVENT_DELETE {
            b"DELETE"
        } else {
            b"PUT"
        };
        line(&mut out, kind);
        if let Some(prev) = &event.prev_kv {
            key_value(&mut out, prev, options);
        }
        key_value(&mut out, &event.kv.clone().unwrap_or_default(), options);
    }
    out
}

/// `lease grant`.
pub(crate) fn lease_grant(result: &LeaseGrantResult) -> Vec<u8> {
    format!(
        "lease {:016x} granted with TTL({}s)\n",
        result.id, result.ttl
    )
    .into_bytes()
}

/// `lease revoke`.
pub(crate) fn lease_revoke(id: i64) -> Vec<u8> {
    format!("lease {id:016x} revoked\n").into_bytes()
}

/// `lease keep-alive`, once per renewal.
pub(crate) fn lease_keep_alive(result: &LeaseKeepAliveResult) -> Vec<u8> {
    format!(
        "lease {:016x} keepalived with TTL({})\n",
        result.id, result.ttl
    )
    .into_bytes()
}

/// `lease keep-alive` when the lease is gone.
pub(crate) fn lease_expired(id: i64) -> Vec<u8> {
    format!("lease {id:016x} expired or revoked.\n").into_bytes()
}

/// `lease timetolive`; the attached keys only with `--keys`.
pub(crate) fn lease_time_to_live(result: &LeaseTimeToLiveResult, with_keys: bool) -> Vec<u8> {
    if result.granted_ttl == 0 && result.ttl == -1 {
        return format!("lease {:016x} already expired\n", result.id).into_bytes();
    }
    let mut out = format!(
        "lease {:016x} granted with TTL({}s), remaining({}s)",
        result.id, result.granted_ttl, result.ttl
    )
    .into_bytes();
    if with_keys {
        out.extend_from_slice(b", attached keys([");
        out.extend_from_slice(&result.keys.join(&b' '));
        out.extend_from_slice(b"])");
    }
    out.push(b'\n');
    out
}

/// `lease list`.
pub(crate) fn lease_list(result: &LeaseListResult) -> Vec<u8> {
    let mut out = format!("found {} leases\n", result.leases.len());
    for lease in &result.leases {
        out.push_str(&format!("{:016x}\n", lease.id));
    }
    out.into_bytes()
}

/// `member list`: one comma-separated line per member.
pub(crate) fn member_list(result: &MembersResult) -> Vec<u8> {
    let mut out = String::new();
    for member in &result.members {
        out.push_str(&rows::member(member).join(", "));
        out.push('\n');
    }
    out.into_bytes()
}

fn cluster_id(header: &Option<crate::model::Header>) -> u64 {
    header.as_ref().map_or(0, |header| header.cluster_id)
}

/// `member add`: the new ID, then the settings the new member starts with.
pub(crate) fn member_added(result: &MemberAddResult, name: &str, peer_urls: &[String]) -> Vec<u8> {
    let new_id = result.member.as_ref().map_or(0, |member| member.id);
    let mut out = format!(
        "Member {new_id:>16x} added to cluster {:>16x}\n",
        cluster_id(&result.header)
    );
    let mut initial_cluster = Vec::new();
    for member in &result.members {
        let member_name = if member.id == new_id {
            name
        } else {
            &member.name
        };
        for url in &member.peer_urls {
            initial_cluster.push(format!("{member_name}={url}"));
        }
    }
    out.push('\n');
    out.push_str(&format!("ETCD_NAME={}\n", go_fmt::quote(name.as_bytes())));
    out.push_str(&format!(
        "ETCD_INITIAL_CLUSTER={}\n",
        go_fmt::quote(initial_cluster.join(",").as_bytes())
    ));
    out.push_str(&format!(
        "ETCD_INITIAL_ADVERTISE_PEER_URLS={}\n",
        go_fmt::quote(peer_urls.join(",").as_bytes())
    ));
    out.push_str("ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n");
    out.into_bytes()
}

/// `member remove`, `update` and `promote`: what happened to which member.
pub(crate) fn member_changed(id: u64, verb: &str, result: &MembersResult) -> Vec<u8> {
    format!(
        "Member {id:>16x} {verb} cluster {:>16x}\n",
        cluster_id(&result.header)
    )
    .into_bytes()
}

/// `endpoint status`: one comma-separated line per endpoint.
pub(crate) fn endpoint_status(statuses: &[EndpointStatus]) -> Vec<u8> {
    let mut out = String::new();
    for status in statuses {
        out.push_str(&rows::status(status).join(", "));
        out.push('\n');
    }
    out.into_bytes()
}

/// `endpoint health`: one sentence per endpoint (etcdctl writes these to stderr).
pub(crate) fn endpoint_health(checks: &[EndpointHealth]) -> Vec<u8> {
    let mut out = String::new();
    for check in checks {
        if check.error.is_empty() {
            out.push_str(&format!(
                "{} is healthy: successfully committed proposal: took = {}\n",
                check.endpoint, check.took
            ));
        } else {
            out.push_str(&format!(
                "{} is unhealthy: failed to commit proposal: {}\n",
                check.endpoint, check.error
            ));
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..KeyValue::default()
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn get_prints_keys_and_values() {
        let result = RangeResult {
            kvs: vec![kv("key1", "value1"), kv("key2", "")],
            count: 2,
            ..RangeResult::default()
        };
        assert_eq!(
            text(get(&result, SimpleOptions::default())),
            "key1\nvalue1\nkey2\n\n"
        );
        let value_only = SimpleOptions {
            value_only: true,
            ..SimpleOptions::default()
        };
        assert_eq!(text(get(&result, value_only)), "value1\n\n");
        let hex = SimpleOptions {
            hex: true,
            ..SimpleOptions::default()
        };
        assert_eq!(
            text(get(&result, hex)),
            "\\x6b\\x65\\x79\\x31\n\\x76\\x61\\x6c\\x75\\x65\\x31\n\\x6b\\x65\\x79\\x32\n\n"
        );
        assert_eq!(text(count(&result)), "2\n");
    }

    #[test]
    fn put_and_delete_show_previous_pairs() {
        let put_result = PutResult {
            prev_kv: Some(kv("key1", "v1")),
            ..PutResult::default()
        };
        assert_eq!(
            text(put(&put_result, SimpleOptions::default())),
            "OK\nkey1\nv1\n"
        );
        let deleted = DeleteResult {
            deleted: 1,
            prev_kvs: vec![kv("key9", "value9")],
            ..DeleteResult::default()
        };
        assert_eq!(
            text(delete(&deleted, SimpleOptions::default())),
            "1\nkey9\nvalue9\n"
        );
        assert_eq!(
            text(delete(&DeleteResult::default(), SimpleOptions::default())),
            "0\n"
        );
    }

    #[test]
    fn txn_separates_answers_with_blank_lines() {
        let result = TxnResult {
            succeeded: true,
            responses: vec![
                TxnOpResult {
                    response: TxnOpKind::Put(PutResult::default()),
                },
                TxnOpResult {
                    response: TxnOpKind::Range(RangeResult {
                        kvs: vec![kv("key2", "newv")],
                        ..RangeResult::default()
                    }),
                },
                TxnOpResult {
                    response: TxnOpKind::DeleteRange(DeleteResult {
                        deleted: 1,
                        ..DeleteResult::default()
                    }),
                },
            ],
            ..TxnResult::default()
        };
        assert_eq!(
            text(txn(&result, SimpleOptions::default())),
            "SUCCESS\n\nOK\n\nkey2\nnewv\n\n1\n"
        );
        assert_eq!(
            text(txn(&TxnResult::default(), SimpleOptions::default())),
            "FAILURE\n"
        );
    }

    #[test]
    fn watch_prints_previous_pair_before_the_new_one() {
        let result = WatchResult {
            events: vec![
                Event {
                    kind: 0,
                    kv: Some(kv("key1", "v2")),
                    prev_kv: Some(kv("key1", "v1")),
                },
                Event {
                    kind: EVENT_DELETE,
                    kv: Some(kv("key1", "")),
                    prev_kv: None,
                },
            ],
            ..WatchResult::default()
        };
        assert_eq!(
            text(watch(&result, SimpleOptions::default())),
            "PUT\nkey1\nv1\nkey1\nv2\nDELETE\nkey1\n\n"
        );
    }

    #[test]
    fn lease_sentences() {
        let grant = LeaseGrantResult {
            id: 0x2040a21330ae5c46,
            ttl: 100,
            ..LeaseGrantResult::default()
        };
        assert_eq!(
            text(lease_grant(&grant)),
            "lease 2040a21330ae5c46 granted with TTL(100s)\n"
        );
        assert_eq!(
            text(lease_revoke(0x1234)),
            "lease 0000000000001234 revoked\n"
        );
        assert_eq!(
            text(lease_expired(0x12345)),
            "lease 0000000000012345 expired or revoked.\n"
        );
        let alive = LeaseKeepAliveResult {
            id: 0x2040a21330ae5c46,
            ttl: 100,
            ..LeaseKeepAliveResult::default()
        };
        assert_eq!(
            text(lease_keep_alive(&alive)),
            "lease 2040a21330ae5c46 keepalived with TTL(100)\n"
        );
        let ttl = LeaseTimeToLiveResult {
            id: 0x2040a21330ae5c46,
            ttl: 95,
            granted_ttl: 100,
            keys: vec![b"lk".to_vec(), b"lk2".to_vec()],
            ..LeaseTimeToLiveResult::default()
        };
        assert_eq!(
            text(lease_time_to_live(&ttl, true)),
            "lease 2040a21330ae5c46 granted with TTL(100s), remaining(95s), attached keys([lk lk2])\n"
        );
        assert_eq!(
            text(lease_time_to_live(&ttl, false)),
            "lease 2040a21330ae5c46 granted with TTL(100s), remaining(95s)\n"
        );
        let gone = LeaseTimeToLiveResult {
            id: 0x1234,
            ttl: -1,
            ..LeaseTimeToLiveResult::default()
        };
        assert_eq!(
            text(lease_time_to_live(&gone, true)),
            "lease 0000000000001234 already expired\n"
        );
        let list = LeaseListResult {
            header: None,
            leases: vec![LeaseId { id: 0x46 }, LeaseId { id: 0x48 }],
        };
        assert_eq!(
            text(lease_list(&list)),
            "found 2 leases\n0000000000000046\n0000000000000048\n"
        );
    }

    #[test]
    fn member_sentences() {
        let header = Some(Header {
            cluster_id: 0x48276a8f75b6a87,
            ..Header::default()
        });
        let members = vec![
            Member {
                id: 0x2e1259d415f2a040,
                name: "n1".to_owned(),
                peer_urls: vec!["http://127.0.0.1:23800".to_owned()],
                client_urls: vec!["http://127.0.0.1:23790".to_owned()],
                is_learner: false,
            },
            Member {
                id: 0x30a5047841625559,
                peer_urls: vec!["http://127.0.0.1:23801".to_owned()],
                is_learner: true,
                ..Member::default()
            },
        ];
        let list = MembersResult {
            header: header.clone(),
            members: members.clone(),
        };
        assert_eq!(
            text(member_list(&list)),
            "2e1259d415f2a040, started, n1, http://127.0.0.1:23800, http://127.0.0.1:23790, false\n\
             30a5047841625559, unstarted, , http://127.0.0.1:23801, , true\n"
        );
        let added = MemberAddResult {
            header,
            member: Some(members[1].clone()),
            members,
        };
        assert_eq!(
            text(member_added(
                &added,
                "n2",
                &["http://127.0.0.1:23801".to_owned()]
            )),
            "Member 30a5047841625559 added to cluster  48276a8f75b6a87\n\n\
             ETCD_NAME=\"n2\"\n\
             ETCD_INITIAL_CLUSTER=\"n1=http://127.0.0.1:23800,n2=http://127.0.0.1:23801\"\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://127.0.0.1:23801\"\n\
             ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"
        );
        assert_eq!(
            text(member_changed(0x30a5047841625559, "updated in", &list)),
            "Member 30a5047841625559 updated in cluster  48276a8f75b6a87\n"
        );
    }

    #[test]
    fn endpoint_sentences() {
        let status = EndpointStatus {
            endpoint: "127.0.0.1:23790".to_owned(),
            status: Status {
                header: Some(Header {
                    member_id: 0x2e1259d415f2a040,
                    ..Header::default()
                }),
                version: "3.4.23".to_owned(),
                db_size: 24576,
                leader: 0x2e1259d415f2a040,
                raft_index: 59,
                raft_term: 2,
                raft_applied_index: 59,
                ..Status::default()
            },
        };
        assert_eq!(
            text(endpoint_status(&[status])),
            "127.0.0.1:23790, 2e1259d415f2a040, 3.4.23, 25 kB, true, false, 2, 59, 59, \n"
        );
        let checks = [
            EndpointHealth {
                endpoint: "127.0.0.1:23790".to_owned(),
                health: true,
                took: "1.097008ms".to_owned(),
                error: String::new(),
            },
            EndpointHealth {
                endpoint: "127.0.0.1:1".to_owned(),
                health: false,
                took: "5s".to_owned(),
                error: "context deadline exceeded".to_owned(),
            },
        ];
        assert_eq!(
            text(endpoint_health(&checks)),
            "127.0.0.1:23790 is healthy: successfully committed proposal: took = 1.097008ms\n\
             127.0.0.1:1 is unhealthy: failed to commit proposal: context deadline exceeded\n"
        );
    }
}
