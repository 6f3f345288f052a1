//! One replica publishes the revision stream at a time. Killed under writes,
//! the other takes over once the stream stops following its store, and
//! neither the stream nor a watcher misses, repeats or reorders a revision.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cairn_integration::log_cluster::{LogCluster, LogClusterOptions};
use cairn_integration::mvcc_cluster::{start_replicas, MvccReplica, NatsServer};
use cairn_integration::{eventually, watch, with_process_output};
use cairn_proto::cairn::mvcc::v1::{RevisionEvents, StatusRequest};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
use prost::Message;
use tonic::transport::Channel;

const WRITERS: usize = 4;
const STREAM: &str = "CAIRN_REVISIONS";

/// The replica the claim in force names, as `replica` reports it.
async fn publisher(replica: &MvccReplica) -> Option<String> {
    let status = replica.mvcc().ok()?.status(StatusRequest {}).await.ok()?;
    Some(status.into_inner().publisher).filter(|name| !name.is_empty())
}

/// Puts keys through `replica` until `stop`, recording each acknowledged
/// put's revision.
async fn write(
    mut kv: KvClient<Channel>,
    writer: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
) -> Result<()> {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let put = PutRequest {
            key: format!("k/{writer}/{n}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        if let Ok(answer) = kv.put(put).await {
            let revision = answer
                .into_inner()
                .header
                .map_or(0, |header| header.revision);
            acked
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(revision);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_publishing_replica_under_writes_loses_no_revision_from_the_stream_or_a_watcher(
) -> Result<()> {
    let cluster = LogCluster::start(LogClusterOptions::default()).await?;
    let dir = cluster.dir().to_owned();
    let outcome = async {
        let nats = NatsServer::start(cluster.dir()).await?;
        let log = cluster.addrs()?;
        let mut replicas =
            start_replicas(cluster.dir(), &["mvcc-1", "mvcc-2"], &log, &nats.url, "").await?;
        let holder = eventually(Duration::from_secs(20), "a publisher claim", || {
            publisher(&replicas[0])
        })
        .await?;
        let (publishing, standing_by) = match holder.as_str() {
            "mvcc-1" => (0, 1),
            "mvcc-2" => (1, 0),
            other => bail!("the claim names {other}"),
        };
        let addrs: Vec<String> = replicas.iter().map(|replica| replica.addr.clone()).collect();
        let mut gateway = watch::configure(cluster.dir(), "watch-1", &addrs, &nats.url, "", "")?;
        gateway.start()?;

        // A watcher on every written key, from before the first write.
        let start = replicas[standing_by].hash_kv(0).await?.current_revision + 1;
        let channel = cairn_integration::channel(&gateway.addr)?;
        let (requests, mut answers) = eventually(Duration::from_secs(20), "the gateway to watch", || {
            let channel = channel.clone();
            async move {
                let (requests, queued) = tokio::sync::mpsc::channel(4);
                let create = WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                        key: b"k/".to_vec(),
                        range_end: b"k0".to_vec(),
                        start_revision: start,
                        ..Default::default()
                    })),
                };
                requests.send(create).await.ok()?;
                let queued = tokio_stream::wrappers::ReceiverStream::new(queued);
                let answers = WatchClient::new(channel).watch(queued).await.ok()?;
                Some((requests, answers.into_inner()))
            }
        })
        .await?;

        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let kv = replicas[standing_by].kv();
                let (stop, acked) = (stop.clone(), acked.clone());
                tokio::spawn(async move { write(kv?, writer, stop, acked).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        replicas[publishing].kill().await?;
        // Writes go on through the takeover (two seconds of a stalled stream).
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await??;
        }
        let acked: BTreeSet<i64> = acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.iter().copied().collect();
        let current = replicas[standing_by].hash_kv(0).await?.current_revision;
        ensure!(acked.len() > 20, "only {} puts were acknowledged", acked.len());
        ensure!(
            publisher(&replicas[standing_by]).await.as_deref() == Some(replicas[standing_by].name.as_str()),
            "the surviving replica did not take the stream over"
        );

        // The stream holds every revision once, in order, sequence = revision.
        let client = async_nats::connect(&nats.url).await?;
        let jetstream = async_nats::jetstream::new(client);
        let mut stream = eventually(Duration::from_secs(30), "the stream to catch up", || {
            let jetstream = jetstream.clone();
            async move {
                let mut stream = jetstream.get_stream(STREAM).await.ok()?;
                let info = stream.info().await.ok()?;
                (info.state.last_sequence as i64 >= current).then_some(stream)
            }
        })
        .await?;
        let info = stream.info().await?;
        ensure!(
            info.state.messages == info.state.last_sequence && info.state.first_sequence == 1,
            "the stream has a gap: {:?}",
            info.state
        );
        for sequence in 1..=current as u64 {
            let message = stream.get_raw_message(sequence).await?;
            let published = RevisionEvents::decode(message.payload.as_ref())?;
            ensure!(
                published.revision == sequence as i64,
                "sequence {sequence} holds revision {}",
                published.revision
            );
        }

        // The watcher saw every acknowledged put's revision once, in order.
        let mut seen = Vec::new();
        while seen.last().is_none_or(|last| *last < current) {
            let answer = tokio::time::timeout(Duration::from_secs(20), answers.message())
                .await
                .context("the watcher stopped hearing revisions")??
                .context("the watch stream ended")?;
            ensure!(!answer.canceled, "the watch was cancelled: {}", answer.cancel_reason);
            seen.extend(answer.events.iter().filter_map(|event| event.kv.as_ref()).map(|kv| kv.mod_revision));
        }
        ensure!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "the watcher saw revisions out of order or twice"
        );
        let seen: BTreeSet<i64> = seen.into_iter().collect();
        let missed: Vec<&i64> = acked.difference(&seen).collect();
        ensure!(missed.is_empty(), "the watcher missed acknowledged revisions {missed:?}");
        eprintln!(
            "{} puts acknowledged, revisions {start}..={current}, publisher {} killed, {} took over",
            acked.len(),
            replicas[publishing].name,
            replicas[standing_by].name
        );
        drop(requests);
        Ok(())
    }
    .await;
    with_process_output(&dir, outcome)
}
