//! A plain model of etcd's KV semantics: the whole key space at every
//! revision, each command applied in the most direct way it can be.

use std::collections::{BTreeMap, BTreeSet};

use cairn_mvcc::store::{FencedResponse, Reply as StoreReply};
use cairn_mvcc::MvccError;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::RevisionEvents;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantResponse, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};

type Kvs = BTreeMap<Vec<u8>, KeyValue>;

/// Why a command or a read was refused, as a client would tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Etcd(EtcdError),
    /// etcd's compacted error, with the compact revision it reports.
    Compacted(i64),
}

impl Refusal {
    pub(crate) fn of(error: &MvccError) -> Option<Self> {
        match error {
            MvccError::Compacted { compact_revision } => Some(Self::Compacted(*compact_revision)),
            other => other.etcd().map(Self::Etcd),
        }
    }
}

/// A command's response, comparable. Inside a txn only Range responses keep
/// their header (the revision the read saw); the others are compared without.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reply {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Fenced(FencedResponse),
}

impl Reply {
    pub(crate) fn from_store(response: StoreReply) -> Self {
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
            StoreReply::Restore { .. } => unreachable!("the model restores nothing"),
            StoreReply::Auth(_) => unreachable!("the model changes no users or roles"),
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
pub(crate) struct Model {
    /// `states[r]` is the key space at revision `r`; 0 is unused, 1 is empty.
    states: Vec<Kvs>,
    /// `events[r]` is what revision `r` did.
    events: Vec<Vec<Event>>,
    pub(crate) compacted: i64,
    leases: BTreeSet<i64>,
}

impl Model {
    pub(crate) fn new() -> Self {
        Self {
            states: vec![Kvs::new(), Kvs::new()],
            events: vec![Vec::new(), Vec::new()],
            compacted: -1,
            leases: BTreeSet::new(),
        }
    }

    pub(crate) fn current(&self) -> i64 {
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

    pub(crate) fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Refusal> {
        let at = self.resolve(request.revision)?;
        Ok(range_over(self.state_at(at), request, self.current()))
    }

    /// The events of revisions `from..=current`, as a watcher with prev_kv
    /// gets them: the previous value is unknown below the compact revision.
    pub(crate) fn events_since(&self, from: i64) -> Vec<RevisionEvents> {
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
            // History keeps no terms.
            found.push(RevisionEvents {
                revision,
                events,
                raft_term: 0,
            });
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
    pub(crate) fn apply(&mut self, op: &Op) -> (Result<Reply, Refusal>, Option<RevisionEvents>) {
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
            | Op::PublisherClaim(_)
            | Op::Restore(_)
            | Op::Auth(_) => {
                unreachable!(
                    "no plan makes fenced lease commands, alarms, publisher claims, restores or auth changes; tests/semantics, restore's tests and the auth tests cover them"
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
                        raft_term: crate::LOG_TERM,
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
    pub(crate) fn writes_a_key_twice(&self, op: &Op) -> bool {
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
