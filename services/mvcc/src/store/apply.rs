//! Applying committed commands: deterministic, so every replica that applies
//! the same log holds the same state and computes the same results. Nothing
//! here reads a clock or draws a random number.
//!
//! Every command is checked against the state before it runs, so it either
//! fails with an etcd error and changes nothing, or runs to the end. The
//! writes of a run of entries go to RocksDB as one batch, with the applied
//! log position in the same batch.

use std::collections::HashMap;

use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{
    AlarmList, Command, FencedResult, LeaseCheckpoint, LeaseClaim, LeaseExpire, LeaseHolder,
    LeaseRecord, RevisionEvents,
};
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use prost::Message;
use rocksdb::{IteratorMode, WriteBatch, DB};

use super::schema::{self, KeyRow, Record};
use super::{family, read_record, LogPosition, State};
use crate::error::MvccError;
use crate::range::{self, RangeSource, ReadBounds};
use crate::revision::Revision;
use crate::tree_index::{KeyRange, TreeIndex};

/// A committed log entry as the applier sees it.
#[derive(Clone, Debug, Default)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    /// Encoded `Command`s, applied in order.
    pub commands: Vec<Vec<u8>>,
}

/// What applying a command gave its proposer.
#[derive(Debug)]
pub enum Reply {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    /// LeaseClaim, LeaseExpire, LeaseCheckpoint: fenced by the claim's epoch.
    Fenced(FencedResponse),
    Alarm(AlarmResponse),
}

/// A fenced lease command's result and the revision after it (the result
/// itself has no header to carry it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FencedResponse {
    pub revision: i64,
    pub result: FencedResult,
}

impl Reply {
    fn set_revision(&mut self, revision: i64) {
        let header = Some(ResponseHeader {
            revision,
            ..Default::default()
        });
        match self {
            Self::Put(response) => response.header = header,
            Self::DeleteRange(response) => response.header = header,
            Self::Txn(response) => response.header = header,
            Self::Compaction(response) => response.header = header,
            Self::LeaseGrant(response) => response.header = header,
            Self::LeaseRevoke(response) => response.header = header,
            Self::Fenced(response) => response.revision = revision,
            Self::Alarm(response) => response.header = header,
        }
    }
}

/// One command's result, addressed to whoever proposed it.
#[derive(Debug)]
pub struct Outcome {
    pub origin: u64,
    pub sequence: u64,
    pub result: Result<Reply, MvccError>,
}

/// What one call to [`apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    pub outcomes: Vec<Outcome>,
    /// The events of every revision created, in order.
    pub revisions: Vec<RevisionEvents>,
    /// The trace context of the command behind each of `revisions`.
    pub revision_traces: Vec<HashMap<String, String>>,
    pub position: LogPosition,
}

pub(super) fn apply(
    db: &DB,
    state: &mut State,
    entries: &[LogEntry],
) -> Result<Applied, MvccError> {
    let mut batch = WriteBatch::default();
    let mut overlay: HashMap<Revision, Record> = HashMap::new();
    let mut applied = Applied::default();
    for entry in entries {
        if entry.index <= state.applied.index && state.applied != LogPosition::default() {
            continue;
        }
        for bytes in &entry.commands {
            let command = match Command::decode(bytes.as_slice()) {
                Ok(command) => command,
                Err(error) => {
                    // Every replica skips the same bytes the same way.
                    tracing::warn!(index = entry.index, %error, "skipping an undecodable command");
                    continue;
                }
            };
            // Only traced requests get a span: background commands would be
            // one root trace each.
            let span = if command.trace_context.is_empty() {
                tracing::Span::none()
            } else {
                let span = tracing::info_span!(
                    "mvcc apply",
                    otel.kind = "internal",
                    cairn.log.index = entry.index,
                    cairn.revision = tracing::field::Empty,
                );
                cairn_kit::telemetry::continue_trace(&span, &command.trace_context);
                span
            };
            let _applying = span.enter();
            let mut change = Change {
                db,
                state: &mut *state,
                batch: &mut batch,
                overlay: &mut overlay,
                index: entry.index,
                main: 0,
                sub: 0,
                events: Vec::new(),
            };
            change.main = change.state.current + 1;
            let result = if command.fence_epoch != 0 && !change.in_force(command.fence_epoch) {
                // Proposed under a lease claim that has since been superseded.
                Err(EtcdError::LeaderChanged.into())
            } else {
                change.run(command.op)
            };
            let events = change.finish();
            let result = match result {
                Ok(mut response) => {
                    response.set_revision(state.current);
                    Ok(response)
                }
                Err(error) if error.etcd().is_some() => Err(error),
                Err(fatal) => return Err(fatal),
            };
            if !events.is_empty() {
                span.record("cairn.revision", state.current);
                applied.revisions.push(RevisionEvents {
                    revision: state.current,
                    events,
                });
                applied.revision_traces.push(command.trace_context.clone());
            }
            applied.outcomes.push(Outcome {
                origin: command.origin,
                sequence: command.sequence,
                result,
            });
        }
        state.applied = LogPosition {
            index: entry.index,
            term: entry.term,
        };
    }
    let meta = family(db, schema::META)?;
    let mut position = Vec::with_capacity(16);
    position.extend_from_slice(&(state.applied.index as i64).to_be_bytes());
    position.extend_from_slice(&(state.applied.term as i64).to_be_bytes());
    batch.put_cf(meta, schema::META_APPLIED, position);
    batch.put_cf(meta, schema::META_CURRENT, state.current.to_be_bytes());
    batch.put_cf(meta, schema::META_COMPACTED, state.compacted.to_be_bytes());
    db.write(batch)?;
    applied.position = state.applied;
    Ok(applied)
}

/// One command being applied: the revision it will create if it writes.
struct Change<'a> {
    db: &'a DB,
    state: &'a mut State,
    batch: &'a mut WriteBatch,
    /// Writes earlier in this batch, not yet in RocksDB.
    overlay: &'a mut HashMap<Revision, Record>,
    /// The log index of the entry the command is in.
    index: u64,
    main: i64,
    /// Writes made so far; the next write's sub-revision.
    sub: i64,
    events: Vec<Event>,
}

impl RangeSource for Change<'_> {
    fn tree(&self) -> &TreeIndex {
        &self.state.tree
    }

    fn record(&self, revision: Revision) -> Result<Record, MvccError> {
        match self.overlay.get(&revision) {
            Some(record) => Ok(record.clone()),
            None => read_record(self.db, revision),
        }
    }
}

impl Change<'_> {
    fn run(&mut self, op: Option<Op>) -> Result<Reply, MvccError> {
        if self.out_of_space() && op.as_ref().is_some_and(adds_data) {
            return Err(EtcdError::NoSpace.into());
        }
        match op {
            None => Err(EtcdError::KeyNotFound.into()),
            Some(Op::Put(put)) => {
                self.check_put(&put)?;
                self.put(&put).map(Reply::Put)
            }
            Some(Op::DeleteRange(delete)) => self.delete_range(&delete).map(Reply::DeleteRange),
            Some(Op::Txn(txn)) => self.txn(&txn).map(Reply::Txn),
            Some(Op::Compaction(compaction)) => self.compact(&compaction).map(Reply::Compaction),
            Some(Op::LeaseGrant(grant)) => self.lease_grant(&grant).map(Reply::LeaseGrant),
            Some(Op::LeaseRevoke(revoke)) => self.lease_revoke(&revoke).map(Reply::LeaseRevoke),
            Some(Op::LeaseClaim(claim)) => self.lease_claim(claim).map(Reply::Fenced),
            Some(Op::LeaseExpire(expire)) => self.lease_expire(&expire).map(Reply::Fenced),
            Some(Op::LeaseCheckpoint(checkpoint)) => {
                self.lease_checkpoint(&checkpoint).map(Reply::Fenced)
            }
            Some(Op::Alarm(alarm)) => self.alarm(&alarm).map(Reply::Alarm),
        }
    }

    /// Whether a NOSPACE alarm is raised: etcd then refuses what adds data.
    fn out_of_space(&self) -> bool {
        self.state
            .alarms
            .iter()
            .any(|alarm| alarm.alarm == AlarmType::Nospace as i32)
    }

    /// Raises or disarms an alarm; the answer lists the alarms it changed.
    fn alarm(&mut self, request: &AlarmRequest) -> Result<AlarmResponse, MvccError> {
        let member = AlarmMember {
            member_id: request.member_id,
            alarm: request.alarm,
        };
        let key = |alarm: &AlarmMember| (alarm.member_id, alarm.alarm);
        let mut changed = Vec::new();
        if request.action == AlarmAction::Activate as i32 {
            if request.alarm != AlarmType::None as i32
                && !self
                    .state
                    .alarms
                    .iter()
                    .any(|raised| key(raised) == key(&member))
            {
                self.state.alarms.push(member);
                self.state.alarms.sort_by_key(key);
                changed.push(member);
            }
        } else if request.action == AlarmAction::Deactivate as i32 {
            // etcd's disarm: NONE or member 0 matches every alarm.
            let matches = |raised: &AlarmMember| {
                (request.member_id == 0 || raised.member_id == request.member_id)
                    && (request.alarm == AlarmType::None as i32 || raised.alarm == request.alarm)
            };
            changed = self
                .state
                .alarms
                .iter()
                .copied()
                .filter(|raised| matches(raised))
                .collect();
            self.state.alarms.retain(|raised| !matches(raised));
        } else {
            changed = self.state.alarms.clone();
        }
        let meta = family(self.db, schema::META)?;
        let list = AlarmList {
            alarms: self.state.alarms.clone(),
        };
        self.batch
            .put_cf(meta, schema::META_ALARMS, list.encode_to_vec());
        Ok(AlarmResponse {
            header: None,
            alarms: changed,
        })
    }

    /// Ends the command: the revision moves on if anything was written.
    fn finish(self) -> Vec<Event> {
        if self.sub > 0 {
            self.state.current = self.main;
        }
        self.events
    }

    /// The revision reads see: the command's own writes once there are any.
    fn read_at(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.main - 1
        }
    }

    fn bounds(&self) -> ReadBounds {
        ReadBounds {
            latest: self.read_at(),
            compacted: self.state.compacted,
        }
    }

    fn live(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        match self.state.tree.get(key, self.read_at()) {
            Some(found) => Ok(Some(self.record(found.modified)?.kv)),
            None => Ok(None),
        }
    }

    /// etcd's checks at apply time: the lease must exist, and the ignore
    /// flags need a key to take the value or lease from.
    fn check_put(&self, put: &PutRequest) -> Result<(), MvccError> {
        if put.lease != 0 && !self.state.leases.contains_key(&put.lease) {
            return Err(EtcdError::LeaseNotFound.into());
        }
        let needs_key = put.ignore_value || put.ignore_lease;
        if needs_key && self.state.tree.get(&put.key, self.read_at()).is_none() {
            return Err(EtcdError::KeyNotFound.into());
        }
        Ok(())
    }

    fn next_revision(&mut self) -> Revision {
        let revision = Revision::new(self.main, self.sub);
        self.sub += 1;
        revision
    }

    /// Writes one record to the revision index and the key index. A column
    /// family that cannot be found fails the apply: skipping the write would
    /// leave the in-memory index ahead of what is on disk.
    fn write(
        &mut self,
        revision: Revision,
        record: Record,
        created: Revision,
        version: i64,
    ) -> Result<(), MvccError> {
        let revs = family(self.db, schema::REVS)?;
        let keys = family(self.db, schema::KEYS)?;
        let row = KeyRow {
            key: record.kv.key.clone(),
            revision,
            tombstone: record.tombstone,
            created,
            version,
        };
        self.batch.put_cf(revs, revision.to_key(), record.encode());
        self.batch
            .put_cf(keys, KeyRow::row_key(&row.key, revision), row.value());
        self.overlay.insert(revision, record);
        Ok(())
    }

    fn put(&mut self, put: &PutRequest) -> Result<PutResponse, MvccError> {
        let previous = self.live(&put.key)?;
        let revision = self.next_revision();
        let value = match (&previous, put.ignore_value) {
            (Some(previous), true) => previous.value.clone(),
            _ => put.value.clone(),
        };
        let lease = match (&previous, put.ignore_lease) {
            (Some(previous), true) => previous.lease,
            _ => put.lease,
        };
        let (created, version) = match &previous {
            Some(previous) => (previous.create_revision, previous.version + 1),
            None => (self.main, 1),
        };
        let kv = KeyValue {
            key: put.key.clone(),
            create_revision: created,
            mod_revision: self.main,
            version,
            value,
            lease,
        };
        self.state
            .tree
            .put(&put.key, revision)
            .map_err(|error| MvccError::Corrupt(format!("key index: {error}")))?;
        let created_at = self
            .state
            .tree
            .get(&put.key, self.main)
            .map_or(revision, |found| found.created);
        let old_lease = previous.as_ref().map_or(0, |previous| previous.lease);
        if old_lease != lease {
            self.detach(old_lease, &put.key)?;
            self.attach(lease, &put.key)?;
        }
        self.write(
            revision,
            Record {
                tombstone: false,
                kv: kv.clone(),
            },
            created_at,
            version,
        )?;
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: previous.clone(),
        });
        Ok(PutResponse {
            header: None,
            prev_kv: if put.prev_kv { previous } else { None },
        })
    }

    fn delete_range(
        &mut self,
        delete: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let at = self.read_at();
        let doomed: Vec<Vec<u8>> = self
            .state
            .tree
            .range(&KeyRange::new(&delete.key, &delete.range_end), at)
            .map(|(key, _)| key.to_vec())
            .collect();
        let mut prev_kvs = Vec::new();
        for key in &doomed {
            let previous = self.delete_key(key)?;
            if delete.prev_kv {
                prev_kvs.extend(previous);
            }
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs,
        })
    }

    /// Deletes one live key; returns what it was.
    fn delete_key(&mut self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        let previous = self.live(key)?;
        let Some(previous_kv) = previous.clone() else {
            return Ok(None);
        };
        let revision = self.next_revision();
        self.state
            .tree
            .tombstone(key, revision)
            .map_err(|error| MvccError::Corrupt(format!("key index: {error}")))?;
        self.detach(previous_kv.lease, key)?;
        let tombstone = KeyValue {
            key: key.to_vec(),
            mod_revision: self.main,
            ..Default::default()
        };
        self.write(
            revision,
            Record {
                tombstone: true,
                kv: tombstone.clone(),
            },
            revision,
            0,
        )?;
        // etcd's event carries the key as it was before this revision, even
        // when an earlier op of the same txn wrote it.
        let before = match self.state.tree.get(key, self.main - 1) {
            Some(found) => Some(self.record(found.modified)?.kv),
            None => None,
        };
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(tombstone),
            prev_kv: before,
        });
        Ok(Some(previous_kv))
    }

    fn attach(&mut self, lease: i64, key: &[u8]) -> Result<(), MvccError> {
        if lease == 0 {
            return Ok(());
        }
        let family = family(self.db, schema::LEASE_KEYS)?;
        self.state
            .lease_keys
            .entry(lease)
            .or_default()
            .insert(key.to_vec());
        self.batch
            .put_cf(family, schema::lease_key_row(lease, key), []);
        Ok(())
    }

    fn detach(&mut self, lease: i64, key: &[u8]) -> Result<(), MvccError> {
        if lease == 0 {
            return Ok(());
        }
        let family = family(self.db, schema::LEASE_KEYS)?;
        if let Some(keys) = self.state.lease_keys.get_mut(&lease) {
            keys.remove(key);
            if keys.is_empty() {
                self.state.lease_keys.remove(&lease);
            }
        }
        self.batch
            .delete_cf(family, schema::lease_key_row(lease, key));
        Ok(())
    }

    /// etcd's Txn: every compare on the path is evaluated against the state
    /// before the txn, the chosen ops are checked, then they run in order.
    fn txn(&mut self, txn: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let mut path = Vec::new();
        self.choose(txn, &mut path)?;
        let mut cursor = path.iter().copied();
        self.check_branch(txn, &mut cursor)?;
        let mut cursor = path.iter().copied();
        self.run_txn(txn, &mut cursor)
    }

    /// The outcome of every compare on the path the txn will take, depth first.
    fn choose(&self, txn: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
        let mut succeeded = true;
        for compare in &txn.compare {
            if !self.compare(compare)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in branch {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                self.choose(nested, path)?;
            }
        }
        Ok(())
    }

    fn check_branch(
        &self,
        txn: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<(), MvccError> {
        let succeeded = path.next().unwrap_or(false);
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in branch {
            match &op.request {
                None => return Err(EtcdError::KeyNotFound.into()),
                Some(Request::RequestPut(put)) => self.check_put(put)?,
                Some(Request::RequestRange(range)) => {
                    self.bounds().resolve(range.revision)?;
                }
                Some(Request::RequestDeleteRange(_)) => {}
                Some(Request::RequestTxn(nested)) => self.check_branch(nested, path)?,
            }
        }
        Ok(())
    }

    fn run_txn(
        &mut self,
        txn: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<TxnResponse, MvccError> {
        let succeeded = path.next().unwrap_or(false);
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match &op.request {
                None => return Err(EtcdError::KeyNotFound.into()),
                Some(Request::RequestRange(request)) => {
                    let bounds = self.bounds();
                    let response = range::range(&*self, request, bounds, bounds.latest)?;
                    OpResponse::ResponseRange(response)
                }
                Some(Request::RequestPut(put)) => OpResponse::ResponsePut(self.put(put)?),
                Some(Request::RequestDeleteRange(delete)) => {
                    OpResponse::ResponseDeleteRange(self.delete_range(delete)?)
                }
                Some(Request::RequestTxn(nested)) => {
                    OpResponse::ResponseTxn(self.run_txn(nested, path)?)
                }
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    /// etcd's compare: every key of the range must satisfy it; no key at all
    /// compares as a zero KeyValue, except that a VALUE compare is then false.
    fn compare(&self, compare: &Compare) -> Result<bool, MvccError> {
        let at = self.read_at();
        let range = KeyRange::new(&compare.key, &compare.range_end);
        let found: Vec<Revision> = self
            .state
            .tree
            .range(&range, at)
            .map(|(_, key_at)| key_at.modified)
            .collect();
        let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
        if found.is_empty() {
            if target == CompareTarget::Value {
                return Ok(false);
            }
            return Ok(compare_kv(compare, target, &KeyValue::default()));
        }
        for revision in found {
            let kv = self.record(revision)?.kv;
            if !compare_kv(compare, target, &kv) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn compact(&mut self, request: &CompactionRequest) -> Result<CompactionResponse, MvccError> {
        let at = request.revision;
        if at <= self.state.compacted {
            return Err(MvccError::Compacted {
                compact_revision: self.state.compacted,
            });
        }
        if at > self.state.current {
            return Err(EtcdError::FutureRevision.into());
        }
        let kept = self.state.tree.compact(at);
        let revs = family(self.db, schema::REVS)?;
        let keys = family(self.db, schema::KEYS)?;
        let end = Revision::new(at, i64::MAX).to_key();
        let mut doomed: Vec<(Revision, Vec<u8>)> = Vec::new();
        for item in self.db.iterator_cf(revs, IteratorMode::Start) {
            let (key, value) = item?;
            if key.as_ref() > end.as_slice() {
                break;
            }
            let revision = Revision::from_key(&key)
                .ok_or_else(|| MvccError::Corrupt("revision index key".into()))?;
            if !kept.contains(&revision) {
                doomed.push((revision, Record::decode(&value)?.kv.key));
            }
        }
        for (revision, record) in self.overlay.iter() {
            if revision.main <= at && !kept.contains(revision) {
                doomed.push((*revision, record.kv.key.clone()));
            }
        }
        for (revision, key) in doomed {
            self.batch.delete_cf(revs, revision.to_key());
            self.batch.delete_cf(keys, KeyRow::row_key(&key, revision));
            self.overlay.remove(&revision);
        }
        self.state.compacted = at;
        Ok(CompactionResponse { header: None })
    }

    fn lease_grant(&mut self, grant: &LeaseGrantRequest) -> Result<LeaseGrantResponse, MvccError> {
        if grant.id <= 0 {
            return Err(EtcdError::LeaseNotFound.into());
        }
        if self.state.leases.contains_key(&grant.id) {
            return Err(EtcdError::LeaseExists.into());
        }
        let record = LeaseRecord {
            id: grant.id,
            ttl: grant.ttl,
            remaining_ms: 0,
        };
        self.store_lease(record)?;
        Ok(LeaseGrantResponse {
            header: None,
            id: grant.id,
            ttl: grant.ttl,
            error: String::new(),
        })
    }

    /// Removes the lease and deletes its keys, all in one revision.
    fn lease_revoke(
        &mut self,
        revoke: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, MvccError> {
        if !self.revoke_lease(revoke.id)? {
            return Err(EtcdError::LeaseNotFound.into());
        }
        Ok(LeaseRevokeResponse { header: None })
    }

    /// Deletes a lease's keys at this command's revision and removes the
    /// lease; false if there is no such lease. Revoke and expire share it so
    /// an expiry is exactly a revoke.
    fn revoke_lease(&mut self, id: i64) -> Result<bool, MvccError> {
        if !self.state.leases.contains_key(&id) {
            return Ok(false);
        }
        let keys: Vec<Vec<u8>> = self
            .state
            .lease_keys
            .get(&id)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.delete_key(&key)?;
        }
        let leases = family(self.db, schema::LEASES)?;
        self.batch.delete_cf(leases, schema::lease_key(id));
        self.state.leases.remove(&id);
        self.state.lease_keys.remove(&id);
        Ok(true)
    }

    /// Writes a lease record to the table and to the batch.
    fn store_lease(&mut self, record: LeaseRecord) -> Result<(), MvccError> {
        let leases = family(self.db, schema::LEASES)?;
        self.batch
            .put_cf(leases, schema::lease_key(record.id), record.encode_to_vec());
        self.state.leases.insert(record.id, record);
        Ok(())
    }

    /// Makes `holder` the claim in force, in memory and in the batch.
    fn store_holder(&mut self, holder: LeaseHolder) -> Result<(), MvccError> {
        let meta = family(self.db, schema::META)?;
        self.batch
            .put_cf(meta, schema::META_LEASE_HOLDER, holder.encode_to_vec());
        self.state.holder = holder;
        Ok(())
    }

    /// Whether `epoch` names the claim in force. Epoch 0 never does: before
    /// any claim nobody may expire or checkpoint.
    fn in_force(&self, epoch: u64) -> bool {
        epoch != 0 && epoch == self.state.holder.epoch
    }

    /// The answer to a fenced command, with the claim in force after it.
    fn fenced(&self, accepted: bool, expired: Vec<i64>) -> FencedResponse {
        FencedResponse {
            revision: 0,
            result: FencedResult {
                accepted,
                holder: Some(self.state.holder.clone()),
                expired,
            },
        }
    }

    /// A claim above the current epoch becomes the claim in force; any other
    /// is void, so of two claims with one epoch the first wins.
    fn lease_claim(&mut self, claim: LeaseClaim) -> Result<FencedResponse, MvccError> {
        if claim.epoch <= self.state.holder.epoch {
            return Ok(self.fenced(false, Vec::new()));
        }
        self.store_holder(LeaseHolder {
            holder: claim.holder,
            epoch: claim.epoch,
            claim_index: self.index,
            checkpoint_index: self.index,
        })?;
        Ok(self.fenced(true, Vec::new()))
    }

    /// Revokes, under the claim in force, every listed lease that exists, all
    /// in one revision; unknown ids are skipped. Void under any other epoch.
    fn lease_expire(&mut self, expire: &LeaseExpire) -> Result<FencedResponse, MvccError> {
        if !self.in_force(expire.epoch) {
            return Ok(self.fenced(false, Vec::new()));
        }
        let mut expired = Vec::new();
        for &id in &expire.ids {
            if self.revoke_lease(id)? {
                expired.push(id);
            }
        }
        Ok(self.fenced(true, expired))
    }

    /// Records, under the claim in force, each listed lease's remaining TTL
    /// and the checkpoint's log index (the holder's sign of life). Void under
    /// any other epoch; unknown ids are skipped.
    fn lease_checkpoint(
        &mut self,
        checkpoint: &LeaseCheckpoint,
    ) -> Result<FencedResponse, MvccError> {
        if !self.in_force(checkpoint.epoch) {
            return Ok(self.fenced(false, Vec::new()));
        }
        for remaining in &checkpoint.leases {
            if let Some(&record) = self.state.leases.get(&remaining.id) {
                self.store_lease(LeaseRecord {
                    remaining_ms: remaining.remaining_ms,
                    ..record
                })?;
            }
        }
        let holder = LeaseHolder {
            checkpoint_index: self.index,
            ..self.state.holder.clone()
        };
        self.store_holder(holder)?;
        Ok(self.fenced(true, Vec::new()))
    }
}

fn compare_kv(compare: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let union = compare.target_union.as_ref();
    let ordering = match target {
        CompareTarget::Value => {
            let wanted: &[u8] = match union {
                Some(TargetUnion::Value(value)) => value,
                _ => &[],
            };
            kv.value.as_slice().cmp(wanted)
        }
        CompareTarget::Version => kv.version.cmp(&number(union, target)),
        CompareTarget::Create => kv.create_revision.cmp(&number(union, target)),
        CompareTarget::Mod => kv.mod_revision.cmp(&number(union, target)),
        CompareTarget::Lease => kv.lease.cmp(&number(union, target)),
    };
    match CompareResult::try_from(compare.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

/// The number a compare targets; a union of another kind reads as 0, as in etcd.
fn number(union: Option<&TargetUnion>, target: CompareTarget) -> i64 {
    match (union, target) {
        (Some(TargetUnion::Version(value)), CompareTarget::Version)
        | (Some(TargetUnion::CreateRevision(value)), CompareTarget::Create)
        | (Some(TargetUnion::ModRevision(value)), CompareTarget::Mod)
        | (Some(TargetUnion::Lease(value)), CompareTarget::Lease) => *value,
        _ => 0,
    }
}

/// What a NOSPACE alarm refuses, as etcd's capped applier does: puts, txns
/// that may put, and lease grants. Reads, deletes, compaction and revokes
/// still work, so space can be freed.
fn adds_data(op: &Op) -> bool {
    match op {
        Op::Put(_) | Op::LeaseGrant(_) => true,
        Op::Txn(txn) => txn_puts(txn),
        _ => false,
    }
}

fn txn_puts(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_puts(nested),
            _ => false,
        })
}
