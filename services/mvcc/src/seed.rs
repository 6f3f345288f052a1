//! What a replica does at start before it serves anything: decide whether
//! its store can go on from the log, and if the log has purged what it needs
//! (a new replica, a wiped data directory, one away too long), copy a peer
//! replica's store and swap it in.
//!
//! The decision is the log's own answer: a subscription from the store's
//! applied index + 1, which fails `PURGED` when that index is gone. The
//! subscription that answers is the one the replica then follows.
//!
//! A copy is streamed from a peer's `Mvcc/Snapshot` into a directory beside
//! the data directory (so a rename can swap it in), checked whole (the
//! framing's CRC, the SHA-256 trailer, the end of the stream; then opened as
//! a store) and synced. Only once the log is known to hold the entry after
//! the copy's applied index, and this replica is registered at that index,
//! is it swapped in: the old data directory is renamed aside, the copy
//! renamed into its place, and the old one removed once the new one has
//! opened. At every instant the data directory path holds a whole store or
//! nothing (a crash between the two renames leaves nothing, and the next
//! start copies again); what a crash leaves beside it is removed at the next
//! start.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use cairn_kit::shutdown::ShutdownWatch;
use cairn_proto::cairn::log::v1::SubscribeResponse;
use cairn_proto::cairn::mvcc::v1::mvcc_client::MvccClient;
use cairn_proto::cairn::mvcc::v1::{SnapshotRequest, StatusRequest};
use tonic::Streaming;

use crate::error::MvccError;
use crate::log_client::LogClient;
use crate::store::Store;

/// How long a peer may take to answer Status or to start a snapshot.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a snapshot may go without a chunk before the copy is given up.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// The first pause between rounds of attempts, doubled up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the replica starts from: a store it may serve, the subscription
/// that continues it, and whether it was copied from a peer (then it waits
/// to catch up before it serves).
pub(crate) struct Prepared {
    pub store: Store,
    pub subscription: Streaming<SubscribeResponse>,
    pub seeded: bool,
}

/// Who and where this replica is, for the start.
pub(crate) struct Start<'a> {
    /// The consumer name the replica registers with the log under.
    pub name: &'a str,
    pub data_dir: &'a Path,
    /// The address the replica listens on, to leave itself out of `peers`.
    pub own: SocketAddr,
    /// `seed.replicas`.
    pub peers: &'a [String],
}

/// Opens the store in `start.data_dir`, or, when the log no longer holds
/// what it needs next, replaces it with a copy from a peer; `progress` hears
/// what it is doing, for the answers the replica gives meanwhile. Waits for the
/// log as long as it takes; `None` when shutdown came first. Fails with
/// [`MvccError::NoSeedPeers`] when a copy is needed and no peer is set.
pub(crate) async fn prepare(
    start: &Start<'_>,
    log: &LogClient,
    progress: &(impl Fn(String) + Sync),
    mut shutdown: ShutdownWatch,
) -> Result<Option<Prepared>, MvccError> {
    remove_leftovers(start.data_dir);
    let mut store = Some(open(start.data_dir.to_path_buf()).await?);
    if let Some(store) = &store {
        crate::restore::remove_leftovers(start.data_dir, store.is_fresh());
    }
    let mut backoff = Backoff::default();
    let (wanted, first) = loop {
        let applied = store
            .as_ref()
            .map_or(0, |store| store.status().applied.index);
        progress(format!("asking the log for index {}", applied + 1));
        let subscribed = tokio::select! {
            subscribed = log.subscribe(applied + 1) => subscribed,
            () = shutdown.cancelled() => return Ok(None),
        };
        match subscribed {
            Ok(subscription) => {
                let Some(store) = store.take() else {
                    return Err(MvccError::Corrupt("the store went away".into()));
                };
                return Ok(Some(Prepared {
                    store,
                    subscription,
                    seeded: false,
                }));
            }
            Err(MvccError::Purged { wanted, first }) => break (wanted, first),
            Err(error) => {
                tracing::warn!(%error, "cannot reach the log to check the store against it; retrying");
                progress(format!("waiting for the log: {error}"));
                if !backoff.wait(&mut shutdown).await {
                    return Ok(None);
                }
            }
        }
    };
    // Closed before its directory is moved aside.
    drop(store);
    let peers = other_peers(start).await;
    if peers.is_empty() {
        return Err(MvccError::NoSeedPeers { wanted, first });
    }
    tracing::warn!(
        wanted,
        first,
        "the log no longer holds what this store needs next; copying the store from a peer"
    );
    seed(start, &peers, 0, log, progress, shutdown).await
}

/// `seed.replicas` without this replica's own address.
pub(crate) async fn other_peers(start: &Start<'_>) -> Vec<String> {
    let mut peers = Vec::new();
    for peer in start.peers {
        if names_this_replica(peer, start.own).await {
            tracing::debug!(peer, "leaving this replica's own address out of the peers");
        } else {
            peers.push(peer.clone());
        }
    }
    peers
}

/// Copies a store from one of `peers` (other replicas) that has applied at
/// least `min_applied` until one is swapped in, trying them in turn and
/// pausing longer after each round that failed.
pub(crate) async fn seed(
    start: &Start<'_>,
    peers: &[String],
    min_applied: u64,
    log: &LogClient,
    progress: &(impl Fn(String) + Sync),
    mut shutdown: ShutdownWatch,
) -> Result<Option<Prepared>, MvccError> {
    let mut backoff = Backoff::default();
    loop {
        let candidates = futures::future::join_all(
            peers
                .iter()
                .map(|peer| async move { (peer.clone(), peer_applied(peer).await) }),
        )
        .await;
        let order = seed_order(candidates, min_applied);
        if order.is_empty() {
            tracing::warn!(?peers, "no peer answers to copy the store from; retrying");
            progress("no peer answers to copy the store from".into());
        }
        for (peer, applied) in order {
            progress(format!("copying the store from {peer}"));
            tracing::info!(peer, applied, "copying the store from a peer");
            let copied = tokio::select! {
                copied = seed_from(start, log, &peer) => copied,
                () = shutdown.cancelled() => return Ok(None),
            };
            match copied {
                Ok(prepared) => return Ok(Some(prepared)),
                Err(error) => {
                    tracing::warn!(peer, %error, "cannot start from this peer's store");
                }
            }
        }
        if !backoff.wait(&mut shutdown).await {
            return Ok(None);
        }
    }
}

/// One attempt: copy `peer`'s store beside the data directory, check it,
/// make sure the log goes on from it, register, and swap it in.
async fn seed_from(start: &Start<'_>, log: &LogClient, peer: &str) -> Result<Prepared, MvccError> {
    let staging = beside(start.data_dir, "seed")?;
    let prepared = seed_into(start, log, peer, &staging).await;
    if prepared.is_err() {
        remove(&staging);
    }
    prepared
}

async fn seed_into(
    start: &Start<'_>,
    log: &LogClient,
    peer: &str,
    staging: &Path,
) -> Result<Prepared, MvccError> {
    copy_snapshot(peer, staging).await?;
    adopt(start, log, staging, peer).await
}

/// Swaps in the whole store in `staging` (a copy of `from`'s, or a restored
/// one): syncs it, makes sure the log goes on from it, registers at its
/// index and swaps it in.
pub(crate) async fn adopt(
    start: &Start<'_>,
    log: &LogClient,
    staging: &Path,
    from: &str,
) -> Result<Prepared, MvccError> {
    let peer = from;
    let applied = {
        let staging = staging.to_path_buf();
        blocking(move || {
            let applied = Store::open(&staging)?.status().applied;
            sync_tree(&staging)?;
            Ok(applied)
        })
        .await?
    };
    tracing::info!(peer, applied = applied.index, "the copy is whole");
    // The copy is no use if the log has purged the entry after it: a peer
    // that has not applied for a while, or a log that moved on meanwhile.
    let subscription = match log.subscribe(applied.index + 1).await {
        Err(MvccError::Purged { first, .. }) => {
            return Err(MvccError::Snapshot(format!(
                "the copy ends at index {}, but the log's first is now {first}",
                applied.index
            )))
        }
        other => other?,
    };
    // The copy is durable: registering at its index now keeps the log from
    // purging what comes after it while it is swapped in.
    log.ack(start.name, applied.index).await?;
    let data_dir = start.data_dir.to_path_buf();
    let staging = staging.to_path_buf();
    let store = blocking(move || swap_in(&staging, &data_dir)).await?;
    tracing::info!(
        peer,
        applied = applied.index,
        "the store was replaced by the copy"
    );
    Ok(Prepared {
        store,
        subscription,
        seeded: true,
    })
}

/// Streams `peer`'s snapshot into `dir`, checking it as it arrives.
async fn copy_snapshot(peer: &str, dir: &Path) -> Result<(), MvccError> {
    let mut client = MvccClient::new(
        cairn_kit::failover::lazy_channel(peer, "seed.replicas")
            .map_err(|error| MvccError::Settings(error.to_string()))?,
    );
    let started = tokio::time::timeout(CALL_TIMEOUT, client.snapshot(SnapshotRequest::default()))
        .await
        .map_err(|_| MvccError::Snapshot(format!("{peer} did not start a snapshot in time")))?;
    let mut chunks = started
        .map_err(|status| MvccError::Snapshot(format!("{peer}: {}", status.message())))?
        .into_inner();
    let (sender, received) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(8);
    let unpacking = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            crate::snapshot::unpack(&mut ChunkReader::new(received), &dir)
        })
    };
    loop {
        let chunk = match tokio::time::timeout(CHUNK_TIMEOUT, chunks.message()).await {
            Err(_) => Err(format!("{peer} sent nothing for {CHUNK_TIMEOUT:?}")),
            Ok(Err(status)) => Err(format!("{peer}: {}", status.message())),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => Ok(Bytes::from(chunk.blob)),
        };
        let failed = chunk.is_err();
        // The unpacker stops reading at the first fault it finds.
        if sender.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(sender);
    unpacking.await.map_err(|_| MvccError::Stopped)?
}

/// Feeds the chunks a task receives to the unpacker on a blocking thread;
/// a failed transfer is a read error, the end of the chunks the end of the
/// stream.
struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl ChunkReader {
    fn new(chunks: tokio::sync::mpsc::Receiver<Result<Bytes, String>>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(std::io::Error::other(error)),
            }
        }
        let taken = buf.len().min(self.current.len());
        buf[..taken].copy_from_slice(&self.current.split_to(taken));
        Ok(taken)
    }
}

/// Puts the store in `staging` in place of `data_dir` and opens it. The old
/// directory is kept aside until the new store opened, then removed: it is
/// behind the copy and the log can no longer bring it forward.
fn swap_in(staging: &Path, data_dir: &Path) -> Result<Store, MvccError> {
    let parent = parent_of(data_dir);
    let aside = if data_dir.exists() {
        let aside = beside(data_dir, "replaced")?;
        std::fs::rename(data_dir, &aside)
            .map_err(|error| swap_error("move the old store aside", data_dir, &error))?;
        Some(aside)
    } else {
        None
    };
    if let Err(error) = std::fs::rename(staging, data_dir) {
        if let Some(aside) = &aside {
            let _ = std::fs::rename(aside, data_dir);
        }
        return Err(swap_error("move the copy into place", data_dir, &error));
    }
    sync_dir(&parent)?;
    match Store::open(data_dir) {
        Ok(store) => {
            if let Some(aside) = aside {
                remove(&aside);
                sync_dir(&parent)?;
            }
            Ok(store)
        }
        Err(error) => {
            // Put things back as they were; the next attempt copies again.
            remove(data_dir);
            if let Some(aside) = aside {
                let _ = std::fs::rename(aside, data_dir);
            }
            sync_dir(&parent)?;
            Err(error)
        }
    }
}

fn swap_error(what: &str, data_dir: &Path, error: &std::io::Error) -> MvccError {
    MvccError::Snapshot(format!(
        "cannot {what} at {}: {error} (the data directory must be renamable within its parent: not a mount point itself)",
        data_dir.display()
    ))
}

/// A new directory name beside `data_dir`, on its filesystem: `<name>.<kind>-<nanos>`.
pub(crate) fn beside(data_dir: &Path, kind: &str) -> Result<PathBuf, MvccError> {
    let name = data_dir
        .file_name()
        .ok_or_else(|| {
            MvccError::Settings(format!(
                "setting `node.data_dir`: {} has no directory name",
                data_dir.display()
            ))
        })?
        .to_string_lossy()
        .into_owned();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    Ok(data_dir.with_file_name(format!("{name}.{kind}-{nanos}")))
}

/// Removes what an interrupted copy or swap left beside `data_dir`: half
/// copies, and old stores a new one already replaced (or that a crash
/// between the two renames left without a successor: they were behind what
/// the log still holds, so the next copy replaces them anyway).
fn remove_leftovers(data_dir: &Path) {
    let Some(name) = data_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
    else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent_of(data_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if is_leftover(&name, &file_name) {
            tracing::info!(path = %entry.path().display(), "removing what an interrupted store copy left");
            remove(&entry.path());
        }
    }
}

/// Whether `file_name`, beside the data directory `name`, is what a copy or
/// swap of it leaves.
fn is_leftover(name: &str, file_name: &str) -> bool {
    ["seed", "replaced"].iter().any(|kind| {
        file_name
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_prefix(kind))
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|nanos| {
                !nanos.is_empty() && nanos.bytes().all(|byte| byte.is_ascii_digit())
            })
    })
}

pub(crate) fn remove(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove a directory");
        }
    }
}

pub(crate) fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), MvccError> {
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| MvccError::Snapshot(format!("cannot sync {}: {error}", dir.display())))
}

/// Syncs every file in `dir` and `dir` itself: opening the copy wrote files
/// of its own.
pub(crate) fn sync_tree(dir: &Path) -> Result<(), MvccError> {
    let failed = |error: std::io::Error| {
        MvccError::Snapshot(format!("cannot sync {}: {error}", dir.display()))
    };
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        if entry.file_type().map_err(failed)?.is_file() {
            std::fs::File::open(entry.path())
                .and_then(|file| file.sync_all())
                .map_err(failed)?;
        }
    }
    sync_dir(dir)
}

/// Opens (or creates) the store in `dir` on a blocking thread: rebuilding
/// the key index reads every key.
async fn open(dir: PathBuf) -> Result<Store, MvccError> {
    blocking(move || Store::open(&dir)).await
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MvccError> + Send + 'static,
) -> Result<T, MvccError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| MvccError::Stopped)?
}

/// The index `peer` has applied, or why it cannot give a copy now.
async fn peer_applied(peer: &str) -> Result<u64, String> {
    let channel = cairn_kit::failover::lazy_channel(peer, "seed.replicas")
        .map_err(|error| error.to_string())?;
    let mut request = tonic::Request::new(StatusRequest {});
    request.set_timeout(CALL_TIMEOUT);
    match tokio::time::timeout(CALL_TIMEOUT, MvccClient::new(channel).status(request)).await {
        Err(_) => Err("no answer in time".into()),
        Ok(Err(status)) => Err(status.message().to_owned()),
        Ok(Ok(response)) => Ok(response.into_inner().applied_index),
    }
}

/// The peers to try, most advanced first (its copy is the least likely to
/// be purged past already, and the least to catch up), in the configured
/// order among equals. A peer that did not answer is left out of this round.
/// A peer that has not applied `min_applied` yet is left out too.
fn seed_order(
    candidates: Vec<(String, Result<u64, String>)>,
    min_applied: u64,
) -> Vec<(String, u64)> {
    let mut order: Vec<(String, u64)> = candidates
        .into_iter()
        .filter_map(|(peer, applied)| match applied {
            Ok(applied) if applied < min_applied => {
                tracing::info!(
                    peer,
                    applied,
                    min_applied,
                    "passing over a peer that has not applied what is needed yet"
                );
                None
            }
            Ok(applied) => Some((peer, applied)),
            Err(why) => {
                tracing::info!(peer, why, "passing over a peer that cannot give a copy now");
                None
            }
        })
        .collect();
    order.sort_by_key(|(_, applied)| std::cmp::Reverse(*applied));
    order
}

/// Whether `peer` is this replica's own address: configs shared by every
/// replica list them all.
async fn names_this_replica(peer: &str, own: SocketAddr) -> bool {
    let Ok(resolved) = tokio::net::lookup_host(peer).await else {
        return false;
    };
    let resolved: Vec<SocketAddr> = resolved.collect();
    is_own_address(&resolved, own, is_local_ip)
}

/// Whether any of `resolved` reaches the listener at `own`: the same port,
/// and the same address, or any address of this host when `own` listens on
/// all of them.
fn is_own_address(
    resolved: &[SocketAddr],
    own: SocketAddr,
    is_local: impl Fn(IpAddr) -> bool,
) -> bool {
    resolved.iter().any(|address| {
        address.port() == own.port()
            && (address.ip() == own.ip() || (own.ip().is_unspecified() && is_local(address.ip())))
    })
}

/// Whether `ip` is one of this host's addresses: only those can be bound.
fn is_local_ip(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Pauses that double from `FIRST_BACKOFF` to `MAX_BACKOFF`, with jitter so
/// replicas started together do not retry together.
#[derive(Default)]
pub(crate) struct Backoff {
    rounds: u32,
}

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let base = FIRST_BACKOFF
            .saturating_mul(1 << self.rounds.min(8))
            .min(MAX_BACKOFF);
        self.rounds = self.rounds.saturating_add(1);
        let jitter = rand::random::<u64>() % (base.as_millis() as u64 / 4 + 1);
        base + Duration::from_millis(jitter)
    }

    /// Sleeps for the next pause; false if shutdown came first.
    pub(crate) async fn wait(&mut self, shutdown: &mut ShutdownWatch) -> bool {
        tokio::select! {
            () = tokio::time::sleep(self.next()) => true,
            () = shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn at(address: &str) -> SocketAddr {
        address.parse().expect("a socket address")
    }

    #[test]
    fn the_most_advanced_peer_is_tried_first_and_silent_ones_are_left_out() {
        let order = seed_order(
            vec![
                ("a:1".into(), Ok(10)),
                ("b:1".into(), Err("refused".into())),
                ("c:1".into(), Ok(30)),
                ("d:1".into(), Ok(10)),
            ],
            0,
        );
        assert_eq!(
            order,
            vec![("c:1".into(), 30), ("a:1".into(), 10), ("d:1".into(), 10)]
        );
        assert!(seed_order(vec![("b:1".into(), Err("down".into()))], 0).is_empty());
        // After a restore at index 20 only a peer that applied it will do.
        let order = seed_order(vec![("a:1".into(), Ok(19)), ("c:1".into(), Ok(20))], 20);
        assert_eq!(order, vec![("c:1".into(), 20)]);
    }

    #[test]
    fn a_replica_recognises_its_own_address_in_a_shared_list() {
        let nowhere = |_: IpAddr| false;
        let here = |ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
        // Listening on one address: that address and port only.
        assert!(is_own_address(
            &[at("127.0.0.1:7101")],
            at("127.0.0.1:7101"),
            nowhere
        ));
        assert!(!is_own_address(
            &[at("127.0.0.1:7102")],
            at("127.0.0.1:7101"),
            nowhere
        ));
        assert!(!is_own_address(
            &[at("10.0.0.6:7101")],
            at("127.0.0.1:7101"),
            here
        ));
        // Listening on all addresses: any of this host's at that port.
        assert!(is_own_address(
            &[at("10.0.0.5:7101")],
            at("0.0.0.0:7101"),
            here
        ));
        assert!(!is_own_address(
            &[at("10.0.0.6:7101")],
            at("0.0.0.0:7101"),
            here
        ));
        assert!(!is_own_address(
            &[at("10.0.0.5:7102")],
            at("0.0.0.0:7101"),
            here
        ));
        assert!(!is_own_address(&[], at("0.0.0.0:7101"), here));
        assert!(is_local_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn only_what_a_copy_or_swap_of_this_data_directory_leaves_is_a_leftover() {
        assert!(is_leftover("mvcc-1", "mvcc-1.seed-1712345678901234567"));
        assert!(is_leftover("mvcc-1", "mvcc-1.replaced-17"));
        assert!(!is_leftover("mvcc-1", "mvcc-1"));
        assert!(!is_leftover("mvcc-1", "mvcc-12.seed-17"));
        assert!(!is_leftover("mvcc-1", "mvcc-1.snapshot-17"));
        assert!(!is_leftover("mvcc-1", "mvcc-1.seed-"));
        assert!(!is_leftover("mvcc-1", "mvcc-1.seed-17x"));
        assert!(!is_leftover("mvcc-1", "mvcc-2.seed-17"));
    }

    #[test]
    fn pauses_grow_to_a_ceiling() {
        let mut backoff = Backoff::default();
        let first = backoff.next();
        assert!(first >= FIRST_BACKOFF && first <= FIRST_BACKOFF + FIRST_BACKOFF / 4);
        let later: Vec<Duration> = (0..12).map(|_| backoff.next()).collect();
        assert!(later
            .iter()
            .all(|pause| *pause <= MAX_BACKOFF + MAX_BACKOFF / 4));
        assert!(later.last().is_some_and(|pause| *pause >= MAX_BACKOFF));
    }

    #[test]
    fn a_copy_is_swapped_in_and_the_old_store_removed() -> Result<(), MvccError> {
        let dir = tempfile::tempdir().map_err(|error| MvccError::Snapshot(error.to_string()))?;
        let data_dir = dir.path().join("mvcc-1");
        drop(Store::open(&data_dir)?);
        let source = Store::open(&dir.path().join("source"))?;
        let command = cairn_proto::cairn::mvcc::v1::Command {
            origin: 1,
            sequence: 1,
            op: Some(cairn_proto::cairn::mvcc::v1::command::Op::Put(
                cairn_proto::etcdserverpb::PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        source.apply(&[crate::store::LogEntry {
            index: 9,
            term: 2,
            commands: vec![prost::Message::encode_to_vec(&command).into()],
        }])?;
        let staging = beside(&data_dir, "seed")?;
        source.checkpoint(&staging)?;

        let store = swap_in(&staging, &data_dir)?;
        assert_eq!(store.status().applied.index, 9);
        assert_eq!(store.hash_kv(0)?, source.hash_kv(0)?);
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .map_err(|error| MvccError::Snapshot(error.to_string()))?
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !left.iter().any(|name| is_leftover("mvcc-1", name)),
            "{left:?}"
        );
        Ok(())
    }

    #[test]
    fn leftovers_of_an_interrupted_copy_are_removed_and_nothing_else() -> Result<(), std::io::Error>
    {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("mvcc-1");
        for name in [
            "mvcc-1",
            "mvcc-1.seed-1",
            "mvcc-1.replaced-2",
            "mvcc-1.snapshot-3",
            "mvcc-2.seed-4",
        ] {
            std::fs::create_dir(dir.path().join(name))?;
        }
        remove_leftovers(&data_dir);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())?
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["mvcc-1", "mvcc-1.snapshot-3", "mvcc-2.seed-4"]);
        Ok(())
    }

    #[test]
    fn a_copy_whose_transfer_broke_is_refused_even_when_what_came_was_sound(
    ) -> Result<(), MvccError> {
        let dir = tempfile::tempdir().map_err(|error| MvccError::Snapshot(error.to_string()))?;
        let store = Store::open(&dir.path().join("source"))?;
        let checkpoint = crate::snapshot::Checkpoint::take(&store, dir.path().join("checkpoint"))?;
        let mut bytes = Vec::new();
        checkpoint.write_to(&mut bytes)?;
        let unpack = |chunks: Vec<Result<Bytes, String>>, target: &str| {
            let (sender, received) = tokio::sync::mpsc::channel(chunks.len().max(1));
            for chunk in chunks {
                sender
                    .try_send(chunk)
                    .map_err(|error| MvccError::Snapshot(error.to_string()))?;
            }
            drop(sender);
            crate::snapshot::unpack(&mut ChunkReader::new(received), &dir.path().join(target))
        };
        let (head, tail) = bytes.split_at(bytes.len() / 2);
        let whole = vec![
            Ok(Bytes::copy_from_slice(head)),
            Ok(Bytes::copy_from_slice(tail)),
        ];
        unpack(whole, "whole")?;
        let broken = vec![
            Ok(Bytes::copy_from_slice(head)),
            Err("the peer went away".to_owned()),
        ];
        let refused = unpack(broken, "broken").expect_err("a broken transfer must be refused");
        assert!(refused.to_string().contains("went away"), "{refused}");
        let cut = vec![Ok(Bytes::copy_from_slice(head))];
        let refused = unpack(cut, "cut").expect_err("half a snapshot must be refused");
        assert!(refused.to_string().contains("truncated"), "{refused}");
        Ok(())
    }
}
