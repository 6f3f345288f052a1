//! etcd's KV corner cases, one named test each, through the store's public
//! API: log entries in, responses, revision events and Range out.

use cairn_mvcc::store::{Applied, FencedResponse, LogEntry, Response, Store};
use cairn_mvcc::tree_index::KeyRange;
use cairn_mvcc::validate::{self, Limits};
use cairn_mvcc::MvccError;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{
    Command, LeaseCheckpoint, LeaseClaim, LeaseExpire, LeaseHolder, LeaseRecord, LeaseRemaining,
    RevisionEvents,
};
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, KeyValue};
use prost::Message;

// ---------------------------------------------------------------------------
// A store in a temporary directory, fed one log entry per call.
// ---------------------------------------------------------------------------

struct Kv {
    dir: tempfile::TempDir,
    store: Store,
    index: u64,
}

impl Kv {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path()).expect("the store opens");
        Self {
            dir,
            store,
            index: 0,
        }
    }

    /// Closes the store and opens it again from the same directory.
    fn reopen(self) -> Self {
        let Self { dir, store, index } = self;
        drop(store);
        let store = Store::open(dir.path()).expect("the store reopens");
        Self { dir, store, index }
    }

    fn entry(&mut self, ops: Vec<Op>) -> LogEntry {
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
                })
                .collect(),
        }
    }

    /// Applies `ops` as one log entry.
    fn apply(&mut self, ops: Vec<Op>) -> Applied {
        let entry = self.entry(ops);
        self.store.apply(&[entry]).expect("the entry applies")
    }

    /// Applies one command: its result and the revisions it made.
    fn run(&mut self, op: Op) -> (Result<Response, MvccError>, Vec<RevisionEvents>) {
        let applied = self.apply(vec![op]);
        let outcome = applied
            .outcomes
            .into_iter()
            .next()
            .expect("one outcome per command");
        (outcome.result, applied.revisions)
    }

    fn try_put(&mut self, request: PutRequest) -> Result<PutResponse, MvccError> {
        match self.run(Op::Put(request)).0? {
            Response::Put(response) => Ok(response),
            other => panic!("a put answered {other:?}"),
        }
    }

    fn put(&mut self, key: &str, value: &str) -> PutResponse {
        self.try_put(put(key, value)).expect("the put applies")
    }

    fn delete(&mut self, key: &str, range_end: &str) -> DeleteRangeResponse {
        let request = DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: true,
        };
        match self.run(Op::DeleteRange(request)).0 {
            Ok(Response::DeleteRange(response)) => response,
            other => panic!("a delete answered {other:?}"),
        }
    }

    fn try_txn(&mut self, request: TxnRequest) -> Result<TxnResponse, MvccError> {
        assert_eq!(
            validate::check_txn(&request, &Limits::default()),
            Ok(()),
            "only txns etcd accepts reach the log"
        );
        match self.run(Op::Txn(request)).0? {
            Response::Txn(response) => Ok(response),
            other => panic!("a txn answered {other:?}"),
        }
    }

    fn txn(&mut self, request: TxnRequest) -> TxnResponse {
        self.try_txn(request).expect("the txn applies")
    }

    fn compact(&mut self, revision: i64) -> Result<i64, MvccError> {
        let request = CompactionRequest {
            revision,
            physical: false,
        };
        match self.run(Op::Compaction(request)).0? {
            Response::Compaction(response) => Ok(revision_of(response.header.as_ref())),
            other => panic!("a compaction answered {other:?}"),
        }
    }

    fn grant(&mut self, id: i64) {
        let (result, _) = self.run(Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id }));
        result.expect("the lease is granted");
    }

    fn revoke(&mut self, id: i64) -> (Result<i64, MvccError>, Vec<RevisionEvents>) {
        let (result, revisions) = self.run(Op::LeaseRevoke(LeaseRevokeRequest { id }));
        let result = result.map(|response| match response {
            Response::LeaseRevoke(response) => revision_of(response.header.as_ref()),
            other => panic!("a revoke answered {other:?}"),
        });
        (result, revisions)
    }

    /// Applies a fenced lease command: its answer and the revisions it made.
    fn fenced(&mut self, op: Op) -> (FencedResponse, Vec<RevisionEvents>) {
        let (result, revisions) = self.run(op);
        match result {
            Ok(Response::Fenced(response)) => (response, revisions),
            other => panic!("a fenced command answered {other:?}"),
        }
    }

    fn claim(&mut self, holder: &str, epoch: u64) -> FencedResponse {
        self.fenced(claim(holder, epoch)).0
    }

    fn expire(&mut self, epoch: u64, ids: &[i64]) -> (FencedResponse, Vec<RevisionEvents>) {
        self.fenced(Op::LeaseExpire(LeaseExpire {
            epoch,
            ids: ids.to_vec(),
        }))
    }

    fn checkpoint(&mut self, epoch: u64, remaining: &[(i64, i64)]) -> FencedResponse {
        let leases = remaining
            .iter()
            .map(|&(id, remaining_ms)| LeaseRemaining { id, remaining_ms })
            .collect();
        self.fenced(Op::LeaseCheckpoint(LeaseCheckpoint { epoch, leases }))
            .0
    }

    /// A lease's record as stored, if it exists.
    fn lease_record(&self, id: i64) -> Option<LeaseRecord> {
        self.store.lease(id).map(|(record, _)| record)
    }

    fn hash(&self) -> u32 {
        self.store.hash_kv(0).expect("the store hashes").0
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.store.range_now(request)
    }

    fn read(&self, request: &RangeRequest) -> RangeResponse {
        self.range(request).expect("the range reads")
    }

    /// The key as it is now.
    fn get(&self, key: &str) -> Option<KeyValue> {
        self.read(&range(key, "")).kvs.into_iter().next()
    }

    /// The keys of a range at a revision (0: the latest).
    fn keys(&self, key: &str, range_end: &str, revision: i64) -> Vec<String> {
        let request = RangeRequest {
            revision,
            ..range(key, range_end)
        };
        names(&self.read(&request).kvs)
    }

    fn current(&self) -> i64 {
        self.store.status().current
    }
}

fn revision_of(header: Option<&cairn_proto::etcdserverpb::ResponseHeader>) -> i64 {
    header.expect("a response header").revision
}

fn claim(holder: &str, epoch: u64) -> Op {
    Op::LeaseClaim(LeaseClaim {
        holder: holder.into(),
        epoch,
    })
}

fn holder(holder: &str, epoch: u64, claim_index: u64, checkpoint_index: u64) -> LeaseHolder {
    LeaseHolder {
        holder: holder.into(),
        epoch,
        claim_index,
        checkpoint_index,
    }
}

/// The keys a revision deleted, in event order.
fn deleted_keys(revision: &RevisionEvents) -> Vec<String> {
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

fn names(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn etcd_error<T: std::fmt::Debug>(result: Result<T, MvccError>) -> EtcdError {
    result
        .expect_err("the request is refused")
        .etcd()
        .expect("an etcd error")
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn range(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        ..Default::default()
    }
}

fn everything() -> RangeRequest {
    range("\0", "\0")
}

fn op(request: Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

fn op_put(key: &str, value: &str) -> RequestOp {
    op(Request::RequestPut(put(key, value)))
}

fn op_range(key: &str, range_end: &str) -> RequestOp {
    op(Request::RequestRange(range(key, range_end)))
}

fn op_delete(key: &str, range_end: &str) -> RequestOp {
    op(Request::RequestDeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        prev_kv: false,
    }))
}

fn op_txn(request: TxnRequest) -> RequestOp {
    op(Request::RequestTxn(request))
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

fn compare(key: &str, result: CompareResult, union: TargetUnion) -> Compare {
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

fn over(compare: Compare, range_end: &str) -> Compare {
    Compare {
        range_end: range_end.into(),
        ..compare
    }
}

fn value_is(key: &str, value: &str) -> Compare {
    compare(key, CompareResult::Equal, TargetUnion::Value(value.into()))
}

/// The range response of op `index` of a txn response.
fn range_response(response: &TxnResponse, index: usize) -> &RangeResponse {
    match &response.responses[index].response {
        Some(OpResponse::ResponseRange(range)) => range,
        other => panic!("op {index} answered {other:?}"),
    }
}

fn kv_values(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Revisions.
// ---------------------------------------------------------------------------

#[test]
fn revision_starts_at_one_and_grows_by_one_per_change() {
    let mut kv = Kv::new();
    let status = kv.store.status();
    assert_eq!((status.current, status.compacted), (1, -1));
    assert_eq!(revision_of(kv.read(&everything()).header.as_ref()), 1);
    assert_eq!(revision_of(kv.put("a", "1").header.as_ref()), 2);
    assert_eq!(revision_of(kv.put("b", "1").header.as_ref()), 3);
    assert_eq!(revision_of(kv.delete("a", "").header.as_ref()), 4);
    assert_eq!(kv.current(), 4);
}

#[test]
fn a_delete_that_matches_nothing_leaves_the_revision_alone() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    for (key, range_end) in [("zz", ""), ("x", "z"), ("b", "\0"), ("c", "a")] {
        let (result, revisions) = kv.run(Op::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: true,
        }));
        match result {
            Ok(Response::DeleteRange(response)) => {
                assert_eq!(response.deleted, 0, "{key}..{range_end}");
                assert!(response.prev_kvs.is_empty());
                assert_eq!(revision_of(response.header.as_ref()), 2);
            }
            other => panic!("a delete answered {other:?}"),
        }
        assert!(revisions.is_empty(), "{key}..{range_end} made a revision");
    }
    assert_eq!(kv.current(), 2);
}

#[test]
fn puts_keep_the_create_revision_and_count_versions() {
    let mut kv = Kv::new();
    assert_eq!(kv.put("a", "1").prev_kv, None);
    kv.put("b", "1");
    let response = kv
        .try_put(PutRequest {
            prev_kv: true,
            ..put("a", "2")
        })
        .expect("the put applies");
    let previous = response.prev_kv.expect("the previous value");
    assert_eq!(
        (previous.value, previous.version, previous.mod_revision),
        (b"1".to_vec(), 1, 2)
    );
    let a = kv.get("a").expect("a exists");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (2, 4, 2),
        "create kept, mod moved, version counted"
    );
}

#[test]
fn version_resets_after_delete() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("a", "2"); // 3
    let deleted = kv.delete("a", ""); // 4
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.prev_kvs[0].version, 2);
    assert_eq!(kv.get("a"), None);
    kv.put("a", "3"); // 5
    let a = kv.get("a").expect("a exists again");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    let then = kv.read(&RangeRequest {
        revision: 3,
        ..range("a", "")
    });
    assert_eq!(
        (then.kvs[0].create_revision, then.kvs[0].version),
        (2, 2),
        "history keeps the first incarnation"
    );
    assert!(kv
        .read(&RangeRequest {
            revision: 4,
            ..range("a", "")
        })
        .kvs
        .is_empty());
}

// ---------------------------------------------------------------------------
// Txn.
// ---------------------------------------------------------------------------

#[test]
fn a_txn_is_one_revision() {
    let mut kv = Kv::new();
    kv.put("a", "0"); // 2
    let request = txn(
        vec![],
        vec![op_put("c", "1"), op_put("a", "1"), op_put("b", "1")],
        vec![],
    );
    let (result, revisions) = kv.run(Op::Txn(request));
    let Ok(Response::Txn(response)) = result else {
        panic!("the txn failed: {result:?}");
    };
    assert!(response.succeeded);
    assert_eq!(revision_of(response.header.as_ref()), 3);
    assert_eq!(kv.current(), 3);
    assert_eq!(revisions.len(), 1, "one revision for the whole txn");
    assert_eq!(revisions[0].revision, 3);
    let written: Vec<(String, i64)> = revisions[0]
        .events
        .iter()
        .map(|event| {
            let kv = event.kv.as_ref().expect("an event has its kv");
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            )
        })
        .collect();
    assert_eq!(
        written,
        vec![("c".into(), 3), ("a".into(), 3), ("b".into(), 3)],
        "events in op order (sub-revision order), all at the txn's revision"
    );
    let history = kv
        .store
        .events(&KeyRange::new(b"\0", b"\0"), 3, true, usize::MAX)
        .expect("history");
    assert_eq!(history, revisions, "history keeps the same order");
}

#[test]
fn a_read_only_txn_leaves_the_revision_alone() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    let cases = [
        (
            "ranges only",
            txn(vec![value_is("a", "1")], vec![op_range("a", "")], vec![]),
        ),
        (
            "an empty branch",
            txn(vec![value_is("a", "2")], vec![op_put("a", "2")], vec![]),
        ),
        ("nothing at all", txn(vec![], vec![], vec![])),
        (
            "a delete that matches nothing",
            txn(vec![], vec![op_delete("zz", "")], vec![]),
        ),
    ];
    for (name, request) in cases {
        let (result, revisions) = kv.run(Op::Txn(request));
        let Ok(Response::Txn(response)) = result else {
            panic!("{name}: {result:?}");
        };
        assert_eq!(revision_of(response.header.as_ref()), 2, "{name}");
        assert!(revisions.is_empty(), "{name}");
    }
    assert_eq!(kv.current(), 2);
}

#[test]
fn ranges_inside_a_txn_see_its_earlier_writes() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("b", "1"); // 3
    let response = kv.txn(txn(
        vec![],
        vec![
            op_range("a", "\0"),
            op_put("a", "2"),
            op_range("a", "\0"),
            op_delete("b", ""),
            op_range("a", "\0"),
            op(Request::RequestRange(RangeRequest {
                revision: 3,
                ..range("a", "\0")
            })),
        ],
        vec![],
    ));
    assert_eq!(revision_of(response.header.as_ref()), 4);

    let before = range_response(&response, 0);
    assert_eq!(
        kv_values(&before.kvs),
        vec![("a".into(), "1".into()), ("b".into(), "1".into())]
    );
    assert_eq!(revision_of(before.header.as_ref()), 3);

    let after_put = range_response(&response, 2);
    assert_eq!(
        kv_values(&after_put.kvs),
        vec![("a".into(), "2".into()), ("b".into(), "1".into())]
    );
    assert_eq!(
        (after_put.kvs[0].mod_revision, after_put.kvs[0].version),
        (4, 2)
    );
    assert_eq!(revision_of(after_put.header.as_ref()), 4);

    let after_delete = range_response(&response, 4);
    assert_eq!(names(&after_delete.kvs), vec!["a"]);
    assert_eq!(after_delete.count, 1);

    let historical = range_response(&response, 5);
    assert_eq!(
        kv_values(&historical.kvs),
        vec![("a".into(), "1".into()), ("b".into(), "1".into())],
        "a read at an earlier revision does not see the txn's writes"
    );
}

#[test]
fn compares_see_the_state_before_the_txn() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    let nested = txn(
        vec![value_is("a", "1")],
        vec![op_put("b", "nested compare saw the old a")],
        vec![op_put("b", "nested compare saw the new a")],
    );
    let response = kv.txn(txn(
        vec![value_is("a", "1")],
        vec![op_put("a", "2"), op_txn(nested)],
        vec![],
    ));
    assert!(response.succeeded);
    match &response.responses[1].response {
        Some(OpResponse::ResponseTxn(nested)) => assert!(nested.succeeded),
        other => panic!("op 1 answered {other:?}"),
    }
    assert_eq!(
        kv.get("b").map(|b| b.value),
        Some(b"nested compare saw the old a".to_vec())
    );
    assert_eq!(kv.current(), 3);
}

#[test]
fn a_value_compare_on_a_missing_key_is_false() {
    let mut kv = Kv::new();
    kv.put("present", ""); // 2
    let cases = [
        ("value == \"\"", value_is("missing", ""), false),
        (
            "value != x",
            compare(
                "missing",
                CompareResult::NotEqual,
                TargetUnion::Value(b"x".to_vec()),
            ),
            false,
        ),
        (
            "value < x",
            compare(
                "missing",
                CompareResult::Less,
                TargetUnion::Value(b"x".to_vec()),
            ),
            false,
        ),
        (
            "version == 0",
            compare("missing", CompareResult::Equal, TargetUnion::Version(0)),
            true,
        ),
        (
            "create == 0",
            compare(
                "missing",
                CompareResult::Equal,
                TargetUnion::CreateRevision(0),
            ),
            true,
        ),
        (
            "mod < 1",
            compare("missing", CompareResult::Less, TargetUnion::ModRevision(1)),
            true,
        ),
        (
            "lease == 0",
            compare("missing", CompareResult::Equal, TargetUnion::Lease(0)),
            true,
        ),
        (
            "a present empty value == \"\"",
            value_is("present", ""),
            true,
        ),
    ];
    for (name, compare, expected) in cases {
        let response = kv.txn(txn(vec![compare], vec![], vec![]));
        assert_eq!(response.succeeded, expected, "{name}");
    }
}

#[test]
fn a_compare_over_a_range_needs_every_key() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("ab", "1"); // 3
    kv.put("b", "1"); // 4
    kv.put("a", "2"); // 5: a is at version 2
    let version = |result, n| compare("a", result, TargetUnion::Version(n));
    let cases = [
        (
            "every key of [a, c) has a version",
            over(version(CompareResult::Greater, 0), "c"),
            true,
        ),
        (
            "a is not at version 1",
            over(version(CompareResult::Equal, 1), "c"),
            false,
        ),
        (
            "[ab, c) are all at version 1",
            Compare {
                key: b"ab".to_vec(),
                ..over(version(CompareResult::Equal, 1), "c")
            },
            true,
        ),
        (
            "every value from a on is below 3",
            over(
                compare("a", CompareResult::Less, TargetUnion::Value(b"3".to_vec())),
                "\0",
            ),
            true,
        ),
        (
            "not every value from a on is 1",
            over(value_is("a", "1"), "\0"),
            false,
        ),
        (
            "an empty range compares as a zero KeyValue",
            Compare {
                key: b"x".to_vec(),
                ..over(version(CompareResult::Equal, 0), "z")
            },
            true,
        ),
        (
            "but a value compare over an empty range is false",
            over(value_is("x", ""), "z"),
            false,
        ),
    ];
    for (name, compare, expected) in cases {
        let response = kv.txn(txn(vec![compare], vec![], vec![]));
        assert_eq!(response.succeeded, expected, "{name}");
    }
}

#[test]
fn a_put_in_a_txn_of_a_key_deleted_in_the_same_txn_is_rejected() {
    let limits = Limits::default();
    let cases = [
        (
            "delete then put",
            txn(vec![], vec![op_delete("a", ""), op_put("a", "1")], vec![]),
        ),
        (
            "put then delete",
            txn(vec![], vec![op_put("a", "1"), op_delete("a", "")], vec![]),
        ),
        (
            "a range delete covering the put",
            txn(vec![], vec![op_delete("a", "c"), op_put("b", "1")], vec![]),
        ),
        (
            "in the failure branch",
            txn(
                vec![],
                vec![],
                vec![op_delete("\0", "\0"), op_put("b", "1")],
            ),
        ),
        (
            "a nested put under an outer delete",
            txn(
                vec![],
                vec![
                    op_delete("a", ""),
                    op_txn(txn(vec![], vec![op_put("a", "1")], vec![])),
                ],
                vec![],
            ),
        ),
    ];
    for (name, request) in cases {
        assert_eq!(
            validate::check_txn(&request, &limits),
            Err(EtcdError::DuplicateKey),
            "{name}"
        );
    }
    let apart = txn(vec![], vec![op_delete("a", "")], vec![op_put("a", "1")]);
    assert_eq!(
        validate::check_txn(&apart, &limits),
        Ok(()),
        "the two branches exclude each other"
    );
}

#[test]
fn a_refused_op_in_a_txn_leaves_the_whole_txn_undone() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    let with_lease = op(Request::RequestPut(PutRequest {
        lease: 77,
        ..put("b", "1")
    }));
    let result = kv.try_txn(txn(vec![], vec![op_put("a", "2"), with_lease], vec![]));
    assert_eq!(etcd_error(result), EtcdError::LeaseNotFound);
    let future = op(Request::RequestRange(RangeRequest {
        revision: 3,
        ..range("a", "")
    }));
    let result = kv.try_txn(txn(vec![], vec![op_put("a", "2"), future], vec![]));
    assert_eq!(
        etcd_error(result),
        EtcdError::FutureRevision,
        "a range at the txn's own revision is checked before the txn writes"
    );
    assert_eq!(kv.current(), 2);
    assert_eq!(kv.get("a").map(|a| a.value), Some(b"1".to_vec()));
}

// ---------------------------------------------------------------------------
// Compaction.
// ---------------------------------------------------------------------------

#[test]
fn compacted_and_future_revisions() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("b", "1"); // 3
    kv.put("a", "2"); // 4
    kv.delete("b", ""); // 5
    kv.put("c", "1"); // 6
    let at = |revision: i64| RangeRequest {
        revision,
        ..everything()
    };
    let before: Vec<RangeResponse> = (4..=6).map(|revision| kv.read(&at(revision))).collect();

    assert_eq!(kv.compact(4).expect("compaction at 4"), 6);
    assert_eq!(kv.store.status().compacted, 4);
    assert_eq!(kv.current(), 6, "compaction makes no revision");

    match kv.range(&at(3)) {
        Err(MvccError::Compacted { compact_revision }) => assert_eq!(compact_revision, 4),
        other => panic!("a read below the compact revision answered {other:?}"),
    }
    let after: Vec<RangeResponse> = (4..=6).map(|revision| kv.read(&at(revision))).collect();
    assert_eq!(after, before, "reads at and after the compact revision");
    assert_eq!(
        kv.keys("\0", "\0", 4),
        vec!["a", "b"],
        "b, deleted after the point, is still there at it"
    );
    assert_eq!(etcd_error(kv.range(&at(7))), EtcdError::FutureRevision);
    assert_eq!(
        kv.read(&at(0)).kvs,
        before[2].kvs,
        "0 reads the latest revision"
    );

    assert_eq!(etcd_error(kv.compact(4)), EtcdError::Compacted);
    assert_eq!(etcd_error(kv.compact(2)), EtcdError::Compacted);
    assert_eq!(etcd_error(kv.compact(7)), EtcdError::FutureRevision);
    assert_eq!(
        kv.compact(6).expect("compaction at the current revision"),
        6
    );
    assert_eq!(etcd_error(kv.range(&at(5))), EtcdError::Compacted);
    assert_eq!(kv.read(&at(6)), before[2]);

    let a = kv.get("a").expect("a survives compaction");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (2, 4, 2),
        "the latest version of every key survives"
    );
    kv.put("a", "3"); // 7
    let a = kv.get("a").expect("a");
    assert_eq!(
        (a.create_revision, a.version),
        (2, 3),
        "versions go on counting"
    );
    assert_eq!(
        etcd_error(
            kv.store
                .events(&KeyRange::new(b"\0", b"\0"), 5, false, usize::MAX)
        ),
        EtcdError::Compacted
    );
}

#[test]
fn a_compaction_in_the_same_batch_as_the_writes_it_drops() {
    let mut kv = Kv::new();
    let first = kv.entry(vec![
        Op::Put(put("a", "1")), // 2
        Op::Put(put("a", "2")), // 3
        Op::Put(put("b", "1")), // 4
    ]);
    let second = kv.entry(vec![
        Op::DeleteRange(DeleteRangeRequest {
            key: b"b".to_vec(),
            ..Default::default()
        }), // 5
        Op::Compaction(CompactionRequest {
            revision: 5,
            physical: false,
        }),
        Op::Put(put("a", "3")), // 6
    ]);
    let applied = kv.store.apply(&[first, second]).expect("the entries apply");
    assert!(applied
        .outcomes
        .iter()
        .all(|outcome| outcome.result.is_ok()));
    let check = |kv: &Kv| {
        let status = kv.store.status();
        assert_eq!((status.current, status.compacted), (6, 5));
        let at_five = kv.read(&RangeRequest {
            revision: 5,
            ..everything()
        });
        assert_eq!(kv_values(&at_five.kvs), vec![("a".into(), "2".into())]);
        assert_eq!(at_five.kvs[0].version, 2);
        assert_eq!(
            etcd_error(kv.range(&RangeRequest {
                revision: 4,
                ..everything()
            })),
            EtcdError::Compacted
        );
        let a = kv.get("a").expect("a");
        assert_eq!((a.create_revision, a.version), (2, 3));
        let history = kv
            .store
            .events(&KeyRange::new(b"\0", b"\0"), 5, false, usize::MAX)
            .expect("history from the compact revision");
        let kinds: Vec<(i64, i32)> = history
            .iter()
            .flat_map(|revision| {
                revision
                    .events
                    .iter()
                    .map(move |event| (revision.revision, event.r#type))
            })
            .collect();
        assert_eq!(
            kinds,
            vec![(5, EventType::Delete as i32), (6, EventType::Put as i32)]
        );
    };
    check(&kv);
    let kv = kv.reopen();
    check(&kv);
}

// ---------------------------------------------------------------------------
// Range.
// ---------------------------------------------------------------------------

#[test]
fn prefix_and_from_key_ranges() {
    let mut kv = Kv::new();
    for key in ["a", "ab", "abc", "b", "c", "\u{7f}"] {
        kv.put(key, "v");
    }
    let cases: [(&str, &str, &str, Vec<&str>); 8] = [
        ("one key", "ab", "", vec!["ab"]),
        ("one missing key", "aa", "", vec![]),
        ("the prefix ab", "ab", "ac", vec!["ab", "abc"]),
        ("[a, b)", "a", "b", vec!["a", "ab", "abc"]),
        (
            "from ab on",
            "ab",
            "\0",
            vec!["ab", "abc", "b", "c", "\u{7f}"],
        ),
        (
            "every key",
            "\0",
            "\0",
            vec!["a", "ab", "abc", "b", "c", "\u{7f}"],
        ),
        ("an end before the key", "c", "a", vec![]),
        ("an end equal to the key", "b", "b", vec![]),
    ];
    for (name, key, range_end, expected) in cases {
        assert_eq!(kv.keys(key, range_end, 0), expected, "{name}");
    }
}

#[test]
fn limit_with_more_and_count() {
    let mut kv = Kv::new();
    for key in ["a", "b", "c", "d", "e"] {
        kv.put(key, "value"); // 2..=6
    }
    kv.delete("e", ""); // 7
    let with = |limit: i64, revision: i64| RangeRequest {
        limit,
        revision,
        ..everything()
    };
    // (limit, revision, keys, more, count)
    let cases: [(i64, i64, Vec<&str>, bool, i64); 7] = [
        (2, 0, vec!["a", "b"], true, 4),
        (3, 0, vec!["a", "b", "c"], true, 4),
        (4, 0, vec!["a", "b", "c", "d"], false, 4),
        (9, 0, vec!["a", "b", "c", "d"], false, 4),
        (0, 0, vec!["a", "b", "c", "d"], false, 4),
        (4, 6, vec!["a", "b", "c", "d"], true, 5),
        (2, 4, vec!["a", "b"], true, 3),
    ];
    for (limit, revision, keys, more, count) in cases {
        let response = kv.read(&with(limit, revision));
        assert_eq!(
            (names(&response.kvs), response.more, response.count),
            (keys.into_iter().map(String::from).collect(), more, count),
            "limit {limit} at {revision}"
        );
    }
    let counted = kv.read(&RangeRequest {
        count_only: true,
        limit: 1,
        ..everything()
    });
    assert!(counted.kvs.is_empty());
    assert_eq!((counted.count, counted.more), (4, false));
    let keys_only = kv.read(&RangeRequest {
        keys_only: true,
        ..everything()
    });
    assert_eq!(names(&keys_only.kvs), vec!["a", "b", "c", "d"]);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    assert!(keys_only.kvs.iter().all(|kv| kv.version == 1));
}

/// b=2@2, a=3@3, c=1@4, a=3@5, d=2@6:
///
/// | key | value | create | mod | version |
/// |-----|-------|--------|-----|---------|
/// | a   | 3     | 3      | 5   | 2       |
/// | b   | 2     | 2      | 2   | 1       |
/// | c   | 1     | 4      | 4   | 1       |
/// | d   | 2     | 6      | 6   | 1       |
fn sorting_store() -> Kv {
    let mut kv = Kv::new();
    for (key, value) in [("b", "2"), ("a", "3"), ("c", "1"), ("a", "3"), ("d", "2")] {
        kv.put(key, value);
    }
    kv
}

#[test]
fn sort_orders() {
    let kv = sorting_store();
    use SortOrder::{Ascend, Descend, None as Unsorted};
    use SortTarget::{Create, Key, Mod, Value, Version};
    // Ties keep ascending key order, and DESCEND reverses the whole ascending
    // result (ties included). etcd itself makes no promise about ties.
    let cases = [
        (Key, Unsorted, "abcd"),
        (Key, Ascend, "abcd"),
        (Key, Descend, "dcba"),
        (Version, Unsorted, "bcda"),
        (Version, Ascend, "bcda"),
        (Version, Descend, "adcb"),
        (Create, Unsorted, "bacd"),
        (Create, Ascend, "bacd"),
        (Create, Descend, "dcab"),
        (Mod, Unsorted, "bcad"),
        (Mod, Ascend, "bcad"),
        (Mod, Descend, "dacb"),
        (Value, Unsorted, "cbda"),
        (Value, Ascend, "cbda"),
        (Value, Descend, "adbc"),
    ];
    for (target, order, expected) in cases {
        let response = kv.read(&RangeRequest {
            sort_target: target as i32,
            sort_order: order as i32,
            ..everything()
        });
        assert_eq!(
            names(&response.kvs).concat(),
            expected,
            "{target:?} {order:?}"
        );
        assert_eq!(response.count, 4);

        let limited = kv.read(&RangeRequest {
            sort_target: target as i32,
            sort_order: order as i32,
            limit: 2,
            ..everything()
        });
        if order != Unsorted {
            assert_eq!(
                names(&limited.kvs).concat(),
                expected[..2],
                "{target:?} {order:?} limit 2: sorted, then cut"
            );
        }
        assert!(limited.more);
        assert_eq!(limited.count, 4);
    }
}

#[test]
fn a_sort_target_without_an_order_sorts_only_the_first_limit_plus_one_keys() {
    // etcd fetches limit + 1 keys in key order unless a sort order or a
    // filter is given, and only then sorts by the target: with VALUE and no
    // order, limit 1 sorts a=3 and b=2 and answers b, not c=1.
    let kv = sorting_store();
    let request = |order: SortOrder| RangeRequest {
        sort_target: SortTarget::Value as i32,
        sort_order: order as i32,
        limit: 1,
        ..everything()
    };
    let unordered = kv.read(&request(SortOrder::None));
    assert_eq!(names(&unordered.kvs), vec!["b"]);
    assert!(unordered.more);
    let ascending = kv.read(&request(SortOrder::Ascend));
    assert_eq!(names(&ascending.kvs), vec!["c"]);
    assert_eq!((ascending.more, ascending.count), (true, 4));
}

#[test]
fn min_max_filters_do_not_change_count() {
    let kv = sorting_store();
    let filtered = |min_mod, max_mod, min_create, max_create, limit| RangeRequest {
        min_mod_revision: min_mod,
        max_mod_revision: max_mod,
        min_create_revision: min_create,
        max_create_revision: max_create,
        limit,
        ..everything()
    };
    // (request, keys, more)
    let cases = [
        (filtered(4, 0, 0, 0, 0), "acd", false),
        (filtered(0, 4, 0, 0, 0), "bc", false),
        (filtered(0, 0, 3, 0, 0), "acd", false),
        (filtered(0, 0, 0, 3, 0), "ab", false),
        (filtered(3, 5, 3, 4, 0), "ac", false),
        (filtered(7, 0, 0, 0, 0), "", false),
        (filtered(4, 0, 0, 0, 1), "a", true),
        (filtered(4, 0, 0, 0, 3), "acd", false),
        (filtered(6, 0, 0, 0, 1), "d", false),
    ];
    for (request, expected, more) in cases {
        let response = kv.read(&request);
        assert_eq!(names(&response.kvs).concat(), expected, "{request:?}");
        assert_eq!(response.more, more, "{request:?}");
        assert_eq!(response.count, 4, "count ignores filters: {request:?}");
    }
}

#[test]
fn header_revision_is_current_on_a_historical_read() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("a", "2"); // 3
    kv.put("b", "1"); // 4
    for revision in [0, 1, 2, 3, 4] {
        let response = kv.read(&RangeRequest {
            revision,
            ..everything()
        });
        assert_eq!(revision_of(response.header.as_ref()), 4, "at {revision}");
    }
    let then = kv.read(&RangeRequest {
        revision: 2,
        ..everything()
    });
    assert_eq!(kv_values(&then.kvs), vec![("a".into(), "1".into())]);
    assert_eq!(then.count, 1);
    assert!(kv
        .read(&RangeRequest {
            revision: 1,
            ..everything()
        })
        .kvs
        .is_empty());
}

// ---------------------------------------------------------------------------
// Leases and put flags.
// ---------------------------------------------------------------------------

#[test]
fn put_with_unknown_lease_is_refused() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    let leased = PutRequest {
        lease: 9,
        ..put("b", "1")
    };
    let (result, revisions) = kv.run(Op::Put(leased.clone()));
    assert_eq!(etcd_error(result), EtcdError::LeaseNotFound);
    assert!(revisions.is_empty());
    assert_eq!(kv.current(), 2);
    assert_eq!(kv.get("b"), None);

    kv.grant(9);
    assert_eq!(kv.current(), 2, "a lease grant makes no revision");
    kv.try_put(leased).expect("the lease exists now"); // 3
    assert_eq!(kv.get("b").map(|b| b.lease), Some(9));
    let (_, keys) = kv.store.lease(9).expect("lease 9");
    assert_eq!(keys, vec![b"b".to_vec()]);
}

#[test]
fn ignore_value_and_ignore_lease_need_the_key() {
    let mut kv = Kv::new();
    kv.grant(1);
    kv.grant(2);
    let ignore_value = |key: &str, lease: i64| PutRequest {
        key: key.into(),
        lease,
        ignore_value: true,
        ..Default::default()
    };
    let ignore_lease = |key: &str, value: &str| PutRequest {
        ignore_lease: true,
        ..put(key, value)
    };
    assert_eq!(
        etcd_error(kv.try_put(ignore_value("a", 0))),
        EtcdError::KeyNotFound
    );
    assert_eq!(
        etcd_error(kv.try_put(ignore_lease("a", "1"))),
        EtcdError::KeyNotFound
    );
    assert_eq!(kv.current(), 1);
    let result = kv.try_txn(txn(
        vec![],
        vec![op(Request::RequestPut(ignore_value("a", 0)))],
        vec![],
    ));
    assert_eq!(etcd_error(result), EtcdError::KeyNotFound);

    kv.try_put(PutRequest {
        lease: 1,
        ..put("a", "1")
    })
    .expect("put a"); // 2
    kv.try_put(ignore_value("a", 2))
        .expect("a new lease, the same value"); // 3
    let a = kv.get("a").expect("a");
    assert_eq!((a.value.as_slice(), a.lease, a.version), (&b"1"[..], 2, 2));
    kv.try_put(ignore_lease("a", "2"))
        .expect("a new value, the same lease"); // 4
    let a = kv.get("a").expect("a");
    assert_eq!((a.value.as_slice(), a.lease, a.version), (&b"2"[..], 2, 3));
    assert_eq!(
        kv.store.lease(1).map(|(_, keys)| keys),
        Some(Vec::new()),
        "a left lease 1 when it took lease 2"
    );

    kv.delete("a", ""); // 5
    assert_eq!(
        etcd_error(kv.try_put(ignore_lease("a", "3"))),
        EtcdError::KeyNotFound,
        "a deleted key has nothing to keep"
    );
}

#[test]
fn lease_revoke_deletes_its_keys_in_one_revision() {
    let mut kv = Kv::new();
    kv.grant(1);
    let leased = |key: &str| PutRequest {
        lease: 1,
        ..put(key, "v")
    };
    kv.try_put(leased("b")).expect("b"); // 2
    kv.try_put(leased("a")).expect("a"); // 3
    kv.put("c", "v"); // 4
    kv.try_put(leased("d")).expect("d"); // 5
    kv.put("d", "no lease now"); // 6: d leaves the lease
    kv.try_put(leased("e")).expect("e"); // 7
    kv.try_put(PutRequest {
        ignore_lease: true,
        ..put("e", "kept lease")
    })
    .expect("e keeps its lease"); // 8

    let (result, revisions) = kv.revoke(1);
    assert_eq!(result.expect("the revoke applies"), 9);
    assert_eq!(kv.current(), 9);
    assert_eq!(
        revisions.len(),
        1,
        "one revision for every key of the lease"
    );
    let deleted: Vec<(String, i32, i64)> = revisions[0]
        .events
        .iter()
        .map(|event| {
            let kv = event.kv.as_ref().expect("kv");
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                event.r#type,
                kv.mod_revision,
            )
        })
        .collect();
    let delete = EventType::Delete as i32;
    assert_eq!(
        deleted,
        vec![
            ("a".into(), delete, 9),
            ("b".into(), delete, 9),
            ("e".into(), delete, 9)
        ]
    );
    assert_eq!(kv.keys("\0", "\0", 0), vec!["c", "d"]);
    assert!(kv.store.lease(1).is_none());

    let (result, _) = kv.revoke(1);
    assert_eq!(etcd_error(result), EtcdError::LeaseNotFound);
    kv.grant(2);
    let (result, revisions) = kv.revoke(2);
    assert_eq!(
        result.expect("a lease without keys is revoked"),
        9,
        "and makes no revision"
    );
    assert!(revisions.is_empty());
}

// ---------------------------------------------------------------------------
// Lease claims, expiry and checkpoints: fenced by the claim's epoch.
// ---------------------------------------------------------------------------

#[test]
fn a_claim_must_be_above_the_current_epoch() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    let hash = kv.hash();
    assert_eq!(kv.store.lease_holder(), LeaseHolder::default());

    let first = kv.claim("lease-1:2380", 2); // entry 2
    assert!(first.result.accepted);
    assert_eq!(first.result.holder, Some(holder("lease-1:2380", 2, 2, 2)));
    assert!(first.result.expired.is_empty());
    assert_eq!(first.revision, 2, "a claim changes no key, so no revision");

    let equal = kv.claim("lease-2:2380", 2);
    assert!(!equal.result.accepted, "an equal epoch is void");
    assert_eq!(equal.result.holder, Some(holder("lease-1:2380", 2, 2, 2)));
    let lower = kv.claim("lease-3:2380", 1);
    assert!(!lower.result.accepted, "a lower epoch is void");
    assert_eq!(kv.store.lease_holder(), holder("lease-1:2380", 2, 2, 2));

    // Two claims of one epoch in one entry: the first in log order wins.
    let applied = kv.apply(vec![claim("lease-4:2380", 3), claim("lease-5:2380", 3)]); // entry 5
    let accepted: Vec<bool> = applied
        .outcomes
        .into_iter()
        .map(|outcome| match outcome.result {
            Ok(Response::Fenced(fenced)) => fenced.result.accepted,
            other => panic!("a claim answered {other:?}"),
        })
        .collect();
    assert_eq!(accepted, vec![true, false]);
    assert!(applied.revisions.is_empty());
    assert_eq!(kv.store.lease_holder(), holder("lease-4:2380", 3, 5, 5));

    assert_eq!(kv.current(), 2);
    assert_eq!(kv.hash(), hash, "claims do not enter HashKV");
}

#[test]
fn an_expire_under_a_stale_epoch_deletes_nothing() {
    let mut kv = Kv::new();
    kv.grant(1);
    kv.try_put(PutRequest {
        lease: 1,
        ..put("a", "1")
    })
    .expect("a"); // 2

    let (void, revisions) = kv.expire(0, &[1]);
    assert!(!void.result.accepted, "before any claim nobody may expire");
    assert!(revisions.is_empty());

    kv.claim("old", 1);
    kv.claim("new", 2);
    let (stale, revisions) = kv.expire(1, &[1]);
    assert!(!stale.result.accepted, "a deposed holder's expire is void");
    assert!(stale.result.expired.is_empty());
    assert_eq!(stale.result.holder.map(|h| h.holder), Some("new".into()));
    assert_eq!(stale.revision, 2);
    assert!(revisions.is_empty());
    let (ahead, _) = kv.expire(3, &[1]);
    assert!(!ahead.result.accepted, "an epoch nobody claimed is void");

    assert_eq!(kv.current(), 2);
    assert!(kv.get("a").is_some());
    assert_eq!(
        kv.store.lease(1).map(|(_, keys)| keys),
        Some(vec![b"a".to_vec()])
    );
}

#[test]
fn an_expire_under_the_current_epoch_revokes_every_listed_lease_in_one_revision() {
    let mut kv = Kv::new();
    for id in 1..=4 {
        kv.grant(id);
    }
    let leased = |key: &str, lease: i64| PutRequest {
        lease,
        ..put(key, "v")
    };
    kv.try_put(leased("c", 1)).expect("c"); // 2
    kv.try_put(leased("b", 2)).expect("b"); // 3
    kv.try_put(leased("a", 1)).expect("a"); // 4
    kv.put("d", "no lease"); // 5
    kv.try_put(leased("e", 3)).expect("e"); // 6
    kv.claim("holder", 7);

    let (expired, revisions) = kv.expire(7, &[2, 1, 99, 4, 2]);
    assert!(expired.result.accepted);
    assert_eq!(
        expired.result.expired,
        vec![2, 1, 4],
        "the leases that existed, each once"
    );
    assert_eq!(expired.revision, 7);
    assert_eq!(kv.current(), 7);
    assert_eq!(revisions.len(), 1, "one revision for every listed lease");
    assert_eq!(revisions[0].revision, 7);
    assert_eq!(
        deleted_keys(&revisions[0]),
        vec!["b", "a", "c"],
        "lease by lease as listed, each lease's keys in order"
    );
    assert_eq!(kv.keys("\0", "\0", 0), vec!["d", "e"]);
    for id in [1, 2, 4] {
        assert!(kv.store.lease(id).is_none(), "lease {id} is gone");
    }
    assert_eq!(
        kv.store.lease(3).map(|(_, keys)| keys),
        Some(vec![b"e".to_vec()])
    );

    kv.grant(5);
    let (empty, revisions) = kv.expire(7, &[5, 6]);
    assert_eq!(empty.result.expired, vec![5]);
    assert!(revisions.is_empty(), "no key deleted, no revision");
    assert_eq!((empty.revision, kv.current()), (7, 7));
    let (_, revisions) = kv.revoke(3);
    assert_eq!(
        revisions.iter().map(deleted_keys).collect::<Vec<_>>(),
        vec![vec!["e".to_owned()]],
        "a revoke after an expire goes on at the next revision"
    );
    assert_eq!(kv.current(), 8);
}

#[test]
fn a_checkpoint_counts_only_under_the_current_epoch() {
    let mut kv = Kv::new();
    kv.grant(1); // entry 1
    kv.grant(2); // entry 2
    assert_eq!(kv.lease_record(1).map(|l| l.remaining_ms), Some(0));
    let hash = kv.hash();

    let (before_any_claim, _) = kv.fenced(Op::LeaseCheckpoint(LeaseCheckpoint {
        epoch: 0,
        leases: vec![LeaseRemaining {
            id: 1,
            remaining_ms: 1,
        }],
    })); // entry 3
    assert!(!before_any_claim.result.accepted);
    kv.claim("first", 1); // entry 4
    let checkpoint = kv.checkpoint(1, &[(1, 5_000), (99, 1)]); // entry 5
    assert!(checkpoint.result.accepted);
    assert_eq!(checkpoint.result.holder, Some(holder("first", 1, 4, 5)));
    assert_eq!(
        kv.lease_record(1),
        Some(LeaseRecord {
            id: 1,
            ttl: 60,
            remaining_ms: 5_000
        })
    );
    assert_eq!(
        kv.lease_record(2).map(|l| l.remaining_ms),
        Some(0),
        "a lease not listed keeps its last checkpoint"
    );
    assert!(kv.lease_record(99).is_none(), "unknown ids are skipped");

    kv.claim("second", 2); // entry 6
    let stale = kv.checkpoint(1, &[(1, 10), (2, 10)]); // entry 7
    assert!(!stale.result.accepted);
    assert_eq!(stale.result.holder, Some(holder("second", 2, 6, 6)));
    assert_eq!(kv.lease_record(1).map(|l| l.remaining_ms), Some(5_000));
    assert_eq!(kv.lease_record(2).map(|l| l.remaining_ms), Some(0));

    let current = kv.checkpoint(2, &[(2, 700)]); // entry 8
    assert!(current.result.accepted);
    assert_eq!(kv.store.lease_holder(), holder("second", 2, 6, 8));
    assert_eq!(kv.lease_record(2).map(|l| l.remaining_ms), Some(700));
    let table = kv.store.lease_table();
    assert_eq!(
        table
            .leases
            .iter()
            .map(|l| (l.id, l.remaining_ms))
            .collect::<Vec<_>>(),
        vec![(1, 5_000), (2, 700)]
    );
    assert_eq!((table.revision, table.applied.index), (1, 8));

    assert_eq!(kv.current(), 1, "checkpoints change no key");
    assert_eq!(kv.hash(), hash, "nor HashKV");
}

// ---------------------------------------------------------------------------
// Restart.
// ---------------------------------------------------------------------------

#[test]
fn entries_already_applied_are_skipped() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // entry 1, revision 2
    let replay = LogEntry {
        index: 1,
        term: 1,
        commands: vec![Command {
            op: Some(Op::Put(put("a", "again"))),
            ..Default::default()
        }
        .encode_to_vec()],
    };
    let applied = kv
        .store
        .apply(std::slice::from_ref(&replay))
        .expect("apply");
    assert!(applied.outcomes.is_empty());
    assert_eq!(applied.position.index, 1);
    let kv = kv.reopen();
    let applied = kv.store.apply(&[replay]).expect("apply after reopen");
    assert!(applied.outcomes.is_empty());
    assert_eq!(kv.current(), 2);
    assert_eq!(kv.get("a").map(|a| a.value), Some(b"1".to_vec()));
}

#[test]
fn state_survives_reopen() {
    let mut kv = Kv::new();
    kv.grant(5);
    let leased = |key: &str, value: &str| PutRequest {
        lease: 5,
        ..put(key, value)
    };
    kv.try_put(leased("a", "1")).expect("a"); // 2
    kv.try_put(leased("a", "2")).expect("a"); // 3
    kv.put("b", "1"); // 4
    kv.delete("b", ""); // 5
    kv.put("b", "2"); // 6
    kv.put("b", "3"); // 7
    kv.try_put(leased("c", "1")).expect("c"); // 8
    kv.put("gone", "1"); // 9
    kv.delete("gone", ""); // 10
    assert_eq!(kv.compact(7).expect("compaction"), 10);

    let reads = |kv: &Kv| -> Vec<RangeResponse> {
        (7..=10)
            .map(|revision| {
                kv.read(&RangeRequest {
                    revision,
                    ..everything()
                })
            })
            .collect()
    };
    let history = |kv: &Kv| {
        kv.store
            .events(&KeyRange::new(b"\0", b"\0"), 7, true, usize::MAX)
            .expect("history")
    };
    let status = kv.store.status();
    let before = reads(&kv);
    let events = history(&kv);

    let mut kv = kv.reopen();
    assert_eq!(kv.store.status(), status);
    assert_eq!(reads(&kv), before);
    assert_eq!(history(&kv), events);
    assert_eq!(
        etcd_error(kv.range(&RangeRequest {
            revision: 6,
            ..everything()
        })),
        EtcdError::Compacted
    );

    let a = kv.get("a").expect("a");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version, a.lease),
        (2, 3, 2, 5),
        "a's history before the compaction is gone, not its numbers"
    );
    let b = kv.get("b").expect("b");
    assert_eq!((b.create_revision, b.mod_revision, b.version), (6, 7, 2));

    kv.put("a", "3"); // 11
    let a = kv.get("a").expect("a");
    assert_eq!((a.create_revision, a.version), (2, 3));
    kv.put("b", "4"); // 12
    assert_eq!(
        kv.get("b").map(|b| (b.create_revision, b.version)),
        Some((6, 3))
    );
    kv.put("gone", "back"); // 13
    assert_eq!(
        kv.get("gone").map(|g| (g.create_revision, g.version)),
        Some((13, 1))
    );

    let (result, revisions) = kv.revoke(5);
    assert_eq!(result.expect("lease 5 survived the restart"), 14);
    let deleted: Vec<Vec<u8>> = revisions[0]
        .events
        .iter()
        .filter_map(|event| event.kv.as_ref().map(|kv| kv.key.clone()))
        .collect();
    assert_eq!(
        deleted,
        vec![b"c".to_vec()],
        "a left lease 5 when put without it"
    );
    assert_eq!(kv.keys("\0", "\0", 0), vec!["a", "b", "gone"]);

    let kv = kv.reopen();
    assert_eq!(kv.current(), 14);
    assert_eq!(kv.store.status().leases, 0);
    assert_eq!(kv.store.status().compacted, 7);
}

#[test]
fn the_lease_claim_and_checkpoints_survive_reopen() {
    let mut kv = Kv::new();
    kv.grant(1); // entry 1
    kv.grant(2); // entry 2
    kv.try_put(PutRequest {
        lease: 2,
        ..put("k", "v")
    })
    .expect("k"); // entry 3, revision 2
    kv.claim("old", 4); // entry 4
    kv.claim("new", 5); // entry 5
    kv.checkpoint(5, &[(1, 1_500), (2, 2_500)]); // entry 6
    let table = kv.store.lease_table();

    let mut kv = kv.reopen();
    assert_eq!(kv.store.lease_table(), table);
    assert_eq!(kv.store.lease_holder(), holder("new", 5, 5, 6));
    assert_eq!(kv.lease_record(2).map(|l| l.remaining_ms), Some(2_500));

    assert!(
        !kv.claim("old", 5).result.accepted,
        "the epoch is remembered"
    );
    let (stale, revisions) = kv.expire(4, &[2]);
    assert!(!stale.result.accepted, "so is the fence");
    assert!(revisions.is_empty());
    let (expired, revisions) = kv.expire(5, &[2]); // revision 3
    assert_eq!(expired.result.expired, vec![2]);
    assert_eq!(
        revisions.iter().map(deleted_keys).collect::<Vec<_>>(),
        vec![vec!["k".to_owned()]]
    );

    let kv = kv.reopen();
    assert_eq!(kv.current(), 3);
    assert!(kv.store.lease(2).is_none());
    assert_eq!(kv.lease_record(1).map(|l| l.remaining_ms), Some(1_500));
    assert_eq!(kv.store.lease_holder(), holder("new", 5, 5, 6));
}

// ---------------------------------------------------------------------------
// Known differences, kept as failing cases.
// ---------------------------------------------------------------------------

/// A put in one nested txn and a delete of the same key in a later sibling
/// nested txn pass etcd's duplicate-key check (and `check_txn`), so one
/// revision writes the key twice. etcd keeps both events in its history.
fn put_then_delete_in_sibling_txns(kv: &mut Kv) -> Vec<RevisionEvents> {
    let request = txn(
        vec![],
        vec![
            op_txn(txn(vec![], vec![op_put("k", "v")], vec![])),
            op_txn(txn(vec![], vec![op_delete("k", "")], vec![])),
        ],
        vec![],
    );
    let (result, revisions) = kv.run(Op::Txn(request.clone()));
    assert_eq!(validate::check_txn(&request, &Limits::default()), Ok(()));
    assert!(result.is_ok());
    assert_eq!(kv.get("k"), None);
    revisions
}

#[test]
fn history_keeps_both_events_of_a_key_put_then_deleted_in_one_txn() {
    let mut kv = Kv::new();
    let applied = put_then_delete_in_sibling_txns(&mut kv);
    let history = kv
        .store
        .events(&KeyRange::new(b"\0", b"\0"), 1, false, usize::MAX)
        .expect("history");
    let types = |revisions: &[RevisionEvents]| -> Vec<i32> {
        revisions
            .iter()
            .flat_map(|revision| revision.events.iter().map(|event| event.r#type))
            .collect()
    };
    let both = vec![EventType::Put as i32, EventType::Delete as i32];
    assert_eq!(types(&applied), both, "Applied::revisions has both");
    assert_eq!(types(&history), both, "so must the history");
}

#[test]
fn prev_kv_of_a_delete_is_the_key_before_the_txn() {
    // etcd's watch fills prev_kv from the key at mod_revision - 1: the key did
    // not exist before the txn, so the delete has none.
    let mut kv = Kv::new();
    let applied = put_then_delete_in_sibling_txns(&mut kv);
    let delete = applied[0]
        .events
        .iter()
        .find(|event| event.r#type == EventType::Delete as i32)
        .expect("a delete event");
    assert_eq!(delete.prev_kv, None);
}

#[test]
fn a_grant_or_revoke_fenced_by_a_superseded_claim_is_void() {
    let mut kv = Kv::new();
    kv.claim("lease-1:2380", 1);
    kv.claim("lease-2:2380", 2);
    let fenced = |op: Op, fence_epoch: u64| LogEntry {
        index: 100 + fence_epoch,
        term: 1,
        commands: vec![Command {
            origin: 1,
            sequence: 1,
            op: Some(op),
            fence_epoch,
            ..Default::default()
        }
        .encode_to_vec()],
    };
    let stale = kv
        .store
        .apply(&[fenced(
            Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }),
            1,
        )])
        .expect("the entry applies");
    let outcome = stale.outcomes.into_iter().next().expect("one outcome");
    assert!(
        matches!(outcome.result, Err(ref error) if error.etcd() == Some(EtcdError::LeaderChanged)),
        "a grant under epoch 1 after the claim of epoch 2: {:?}",
        outcome.result
    );
    assert!(kv.store.lease(7).is_none(), "the void grant left no lease");

    let current = kv
        .store
        .apply(&[fenced(
            Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }),
            2,
        )])
        .expect("the entry applies");
    let outcome = current.outcomes.into_iter().next().expect("one outcome");
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert!(kv.store.lease(7).is_some());
}

#[test]
fn nospace_refuses_what_adds_data_until_disarmed_and_survives_a_restart() {
    use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
    use cairn_proto::etcdserverpb::{AlarmRequest, AlarmType, DeleteRangeRequest};
    let alarm = |action: AlarmAction, member_id: u64| {
        Op::Alarm(AlarmRequest {
            action: action as i32,
            member_id,
            alarm: AlarmType::Nospace as i32,
        })
    };
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.grant(5);
    let (raised, _) = kv.run(alarm(AlarmAction::Activate, 42));
    assert!(matches!(raised, Ok(Response::Alarm(ref response)) if response.alarms.len() == 1));
    let no_space = |result: &Result<Response, MvccError>| matches!(result, Err(error) if error.etcd() == Some(EtcdError::NoSpace));
    let (put, _) = kv.run(Op::Put(PutRequest {
        key: b"b".to_vec(),
        value: b"2".to_vec(),
        ..Default::default()
    }));
    assert!(no_space(&put), "a put under NOSPACE: {put:?}");
    let (grant, _) = kv.run(Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 6 }));
    assert!(no_space(&grant), "a grant under NOSPACE: {grant:?}");

    // Deletes and revokes still free space; the alarm outlives a restart.
    let (deleted, revisions) = kv.run(Op::DeleteRange(DeleteRangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    }));
    assert!(deleted.is_ok() && revisions.len() == 1, "{deleted:?}");
    assert!(kv.revoke(5).0.is_ok());
    kv = kv.reopen();
    assert_eq!(kv.store.alarms().len(), 1);

    let (disarmed, _) = kv.run(alarm(AlarmAction::Deactivate, 42));
    assert!(matches!(disarmed, Ok(Response::Alarm(ref response)) if response.alarms.len() == 1));
    assert!(kv.store.alarms().is_empty());
    let (put, _) = kv.run(Op::Put(PutRequest {
        key: b"b".to_vec(),
        value: b"2".to_vec(),
        ..Default::default()
    }));
    assert!(put.is_ok(), "a put after the disarm: {put:?}");
}
