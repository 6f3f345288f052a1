//! Txns, because clients build locks and elections on their atomicity: one
//! revision, compares against the state before, all or nothing.

use crate::harness::{
    compare, etcd_error, kv_values, names, op, op_delete, op_put, op_range, op_txn, over, put,
    range, range_response, revision_of, txn, value_is, Kv,
};
use cairn_mvcc::store::Reply;
use cairn_mvcc::tree_index::KeyRange;
use cairn_mvcc::validate::{self, Limits};
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::RevisionEvents;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::compare::{CompareResult, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest};
use cairn_proto::mvccpb::Event;

#[test]
fn a_txn_is_one_revision() {
    let mut kv = Kv::new();
    kv.put("a", "0"); // 2
    let request = txn(
        vec![],
        vec![op_put("c", "1"), op_put("a", "1"), op_put("b", "1")],
        vec![],
    );
    let (result, revisions) = kv.run(Op::Txn(request));
    let Ok(Reply::Txn(response)) = result else {
        panic!("the txn failed: {result:?}");
    };
    assert!(response.succeeded);
    assert_eq!(revision_of(response.header.as_ref()), 3);
    assert_eq!(kv.current(), 3);
    assert_eq!(revisions.len(), 1, "one revision for the whole txn");
    assert_eq!(revisions[0].revision, 3);
    let written: Vec<(String, i64)> = revisions[0]
        .events
        .iter()
        .map(|event| {
            let kv = event.kv.as_ref().expect("an event has its kv");
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            )
        })
        .collect();
    assert_eq!(
        written,
        vec![("c".into(), 3), ("a".into(), 3), ("b".into(), 3)],
        "events in op order (sub-revision order), all at the txn's revision"
    );
    let history = kv
        .store
        .events(&KeyRange::new(b"\0", b"\0"), 3, true, usize::MAX)
        .expect("history");
    // History keeps no log terms; the events are what must match.
    let events = |revisions: &[RevisionEvents]| -> Vec<(i64, Vec<Event>)> {
        revisions
            .iter()
            .map(|revision| (revision.revision, revision.events.clone()))
            .collect()
    };
    assert_eq!(
        events(&history),
        events(&revisions),
        "history keeps the same order"
    );
}

#[test]
fn a_read_only_txn_leaves_the_revision_alone() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    let cases = [
        (
            "ranges only",
            txn(vec![value_is("a", "1")], vec![op_range("a", "")], vec![]),
        ),
        (
            "an empty branch",
            txn(vec![value_is("a", "2")], vec![op_put("a", "2")], vec![]),
        ),
        ("nothing at all", txn(vec![], vec![], vec![])),
        (
            "a delete that matches nothing",
            txn(vec![], vec![op_delete("zz", "")], vec![]),
        ),
    ];
    for (name, request) in cases {
        let (result, revisions) = kv.run(Op::Txn(request));
        let Ok(Reply::Txn(response)) = result else {
            panic!("{name}: {result:?}");
        };
        assert_eq!(revision_of(response.header.as_ref()), 2, "{name}");
        assert!(revisions.is_empty(), "{name}");
    }
    assert_eq!(kv.current(), 2);
}

#[test]
fn ranges_inside_a_txn_see_its_earlier_writes() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("b", "1"); // 3
    let response = kv.txn(txn(
        vec![],
        vec![
            op_range("a", "\0"),
            op_put("a", "2"),
            op_range("a", "\0"),
            op_delete("b", ""),
            op_range("a", "\0"),
            op(Request::RequestRange(RangeRequest {
                revision: 3,
                ..range("a", "\0")
            })),
        ],
        vec![],
    ));
    assert_eq!(revision_of(response.header.as_ref()), 4);

    let before = range_response(&response, 0);
    assert_eq!(
        kv_values(&before.kvs),
        vec![("a".into(), "1".into()), ("b".into(), "1".into())]
    );
    assert_eq!(revision_of(before.header.as_ref()), 3);

    let after_put = range_response(&response, 2);
    assert_eq!(
        kv_values(&after_put.kvs),
        vec![("a".into(), "2".into()), ("b".into(), "1".into())]
    );
    assert_eq!(
        (after_put.kvs[0].mod_revision, after_put.kvs[0].version),
        (4, 2)
    );
    assert_eq!(revision_of(after_put.header.as_ref()), 4);

    let after_delete = range_response(&response, 4);
    assert_eq!(names(&after_delete.kvs), vec!["a"]);
    assert_eq!(after_delete.count, 1);

    let historical = range_response(&response, 5);
    assert_eq!(
        kv_values(&historical.kvs),
        vec![("a".into(), "1".into()), ("b".into(), "1".into())],
        "a read at an earlier revision does not see the txn's writes"
    );
}

#[test]
fn compares_see_the_state_before_the_txn() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    let nested = txn(
        vec![value_is("a", "1")],
        vec![op_put("b", "nested compare saw the old a")],
        vec![op_put("b", "nested compare saw the new a")],
    );
    let response = kv.txn(txn(
        vec![value_is("a", "1")],
        vec![op_put("a", "2"), op_txn(nested)],
        vec![],
    ));
    assert!(response.succeeded);
    match &response.responses[1].response {
        Some(OpResponse::ResponseTxn(nested)) => assert!(nested.succeeded),
        other => panic!("op 1 answered {other:?}"),
    }
    assert_eq!(
        kv.get("b").map(|b| b.value),
        Some(b"nested compare saw the old a".to_vec())
    );
    assert_eq!(kv.current(), 3);
}

#[test]
fn a_value_compare_on_a_missing_key_is_false() {
    let mut kv = Kv::new();
    kv.put("present", ""); // 2
    let cases = [
        ("value == \"\"", value_is("missing", ""), false),
        (
            "value != x",
            compare(
                "missing",
                CompareResult::NotEqual,
                TargetUnion::Value(b"x".to_vec()),
            ),
            false,
        ),
        (
            "value < x",
            compare(
                "missing",
                CompareResult::Less,
                TargetUnion::Value(b"x".to_vec()),
            ),
            false,
        ),
        (
            "version == 0",
            compare("missing", CompareResult::Equal, TargetUnion::Version(0)),
            true,
        ),
        (
            "create == 0",
            compare(
                "missing",
                CompareResult::Equal,
                TargetUnion::CreateRevision(0),
            ),
            true,
        ),
        (
            "mod < 1",
            compare("missing", CompareResult::Less, TargetUnion::ModRevision(1)),
            true,
        ),
        (
            "lease == 0",
            compare("missing", CompareResult::Equal, TargetUnion::Lease(0)),
            true,
        ),
        (
            "a present empty value == \"\"",
            value_is("present", ""),
            true,
        ),
    ];
    for (name, compare, expected) in cases {
        let response = kv.txn(txn(vec![compare], vec![], vec![]));
        assert_eq!(response.succeeded, expected, "{name}");
    }
}

#[test]
fn a_compare_over_a_range_needs_every_key() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("ab", "1"); // 3
    kv.put("b", "1"); // 4
    kv.put("a", "2"); // 5: a is at version 2
    let version = |result, n| compare("a", result, TargetUnion::Version(n));
    let cases = [
        (
            "every key of [a, c) has a version",
            over(version(CompareResult::Greater, 0), "c"),
            true,
        ),
        (
            "a is not at version 1",
            over(version(CompareResult::Equal, 1), "c"),
            false,
        ),
        (
            "[ab, c) are all at version 1",
            Compare {
                key: b"ab".to_vec(),
                ..over(version(CompareResult::Equal, 1), "c")
            },
            true,
        ),
        (
            "every value from a on is below 3",
            over(
                compare("a", CompareResult::Less, TargetUnion::Value(b"3".to_vec())),
                "\0",
            ),
            true,
        ),
        (
            "not every value from a on is 1",
            over(value_is("a", "1"), "\0"),
            false,
        ),
        (
            "an empty range compares as a zero KeyValue",
            Compare {
                key: b"x".to_vec(),
                ..over(version(CompareResult::Equal, 0), "z")
            },
            true,
        ),
        (
            "but a value compare over an empty range is false",
            over(value_is("x", ""), "z"),
            false,
        ),
    ];
    for (name, compare, expected) in cases {
        let response = kv.txn(txn(vec![compare], vec![], vec![]));
        assert_eq!(response.succeeded, expected, "{name}");
    }
}

#[test]
fn a_put_in_a_txn_of_a_key_deleted_in_the_same_txn_is_rejected() {
    let limits = Limits::default();
    let cases = [
        (
            "delete then put",
            txn(vec![], vec![op_delete("a", ""), op_put("a", "1")], vec![]),
        ),
        (
            "put then delete",
            txn(vec![], vec![op_put("a", "1"), op_delete("a", "")], vec![]),
        ),
        (
            "a range delete covering the put",
            txn(vec![], vec![op_delete("a", "c"), op_put("b", "1")], vec![]),
        ),
        (
            "in the failure branch",
            txn(
                vec![],
                vec![],
                vec![op_delete("\0", "\0"), op_put("b", "1")],
            ),
        ),
        (
            "a nested put under an outer delete",
            txn(
                vec![],
                vec![
                    op_delete("a", ""),
                    op_txn(txn(vec![], vec![op_put("a", "1")], vec![])),
                ],
                vec![],
            ),
        ),
    ];
    for (name, request) in cases {
        assert_eq!(
            validate::check_txn(&request, &limits),
            Err(EtcdError::DuplicateKey),
            "{name}"
        );
    }
    let apart = txn(vec![], vec![op_delete("a", "")], vec![op_put("a", "1")]);
    assert_eq!(
        validate::check_txn(&apart, &limits),
        Ok(()),
        "the two branches exclude each other"
    );
}

#[test]
fn a_refused_op_in_a_txn_leaves_the_whole_txn_undone() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    let with_lease = op(Request::RequestPut(PutRequest {
        lease: 77,
        ..put("b", "1")
    }));
    let result = kv.try_txn(txn(vec![], vec![op_put("a", "2"), with_lease], vec![]));
    assert_eq!(etcd_error(result), EtcdError::LeaseNotFound);
    let future = op(Request::RequestRange(RangeRequest {
        revision: 3,
        ..range("a", "")
    }));
    let result = kv.try_txn(txn(vec![], vec![op_put("a", "2"), future], vec![]));
    assert_eq!(
        etcd_error(result),
        EtcdError::FutureRevision,
        "a range at the txn's own revision is checked before the txn writes"
    );
    assert_eq!(kv.current(), 2);
    assert_eq!(kv.get("a").map(|a| a.value), Some(b"1".to_vec()));
}
