//! Membership: the members as the etcd Cluster API shows them, changes to
//! them, and the elections a leadership hand-over asks for.

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::cairn::log::v1 as pb;
use openraft::{BasicNode, ChangeMembers};
use tonic::{Request, Response, Status};

use super::route::{membership_refusal, Effect, Routed};
use super::LogApi;
use crate::error::LogError;
use crate::types::NodeId;

impl LogApi {
    /// Every member, voters marked.
    pub(super) fn members(&self) -> Vec<pb::Member> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| pb::Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    fn membership(&self, index: u64) -> pb::MembershipResponse {
        pb::MembershipResponse {
            index,
            members: self.members(),
        }
    }

    async fn change_membership(
        &self,
        changes: ChangeMembers<NodeId, BasicNode>,
        deadline: tokio::time::Instant,
    ) -> Result<Routed<u64>, LogError> {
        self.inner.holds.writes_open(deadline).await;
        self.on_leader(
            deadline,
            Effect::Appends,
            || self.inner.raft.change_membership(changes.clone(), false),
            membership_refusal,
        )
        .await
        .map(|routed| match routed {
            Routed::Here(response) => Routed::Here(response.log_id.index),
            Routed::There(addr) => Routed::There(addr),
        })
    }

    /// AddLearner: a new node that receives the log but does not vote.
    pub(super) async fn add_learner_node(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let deadline = self.deadline();
        let pb::AddLearnerRequest { id, addr } = request.get_ref().clone();
        if id == 0 {
            return Err(LogError::InvalidArgument("member id must not be 0".into()).into());
        }
        if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
            return Err(LogError::InvalidArgument(format!(
                "member address `{addr}` is not host:port"
            ))
            .into());
        }
        let changes = ChangeMembers::AddNodes(BTreeMap::from([(id, BasicNode::new(addr))]));
        let routed = self.change_membership(changes, deadline).await?;
        let here = |index| self.membership(index);
        self.answer(
            routed,
            here,
            request,
            deadline,
            |mut leader, request| async move { leader.add_learner(request).await },
        )
        .await
    }

    /// PromoteVoter: a learner starts voting.
    pub(super) async fn promote(
        &self,
        request: Request<pb::PromoteVoterRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let deadline = self.deadline();
        let changes = ChangeMembers::AddVoterIds(BTreeSet::from([request.get_ref().id]));
        let routed = self.change_membership(changes, deadline).await?;
        let here = |index| self.membership(index);
        self.answer(
            routed,
            here,
            request,
            deadline,
            |mut leader, request| async move { leader.promote_voter(request).await },
        )
        .await
    }

    /// RemoveMember: a voter or learner leaves.
    pub(super) async fn remove(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let deadline = self.deadline();
        let id = request.get_ref().id;
        let is_voter = self
            .members()
            .iter()
            .any(|member| member.id == id && member.voter);
        let changes = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let routed = self.change_membership(changes, deadline).await?;
        let here = |index| self.membership(index);
        self.answer(
            routed,
            here,
            request,
            deadline,
            |mut leader, request| async move { leader.remove_member(request).await },
        )
        .await
    }

    /// Campaign: this node stands for election now (a voter only).
    pub(super) async fn stand_for_election(&self) -> Result<pb::CampaignResponse, LogError> {
        let voter = {
            let metrics = self.inner.raft.metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == metrics.id)
        };
        if !voter {
            return Err(LogError::FailedPrecondition(
                "only a voter can stand for election".into(),
            ));
        }
        self.inner
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|fatal| LogError::Raft(format!("this log node has stopped: {fatal}")))?;
        let term = self.inner.raft.metrics().borrow().current_term;
        Ok(pb::CampaignResponse { term })
    }

    /// TransferLeadership: hands over here when this node leads, forwards
    /// to the leader otherwise.
    pub(super) async fn move_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        let deadline = self.deadline();
        let target_id = request.get_ref().target_id;
        let members = self.members();
        let Some(target) = members
            .iter()
            .find(|member| member.id == target_id && member.voter)
        else {
            return Err(LogError::FailedPrecondition(format!(
                "{target_id} is not a voter of this log"
            ))
            .into());
        };
        let (me, leader) = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.id, metrics.current_leader)
        };
        match leader {
            Some(leader) if leader == target_id => {}
            Some(leader) if leader == me => self.hand_over(target, deadline).await?,
            Some(leader) => {
                let Some(addr) = members.iter().find(|member| member.id == leader) else {
                    return Err(LogError::NoLeader(format!(
                        "the leader {leader} is not a member this node knows"
                    ))
                    .into());
                };
                let addr = addr.addr.clone();
                return self
                    .forward(request, &addr, deadline, |mut leader, request| async move {
                        leader.transfer_leadership(request).await
                    })
                    .await;
            }
            None => {
                return Err(
                    LogError::NoLeader("no leader is known to hand over from".into()).into(),
                )
            }
        }
        Ok(Response::new(pb::TransferLeadershipResponse {
            leader: target_id,
        }))
    }
}
