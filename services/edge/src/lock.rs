//! etcd's Lock service: a lock is held by the oldest candidate key under its
//! name (see `candidacy`), so waiters are served in the order they arrived.

use cairn_proto::etcdserverpb::RangeRequest;
use cairn_proto::v3lockpb::lock_server::Lock;
use cairn_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use crate::candidacy::{self, Cleanup, CleanupStep};
use crate::error::EdgeError;
use crate::local::Local;

/// Serves `v3lockpb.Lock` over the edge's own KV, Lease and Watch.
pub(crate) struct LockApi {
    local: Local,
}

impl LockApi {
    pub(crate) fn new(local: Local) -> Self {
        Self { local }
    }
}

#[tonic::async_trait]
impl Lock for LockApi {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let local = &self.local.as_caller(&request);
        let LockRequest { name, lease } = request.into_inner();
        let lease = candidacy::session_lease(local, lease).await?;
        let prefix = candidacy::prefix_of(&name);
        let key = candidacy::candidate_key(&prefix, lease);
        let entered = candidacy::enter(local, &prefix, &key, lease, b"").await?;
        if entered.oldest {
            return Ok(Response::new(LockResponse {
                header: entered.header,
                key,
            }));
        }
        // From here a caller that goes away, or a failed wait, takes its key
        // out of the queue.
        let cleanup = Cleanup::new(local, CleanupStep::Delete(key.clone()));
        candidacy::wait_deletes(local, &prefix, entered.rev - 1).await?;
        // The lease may have ended while waiting: then the key is gone and
        // the lock is not held.
        let own = local
            .kv()
            .range(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        cleanup.disarm();
        if own.kvs.is_empty() {
            return Err(EdgeError::SessionExpired.into());
        }
        Ok(Response::new(LockResponse {
            header: own.header,
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let local = self.local.as_caller(&request);
        let key = request.into_inner().key;
        let header = candidacy::delete(&local, &key).await?;
        Ok(Response::new(UnlockResponse { header }))
    }
}
