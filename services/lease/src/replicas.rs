//! The mvcc replicas, through which every lease command reaches the log and
//! from which the lease facts are read.

use cairn_kit::failover::{self, Failover};
use cairn_kit::settings::PeerSettings;
use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::mvcc_client::MvccClient;
use cairn_proto::cairn::mvcc::v1::{
    ApplyResponse, Command, LeaseRequest, LeaseResponse, LeasesRequest, LeasesResponse,
};
use tonic::codegen::InterceptedService;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use crate::error::LeaseError;

type Client = MvccClient<InterceptedService<Channel, TraceInterceptor>>;

/// Clients of every configured replica.
pub(crate) struct Replicas {
    nodes: Failover<Client>,
}

impl Replicas {
    pub(crate) fn new(peers: &PeerSettings) -> Result<Self, LeaseError> {
        let nodes = Failover::connect(peers, "mvcc", |channel| {
            MvccClient::with_interceptor(channel, TraceInterceptor)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX)
        })?;
        Ok(Self { nodes })
    }

    /// Proposes `op` through a replica and answers with its apply. Sent to
    /// another replica only if it never reached one: a failed one may commit.
    pub(crate) async fn apply(&self, op: Op) -> Result<ApplyResponse, LeaseError> {
        self.apply_fenced(op, 0).await
    }

    /// As `apply`, void (etcd's "leader changed") unless `fence_epoch` is
    /// the lease claim in force when it is applied.
    pub(crate) async fn apply_fenced(
        &self,
        op: Op,
        fence_epoch: u64,
    ) -> Result<ApplyResponse, LeaseError> {
        self.apply_fenced_for(op, fence_epoch, &MetadataMap::new())
            .await
    }

    /// As `apply_fenced`, on behalf of the client whose call carried
    /// `caller` (its token), whose permissions the replica checks.
    pub(crate) async fn apply_fenced_for(
        &self,
        op: Op,
        fence_epoch: u64,
        caller: &MetadataMap,
    ) -> Result<ApplyResponse, LeaseError> {
        let command = Command {
            op: Some(op),
            fence_epoch,
            ..Default::default()
        };
        Ok(self
            .nodes
            .call("apply", failover::never_sent, |mut client| {
                let mut request = tonic::Request::new(command.clone());
                cairn_proto::contract::metadata::copy_caller(caller, request.metadata_mut());
                async move { client.apply(request).await }
            })
            .await?)
    }

    /// Every lease and the claim in force.
    pub(crate) async fn leases(&self) -> Result<LeasesResponse, LeaseError> {
        Ok(self
            .nodes
            .call("leases", failover::unavailable, |mut client| async move {
                client.leases(LeasesRequest {}).await
            })
            .await?)
    }

    /// One lease and, if asked, its keys.
    pub(crate) async fn lease(&self, id: i64, keys: bool) -> Result<LeaseResponse, LeaseError> {
        Ok(self
            .nodes
            .call("lease", failover::unavailable, |mut client| async move {
                client.lease(LeaseRequest { id, keys }).await
            })
            .await?)
    }
}
