//! Restarts, because a member replays its log after a crash and must end in
//! the same state: replayed entries, keys, history, leases and the claim.

use crate::harness::{deleted_keys, etcd_error, everything, holder, put, Kv};
use cairn_mvcc::store::LogEntry;
use cairn_mvcc::tree_index::KeyRange;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::Command;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RangeResponse};
use prost::Message;

#[test]
fn entries_already_applied_are_skipped() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // entry 1, revision 2
    let replay = LogEntry {
        index: 1,
        term: 1,
        commands: vec![Command {
            op: Some(Op::Put(put("a", "again"))),
            ..Default::default()
        }
        .encode_to_vec()
        .into()],
    };
    let applied = kv
        .store
        .apply(std::slice::from_ref(&replay))
        .expect("apply");
    assert!(applied.outcomes.is_empty());
    assert_eq!(applied.position.index, 1);
    let kv = kv.reopen();
    let applied = kv.store.apply(&[replay]).expect("apply after reopen");
    assert!(applied.outcomes.is_empty());
    assert_eq!(kv.current(), 2);
    assert_eq!(kv.get("a").map(|a| a.value), Some(b"1".to_vec()));
}

#[test]
fn state_survives_reopen() {
    let mut kv = Kv::new();
    kv.grant(5);
    let leased = |key: &str, value: &str| PutRequest {
        lease: 5,
        ..put(key, value)
    };
    kv.try_put(leased("a", "1")).expect("a"); // 2
    kv.try_put(leased("a", "2")).expect("a"); // 3
    kv.put("b", "1"); // 4
    kv.delete("b", ""); // 5
    kv.put("b", "2"); // 6
    kv.put("b", "3"); // 7
    kv.try_put(leased("c", "1")).expect("c"); // 8
    kv.put("gone", "1"); // 9
    kv.delete("gone", ""); // 10
    assert_eq!(kv.compact(7).expect("compaction"), 10);

    let reads = |kv: &Kv| -> Vec<RangeResponse> {
        (7..=10)
            .map(|revision| {
                kv.read(&RangeRequest {
                    revision,
                    ..everything()
                })
            })
            .collect()
    };
    let history = |kv: &Kv| {
        kv.store
            .events(&KeyRange::new(b"\0", b"\0"), 7, true, usize::MAX)
            .expect("history")
    };
    let status = kv.store.status();
    let before = reads(&kv);
    let events = history(&kv);

    let mut kv = kv.reopen();
    assert_eq!(kv.store.status(), status);
    assert_eq!(reads(&kv), before);
    assert_eq!(history(&kv), events);
    assert_eq!(
        etcd_error(kv.range(&RangeRequest {
            revision: 6,
            ..everything()
        })),
        EtcdError::Compacted
    );

    let a = kv.get("a").expect("a");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version, a.lease),
        (2, 3, 2, 5),
        "a's history before the compaction is gone, not its numbers"
    );
    let b = kv.get("b").expect("b");
    assert_eq!((b.create_revision, b.mod_revision, b.version), (6, 7, 2));

    kv.put("a", "3"); // 11
    let a = kv.get("a").expect("a");
    assert_eq!((a.create_revision, a.version), (2, 3));
    kv.put("b", "4"); // 12
    assert_eq!(
        kv.get("b").map(|b| (b.create_revision, b.version)),
        Some((6, 3))
    );
    kv.put("gone", "back"); // 13
    assert_eq!(
        kv.get("gone").map(|g| (g.create_revision, g.version)),
        Some((13, 1))
    );

    let (result, revisions) = kv.revoke(5);
    assert_eq!(result.expect("lease 5 survived the restart"), 14);
    let deleted: Vec<Vec<u8>> = revisions[0]
        .events
        .iter()
        .filter_map(|event| event.kv.as_ref().map(|kv| kv.key.clone()))
        .collect();
    assert_eq!(
        deleted,
        vec![b"c".to_vec()],
        "a left lease 5 when put without it"
    );
    assert_eq!(kv.keys("\0", "\0", 0), vec!["a", "b", "gone"]);

    let kv = kv.reopen();
    assert_eq!(kv.current(), 14);
    assert_eq!(kv.store.status().leases, 0);
    assert_eq!(kv.store.status().compacted, 7);
}

#[test]
fn the_lease_claim_and_checkpoints_survive_reopen() {
    let mut kv = Kv::new();
    kv.grant(1); // entry 1
    kv.grant(2); // entry 2
    kv.try_put(PutRequest {
        lease: 2,
        ..put("k", "v")
    })
    .expect("k"); // entry 3, revision 2
    kv.claim("old", 4); // entry 4
    kv.claim("new", 5); // entry 5
    kv.checkpoint(5, &[(1, 1_500), (2, 2_500)]); // entry 6
    let table = kv.store.lease_table();

    let mut kv = kv.reopen();
    assert_eq!(kv.store.lease_table(), table);
    assert_eq!(kv.store.lease_holder(), holder("new", 5, 5, 6));
    assert_eq!(kv.lease_record(2).map(|l| l.remaining_ms), Some(2_500));

    assert!(
        !kv.claim("old", 5).result.accepted,
        "the epoch is remembered"
    );
    let (stale, revisions) = kv.expire(4, &[2]);
    assert!(!stale.result.accepted, "so is the fence");
    assert!(revisions.is_empty());
    let (expired, revisions) = kv.expire(5, &[2]); // revision 3
    assert_eq!(expired.result.expired, vec![2]);
    assert_eq!(
        revisions.iter().map(deleted_keys).collect::<Vec<_>>(),
        vec![vec!["k".to_owned()]]
    );

    let kv = kv.reopen();
    assert_eq!(kv.current(), 3);
    assert!(kv.store.lease(2).is_none());
    assert_eq!(kv.lease_record(1).map(|l| l.remaining_ms), Some(1_500));
    assert_eq!(kv.store.lease_holder(), holder("new", 5, 5, 6));
}
