//! Lease claims, expiry, checkpoints and fenced grants, because only the
//! current claim's epoch may act on leases once a lease holder is replaced.

use crate::harness::{claim, deleted_keys, holder, put, Kv};
use cairn_mvcc::store::{LogEntry, Reply};
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{
    Command, LeaseCheckpoint, LeaseHolder, LeaseRecord, LeaseRemaining,
};
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, PutRequest};
use prost::Message;

#[test]
fn a_claim_must_be_above_the_current_epoch() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    let hash = kv.hash();
    assert_eq!(kv.store.lease_holder(), LeaseHolder::default());

    let first = kv.claim("lease-1:2380", 2); // entry 2
    assert!(first.result.accepted);
    assert_eq!(first.result.holder, Some(holder("lease-1:2380", 2, 2, 2)));
    assert!(first.result.expired.is_empty());
    assert_eq!(first.revision, 2, "a claim changes no key, so no revision");

    let equal = kv.claim("lease-2:2380", 2);
    assert!(!equal.result.accepted, "an equal epoch is void");
    assert_eq!(equal.result.holder, Some(holder("lease-1:2380", 2, 2, 2)));
    let lower = kv.claim("lease-3:2380", 1);
    assert!(!lower.result.accepted, "a lower epoch is void");
    assert_eq!(kv.store.lease_holder(), holder("lease-1:2380", 2, 2, 2));

    // Two claims of one epoch in one entry: the first in log order wins.
    let applied = kv.apply(vec![claim("lease-4:2380", 3), claim("lease-5:2380", 3)]); // entry 5
    let accepted: Vec<bool> = applied
        .outcomes
        .into_iter()
        .map(|outcome| match outcome.result {
            Ok(Reply::Fenced(fenced)) => fenced.result.accepted,
            other => panic!("a claim answered {other:?}"),
        })
        .collect();
    assert_eq!(accepted, vec![true, false]);
    assert!(applied.revisions.is_empty());
    assert_eq!(kv.store.lease_holder(), holder("lease-4:2380", 3, 5, 5));

    assert_eq!(kv.current(), 2);
    assert_eq!(kv.hash(), hash, "claims do not enter HashKV");
}

#[test]
fn an_expire_under_a_stale_epoch_deletes_nothing() {
    let mut kv = Kv::new();
    kv.grant(1);
    kv.try_put(PutRequest {
        lease: 1,
        ..put("a", "1")
    })
    .expect("a"); // 2

    let (void, revisions) = kv.expire(0, &[1]);
    assert!(!void.result.accepted, "before any claim nobody may expire");
    assert!(revisions.is_empty());

    kv.claim("old", 1);
    kv.claim("new", 2);
    let (stale, revisions) = kv.expire(1, &[1]);
    assert!(!stale.result.accepted, "a deposed holder's expire is void");
    assert!(stale.result.expired.is_empty());
    assert_eq!(stale.result.holder.map(|h| h.holder), Some("new".into()));
    assert_eq!(stale.revision, 2);
    assert!(revisions.is_empty());
    let (ahead, _) = kv.expire(3, &[1]);
    assert!(!ahead.result.accepted, "an epoch nobody claimed is void");

    assert_eq!(kv.current(), 2);
    assert!(kv.get("a").is_some());
    assert_eq!(
        kv.store.lease(1).map(|(_, keys)| keys),
        Some(vec![b"a".to_vec()])
    );
}

#[test]
fn an_expire_under_the_current_epoch_revokes_every_listed_lease_in_one_revision() {
    let mut kv = Kv::new();
    for id in 1..=4 {
        kv.grant(id);
    }
    let leased = |key: &str, lease: i64| PutRequest {
        lease,
        ..put(key, "v")
    };
    kv.try_put(leased("c", 1)).expect("c"); // 2
    kv.try_put(leased("b", 2)).expect("b"); // 3
    kv.try_put(leased("a", 1)).expect("a"); // 4
    kv.put("d", "no lease"); // 5
    kv.try_put(leased("e", 3)).expect("e"); // 6
    kv.claim("holder", 7);

    let (expired, revisions) = kv.expire(7, &[2, 1, 99, 4, 2]);
    assert!(expired.result.accepted);
    assert_eq!(
        expired.result.expired,
        vec![2, 1, 4],
        "the leases that existed, each once"
    );
    assert_eq!(expired.revision, 7);
    assert_eq!(kv.current(), 7);
    assert_eq!(revisions.len(), 1, "one revision for every listed lease");
    assert_eq!(revisions[0].revision, 7);
    assert_eq!(
        deleted_keys(&revisions[0]),
        vec!["b", "a", "c"],
        "lease by lease as listed, each lease's keys in order"
    );
    assert_eq!(kv.keys("\0", "\0", 0), vec!["d", "e"]);
    for id in [1, 2, 4] {
        assert!(kv.store.lease(id).is_none(), "lease {id} is gone");
    }
    assert_eq!(
        kv.store.lease(3).map(|(_, keys)| keys),
        Some(vec![b"e".to_vec()])
    );

    kv.grant(5);
    let (empty, revisions) = kv.expire(7, &[5, 6]);
    assert_eq!(empty.result.expired, vec![5]);
    assert!(revisions.is_empty(), "no key deleted, no revision");
    assert_eq!((empty.revision, kv.current()), (7, 7));
    let (_, revisions) = kv.revoke(3);
    assert_eq!(
        revisions.iter().map(deleted_keys).collect::<Vec<_>>(),
        vec![vec!["e".to_owned()]],
        "a revoke after an expire goes on at the next revision"
    );
    assert_eq!(kv.current(), 8);
}

#[test]
fn a_checkpoint_counts_only_under_the_current_epoch() {
    let mut kv = Kv::new();
    kv.grant(1); // entry 1
    kv.grant(2); // entry 2
    assert_eq!(kv.lease_record(1).map(|l| l.remaining_ms), Some(0));
    let hash = kv.hash();

    let (before_any_claim, _) = kv.fenced(Op::LeaseCheckpoint(LeaseCheckpoint {
        epoch: 0,
        leases: vec![LeaseRemaining {
            id: 1,
            remaining_ms: 1,
        }],
    })); // entry 3
    assert!(!before_any_claim.result.accepted);
    kv.claim("first", 1); // entry 4
    let checkpoint = kv.checkpoint(1, &[(1, 5_000), (99, 1)]); // entry 5
    assert!(checkpoint.result.accepted);
    assert_eq!(checkpoint.result.holder, Some(holder("first", 1, 4, 5)));
    assert_eq!(
        kv.lease_record(1),
        Some(LeaseRecord {
            id: 1,
            ttl: 60,
            remaining_ms: 5_000
        })
    );
    assert_eq!(
        kv.lease_record(2).map(|l| l.remaining_ms),
        Some(0),
        "a lease not listed keeps its last checkpoint"
    );
    assert!(kv.lease_record(99).is_none(), "unknown ids are skipped");

    kv.claim("second", 2); // entry 6
    let stale = kv.checkpoint(1, &[(1, 10), (2, 10)]); // entry 7
    assert!(!stale.result.accepted);
    assert_eq!(stale.result.holder, Some(holder("second", 2, 6, 6)));
    assert_eq!(kv.lease_record(1).map(|l| l.remaining_ms), Some(5_000));
    assert_eq!(kv.lease_record(2).map(|l| l.remaining_ms), Some(0));

    let current = kv.checkpoint(2, &[(2, 700)]); // entry 8
    assert!(current.result.accepted);
    assert_eq!(kv.store.lease_holder(), holder("second", 2, 6, 8));
    assert_eq!(kv.lease_record(2).map(|l| l.remaining_ms), Some(700));
    let table = kv.store.lease_table();
    assert_eq!(
        table
            .leases
            .iter()
            .map(|l| (l.id, l.remaining_ms))
            .collect::<Vec<_>>(),
        vec![(1, 5_000), (2, 700)]
    );
    assert_eq!((table.revision, table.applied.index), (1, 8));

    assert_eq!(kv.current(), 1, "checkpoints change no key");
    assert_eq!(kv.hash(), hash, "nor HashKV");
}

#[test]
fn a_grant_or_revoke_fenced_by_a_superseded_claim_is_void() {
    let mut kv = Kv::new();
    kv.claim("lease-1:2380", 1);
    kv.claim("lease-2:2380", 2);
    let fenced = |op: Op, fence_epoch: u64| LogEntry {
        index: 100 + fence_epoch,
        term: 1,
        commands: vec![Command {
            origin: 1,
            sequence: 1,
            op: Some(op),
            fence_epoch,
            ..Default::default()
        }
        .encode_to_vec()
        .into()],
    };
    let stale = kv
        .store
        .apply(&[fenced(
            Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }),
            1,
        )])
        .expect("the entry applies");
    let outcome = stale.outcomes.into_iter().next().expect("one outcome");
    assert!(
        matches!(outcome.result, Err(ref error) if error.etcd() == Some(EtcdError::LeaderChanged)),
        "a grant under epoch 1 after the claim of epoch 2: {:?}",
        outcome.result
    );
    assert!(kv.store.lease(7).is_none(), "the void grant left no lease");

    let current = kv
        .store
        .apply(&[fenced(
            Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }),
            2,
        )])
        .expect("the entry applies");
    let outcome = current.outcomes.into_iter().next().expect("one outcome");
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert!(kv.store.lease(7).is_some());
}
