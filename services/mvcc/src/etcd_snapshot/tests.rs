use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{
    Command, EtcdLease, LeaseCheckpoint, LeaseClaim, LeaseRecord, LeaseRemaining,
};
use cairn_proto::etcdserverpb::request_op::Request as TxnOp;
use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use super::hash::{hash_contents, Crc32c};
use super::mapping::{self, revision_key};
use super::*;
use crate::store::LogEntry;

/// Applies commands to a store, one log entry each.
struct Driver {
    store: Store,
    index: u64,
}

impl Driver {
    fn new(dir: &Path) -> Result<Self, MvccError> {
        Ok(Self {
            store: Store::open(dir)?,
            index: 0,
        })
    }

    fn run(&mut self, op: Op) -> Result<(), MvccError> {
        self.index += 1;
        let command = Command {
            origin: 1,
            sequence: self.index,
            op: Some(op),
            ..Default::default()
        };
        let applied = self.store.apply(&[LogEntry {
            index: self.index,
            term: 1,
            commands: vec![command.encode_to_vec().into()],
        }])?;
        for outcome in applied.outcomes {
            outcome.result?;
        }
        Ok(())
    }

    fn put(&mut self, key: &str, value: &str, lease: i64) -> Result<(), MvccError> {
        self.run(Op::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        }))
    }

    fn delete(&mut self, key: &str, range_end: &str) -> Result<(), MvccError> {
        self.run(Op::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            ..Default::default()
        }))
    }

    fn compact(&mut self, revision: i64) -> Result<(), MvccError> {
        self.run(Op::Compaction(CompactionRequest {
            revision,
            physical: false,
        }))
    }

    fn revision(&self) -> i64 {
        self.store.status().current
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(TxnOp::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

/// A store with puts, overwrites, deletes, a txn of several writes, leases
/// (one checkpointed, one revoked with its keys), a compaction and writes
/// after it. Returns the revision compacted at.
fn busy_store(driver: &mut Driver) -> Result<i64, MvccError> {
    driver.run(Op::LeaseGrant(LeaseGrantRequest { id: 100, ttl: 60 }))?;
    driver.run(Op::LeaseGrant(LeaseGrantRequest { id: 200, ttl: 30 }))?;
    driver.run(Op::LeaseGrant(LeaseGrantRequest { id: 300, ttl: 90 }))?;
    for round in 0..3 {
        for key in 0..10 {
            driver.put(&format!("k{key}"), &format!("v{round}-{key}"), 0)?;
        }
    }
    driver.put("leased-a", "a", 100)?;
    driver.put("leased-b", "b", 100)?;
    driver.put("leased-c", "c", 300)?;
    driver.put("gone-with-lease", "x", 200)?;
    driver.delete("k3", "")?;
    driver.delete("k5", "k7")?;
    driver.run(Op::Txn(TxnRequest {
        success: vec![
            put_op("t1", "one"),
            put_op("t2", "two"),
            put_op("k3", "back"),
        ],
        ..Default::default()
    }))?;
    driver.put("k1", "later", 0)?;
    driver.run(Op::LeaseRevoke(
        cairn_proto::etcdserverpb::LeaseRevokeRequest { id: 200 },
    ))?;
    driver.run(Op::LeaseClaim(LeaseClaim {
        holder: "lease-1".into(),
        epoch: 1,
    }))?;
    driver.run(Op::LeaseCheckpoint(LeaseCheckpoint {
        epoch: 1,
        leases: vec![LeaseRemaining {
            id: 100,
            remaining_ms: 12_345,
        }],
    }))?;
    driver.put("k2", "before compaction", 0)?;
    let compacted = driver.revision();
    driver.compact(compacted)?;
    driver.put("k2", "after", 0)?;
    driver.delete("k8", "")?;
    driver.put("k8", "again", 0)?;
    driver.put("leased-a", "still", 100)?;
    Ok(compacted)
}

fn everything(revision: i64) -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..Default::default()
    }
}

#[test]
fn a_store_exported_and_imported_answers_the_same_at_every_revision_held() -> Result<(), MvccError>
{
    let dir = tempfile::tempdir().map_err(|error| io_error("tempdir", error))?;
    let mut driver = Driver::new(&dir.path().join("store"))?;
    let compacted = busy_store(&mut driver)?;
    let original = &driver.store;

    let exported = export(original)?;
    let contents = mapping::from_buckets(&exported)?;
    assert_eq!(contents.compacted, compacted);
    assert_eq!(contents.current(), original.status().current);
    assert_eq!(contents.consistent_index, driver.index);

    let imported_dir = dir.path().join("imported");
    let status = import(&exported, &imported_dir)?;
    let imported = Store::open(&imported_dir)?;
    assert_eq!(imported.status(), status);
    let before = original.status();
    assert_eq!(
        (status.current, status.compacted, status.keys, status.leases),
        (before.current, before.compacted, before.keys, before.leases)
    );
    assert_eq!(status.applied, crate::store::LogPosition::default());

    // cairn's own hash and every read at every revision still held agree.
    assert_eq!(imported.hash_kv(0)?, original.hash_kv(0)?);
    for revision in compacted..=before.current {
        assert_eq!(
            imported.range_now(&everything(revision))?,
            original.range_now(&everything(revision))?,
            "at revision {revision}"
        );
        assert_eq!(
            imported.hash_kv(revision)?,
            original.hash_kv(revision)?,
            "hash at {revision}"
        );
    }
    // Leases and their keys; the remaining TTL went through whole seconds.
    let lease = |store: &Store, id| store.lease(id);
    let (record, keys) = lease(&imported, 100).ok_or(MvccError::Stopped)?;
    // 12,345 ms checkpointed: 13 s in etcd's whole seconds, rounded up.
    assert_eq!(
        record,
        LeaseRecord {
            id: 100,
            ttl: 60,
            remaining_ms: 13_000
        }
    );
    assert_eq!(keys, vec![b"leased-a".to_vec(), b"leased-b".to_vec()]);
    assert_eq!(lease(&imported, 300), lease(original, 300));
    assert_eq!(lease(&imported, 200), None);

    // Exported again, the key space is byte for byte the same: etcd's
    // HashKV and snapshot status agree; only the applied index differs.
    let again = export(&imported)?;
    assert_eq!(again.get(mapping::KEY), exported.get(mapping::KEY));
    assert_eq!(again.get(mapping::LEASE), exported.get(mapping::LEASE));
    for revision in [0, compacted + 1, before.current] {
        assert_eq!(hash_kv(&again, revision)?, hash_kv(&exported, revision)?);
    }
    let (first, second) = (super::status(&exported), super::status(&again));
    assert_eq!(
        (first.revision, first.total_key),
        (second.revision, second.total_key)
    );
    Ok(())
}

#[test]
fn the_snapshot_file_reads_back_as_the_buckets_it_was_written_from() -> Result<(), MvccError> {
    let dir = tempfile::tempdir().map_err(|error| io_error("tempdir", error))?;
    let mut driver = Driver::new(&dir.path().join("store"))?;
    busy_store(&mut driver)?;
    let file = export_file(&driver.store)?;
    // Whole pages, then the SHA-256 etcdctl checks before restoring.
    assert_eq!(file.len() % 512, 32);
    assert_eq!(bbolt::read(&file)?, export(&driver.store)?);
    let status = import_file(&file, &dir.path().join("imported"))?;
    assert_eq!(status.current, driver.store.status().current);
    Ok(())
}

#[test]
fn a_delete_at_the_compaction_revision_is_left_out_as_etcd_removes_it() -> Result<(), MvccError> {
    let dir = tempfile::tempdir().map_err(|error| io_error("tempdir", error))?;
    let mut driver = Driver::new(&dir.path().join("store"))?;
    driver.put("a", "1", 0)?;
    driver.put("b", "1", 0)?;
    driver.delete("a", "")?;
    driver.compact(4)?;
    let exported = export(&driver.store)?;
    let keys: Vec<_> = exported[mapping::KEY]
        .iter()
        .map(|(key, _)| key.clone())
        .collect();
    assert_eq!(keys, vec![revision_key(Revision::new(3, 0), false)]);
    let status = import(&exported, &dir.path().join("imported"))?;
    assert_eq!((status.current, status.compacted, status.keys), (4, 4, 1));
    Ok(())
}

#[test]
fn buckets_are_laid_out_as_etcd_lays_them_out() -> Result<(), MvccError> {
    let dir = tempfile::tempdir().map_err(|error| io_error("tempdir", error))?;
    let mut driver = Driver::new(&dir.path().join("store"))?;
    driver.run(Op::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 5 }))?;
    driver.put("a", "x", 7)?;
    driver.delete("a", "")?;
    driver.compact(2)?;
    let exported = export(&driver.store)?;
    let names: Vec<&[u8]> = exported.keys().map(Vec::as_slice).collect();
    let expected: Vec<&[u8]> = vec![
        b"alarm",
        b"auth",
        b"authRoles",
        b"authUsers",
        b"cluster",
        b"key",
        b"lease",
        b"members",
        b"members_removed",
        b"meta",
    ];
    assert_eq!(names, expected);
    let put = KeyValue {
        key: b"a".to_vec(),
        value: b"x".to_vec(),
        create_revision: 2,
        mod_revision: 2,
        version: 1,
        lease: 7,
    };
    let mut put_key = vec![0, 0, 0, 0, 0, 0, 0, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 0];
    let tombstone_key = [
        &[0, 0, 0, 0, 0, 0, 0, 3, b'_', 0, 0, 0, 0, 0, 0, 0, 0][..],
        b"t",
    ]
    .concat();
    assert_eq!(
        exported[mapping::KEY],
        vec![
            (put_key.clone(), put.encode_to_vec()),
            // A delete's value is the KeyValue with only its key.
            (tombstone_key, vec![0x0a, 1, b'a']),
        ]
    );
    assert_eq!(
        exported[mapping::LEASE],
        vec![(7_i64.to_be_bytes().to_vec(), vec![0x08, 7, 0x10, 5])]
    );
    put_key[7] = 2;
    assert_eq!(
        exported[mapping::META],
        vec![
            (b"consistent_index".to_vec(), 4_u64.to_be_bytes().to_vec()),
            (b"finishedCompactRev".to_vec(), put_key.clone()),
            (b"scheduledCompactRev".to_vec(), put_key),
        ]
    );
    assert_eq!(
        exported[mapping::CLUSTER],
        vec![(b"clusterVersion".to_vec(), b"3.4.0".to_vec())]
    );
    assert_eq!(
        exported[mapping::AUTH],
        vec![(b"authRevision".to_vec(), 1_u64.to_be_bytes().to_vec())]
    );
    // leasepb.Lease{ID=1, TTL=2, RemainingTTL=3}.
    let lease = EtcdLease {
        id: 1,
        ttl: 2,
        remaining_ttl: 3,
    };
    assert_eq!(lease.encode_to_vec(), vec![0x08, 1, 0x10, 2, 0x18, 3]);
    Ok(())
}

#[test]
fn crc32c_is_castagnolis() {
    let mut crc = Crc32c::new();
    crc.update(b"123456789");
    assert_eq!(crc.finish(), 0xE306_9283);
}

/// Buckets from raw `key` entries and `meta`, for the refusals.
fn buckets_of(key: Vec<(Vec<u8>, Vec<u8>)>, lease: Vec<(Vec<u8>, Vec<u8>)>) -> Buckets {
    let mut buckets = Buckets::new();
    buckets.insert(mapping::KEY.to_vec(), key);
    buckets.insert(mapping::LEASE.to_vec(), lease);
    buckets.insert(mapping::META.to_vec(), Vec::new());
    buckets
}

fn put_entry(main: i64, key: &str, created: i64, version: i64, lease: i64) -> (Vec<u8>, Vec<u8>) {
    let kv = KeyValue {
        key: key.into(),
        value: b"v".to_vec(),
        create_revision: created,
        mod_revision: main,
        version,
        lease,
    };
    (
        revision_key(Revision::new(main, 0), false),
        kv.encode_to_vec(),
    )
}

fn delete_entry(main: i64, key: &str) -> (Vec<u8>, Vec<u8>) {
    let kv = KeyValue {
        key: key.into(),
        ..Default::default()
    };
    (
        revision_key(Revision::new(main, 0), true),
        kv.encode_to_vec(),
    )
}

fn lease_entry(id: i64, ttl: i64) -> (Vec<u8>, Vec<u8>) {
    let lease = EtcdLease {
        id,
        ttl,
        remaining_ttl: 0,
    };
    (id.to_be_bytes().to_vec(), lease.encode_to_vec())
}

/// Imports `buckets`, expecting a refusal that mentions `why`, and checks
/// that nothing was left in `parent`.
fn refused(buckets: &Buckets, why: &str) -> Result<(), MvccError> {
    let dir = tempfile::tempdir().map_err(|error| io_error("tempdir", error))?;
    let target = dir.path().join("store");
    match import(buckets, &target) {
        Err(MvccError::EtcdSnapshot(message)) => {
            assert!(message.contains(why), "{message:?} should say {why:?}")
        }
        other => panic!("expected a refusal saying {why:?}, got {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .map_err(|error| io_error("listing", error))?
        .collect();
    assert!(left.is_empty(), "the refused import left {left:?}");
    Ok(())
}

#[test]
fn a_consistent_snapshot_is_imported_and_each_kind_of_inconsistency_refused(
) -> Result<(), MvccError> {
    let good = vec![
        put_entry(2, "a", 2, 1, 5),
        put_entry(3, "a", 2, 2, 5),
        put_entry(4, "b", 4, 1, 0),
        delete_entry(5, "b"),
    ];
    let dir = tempfile::tempdir().map_err(|error| io_error("tempdir", error))?;
    let status = import(
        &buckets_of(good.clone(), vec![lease_entry(5, 10)]),
        &dir.path().join("store"),
    )?;
    assert_eq!((status.current, status.keys, status.leases), (5, 2, 1));

    let mut cut = good.clone();
    cut[1].0.truncate(12);
    refused(
        &buckets_of(cut, vec![lease_entry(5, 10)]),
        "is not a revision",
    )?;
    let mut no_mark = good.clone();
    no_mark[1].0[8] = b'-';
    refused(
        &buckets_of(no_mark, vec![lease_entry(5, 10)]),
        "is not a revision",
    )?;
    let mut garbage = good.clone();
    garbage[2].1 = vec![0xff, 0xff, 0xff];
    refused(
        &buckets_of(garbage, vec![lease_entry(5, 10)]),
        "not an mvccpb.KeyValue",
    )?;
    let mut wrong_mod = good.clone();
    wrong_mod[2] = (revision_key(Revision::new(4, 0), false), {
        let mut kv = KeyValue::decode(good[2].1.as_slice()).map_err(|_| MvccError::Stopped)?;
        kv.mod_revision = 9;
        kv.encode_to_vec()
    });
    refused(
        &buckets_of(wrong_mod, vec![lease_entry(5, 10)]),
        "mod_revision 9 disagrees",
    )?;
    let mut skipped_version = good.clone();
    skipped_version[1] = put_entry(3, "a", 2, 3, 5);
    refused(
        &buckets_of(skipped_version, vec![lease_entry(5, 10)]),
        "do not follow",
    )?;
    refused(
        &buckets_of(good.clone(), Vec::new()),
        "on lease 0000000000000005",
    )?;
    let mut twice = good.clone();
    twice.insert(1, delete_entry(2, "a"));
    refused(&buckets_of(twice, vec![lease_entry(5, 10)]), "comes twice")?;
    let mut bad_meta = buckets_of(good.clone(), vec![lease_entry(5, 10)]);
    bad_meta.insert(
        mapping::META.to_vec(),
        vec![(b"finishedCompactRev".to_vec(), vec![1, 2, 3])],
    );
    refused(&bad_meta, "finishedCompactRev")?;
    let mut misfiled = vec![lease_entry(5, 10)];
    misfiled[0].0 = 6_i64.to_be_bytes().to_vec();
    refused(&buckets_of(good.clone(), misfiled), "holds id 5")?;

    // A key whose lease is gone is fine once the key is deleted.
    let mut deleted = good;
    deleted.push(delete_entry(6, "a"));
    import(&buckets_of(deleted, Vec::new()), &dir.path().join("other"))?;
    // And nothing is imported over an existing directory.
    refused_existing(dir.path())?;
    Ok(())
}

fn refused_existing(dir: &Path) -> Result<(), MvccError> {
    let outcome = import(&buckets_of(Vec::new(), Vec::new()), &dir.join("store"));
    assert!(matches!(outcome, Err(MvccError::EtcdSnapshot(message)) if message.contains("exists")));
    Ok(())
}

#[test]
fn a_compaction_scheduled_but_not_finished_is_finished_on_import() -> Result<(), MvccError> {
    // a: put 2, put 3, put 6; b: put 4, delete 5; c: put 7.
    let key = vec![
        put_entry(2, "a", 2, 1, 0),
        put_entry(3, "a", 2, 2, 0),
        put_entry(4, "b", 4, 1, 0),
        delete_entry(5, "b"),
        put_entry(6, "a", 2, 3, 0),
        put_entry(7, "c", 7, 1, 0),
    ];
    let mut buckets = buckets_of(key, Vec::new());
    let five = revision_key(Revision::new(5, 0), false);
    buckets.insert(
        mapping::META.to_vec(),
        vec![(b"scheduledCompactRev".to_vec(), five)],
    );
    let contents = mapping::from_buckets(&buckets)?;
    let held: Vec<i64> = contents
        .writes
        .iter()
        .map(|write| write.revision.main)
        .collect();
    // a keeps 3 (its newest at 5); b's life ended by 5, so it goes whole.
    assert_eq!(held, vec![3, 6, 7]);
    assert_eq!((contents.compacted, contents.current()), (5, 7));
    Ok(())
}

#[test]
fn hash_kv_counts_below_the_compaction_only_what_a_compaction_at_the_hashed_revision_keeps(
) -> Result<(), MvccError> {
    // a: put 2 (kept by the compaction at 3), put 4. HashKV at 4 leaves the
    // write at 2 out, as etcd's does; at 3... is compacted.
    let key = vec![put_entry(2, "a", 2, 1, 0), put_entry(4, "a", 2, 2, 0)];
    let mut buckets = buckets_of(key.clone(), Vec::new());
    let three = revision_key(Revision::new(3, 0), false);
    buckets.insert(
        mapping::META.to_vec(),
        vec![
            (b"finishedCompactRev".to_vec(), three.clone()),
            (b"scheduledCompactRev".to_vec(), three),
        ],
    );
    let mut crc = Crc32c::new();
    crc.update(b"key");
    crc.update(&key[1].0);
    crc.update(&key[1].1);
    let hashed = hash_kv(&buckets, 0)?;
    assert_eq!(
        hashed,
        EtcdHashKv {
            hash: crc.finish(),
            revision: 4,
            current_revision: 4,
            compact_revision: 3
        }
    );
    assert!(matches!(
        hash_kv(&buckets, 3),
        Err(MvccError::Compacted {
            compact_revision: 3
        })
    ));
    assert!(hash_kv(&buckets, 5).is_err());
    let contents = mapping::from_buckets(&buckets)?;
    assert_eq!(hash_contents(&contents, 4)?, hashed);
    Ok(())
}
