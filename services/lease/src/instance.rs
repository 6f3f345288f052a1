//! One cairn-lease instance: standing by, or active under a claim.
//!
//! A standby watches the claim in force through the replicas. While the
//! holder's checkpoints keep moving, it forwards Lease calls to the holder;
//! when they stop for `takeover_after_ms`, it proposes a claim one epoch
//! higher. The first claim applied wins; the winner resumes every lease from
//! its last checkpoint, counted from after the claim, so never early.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_kit::shutdown::ShutdownWatch;
use cairn_proto::cairn::mvcc::v1::apply_response::Result as ApplyResult;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{LeaseClaim, LeaseHolder};
use parking_lot::RwLock;

use crate::active::Active;
use crate::error::LeaseError;
use crate::replicas::Replicas;
use crate::settings::LeaseRules;
use crate::table::DeadlineTable;

/// What the instance knows of the claim in force.
#[derive(Clone, Debug, Default)]
pub(crate) struct Claim {
    pub holder: String,
}

/// One instance's shared state.
pub(crate) struct Instance {
    /// This instance's advertised address: its name in claims.
    pub me: String,
    pub replicas: Arc<Replicas>,
    pub rules: LeaseRules,
    active: RwLock<Option<Arc<Active>>>,
    claim: RwLock<Claim>,
    /// The newest revision seen, for response headers.
    revision: AtomicI64,
    /// The newest log term seen, for response headers (etcd's raft_term).
    term: AtomicU64,
}

impl Instance {
    pub(crate) fn new(me: String, replicas: Arc<Replicas>, rules: LeaseRules) -> Arc<Self> {
        Arc::new(Self {
            me,
            replicas,
            rules,
            active: RwLock::new(None),
            claim: RwLock::new(Claim::default()),
            revision: AtomicI64::new(0),
            term: AtomicU64::new(0),
        })
    }

    /// The active role, while this instance holds the claim.
    pub(crate) fn active(&self) -> Option<Arc<Active>> {
        self.active
            .read()
            .as_ref()
            .filter(|active| !active.is_deposed())
            .cloned()
    }

    /// The claim in force as last seen.
    pub(crate) fn claim(&self) -> Claim {
        self.claim.read().clone()
    }

    pub(crate) fn revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }

    pub(crate) fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    /// Notes what a replica answered: its revision and log term.
    pub(crate) fn saw(&self, revision: i64, term: u64) {
        self.revision.fetch_max(revision, Ordering::Relaxed);
        self.term.fetch_max(term, Ordering::Relaxed);
    }

    fn saw_holder(&self, holder: Option<&LeaseHolder>) {
        if let Some(holder) = holder {
            *self.claim.write() = Claim {
                holder: holder.holder.clone(),
            };
        }
    }

    /// Reads the claim in force now, for a call that arrived before this
    /// instance's next look at it.
    pub(crate) async fn refresh_claim(&self) -> Result<Claim, LeaseError> {
        let state = self.replicas.leases().await?;
        self.saw(state.revision, state.raft_term);
        self.saw_holder(state.holder.as_ref());
        Ok(self.claim())
    }

    /// Proposes a claim at `epoch`; on winning, resumes every lease and
    /// becomes active.
    async fn claim_at(&self, epoch: u64) -> Result<bool, LeaseError> {
        let applied = self
            .replicas
            .apply(Op::LeaseClaim(LeaseClaim {
                holder: self.me.clone(),
                epoch,
            }))
            .await?;
        self.saw(applied.revision, applied.raft_term);
        let Some(ApplyResult::Fenced(fenced)) = applied.result else {
            return Err(LeaseError::NoActive("a claim got no fenced result".into()));
        };
        self.saw_holder(fenced.holder.as_ref());
        if !fenced.accepted {
            return Ok(false);
        }
        // The state after the claim: every lease and its last checkpoint.
        let state = self.replicas.leases().await?;
        self.saw(state.revision, state.raft_term);
        self.saw_holder(state.holder.as_ref());
        if state.holder.as_ref().map(|holder| holder.epoch) != Some(epoch) {
            // Someone claimed again in between.
            return Ok(false);
        }
        let table = DeadlineTable::resume(&state.leases, Instant::now());
        tracing::info!(epoch, leases = table.len(), "claimed the leases; active");
        let active = Active::start(
            epoch,
            table,
            self.replicas.clone(),
            Duration::from_millis(self.rules.checkpoint_interval_ms),
        );
        *self.active.write() = Some(active);
        Ok(true)
    }

    /// Watches the claim and takes over when its holder stops checkpointing.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: ShutdownWatch) {
        let poll = Duration::from_millis(self.rules.checkpoint_interval_ms / 2)
            .max(Duration::from_millis(50));
        let takeover_after = Duration::from_millis(self.rules.takeover_after_ms);
        let mut last_progress = (0_u64, 0_u64, Instant::now());
        loop {
            if self.active().is_none() {
                if let Err(error) = self.stand_by(&mut last_progress, takeover_after).await {
                    tracing::warn!(%error, "cannot read the lease claim; trying again");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = shutdown.cancelled() => break,
            }
        }
        if let Some(active) = self.active.write().take() {
            active.depose();
        }
    }

    /// One look at the claim from a standby.
    async fn stand_by(
        &self,
        last_progress: &mut (u64, u64, Instant),
        takeover_after: Duration,
    ) -> Result<(), LeaseError> {
        let state = self.replicas.leases().await?;
        self.saw(state.revision, state.raft_term);
        let holder = state.holder.unwrap_or_default();
        self.saw_holder(Some(&holder));
        let now = Instant::now();
        let progress = (holder.epoch, holder.checkpoint_index);
        if progress != (last_progress.0, last_progress.1) {
            *last_progress = (progress.0, progress.1, now);
        }
        let silent_for = now.duration_since(last_progress.2);
        let takeover = holder.epoch == 0
            // A claim held by no one: a restore replaced the lease table and
            // fenced off the instance that was active; the leases it restored
            // are read by whoever claims next.
            || holder.holder.is_empty()
            // A claim in this instance's name that it no longer holds in
            // memory (it restarted): take it again under a new epoch.
            || holder.holder == self.me
            || silent_for >= takeover_after;
        if takeover {
            tracing::info!(
                holder = holder.holder,
                epoch = holder.epoch,
                silent_ms = silent_for.as_millis() as u64,
                "claiming the leases"
            );
            self.claim_at(holder.epoch + 1).await?;
        }
        Ok(())
    }
}
