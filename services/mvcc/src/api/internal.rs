//! cairn's Mvcc service: history for the watch gateways, HashKV, status,
//! defragment and snapshots for the edge, and the lease commands and lease
//! table for cairn-lease.

use std::pin::Pin;

use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::mvcc_server::Mvcc;
use cairn_proto::cairn::mvcc::v1::snapshot_request::Format;
use cairn_proto::cairn::mvcc::v1::Caller;
use cairn_proto::cairn::mvcc::v1::{
    ApplyResponse, Command, DefragmentRequest, DefragmentResponse, EventsRequest, EventsResponse,
    HashKvRequest, HashKvResponse, KvCall, LeaseRequest, LeaseResponse, LeasesRequest,
    LeasesResponse, SnapshotChunk, SnapshotRequest, StatusRequest, StatusResponse,
};
use cairn_proto::etcd_error::EtcdError;
use futures::Stream;
use prost::Message;
use tonic::{Request, Response, Status};

use super::{answer, MvccApi};
use crate::auth::rules;
use crate::error::MvccError;
use crate::tree_index::KeyRange;
use crate::validate;

/// Revisions per message of an Events stream.
const EVENTS_CHUNK: usize = 256;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The op of a command sent to Mvcc/Apply, if it is one cairn-lease may
/// propose: anything else would let a lease service write keys.
fn lease_op(command: Command) -> Result<Op, MvccError> {
    match command.op {
        Some(Op::LeaseGrant(grant)) if grant.id <= 0 => Err(MvccError::InvalidArgument(
            "a lease grant through Apply needs its ID set (> 0)".into(),
        )),
        Some(
            op @ (Op::LeaseGrant(_)
            | Op::LeaseRevoke(_)
            | Op::LeaseClaim(_)
            | Op::LeaseExpire(_)
            | Op::LeaseCheckpoint(_)
            | Op::Alarm(_)),
        ) => Ok(op),
        Some(_) => Err(MvccError::InvalidArgument(
            "Apply takes only lease commands (grant, revoke, claim, expire, checkpoint) and alarms"
                .into(),
        )),
        None => Err(MvccError::InvalidArgument("the command has no op".into())),
    }
}

/// Runs `work` on a blocking thread: what reads many rows off disk must
/// not hold an async worker.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MvccError> + Send + 'static,
) -> Result<T, MvccError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| MvccError::Stopped)?
}

impl MvccApi {
    /// Every event of a key range from a revision on, up to the revision
    /// current when the call began, in chunks.
    fn history(&self, request: EventsRequest) -> Result<BoxStream<EventsResponse>, MvccError> {
        self.replica.check_serving()?;
        let key = if request.key.is_empty() {
            vec![0]
        } else {
            request.key
        };
        let key_range = KeyRange::new(&key, &request.range_end);
        let store = self.replica.store.clone();
        let status = store.status();
        let until = status.current;
        let compacted = status.compacted;
        let mut from = request.start_revision.max(1);
        if from < compacted {
            return Err(MvccError::Compacted {
                compact_revision: compacted,
            });
        }
        let prev_kv = request.prev_kv;
        let stream = async_stream::try_stream! {
            loop {
                let chunk = {
                    let store = store.clone();
                    let key_range = key_range.clone();
                    blocking(move || store.events(&key_range, from, prev_kv, EVENTS_CHUNK))
                        .await
                        .map_err(Status::from)?
                };
                let revisions: Vec<_> = chunk.into_iter().filter(|events| events.revision <= until).collect();
                let done = revisions.len() < EVENTS_CHUNK;
                if let Some(last) = revisions.last() {
                    from = last.revision + 1;
                }
                yield EventsResponse { revisions, current_revision: until, compact_revision: compacted };
                if done {
                    break;
                }
            }
        };
        Ok(Box::pin(stream))
    }

    async fn hash(&self, revision: i64) -> Result<HashKvResponse, MvccError> {
        let store = self.replica.store.clone();
        let (hash, hash_revision, compact_revision) =
            blocking(move || store.hash_kv(revision)).await?;
        let status = self.replica.store.status();
        Ok(HashKvResponse {
            hash,
            compact_revision,
            hash_revision,
            current_revision: status.current,
            applied_index: status.applied.index,
        })
    }

    fn store_status(&self) -> StatusResponse {
        let status = self.replica.store.status();
        let (db_size, db_size_in_use) = self.replica.store.db_size();
        StatusResponse {
            current_revision: status.current,
            compact_revision: status.compacted,
            applied_index: status.applied.index,
            applied_term: status.applied.term,
            db_size,
            db_size_in_use,
            alarms: self.replica.store.alarms(),
            publisher: self.replica.store.publisher().holder,
        }
    }

    /// A lease command from cairn-lease; a client's revoke (`caller` is
    /// the client's identity) needs WRITE on every key of the lease.
    async fn lease_command(
        &self,
        command: Command,
        caller: &Caller,
    ) -> Result<ApplyResponse, MvccError> {
        validate::check_size(command.encoded_len(), &self.limits)?;
        let fence_epoch = command.fence_epoch;
        let op = lease_op(command)?;
        let checked = match &op {
            Op::LeaseRevoke(revoke) => {
                let keys = self
                    .replica
                    .store
                    .lease_view(revoke.id, true)
                    .map(|view| view.keys)
                    .unwrap_or_default();
                Some(self.checked(caller, &rules::write_needs(keys))?)
            }
            _ => None,
        };
        let applied = self.write_fenced_checked(op, fence_epoch, checked).await?;
        self.apply_response(applied)
    }

    async fn lease_table(&self) -> Result<LeasesResponse, MvccError> {
        self.linearize().await?;
        let table = self.replica.store.lease_table();
        Ok(LeasesResponse {
            leases: table.leases,
            holder: Some(table.holder),
            revision: table.revision,
            applied_index: table.applied.index,
            raft_term: table.applied.term,
        })
    }

    async fn one_lease(&self, request: LeaseRequest) -> Result<LeaseResponse, MvccError> {
        self.linearize().await?;
        let view = self
            .replica
            .store
            .lease_view(request.id, request.keys)
            .ok_or(MvccError::Etcd(EtcdError::LeaseNotFound))?;
        Ok(LeaseResponse {
            lease: Some(view.record),
            keys: view.keys,
            revision: view.revision,
            raft_term: self.replica.applied().term,
        })
    }
}

#[tonic::async_trait]
impl Mvcc for MvccApi {
    type CallsStream = super::calls::AnswerStream;

    async fn calls(
        &self,
        request: Request<tonic::Streaming<KvCall>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        self.replica.check_serving()?;
        Ok(Response::new(self.serve_calls(request.into_inner())))
    }

    type EventsStream = BoxStream<EventsResponse>;

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        self.history(request.into_inner())
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        answer(self, "HashKv", self.hash(request.into_inner().revision)).await
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        answer(self, "Status", async { Ok(self.store_status()) }).await
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let store = self.replica.store.clone();
        let defragmented = blocking(move || store.defragment().map(|()| store.db_size().0));
        answer(self, "Defragment", async {
            Ok(DefragmentResponse {
                db_size: defragmented.await?,
            })
        })
        .await
    }

    async fn apply(&self, request: Request<Command>) -> Result<Response<ApplyResponse>, Status> {
        let caller = super::auth::caller_of(&request);
        answer(
            self,
            "Apply",
            self.lease_command(request.into_inner(), &caller),
        )
        .await
    }

    async fn leases(&self, _: Request<LeasesRequest>) -> Result<Response<LeasesResponse>, Status> {
        answer(self, "Leases", self.lease_table()).await
    }

    async fn lease(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        answer(self, "Lease", self.one_lease(request.into_inner())).await
    }

    async fn authorize(
        &self,
        request: Request<cairn_proto::cairn::mvcc::v1::AuthorizeRequest>,
    ) -> Result<Response<cairn_proto::cairn::mvcc::v1::AuthorizeResponse>, Status> {
        answer(self, "Authorize", async {
            self.authorize_of(request.into_inner())
        })
        .await
    }

    async fn restore(
        &self,
        request: Request<tonic::Streaming<cairn_proto::cairn::mvcc::v1::RestoreChunk>>,
    ) -> Result<Response<cairn_proto::cairn::mvcc::v1::RestoreResponse>, Status> {
        answer(
            self,
            "Restore",
            crate::restore::receive(self, request.into_inner()),
        )
        .await
    }

    type SnapshotStream = BoxStream<SnapshotChunk>;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.replica.check_serving()?;
        // An unknown format is refused rather than read as the default: a
        // caller asking for a newer format must not get a file it misreads.
        let asked = request.into_inner().format;
        let format = Format::try_from(asked).map_err(|_| {
            Status::invalid_argument(format!("snapshot format {asked} is not known"))
        })?;
        Ok(Response::new(Box::pin(crate::snapshot::stream(
            self.replica.store.clone(),
            format,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::cairn::mvcc::v1::{LeaseCheckpoint, LeaseClaim, LeaseExpire};
    use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, PutRequest};
    use tonic::Code;

    use super::*;

    fn command(op: Op) -> Command {
        Command {
            origin: 9,
            sequence: 9,
            op: Some(op),
            ..Default::default()
        }
    }

    fn refused(command: Command) -> Code {
        match lease_op(command) {
            Ok(op) => panic!("{op:?} was let through"),
            Err(error) => Status::from(error).code(),
        }
    }

    #[test]
    fn apply_takes_only_lease_commands() {
        let allowed = [
            Op::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 1 }),
            Op::LeaseRevoke(LeaseRevokeRequest { id: 1 }),
            Op::LeaseClaim(LeaseClaim::default()),
            Op::LeaseExpire(LeaseExpire::default()),
            Op::LeaseCheckpoint(LeaseCheckpoint::default()),
        ];
        for op in allowed {
            assert_eq!(lease_op(command(op.clone())).ok(), Some(op));
        }
        let put = Op::Put(PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        });
        assert_eq!(refused(command(put)), Code::InvalidArgument);
        let unset_id = Op::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 0 });
        assert_eq!(refused(command(unset_id)), Code::InvalidArgument);
        assert_eq!(refused(Command::default()), Code::InvalidArgument);
    }
}
