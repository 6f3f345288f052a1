//! Restoring a fresh cairn from a snapshot (`cairnctl snapshot restore FILE
//! --replica HOST:PORT`): one a real etcd saved, and one cairn saved through
//! its edge. The restored cairn answers reads, leases and HashKV as the
//! source did; files that are not whole snapshots, and clusters that already
//! hold data, are refused and left as they were.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cairn_integration::clients::{etcdctl, run_client, Ran};
use cairn_integration::etcd::Etcd;
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::{bin_path, channel, eventually};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseTimeToLiveRequest,
    PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
};
use cairn_proto::mvccpb::KeyValue;
use tonic::transport::Channel;

/// Patience for a restore to reach every replica and the lease service.
const PATIENCE: Duration = Duration::from_secs(60);

/// `etcdctl snapshot save` of the cluster at `endpoint` into `file`.
async fn save(endpoint: &str, file: &Path) -> Result<()> {
    let file = file.to_string_lossy();
    etcdctl(&["--endpoints", endpoint, "snapshot", "save", &file]).await?;
    Ok(())
}

/// `cairnctl snapshot restore FILE --replica ADDR`, as it ran.
async fn restore(file: &Path, replica: &str) -> Result<Ran> {
    let file = file.to_string_lossy();
    run_client(
        &bin_path("cairnctl")?,
        &["snapshot", "restore", &file, "--replica", replica],
    )
    .await
}

fn put_op(key: String, value: String, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.into_bytes(),
            value: value.into_bytes(),
            lease,
            ..Default::default()
        })),
    }
}

/// Every key, at `revision` (0: the current one).
async fn everything(kv: &mut KvClient<Channel>, revision: i64) -> Result<RangeResponse> {
    Ok(kv
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// What a range answered that both stores must agree on.
fn rows(range: &RangeResponse) -> Vec<KeyValue> {
    range.kvs.clone()
}

/// What the etcd scenario wrote: the revisions and leases to check.
struct Written {
    /// A revision after the compaction, before the last writes.
    past: i64,
    current: i64,
    leases: Vec<i64>,
}

/// A few thousand keys over several revisions, some deleted, some on
/// leases, compacted once, with writes after the compaction.
async fn fill(kv: &mut KvClient<Channel>, lease: &mut LeaseClient<Channel>) -> Result<Written> {
    // 3,000 keys, 100 to a transaction.
    for batch in 0..30 {
        let success = (0..100)
            .map(|key| {
                let key = batch * 100 + key;
                put_op(format!("restore/key-{key:04}"), format!("first {key}"), 0)
            })
            .collect();
        kv.txn(TxnRequest {
            success,
            ..Default::default()
        })
        .await?;
    }
    // Overwrites one at a time: revisions with one write each.
    for key in (0..3000).step_by(20) {
        kv.put(PutRequest {
            key: format!("restore/key-{key:04}").into_bytes(),
            value: format!("second {key}").into_bytes(),
            ..Default::default()
        })
        .await?;
    }
    let mut leases = Vec::new();
    for (number, ttl) in [(1_i64, 600_i64), (2, 900), (3, 1200)] {
        let granted = lease
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await?
            .into_inner();
        leases.push(granted.id);
        for key in 0..30 {
            kv.put(PutRequest {
                key: format!("restore/leased-{number}-{key:02}").into_bytes(),
                value: format!("on lease {number}").into_bytes(),
                lease: granted.id,
                ..Default::default()
            })
            .await?;
        }
    }
    // Deletes: single keys, and a range.
    for key in (5..3000).step_by(37) {
        kv.delete_range(DeleteRangeRequest {
            key: format!("restore/key-{key:04}").into_bytes(),
            ..Default::default()
        })
        .await?;
    }
    let compact_at = kv
        .delete_range(DeleteRangeRequest {
            key: b"restore/key-2900".to_vec(),
            range_end: b"restore/key-2950".to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .context("a header")?
        .revision;
    kv.compact(CompactionRequest {
        revision: compact_at,
        physical: true,
    })
    .await?;
    let mut past = 0;
    for key in (0..3000).step_by(30) {
        // A txn with a compare, so both branches are exercised.
        let answer = kv
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Greater as i32,
                    target: CompareTarget::Version as i32,
                    key: format!("restore/key-{key:04}").into_bytes(),
                    target_union: Some(TargetUnion::Version(0)),
                    ..Default::default()
                }],
                success: vec![put_op(
                    format!("restore/key-{key:04}"),
                    format!("third {key}"),
                    0,
                )],
                failure: vec![put_op(
                    format!("restore/key-{key:04}"),
                    format!("again {key}"),
                    0,
                )],
            })
            .await?
            .into_inner();
        if key == 1500 {
            past = answer.header.context("a header")?.revision;
        }
    }
    let current = everything(kv, 0)
        .await?
        .header
        .context("a header")?
        .revision;
    Ok(Written {
        past,
        current,
        leases,
    })
}

/// The end of every replica's output, for a failure's context.
fn tails(stack: &Stack) -> String {
    stack
        .replicas
        .iter()
        .map(|replica| format!("{}:\n{}\n", replica.name, replica.output_tail(40)))
        .collect()
}

/// Staged or half-built restores beside the replicas' data directories.
fn staged_dirs(stack: &Stack) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for replica in &stack.replicas {
        let parent = replica.data_dir().parent().context("a parent directory")?;
        let name = replica.name.clone();
        for entry in std::fs::read_dir(parent)? {
            let file_name = entry?.file_name().to_string_lossy().into_owned();
            if file_name.starts_with(&format!("{name}.restor")) {
                found.push(file_name);
            }
        }
    }
    Ok(found)
}

/// Both replicas' HashKV once both hold `revision`; they must agree.
async fn replicas_agree(stack: &Stack, revision: i64) -> Result<u32> {
    let mut hashes = Vec::new();
    for replica in &stack.replicas {
        let hash = eventually(PATIENCE, "the replica holds the restored store", || async {
            replica
                .hash_kv(revision)
                .await
                .ok()
                .filter(|hash| hash.current_revision >= revision)
        })
        .await
        .with_context(|| replica.output_tail(30))?;
        hashes.push(hash.hash);
    }
    ensure!(
        hashes.windows(2).all(|pair| pair[0] == pair[1]),
        "the replicas' HashKV differ at {revision}: {hashes:?}"
    );
    Ok(hashes[0])
}

fn seeding() -> StackOptions {
    StackOptions {
        seed_each_other: true,
        ..StackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_a_real_etcd_saved_restores_into_a_fresh_cairn_that_answers_as_etcd_did(
) -> Result<()> {
    let etcd = Etcd::start_cluster(1).await?;
    let endpoint = etcd.endpoints().first().cloned().context("an endpoint")?;
    let mut etcd_kv = KvClient::new(channel(&endpoint)?);
    let mut etcd_lease = LeaseClient::new(channel(&endpoint)?);
    let written = fill(&mut etcd_kv, &mut etcd_lease).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("etcd.db");
    save(&endpoint, &file).await?;

    let stack = Stack::start(seeding()).await?;
    let restored = restore(&file, &stack.replicas[0].addr)
        .await
        .with_context(|| tails(&stack))?;
    ensure!(
        restored.ok,
        "restore failed: {}{}",
        restored.stdout,
        restored.stderr
    );
    ensure!(
        restored.stdout.contains(&format!(
            "Restored etcd snapshot: revision {}",
            written.current
        )),
        "{}",
        restored.stdout
    );

    // Reads at the current revision and at a past one: the same rows.
    let mut kv = stack.edge.kv()?;
    for revision in [0, written.past] {
        let expected = everything(&mut etcd_kv, revision).await?;
        let found = everything(&mut kv, revision).await?;
        ensure!(
            found.count == expected.count && found.kvs.len() > 2000,
            "at {revision}: {} keys, etcd {}",
            found.count,
            expected.count
        );
        ensure!(
            rows(&found) == rows(&expected),
            "the rows at revision {revision} differ from etcd's"
        );
        ensure!(
            found.header.map(|header| header.revision)
                == expected.header.map(|header| header.revision),
            "the revision counter differs from etcd's"
        );
    }
    // Below the compaction both refuse.
    let compacted = everything(&mut kv, 2).await;
    ensure!(
        compacted.is_err_and(|error| error.to_string().contains("compacted")),
        "a read below the compaction must be refused"
    );

    // The leases, with their keys, resumed at their granted TTL.
    let lease = stack.lease()?;
    for id in &written.leases {
        let expected = etcd_lease
            .lease_time_to_live(LeaseTimeToLiveRequest {
                id: *id,
                keys: true,
            })
            .await?
            .into_inner();
        let found = eventually(PATIENCE, "the restored lease", || {
            let mut lease = lease.clone();
            async move {
                lease
                    .lease_time_to_live(LeaseTimeToLiveRequest {
                        id: *id,
                        keys: true,
                    })
                    .await
                    .ok()
                    .map(tonic::Response::into_inner)
                    .filter(|found| found.ttl > 0)
            }
        })
        .await?;
        let mut found_keys = found.keys.clone();
        let mut expected_keys = expected.keys.clone();
        found_keys.sort();
        expected_keys.sort();
        ensure!(found_keys == expected_keys && found_keys.len() == 30);
        ensure!(found.granted_ttl == expected.granted_ttl);
        ensure!(
            found.ttl <= found.granted_ttl && found.ttl >= found.granted_ttl - 5,
            "lease {id}: ttl {} of {}",
            found.ttl,
            found.granted_ttl
        );
    }
    // The restore moves the lease claim on, so the lease service may still
    // be changing hands: etcd's "leader changed", which clients retry.
    eventually(PATIENCE, "a lease granted after the restore", || {
        let mut lease = lease.clone();
        async move {
            lease
                .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
                .await
                .ok()
        }
    })
    .await?;

    // Every replica holds the same store, the one cairnctl reported.
    let hash = replicas_agree(&stack, written.current).await?;
    ensure!(
        restored.stdout.contains(&format!("hash {hash} ")),
        "{}",
        restored.stdout
    );
    // Writes go on from the restored revision.
    let next = stack.put("restore/after", 0).await?;
    ensure!(next == written.current + 1, "the next write made {next}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cairn_saved_restores_into_a_second_fresh_cairn_with_the_same_hash() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cairn.db");
    let (revision, hash) = {
        let source = Stack::start(StackOptions::default()).await?;
        let lease = source.grant(600).await?;
        for key in 0..200 {
            source.put(&format!("round/key-{key:03}"), 0).await?;
        }
        for key in 0..10 {
            source.put(&format!("round/leased-{key}"), lease).await?;
        }
        let revision = source.put("round/key-000", 0).await?;
        save(&source.edge.addr, &file).await?;
        let hash = source.replicas[0].hash_kv(revision).await?.hash;
        (revision, hash)
    };

    let stack = Stack::start(seeding()).await?;
    let restored = restore(&file, &stack.replicas[1].addr).await?;
    ensure!(
        restored.ok,
        "restore failed: {}{}",
        restored.stdout,
        restored.stderr
    );
    ensure!(
        restored.stdout.contains(&format!("revision {revision}")),
        "{}",
        restored.stdout
    );
    let restored_hash = replicas_agree(&stack, revision).await?;
    ensure!(
        restored_hash == hash,
        "HashKV at {revision}: {restored_hash}, the source's {hash}"
    );
    ensure!(stack.exists("round/leased-3").await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_damaged_and_foreign_files_are_refused_and_the_cluster_is_unchanged() -> Result<()>
{
    let etcd = Etcd::start().await?;
    let mut etcd_kv = KvClient::new(channel(&etcd.endpoint)?);
    for key in 0..50 {
        etcd_kv
            .put(PutRequest {
                key: format!("bad/{key}").into_bytes(),
                value: vec![b'v'; 200],
                ..Default::default()
            })
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let whole = dir.path().join("whole.db");
    save(&etcd.endpoint, &whole).await?;
    let bytes = std::fs::read(&whole)?;
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    let mut flipped_bytes = bytes.clone();
    // A byte inside the data pages: the SHA-256 trailer no longer matches.
    flipped_bytes[4096 * 3 + 17] ^= 0x20;
    let flipped = dir.path().join("flipped.db");
    std::fs::write(&flipped, &flipped_bytes)?;
    let foreign = dir.path().join("notes.txt");
    std::fs::write(
        &foreign,
        "these are not the bytes you are looking for\n".repeat(40),
    )?;

    let stack = Stack::start(seeding()).await?;
    for (file, why) in [
        (&truncated, "not a whole etcd snapshot"),
        (&flipped, "not a whole etcd snapshot"),
        (&foreign, "not a snapshot"),
    ] {
        let refused = restore(file, &stack.replicas[0].addr).await?;
        ensure!(!refused.ok, "{} was restored", file.display());
        ensure!(
            refused.stderr.contains(why),
            "{}: {}",
            file.display(),
            refused.stderr
        );
    }
    let mut kv = stack.edge.kv()?;
    let range = everything(&mut kv, 0).await?;
    ensure!(range.count == 0, "the cluster holds {} keys", range.count);
    ensure!(range.header.map(|header| header.revision) == Some(1));
    let left = staged_dirs(&stack)?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    // The whole file still restores: nothing of the refusals was in the way.
    let restored = restore(&whole, &stack.replicas[0].addr).await?;
    ensure!(restored.ok, "{}{}", restored.stdout, restored.stderr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_into_a_cluster_that_already_holds_data_is_refused() -> Result<()> {
    let etcd = Etcd::start().await?;
    let mut etcd_kv = KvClient::new(channel(&etcd.endpoint)?);
    etcd_kv
        .put(PutRequest {
            key: b"from-etcd".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("etcd.db");
    save(&etcd.endpoint, &file).await?;

    let stack = Stack::start(seeding()).await?;
    let revision = stack.put("already-here", 0).await?;
    let refused = restore(&file, &stack.replicas[0].addr).await?;
    ensure!(!refused.ok, "the restore went ahead: {}", refused.stdout);
    ensure!(
        refused.stderr.contains(&format!(
            "the cluster already holds data at revision {revision}; restore needs a fresh cluster"
        )),
        "{}",
        refused.stderr
    );
    ensure!(stack.exists("already-here").await?);
    ensure!(!stack.exists("from-etcd").await?);
    let left = staged_dirs(&stack)?;
    ensure!(left.is_empty(), "left behind: {left:?}");

    // The revision did not move.
    let stack_revision = everything(&mut stack.edge.kv()?, 0)
        .await?
        .header
        .context("a header")?
        .revision;
    ensure!(stack_revision == revision);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_saved_through_the_edge_passes_etcdctl_snapshot_status() -> Result<()> {
    // python-etcd3's test_snapshot: write, Snapshot into a file through the
    // client, then `etcdctl snapshot status` on it.
    let stack = Stack::start(StackOptions::default()).await?;
    for key in 0..20 {
        stack.put(&format!("status/{key}"), 0).await?;
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("through-the-edge.db");
    save(&stack.edge.addr, &file).await?;
    let status = etcdctl(&["snapshot", "status", &file.to_string_lossy(), "-w", "json"]).await?;
    if !status.contains("\"revision\":21") {
        bail!("etcdctl snapshot status: {status}");
    }
    Ok(())
}
