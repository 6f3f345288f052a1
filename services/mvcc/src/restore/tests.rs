use cairn_proto::cairn::mvcc::v1::{Command, LeaseClaim, PublisherClaim};
use cairn_proto::etcdserverpb::{LeaseGrantRequest, PutRequest};
use prost::Message;

use super::*;
use crate::store::LogEntry;

fn command(sequence: u64, op: Op) -> bytes::Bytes {
    Command {
        origin: 3,
        sequence,
        op: Some(op),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

fn entry(index: u64, commands: Vec<bytes::Bytes>) -> LogEntry {
    LogEntry {
        index,
        term: 2,
        commands,
    }
}

fn restore(revision: i64, hash: u32) -> Op {
    Op::Restore(Restore { revision, hash })
}

fn put(key: &str) -> Op {
    Op::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn temp() -> Result<tempfile::TempDir, MvccError> {
    tempfile::tempdir().map_err(io_error)
}

#[test]
fn a_restore_on_a_fresh_store_stops_before_its_entry_with_the_claims_in_force(
) -> Result<(), MvccError> {
    let dir = temp()?;
    let store = Store::open(&dir.path().join("mvcc"))?;
    let claim = Op::LeaseClaim(LeaseClaim {
        holder: "lease-1".into(),
        epoch: 4,
    });
    let publisher = Op::PublisherClaim(PublisherClaim {
        holder: "mvcc-1".into(),
        epoch: 2,
    });
    let applied = store.apply(&[
        entry(3, vec![command(1, claim), command(2, publisher)]),
        // Whatever else the restore's entry holds has no effect.
        entry(
            4,
            vec![command(3, put("lost")), command(4, restore(900, 7))],
        ),
        entry(5, vec![command(5, put("later"))]),
    ])?;
    let point = applied.restore.expect("a restore point");
    assert_eq!((point.index, point.term), (4, 2));
    assert_eq!((point.revision, point.hash), (900, 7));
    assert_eq!((point.origin, point.sequence), (3, 4));
    assert_eq!(point.holder.epoch, 4);
    assert_eq!(point.publisher.holder, "mvcc-1");
    // Applied up to the entry before; nothing of the entry on disk.
    assert_eq!(applied.position.index, 3);
    assert_eq!(applied.outcomes.len(), 2);
    drop(store);
    let reopened = Store::open(&dir.path().join("mvcc"))?;
    assert_eq!(reopened.status().applied.index, 3);
    assert_eq!(reopened.status().current, 1);
    Ok(())
}

#[test]
fn a_restore_into_a_store_with_data_or_leases_fails_whole_alike_everywhere() -> Result<(), MvccError>
{
    let dir = temp()?;
    let with_data = Store::open(&dir.path().join("data"))?;
    with_data.apply(&[entry(1, vec![command(1, put("k"))])])?;
    let applied = with_data.apply(&[entry(2, vec![command(2, restore(900, 7))])])?;
    assert!(applied.restore.is_none());
    assert_eq!(applied.position.index, 2);
    match &applied.outcomes[0].result {
        Err(MvccError::NotFresh(why)) => assert_eq!(
            why,
            "the cluster already holds data at revision 2; restore needs a fresh cluster"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(with_data.status().current, 2);

    let with_lease = Store::open(&dir.path().join("lease"))?;
    let grant = Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 5 });
    with_lease.apply(&[entry(1, vec![command(1, grant)])])?;
    let applied = with_lease.apply(&[entry(2, vec![command(2, restore(900, 7))])])?;
    assert!(applied.restore.is_none());
    assert!(matches!(
        &applied.outcomes[0].result,
        Err(MvccError::NotFresh(why)) if why.contains("lease")
    ));
    let status = tonic::Status::from(MvccError::NotFresh("x".into()));
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    Ok(())
}

#[test]
fn a_restored_store_takes_the_restores_position_and_fences_the_lease_claim() -> Result<(), MvccError>
{
    let dir = temp()?;
    let store = Store::open(&dir.path().join("staged"))?;
    let point = RestorePoint {
        index: 12,
        term: 3,
        revision: 1,
        hash: 0,
        origin: 1,
        sequence: 1,
        holder: cairn_proto::cairn::mvcc::v1::LeaseHolder {
            holder: "lease-1".into(),
            epoch: 6,
            claim_index: 2,
            checkpoint_index: 11,
        },
        publisher: PublisherClaim {
            holder: "mvcc-2".into(),
            epoch: 1,
        },
        alarms: Vec::new(),
    };
    store.adopt_restore(&point)?;
    drop(store);
    let store = Store::open(&dir.path().join("staged"))?;
    assert_eq!(store.status().applied.index, 12);
    assert_eq!(store.status().applied.term, 3);
    let holder = store.lease_holder();
    assert_eq!((holder.holder.as_str(), holder.epoch), ("", 7));
    assert_eq!(store.publisher().holder, "mvcc-2");
    Ok(())
}

#[test]
fn only_a_staged_store_with_the_restores_hash_and_revision_is_swapped_in(
) -> Result<(), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("mvcc-1");
    for name in [
        "mvcc-1.restore-0000002a-500-17",
        "mvcc-1.restore-0000002b-500-18",
        "mvcc-2.restore-0000002c-500-19",
    ] {
        std::fs::create_dir(dir.path().join(name))?;
    }
    assert_eq!(
        find_staged(&data_dir, 42, 500),
        Some(dir.path().join("mvcc-1.restore-0000002a-500-17"))
    );
    // Another hash, another revision, another replica's: none of them.
    assert_eq!(find_staged(&data_dir, 41, 500), None);
    assert_eq!(find_staged(&data_dir, 42, 501), None);
    assert_eq!(find_staged(&data_dir, 44, 500), None);
    assert_eq!(staged_as("mvcc-1", "mvcc-1.restore-0000002a-500-"), None);
    assert_eq!(staged_as("mvcc-1", "mvcc-1.restore-2a-500-1"), None);
    assert_eq!(staged_as("mvcc-1", "mvcc-1.restoring-1"), None);
    Ok(())
}

#[test]
fn half_built_stores_always_go_and_staged_ones_once_the_store_is_not_fresh(
) -> Result<(), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("mvcc-1");
    for name in [
        "mvcc-1",
        "mvcc-1.restoring-1",
        "mvcc-1.restore-0000002a-500-2",
        "mvcc-1.seed-3",
    ] {
        std::fs::create_dir(dir.path().join(name))?;
    }
    let left = || -> Result<Vec<String>, std::io::Error> {
        let mut left: Vec<String> = std::fs::read_dir(dir.path())?
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        Ok(left)
    };
    remove_leftovers(&data_dir, true);
    assert_eq!(
        left()?,
        ["mvcc-1", "mvcc-1.restore-0000002a-500-2", "mvcc-1.seed-3"]
    );
    remove_leftovers(&data_dir, false);
    assert_eq!(left()?, ["mvcc-1", "mvcc-1.seed-3"]);
    Ok(())
}

/// A cairn snapshot of a store holding a few keys, as bytes.
fn cairn_snapshot(dir: &Path) -> Result<(Vec<u8>, u32), MvccError> {
    let store = Store::open(&dir.join("source"))?;
    store.apply(&[entry(1, vec![command(1, put("a")), command(2, put("b"))])])?;
    let checkpoint = crate::snapshot::Checkpoint::take(&store, dir.join("checkpoint"))?;
    let mut bytes = Vec::new();
    checkpoint.write_to(&mut bytes)?;
    Ok((bytes, store.hash_kv(0)?.0))
}

fn build_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<Built, MvccError> {
    let upload = dir.join(format!("{name}.upload"));
    std::fs::write(&upload, bytes).map_err(io_error)?;
    build(&upload, &dir.join(name))
}

fn refused(result: Result<Built, MvccError>) -> String {
    match result {
        Err(MvccError::InvalidArgument(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_whole_cairn_snapshot_builds_the_store_it_was_taken_of() -> Result<(), MvccError> {
    let dir = temp()?;
    let (bytes, hash) = cairn_snapshot(dir.path())?;
    let built = build_bytes(dir.path(), "whole", &bytes)?;
    assert_eq!(built.format, "cairn");
    assert_eq!((built.revision, built.hash, built.keys), (3, hash, 2));
    Ok(())
}

#[test]
fn truncated_damaged_and_foreign_files_are_refused_with_why() -> Result<(), MvccError> {
    let dir = temp()?;
    let (bytes, _) = cairn_snapshot(dir.path())?;
    let why = refused(build_bytes(dir.path(), "cut", &bytes[..bytes.len() - 100]));
    assert!(why.starts_with("not a whole cairn snapshot"), "{why}");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let why = refused(build_bytes(dir.path(), "flipped", &flipped));
    assert!(why.starts_with("not a whole cairn snapshot"), "{why}");
    let why = refused(build_bytes(
        dir.path(),
        "text",
        b"hello, this is not a snapshot\n",
    ));
    assert!(why.starts_with("not a snapshot"), "{why}");
    let why = refused(build_bytes(dir.path(), "empty", b""));
    assert!(why.starts_with("not a snapshot"), "{why}");

    // A bbolt file cut short is refused by the bbolt reader's checks.
    let buckets: crate::bbolt::Buckets = [(b"key".to_vec(), vec![(b"k".to_vec(), b"v".to_vec())])]
        .into_iter()
        .collect();
    let bbolt = crate::bbolt::with_sha256_trailer(crate::bbolt::write(&buckets));
    assert_eq!(sniff(&bbolt), Some("etcd"));
    let why = refused(build_bytes(dir.path(), "bbolt-cut", &bbolt[..5000]));
    assert!(why.starts_with("not a whole etcd snapshot"), "{why}");
    let mut flipped = bbolt.clone();
    flipped[4096 * 2 + 100] ^= 0x01;
    let why = refused(build_bytes(dir.path(), "bbolt-flipped", &flipped));
    assert!(why.starts_with("not a whole etcd snapshot"), "{why}");
    Ok(())
}
