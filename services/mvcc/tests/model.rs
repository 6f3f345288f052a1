//! The store against a plain model of etcd's KV semantics.
//!
//! The model keeps the whole key space at every revision (one map per
//! revision) and implements Put, DeleteRange, Txn, Compact, the lease commands
//! and Range in the most direct way it can. Random command sequences go through
//! both; every outcome, every revision's events, and every read at every
//! readable revision must agree. Each case restarts the store once, at a
//! random step, from the same directory.

use std::collections::{BTreeMap, BTreeSet};

use cairn_mvcc::store::{FencedResponse, LogEntry, Reply as StoreReply, Store};
use cairn_mvcc::tree_index::KeyRange;
use cairn_mvcc::validate::{self, Limits};
use cairn_mvcc::MvccError;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{Command, RevisionEvents};
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;

// ---------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------

type Kvs = BTreeMap<Vec<u8>, KeyValue>;

/// Why a command or a read was refused, as a client would tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Etcd(EtcdError),
    /// etcd's compacted error, with the compact revision it reports.
    Compacted(i64),
}

impl Refusal {
    fn of(error: &MvccError) -> Option<Self> {
        match error {
            MvccError::Compacted { compact_revision } => Some(Self::Compacted(*compact_revision)),
            other => other.etcd().map(Self::Etcd),
        }
    }
}

/// A command's response, comparable. Inside a txn only Range responses keep
/// their header (the revision the read saw); the others are compared without.
#[derive(Clone, Debug, PartialEq)]
enum Reply {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Fenced(FencedResponse),
}

impl Reply {
    fn from_store(response: StoreReply) -> Self {
        match response {
            StoreReply::Put(put) => Self::Put(put),
            StoreReply::DeleteRange(delete) => Self::DeleteRange(delete),
            StoreReply::Txn(mut txn) => {
                strip_op_headers(&mut txn.responses);
                Self::Txn(txn)
            }
            StoreReply::Compaction(compaction) => Self::Compaction(compaction),
            StoreReply::LeaseGrant(grant) => Self::LeaseGrant(grant),
            StoreReply::LeaseRevoke(revoke) => Self::LeaseRevoke(revoke),
            StoreReply::Fenced(fenced) => Self::Fenced(fenced),
            StoreReply::Alarm(_) => unreachable!("the model raises no alarms"),
            StoreReply::Publisher(_) => unreachable!("the model claims no publishing"),
        }
    }

    fn with_revision(mut self, revision: i64) -> Self {
        let header = Some(header(revision));
        match &mut self {
            Self::Put(response) => response.header = header,
            Self::DeleteRange(response) => response.header = header,
            Self::Txn(response) => response.header = header,
            Self::Compaction(response) => response.header = header,
            Self::LeaseGrant(response) => response.header = header,
            Self::LeaseRevoke(response) => response.header = header,
            Self::Fenced(response) => response.revision = revision,
        }
        self
    }
}

fn strip_op_headers(responses: &mut [ResponseOp]) {
    for response in responses {
        match &mut response.response {
            Some(OpResponse::ResponsePut(put)) => put.header = None,
            Some(OpResponse::ResponseDeleteRange(delete)) => delete.header = None,
            Some(OpResponse::ResponseTxn(txn)) => {
                txn.header = None;
                strip_op_headers(&mut txn.responses);
            }
            Some(OpResponse::ResponseRange(_)) | None => {}
        }
    }
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..Default::default()
    }
}

/// etcd's key-range convention, written out.
fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

fn keys_in<'a>(state: &'a Kvs, start: &'a [u8], end: &'a [u8]) -> Vec<&'a KeyValue> {
    state
        .values()
        .filter(|kv| in_range(&kv.key, start, end))
        .collect()
}

/// etcd's Range over one state: count ignores limit and filters; without a
/// sort order and filters only limit + 1 keys (in key order) are fetched; a
/// target other than the key sorts ascending by default; ties stay in key
/// order (reversed with the rest for DESCEND); filters apply before the limit.
fn range_over(state: &Kvs, request: &RangeRequest, header_revision: i64) -> RangeResponse {
    let found = keys_in(state, &request.key, &request.range_end);
    let count = found.len() as i64;
    if request.count_only {
        return RangeResponse {
            header: Some(header(header_revision)),
            kvs: Vec::new(),
            more: false,
            count,
        };
    }
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    let fetch = if request.sort_order != 0 || filtered || request.limit <= 0 {
        found.len()
    } else {
        found.len().min(request.limit as usize + 1)
    };
    let mut kvs: Vec<KeyValue> = found.into_iter().take(fetch).cloned().collect();
    let bound_ok =
        |value: i64, min: i64, max: i64| (min == 0 || value >= min) && (max == 0 || value <= max);
    kvs.retain(|kv| {
        bound_ok(
            kv.mod_revision,
            request.min_mod_revision,
            request.max_mod_revision,
        ) && bound_ok(
            kv.create_revision,
            request.min_create_revision,
            request.max_create_revision,
        )
    });
    let order = if request.sort_target != 0 && request.sort_order == 0 {
        1
    } else {
        request.sort_order
    };
    if order != 0 {
        match request.sort_target {
            0 => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
            1 => kvs.sort_by_key(|kv| kv.version),
            2 => kvs.sort_by_key(|kv| kv.create_revision),
            3 => kvs.sort_by_key(|kv| kv.mod_revision),
            _ => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        }
        if order == 2 {
            kvs.reverse();
        }
    }
    let mut more = false;
    if request.limit > 0 && kvs.len() as i64 > request.limit {
        kvs.truncate(request.limit as usize);
        more = true;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        header: Some(header(header_revision)),
        kvs,
        more,
        count,
    }
}

fn compare_one(compare: &Compare, kv: &KeyValue) -> bool {
    let union = compare.target_union.as_ref();
    let number = |found: i64| -> std::cmp::Ordering {
        let wanted = match (compare.target, union) {
            (t, Some(TargetUnion::Version(n))) if t == CompareTarget::Version as i32 => *n,
            (t, Some(TargetUnion::CreateRevision(n))) if t == CompareTarget::Create as i32 => *n,
            (t, Some(TargetUnion::ModRevision(n))) if t == CompareTarget::Mod as i32 => *n,
            (t, Some(TargetUnion::Lease(n))) if t == CompareTarget::Lease as i32 => *n,
            _ => 0,
        };
        found.cmp(&wanted)
    };
    let ordering = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Value) => {
            let wanted: &[u8] = match union {
                Some(TargetUnion::Value(value)) => value,
                _ => &[],
            };
            kv.value.as_slice().cmp(wanted)
        }
        Ok(CompareTarget::Create) => number(kv.create_revision),
        Ok(CompareTarget::Mod) => number(kv.mod_revision),
        Ok(CompareTarget::Lease) => number(kv.lease),
        Ok(CompareTarget::Version) | Err(_) => number(kv.version),
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Equal) | Err(_) => ordering.is_eq(),
    }
}

/// etcd's compare: every key of the range must pass; no key at all compares
/// as a zero KeyValue, except that a VALUE compare is then false.
fn compare_holds(state: &Kvs, compare: &Compare) -> bool {
    let found = keys_in(state, &compare.key, &compare.range_end);
    if found.is_empty() {
        return compare.target != CompareTarget::Value as i32
            && compare_one(compare, &KeyValue::default());
    }
    found.into_iter().all(|kv| compare_one(compare, kv))
}

#[derive(Clone, Debug)]
struct Model {
    /// `states[r]` is the key space at revision `r`; 0 is unused, 1 is empty.
    states: Vec<Kvs>,
    /// `events[r]` is what revision `r` did.
    events: Vec<Vec<Event>>,
    compacted: i64,
    leases: BTreeSet<i64>,
}

impl Model {
    fn new() -> Self {
        Self {
            states: vec![Kvs::new(), Kvs::new()],
            events: vec![Vec::new(), Vec::new()],
            compacted: -1,
            leases: BTreeSet::new(),
        }
    }

    fn current(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn latest(&self) -> &Kvs {
        &self.states[self.states.len() - 1]
    }

    fn state_at(&self, revision: i64) -> &Kvs {
        &self.states[revision as usize]
    }

    /// Which revision a read of `requested` sees, or why it cannot.
    fn resolve(&self, requested: i64) -> Result<i64, Refusal> {
        if requested > self.current() {
            return Err(Refusal::Etcd(EtcdError::FutureRevision));
        }
        if requested <= 0 {
            return Ok(self.current());
        }
        if requested < self.compacted {
            return Err(Refusal::Compacted(self.compacted));
        }
        Ok(requested)
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Refusal> {
        let at = self.resolve(request.revision)?;
        Ok(range_over(self.state_at(at), request, self.current()))
    }

    /// The events of revisions `from..=current`, as a watcher with prev_kv
    /// gets them: the previous value is unknown below the compact revision.
    fn events_since(&self, from: i64) -> Vec<RevisionEvents> {
        let mut found = Vec::new();
        for revision in from.max(1)..=self.current() {
            let events = &self.events[revision as usize];
            if events.is_empty() {
                continue;
            }
            let events = events
                .iter()
                .map(|event| {
                    let mut event = event.clone();
                    if revision - 1 < self.compacted {
                        event.prev_kv = None;
                    }
                    event
                })
                .collect();
            found.push(RevisionEvents { revision, events });
        }
        found
    }

    fn check_put(&self, put: &PutRequest) -> Result<(), Refusal> {
        if put.lease != 0 && !self.leases.contains(&put.lease) {
            return Err(Refusal::Etcd(EtcdError::LeaseNotFound));
        }
        if (put.ignore_value || put.ignore_lease) && !self.latest().contains_key(&put.key) {
            return Err(Refusal::Etcd(EtcdError::KeyNotFound));
        }
        Ok(())
    }

    /// Applies one command: its reply (header included) and, if it wrote,
    /// the revision it made.
    fn apply(&mut self, op: &Op) -> (Result<Reply, Refusal>, Option<RevisionEvents>) {
        let outcome = match op {
            Op::Put(put) => self.check_put(put).map(|()| {
                let mut change = Change::new(self);
                let response = change.put(put);
                (Reply::Put(response), change.finish())
            }),
            Op::DeleteRange(delete) => {
                let mut change = Change::new(self);
                let response = change.delete(delete);
                Ok((Reply::DeleteRange(response), change.finish()))
            }
            Op::Txn(txn) => self.txn(txn),
            Op::Compaction(compaction) => self.compact(compaction),
            Op::LeaseGrant(grant) => {
                if self.leases.contains(&grant.id) {
                    Err(Refusal::Etcd(EtcdError::LeaseExists))
                } else {
                    self.leases.insert(grant.id);
                    Ok((
                        Reply::LeaseGrant(LeaseGrantResponse {
                            header: None,
                            id: grant.id,
                            ttl: grant.ttl,
                            error: String::new(),
                        }),
                        None,
                    ))
                }
            }
            Op::LeaseRevoke(revoke) => {
                if self.leases.remove(&revoke.id) {
                    let mut change = Change::new(self);
                    let doomed: Vec<Vec<u8>> = change
                        .state
                        .values()
                        .filter(|kv| kv.lease == revoke.id)
                        .map(|kv| kv.key.clone())
                        .collect();
                    for key in doomed {
                        change.delete_key(&key);
                    }
                    Ok((
                        Reply::LeaseRevoke(LeaseRevokeResponse { header: None }),
                        change.finish(),
                    ))
                } else {
                    Err(Refusal::Etcd(EtcdError::LeaseNotFound))
                }
            }
            Op::LeaseClaim(_)
            | Op::LeaseExpire(_)
            | Op::LeaseCheckpoint(_)
            | Op::Alarm(_)
            | Op::PublisherClaim(_) => {
                unreachable!(
                    "no plan makes fenced lease commands, alarms or publisher claims; tests/semantics covers them"
                )
            }
        };
        match outcome {
            Ok((reply, written)) => {
                let revision = written.map(|(state, events)| {
                    self.states.push(state);
                    self.events.push(events.clone());
                    RevisionEvents {
                        revision: self.current(),
                        events,
                    }
                });
                (Ok(reply.with_revision(self.current())), revision)
            }
            Err(refusal) => (Err(refusal), None),
        }
    }

    fn compact(
        &mut self,
        request: &CompactionRequest,
    ) -> Result<(Reply, Option<Written>), Refusal> {
        if request.revision <= self.compacted {
            return Err(Refusal::Compacted(self.compacted));
        }
        if request.revision > self.current() {
            return Err(Refusal::Etcd(EtcdError::FutureRevision));
        }
        self.compacted = request.revision;
        Ok((Reply::Compaction(CompactionResponse { header: None }), None))
    }

    /// The outcomes of every compare on the path the txn takes, all against
    /// the state before it.
    fn choose(&self, txn: &TxnRequest, path: &mut Vec<bool>) {
        let succeeded = txn
            .compare
            .iter()
            .all(|compare| compare_holds(self.latest(), compare));
        path.push(succeeded);
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in branch {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                self.choose(nested, path);
            }
        }
    }

    /// etcd's checks before a txn runs: puts' leases and ignore flags, and
    /// ranges' revisions, on the chosen path.
    fn check_txn(
        &self,
        txn: &TxnRequest,
        path: &mut std::slice::Iter<'_, bool>,
    ) -> Result<(), Refusal> {
        let succeeded = path.next().copied().unwrap_or(false);
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in branch {
            match &op.request {
                Some(Request::RequestPut(put)) => self.check_put(put)?,
                Some(Request::RequestRange(range)) => {
                    if range.revision > 0 {
                        self.resolve(range.revision)?;
                    }
                }
                Some(Request::RequestTxn(nested)) => self.check_txn(nested, path)?,
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    /// Whether `op` would write one key twice in its revision. etcd's
    /// duplicate-key check (and `validate::check_txn`) lets one case through:
    /// a nested txn puts a key and a later sibling nested txn deletes it.
    /// etcd then records both events in the revision; the store's history
    /// (`Store::events`) keeps only the last, and the delete's prev_kv in
    /// `Applied::revisions` is the put from the same txn rather than the key
    /// before the txn. Those commands are left out of the random cases.
    fn writes_a_key_twice(&self, op: &Op) -> bool {
        let mut trial = self.clone();
        let Some(revision) = trial.apply(op).1 else {
            return false;
        };
        let mut keys = BTreeSet::new();
        revision
            .events
            .iter()
            .filter_map(|event| event.kv.as_ref())
            .any(|kv| !keys.insert(kv.key.clone()))
    }

    fn txn(&mut self, txn: &TxnRequest) -> Result<(Reply, Option<Written>), Refusal> {
        let mut path = Vec::new();
        self.choose(txn, &mut path);
        self.check_txn(txn, &mut path.iter())?;
        let mut change = Change::new(self);
        let response = change.txn(txn, &mut path.iter());
        Ok((Reply::Txn(response), change.finish()))
    }
}

/// A new state and the events that made it.
type Written = (Kvs, Vec<Event>);

/// One command's writes, on a copy of the latest state.
struct Change<'m> {
    model: &'m Model,
    state: Kvs,
    events: Vec<Event>,
}

impl<'m> Change<'m> {
    fn new(model: &'m Model) -> Self {
        Self {
            model,
            state: model.latest().clone(),
            events: Vec::new(),
        }
    }

    fn main(&self) -> i64 {
        self.model.current() + 1
    }

    fn finish(self) -> Option<Written> {
        if self.events.is_empty() {
            None
        } else {
            Some((self.state, self.events))
        }
    }

    fn put(&mut self, put: &PutRequest) -> PutResponse {
        let previous = self.state.get(&put.key).cloned();
        let main = self.main();
        let kv = match &previous {
            Some(previous) => KeyValue {
                key: put.key.clone(),
                create_revision: previous.create_revision,
                mod_revision: main,
                version: previous.version + 1,
                value: if put.ignore_value {
                    previous.value.clone()
                } else {
                    put.value.clone()
                },
                lease: if put.ignore_lease {
                    previous.lease
                } else {
                    put.lease
                },
            },
            None => KeyValue {
                key: put.key.clone(),
                create_revision: main,
                mod_revision: main,
                version: 1,
                value: put.value.clone(),
                lease: put.lease,
            },
        };
        self.state.insert(put.key.clone(), kv.clone());
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: self.model.latest().get(&put.key).cloned(),
        });
        PutResponse {
            header: None,
            prev_kv: if put.prev_kv { previous } else { None },
        }
    }

    fn delete_key(&mut self, key: &[u8]) -> Option<KeyValue> {
        let previous = self.state.remove(key)?;
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.to_vec(),
                mod_revision: self.main(),
                ..Default::default()
            }),
            prev_kv: self.model.latest().get(key).cloned(),
        });
        Some(previous)
    }

    fn delete(&mut self, delete: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<Vec<u8>> = keys_in(&self.state, &delete.key, &delete.range_end)
            .into_iter()
            .map(|kv| kv.key.clone())
            .collect();
        let mut prev_kvs = Vec::new();
        for key in &doomed {
            prev_kvs.extend(self.delete_key(key));
        }
        DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs: if delete.prev_kv { prev_kvs } else { Vec::new() },
        }
    }

    /// A Range inside the txn: the latest read sees the txn's writes so far.
    fn range(&self, request: &RangeRequest) -> RangeResponse {
        let read_at = if self.events.is_empty() {
            self.model.current()
        } else {
            self.main()
        };
        if request.revision <= 0 || request.revision == read_at {
            range_over(&self.state, request, read_at)
        } else {
            range_over(self.model.state_at(request.revision), request, read_at)
        }
    }

    fn txn(&mut self, txn: &TxnRequest, path: &mut std::slice::Iter<'_, bool>) -> TxnResponse {
        let succeeded = path.next().copied().unwrap_or(false);
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::new();
        for op in branch {
            let response = match &op.request {
                Some(Request::RequestRange(range)) => OpResponse::ResponseRange(self.range(range)),
                Some(Request::RequestPut(put)) => OpResponse::ResponsePut(self.put(put)),
                Some(Request::RequestDeleteRange(delete)) => {
                    OpResponse::ResponseDeleteRange(self.delete(delete))
                }
                Some(Request::RequestTxn(nested)) => {
                    OpResponse::ResponseTxn(self.txn(nested, path))
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        TxnResponse {
            header: None,
            succeeded,
            responses,
        }
    }
}

// ---------------------------------------------------------------------------
// What the cases are made of: plans that become requests against the state
// they run on (revisions are chosen relative to the current one).
// ---------------------------------------------------------------------------

const KEYS: [&[u8]; 5] = [b"a", b"ab", b"b", b"c", b"d"];
const RANGE_ENDS: [&[u8]; 4] = [b"ab", b"b", b"c", b"e"];
const VALUES: [&[u8]; 4] = [b"", b"x", b"y", b"z"];

/// Where a read looks.
#[derive(Clone, Copy, Debug)]
enum At {
    Latest,
    /// `n` revisions before the current one (the latest if that is below 1).
    Back(i64),
    /// One past the current revision.
    Ahead,
}

#[derive(Clone, Debug)]
struct RangePlan {
    key: Vec<u8>,
    range_end: Vec<u8>,
    limit: i64,
    sort_order: i32,
    sort_target: i32,
    keys_only: bool,
    count_only: bool,
    /// min mod, max mod, min create, max create: revisions back from the current.
    filters: [Option<i64>; 4],
    at: At,
}

#[derive(Clone, Debug)]
struct PutPlan {
    key: Vec<u8>,
    value: Vec<u8>,
    lease: i64,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

#[derive(Clone, Debug)]
struct ComparePlan {
    key: Vec<u8>,
    range_end: Vec<u8>,
    target: i32,
    result: i32,
    value: Vec<u8>,
    number: i64,
    /// For CREATE and MOD: revisions back from the current instead of `number`.
    back: Option<i64>,
}

#[derive(Clone, Debug)]
enum OpPlan {
    Range(RangePlan),
    Put(PutPlan),
    Delete(Vec<u8>, Vec<u8>, bool),
    Txn(TxnPlan),
}

#[derive(Clone, Debug)]
struct TxnPlan {
    compares: Vec<ComparePlan>,
    success: Vec<OpPlan>,
    failure: Vec<OpPlan>,
}

#[derive(Clone, Debug)]
enum CommandPlan {
    Put(PutPlan),
    Delete(Vec<u8>, Vec<u8>, bool),
    Txn(TxnPlan),
    /// Compact at `current + 1 - n`.
    Compact(i64),
    Grant(i64, i64),
    Revoke(i64),
}

#[derive(Clone, Debug)]
enum Step {
    /// One call to `apply`: its log entries, each with its commands.
    Apply(Vec<Vec<CommandPlan>>),
    Read(RangePlan),
    /// The last applied entry delivered again: it must be skipped.
    Replay(PutPlan),
}

impl Model {
    fn back(&self, n: i64) -> i64 {
        (self.current() - n).max(1)
    }

    fn range_request(&self, plan: &RangePlan) -> RangeRequest {
        let bound = |filter: Option<i64>| filter.map_or(0, |n| self.back(n));
        RangeRequest {
            key: plan.key.clone(),
            range_end: plan.range_end.clone(),
            limit: plan.limit,
            revision: match plan.at {
                At::Latest => 0,
                At::Back(n) => (self.current() - n).max(0),
                At::Ahead => self.current() + 1,
            },
            sort_order: plan.sort_order,
            sort_target: plan.sort_target,
            serializable: false,
            keys_only: plan.keys_only,
            count_only: plan.count_only,
            min_mod_revision: bound(plan.filters[0]),
            max_mod_revision: bound(plan.filters[1]),
            min_create_revision: bound(plan.filters[2]),
            max_create_revision: bound(plan.filters[3]),
        }
    }

    /// A put that passes the checks before proposing: an ignored value or
    /// lease is not given.
    fn put_request(plan: &PutPlan) -> PutRequest {
        PutRequest {
            key: plan.key.clone(),
            value: if plan.ignore_value {
                Vec::new()
            } else {
                plan.value.clone()
            },
            lease: if plan.ignore_lease { 0 } else { plan.lease },
            prev_kv: plan.prev_kv,
            ignore_value: plan.ignore_value,
            ignore_lease: plan.ignore_lease,
        }
    }

    fn compare(&self, plan: &ComparePlan) -> Compare {
        let target = CompareTarget::try_from(plan.target).unwrap_or(CompareTarget::Version);
        let revision = plan.back.map_or(plan.number, |n| self.back(n));
        let union = match target {
            CompareTarget::Value => TargetUnion::Value(plan.value.clone()),
            CompareTarget::Version => TargetUnion::Version(plan.number),
            CompareTarget::Create => TargetUnion::CreateRevision(revision),
            CompareTarget::Mod => TargetUnion::ModRevision(revision),
            CompareTarget::Lease => TargetUnion::Lease(plan.number),
        };
        Compare {
            result: plan.result,
            target: plan.target,
            key: plan.key.clone(),
            range_end: plan.range_end.clone(),
            target_union: Some(union),
        }
    }

    fn op_request(&self, plan: &OpPlan) -> Request {
        match plan {
            OpPlan::Range(range) => Request::RequestRange(self.range_request(range)),
            OpPlan::Put(put) => Request::RequestPut(Self::put_request(put)),
            OpPlan::Delete(key, range_end, prev_kv) => {
                Request::RequestDeleteRange(DeleteRangeRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    prev_kv: *prev_kv,
                })
            }
            OpPlan::Txn(txn) => Request::RequestTxn(self.txn_request(txn)),
        }
    }

    /// The ops of a branch, less any that would break etcd's rule against
    /// writing a key twice in one txn (refused before proposing).
    fn branch(&self, plans: &[OpPlan]) -> Vec<RequestOp> {
        let mut kept: Vec<RequestOp> = Vec::new();
        for plan in plans {
            kept.push(RequestOp {
                request: Some(self.op_request(plan)),
            });
            let candidate = TxnRequest {
                compare: Vec::new(),
                success: kept.clone(),
                failure: Vec::new(),
            };
            if validate::check_txn(&candidate, &Limits::default()).is_err() {
                kept.pop();
            }
        }
        kept
    }

    fn txn_request(&self, plan: &TxnPlan) -> TxnRequest {
        TxnRequest {
            compare: plan.compares.iter().map(|c| self.compare(c)).collect(),
            success: self.branch(&plan.success),
            failure: self.branch(&plan.failure),
        }
    }

    fn command(&self, plan: &CommandPlan) -> Op {
        match plan {
            CommandPlan::Put(put) => Op::Put(Self::put_request(put)),
            CommandPlan::Delete(key, range_end, prev_kv) => Op::DeleteRange(DeleteRangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                prev_kv: *prev_kv,
            }),
            CommandPlan::Txn(txn) => Op::Txn(self.txn_request(txn)),
            CommandPlan::Compact(n) => Op::Compaction(CompactionRequest {
                revision: (self.current() + 1 - n).max(0),
                physical: false,
            }),
            CommandPlan::Grant(id, ttl) => Op::LeaseGrant(LeaseGrantRequest { ttl: *ttl, id: *id }),
            CommandPlan::Revoke(id) => Op::LeaseRevoke(LeaseRevokeRequest { id: *id }),
        }
    }
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS.to_vec()).prop_map(<[u8]>::to_vec)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(VALUES.to_vec()).prop_map(<[u8]>::to_vec)
}

/// A key and range end: one key, an interval (possibly empty), from a key
/// on, or every key.
fn key_range() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        4 => key().prop_map(|key| (key, Vec::new())),
        2 => (key(), prop::sample::select(RANGE_ENDS.to_vec()))
            .prop_map(|(key, end)| (key, end.to_vec())),
        1 => key().prop_map(|key| (key, vec![0])),
        1 => Just((vec![0], vec![0])),
    ]
}

fn at() -> impl Strategy<Value = At> {
    prop_oneof![
        5 => Just(At::Latest),
        2 => (0i64..=4).prop_map(At::Back),
        1 => Just(At::Ahead),
    ]
}

fn filter() -> impl Strategy<Value = Option<i64>> {
    prop::option::weighted(0.15, 0i64..=4)
}

fn range_plan() -> impl Strategy<Value = RangePlan> {
    (
        key_range(),
        prop_oneof![3 => Just(0i64), 2 => 1i64..=3],
        0i32..=2,
        0i32..=4,
        any::<bool>(),
        prop::bool::weighted(0.15),
        [filter(), filter(), filter(), filter()],
        at(),
    )
        .prop_map(
            |(
                (key, range_end),
                limit,
                sort_order,
                sort_target,
                keys_only,
                count_only,
                filters,
                at,
            )| {
                RangePlan {
                    key,
                    range_end,
                    limit,
                    sort_order,
                    sort_target,
                    keys_only,
                    count_only,
                    filters,
                    at,
                }
            },
        )
}

fn put_plan() -> impl Strategy<Value = PutPlan> {
    (
        key(),
        value(),
        // Lease 3 is never granted.
        prop::sample::select(vec![0i64, 0, 0, 0, 0, 1, 1, 2, 3]),
        any::<bool>(),
        prop::bool::weighted(0.08),
        prop::bool::weighted(0.08),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutPlan {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn compare_plan() -> impl Strategy<Value = ComparePlan> {
    (
        prop_oneof![4 => key().prop_map(|key| (key, Vec::new())), 1 => key_range()],
        0i32..=4,
        0i32..=3,
        value(),
        0i64..=3,
        prop::option::weighted(0.5, 0i64..=3),
    )
        .prop_map(
            |((key, range_end), target, result, value, number, back)| ComparePlan {
                key,
                range_end,
                target,
                result,
                value,
                number,
                back,
            },
        )
}

fn op_plan(depth: u32) -> BoxedStrategy<OpPlan> {
    let leaf = prop_oneof![
        2 => range_plan().prop_map(OpPlan::Range),
        3 => put_plan().prop_map(OpPlan::Put),
        2 => (key_range(), any::<bool>())
            .prop_map(|((key, range_end), prev_kv)| OpPlan::Delete(key, range_end, prev_kv)),
    ];
    if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![6 => leaf, 1 => txn_plan(depth - 1).prop_map(OpPlan::Txn)].boxed()
    }
}

fn txn_plan(depth: u32) -> BoxedStrategy<TxnPlan> {
    (
        prop::collection::vec(compare_plan(), 0..=2),
        prop::collection::vec(op_plan(depth), 1..=3),
        prop::collection::vec(op_plan(depth), 0..=2),
    )
        .prop_map(|(compares, success, failure)| TxnPlan {
            compares,
            success,
            failure,
        })
        .boxed()
}

fn command_plan() -> impl Strategy<Value = CommandPlan> {
    prop_oneof![
        6 => put_plan().prop_map(CommandPlan::Put),
        2 => (key_range(), any::<bool>())
            .prop_map(|((key, range_end), prev_kv)| CommandPlan::Delete(key, range_end, prev_kv)),
        4 => txn_plan(1).prop_map(CommandPlan::Txn),
        1 => (0i64..=4).prop_map(CommandPlan::Compact),
        1 => (1i64..=2, 1i64..=60).prop_map(|(id, ttl)| CommandPlan::Grant(id, ttl)),
        1 => (1i64..=3).prop_map(CommandPlan::Revoke),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let commands = prop_oneof![
        4 => prop::collection::vec(command_plan(), 1..=1),
        1 => prop::collection::vec(command_plan(), 2..=3),
    ];
    let entries = prop_oneof![
        4 => prop::collection::vec(commands.clone(), 1..=1),
        1 => prop::collection::vec(commands, 2..=2),
    ];
    prop_oneof![
        8 => entries.prop_map(Step::Apply),
        2 => range_plan().prop_map(Step::Read),
        1 => put_plan().prop_map(Step::Replay),
    ]
}

/// The steps, and the step before which the store restarts (== len: at the end).
fn scenario() -> impl Strategy<Value = (Vec<Step>, usize)> {
    (
        prop::collection::vec(step(), 1..40),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(steps, restart)| {
            let restart = restart.index(steps.len() + 1);
            (steps, restart)
        })
}

// ---------------------------------------------------------------------------
// Running a case.
// ---------------------------------------------------------------------------

fn fatal(context: &str, error: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{context}: {error}"))
}

struct Run {
    dir: tempfile::TempDir,
    store: Store,
    model: Model,
    /// The last log index given to the store.
    index: u64,
}

/// The ranges read at every revision after every step.
const READS: [(&[u8], &[u8]); 7] = [
    (b"a", b""),
    (b"ab", b""),
    (b"d", b""),
    (b"a", b"b"),
    (b"b", b"\0"),
    (b"\0", b"\0"),
    (b"c", b"a"),
];

impl Run {
    fn new() -> Result<Self, TestCaseError> {
        let dir = tempfile::tempdir().map_err(|error| fatal("tempdir", error))?;
        let store = Store::open(dir.path()).map_err(|error| fatal("open", error))?;
        Ok(Self {
            dir,
            store,
            model: Model::new(),
            index: 0,
        })
    }

    fn restart(self) -> Result<Self, TestCaseError> {
        let Self {
            dir,
            store,
            model,
            index,
        } = self;
        drop(store);
        let store = Store::open(dir.path()).map_err(|error| fatal("reopen", error))?;
        Ok(Self {
            dir,
            store,
            model,
            index,
        })
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Apply(entries) => self.apply(entries),
            Step::Read(plan) => {
                let request = self.model.range_request(plan);
                prop_assert_eq!(
                    self.read(&request)?,
                    self.model.range(&request),
                    "{:?}",
                    request
                );
                Ok(())
            }
            Step::Replay(plan) => {
                if self.index == 0 {
                    return Ok(());
                }
                let before = self.store.status();
                let command = Command {
                    origin: 1,
                    sequence: 0,
                    op: Some(Op::Put(Model::put_request(plan))),
                    ..Default::default()
                };
                let entry = LogEntry {
                    index: self.index,
                    term: 1,
                    commands: vec![command.encode_to_vec().into()],
                };
                let applied = self
                    .store
                    .apply(&[entry])
                    .map_err(|error| fatal("apply", error))?;
                prop_assert!(applied.outcomes.is_empty(), "a replayed entry ran");
                prop_assert!(applied.revisions.is_empty(), "a replayed entry wrote");
                prop_assert_eq!(self.store.status(), before);
                Ok(())
            }
        }
    }

    fn apply(&mut self, entries: &[Vec<CommandPlan>]) -> Result<(), TestCaseError> {
        let mut log = Vec::new();
        let mut ops = Vec::new();
        let mut expected = Vec::new();
        let mut revisions = Vec::new();
        let mut tags = Vec::new();
        for commands in entries {
            self.index += 1;
            let mut encoded = Vec::new();
            for (sequence, plan) in commands.iter().enumerate() {
                let op = self.model.command(plan);
                if self.model.writes_a_key_twice(&op) {
                    // See `writes_a_key_twice`: a known difference, left out.
                    continue;
                }
                if let Op::Txn(txn) = &op {
                    prop_assert_eq!(validate::check_txn(txn, &Limits::default()), Ok(()));
                }
                let (outcome, revision) = self.model.apply(&op);
                expected.push(outcome);
                tags.push(sequence as u64);
                revisions.extend(revision);
                let command = Command {
                    origin: 7,
                    sequence: sequence as u64,
                    op: Some(op.clone()),
                    ..Default::default()
                };
                encoded.push(command.encode_to_vec().into());
                ops.push(op);
            }
            log.push(LogEntry {
                index: self.index,
                term: 1,
                commands: encoded,
            });
        }
        let applied = self
            .store
            .apply(&log)
            .map_err(|error| fatal("apply", error))?;
        prop_assert_eq!(applied.outcomes.len(), expected.len());
        for (((outcome, expected), op), sequence) in applied
            .outcomes
            .into_iter()
            .zip(expected)
            .zip(&ops)
            .zip(tags)
        {
            prop_assert_eq!((outcome.origin, outcome.sequence), (7, sequence));
            let got = match outcome.result {
                Ok(response) => Ok(Reply::from_store(response)),
                Err(error) => Err(Refusal::of(&error).ok_or_else(|| fatal("apply", &error))?),
            };
            prop_assert_eq!(got, expected, "{:?}", op);
        }
        prop_assert_eq!(applied.revisions, revisions, "{:?}", ops);
        prop_assert_eq!(applied.position.index, self.index);
        Ok(())
    }

    fn read(
        &self,
        request: &RangeRequest,
    ) -> Result<Result<RangeResponse, Refusal>, TestCaseError> {
        match self.store.range_now(request) {
            Ok(response) => Ok(Ok(response)),
            Err(error) => match Refusal::of(&error) {
                Some(refusal) => Ok(Err(refusal)),
                None => Err(fatal("range", error)),
            },
        }
    }

    /// Status, every read of `READS` at every readable revision, the edges
    /// of readable history, and the events since the compact revision.
    fn check(&self) -> Result<(), TestCaseError> {
        let model = &self.model;
        let status = self.store.status();
        prop_assert_eq!(status.current, model.current());
        prop_assert_eq!(status.compacted, model.compacted);
        prop_assert_eq!(status.applied.index, self.index);
        let first = model.compacted.max(1);
        for revision in first..=model.current() {
            for (key, range_end) in READS {
                let request = RangeRequest {
                    key: key.to_vec(),
                    range_end: range_end.to_vec(),
                    revision,
                    ..Default::default()
                };
                prop_assert_eq!(self.read(&request)?, model.range(&request), "{:?}", request);
            }
        }
        // Every sort at the latest revision, with and without a limit.
        for sort_target in 0..=4 {
            for sort_order in 0..=2 {
                for limit in [0, 2] {
                    let request = RangeRequest {
                        key: vec![0],
                        range_end: vec![0],
                        limit,
                        sort_order,
                        sort_target,
                        ..Default::default()
                    };
                    prop_assert_eq!(self.read(&request)?, model.range(&request), "{:?}", request);
                }
            }
        }
        let all = |revision: i64| RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        };
        if model.compacted > 1 {
            prop_assert_eq!(
                self.read(&all(model.compacted - 1))?,
                Err(Refusal::Compacted(model.compacted))
            );
        }
        prop_assert_eq!(
            self.read(&all(model.current() + 1))?,
            Err(Refusal::Etcd(EtcdError::FutureRevision))
        );

        let everything = KeyRange::new(&[0], &[0]);
        let events = self
            .store
            .events(&everything, first, true, usize::MAX)
            .map_err(|error| fatal("events", error))?;
        prop_assert_eq!(events, model.events_since(first));
        if model.compacted > 1 {
            let below = self
                .store
                .events(&everything, model.compacted - 1, true, usize::MAX);
            prop_assert_eq!(
                below.map_err(|error| Refusal::of(&error)).err(),
                Some(Some(Refusal::Compacted(model.compacted)))
            );
        }
        Ok(())
    }
}

fn run(steps: &[Step], restart: usize) -> Result<(), TestCaseError> {
    let mut run = Run::new()?;
    run.check()?;
    for (number, step) in steps.iter().enumerate() {
        if number == restart {
            run = run.restart()?;
            run.check()?;
        }
        run.step(step)?;
        run.check()?;
    }
    if restart == steps.len() {
        run = run.restart()?;
        run.check()?;
    }
    Ok(())
}

/// 64 cases unless `PROPTEST_CASES` asks for another number.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases())
    })]

    #[test]
    fn the_store_agrees_with_a_model_of_etcd((steps, restart) in scenario()) {
        run(&steps, restart)?;
    }
}
