//! Compaction, because it is the one operation that throws history away:
//! what stays readable, what is refused, and how both survive a reopen.

use crate::harness::{etcd_error, everything, kv_values, put, Kv};
use cairn_mvcc::tree_index::KeyRange;
use cairn_mvcc::MvccError;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, RangeRequest, RangeResponse,
};
use cairn_proto::mvccpb::event::EventType;

#[test]
fn compacted_and_future_revisions() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("b", "1"); // 3
    kv.put("a", "2"); // 4
    kv.delete("b", ""); // 5
    kv.put("c", "1"); // 6
    let at = |revision: i64| RangeRequest {
        revision,
        ..everything()
    };
    let before: Vec<RangeResponse> = (4..=6).map(|revision| kv.read(&at(revision))).collect();

    assert_eq!(kv.compact(4).expect("compaction at 4"), 6);
    assert_eq!(kv.store.status().compacted, 4);
    assert_eq!(kv.current(), 6, "compaction makes no revision");

    match kv.range(&at(3)) {
        Err(MvccError::Compacted { compact_revision }) => assert_eq!(compact_revision, 4),
        other => panic!("a read below the compact revision answered {other:?}"),
    }
    let after: Vec<RangeResponse> = (4..=6).map(|revision| kv.read(&at(revision))).collect();
    assert_eq!(after, before, "reads at and after the compact revision");
    assert_eq!(
        kv.keys("\0", "\0", 4),
        vec!["a", "b"],
        "b, deleted after the point, is still there at it"
    );
    assert_eq!(etcd_error(kv.range(&at(7))), EtcdError::FutureRevision);
    assert_eq!(
        kv.read(&at(0)).kvs,
        before[2].kvs,
        "0 reads the latest revision"
    );

    assert_eq!(etcd_error(kv.compact(4)), EtcdError::Compacted);
    assert_eq!(etcd_error(kv.compact(2)), EtcdError::Compacted);
    assert_eq!(etcd_error(kv.compact(7)), EtcdError::FutureRevision);
    assert_eq!(
        kv.compact(6).expect("compaction at the current revision"),
        6
    );
    assert_eq!(etcd_error(kv.range(&at(5))), EtcdError::Compacted);
    assert_eq!(kv.read(&at(6)), before[2]);

    let a = kv.get("a").expect("a survives compaction");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (2, 4, 2),
        "the latest version of every key survives"
    );
    kv.put("a", "3"); // 7
    let a = kv.get("a").expect("a");
    assert_eq!(
        (a.create_revision, a.version),
        (2, 3),
        "versions go on counting"
    );
    assert_eq!(
        etcd_error(
            kv.store
                .events(&KeyRange::new(b"\0", b"\0"), 5, false, usize::MAX)
        ),
        EtcdError::Compacted
    );
}

#[test]
fn a_compaction_in_the_same_batch_as_the_writes_it_drops() {
    let mut kv = Kv::new();
    let first = kv.entry(vec![
        Op::Put(put("a", "1")), // 2
        Op::Put(put("a", "2")), // 3
        Op::Put(put("b", "1")), // 4
    ]);
    let second = kv.entry(vec![
        Op::DeleteRange(DeleteRangeRequest {
            key: b"b".to_vec(),
            ..Default::default()
        }), // 5
        Op::Compaction(CompactionRequest {
            revision: 5,
            physical: false,
        }),
        Op::Put(put("a", "3")), // 6
    ]);
    let applied = kv.store.apply(&[first, second]).expect("the entries apply");
    assert!(applied
        .outcomes
        .iter()
        .all(|outcome| outcome.result.is_ok()));
    let check = |kv: &Kv| {
        let status = kv.store.status();
        assert_eq!((status.current, status.compacted), (6, 5));
        let at_five = kv.read(&RangeRequest {
            revision: 5,
            ..everything()
        });
        assert_eq!(kv_values(&at_five.kvs), vec![("a".into(), "2".into())]);
        assert_eq!(at_five.kvs[0].version, 2);
        assert_eq!(
            etcd_error(kv.range(&RangeRequest {
                revision: 4,
                ..everything()
            })),
            EtcdError::Compacted
        );
        let a = kv.get("a").expect("a");
        assert_eq!((a.create_revision, a.version), (2, 3));
        let history = kv
            .store
            .events(&KeyRange::new(b"\0", b"\0"), 5, false, usize::MAX)
            .expect("history from the compact revision");
        let kinds: Vec<(i64, i32)> = history
            .iter()
            .flat_map(|revision| {
                revision
                    .events
                    .iter()
                    .map(move |event| (revision.revision, event.r#type))
            })
            .collect();
        assert_eq!(
            kinds,
            vec![(5, EventType::Delete as i32), (6, EventType::Put as i32)]
        );
    };
    check(&kv);
    let kv = kv.reopen();
    check(&kv);
}
