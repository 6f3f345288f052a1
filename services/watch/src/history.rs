//! The replicas, for what the live feed cannot give: the current revision,
//! and the history of watchers that start behind or fall behind.

use cairn_kit::failover::{self, Failover};
use cairn_kit::settings::PeerSettings;
use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::mvcc::v1::mvcc_client::MvccClient;
use cairn_proto::cairn::mvcc::v1::{
    AuthorizeRequest, Caller, EventsRequest, EventsResponse, StatusRequest,
};
use cairn_proto::contract::{Failure, FailureKind};
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::error::WatchError;

type Client = MvccClient<InterceptedService<Channel, TraceInterceptor>>;

/// Clients of every configured replica.
pub(crate) struct History {
    nodes: Failover<Client>,
}

fn replica_error(status: Status) -> WatchError {
    match Failure::from_status(&status) {
        Some(failure) if failure.kind() == FailureKind::Compacted => WatchError::Compacted {
            compact_revision: failure.compact_revision,
        },
        _ => WatchError::Replica(status),
    }
}

impl History {
    pub(crate) fn new(peers: &PeerSettings) -> Result<Self, WatchError> {
        let nodes = Failover::connect(peers, "mvcc", |channel| {
            MvccClient::with_interceptor(channel, TraceInterceptor)
                .max_decoding_message_size(usize::MAX)
        })?;
        Ok(Self { nodes })
    }

    /// The store's current and compact revisions.
    pub(crate) async fn current(&self) -> Result<(i64, i64), WatchError> {
        let status = self
            .nodes
            .call("status", failover::unavailable, |mut client| async move {
                client.status(StatusRequest {}).await
            })
            .await
            .map_err(replica_error)?;
        Ok((status.current_revision, status.compact_revision))
    }

    /// Whether `caller` may read the range: `None` when it may, else the
    /// replica's refusal (etcd's "permission denied", "user name is
    /// empty", "invalid auth token"), which cancels the watch.
    pub(crate) async fn may_read(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Option<Status>, WatchError> {
        let request = AuthorizeRequest {
            caller: Some(caller.clone()),
            root: false,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        };
        let answer = self
            .nodes
            .call("authorize", failover::unavailable, |mut client| {
                let request = request.clone();
                async move { client.authorize(request).await }
            })
            .await;
        match answer {
            Ok(_) => Ok(None),
            Err(status) if is_refusal(&status) => Ok(Some(status)),
            Err(status) => Err(replica_error(status)),
        }
    }

    /// Every event in the range from `from` on, up to the revision current
    /// when the call began, in chunks.
    pub(crate) async fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        prev_kv: bool,
    ) -> Result<Streaming<EventsResponse>, WatchError> {
        let request = EventsRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            start_revision: from,
            prev_kv,
        };
        self.nodes
            .call("events", failover::unavailable, |mut client| {
                let request = request.clone();
                async move { client.events(request).await }
            })
            .await
            .map_err(replica_error)
    }
}

/// An auth refusal, as opposed to a replica that could not answer.
fn is_refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated | tonic::Code::InvalidArgument
    )
}

/// A failure in the middle of a history stream, as the gateway's error.
pub(crate) fn stream_error(status: Status) -> WatchError {
    replica_error(status)
}
