//! Running a request on the leader: here when this node leads, waiting out an
//! election when no node does, or forwarding it to the leader another node
//! names.

use std::future::Future;

use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::log::v1::log_client::LogClient;
use cairn_proto::contract::metadata;
use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError,
};
use openraft::{BasicNode, ServerState};
use tokio::time::{timeout_at, Instant};
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::LogApi;
use crate::error::LogError;
use crate::types::NodeId;

/// A client of another log node.
pub(super) type Forwarder = LogClient<InterceptedService<Channel, TraceInterceptor>>;

/// The most times a request is forwarded. More than once happens when the
/// leadership moves while a request is on its way (the node it was forwarded
/// to names the new leader); the bound keeps nodes with stale views from
/// passing a request around.
const MAX_FORWARDS: u32 = 3;
/// How long a refused attempt waits for a change of raft state before trying again.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Where a request that must run on the leader was carried out.
#[derive(Clone, Debug)]
pub(super) enum Routed<T> {
    Here(T),
    /// Not the leader: the leader is at this address.
    There(String),
}

/// What an attempt does if it runs out of time after raft took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Effect {
    /// It appends an entry, which may still commit: the outcome is unknown.
    Appends,
    /// It only asks the quorum something: nothing happened.
    Asks,
}

/// What to do with an error that names no other leader.
pub(super) enum Refusal {
    /// Answer the caller with this error now.
    Final(LogError),
    /// Try again until the deadline; then fail saying this.
    Transient(&'static str),
}

/// The part of an openraft error that says "ask the leader".
pub(super) trait LeaderHint {
    fn forward_to_leader(&self) -> Option<&ForwardToLeader<NodeId, BasicNode>>;
}

impl LeaderHint for ClientWriteError<NodeId, BasicNode> {
    fn forward_to_leader(&self) -> Option<&ForwardToLeader<NodeId, BasicNode>> {
        match self {
            ClientWriteError::ForwardToLeader(forward) => Some(forward),
            ClientWriteError::ChangeMembershipError(_) => None,
        }
    }
}

impl LeaderHint for CheckIsLeaderError<NodeId, BasicNode> {
    fn forward_to_leader(&self) -> Option<&ForwardToLeader<NodeId, BasicNode>> {
        match self {
            CheckIsLeaderError::ForwardToLeader(forward) => Some(forward),
            CheckIsLeaderError::QuorumNotEnough(_) => None,
        }
    }
}

/// A leadership check that missed its quorum is tried again: on a busy machine a
/// heartbeat answered late fails one check, and a fresh check may pass.
pub(super) fn no_quorum(_: &CheckIsLeaderError<NodeId, BasicNode>) -> Refusal {
    Refusal::Transient("the leader could not confirm a quorum within the request timeout")
}

/// A write refused for a reason other than "ask the leader".
pub(super) fn write_refusal(error: &ClientWriteError<NodeId, BasicNode>) -> Refusal {
    Refusal::Final(LogError::NoLeader(error.to_string()))
}

/// A membership change refused for good, or retried while another is still in
/// progress (openraft commits a change as two entries; the next waits for both).
pub(super) fn membership_refusal(error: &ClientWriteError<NodeId, BasicNode>) -> Refusal {
    match error {
        ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_)) => {
            Refusal::Transient(
                "another membership change stayed in progress for the whole request timeout",
            )
        }
        ClientWriteError::ChangeMembershipError(error) => Refusal::Final(
            LogError::FailedPrecondition(format!("membership change refused: {error}")),
        ),
        ClientWriteError::ForwardToLeader(_) => {
            Refusal::Final(LogError::NoLeader(error.to_string()))
        }
    }
}

/// A forwarded request's failure as this node answers it: what the leader
/// said, as it said it; a leader that could not be reached as no leader
/// (nothing was appended); a connection that broke under the call as
/// UNAVAILABLE with an unknown outcome, never tonic's UNKNOWN "transport
/// error", which tells a caller nothing it can act on.
fn forward_failure(status: Status, leader: &str) -> Status {
    if cairn_kit::grpc::status_never_sent(&status) {
        return LogError::NoLeader(format!(
            "the leader at {leader} could not be reached: {}",
            status.message()
        ))
        .into();
    }
    if cairn_kit::grpc::transport_failed(&status) {
        return LogError::ForwardBroken(format!(
            "the connection to the leader at {leader} broke under the request, which may or \
             may not have taken effect: {}",
            status.message()
        ))
        .into();
    }
    status
}

impl LogApi {
    pub(super) fn deadline(&self) -> Instant {
        Instant::now() + self.inner.request_timeout
    }

    /// Refuses at once when this node leads but has heard from no quorum for
    /// longer than an election takes: what it appends cannot commit, and
    /// what it would confirm is stale.
    fn check_quorum(&self) -> Result<(), LogError> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state != ServerState::Leader {
            return Ok(());
        }
        let lost_after = self.inner.quorum_lost_after.as_millis();
        match metrics.millis_since_quorum_ack {
            Some(millis) if u128::from(millis) > lost_after => Err(LogError::NoLeader(format!(
                "the leader has not heard from a quorum for {millis} ms"
            ))),
            _ => Ok(()),
        }
    }

    /// Runs `attempt` on this node until it succeeds, names another leader, or
    /// the deadline passes. Without a known leader it waits for an election;
    /// an error `refused` calls transient is retried the same way.
    pub(super) async fn on_leader<T, E, F, Fut>(
        &self,
        deadline: Instant,
        effect: Effect,
        attempt: F,
        refused: impl Fn(&E) -> Refusal,
    ) -> Result<Routed<T>, LogError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RaftError<NodeId, E>>>,
        E: LeaderHint + std::error::Error,
    {
        let mut metrics = self.inner.raft.metrics();
        loop {
            self.check_quorum()?;
            let outcome = timeout_at(deadline, attempt())
                .await
                .map_err(|_| match effect {
                    Effect::Appends => LogError::TimedOut(
                        "request timed out waiting for the log to commit; it may still commit"
                            .into(),
                    ),
                    Effect::Asks => LogError::NoLeader(
                        "request timed out waiting for the leader to confirm a quorum".into(),
                    ),
                })?;
            let error = match outcome {
                Ok(value) => return Ok(Routed::Here(value)),
                Err(RaftError::Fatal(fatal)) => {
                    return Err(LogError::Raft(format!(
                        "this log node has stopped: {fatal}"
                    )))
                }
                Err(RaftError::APIError(error)) => error,
            };
            let waiting_for = match error.forward_to_leader() {
                Some(ForwardToLeader {
                    leader_node: Some(node),
                    ..
                }) if node.addr != self.inner.advertise => {
                    return Ok(Routed::There(node.addr.clone()))
                }
                // No leader known yet, or this node is becoming leader.
                Some(_) => "no leader was elected within the request timeout",
                None => match refused(&error) {
                    Refusal::Final(refusal) => return Err(refusal),
                    Refusal::Transient(waiting_for) => waiting_for,
                },
            };
            // Try again at the next change of raft state, or after a pause: a
            // leadership check that missed its quorum (a heartbeat answered
            // late on a busy machine) changes no state, and a fresh check may pass.
            let changed = tokio::select! {
                changed = metrics.changed() => Some(changed),
                () = tokio::time::sleep(RETRY_PAUSE) => None,
            };
            if Instant::now() >= deadline {
                return Err(LogError::NoLeader(waiting_for.into()));
            }
            if let Some(changed) = changed {
                changed.map_err(|_| LogError::Stopping)?;
            }
        }
    }

    /// A client of the log node at `addr`, kept for the next call: the leader
    /// requests are forwarded to, or a voter in a leadership hand-over.
    pub(super) fn peer_client(&self, addr: &str) -> Result<Forwarder, LogError> {
        let mut peers = self.inner.peers.lock();
        if let Some(client) = peers.get(addr) {
            return Ok(client.clone());
        }
        let endpoint = cairn_kit::tls::peer_endpoint(addr, None).map_err(|error| {
            LogError::NoLeader(format!("leader address {addr} is not usable: {error}"))
        })?;
        let channel = endpoint.tcp_nodelay(true).connect_lazy();
        let client = LogClient::with_interceptor(channel, TraceInterceptor)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        peers.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    /// Sends `request` on to the leader at `leader`, marked as forwarded and with
    /// what is left of the deadline, unless it was forwarded too often already.
    pub(super) async fn forward<Req, Resp, Fut>(
        &self,
        request: Request<Req>,
        leader: &str,
        deadline: Instant,
        call: impl FnOnce(Forwarder, Request<Req>) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwards = metadata::forwards(request.metadata());
        if forwards >= MAX_FORWARDS {
            return Err(LogError::NotLeader(format!(
                "not the leader; the leader is at {leader} (the request was forwarded {forwards} times already)"
            ))
            .into());
        }
        let client = self.peer_client(leader)?;
        let mut onward = Request::new(request.into_inner());
        metadata::set_forwards(onward.metadata_mut(), forwards + 1);
        onward.set_timeout(deadline.saturating_duration_since(Instant::now()));
        cairn_kit::telemetry::inject_context(onward.metadata_mut());
        let mut response = call(client, onward)
            .await
            .map_err(|status| forward_failure(status, leader))?;
        // Saves the caller this hop next time.
        metadata::set_leader(response.metadata_mut(), leader);
        Ok(response)
    }

    /// Answers from this node when it carried the request out, or forwards the
    /// request to the leader `routed` names.
    pub(super) async fn answer<Req, Resp, T, Fut>(
        &self,
        routed: Routed<T>,
        here: impl FnOnce(T) -> Resp,
        request: Request<Req>,
        deadline: Instant,
        there: impl FnOnce(Forwarder, Request<Req>) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        match routed {
            Routed::Here(value) => Ok(Response::new(here(value))),
            Routed::There(leader) => self.forward(request, &leader, deadline, there).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cairn_proto::contract::{failure_kind, FailureKind};
    use tonic::Code;

    use super::*;

    #[test]
    fn a_forward_that_broke_or_never_left_is_unavailable_and_the_leaders_answer_is_kept() {
        let mut torn = Status::unknown("transport error");
        torn.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        let broken = forward_failure(torn, "127.0.0.1:7001");
        assert_eq!(broken.code(), Code::Unavailable);
        assert_eq!(failure_kind(&broken), FailureKind::Unspecified);
        assert!(broken.message().contains("127.0.0.1:7001"), "{broken:?}");

        let mut refused = Status::unavailable("tcp connect error");
        refused.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let unreached = forward_failure(refused, "127.0.0.1:7001");
        assert_eq!(unreached.code(), Code::Unavailable);
        assert_eq!(failure_kind(&unreached), FailureKind::NoLeader);

        let timed_out = cairn_proto::contract::Failure::of(FailureKind::TimedOut)
            .into_status(Code::Unavailable, "may still commit");
        let kept = forward_failure(timed_out, "127.0.0.1:7001");
        assert_eq!(kept.message(), "may still commit");
        assert_eq!(failure_kind(&kept), FailureKind::TimedOut);
        let invalid = forward_failure(Status::invalid_argument("empty"), "a:1");
        assert_eq!(invalid.code(), Code::InvalidArgument);
    }
}
