//! How revisions and versions count, since every watch and historical read
//! depends on etcd's exact numbers.

use crate::harness::{everything, put, range, revision_of, Kv};
use cairn_mvcc::store::Reply;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

#[test]
fn revision_starts_at_one_and_grows_by_one_per_change() {
    let mut kv = Kv::new();
    let status = kv.store.status();
    assert_eq!((status.current, status.compacted), (1, -1));
    assert_eq!(revision_of(kv.read(&everything()).header.as_ref()), 1);
    assert_eq!(revision_of(kv.put("a", "1").header.as_ref()), 2);
    assert_eq!(revision_of(kv.put("b", "1").header.as_ref()), 3);
    assert_eq!(revision_of(kv.delete("a", "").header.as_ref()), 4);
    assert_eq!(kv.current(), 4);
}

#[test]
fn a_delete_that_matches_nothing_leaves_the_revision_alone() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    for (key, range_end) in [("zz", ""), ("x", "z"), ("b", "\0"), ("c", "a")] {
        let (result, revisions) = kv.run(Op::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: true,
        }));
        match result {
            Ok(Reply::DeleteRange(response)) => {
                assert_eq!(response.deleted, 0, "{key}..{range_end}");
                assert!(response.prev_kvs.is_empty());
                assert_eq!(revision_of(response.header.as_ref()), 2);
            }
            other => panic!("a delete answered {other:?}"),
        }
        assert!(revisions.is_empty(), "{key}..{range_end} made a revision");
    }
    assert_eq!(kv.current(), 2);
}

#[test]
fn puts_keep_the_create_revision_and_count_versions() {
    let mut kv = Kv::new();
    assert_eq!(kv.put("a", "1").prev_kv, None);
    kv.put("b", "1");
    let response = kv
        .try_put(PutRequest {
            prev_kv: true,
            ..put("a", "2")
        })
        .expect("the put applies");
    let previous = response.prev_kv.expect("the previous value");
    assert_eq!(
        (previous.value, previous.version, previous.mod_revision),
        (b"1".to_vec(), 1, 2)
    );
    let a = kv.get("a").expect("a exists");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (2, 4, 2),
        "create kept, mod moved, version counted"
    );
}

#[test]
fn version_resets_after_delete() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("a", "2"); // 3
    let deleted = kv.delete("a", ""); // 4
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.prev_kvs[0].version, 2);
    assert_eq!(kv.get("a"), None);
    kv.put("a", "3"); // 5
    let a = kv.get("a").expect("a exists again");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    let then = kv.read(&RangeRequest {
        revision: 3,
        ..range("a", "")
    });
    assert_eq!(
        (then.kvs[0].create_revision, then.kvs[0].version),
        (2, 2),
        "history keeps the first incarnation"
    );
    assert!(kv
        .read(&RangeRequest {
            revision: 4,
            ..range("a", "")
        })
        .kvs
        .is_empty());
}
