//! The replica's way to cairn-log: any node takes every call, so the client
//! sticks to one node and moves to the next when that one cannot be reached.

use std::time::Duration;

use cairn_kit::failover::{self, Failover};
use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::log::v1::log_client::LogClient as RawLogClient;
use cairn_proto::cairn::log::v1::{
    AckRequest, ProposeBatchRequest, ProposeRequest, ProposeResponse, ReadIndexRequest,
    ReadIndexResponse, SubscribeRequest, SubscribeResponse,
};
use cairn_proto::cairn::log::LEADER_METADATA;
use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::error::MvccError;

type Client = RawLogClient<InterceptedService<Channel, TraceInterceptor>>;

/// Clients for every configured log node.
pub struct LogClient {
    nodes: Failover<Client>,
    /// Counts the times calls moved to another node because it leads.
    leader_moved: watch::Sender<u64>,
}

fn log_error(status: Status) -> MvccError {
    MvccError::Log(status.message().to_owned())
}

/// Keeps the leader a node forwarded a call to, if it named one.
fn note_leader<T>(
    response: Result<tonic::Response<T>, Status>,
    leader: &Mutex<Option<String>>,
) -> Result<tonic::Response<T>, Status> {
    if let Ok(response) = &response {
        if let Some(address) = response
            .metadata()
            .get(LEADER_METADATA)
            .and_then(|value| value.to_str().ok())
        {
            *leader.lock() = Some(address.to_owned());
        }
    }
    response
}

impl LogClient {
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, MvccError> {
        let mut nodes = Vec::with_capacity(endpoints.len());
        for address in endpoints {
            let channel = failover::lazy_channel(address, "log.endpoints")
                .map_err(|error| MvccError::Settings(error.to_string()))?;
            let client = RawLogClient::with_interceptor(channel, TraceInterceptor)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024);
            nodes.push((address.clone(), client));
        }
        Ok(Self {
            nodes: Failover::new(nodes, timeout),
            leader_moved: watch::Sender::new(0),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.nodes.timeout()
    }

    /// Changes when calls move to another node because it leads: a
    /// subscription is best taken from the leader, which learns of a commit
    /// first.
    pub fn leader_moved(&self) -> watch::Receiver<u64> {
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

    /// Appends a command. Sent elsewhere only if it never reached a node: a
    /// proposal that failed after that may still commit.
    pub async fn propose(&self, command: Vec<u8>) -> Result<ProposeResponse, MvccError> {
        let leader = Mutex::new(None);
        let proposed = self
            .nodes
            .call("propose", failover::never_sent, |mut client| {
                let command = command.clone();
                let leader = &leader;
                async move { note_leader(client.propose(ProposeRequest { command }).await, leader) }
            })
            .await
            .map_err(log_error);
        self.follow_leader(leader);
        proposed
    }

    /// Appends several commands into one entry, in order; all or none
    /// commit. Sent elsewhere only if it never reached a node.
    pub async fn propose_batch(
        &self,
        commands: Vec<Vec<u8>>,
    ) -> Result<ProposeResponse, MvccError> {
        let leader = Mutex::new(None);
        let proposed = self
            .nodes
            .call("propose", failover::never_sent, |mut client| {
                let commands = commands.clone();
                let leader = &leader;
                async move {
                    let request = ProposeBatchRequest { commands };
                    note_leader(client.propose_batch(request).await, leader)
                }
            })
            .await
            .map_err(log_error);
        self.follow_leader(leader);
        proposed
    }

    /// A linearizable read point. Idempotent, so any failure moves on.
    pub async fn read_index(&self) -> Result<ReadIndexResponse, MvccError> {
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
    pub async fn ack(&self, consumer: &str, applied_index: u64) -> Result<(), MvccError> {
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
    pub async fn subscribe(
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
        if let Err(MvccError::Log(message)) = &subscribed {
            if message.contains("purged") {
                return Err(MvccError::Corrupt(format!(
                    "the log no longer holds index {from_index}; this replica needs a copy of another's state: {message}"
                )));
            }
        }
        subscribed
    }
}
