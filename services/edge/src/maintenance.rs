//! etcd's Maintenance service: raft facts from the log, key-value facts from
//! an mvcc replica.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairn::mvcc::v1 as mvcc;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, ResponseHeader, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::backends::{on_any_replica, require_root, Log};
use crate::pool::BackendPool;

/// How long the edge lets the log settle after a failed leadership hand-over
/// before it asks again.
const MOVE_LEADER_PAUSE: Duration = Duration::from_millis(200);

/// The etcd API version cairn answers as: what clients check features against.
pub(crate) const ETCD_VERSION: &str = "3.5.0";

/// The Maintenance service of one edge.
pub(crate) struct MaintenanceApi {
    log: Arc<Log>,
    mvcc: Arc<BackendPool>,
    cluster_id: u64,
}

impl MaintenanceApi {
    pub(crate) fn new(log: Arc<Log>, mvcc: Arc<BackendPool>, cluster_id: u64) -> Self {
        Self {
            log,
            mvcc,
            cluster_id,
        }
    }

    /// A header naming the log node that answered and its term.
    async fn header(&self, revision: i64) -> Result<Option<ResponseHeader>, Status> {
        let status = self.log.status().await?;
        Ok(Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: status.id,
            revision,
            raft_term: status.term,
        }))
    }

    async fn hash_at(&self, revision: i64) -> Result<mvcc::HashKvResponse, Status> {
        Ok(on_any_replica(&self.mvcc, |mut replica| async move {
            replica.hash_kv(mvcc::HashKvRequest { revision }).await
        })
        .await?)
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceApi {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        if request.get_ref().action != AlarmAction::Get as i32 {
            require_root(&self.mvcc, &request).await?;
        }
        let request = request.into_inner();
        let alarms = if request.action == AlarmAction::Get as i32 {
            on_any_replica(&self.mvcc, |mut replica| async move {
                replica.status(mvcc::StatusRequest {}).await
            })
            .await?
            .alarms
        } else {
            // Raised and disarmed through the log, so every replica agrees.
            let applied = on_any_replica(&self.mvcc, |mut replica| {
                let command = mvcc::Command {
                    op: Some(mvcc::command::Op::Alarm(request)),
                    ..Default::default()
                };
                async move { replica.apply(command).await }
            })
            .await?;
            match applied.result {
                Some(mvcc::apply_response::Result::Alarm(answer)) => answer.alarms,
                _ => return Err(Status::internal("an alarm's apply answered another kind")),
            }
        };
        Ok(Response::new(AlarmResponse {
            header: self.header(0).await?,
            alarms,
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let log = self.log.status().await?;
        let kv = on_any_replica(&self.mvcc, |mut replica| async move {
            replica.status(mvcc::StatusRequest {}).await
        })
        .await?;
        Ok(Response::new(StatusResponse {
            // The edge speaks for the whole cluster, whose writes the leader
            // commits: clients that compare member_id with leader (etcdctl's
            // IS LEADER) see the endpoint they called as the leader.
            header: Some(ResponseHeader {
                cluster_id: self.cluster_id,
                member_id: if log.leader == 0 { log.id } else { log.leader },
                revision: kv.current_revision,
                raft_term: log.term,
            }),
            version: ETCD_VERSION.to_owned(),
            db_size: kv.db_size,
            leader: log.leader,
            raft_index: log.commit_index,
            raft_term: log.term,
            raft_applied_index: kv.applied_index,
            // As etcd lists them: one entry per alarm raised.
            errors: kv
                .alarms
                .iter()
                .map(|alarm| {
                    let name = AlarmType::try_from(alarm.alarm)
                        .map_or("UNKNOWN", |kind| kind.as_str_name());
                    format!("memberID:{} alarm:{name} ", alarm.member_id)
                })
                .collect(),
            db_size_in_use: kv.db_size_in_use,
            is_learner: log.role == "learner",
        }))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        require_root(&self.mvcc, &request).await?;
        // Every replica holds its own files: defragment each one reachable.
        let mut defragmented = 0;
        let mut last_failure = None;
        for backend in self.mvcc.backends().iter() {
            let mut replica =
                cairn_proto::cairn::mvcc::v1::mvcc_client::MvccClient::new(backend.channel.clone());
            match replica.defragment(mvcc::DefragmentRequest {}).await {
                Ok(_) => defragmented += 1,
                Err(status) => {
                    last_failure = Some(cairn_kit::grpc::unavailable_if_broken(status, "cairn"))
                }
            }
        }
        if defragmented == 0 {
            return Err(last_failure
                .unwrap_or_else(|| Status::unavailable("cairn: no mvcc backend is reachable")));
        }
        // etcd answers a defragmentation with an empty response, no header;
        // clients (the etcd-client crate's tests among them) expect none.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        require_root(&self.mvcc, &request).await?;
        let hashed = self.hash_at(0).await?;
        Ok(Response::new(HashResponse {
            header: self.header(hashed.current_revision).await?,
            hash: hashed.hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        require_root(&self.mvcc, &request).await?;
        let hashed = self.hash_at(request.into_inner().revision).await?;
        Ok(Response::new(HashKvResponse {
            header: self.header(hashed.current_revision).await?,
            hash: hashed.hash,
            compact_revision: hashed.compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        require_root(&self.mvcc, &request).await?;
        let header = self.header(0).await?;
        let chunks = on_any_replica(&self.mvcc, |mut replica| async move {
            // etcd's format, so that etcdctl and etcd's restore read it.
            replica
                .snapshot(mvcc::SnapshotRequest {
                    format: mvcc::snapshot_request::Format::Etcd.into(),
                })
                .await
        })
        .await?;
        let mut header = header;
        let stream = chunks.map(move |chunk| {
            chunk
                .map_err(|status| cairn_kit::grpc::unavailable_if_broken(status, "cairn"))
                .map(|chunk| SnapshotResponse {
                    // etcd sends the header once, with the first chunk.
                    header: header.take(),
                    remaining_bytes: chunk.remaining_bytes,
                    blob: chunk.blob,
                })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        require_root(&self.mvcc, &request).await?;
        let target = request.into_inner().target_id;
        let deadline = tokio::time::Instant::now() + self.log.timeout();
        let mut status = self.log.status().await?;
        if !status
            .members
            .iter()
            .any(|member| member.id == target && member.voter)
        {
            return Err(EtcdError::BadLeaderTransferee.into());
        }
        // The log's leader carries the hand-over out; an attempt that ends
        // without it (the target lagged, an election went another way) is
        // tried again while time is left.
        while status.leader != target {
            if tokio::time::Instant::now() >= deadline {
                return Err(EtcdError::Timeout.into());
            }
            if let Err(refusal) = self.log.transfer_leadership(target).await {
                tracing::debug!(%refusal, "a leadership hand-over attempt failed");
                tokio::time::sleep(MOVE_LEADER_PAUSE).await;
            }
            status = self.log.status().await?;
        }
        Ok(Response::new(MoveLeaderResponse {
            header: self.header(0).await?,
        }))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "cairn: there is no older version to downgrade to",
        ))
    }
}
