//! Reading the store: Ranges and history, each through a RocksDB snapshot
//! taken with the index, the index lock held only while keys are found.

use std::sync::Arc;

use cairn_proto::cairn::mvcc::v1::RevisionEvents;
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse};
use cairn_proto::mvccpb::{event::EventType, Event};
use rocksdb::{IteratorMode, DB};

use super::schema::{self, Record};
use super::{family, Store};
use crate::error::MvccError;
use crate::range::{self, RangeSource};
use crate::revision::Revision;
use crate::tree_index::{KeyRange, TreeIndex};

/// Keys a Range finds under one hold of the index lock.
const RANGE_PIECE: usize = 256;

/// How far a [`RecordCursor`] steps forward before it seeks instead.
const STEPS_BEFORE_SEEK: usize = 8;

/// Records read by revision through one iterator over the `revs` family.
/// A range's keys, in key order, often hold revisions in nearly ascending
/// order (keys written together), so the next record is usually a step or
/// two ahead: stepping costs far less than a lookup from the top of every
/// memtable and level, which each `get` pays.
struct RecordCursor<'a> {
    iterator: rocksdb::DBRawIteratorWithThreadMode<'a, DB>,
}

impl<'a> RecordCursor<'a> {
    fn new(iterator: rocksdb::DBRawIteratorWithThreadMode<'a, DB>) -> Self {
        Self { iterator }
    }

    fn record(&mut self, revision: Revision) -> Result<Record, MvccError> {
        let target = revision.to_key();
        let mut steps = 0;
        loop {
            match self.iterator.key() {
                Some(key) if key == target.as_slice() => break,
                Some(key) if key < target.as_slice() && steps < STEPS_BEFORE_SEEK => {
                    self.iterator.next();
                    steps += 1;
                }
                _ => {
                    self.iterator.seek(target);
                    break;
                }
            }
        }
        self.iterator.status()?;
        match (self.iterator.key(), self.iterator.value()) {
            (Some(key), Some(value)) if key == target.as_slice() => Record::decode(value),
            _ => Err(MvccError::Corrupt(format!(
                "revision {revision:?} is indexed but not stored"
            ))),
        }
    }
}

impl Store {
    /// A Range from local state; the header carries only the current
    /// revision. One key is read at once; a range of keys is read on a
    /// read thread, so a large one holds no async worker and yields the CPU
    /// to writes.
    pub async fn range(
        self: &Arc<Self>,
        request: RangeRequest,
    ) -> Result<RangeResponse, MvccError> {
        if request.range_end.is_empty() {
            return self.range_now(&request);
        }
        let store = self.clone();
        crate::read_threads::run(move || store.range_now(&request))
            .await
            .ok_or(MvccError::Stopped)?
    }

    /// A Range, read through a RocksDB snapshot taken with the index. The
    /// index lock is held only while a piece of the range's keys is found,
    /// never while values are read, so a large range does not hold the
    /// applier back. Between pieces a compaction past the revision read
    /// would leave the rest unreadable: a read at the latest revision then
    /// starts again, a read at a given revision fails as compacted.
    pub fn range_now(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let key_range = KeyRange::new(&request.key, &request.range_end);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.range_once(request, &key_range) {
                Err(MvccError::Compacted { .. }) if request.revision <= 0 && attempts < 3 => {}
                answered => return answered,
            }
        }
    }

    fn range_once(
        &self,
        request: &RangeRequest,
        key_range: &KeyRange,
    ) -> Result<RangeResponse, MvccError> {
        let (at, current, snapshot, mut keys) = {
            let state = self.state.read();
            let at = state.bounds().resolve(request.revision)?;
            let piece = piece_of(&state.tree, key_range, None, at);
            (at, state.current, self.db.snapshot(), piece)
        };
        while keys.len() % RANGE_PIECE == 0 && !keys.is_empty() {
            let after = keys.last().map(|(key, _)| key.clone());
            let state = self.state.read();
            if state.compacted > at {
                return Err(MvccError::Compacted {
                    compact_revision: state.compacted,
                });
            }
            let piece = piece_of(&state.tree, key_range, after.as_deref(), at);
            drop(state);
            if piece.is_empty() {
                break;
            }
            keys.extend(piece);
        }
        let mut records = RecordCursor::new(snapshot.raw_iterator_cf(self.family(schema::REVS)?));
        range::fill(
            range::Found::from(keys),
            request,
            current,
            range::MAX_RESPONSE_BYTES,
            |revision| records.record(revision),
        )
    }

    /// The events of revisions `from..` for a key range, one entry per
    /// revision, at most `max_revisions` of them, up to the current revision.
    pub fn events(
        &self,
        key_range: &KeyRange,
        from: i64,
        with_prev_kv: bool,
        max_revisions: usize,
    ) -> Result<Vec<RevisionEvents>, MvccError> {
        let state = self.state.read();
        let from = from.max(1);
        if from < state.compacted {
            return Err(MvccError::Compacted {
                compact_revision: state.compacted,
            });
        }
        let view = View {
            db: &self.db,
            tree: &state.tree,
        };
        let mut revisions: Vec<RevisionEvents> = Vec::new();
        for (key, revision) in state.tree.since(key_range, from) {
            let is_new = revisions
                .last()
                .is_none_or(|last| last.revision != revision.main);
            if is_new {
                if revisions.len() == max_revisions {
                    break;
                }
                revisions.push(RevisionEvents {
                    revision: revision.main,
                    events: Vec::new(),
                    // History keeps no terms.
                    raft_term: 0,
                });
            }
            let record = view.record(revision)?;
            let prev_kv = if with_prev_kv {
                match state.tree.get(&key, revision.main - 1) {
                    Some(previous) => Some(view.record(previous.modified)?.kv),
                    None => None,
                }
            } else {
                None
            };
            let event = Event {
                r#type: if record.tombstone {
                    EventType::Delete
                } else {
                    EventType::Put
                } as i32,
                kv: Some(record.kv),
                prev_kv,
            };
            if let Some(last) = revisions.last_mut() {
                last.events.push(event);
            }
        }
        Ok(revisions)
    }

    /// etcd's HashKV: a CRC32 over every write kept in the revision index up
    /// to `revision` (0: the current one). Equal on replicas that applied the
    /// same log. Returns (hash, hashed revision, compact revision).
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), MvccError> {
        let (snapshot, at, compacted) = {
            let state = self.state.read();
            let at = if revision <= 0 {
                state.current
            } else {
                state.bounds().resolve(revision)?
            };
            (self.db.snapshot(), at, state.compacted)
        };
        let revs = self.family(schema::REVS)?;
        let end = Revision::new(at, i64::MAX).to_key();
        let mut hasher = crc32fast::Hasher::new();
        for item in snapshot.iterator_cf(revs, IteratorMode::Start) {
            let (key, value) = item?;
            if key.as_ref() > end.as_slice() {
                break;
            }
            hasher.update(&key);
            hasher.update(&value);
        }
        Ok((hasher.finalize(), at, compacted))
    }
}

/// Up to [`RANGE_PIECE`] keys of `range` after `after` that existed at `at`.
fn piece_of(
    tree: &TreeIndex,
    range: &KeyRange,
    after: Option<&[u8]>,
    at: i64,
) -> Vec<(Arc<[u8]>, Revision)> {
    tree.range_after(range, after, at)
        .take(RANGE_PIECE)
        .map(|(key, key_at)| (key.clone(), key_at.modified))
        .collect()
}

/// A reader's view: the index under the lock, values from RocksDB.
struct View<'a> {
    db: &'a DB,
    tree: &'a TreeIndex,
}

impl RangeSource for View<'_> {
    fn tree(&self) -> &TreeIndex {
        self.tree
    }

    fn record(&self, revision: Revision) -> Result<Record, MvccError> {
        read_record(self.db, revision)
    }
}

pub(crate) fn read_record(db: &DB, revision: Revision) -> Result<Record, MvccError> {
    let revs = family(db, schema::REVS)?;
    let bytes = db.get_pinned_cf(revs, revision.to_key())?.ok_or_else(|| {
        MvccError::Corrupt(format!("revision {revision:?} is indexed but not stored"))
    })?;
    Record::decode(&bytes)
}
