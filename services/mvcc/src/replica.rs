//! The running replica: tails the log, applies what commits, and hands each
//! result to the request that proposed it. Readers wait here for the applied
//! index to reach their read point.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_kit::shutdown::ShutdownWatch;
use cairn_proto::cairn::log::v1::{EntryKind, SubscribeResponse};
use cairn_proto::cairn::mvcc::v1::RevisionEvents;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Streaming;

use crate::error::MvccError;
use crate::log_client::{LogClient, LogFailure};
use crate::metrics::MVCC_METRICS;
use crate::store::{Applied, LogEntry, LogPosition, Reply, RestorePoint, Store};

/// The result of one proposed command, as the applier computed it.
pub(crate) type CommandResult = Result<Reply, MvccError>;

/// A revision's events with the trace they belong to, for the publisher.
#[derive(Clone, Debug)]
pub(crate) struct Published {
    pub events: RevisionEvents,
    pub trace_context: HashMap<String, String>,
    /// Set on a placeholder for a compacted revision: the compact revision.
    pub compacted: i64,
}

/// What the applier shares with the API and the publisher.
pub(crate) struct Replica {
    pub store: Arc<Store>,
    pub log: LogClient,
    pub name: String,
    /// Random per process: tags this process's commands in the log.
    pub origin: u64,
    next_sequence: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<CommandResult>>>,
    applied: watch::Sender<LogPosition>,
    /// The most recent revisions' events, oldest first.
    recent: Mutex<VecDeque<Published>>,
    recent_capacity: usize,
    current_revision: watch::Sender<i64>,
    /// Set, for good, when applying failed: why. A replica that could not
    /// write what it applied may differ from its peers, so it answers nothing.
    failed: watch::Sender<Option<String>>,
    /// Set, for good, when a Restore met this fresh store: applying stopped
    /// before its entry and the store is to be replaced (see `restore`).
    restoring: watch::Sender<Option<RestorePoint>>,
}

impl Replica {
    pub(crate) fn new(store: Arc<Store>, log: LogClient, name: String) -> Arc<Self> {
        let status = store.status();
        MVCC_METRICS.applied_index.set(status.applied.index as i64);
        MVCC_METRICS.current_revision.set(status.current);
        Arc::new(Self {
            store,
            log,
            name,
            origin: rand::random::<u64>() | 1,
            next_sequence: AtomicU64::new(1),
            waiters: Mutex::new(HashMap::new()),
            applied: watch::Sender::new(status.applied),
            recent: Mutex::new(VecDeque::new()),
            recent_capacity: 16 * 1024,
            current_revision: watch::Sender::new(status.current),
            failed: watch::Sender::new(None),
            restoring: watch::Sender::new(None),
        })
    }

    /// Refuses once applying has failed; every request checks it first.
    pub(crate) fn check_serving(&self) -> Result<(), MvccError> {
        if let Some(reason) = self.failed.borrow().as_ref() {
            return Err(MvccError::Failed(reason.clone()));
        }
        match self.restoring.borrow().as_ref() {
            Some(point) => Err(MvccError::NotReady(format!(
                "its store is being replaced by the restore committed at log index {}",
                point.index
            ))),
            None => Ok(()),
        }
    }

    /// Resolves once a Restore met this store and it must be replaced.
    pub(crate) async fn restore_point(&self) -> RestorePoint {
        let mut restoring = self.restoring.subscribe();
        loop {
            if let Some(point) = restoring.borrow_and_update().clone() {
                return point;
            }
            if restoring.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops applying for a restore: this store's state ends before the
    /// Restore's entry. Its proposer hears that it was committed; other
    /// writes still waiting hear that their outcome is unknown: those in
    /// later entries are applied on the restored store.
    fn begin_restore(&self, point: RestorePoint) {
        tracing::warn!(
            index = point.index,
            revision = point.revision,
            hash = point.hash,
            "a restore was committed; this replica stops applying until its store is replaced"
        );
        let proposer = (point.origin == self.origin).then_some(point.sequence);
        let index = point.index;
        self.restoring.send_replace(Some(point));
        for (sequence, waiter) in self.waiters.lock().drain() {
            let _ = waiter.send(if Some(sequence) == proposer {
                Ok(Reply::Restore { index })
            } else {
                Err(MvccError::Etcd(cairn_proto::etcd_error::EtcdError::Timeout))
            });
        }
    }

    /// Resolves once applying has failed, with why.
    pub(crate) async fn stopped_applying(&self) -> String {
        let mut failed = self.failed.subscribe();
        let reason = match failed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => String::new(),
        };
        reason
    }

    /// Stops this replica for good: nothing more is applied or answered, and
    /// every request waiting for an apply hears why.
    fn fail(&self, error: &MvccError) {
        tracing::error!(%error, "applying the log failed; this replica answers nothing from now on");
        self.failed.send_replace(Some(error.to_string()));
        // Dropping the senders wakes every waiting write, which then reads
        // the reason from `check_serving`.
        self.waiters.lock().clear();
    }

    /// Reserves a sequence number and the place its result will arrive.
    pub(crate) fn register(&self) -> (u64, oneshot::Receiver<CommandResult>) {
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.waiters.lock().insert(sequence, sender);
        (sequence, receiver)
    }

    /// Gives up on a result (the proposal failed or timed out).
    pub(crate) fn forget(&self, sequence: u64) {
        self.waiters.lock().remove(&sequence);
    }

    pub(crate) fn applied(&self) -> LogPosition {
        *self.applied.borrow()
    }

    /// Waits until the applied index reaches `index`.
    /// A restore met before it is reached ends the wait at once: this store
    /// will not apply more, and the caller is sent to another replica.
    pub(crate) async fn wait_applied(&self, index: u64) -> Result<(), MvccError> {
        let mut applied = self.applied.subscribe();
        tokio::select! {
            biased;
            reached = applied.wait_for(|position| position.index >= index) => {
                reached.map(|_| ()).map_err(|_| MvccError::Stopped)
            }
            _ = self.restore_point() => {
                Err(self.check_serving().err().unwrap_or(MvccError::Stopped))
            }
        }
    }

    /// Follows the current revision (for the publisher).
    pub(crate) fn current_revision(&self) -> watch::Receiver<i64> {
        self.current_revision.subscribe()
    }

    /// The events of `revision` if it is still among the recent ones.
    pub(crate) fn recent(&self, revision: i64) -> Option<Published> {
        let recent = self.recent.lock();
        let first = recent.front()?.events.revision;
        let position = usize::try_from(revision.checked_sub(first)?).ok()?;
        let found = recent.get(position)?;
        (found.events.revision == revision).then(|| found.clone())
    }

    /// Applies committed entries in order and hands each result to the
    /// request waiting for it. A failure other than an etcd refusal stops
    /// this replica for good: its memory may now be ahead of its disk.
    pub(crate) fn apply_entries(&self, entries: &[LogEntry]) -> Result<(), MvccError> {
        self.check_serving()?;
        let started = Instant::now();
        match self.store.apply(entries) {
            Ok(mut applied) => {
                MVCC_METRICS
                    .apply_seconds
                    .observe(started.elapsed().as_secs_f64());
                let restore = applied.restore.take();
                self.delivered(applied);
                match restore {
                    Some(point) => {
                        self.begin_restore(point);
                        self.check_serving()
                    }
                    None => Ok(()),
                }
            }
            Err(error) => {
                self.fail(&error);
                Err(error)
            }
        }
    }

    fn delivered(&self, applied: Applied) {
        {
            let mut waiters = self.waiters.lock();
            for outcome in applied.outcomes {
                if outcome.origin != self.origin {
                    continue;
                }
                if let Some(waiter) = waiters.remove(&outcome.sequence) {
                    let _ = waiter.send(outcome.result);
                }
            }
        }
        if let Some(last) = applied.revisions.last() {
            let last = last.revision;
            let mut recent = self.recent.lock();
            for (events, trace_context) in
                applied.revisions.into_iter().zip(applied.revision_traces)
            {
                // Keep the window contiguous: a restart may leave a hole.
                if recent
                    .back()
                    .is_some_and(|back| back.events.revision + 1 != events.revision)
                {
                    recent.clear();
                }
                recent.push_back(Published {
                    events,
                    trace_context,
                    compacted: 0,
                });
                if recent.len() > self.recent_capacity {
                    recent.pop_front();
                }
            }
            drop(recent);
            self.current_revision.send_replace(last);
            MVCC_METRICS.current_revision.set(last);
        }
        MVCC_METRICS
            .applied_index
            .set(applied.position.index as i64);
        self.applied.send_replace(applied.position);
    }
}

/// Batches of entries that may wait for the applier; the subscription is
/// read no further ahead than this.
const APPLY_QUEUE: usize = 64;

/// What the subscription hands the applier: entries, and when they arrived.
type Batch = (Instant, Vec<LogEntry>);

/// Starts the applier: one thread that applies what the subscription brings,
/// in order, and hands each result to the request waiting for it. One
/// thread, not a hand-off per message: an apply is a RocksDB write of
/// microseconds, which a thread-pool hop would double. It stops when the
/// queue closes or an apply fails. `lag` (testing only) holds each batch
/// until it is that old.
fn start_applier(replica: &Arc<Replica>, lag: Duration) -> Result<mpsc::Sender<Batch>, MvccError> {
    let (batches, mut queued) = mpsc::channel::<Batch>(APPLY_QUEUE);
    let applier = replica.clone();
    std::thread::Builder::new()
        .name("cairn-mvcc-apply".into())
        .spawn(move || {
            while let Some((arrived, entries)) = queued.blocking_recv() {
                if !lag.is_zero() {
                    if let Some(early) = (arrived + lag).checked_duration_since(Instant::now()) {
                        std::thread::sleep(early);
                    }
                }
                if applier.apply_entries(&entries).is_err() {
                    return;
                }
            }
        })
        .map_err(|error| MvccError::Corrupt(format!("cannot start the applier: {error}")))?;
    Ok(batches)
}

/// Tails the log from the applied index on, for good, starting with
/// `subscription` (from the applied index + 1) when there is one: a broken
/// subscription is resumed on another node.
pub(crate) async fn tail(
    replica: Arc<Replica>,
    mut subscription: Option<Streaming<SubscribeResponse>>,
    apply_lag: Duration,
    mut shutdown: ShutdownWatch,
) -> Result<(), MvccError> {
    let start = replica.applied().index;
    // Registering first keeps the log from purging what this replica still needs.
    while let Err(error) = replica.log.ack(&replica.name, start).await {
        tracing::warn!(%error, "cannot register with the log yet");
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
    let applier = start_applier(&replica, apply_lag)?;
    // The next index to hand the applier: what it already has may still be
    // queued, so a new subscription starts after it, not after the applied index.
    let mut next = start + 1;
    loop {
        let stream = match subscription.take() {
            Some(stream) => Ok(stream),
            None => tokio::select! {
                stream = replica.log.subscribe(next) => stream,
                () = shutdown.cancelled() => return Ok(()),
            },
        };
        match stream {
            Ok(stream) => {
                tokio::select! {
                    result = follow(&replica, stream, &applier, &mut next) => match result {
                        Ok(()) => tracing::info!("log subscription ended; resuming"),
                        Err(MvccError::Log(failure)) => tracing::warn!(%failure, "log subscription broke; resuming"),
                        Err(fatal) => return Err(fatal),
                    },
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
            Err(error @ MvccError::Purged { .. }) => {
                replica.fail(&error);
                return Err(error);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot subscribe to the log; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Hands the applier every entry `stream` brings from `next` on, in order.
async fn follow(
    replica: &Arc<Replica>,
    mut stream: Streaming<SubscribeResponse>,
    applier: &mpsc::Sender<Batch>,
    next: &mut u64,
) -> Result<(), MvccError> {
    let mut leader_moved = replica.log.leader_moved();
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            // The leader learns of a commit first: follow it there.
            _ = leader_moved.changed() => return Ok(()),
        };
        let message = message.map_err(|status| MvccError::Log(LogFailure::from_status(&status)))?;
        let Some(message) = message else {
            return Ok(());
        };
        let mut entries = Vec::with_capacity(message.entries.len());
        for entry in message.entries {
            if entry.index < *next {
                continue;
            }
            if entry.index != *next {
                return Err(MvccError::Log(LogFailure::broken(format!(
                    "the log skipped from {} to {}",
                    *next - 1,
                    entry.index
                ))));
            }
            *next += 1;
            let commands = if entry.kind == EntryKind::Command as i32 {
                entry.commands
            } else {
                Vec::new()
            };
            entries.push(LogEntry {
                index: entry.index,
                term: entry.term,
                commands,
            });
        }
        if entries.is_empty() {
            continue;
        }
        if applier.send((Instant::now(), entries)).await.is_err() {
            return Err(replica.check_serving().err().unwrap_or(MvccError::Stopped));
        }
    }
}

/// Syncs the store and acknowledges the applied index to the log, so the log
/// may purge what every replica has made durable.
pub(crate) async fn acknowledge(
    replica: Arc<Replica>,
    interval: Duration,
    mut shutdown: ShutdownWatch,
) {
    let mut acknowledged = replica.applied().index;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        let applied = replica.applied().index;
        if applied == acknowledged {
            continue;
        }
        let store = replica.store.clone();
        match tokio::task::spawn_blocking(move || store.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot sync the store");
                continue;
            }
            Err(_) => return,
        }
        match replica.log.ack(&replica.name, applied).await {
            Ok(()) => acknowledged = applied,
            Err(error) => tracing::warn!(%error, "cannot acknowledge the applied index"),
        }
    }
}

#[cfg(test)]
mod tests {
    use cairn_kit::settings::PeerSettings;
    use cairn_proto::cairn::mvcc::v1::command::Op;
    use cairn_proto::cairn::mvcc::v1::Command;
    use cairn_proto::contract::{failure_kind, FailureKind};
    use cairn_proto::etcdserverpb::kv_server::Kv;
    use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
    use prost::Message;
    use tonic::{Code, Status};

    use super::*;
    use crate::api::MvccApi;
    use crate::store::schema;
    use crate::validate::Limits;

    fn put(sequence: u64, key: &str) -> Vec<u8> {
        Command {
            origin: 7,
            sequence,
            op: Some(Op::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn entry(index: u64, commands: Vec<Vec<u8>>) -> LogEntry {
        LogEntry {
            index,
            term: 1,
            commands: commands.into_iter().map(Into::into).collect(),
        }
    }

    #[tokio::test]
    async fn a_replica_whose_storage_fails_stops_applying_and_answers_nothing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open_without(dir.path(), schema::KEYS).expect("a damaged store");
        let log = LogClient::new(&PeerSettings::at(&["127.0.0.1:1"])).expect("a log client");
        let replica = Replica::new(Arc::new(store), log, "mvcc-test".into());
        let api = MvccApi::new(replica.clone(), Limits::default(), 1);

        let failed = replica
            .apply_entries(&[entry(1, vec![put(1, "k")])])
            .expect_err("a put into a store without its key index must fail");
        assert!(matches!(failed, MvccError::Corrupt(_)), "{failed:?}");

        // Nothing more is applied, so nothing diverges further.
        let next = replica.apply_entries(&[entry(2, vec![put(2, "other")])]);
        assert!(matches!(next, Err(MvccError::Failed(_))), "{next:?}");
        assert_eq!(replica.applied().index, 0);

        // Every request is refused, with a kind the edge sends elsewhere.
        let range = RangeRequest {
            key: b"k".to_vec(),
            serializable: true,
            ..Default::default()
        };
        let refused: Status = Kv::range(&api, tonic::Request::new(range))
            .await
            .expect_err("a failed replica must not answer a read");
        assert_eq!(refused.code(), Code::Unavailable);
        assert_eq!(failure_kind(&refused), FailureKind::ReplicaFailed);
        assert!(
            refused.message().contains("stopped applying"),
            "{refused:?}"
        );
        assert!(!replica.stopped_applying().await.is_empty());
    }
}
