//! Replicas the log has moved past: a new one joining after the log purged
//! its beginning, and one whose data directory was lost, copy a peer's store
//! (`seed.replicas`) and go on from the log; without a peer configured such a
//! replica stays up, not serving, and says what to configure.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn_integration::eventually;
use cairn_integration::log_cluster::{LogCluster, LogClusterOptions};
use cairn_integration::mvcc_cluster::{MvccReplica, HEALTH_NOT_SERVING, HEALTH_SERVING};
use cairn_proto::cairn::log::v1::UnregisterRequest;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
use tonic::transport::Channel;

use corrupting::CorruptingPeer;

/// Patience for a replica to copy a store and catch up, on a busy machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// Writes each round makes at least.
const MIN_WRITES: u64 = 300;

/// A log that snapshots often and purges what its consumers have applied
/// at once, so a few hundred writes leave its beginning behind.
async fn purging_log() -> Result<LogCluster> {
    LogCluster::start(LogClusterOptions {
        snapshot_every: 40,
        retain_entries: 10,
        purge_interval_ms: 100,
        ..LogClusterOptions::default()
    })
    .await
}

/// The lowest first index any log node holds: a subscription below it may
/// be refused by some node.
async fn first_index(cluster: &LogCluster) -> Option<u64> {
    let mut lowest = u64::MAX;
    for id in cluster.ids() {
        lowest = lowest.min(cluster.status(id).await.ok()?.first_index);
    }
    Some(lowest)
}

/// Writes through `kv` (puts of a kilobyte over a few keys, deletes, one
/// compaction), at least `MIN_WRITES` so a copy of the store takes several
/// chunks, until every log node has purged index `past` and everything
/// before it; returns the log's first index then.
async fn write_until_purged(
    cluster: &LogCluster,
    kv: &mut KvClient<Channel>,
    round: &str,
    past: u64,
) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut written = 0_u64;
    loop {
        if written >= MIN_WRITES {
            if let Some(first) = first_index(cluster).await {
                if first > past {
                    return Ok(first);
                }
            }
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the log did not purge past {past} after {written} writes"
        );
        for _ in 0..25 {
            written += 1;
            let key = format!("key-{}", written % 37).into_bytes();
            if written.is_multiple_of(11) {
                kv.delete_range(DeleteRangeRequest {
                    key,
                    ..Default::default()
                })
                .await?;
            } else {
                let revision = kv
                    .put(PutRequest {
                        key,
                        value: format!("{round}-{written}-{:>1000}", "").into_bytes(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .header
                    .map_or(0, |header| header.revision);
                if written == 100 {
                    kv.compact(CompactionRequest {
                        revision: revision - 20,
                        physical: true,
                    })
                    .await?;
                }
            }
        }
    }
}

/// Starts `replica` and waits until it serves, having applied at least `index`.
async fn start_and_wait(replica: &mut MvccReplica, index: u64) -> Result<()> {
    replica.start()?;
    replica.wait_applied(index, PATIENCE).await?;
    Ok(())
}

/// Checks that `copy` holds what `source` holds: the same HashKV at the
/// source's current revision, once the copy has applied as far.
async fn same_state(source: &MvccReplica, copy: &MvccReplica) -> Result<()> {
    let expected = source.hash_kv(0).await?;
    copy.wait_applied(expected.applied_index, PATIENCE).await?;
    let copied = copy.hash_kv(expected.hash_revision).await?;
    ensure!(
        (copied.hash, copied.compact_revision, copied.hash_revision)
            == (
                expected.hash,
                expected.compact_revision,
                expected.hash_revision
            ),
        "{} has {copied:?}; {} has {expected:?}",
        copy.name,
        source.name
    );
    Ok(())
}

/// Where the log has `name` registered as a consumer, if it has.
async fn consumer_position(cluster: &LogCluster, name: &str) -> Result<Option<u64>> {
    let leader = cluster.wait_for_leader(&cluster.ids(), PATIENCE).await?;
    Ok(cluster
        .status(leader)
        .await?
        .consumers
        .into_iter()
        .find(|consumer| consumer.name == name)
        .map(|consumer| consumer.applied_index))
}

/// Checks `replica` copied its store from a peer, and never from itself.
fn copied_from_a_peer(replica: &MvccReplica) -> Result<()> {
    let output = replica.output_tail(10_000);
    let copies: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("copying the store from a peer"))
        .collect();
    ensure!(
        !copies.is_empty(),
        "{} did not copy a store:\n{output}",
        replica.name
    );
    ensure!(
        copies.iter().all(|line| !line.contains(&replica.addr)),
        "{} tried to copy its own store: {copies:?}",
        replica.name
    );
    Ok(())
}

/// Nothing an interrupted copy or swap leaves is beside the data directory.
fn nothing_left_beside(replica: &MvccReplica) -> Result<()> {
    let dir = replica.data_dir();
    let name = dir
        .file_name()
        .context("a data directory name")?
        .to_string_lossy()
        .into_owned();
    let parent = dir.parent().context("a parent directory")?;
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?.file_name().to_string_lossy().into_owned();
        ensure!(
            !entry.starts_with(&format!("{name}.seed-"))
                && !entry.starts_with(&format!("{name}.replaced-")),
            "{entry} was left beside {}",
            dir.display()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_joining_after_the_log_purged_its_beginning_copies_a_peer_and_serves_the_latest_value(
) -> Result<()> {
    let cluster = purging_log().await?;
    let outcome = async {
        let log = cluster.addrs()?;
        let mut first = MvccReplica::configure(cluster.dir(), "mvcc-1", &log, "")?;
        start_and_wait(&mut first, 0).await?;
        let mut kv = first.kv()?;
        let purged_to = write_until_purged(&cluster, &mut kv, "before", 1).await?;

        // The seed list is the shared one: it names the new replica too.
        let mut joining = MvccReplica::configure(cluster.dir(), "mvcc-2", &log, "")?;
        joining.set_seed_replicas(&[first.addr.clone(), joining.addr.clone()])?;
        let started = std::time::Instant::now();
        start_and_wait(&mut joining, 0).await?;
        eprintln!(
            "mvcc-2 copied a store and caught up in {:?}",
            started.elapsed()
        );
        ensure!(
            joining.health().await? == HEALTH_SERVING,
            "mvcc-2 serves but says otherwise"
        );
        copied_from_a_peer(&joining)?;
        same_state(&first, &joining).await?;

        // Registered with the log at the copy's index or later, so the log
        // keeps what it needs from now on.
        let position = consumer_position(&cluster, "mvcc-2").await?;
        ensure!(
            position.is_some_and(|position| position + 1 >= purged_to),
            "mvcc-2 is registered at {position:?}; the log held from {purged_to} when it joined"
        );

        // A write through the first is read, linearizably, from the new one.
        kv.put(PutRequest {
            key: b"latest".to_vec(),
            value: b"written after the copy".to_vec(),
            ..Default::default()
        })
        .await?;
        let read = joining
            .kv()?
            .range(RangeRequest {
                key: b"latest".to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let value = read.kvs.first().map(|kv| kv.value.clone());
        ensure!(
            value.as_deref() == Some(b"written after the copy".as_slice()),
            "mvcc-2 read {value:?}"
        );
        same_state(&first, &joining).await?;
        nothing_left_beside(&joining)
    }
    .await;
    cluster.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_data_directory_was_lost_rebuilds_itself_from_a_peer() -> Result<()> {
    let cluster = purging_log().await?;
    let outcome = async {
        let log = cluster.addrs()?;
        let mut first = MvccReplica::configure(cluster.dir(), "mvcc-1", &log, "")?;
        let mut lost = MvccReplica::configure(cluster.dir(), "mvcc-2", &log, "")?;
        let peers = vec![first.addr.clone(), lost.addr.clone()];
        first.set_seed_replicas(&peers)?;
        lost.set_seed_replicas(&peers)?;
        start_and_wait(&mut first, 0).await?;
        start_and_wait(&mut lost, 0).await?;
        let mut kv = first.kv()?;
        write_until_purged(&cluster, &mut kv, "before", 1).await?;
        same_state(&first, &lost).await?;

        let last_applied = lost.hash_kv(0).await?.applied_index;
        lost.kill().await?;
        std::fs::remove_dir_all(lost.data_dir())?;
        // A registered replica holds the log back however long it is away;
        // one taken out of service is unregistered, so the log moves on.
        let leader = cluster.wait_for_leader(&cluster.ids(), PATIENCE).await?;
        cluster
            .client(leader)?
            .unregister(UnregisterRequest {
                consumer: lost.name.clone(),
            })
            .await?;
        write_until_purged(&cluster, &mut kv, "while-away", last_applied + 1).await?;

        let started = std::time::Instant::now();
        start_and_wait(&mut lost, 0).await?;
        eprintln!(
            "mvcc-2 rebuilt its store and caught up in {:?}",
            started.elapsed()
        );
        copied_from_a_peer(&lost)?;
        same_state(&first, &lost).await?;
        ensure!(
            consumer_position(&cluster, "mvcc-2").await?.is_some(),
            "the rebuilt replica is not registered with the log"
        );
        nothing_left_beside(&lost)?;

        // It goes on applying what comes after.
        kv.put(PutRequest {
            key: b"after".to_vec(),
            value: b"the rebuild".to_vec(),
            ..Default::default()
        })
        .await?;
        same_state(&first, &lost).await
    }
    .await;
    cluster.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_the_log_moved_past_with_no_peers_configured_stays_up_and_says_to_configure_them(
) -> Result<()> {
    let cluster = purging_log().await?;
    let outcome = async {
        let log = cluster.addrs()?;
        let mut first = MvccReplica::configure(cluster.dir(), "mvcc-1", &log, "")?;
        start_and_wait(&mut first, 0).await?;
        write_until_purged(&cluster, &mut first.kv()?, "before", 1).await?;

        let mut stranded = MvccReplica::configure(cluster.dir(), "mvcc-2", &log, "")?;
        stranded.start()?;
        let mut kv = stranded.kv()?;
        let refusal = eventually(PATIENCE, "mvcc-2 to say what to configure", || {
            let mut kv = kv.clone();
            async move {
                let request = RangeRequest {
                    key: b"key-1".to_vec(),
                    serializable: true,
                    ..Default::default()
                };
                match kv.range(request).await {
                    Err(status) if status.message().contains("seed.replicas") => Some(status),
                    _ => None,
                }
            }
        })
        .await?;
        ensure!(
            refusal.code() == tonic::Code::Unavailable,
            "refused with {refusal:?}"
        );
        ensure!(
            refusal.message().contains("no longer holds index 1"),
            "{refusal:?}"
        );
        ensure!(stranded.health().await? == HEALTH_NOT_SERVING);
        ensure!(
            stranded.output_tail(200).contains("seed.replicas"),
            "mvcc-2 did not log why it cannot serve"
        );
        // Still up, still saying so, and it did not hold the log back.
        ensure!(stranded.is_running(), "mvcc-2 exited");
        let again = kv
            .range(RangeRequest {
                key: b"key-1".to_vec(),
                ..Default::default()
            })
            .await
            .expect_err("a stranded replica must not answer");
        ensure!(again.message().contains("seed.replicas"), "{again:?}");
        ensure!(stranded.is_running(), "mvcc-2 exited");
        ensure!(
            consumer_position(&cluster, "mvcc-2").await?.is_none(),
            "a stranded replica registered with the log and holds it back"
        );
        Ok(())
    }
    .await;
    cluster.explain(outcome)
}

mod corrupting {
    //! A peer that says it is the most advanced replica and hands out a
    //! damaged copy of a real replica's store: one byte flipped mid-stream.

    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use anyhow::Result;
    use cairn_proto::cairn::mvcc::v1::mvcc_client::MvccClient;
    use cairn_proto::cairn::mvcc::v1::mvcc_server::{Mvcc, MvccServer};
    use cairn_proto::cairn::mvcc::v1::{
        ApplyResponse, Command, DefragmentRequest, DefragmentResponse, EventsRequest,
        EventsResponse, HashKvRequest, HashKvResponse, KvAnswer, KvCall, LeaseRequest,
        LeaseResponse, LeasesRequest, LeasesResponse, SnapshotChunk, SnapshotRequest,
        StatusRequest, StatusResponse,
    };
    use futures::Stream;
    use tonic::{Request, Response, Status, Streaming};

    type Chunks<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    /// The fake peer's address and how many copies it handed out.
    pub(crate) struct CorruptingPeer {
        pub addr: String,
        pub copies: Arc<AtomicUsize>,
    }

    impl CorruptingPeer {
        /// Serves, on a free port, damaged copies of the replica at `real`.
        pub(crate) async fn start(real: &str) -> Result<Self> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            let copies = Arc::new(AtomicUsize::new(0));
            let peer = Peer {
                real: MvccClient::new(cairn_integration::channel(real)?),
                copies: copies.clone(),
            };
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(MvccServer::new(peer))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
            );
            Ok(Self { addr, copies })
        }
    }

    struct Peer {
        real: MvccClient<tonic::transport::Channel>,
        copies: Arc<AtomicUsize>,
    }

    fn absent<T>() -> Result<T, Status> {
        Err(Status::unimplemented("a fake peer"))
    }

    #[tonic::async_trait]
    impl Mvcc for Peer {
        type CallsStream = Chunks<KvAnswer>;
        type EventsStream = Chunks<EventsResponse>;
        type SnapshotStream = Chunks<SnapshotChunk>;

        async fn status(
            &self,
            request: Request<StatusRequest>,
        ) -> Result<Response<StatusResponse>, Status> {
            let mut status = self.real.clone().status(request.into_inner()).await?;
            // Far ahead of anyone: tried first.
            status.get_mut().applied_index += 1_000_000;
            Ok(status)
        }

        async fn snapshot(
            &self,
            request: Request<SnapshotRequest>,
        ) -> Result<Response<Self::SnapshotStream>, Status> {
            self.copies.fetch_add(1, Ordering::SeqCst);
            let mut chunks = self
                .real
                .clone()
                .snapshot(request.into_inner())
                .await?
                .into_inner();
            let damaged = stream_from(move |sender| async move {
                let mut sent = 0_usize;
                while let Some(mut chunk) = chunks.message().await? {
                    let length = chunk.blob.len();
                    if sent == 1 || (sent == 0 && chunk.remaining_bytes == 0) {
                        if let Some(byte) = chunk.blob.get_mut(length / 2) {
                            *byte ^= 0x20;
                        }
                    }
                    sent += 1;
                    if sender.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Ok(())
            });
            Ok(Response::new(damaged))
        }

        async fn calls(
            &self,
            _: Request<Streaming<KvCall>>,
        ) -> Result<Response<Self::CallsStream>, Status> {
            absent()
        }

        async fn events(
            &self,
            _: Request<EventsRequest>,
        ) -> Result<Response<Self::EventsStream>, Status> {
            absent()
        }

        async fn hash_kv(
            &self,
            _: Request<HashKvRequest>,
        ) -> Result<Response<HashKvResponse>, Status> {
            absent()
        }

        async fn defragment(
            &self,
            _: Request<DefragmentRequest>,
        ) -> Result<Response<DefragmentResponse>, Status> {
            absent()
        }

        async fn apply(&self, _: Request<Command>) -> Result<Response<ApplyResponse>, Status> {
            absent()
        }

        async fn leases(
            &self,
            _: Request<LeasesRequest>,
        ) -> Result<Response<LeasesResponse>, Status> {
            absent()
        }

        async fn authorize(
            &self,
            _: Request<cairn_proto::cairn::mvcc::v1::AuthorizeRequest>,
        ) -> Result<Response<cairn_proto::cairn::mvcc::v1::AuthorizeResponse>, Status> {
            absent()
        }

        async fn lease(&self, _: Request<LeaseRequest>) -> Result<Response<LeaseResponse>, Status> {
            absent()
        }

        async fn restore(
            &self,
            _: Request<Streaming<cairn_proto::cairn::mvcc::v1::RestoreChunk>>,
        ) -> Result<Response<cairn_proto::cairn::mvcc::v1::RestoreResponse>, Status> {
            absent()
        }
    }

    /// The items `produce` sends, as a stream; an error it ends with is the
    /// stream's last item.
    fn stream_from<T, F, Fut>(produce: F) -> Chunks<T>
    where
        T: Send + 'static,
        F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
        Fut: std::future::Future<Output = Result<(), Status>> + Send + 'static,
    {
        let (sender, received) = tokio::sync::mpsc::channel(4);
        let produced = produce(sender.clone());
        tokio::spawn(async move {
            if let Err(status) = produced.await {
                let _ = sender.send(Err(status)).await;
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(received))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_a_damaged_copy_and_takes_the_next_peers_copy_instead() -> Result<()> {
    let cluster = purging_log().await?;
    let outcome = async {
        let log = cluster.addrs()?;
        let mut first = MvccReplica::configure(cluster.dir(), "mvcc-1", &log, "")?;
        start_and_wait(&mut first, 0).await?;
        write_until_purged(&cluster, &mut first.kv()?, "before", 1).await?;

        let damaging = CorruptingPeer::start(&first.addr).await?;
        let mut joining = MvccReplica::configure(cluster.dir(), "mvcc-2", &log, "")?;
        joining.set_seed_replicas(&[damaging.addr.clone(), first.addr.clone()])?;
        start_and_wait(&mut joining, 0).await?;
        ensure!(
            damaging.copies.load(std::sync::atomic::Ordering::SeqCst) >= 1,
            "the damaged copy was never asked for"
        );
        let output = joining.output_tail(10_000);
        ensure!(
            output
                .lines()
                .any(|line| line.contains("cannot start from this peer's store")
                    && line.contains(&damaging.addr)
                    && (line.contains("checksum") || line.contains("SHA-256"))),
            "mvcc-2 did not refuse the damaged copy:\n{output}"
        );
        same_state(&first, &joining).await?;
        nothing_left_beside(&joining)
    }
    .await;
    cluster.explain(outcome)
}
