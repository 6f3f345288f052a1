//! `etcdctl snapshot save` against a whole cairn, restored into a real etcd:
//! the file is etcd's format, `etcdctl snapshot status` reads cairn's
//! revision and etcd's count from it, and the restored etcd answers the
//! same reads as cairn, at the current revision and at a past one.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use cairn_integration::clients::etcdctl;
use cairn_integration::etcd::Etcd;
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::{channel, free_port};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
    RangeResponse,
};
use tonic::transport::Channel;

const KEYS: usize = 300;

/// The number after `"<field>":` in etcdctl's one-line JSON.
fn json_number(json: &str, field: &str) -> Result<i64> {
    let start = json
        .find(&format!("\"{field}\":"))
        .with_context(|| format!("no {field} in {json}"))?
        + field.len()
        + 3;
    let digits: String = json[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits
        .parse()
        .with_context(|| format!("{field} in {json} is not a number"))
}

/// Every write, in order: (revision, key, is a delete).
#[derive(Default)]
struct Writes(Vec<(i64, String, bool)>);

impl Writes {
    /// The writes etcd 3.4 still holds after a compaction at `at`: every
    /// write after it, and of each key the newest write at or before it
    /// when that is a put.
    fn held_after_compaction(&self, at: i64) -> usize {
        let mut newest: BTreeMap<&str, bool> = BTreeMap::new();
        for (revision, key, delete) in &self.0 {
            if *revision <= at {
                newest.insert(key, *delete);
            }
        }
        let later = self
            .0
            .iter()
            .filter(|(revision, ..)| *revision > at)
            .count();
        later + newest.values().filter(|delete| !**delete).count()
    }
}

async fn put(
    kv: &mut KvClient<Channel>,
    writes: &mut Writes,
    key: String,
    value: String,
    lease: i64,
) -> Result<()> {
    let answer = kv
        .put(PutRequest {
            key: key.clone().into_bytes(),
            value: value.into_bytes(),
            lease,
            ..Default::default()
        })
        .await?
        .into_inner();
    writes
        .0
        .push((answer.header.context("a header")?.revision, key, false));
    Ok(())
}

async fn delete(kv: &mut KvClient<Channel>, writes: &mut Writes, key: String) -> Result<()> {
    let answer = kv
        .delete_range(DeleteRangeRequest {
            key: key.clone().into_bytes(),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(answer.deleted == 1, "{key} was not there to delete");
    writes
        .0
        .push((answer.header.context("a header")?.revision, key, true));
    Ok(())
}

fn under_prefix(revision: i64) -> RangeRequest {
    RangeRequest {
        key: b"snap/".to_vec(),
        range_end: b"snap0".to_vec(),
        revision,
        ..Default::default()
    }
}

async fn range(kv: &mut KvClient<Channel>, revision: i64) -> Result<RangeResponse> {
    Ok(kv.range(under_prefix(revision)).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_etcdctl_saves_from_cairn_restores_into_an_etcd_that_answers_the_same(
) -> Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let mut kv = stack.edge.kv()?;
    let mut writes = Writes::default();

    // Three rounds of puts, a lease with keys, deletes, one compaction
    // between the first and second rounds, writes after it.
    for key in 0..KEYS {
        put(
            &mut kv,
            &mut writes,
            format!("snap/key-{key:03}"),
            format!("first {key}"),
            0,
        )
        .await?;
    }
    let compacted = writes.0.last().map_or(0, |write| write.0);
    for key in (0..KEYS).step_by(2) {
        put(
            &mut kv,
            &mut writes,
            format!("snap/key-{key:03}"),
            format!("second {key}"),
            0,
        )
        .await?;
    }
    kv.compact(CompactionRequest {
        revision: compacted,
        physical: true,
    })
    .await?;
    let lease = stack.grant(3600).await?;
    for key in 0..20 {
        put(
            &mut kv,
            &mut writes,
            format!("snap/leased-{key:02}"),
            format!("on lease {key}"),
            lease,
        )
        .await?;
    }
    let past = writes.0.last().map_or(0, |write| write.0);
    for key in (0..KEYS).step_by(7) {
        delete(&mut kv, &mut writes, format!("snap/key-{key:03}")).await?;
    }
    for key in (0..KEYS).step_by(5) {
        put(
            &mut kv,
            &mut writes,
            format!("snap/key-{key:03}"),
            format!("third {key}"),
            0,
        )
        .await?;
    }
    let current = writes.0.last().map_or(0, |write| write.0);

    // Saved through the edge with etcd's own client.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cairn.db");
    let file_arg = file.to_string_lossy().into_owned();
    etcdctl(&[
        "--endpoints",
        &stack.edge.addr,
        "snapshot",
        "save",
        &file_arg,
    ])
    .await?;

    // etcdctl's status: the last revision in the `key` bucket, and every
    // entry of every bucket counted: the writes etcd holds after the
    // compaction, one lease, and five more (meta's consistent_index and two
    // compaction revisions, the cluster version, the auth revision).
    let status = etcdctl(&["snapshot", "status", &file_arg, "-w", "json"]).await?;
    ensure!(
        json_number(&status, "revision")? == current,
        "{status} vs revision {current}"
    );
    let expected = writes.held_after_compaction(compacted) + 1 + 5;
    ensure!(
        json_number(&status, "totalKey")? == expected as i64,
        "{status}: expected {expected} entries"
    );

    // Restored into a real etcd.
    let peer_url = format!("http://127.0.0.1:{}", free_port()?);
    let data_dir = dir.path().join("restored");
    let data_arg = data_dir.to_string_lossy().into_owned();
    let cluster = format!("restored={peer_url}");
    etcdctl(&[
        "snapshot",
        "restore",
        &file_arg,
        "--data-dir",
        &data_arg,
        "--name",
        "restored",
        "--initial-cluster",
        &cluster,
        "--initial-advertise-peer-urls",
        &peer_url,
    ])
    .await?;
    let etcd = Etcd::start_on(Path::new(&data_dir), "restored", &peer_url).await?;
    let mut restored = KvClient::new(channel(&etcd.endpoint)?);

    for revision in [0, past] {
        let ours = range(&mut kv, revision).await?;
        let theirs = range(&mut restored, revision).await?;
        ensure!(
            ours.kvs == theirs.kvs && ours.count == theirs.count,
            "at revision {revision}: cairn has {} keys, the restored etcd {}",
            ours.count,
            theirs.count
        );
        ensure!(
            !ours.kvs.is_empty(),
            "nothing under the prefix at {revision}"
        );
    }
    let header = range(&mut restored, 0).await?.header.context("a header")?;
    ensure!(
        header.revision == current,
        "etcd restored at {}, not {current}",
        header.revision
    );
    // Below the compaction both refuse alike.
    let compacted_read = restored.range(under_prefix(compacted - 1)).await;
    let refused = compacted_read
        .err()
        .context("the restored etcd read below the compaction")?;
    ensure!(refused.message().contains("compacted"), "{refused:?}");

    // The lease came along, with its keys.
    let alive = LeaseClient::new(channel(&etcd.endpoint)?)
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await?
        .into_inner();
    ensure!(alive.ttl > 0 && alive.keys.len() == 20, "{alive:?}");
    Ok(())
}
