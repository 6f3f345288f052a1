//! The replica's gRPC face: etcd's KV service (`kv`), and cairn's Mvcc
//! service (`internal`) for the watch gateways (history), the edge (HashKV,
//! status, snapshots, and KV calls as messages on shared streams: `calls`) and cairn-lease (lease commands through the log, and
//! the lease table to resume from). Both go through `protocol`: how a write
//! reaches the log and comes back applied, and how a read is made
//! linearizable.

mod auth;
mod calls;
mod internal;
mod kv;
mod protocol;

use std::sync::Arc;
use std::time::Instant;

use cairn_proto::etcdserverpb::ResponseHeader;
use tonic::{Response, Status};

use crate::error::MvccError;
use crate::metrics::MVCC_METRICS;
use crate::proposals::Proposals;
use crate::read_point::ReadPoints;
use crate::replica::Replica;
use crate::validate::Limits;

/// The etcd KV service and the Mvcc service, over one replica.
#[derive(Clone)]
pub(crate) struct MvccApi {
    replica: Arc<Replica>,
    proposals: Arc<Proposals>,
    read_points: Arc<ReadPoints>,
    limits: Limits,
    cluster_id: u64,
    member_id: u64,
    auth: Arc<auth::AuthSupport>,
    /// Linearizable reads answered without a read index (a deliberately
    /// broken replica, see `TestingSettings`).
    skip_read_index: bool,
}

impl MvccApi {
    pub(crate) fn new(replica: Arc<Replica>, limits: Limits, cluster_id: u64) -> Self {
        let member_id = cairn_proto::contract::member_id(&replica.name);
        Self {
            proposals: Arc::new(Proposals::new(replica.clone())),
            read_points: Arc::new(ReadPoints::new(replica.clone())),
            replica,
            limits,
            cluster_id,
            member_id,
            auth: auth::AuthSupport::new(&crate::settings::AuthSettings::default()),
            skip_read_index: false,
        }
    }

    /// Serves auth with these token and password settings.
    pub(crate) fn with_auth(mut self, settings: &crate::settings::AuthSettings) -> Self {
        self.auth = auth::AuthSupport::new(settings);
        self
    }

    /// Proposes `op` (a restore) and waits for this replica's apply of it.
    pub(crate) async fn propose(
        &self,
        op: cairn_proto::cairn::mvcc::v1::command::Op,
    ) -> Result<crate::store::Reply, MvccError> {
        self.write(op).await
    }

    /// Answers linearizable reads from whatever has been applied, without a
    /// read index: only for showing that the history checker catches it.
    pub(crate) fn skipping_read_index(mut self, skip: bool) -> Self {
        self.skip_read_index = skip;
        self
    }

    /// etcd's `member_id` for this replica.
    pub(crate) fn member_id(&self) -> u64 {
        self.member_id
    }

    /// The replica behind the API.
    pub(crate) fn replica(&self) -> &Replica {
        &self.replica
    }

    /// A shared handle on the replica, for tasks that outlive a call.
    pub(crate) fn replica_handle(&self) -> Arc<Replica> {
        self.replica.clone()
    }

    /// Proposes a command of the replica's own (an alarm) and waits for it.
    pub(crate) async fn raise(
        &self,
        op: cairn_proto::cairn::mvcc::v1::command::Op,
    ) -> Result<(), MvccError> {
        self.write(op).await.map(|_| ())
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.replica.applied().term,
        })
    }
}

/// Runs `handle` unless the replica stopped applying, records its latency
/// by method and outcome, and maps the error at the boundary.
async fn answer<T>(
    api: &MvccApi,
    method: &str,
    handle: impl std::future::Future<Output = Result<T, MvccError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = match api.replica.check_serving() {
        Ok(()) => handle.await,
        Err(refused) => Err(refused),
    };
    let result = result.map_err(Status::from);
    let label = match &result {
        Ok(_) => "ok".to_owned(),
        Err(status) => format!("{:?}", status.code()),
    };
    MVCC_METRICS
        .requests
        .with_label_values(&[method, &label])
        .observe(started.elapsed().as_secs_f64());
    result.map(Response::new)
}
