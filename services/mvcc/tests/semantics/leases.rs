//! What ties a key to a lease, because a revoke must delete exactly the keys
//! that still hold it: lease checks on put, the ignore flags, revokes.

use crate::harness::{etcd_error, op, put, txn, Kv};
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::PutRequest;
use cairn_proto::mvccpb::event::EventType;

#[test]
fn put_with_unknown_lease_is_refused() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    let leased = PutRequest {
        lease: 9,
        ..put("b", "1")
    };
    let (result, revisions) = kv.run(Op::Put(leased.clone()));
    assert_eq!(etcd_error(result), EtcdError::LeaseNotFound);
    assert!(revisions.is_empty());
    assert_eq!(kv.current(), 2);
    assert_eq!(kv.get("b"), None);

    kv.grant(9);
    assert_eq!(kv.current(), 2, "a lease grant makes no revision");
    kv.try_put(leased).expect("the lease exists now"); // 3
    assert_eq!(kv.get("b").map(|b| b.lease), Some(9));
    let (_, keys) = kv.store.lease(9).expect("lease 9");
    assert_eq!(keys, vec![b"b".to_vec()]);
}

#[test]
fn ignore_value_and_ignore_lease_need_the_key() {
    let mut kv = Kv::new();
    kv.grant(1);
    kv.grant(2);
    let ignore_value = |key: &str, lease: i64| PutRequest {
        key: key.into(),
        lease,
        ignore_value: true,
        ..Default::default()
    };
    let ignore_lease = |key: &str, value: &str| PutRequest {
        ignore_lease: true,
        ..put(key, value)
    };
    assert_eq!(
        etcd_error(kv.try_put(ignore_value("a", 0))),
        EtcdError::KeyNotFound
    );
    assert_eq!(
        etcd_error(kv.try_put(ignore_lease("a", "1"))),
        EtcdError::KeyNotFound
    );
    assert_eq!(kv.current(), 1);
    let result = kv.try_txn(txn(
        vec![],
        vec![op(Request::RequestPut(ignore_value("a", 0)))],
        vec![],
    ));
    assert_eq!(etcd_error(result), EtcdError::KeyNotFound);

    kv.try_put(PutRequest {
        lease: 1,
        ..put("a", "1")
    })
    .expect("put a"); // 2
    kv.try_put(ignore_value("a", 2))
        .expect("a new lease, the same value"); // 3
    let a = kv.get("a").expect("a");
    assert_eq!((a.value.as_slice(), a.lease, a.version), (&b"1"[..], 2, 2));
    kv.try_put(ignore_lease("a", "2"))
        .expect("a new value, the same lease"); // 4
    let a = kv.get("a").expect("a");
    assert_eq!((a.value.as_slice(), a.lease, a.version), (&b"2"[..], 2, 3));
    assert_eq!(
        kv.store.lease(1).map(|(_, keys)| keys),
        Some(Vec::new()),
        "a left lease 1 when it took lease 2"
    );

    kv.delete("a", ""); // 5
    assert_eq!(
        etcd_error(kv.try_put(ignore_lease("a", "3"))),
        EtcdError::KeyNotFound,
        "a deleted key has nothing to keep"
    );
}

#[test]
fn lease_revoke_deletes_its_keys_in_one_revision() {
    let mut kv = Kv::new();
    kv.grant(1);
    let leased = |key: &str| PutRequest {
        lease: 1,
        ..put(key, "v")
    };
    kv.try_put(leased("b")).expect("b"); // 2
    kv.try_put(leased("a")).expect("a"); // 3
    kv.put("c", "v"); // 4
    kv.try_put(leased("d")).expect("d"); // 5
    kv.put("d", "no lease now"); // 6: d leaves the lease
    kv.try_put(leased("e")).expect("e"); // 7
    kv.try_put(PutRequest {
        ignore_lease: true,
        ..put("e", "kept lease")
    })
    .expect("e keeps its lease"); // 8

    let (result, revisions) = kv.revoke(1);
    assert_eq!(result.expect("the revoke applies"), 9);
    assert_eq!(kv.current(), 9);
    assert_eq!(
        revisions.len(),
        1,
        "one revision for every key of the lease"
    );
    let deleted: Vec<(String, i32, i64)> = revisions[0]
        .events
        .iter()
        .map(|event| {
            let kv = event.kv.as_ref().expect("kv");
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                event.r#type,
                kv.mod_revision,
            )
        })
        .collect();
    let delete = EventType::Delete as i32;
    assert_eq!(
        deleted,
        vec![
            ("a".into(), delete, 9),
            ("b".into(), delete, 9),
            ("e".into(), delete, 9)
        ]
    );
    assert_eq!(kv.keys("\0", "\0", 0), vec!["c", "d"]);
    assert!(kv.store.lease(1).is_none());

    let (result, _) = kv.revoke(1);
    assert_eq!(etcd_error(result), EtcdError::LeaseNotFound);
    kv.grant(2);
    let (result, revisions) = kv.revoke(2);
    assert_eq!(
        result.expect("a lease without keys is revoked"),
        9,
        "and makes no revision"
    );
    assert!(revisions.is_empty());
}
