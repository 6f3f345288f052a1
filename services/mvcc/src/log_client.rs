//! The replica's way to cairn-log: any node takes every call, so the client
//! sticks to one node and moves to the next when that one cannot be reached.

use std::time::Duration;

use cairn_kit::failover::{self, Failover};
use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::log::v1::log_client::LogClient as RawLogClient;
use cairn_proto::cairn::log::v1::{
    AckRequest, ProposeRequest, ProposeResponse, ReadIndexRequest, ReadIndexResponse,
    SubscribeRequest, SubscribeResponse,
};
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::error::MvccError;

type Client = RawLogClient<InterceptedService<Channel, TraceInterceptor>>;

/// Clients for every configured log node.
pub struct LogClient {
    nodes: Failover<Client>,
}

fn log_error(status: Status) -> MvccError {
    MvccError::Log(status.message().to_owned())
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
        })
    }

    pub fn timeout(&self) -> Duration {
        self.nodes.timeout()
    }

    /// Appends a command. Sent elsewhere only if it never reached a node: a
    /// proposal that failed after that may still commit.
    pub async fn propose(&self, command: Vec<u8>) -> Result<ProposeResponse, MvccError> {
        self.nodes
            .call("propose", failover::never_sent, |mut client| {
                let command = command.clone();
                async move { client.propose(ProposeRequest { command }).await }
            })
            .await
            .map_err(log_error)
    }

    /// A linearizable read point. Idempotent, so any failure moves on.
    pub async fn read_index(&self) -> Result<ReadIndexResponse, MvccError> {
        self.nodes
            .call(
                "read index",
                failover::unavailable,
                |mut client| async move { client.read_index(ReadIndexRequest {}).await },
            )
            .await
            .map_err(log_error)
    }

    /// Reports the index this replica has durably applied.
    pub async fn ack(&self, consumer: &str, applied_index: u64) -> Result<(), MvccError> {
        self.nodes
            .call("ack", failover::unavailable, |mut client| {
                let consumer = consumer.to_owned();
                async move {
                    client
                        .ack(AckRequest {
                            consumer,
                            applied_index,
                        })
                        .await
                }
            })
            .await
            .map(|_| ())
            .map_err(log_error)
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
