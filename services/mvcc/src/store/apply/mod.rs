//! Applying committed commands: deterministic, so every replica that applies
//! the same log holds the same state and computes the same results. Nothing
//! here reads a clock or draws a random number.
//!
//! Every command is checked against the state before it runs, so it either
//! fails with an etcd error and changes nothing, or runs to the end. The
//! writes of a run of entries go to RocksDB as one batch, with the applied
//! log position in the same batch.

mod alarms;
mod auth;
mod keys;
mod leases;
mod txn;

pub use auth::AuthChanged;

use std::collections::HashMap;

use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{
    AlarmList, Command, FencedResult, LeaseCheckpoint, LeaseClaim, LeaseExpire, LeaseHolder,
    LeaseRecord, PublisherClaim, RevisionEvents,
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

use super::reads::read_record;
use super::schema::{self, KeyRow, Record};
use super::{family, LogPosition, State};
use crate::error::MvccError;
use crate::range::{self, RangeSource, ReadBounds};
use crate::revision::Revision;
use crate::tree_index::{KeyRange, TreeIndex};

/// A committed log entry as the applier sees it.
#[derive(Clone, Debug, Default)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    /// Encoded `Command`s, applied in order (shared with the message they
    /// arrived in, not copied out of it).
    pub commands: Vec<bytes::Bytes>,
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
    /// PublisherClaim: whether it took effect; the claim in force after it.
    Publisher(PublisherClaimed),
    /// Restore, on a fresh store: committed at this log index; the store is
    /// replaced next (never from `apply` itself, see `Applied::restore`).
    Restore {
        index: u64,
    },
    /// A change to users, roles or the enabled flag.
    Auth(AuthChanged),
}

/// What a publisher claim did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublisherClaimed {
    pub accepted: bool,
    pub publisher: PublisherClaim,
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
            Self::Auth(changed) => changed.revision = revision,
            Self::Publisher(_) | Self::Restore { .. } => {}
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
    /// Set when a Restore command met a fresh store: applying stopped
    /// before its entry (`position` is the entry before it), and the state
    /// is to be replaced as this says.
    pub restore: Option<RestorePoint>,
}

/// Where and how a Restore command replaces a fresh store's state: at the
/// end of log entry `index`, by the restored store with this revision and
/// hash. The claims and alarms in force before the entry carry over (the
/// lease claim one epoch up, held by no one, so that the active cairn-lease
/// is fenced off and an instance claims anew and reads the restored leases).
#[derive(Clone, Debug, PartialEq)]
pub struct RestorePoint {
    pub index: u64,
    pub term: u64,
    pub revision: i64,
    pub hash: u32,
    /// The proposer of the Restore command.
    pub origin: u64,
    pub sequence: u64,
    pub holder: LeaseHolder,
    pub publisher: PublisherClaim,
    pub alarms: Vec<AlarmMember>,
}

impl State {
    /// Why a restore cannot replace this state, if it cannot: only a store
    /// nothing was written to (revision 1, no lease) is replaced, so a
    /// restore never silently discards data.
    pub(crate) fn not_fresh(&self) -> Option<MvccError> {
        if self.current > 1 {
            return Some(MvccError::NotFresh(format!(
                "the cluster already holds data at revision {}; restore needs a fresh cluster",
                self.current
            )));
        }
        if !self.leases.is_empty() {
            return Some(MvccError::NotFresh(format!(
                "the cluster already holds {} lease(s); restore needs a fresh cluster",
                self.leases.len()
            )));
        }
        None
    }
}

/// The first Restore command of an entry, decoded.
fn restore_in(
    commands: &[Option<Command>],
) -> Option<(&Command, &cairn_proto::cairn::mvcc::v1::Restore)> {
    commands
        .iter()
        .flatten()
        .find_map(|command| match &command.op {
            Some(Op::Restore(restore)) => Some((command, restore)),
            _ => None,
        })
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
        let commands: Vec<Option<Command>> = entry
            .commands
            .iter()
            .map(|bytes| match Command::decode(bytes.as_ref()) {
                Ok(command) => Some(command),
                Err(error) => {
                    // Every replica skips the same bytes the same way.
                    tracing::warn!(index = entry.index, %error, "skipping an undecodable command");
                    None
                }
            })
            .collect();
        // A Restore on a fresh store replaces the state at the end of its
        // entry: nothing of the entry is applied here, and what came before
        // it is written now, as the position the swap starts from.
        if let Some((command, restore)) = restore_in(&commands) {
            if state.not_fresh().is_none() {
                applied.restore = Some(RestorePoint {
                    index: entry.index,
                    term: entry.term,
                    revision: restore.revision,
                    hash: restore.hash,
                    origin: command.origin,
                    sequence: command.sequence,
                    holder: state.holder.clone(),
                    publisher: state.publisher.clone(),
                    alarms: state.alarms.clone(),
                });
                break;
            }
        }
        for command in commands {
            let Some(command) = command else {
                continue;
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
            } else if let Err(refused) = change.authorized(&command) {
                Err(refused.into())
            } else {
                change.run(command.op)
            };
            let events = change.finish();
            let result = match result {
                Ok(mut response) => {
                    response.set_revision(state.current);
                    Ok(response)
                }
                Err(error) if error.is_refusal() => Err(error),
                Err(fatal) => return Err(fatal),
            };
            if !events.is_empty() {
                span.record("cairn.revision", state.current);
                applied.revisions.push(RevisionEvents {
                    revision: state.current,
                    events,
                    raft_term: entry.term,
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
            Some(Op::PublisherClaim(claim)) => self.publisher_claim(claim).map(Reply::Publisher),
            Some(Op::Auth(change)) => self.auth_change(&change).map(Reply::Auth),
            // A fresh store never gets here: `apply` stops before the entry.
            Some(Op::Restore(_)) => Err(self.state.not_fresh().unwrap_or_else(|| {
                MvccError::Corrupt("a restore reached the applier of a fresh store".into())
            })),
        }
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
}

/// What a NOSPACE alarm refuses, as etcd's capped applier does: puts, txns
/// that may put, and lease grants. Reads, deletes, compaction and revokes
/// still work, so space can be freed.
fn adds_data(op: &Op) -> bool {
    match op {
        Op::Put(_) | Op::LeaseGrant(_) => true,
        Op::Txn(txn) => txn::txn_puts(txn),
        _ => false,
    }
}
