//! The replica's way to cairn-log: any node takes every call, so the client
//! sticks to one node and moves to the next when that one cannot be reached.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::log::v1::log_client::LogClient as RawLogClient;
use cairn_proto::cairn::log::v1::{
    AckRequest, ProposeRequest, ProposeResponse, ReadIndexRequest, ReadIndexResponse,
    SubscribeRequest, SubscribeResponse,
};
use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::error::MvccError;

type Client = RawLogClient<InterceptedService<Channel, TraceInterceptor>>;

/// Clients for every configured log node.
pub struct LogClient {
    nodes: Vec<(String, Client)>,
    preferred: AtomicUsize,
    timeout: Duration,
}

/// Whether a call failed before it reached the node, so it is safe to send
/// elsewhere even when it is not idempotent.
fn never_sent(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && (status.message().contains("connect") || status.message().contains("Connection refused"))
}

impl LogClient {
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, MvccError> {
        let mut nodes = Vec::with_capacity(endpoints.len());
        for address in endpoints {
            let uri = if address.contains("://") {
                address.clone()
            } else {
                format!("http://{address}")
            };
            let channel = Endpoint::from_shared(uri)
                .map_err(|error| {
                    MvccError::Settings(format!("setting `log.endpoints`: {address}: {error}"))
                })?
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .connect_lazy();
            let client = RawLogClient::with_interceptor(channel, TraceInterceptor)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024);
            nodes.push((address.clone(), client));
        }
        Ok(Self {
            nodes,
            preferred: AtomicUsize::new(0),
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls `call` on the preferred node, moving on to the next node while
    /// `retry` says the failure allows it, within the request timeout.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        retry: fn(&Status) -> bool,
        mut call: F,
    ) -> Result<T, MvccError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut last_error = String::from("no log node answered");
        for attempt in 0.. {
            let index = (self.preferred.load(Ordering::Relaxed) + attempt) % self.nodes.len();
            let (address, client) = &self.nodes[index];
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            match tokio::time::timeout(remaining, call(client.clone())).await {
                Ok(Ok(response)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if retry(&status) => {
                    last_error = format!("{what} via {address}: {}", status.message());
                    if attempt + 1 >= self.nodes.len() {
                        // Every node failed once: give the cluster a moment.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Ok(Err(status)) => {
                    return Err(MvccError::Log(format!(
                        "{what} via {address}: {}",
                        status.message()
                    )))
                }
                Err(_) => {
                    last_error = format!("{what} via {address}: timed out");
                    break;
                }
            }
        }
        Err(MvccError::Log(last_error))
    }

    /// Appends a command. Sent elsewhere only if it never reached a node: a
    /// proposal that failed after that may still commit.
    pub async fn propose(&self, command: Vec<u8>) -> Result<ProposeResponse, MvccError> {
        self.call("propose", never_sent, |mut client| {
            let command = command.clone();
            async move { client.propose(ProposeRequest { command }).await }
        })
        .await
    }

    /// A linearizable read point. Idempotent, so any failure moves on.
    pub async fn read_index(&self) -> Result<ReadIndexResponse, MvccError> {
        self.call(
            "read index",
            |status| status.code() == Code::Unavailable,
            |mut client| async move { client.read_index(ReadIndexRequest {}).await },
        )
        .await
    }

    /// Reports the index this replica has durably applied.
    pub async fn ack(&self, consumer: &str, applied_index: u64) -> Result<(), MvccError> {
        self.call(
            "ack",
            |status| status.code() == Code::Unavailable,
            |mut client| {
                let consumer = consumer.to_owned();
                async move {
                    client
                        .ack(AckRequest {
                            consumer,
                            applied_index,
                        })
                        .await
                }
            },
        )
        .await
        .map(|_| ())
    }

    /// Committed entries from `from_index` on, from whichever node answers.
    pub async fn subscribe(
        &self,
        from_index: u64,
    ) -> Result<Streaming<SubscribeResponse>, MvccError> {
        let subscribed = self
            .call(
                "subscribe",
                |status| status.code() == Code::Unavailable,
                |mut client| async move { client.subscribe(SubscribeRequest { from_index }).await },
            )
            .await;
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
