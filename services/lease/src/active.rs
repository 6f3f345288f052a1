//! The active instance: the only one holding deadlines, taking keep-alives,
//! writing checkpoints and expiring leases, each under its claim's epoch, so
//! that anything it proposes after being deposed is void when applied.
//!
//! A keep-alive is answered only once a checkpoint carrying its renewal has
//! been applied: a successor then resumes that lease from at least its full
//! TTL, so no acknowledged keep-alive is lost to a takeover and no lease
//! expires early.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::cairn::mvcc::v1::apply_response::Result as ApplyResult;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{LeaseCheckpoint, LeaseExpire, LeaseRemaining};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::error::LeaseError;
use crate::metrics::LEASE_METRICS;
use crate::replicas::Replicas;
use crate::table::DeadlineTable;

/// Leases per checkpoint or expiry command, to stay far below the log's
/// command size limit.
const LEASES_PER_COMMAND: usize = 10_000;
/// Keep-alives that may wait for the next renewal checkpoint.
const RENEWAL_QUEUE: usize = 65_536;

/// A keep-alive waiting for its checkpoint: the TTL on success, 0 for an
/// unknown lease.
struct Renewal {
    id: i64,
    reply: oneshot::Sender<Result<i64, LeaseError>>,
}

/// The state of the instance while it holds claim `epoch`.
pub(crate) struct Active {
    pub epoch: u64,
    pub table: Mutex<DeadlineTable>,
    renewals: mpsc::Sender<Renewal>,
    /// Wakes the expiry task when a deadline earlier than its sleep appears.
    deadlines_changed: Notify,
    /// Set once the claim is lost; every task stops.
    deposed: watch::Sender<bool>,
}

impl Active {
    /// Starts the active role's tasks with `table` as the deadlines.
    pub(crate) fn start(
        epoch: u64,
        table: DeadlineTable,
        replicas: Arc<Replicas>,
        checkpoint_interval: Duration,
    ) -> Arc<Self> {
        let (renewals, queued) = mpsc::channel(RENEWAL_QUEUE);
        let (deposed, _) = watch::channel(false);
        let active = Arc::new(Self {
            epoch,
            table: Mutex::new(table),
            renewals,
            deadlines_changed: Notify::new(),
            deposed,
        });
        LEASE_METRICS.active.set(1);
        LEASE_METRICS.leases.set(active.table.lock().len() as i64);
        tokio::spawn(renew(active.clone(), replicas.clone(), queued));
        tokio::spawn(checkpoint(
            active.clone(),
            replicas.clone(),
            checkpoint_interval,
        ));
        tokio::spawn(expire(active.clone(), replicas));
        active
    }

    pub(crate) fn is_deposed(&self) -> bool {
        *self.deposed.borrow()
    }

    /// Ends the active role: tasks stop, waiting keep-alives fail.
    pub(crate) fn depose(&self) {
        if !self.deposed.send_replace(true) {
            LEASE_METRICS.active.set(0);
            tracing::warn!(epoch = self.epoch, "lost the lease claim; standing by");
        }
    }

    async fn stopped(&self) {
        let mut deposed = self.deposed.subscribe();
        let _ = deposed.wait_for(|deposed| *deposed).await;
    }

    /// Records a granted lease.
    pub(crate) fn granted(&self, id: i64, ttl: i64) {
        self.table.lock().grant(id, ttl, Instant::now());
        LEASE_METRICS.leases.set(self.table.lock().len() as i64);
        self.deadlines_changed.notify_one();
    }

    /// Forgets a revoked lease.
    pub(crate) fn revoked(&self, id: i64) {
        self.table.lock().remove(id);
        LEASE_METRICS.leases.set(self.table.lock().len() as i64);
    }

    /// A keep-alive: the lease's TTL once its renewal is checkpointed, or 0
    /// for a lease that does not exist (etcd's answer).
    pub(crate) async fn keep_alive(&self, id: i64) -> Result<i64, LeaseError> {
        let (reply, answer) = oneshot::channel();
        self.renewals
            .send(Renewal { id, reply })
            .await
            .map_err(|_| LeaseError::Deposed)?;
        answer.await.map_err(|_| LeaseError::Deposed)?
    }
}

/// Whether a fenced command was applied under our claim.
fn accepted(applied: &Option<ApplyResult>) -> bool {
    matches!(applied, Some(ApplyResult::Fenced(fenced)) if fenced.accepted)
}

/// Writes one checkpoint of `leases` under the claim; false if it was void.
async fn write_checkpoint(
    active: &Active,
    replicas: &Replicas,
    leases: Vec<(i64, i64)>,
) -> Result<bool, LeaseError> {
    // With no leases, one empty checkpoint: it is still the holder's sign of
    // life, and the fence that tells a deposed holder so.
    let chunks: Vec<&[(i64, i64)]> = if leases.is_empty() {
        vec![&[]]
    } else {
        leases.chunks(LEASES_PER_COMMAND).collect()
    };
    for chunk in chunks {
        let op = Op::LeaseCheckpoint(LeaseCheckpoint {
            epoch: active.epoch,
            leases: chunk
                .iter()
                .map(|(id, remaining_ms)| LeaseRemaining {
                    id: *id,
                    remaining_ms: *remaining_ms,
                })
                .collect(),
        });
        let applied = replicas.apply(op).await?;
        LEASE_METRICS.checkpoint_commands.inc();
        if !accepted(&applied.result) {
            active.depose();
            return Ok(false);
        }
    }
    Ok(true)
}

/// Packs the keep-alives that arrive together into one checkpoint and
/// answers them when it is applied.
async fn renew(active: Arc<Active>, replicas: Arc<Replicas>, mut queued: mpsc::Receiver<Renewal>) {
    let mut batch = Vec::new();
    loop {
        batch.clear();
        tokio::select! {
            received = queued.recv_many(&mut batch, RENEWAL_QUEUE) => if received == 0 { return },
            () = active.stopped() => break,
        }
        let now = Instant::now();
        let mut renewed: BTreeMap<i64, i64> = BTreeMap::new();
        let mut waiting = Vec::with_capacity(batch.len());
        {
            let mut table = active.table.lock();
            for renewal in batch.drain(..) {
                match table.renew(renewal.id, now) {
                    Some(ttl) => {
                        renewed.insert(renewal.id, ttl.saturating_mul(1000));
                        waiting.push((renewal.reply, ttl));
                    }
                    // Not found is only true while the claim holds: the
                    // answer waits for the same fenced checkpoint.
                    None => waiting.push((renewal.reply, 0)),
                }
            }
        }
        if waiting.is_empty() {
            continue;
        }
        LEASE_METRICS.keep_alives.inc_by(renewed.len() as u64);
        let written = write_checkpoint(&active, &replicas, renewed.into_iter().collect()).await;
        for (reply, ttl) in waiting {
            let _ = reply.send(match &written {
                Ok(true) => Ok(ttl),
                Ok(false) => Err(LeaseError::Deposed),
                Err(error) => Err(LeaseError::NoActive(format!(
                    "the renewal could not be recorded: {error}"
                ))),
            });
        }
    }
    // Deposed: whoever still waits is told so.
    queued.close();
    while let Ok(renewal) = queued.try_recv() {
        let _ = renewal.reply.send(Err(LeaseError::Deposed));
    }
}

/// Every interval, the remaining TTL of every lease, so a successor resumes
/// them; a checkpoint that is void means the claim is lost.
async fn checkpoint(active: Arc<Active>, replicas: Arc<Replicas>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = active.stopped() => return,
        }
        let remaining = active.table.lock().all_remaining(Instant::now());
        // An empty checkpoint still shows the standby that the holder lives.
        match write_checkpoint(&active, &replicas, remaining).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(%error, "checkpoint not written; trying again next interval")
            }
        }
    }
}

/// Revokes leases as their deadlines pass, under the claim.
async fn expire(active: Arc<Active>, replicas: Arc<Replicas>) {
    let mut due: Vec<i64> = Vec::new();
    loop {
        if due.is_empty() {
            let next = active.table.lock().next_deadline();
            let sleep = async {
                match next {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = active.deadlines_changed.notified() => continue,
                () = active.stopped() => return,
            }
            due = active.table.lock().take_expired(Instant::now());
            LEASE_METRICS.leases.set(active.table.lock().len() as i64);
            if due.is_empty() {
                continue;
            }
        }
        let chunk: Vec<i64> = due.iter().take(LEASES_PER_COMMAND).copied().collect();
        let op = Op::LeaseExpire(LeaseExpire {
            epoch: active.epoch,
            ids: chunk.clone(),
        });
        match replicas.apply(op).await {
            Ok(applied) if accepted(&applied.result) => {
                LEASE_METRICS.expired.inc_by(chunk.len() as u64);
                tracing::info!(leases = ?chunk, "expired");
                due.drain(..chunk.len());
            }
            Ok(_) => {
                active.depose();
                return;
            }
            Err(error) => {
                // They stay due: a lease whose expiry is not yet applied must
                // not be forgotten.
                tracing::warn!(%error, "expiry not applied; trying again");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = active.stopped() => return,
                }
            }
        }
    }
}
