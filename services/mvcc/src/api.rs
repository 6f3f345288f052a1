//! The replica's gRPC face: etcd's KV service, and cairn's Mvcc service for
//! the watch gateways (history), the edge (HashKV) and cairn-lease (lease
//! commands through the log, and the lease table to resume from).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use cairn_proto::cairn::mvcc::v1::apply_response::Result as ApplyResult;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::mvcc_server::Mvcc;
use cairn_proto::cairn::mvcc::v1::{
    ApplyResponse, Command, DefragmentRequest, DefragmentResponse, EventsRequest, EventsResponse,
    HashKvRequest, HashKvResponse, LeaseRequest, LeaseResponse, LeasesRequest, LeasesResponse,
    SnapshotChunk, SnapshotRequest, StatusRequest, StatusResponse,
};
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    TxnRequest, TxnResponse,
};
use futures::Stream;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::error::MvccError;
use crate::metrics::MVCC_METRICS;
use crate::proposals::Proposals;
use crate::read_point::ReadPoints;
use crate::replica::Replica;
use crate::snapshot::{self, Checkpoint};
use crate::store::Response as Applied;
use crate::tree_index::KeyRange;
use crate::validate::{self, Limits};

/// Revisions per message of an Events stream.
const EVENTS_CHUNK: usize = 256;

/// The etcd KV service and the Mvcc service, over one replica.
#[derive(Clone)]
pub struct MvccApi {
    replica: Arc<Replica>,
    proposals: Arc<Proposals>,
    read_points: Arc<ReadPoints>,
    limits: Limits,
    cluster_id: u64,
    member_id: u64,
}

impl MvccApi {
    pub fn new(replica: Arc<Replica>, limits: Limits, cluster_id: u64) -> Self {
        let member_id = member_id(&replica.name);
        Self {
            proposals: Proposals::new(replica.clone()),
            read_points: ReadPoints::new(replica.clone()),
            replica,
            limits,
            cluster_id,
            member_id,
        }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.replica.applied().term,
        })
    }

    /// Waits until this replica has applied everything acknowledged before
    /// the call: the read-index path.
    async fn linearize(&self) -> Result<(), MvccError> {
        let read_point = self.read_points.read_point().await?;
        tokio::time::timeout(
            self.replica.log.timeout(),
            self.replica.wait_applied(read_point),
        )
        .await
        .map_err(|_| MvccError::Etcd(EtcdError::Timeout))?
    }

    /// Proposes `op` and waits for this replica's apply of it.
    async fn write(&self, op: Op) -> Result<Applied, MvccError> {
        self.write_fenced(op, 0).await
    }

    /// Proposes `op`, void unless `fence_epoch` (when not 0) is the lease
    /// claim in force, and waits for this replica's apply of it.
    async fn write_fenced(&self, op: Op, fence_epoch: u64) -> Result<Applied, MvccError> {
        let (sequence, result) = self.replica.register();
        let mut trace_context = std::collections::HashMap::new();
        cairn_kit::telemetry::inject_into(&mut trace_context);
        let command = Command {
            origin: self.replica.origin,
            sequence,
            op: Some(op),
            trace_context,
            fence_epoch,
        }
        .encode_to_vec();
        if let Err(error) = self.proposals.propose(command).await {
            self.replica.forget(sequence);
            return Err(error);
        }
        match tokio::time::timeout(self.replica.log.timeout(), result).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(MvccError::Stopped),
            Err(_) => {
                self.replica.forget(sequence);
                Err(MvccError::Etcd(EtcdError::Timeout))
            }
        }
    }

    /// Sets the gauges that are read off the store rather than counted, and
    /// returns the store's size on disk.
    pub fn observe(&self, published: bool) -> i64 {
        let (size, _) = self.replica.store.db_size();
        MVCC_METRICS.db_bytes.set(size);
        if published {
            let lag = MVCC_METRICS.current_revision.get() - MVCC_METRICS.published_revision.get();
            MVCC_METRICS.publish_lag.set(lag.max(0));
        }
        size
    }

    /// Raises NOSPACE for this replica once its store (`size` bytes) is past
    /// `quota` bytes, as etcd does when a member exceeds --quota-backend-bytes.
    pub async fn enforce_quota(&self, quota: u64, size: i64) -> Result<(), MvccError> {
        if quota == 0 || u64::try_from(size).unwrap_or(0) <= quota {
            return Ok(());
        }
        let raised = self.replica.store.alarms().iter().any(|alarm| {
            alarm.member_id == self.member_id && alarm.alarm == AlarmType::Nospace as i32
        });
        if raised {
            return Ok(());
        }
        tracing::warn!(size, quota, "the store is past its quota; raising NOSPACE");
        self.write(Op::Alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.member_id,
            alarm: AlarmType::Nospace as i32,
        }))
        .await
        .map(|_| ())
    }

    /// A lease command's apply as Mvcc/Apply answers it, headers filled as
    /// the KV service fills them.
    fn apply_response(&self, applied: Applied) -> Result<ApplyResponse, MvccError> {
        let (revision, result) = match applied {
            Applied::LeaseGrant(mut response) => {
                let revision = revision_of(&response.header);
                response.header = self.header(revision);
                (revision, ApplyResult::LeaseGrant(response))
            }
            Applied::LeaseRevoke(mut response) => {
                let revision = revision_of(&response.header);
                response.header = self.header(revision);
                (revision, ApplyResult::LeaseRevoke(response))
            }
            Applied::Fenced(fenced) => (fenced.revision, ApplyResult::Fenced(fenced.result)),
            Applied::Alarm(mut response) => {
                let revision = revision_of(&response.header);
                response.header = self.header(revision);
                (revision, ApplyResult::Alarm(response))
            }
            _ => return Err(unexpected("lease command")),
        };
        Ok(ApplyResponse {
            revision,
            result: Some(result),
        })
    }
}

/// etcd's member_id for this replica: a stable hash of its name.
fn member_id(name: &str) -> u64 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(name.as_bytes());
    let low = u64::from(hasher.finalize());
    (low << 32) | (name.len() as u64 & 0xffff_ffff) | 1
}

/// Records the request's latency and maps the error.
fn finish<T>(
    method: &str,
    started: Instant,
    result: Result<T, MvccError>,
) -> Result<Response<T>, Status> {
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

fn unexpected(what: &str) -> MvccError {
    MvccError::Corrupt(format!("the apply of a {what} answered with another kind"))
}

#[tonic::async_trait]
impl Kv for MvccApi {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            validate::check_range(&request)?;
            if !request.serializable {
                self.linearize().await?;
            }
            let mut response = self.replica.store.range(&request)?;
            let revision = response.header.as_ref().map_or(0, |header| header.revision);
            response.header = self.header(revision);
            Ok(response)
        }
        .await;
        finish("Range", started, result)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            validate::check_size(request.encoded_len(), &self.limits)?;
            validate::check_put(&request)?;
            match self.write(Op::Put(request)).await? {
                Applied::Put(mut response) => {
                    response.header = self.header(revision_of(&response.header));
                    Ok(response)
                }
                _ => Err(unexpected("put")),
            }
        }
        .await;
        finish("Put", started, result)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            validate::check_size(request.encoded_len(), &self.limits)?;
            validate::check_delete_range(&request)?;
            match self.write(Op::DeleteRange(request)).await? {
                Applied::DeleteRange(mut response) => {
                    response.header = self.header(revision_of(&response.header));
                    Ok(response)
                }
                _ => Err(unexpected("delete")),
            }
        }
        .await;
        finish("DeleteRange", started, result)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            validate::check_size(request.encoded_len(), &self.limits)?;
            validate::check_txn(&request, &self.limits)?;
            match self.write(Op::Txn(request)).await? {
                Applied::Txn(mut response) => {
                    let revision = revision_of(&response.header);
                    response.header = self.header(revision);
                    fill_headers(&mut response, revision);
                    Ok(response)
                }
                _ => Err(unexpected("txn")),
            }
        }
        .await;
        finish("Txn", started, result)
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            // Refuse what cannot succeed without spending a log entry on it.
            let status = self.replica.store.status();
            if request.revision <= status.compacted {
                return Err(MvccError::Compacted {
                    compact_revision: status.compacted,
                });
            }
            match self.write(Op::Compaction(request)).await? {
                Applied::Compaction(mut response) => {
                    response.header = self.header(revision_of(&response.header));
                    Ok(response)
                }
                _ => Err(unexpected("compaction")),
            }
        }
        .await;
        finish("Compact", started, result)
    }
}

fn revision_of(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |header| header.revision)
}

/// etcd gives every response inside a txn a header with the revision alone;
/// only the txn's own header names the cluster, member and term.
fn fill_headers(response: &mut TxnResponse, revision: i64) {
    use cairn_proto::etcdserverpb::response_op::Response as Inner;
    let header = Some(ResponseHeader {
        revision,
        ..Default::default()
    });
    let header = &header;
    for op in &mut response.responses {
        match &mut op.response {
            Some(Inner::ResponseRange(inner)) => inner.header = *header,
            Some(Inner::ResponsePut(inner)) => inner.header = *header,
            Some(Inner::ResponseDeleteRange(inner)) => inner.header = *header,
            Some(Inner::ResponseTxn(inner)) => {
                inner.header = *header;
                fill_headers(inner, revision);
            }
            None => {}
        }
    }
}

type EventsStream = Pin<Box<dyn Stream<Item = Result<EventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Mvcc for MvccApi {
    type EventsStream = EventsStream;

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let request = request.into_inner();
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
            }
            .into());
        }
        let prev_kv = request.prev_kv;
        let stream = async_stream::try_stream! {
            loop {
                let chunk = {
                    let store = store.clone();
                    let key_range = key_range.clone();
                    tokio::task::spawn_blocking(move || store.events(&key_range, from, prev_kv, EVENTS_CHUNK))
                        .await
                        .map_err(|_| Status::from(MvccError::Stopped))?
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
        Ok(Response::new(Box::pin(stream)))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        let store = self.replica.store.clone();
        let (hash, hash_revision, compact_revision) =
            tokio::task::spawn_blocking(move || store.hash_kv(revision))
                .await
                .map_err(|_| Status::from(MvccError::Stopped))??;
        let status = self.replica.store.status();
        Ok(Response::new(HashKvResponse {
            hash,
            compact_revision,
            hash_revision,
            current_revision: status.current,
            applied_index: status.applied.index,
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let status = self.replica.store.status();
        let (db_size, db_size_in_use) = self.replica.store.db_size();
        Ok(Response::new(StatusResponse {
            current_revision: status.current,
            compact_revision: status.compacted,
            applied_index: status.applied.index,
            applied_term: status.applied.term,
            db_size,
            db_size_in_use,
            alarms: self.replica.store.alarms(),
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let store = self.replica.store.clone();
        let db_size =
            tokio::task::spawn_blocking(move || store.defragment().map(|()| store.db_size().0))
                .await
                .map_err(|_| Status::from(MvccError::Stopped))??;
        Ok(Response::new(DefragmentResponse { db_size }))
    }

    async fn apply(&self, request: Request<Command>) -> Result<Response<ApplyResponse>, Status> {
        let started = Instant::now();
        let command = request.into_inner();
        let result = async {
            validate::check_size(command.encoded_len(), &self.limits)?;
            let fence_epoch = command.fence_epoch;
            let op = lease_op(command)?;
            let applied = self.write_fenced(op, fence_epoch).await?;
            self.apply_response(applied)
        }
        .await;
        finish("Apply", started, result)
    }

    async fn leases(&self, _: Request<LeasesRequest>) -> Result<Response<LeasesResponse>, Status> {
        let started = Instant::now();
        let result = async {
            self.linearize().await?;
            let table = self.replica.store.lease_table();
            Ok(LeasesResponse {
                leases: table.leases,
                holder: Some(table.holder),
                revision: table.revision,
                applied_index: table.applied.index,
            })
        }
        .await;
        finish("Leases", started, result)
    }

    async fn lease(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
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
            })
        }
        .await;
        finish("Lease", started, result)
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let store = self.replica.store.clone();
        let (chunks, received) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let name = store.dir().file_name().map_or_else(
                || "store".into(),
                |name| name.to_string_lossy().into_owned(),
            );
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos())
                .unwrap_or_default();
            // Beside the store, on its filesystem, so the checkpoint is hard links.
            let dir = store
                .dir()
                .with_file_name(format!("{name}.snapshot-{nanos}"));
            let sent = Checkpoint::take(&store, dir).and_then(|checkpoint| {
                let mut sender = ChunkSender::new(chunks.clone(), checkpoint.total_bytes());
                checkpoint.write_to(&mut sender)?;
                sender.finish()
            });
            if let Err(error) = sent {
                let _ = chunks.blocking_send(Err(Status::from(error)));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(received),
        )))
    }
}

/// Cuts the snapshot stream into chunks and sends them as they fill; a
/// receiver that went away ends the copy.
struct ChunkSender {
    chunks: tokio::sync::mpsc::Sender<Result<SnapshotChunk, Status>>,
    buffer: Vec<u8>,
    remaining: u64,
}

impl ChunkSender {
    fn new(chunks: tokio::sync::mpsc::Sender<Result<SnapshotChunk, Status>>, total: u64) -> Self {
        Self {
            chunks,
            buffer: Vec::with_capacity(snapshot::CHUNK),
            remaining: total,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let blob = std::mem::replace(&mut self.buffer, Vec::with_capacity(snapshot::CHUNK));
        self.remaining = self.remaining.saturating_sub(blob.len() as u64);
        self.chunks
            .blocking_send(Ok(SnapshotChunk {
                blob,
                remaining_bytes: self.remaining,
            }))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    fn finish(mut self) -> Result<(), MvccError> {
        if !self.buffer.is_empty() {
            self.send()
                .map_err(|error| MvccError::Snapshot(error.to_string()))?;
        }
        Ok(())
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = snapshot::CHUNK - self.buffer.len();
        let taken = room.min(bytes.len());
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == snapshot::CHUNK {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::cairn::mvcc::v1::{LeaseCheckpoint, LeaseClaim, LeaseExpire};
    use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
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
