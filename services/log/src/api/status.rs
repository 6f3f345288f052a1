//! Status: the node's view of the cluster, for the edge's etcd Maintenance
//! and Cluster answers and for operators.

use cairn_proto::cairn::log::v1 as pb;
use openraft::ServerState;

use super::LogApi;
use crate::error::LogError;

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl LogApi {
    /// Leader, term, indexes, members and consumers as this node sees them.
    pub(super) fn node_status(&self) -> Result<pb::StatusResponse, LogError> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        let consumers = self
            .inner
            .bookkeeping
            .read()
            .consumers
            .iter()
            .map(|(name, applied_index)| pb::Consumer {
                name: name.clone(),
                applied_index: *applied_index,
            })
            .collect();
        Ok(pb::StatusResponse {
            id: metrics.id,
            leader: metrics.current_leader.unwrap_or(0),
            term: metrics.current_term,
            first_index: self.inner.store.first_index()?,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            commit_index: self.inner.store.committed_index().unwrap_or(0).max(applied),
            applied_index: applied,
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index),
            members: self.members(),
            consumers,
            role: role(metrics.state).to_owned(),
        })
    }
}
