//! One store per test in a temporary directory, fed whole log entries, so
//! every test goes through the real apply code and RocksDB, not a model.

use cairn_mvcc::store::{Applied, FencedResponse, LogEntry, Reply, Store};
use cairn_mvcc::validate::{self, Limits};
use cairn_mvcc::MvccError;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{
    Command, LeaseCheckpoint, LeaseClaim, LeaseExpire, LeaseHolder, LeaseRecord, LeaseRemaining,
    RevisionEvents,
};
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, KeyValue};
use prost::Message;

/// A store in a temporary directory, fed one log entry per call.
pub(crate) struct Kv {
    dir: tempfile::TempDir,
    /// The store under test, for what the helpers do not wrap.
    pub(crate) store: Store,
    index: u64,
}

impl Kv {
    /// Opens an empty store in a fresh temporary directory.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path()).expect("the store opens");
        Self {
            dir,
            store,
            index: 0,
        }
    }

    /// Closes the store and opens it again from the same directory.
    pub(crate) fn reopen(self) -> Self {
        let Self { dir, store, index } = self;
        drop(store);
        let store = Store::open(dir.path()).expect("the store reopens");
        Self { dir, store, index }
    }

    /// The next log entry, holding `ops` as its commands, without applying it.
    pub(crate) fn entry(&mut self, ops: Vec<Op>) -> LogEntry {
        self.index += 1;
        LogEntry {
            index: self.index,
            term: 1,
            commands: ops
                .into_iter()
                .enumerate()
                .map(|(sequence, op)| {
                    Command {
                        origin: 1,
                        sequence: sequence as u64,
                        op: Some(op),
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into()
                })
                .collect(),
        }
    }

    /// Applies `ops` as one log entry.
    pub(crate) fn apply(&mut self, ops: Vec<Op>) -> Applied {
        let entry = self.entry(ops);
        self.store.apply(&[entry]).expect("the entry applies")
    }

    /// Applies one command: its result and the revisions it made.
    pub(crate) fn run(&mut self, op: Op) -> (Result<Reply, MvccError>, Vec<RevisionEvents>) {
        let applied = self.apply(vec![op]);
        let outcome = applied
            .outcomes
            .into_iter()
            .next()
            .expect("one outcome per command");
        (outcome.result, applied.revisions)
    }

    /// Applies a put: its response, or why it was refused.
    pub(crate) fn try_put(&mut self, request: PutRequest) -> Result<PutResponse, MvccError> {
        match self.run(Op::Put(request)).0? {
            Reply::Put(response) => Ok(response),
            other => panic!("a put answered {other:?}"),
        }
    }

    /// Puts `key` = `value`, which must apply.
    pub(crate) fn put(&mut self, key: &str, value: &str) -> PutResponse {
        self.try_put(put(key, value)).expect("the put applies")
    }

    /// Deletes `[key, range_end)` asking for the previous values; it must apply.
    pub(crate) fn delete(&mut self, key: &str, range_end: &str) -> DeleteRangeResponse {
        let request = DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: true,
        };
        match self.run(Op::DeleteRange(request)).0 {
            Ok(Reply::DeleteRange(response)) => response,
            other => panic!("a delete answered {other:?}"),
        }
    }

    /// Applies a txn `check_txn` accepts: its response, or why it was refused.
    pub(crate) fn try_txn(&mut self, request: TxnRequest) -> Result<TxnResponse, MvccError> {
        assert_eq!(
            validate::check_txn(&request, &Limits::default()),
            Ok(()),
            "only txns etcd accepts reach the log"
        );
        match self.run(Op::Txn(request)).0? {
            Reply::Txn(response) => Ok(response),
            other => panic!("a txn answered {other:?}"),
        }
    }

    /// Applies a txn, which must apply.
    pub(crate) fn txn(&mut self, request: TxnRequest) -> TxnResponse {
        self.try_txn(request).expect("the txn applies")
    }

    /// Compacts at `revision`: the header revision, or why it was refused.
    pub(crate) fn compact(&mut self, revision: i64) -> Result<i64, MvccError> {
        let request = CompactionRequest {
            revision,
            physical: false,
        };
        match self.run(Op::Compaction(request)).0? {
            Reply::Compaction(response) => Ok(revision_of(response.header.as_ref())),
            other => panic!("a compaction answered {other:?}"),
        }
    }

    /// Grants lease `id` with a 60 s TTL.
    pub(crate) fn grant(&mut self, id: i64) {
        let (result, _) = self.run(Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id }));
        result.expect("the lease is granted");
    }

    /// Revokes lease `id`: the header revision and the revisions it made.
    pub(crate) fn revoke(&mut self, id: i64) -> (Result<i64, MvccError>, Vec<RevisionEvents>) {
        let (result, revisions) = self.run(Op::LeaseRevoke(LeaseRevokeRequest { id }));
        let result = result.map(|response| match response {
            Reply::LeaseRevoke(response) => revision_of(response.header.as_ref()),
            other => panic!("a revoke answered {other:?}"),
        });
        (result, revisions)
    }

    /// Applies a fenced lease command: its answer and the revisions it made.
    pub(crate) fn fenced(&mut self, op: Op) -> (FencedResponse, Vec<RevisionEvents>) {
        let (result, revisions) = self.run(op);
        match result {
            Ok(Reply::Fenced(response)) => (response, revisions),
            other => panic!("a fenced command answered {other:?}"),
        }
    }

    /// Applies a lease claim of `holder` at `epoch`.
    pub(crate) fn claim(&mut self, holder: &str, epoch: u64) -> FencedResponse {
        self.fenced(claim(holder, epoch)).0
    }

    /// Expires the leases `ids` under `epoch`.
    pub(crate) fn expire(
        &mut self,
        epoch: u64,
        ids: &[i64],
    ) -> (FencedResponse, Vec<RevisionEvents>) {
        self.fenced(Op::LeaseExpire(LeaseExpire {
            epoch,
            ids: ids.to_vec(),
        }))
    }

    /// Checkpoints `(id, remaining_ms)` pairs under `epoch`.
    pub(crate) fn checkpoint(&mut self, epoch: u64, remaining: &[(i64, i64)]) -> FencedResponse {
        let leases = remaining
            .iter()
            .map(|&(id, remaining_ms)| LeaseRemaining { id, remaining_ms })
            .collect();
        self.fenced(Op::LeaseCheckpoint(LeaseCheckpoint { epoch, leases }))
            .0
    }

    /// A lease's record as stored, if it exists.
    pub(crate) fn lease_record(&self, id: i64) -> Option<LeaseRecord> {
        self.store.lease(id).map(|(record, _)| record)
    }

    /// The store's HashKV over every revision.
    pub(crate) fn hash(&self) -> u32 {
        self.store.hash_kv(0).expect("the store hashes").0
    }

    /// Reads a range at the current state.
    pub(crate) fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.store.range_now(request)
    }

    /// Reads a range, which must succeed.
    pub(crate) fn read(&self, request: &RangeRequest) -> RangeResponse {
        self.range(request).expect("the range reads")
    }

    /// The key as it is now.
    pub(crate) fn get(&self, key: &str) -> Option<KeyValue> {
        self.read(&range(key, "")).kvs.into_iter().next()
    }

    /// The keys of a range at a revision (0: the latest).
    pub(crate) fn keys(&self, key: &str, range_end: &str, revision: i64) -> Vec<String> {
        let request = RangeRequest {
            revision,
            ..range(key, range_end)
        };
        names(&self.read(&request).kvs)
    }

    /// The current revision.
    pub(crate) fn current(&self) -> i64 {
        self.store.status().current
    }
}

/// A response header's revision.
pub(crate) fn revision_of(header: Option<&cairn_proto::etcdserverpb::ResponseHeader>) -> i64 {
    header.expect("a response header").revision
}

/// A lease claim command.
pub(crate) fn claim(holder: &str, epoch: u64) -> Op {
    Op::LeaseClaim(LeaseClaim {
        holder: holder.into(),
        epoch,
    })
}

/// The lease holder record expected after a claim and a checkpoint.
pub(crate) fn holder(
    holder: &str,
    epoch: u64,
    claim_index: u64,
    checkpoint_index: u64,
) -> LeaseHolder {
    LeaseHolder {
        holder: holder.into(),
        epoch,
        claim_index,
        checkpoint_index,
    }
}

/// The keys a revision deleted, in event order.
pub(crate) fn deleted_keys(revision: &RevisionEvents) -> Vec<String> {
    revision
        .events
        .iter()
        .map(|event| {
            assert_eq!(event.r#type, EventType::Delete as i32);
            let kv = event.kv.as_ref().expect("kv");
            assert_eq!(kv.mod_revision, revision.revision);
            String::from_utf8_lossy(&kv.key).into_owned()
        })
        .collect()
}

/// The keys of `kvs`, as text.
pub(crate) fn names(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// The etcd error a refused request answered.
pub(crate) fn etcd_error<T: std::fmt::Debug>(result: Result<T, MvccError>) -> EtcdError {
    result
        .expect_err("the request is refused")
        .etcd()
        .expect("an etcd error")
}

/// A plain put request.
pub(crate) fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

/// A range request over `[key, range_end)`.
pub(crate) fn range(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        ..Default::default()
    }
}

/// A range over every key.
pub(crate) fn everything() -> RangeRequest {
    range("\0", "\0")
}

/// A txn op.
pub(crate) fn op(request: Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

/// A put as a txn op.
pub(crate) fn op_put(key: &str, value: &str) -> RequestOp {
    op(Request::RequestPut(put(key, value)))
}

/// A range as a txn op.
pub(crate) fn op_range(key: &str, range_end: &str) -> RequestOp {
    op(Request::RequestRange(range(key, range_end)))
}

/// A delete without previous values as a txn op.
pub(crate) fn op_delete(key: &str, range_end: &str) -> RequestOp {
    op(Request::RequestDeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        prev_kv: false,
    }))
}

/// A nested txn as a txn op.
pub(crate) fn op_txn(request: TxnRequest) -> RequestOp {
    op(Request::RequestTxn(request))
}

/// A txn request.
pub(crate) fn txn(
    compare: Vec<Compare>,
    success: Vec<RequestOp>,
    failure: Vec<RequestOp>,
) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

/// A compare of one key, its target taken from `union`.
pub(crate) fn compare(key: &str, result: CompareResult, union: TargetUnion) -> Compare {
    let target = match union {
        TargetUnion::Version(_) => CompareTarget::Version,
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
        TargetUnion::Value(_) => CompareTarget::Value,
        TargetUnion::Lease(_) => CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(union),
    }
}

/// Widens a compare to `[key, range_end)`.
pub(crate) fn over(compare: Compare, range_end: &str) -> Compare {
    Compare {
        range_end: range_end.into(),
        ..compare
    }
}

/// A compare that `key`'s value equals `value`.
pub(crate) fn value_is(key: &str, value: &str) -> Compare {
    compare(key, CompareResult::Equal, TargetUnion::Value(value.into()))
}

/// The range response of op `index` of a txn response.
pub(crate) fn range_response(response: &TxnResponse, index: usize) -> &RangeResponse {
    match &response.responses[index].response {
        Some(OpResponse::ResponseRange(range)) => range,
        other => panic!("op {index} answered {other:?}"),
    }
}

/// The `(key, value)` pairs of `kvs`, as text.
pub(crate) fn kv_values(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}
