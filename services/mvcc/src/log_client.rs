//! The replica's way to cairn-log: any node takes every call, so the client
//! sticks to one node (the leader, once a node names it) and moves to the
//! next when that one cannot be reached.

use std::time::Duration;

use cairn_kit::failover::{self, Failover};
use cairn_kit::multiplex::{Multiplex, MultiplexError};
use cairn_kit::settings::PeerSettings;
use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::log::v1::log_client::LogClient as RawLogClient;
use cairn_proto::cairn::log::v1::{
    AckRequest, ProposeResponse, ReadIndexRequest, ReadIndexResponse, SubscribeRequest,
    SubscribeResponse, TaggedPlacement, TaggedProposal,
};
use cairn_proto::contract::{metadata, Failure, FailureKind};
use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::error::MvccError;

type Client = RawLogClient<InterceptedService<Channel, TraceInterceptor>>;

/// How a call to the log failed: the kind the log said, or what the
/// transport showed. Cloned to every request that shared the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFailure {
    pub kind: FailureKind,
    /// False when the call never reached a log node.
    pub sent: bool,
    pub first_index: u64,
    pub message: String,
}

impl LogFailure {
    /// A call that reached no log node: nothing was appended.
    pub fn unreached(message: String) -> Self {
        Self {
            kind: FailureKind::Unspecified,
            sent: false,
            first_index: 0,
            message,
        }
    }

    /// A call or subscription that broke in a way the log did not name.
    pub fn broken(message: String) -> Self {
        Self {
            kind: FailureKind::Unspecified,
            sent: true,
            first_index: 0,
            message,
        }
    }

    /// The failure a call to the log answered with `status`.
    pub fn from_status(status: &Status) -> Self {
        let failure = Failure::from_status(status);
        Self {
            kind: failure
                .as_ref()
                .map_or(FailureKind::Unspecified, Failure::kind),
            sent: !failover::never_sent(status),
            first_index: failure.map_or(0, |failure| failure.first_index),
            message: status.message().to_owned(),
        }
    }

    /// Whether the outcome of a write is unknown: it reached a node that may
    /// have appended it.
    pub fn outcome_unknown(&self) -> bool {
        match self.kind {
            FailureKind::TimedOut => true,
            FailureKind::Unspecified => self.sent,
            _ => false,
        }
    }
}

impl std::fmt::Display for LogFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn log_error(status: Status) -> LogFailure {
    LogFailure::from_status(&status)
}

/// Keeps the leader a node forwarded a call to, if it named one.
fn note_leader<T>(
    response: Result<tonic::Response<T>, Status>,
    leader: &Mutex<Option<String>>,
) -> Result<tonic::Response<T>, Status> {
    if let Ok(response) = &response {
        if let Some(address) = metadata::leader(response.metadata()) {
            *leader.lock() = Some(address.to_owned());
        }
    }
    response
}

/// Proposals to one log node, many on one stream.
type ProposalStream = Multiplex<TaggedProposal, TaggedPlacement>;

/// The most times one proposal follows a node's pointer to the leader.
const MAX_REDIRECTS: usize = 3;

/// Clients for every configured log node.
pub(crate) struct LogClient {
    nodes: Failover<Client>,
    /// Per node, in the same order: the stream proposals travel on.
    proposals: Vec<ProposalStream>,
    /// Counts the times calls moved to another node because it leads.
    leader_moved: watch::Sender<u64>,
}

/// Proposals to the node `client` calls, on one stream opened on first use.
fn proposal_stream(client: &Client) -> ProposalStream {
    let client = client.clone();
    Multiplex::new(
        1,
        |proposal, id| proposal.id = id,
        |placement| placement.id,
        move |proposals| {
            let mut client = client.clone();
            async move {
                client
                    .proposals(proposals)
                    .await
                    .map(tonic::Response::into_inner)
            }
        },
    )
}

impl LogClient {
    pub(crate) fn new(peers: &PeerSettings) -> Result<Self, MvccError> {
        let nodes = Failover::connect(peers, "log", |channel| {
            RawLogClient::with_interceptor(channel, TraceInterceptor)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024)
        })
        .map_err(|error| MvccError::Settings(error.to_string()))?;
        let proposals = nodes.clients().map(proposal_stream).collect();
        Ok(Self {
            nodes,
            proposals,
            leader_moved: watch::Sender::new(0),
        })
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.nodes.timeout()
    }

    /// Changes when calls move to another node because it leads: a
    /// subscription is best taken from the leader, which learns of a commit
    /// first.
    pub(crate) fn leader_moved(&self) -> watch::Receiver<u64> {
        self.leader_moved.subscribe()
    }

    /// Sends the next calls straight to the leader a node forwarded to.
    fn follow_leader(&self, leader: Mutex<Option<String>>) {
        if let Some(address) = leader.into_inner() {
            if self.nodes.prefer(&address) {
                tracing::debug!(leader = address, "calling the log's leader directly");
                self.leader_moved.send_modify(|moves| *moves += 1);
            }
        }
    }

    /// Appends several commands into one entry, in order; all or none
    /// commit. They travel on the stream to the node believed to lead; a
    /// node that does not lead names the leader and they go there. Sent
    /// elsewhere only if no node took them: a proposal that failed after
    /// that may still commit.
    pub(crate) async fn propose_batch(
        &self,
        commands: Vec<Vec<u8>>,
    ) -> Result<ProposeResponse, LogFailure> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut redirects = 0;
        let mut unreached = 0;
        loop {
            let node = self.nodes.preferred();
            let Some(stream) = self.proposals.get(node) else {
                return Err(LogFailure::unreached("no log node is configured".into()));
            };
            let mut trace_context = std::collections::HashMap::new();
            cairn_kit::telemetry::inject_into(&mut trace_context);
            let proposal = TaggedProposal {
                id: 0,
                commands: commands.clone(),
                trace_context,
            };
            let placement = match tokio::time::timeout_at(deadline, stream.call(proposal)).await {
                Err(_) => {
                    return Err(LogFailure::broken(format!(
                        "proposing through {} timed out",
                        self.nodes.address(node)
                    )))
                }
                Ok(Err(MultiplexError::Lost(reason))) => return Err(LogFailure::broken(reason)),
                Ok(Err(MultiplexError::Unreached(reason))) => {
                    self.nodes.pass_over(node);
                    unreached += 1;
                    if unreached >= self.nodes.len() {
                        // Every node failed once: give the cluster a moment.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if tokio::time::Instant::now() >= deadline {
                            return Err(LogFailure::unreached(reason));
                        }
                        unreached = 0;
                    }
                    continue;
                }
                Ok(Ok(placement)) => placement,
            };
            if placement.code == tonic::Code::Ok as i32 {
                return Ok(placement.placed.unwrap_or_default());
            }
            if !placement.leader.is_empty() && redirects < MAX_REDIRECTS {
                redirects += 1;
                self.follow_leader(Mutex::new(Some(placement.leader)));
                continue;
            }
            let status = tonic::Status::with_details(
                tonic::Code::from(placement.code),
                placement.message,
                placement.details.into(),
            );
            let failure = LogFailure::from_status(&status);
            if failure.kind == FailureKind::Stopping {
                self.nodes.pass_over(node);
                continue;
            }
            return Err(failure);
        }
    }

    /// A linearizable read point. Idempotent, so any failure moves on.
    pub(crate) async fn read_index(&self) -> Result<ReadIndexResponse, LogFailure> {
        let leader = Mutex::new(None);
        let point = self
            .nodes
            .call("read index", failover::unavailable, |mut client| {
                let leader = &leader;
                async move { note_leader(client.read_index(ReadIndexRequest {}).await, leader) }
            })
            .await
            .map_err(log_error);
        self.follow_leader(leader);
        point
    }

    /// Reports the index this replica has durably applied.
    pub(crate) async fn ack(&self, consumer: &str, applied_index: u64) -> Result<(), LogFailure> {
        let leader = Mutex::new(None);
        let acknowledged = self
            .nodes
            .call("ack", failover::unavailable, |mut client| {
                let consumer = consumer.to_owned();
                let leader = &leader;
                async move {
                    let request = AckRequest {
                        consumer,
                        applied_index,
                    };
                    note_leader(client.ack(request).await, leader)
                }
            })
            .await
            .map(|_| ())
            .map_err(log_error);
        self.follow_leader(leader);
        acknowledged
    }

    /// Committed entries from `from_index` on, from whichever node answers.
    /// An index the log has purged is [`MvccError::Purged`]: this replica can
    /// only go on from a copy of another's state.
    pub(crate) async fn subscribe(
        &self,
        from_index: u64,
    ) -> Result<Streaming<SubscribeResponse>, MvccError> {
        let subscribed = self
            .nodes
            .call(
                "subscribe",
                failover::unavailable,
                |mut client| async move { client.subscribe(SubscribeRequest { from_index }).await },
            )
            .await
            .map_err(log_error);
        subscribed.map_err(|failure| match failure.kind {
            FailureKind::Purged => MvccError::Purged {
                wanted: from_index,
                first: failure.first_index,
            },
            _ => MvccError::Log(failure),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_proposal_has_an_unknown_outcome_and_a_refused_one_does_not() {
        let timed_out =
            Failure::of(FailureKind::TimedOut).into_status(tonic::Code::Unavailable, "late");
        assert!(LogFailure::from_status(&timed_out).outcome_unknown());
        let no_leader =
            Failure::of(FailureKind::NoLeader).into_status(tonic::Code::Unavailable, "none");
        assert!(!LogFailure::from_status(&no_leader).outcome_unknown());
        assert!(!LogFailure::unreached("refused".into()).outcome_unknown());
        assert!(LogFailure::broken("reset".into()).outcome_unknown());
    }
}
