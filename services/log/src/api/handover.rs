//! Handing the leadership to another voter (etcd's MoveLeader), as Raft's
//! leadership transfer does it: the leader stops appending, waits for the
//! target to hold its whole log, and has the target stand for election. The
//! other voters hold their own elections meanwhile, so that once the target's
//! higher term unseats the leader the target is the only candidate, and it
//! lacks no entry a voter has (voters refuse such a candidate).
//!
//! Every hold ends with the attempt, and by itself after a while should the
//! leader fail mid-way: no node is left unable to stand for election.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_proto::cairn::log::v1 as pb;
use futures::future::join_all;
use openraft::RaftMetrics;
use tokio::sync::watch;
use tokio::time::Instant;

use super::LogApi;
use crate::error::LogError;
use crate::types::{NodeId, Raft};

/// The longest a node keeps from standing for election when asked to.
const MAX_ELECTION_HOLD: Duration = Duration::from_secs(10);
/// How long the leader keeps its writes back for one hand-over at most.
const MAX_WRITE_HOLD: Duration = Duration::from_secs(3);

/// What a node holds back while leadership is being handed over.
pub(super) struct Holds {
    /// True while the leader keeps new entries back.
    writes_held: watch::Sender<bool>,
    /// Counts election holds; a hold's timer ends it only if no later hold
    /// or release came since.
    election_holds: AtomicU64,
}

impl Holds {
    pub(super) fn new() -> Self {
        Self {
            writes_held: watch::Sender::new(false),
            election_holds: AtomicU64::new(0),
        }
    }

    /// Returns once this node appends again, or at `deadline` (the write
    /// then fails on its own deadline).
    pub(super) async fn writes_open(&self, deadline: Instant) {
        if !*self.writes_held.borrow() {
            return;
        }
        let mut held = self.writes_held.subscribe();
        let _ = tokio::time::timeout_at(deadline, held.wait_for(|held| !held)).await;
    }

    /// Keeps `raft` from standing for election for `hold` (capped), or ends
    /// a hold when `hold` is zero.
    pub(super) fn hold_elections(self: &std::sync::Arc<Self>, raft: &Raft, hold: Duration) {
        let hold = hold.min(MAX_ELECTION_HOLD);
        let generation = self.election_holds.fetch_add(1, Ordering::SeqCst) + 1;
        if hold.is_zero() {
            raft.runtime_config().elect(true);
            return;
        }
        raft.runtime_config().elect(false);
        let holds = self.clone();
        let raft = raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            if holds.election_holds.load(Ordering::SeqCst) == generation {
                raft.runtime_config().elect(true);
            }
        });
    }
}

/// Lets writes through again when dropped, however the hand-over ends.
struct WritesHeld<'a>(&'a watch::Sender<bool>);

impl Drop for WritesHeld<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

impl LogApi {
    /// On the leader: hands the leadership to voter `target`, giving up at
    /// `deadline`. Returns once the target leads.
    pub(super) async fn hand_over(
        &self,
        target: &pb::Member,
        deadline: Instant,
    ) -> Result<(), LogError> {
        let raft = &self.inner.raft;
        let holds = &self.inner.holds;
        let hold = deadline
            .saturating_duration_since(Instant::now())
            .min(MAX_WRITE_HOLD);
        let attempt_ends = Instant::now() + hold;
        let me = raft.metrics().borrow().id;
        let others: Vec<pb::Member> = self
            .members()
            .into_iter()
            .filter(|member| member.voter && member.id != target.id && member.id != me)
            .collect();

        holds.writes_held.send_replace(true);
        let _writes = WritesHeld(&holds.writes_held);
        holds.hold_elections(raft, hold);
        join_all(
            others
                .iter()
                .map(|other| self.ask_to_hold(&other.addr, hold)),
        )
        .await;

        let moved = async {
            self.wait_until(attempt_ends, "the target did not catch up in time", |now| {
                let matched = now
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(&target.id).cloned().flatten())
                    .map(|log_id| log_id.index);
                now.current_leader == Some(now.id) && matched >= now.last_log_index
            })
            .await?;
            // The first campaign's higher term unseats this leader (voters
            // refuse the vote itself while its lease runs); the second, once
            // this node has stepped down and no longer holds a lease, wins
            // without waiting for the target's election timer.
            self.campaign_on(target).await?;
            self.wait_until(
                attempt_ends,
                "the leader did not step down in time",
                |now| now.state != openraft::ServerState::Leader,
            )
            .await?;
            self.campaign_on(target).await?;
            self.wait_until(
                attempt_ends,
                "the target did not win its election in time",
                |now| now.current_leader == Some(target.id),
            )
            .await
        }
        .await;

        holds.hold_elections(raft, Duration::ZERO);
        join_all(
            others
                .iter()
                .map(|other| self.ask_to_hold(&other.addr, Duration::ZERO)),
        )
        .await;
        moved
    }

    /// Asks the voter at `addr` to hold its elections for `hold` (zero ends
    /// a hold). A voter out of reach cannot compete either, so failures only
    /// show in the log.
    async fn ask_to_hold(&self, addr: &str, hold: Duration) {
        let Ok(mut voter) = self.peer_client(addr) else {
            return;
        };
        let request = pb::HoldElectionsRequest {
            millis: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
        };
        match tokio::time::timeout(Duration::from_secs(1), voter.hold_elections(request)).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                tracing::debug!(voter = addr, %status, "could not hold its elections");
            }
            Err(_) => tracing::debug!(voter = addr, "asking it to hold its elections timed out"),
        }
    }

    /// Has `target` stand for election now.
    async fn campaign_on(&self, target: &pb::Member) -> Result<(), LogError> {
        let mut candidate = self.peer_client(&target.addr)?;
        candidate
            .campaign(pb::CampaignRequest {})
            .await
            .map(|_| ())
            .map_err(|status| {
                LogError::NoLeader(format!(
                    "{} could not stand for election: {}",
                    target.addr,
                    status.message()
                ))
            })
    }

    /// Waits until this node's raft metrics satisfy `done`, failing with
    /// `late` at `ends`.
    async fn wait_until(
        &self,
        ends: Instant,
        late: &str,
        done: impl FnMut(&RaftMetrics<NodeId, openraft::BasicNode>) -> bool,
    ) -> Result<(), LogError> {
        let mut metrics = self.inner.raft.metrics();
        let waited =
            tokio::time::timeout_at(ends, async { metrics.wait_for(done).await.map(|_| ()) }).await;
        match waited {
            Err(_) => Err(LogError::NoLeader(late.to_owned())),
            Ok(Err(_)) => Err(LogError::Stopping),
            Ok(Ok(())) => Ok(()),
        }
    }
}
