//! Typed clients the edge's own services (Cluster, Maintenance) use: the log
//! through any of its nodes, and one mvcc replica chosen from the pool.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_kit::failover::{self, Failover};
use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::log::v1::log_client::LogClient;
use cairn_proto::cairn::log::v1::{self as log, StatusResponse};
use cairn_proto::cairn::mvcc::v1::mvcc_client::MvccClient;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;

use crate::error::EdgeError;
use crate::pool::BackendPool;

type LogRpc = LogClient<InterceptedService<Channel, TraceInterceptor>>;
type MvccRpc = MvccClient<InterceptedService<Channel, TraceInterceptor>>;

/// The log, reached through whichever node answers.
pub(crate) struct Log {
    nodes: Failover<LogRpc>,
}

impl Log {
    pub(crate) fn new(endpoints: &[String], timeout: Duration) -> Result<Self, EdgeError> {
        let mut nodes = Vec::with_capacity(endpoints.len());
        for address in endpoints {
            let channel = failover::lazy_channel(address, "backends.log")
                .map_err(|error| EdgeError::Settings(error.to_string()))?;
            nodes.push((
                address.clone(),
                LogClient::with_interceptor(channel, TraceInterceptor),
            ));
        }
        Ok(Self {
            nodes: Failover::new(nodes, timeout),
        })
    }

    /// How long one call may take, retries included.
    pub(crate) fn timeout(&self) -> std::time::Duration {
        self.nodes.timeout()
    }

    /// The answering node's view: leader, term, indexes, members.
    pub(crate) async fn status(&self) -> Result<StatusResponse, Status> {
        self.nodes
            .call(
                "log status",
                failover::unavailable,
                |mut client| async move { client.status(log::StatusRequest {}).await },
            )
            .await
    }

    pub(crate) async fn add_learner(
        &self,
        id: u64,
        addr: String,
    ) -> Result<log::MembershipResponse, Status> {
        self.nodes
            .call("add learner", failover::never_sent, |mut client| {
                let addr = addr.clone();
                async move {
                    client
                        .add_learner(log::AddLearnerRequest { id, addr })
                        .await
                }
            })
            .await
    }

    pub(crate) async fn promote(&self, id: u64) -> Result<log::MembershipResponse, Status> {
        self.nodes
            .call("promote", failover::never_sent, |mut client| async move {
                client.promote_voter(log::PromoteVoterRequest { id }).await
            })
            .await
    }

    /// Hands the log's leadership to voter `target`; any node takes the
    /// call and the leader carries it out.
    pub(crate) async fn transfer_leadership(&self, target_id: u64) -> Result<u64, Status> {
        self.nodes
            .call(
                "transfer leadership",
                failover::unavailable,
                |mut client| async move {
                    client
                        .transfer_leadership(log::TransferLeadershipRequest { target_id })
                        .await
                },
            )
            .await
            .map(|moved| moved.leader)
    }

    pub(crate) async fn remove(&self, id: u64) -> Result<log::MembershipResponse, Status> {
        self.nodes
            .call("remove member", failover::never_sent, |mut client| async move {
                client.remove_member(log::RemoveMemberRequest { id }).await
            })
            .await
    }
}

/// Calls `call` on one mvcc replica after another until one answers; only
/// for calls that change nothing, as a failed one may have been carried out.
/// Refuses a call whose caller is not root while auth is on, with etcd's
/// error: for maintenance and membership, which the edge answers itself.
pub(crate) async fn require_root<T>(
    pool: &Arc<BackendPool>,
    call: &tonic::Request<T>,
) -> Result<(), Status> {
    let request = cairn_proto::cairn::mvcc::v1::AuthorizeRequest {
        caller: Some(crate::identity::caller(
            call.metadata().as_ref(),
            call.extensions(),
        )),
        root: true,
        ..Default::default()
    };
    on_any_replica(pool, |mut replica| {
        let request = request.clone();
        async move { replica.authorize(request).await }
    })
    .await?;
    Ok(())
}

pub(crate) async fn on_any_replica<T, F, Fut>(
    pool: &Arc<BackendPool>,
    mut call: F,
) -> Result<T, EdgeError>
where
    F: FnMut(MvccRpc) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut tried = Vec::new();
    let mut last_failure = None;
    while let Some(backend) = pool.pick(&tried) {
        tried.push(backend.addr);
        let _call = backend.start();
        let client = MvccClient::with_interceptor(backend.channel.clone(), TraceInterceptor);
        let answered = call(client)
            .await
            .map_err(|status| cairn_kit::grpc::unavailable_if_broken(status, "cairn"));
        match answered {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if failover::unavailable(&status) => {
                if failover::never_sent(&status) {
                    pool.mark_down(&backend);
                }
                last_failure = Some(status);
            }
            Err(status) => return Err(status.into()),
        }
    }
    Err(last_failure.map_or(
        EdgeError::NoBackend {
            service: pool.service(),
        },
        EdgeError::Backend,
    ))
}
