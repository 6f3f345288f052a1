//! The replica's state: RocksDB on disk (see `schema`) and, in memory, the key
//! index and lease table rebuilt from it at start. One writer (the applier)
//! changes it; readers take a consistent view under a read lock and read
//! values through a RocksDB snapshot taken with it.

mod apply;
pub(crate) mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use cairn_proto::cairn::mvcc::v1::{LeaseHolder, LeaseRecord, PublisherClaim, RevisionEvents};
use cairn_proto::etcdserverpb::{AlarmMember, RangeRequest, RangeResponse};
use cairn_proto::mvccpb::{event::EventType, Event};
use parking_lot::RwLock;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, DB};

use crate::error::MvccError;
use crate::range::{self, RangeSource, ReadBounds};
use crate::revision::Revision;
use crate::tree_index::{KeyRange, TreeIndex};
use schema::{KeyRow, Record};

/// What applying log entries takes and gives back, for the replica and the tests that drive the store.
pub use apply::{Applied, FencedResponse, LogEntry, Outcome, PublisherClaimed, Reply};

/// The position in the log the state reflects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPosition {
    pub index: u64,
    pub term: u64,
}

/// What lives in memory beside RocksDB.
#[derive(Debug)]
pub struct State {
    pub tree: TreeIndex,
    /// etcd's current revision: 1 on an empty store.
    pub current: i64,
    /// The last compaction's revision; -1 before any, as etcd reports it.
    pub compacted: i64,
    pub applied: LogPosition,
    pub leases: BTreeMap<i64, LeaseRecord>,
    pub lease_keys: BTreeMap<i64, BTreeSet<Vec<u8>>>,
    /// The cairn-lease claim in force: only its epoch may expire or
    /// checkpoint leases. Epoch 0 (the default) is no claim at all.
    pub holder: LeaseHolder,
    /// etcd's alarms raised, sorted by member and type.
    pub alarms: Vec<AlarmMember>,
    /// The replica that publishes the revision stream; epoch 0 is none.
    pub publisher: PublisherClaim,
}

impl Default for State {
    fn default() -> Self {
        Self {
            tree: TreeIndex::default(),
            current: 1,
            compacted: -1,
            applied: LogPosition::default(),
            leases: BTreeMap::new(),
            lease_keys: BTreeMap::new(),
            holder: LeaseHolder::default(),
            alarms: Vec::new(),
            publisher: PublisherClaim::default(),
        }
    }
}

impl State {
    /// The revisions a read can be served at now.
    pub fn bounds(&self) -> ReadBounds {
        ReadBounds {
            latest: self.current,
            compacted: self.compacted,
        }
    }
}

/// One lease as a reader sees it, with the revision it was read at, so the
/// answer names the state it describes.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseView {
    pub record: LeaseRecord,
    pub keys: Vec<Vec<u8>>,
    pub revision: i64,
}

/// Every lease and the claim in force, read at one point: what a newly
/// active cairn-lease resumes from.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseTable {
    pub leases: Vec<LeaseRecord>,
    pub holder: LeaseHolder,
    pub revision: i64,
    pub applied: LogPosition,
}

/// The store of one replica.
pub struct Store {
    db: DB,
    dir: std::path::PathBuf,
    state: RwLock<State>,
}

/// Summary numbers for status and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    pub current: i64,
    pub compacted: i64,
    pub applied: LogPosition,
    pub keys: usize,
    pub leases: usize,
}

impl Store {
    /// Opens (or creates) the store in `dir` and rebuilds the in-memory index.
    pub fn open(dir: &Path) -> Result<Self, MvccError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // The WAL is written when `sync` flushes it, not on every apply: the
        // replica acknowledges an index to the log only after that sync, so
        // a crash loses nothing the log will not send again.
        options.set_manual_wal_flush(true);
        let families = schema::FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, family_options()));
        let db = DB::open_cf_descriptors(&options, dir, families)?;
        let state = rebuild(&db)?;
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            state: RwLock::new(state),
        })
    }

    /// An empty store whose database lacks the column family `missing`, as
    /// a damaged data directory would: what writes there fails to apply.
    #[cfg(test)]
    pub(crate) fn open_without(dir: &Path, missing: &str) -> Result<Self, MvccError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = schema::FAMILIES
            .iter()
            .filter(|name| **name != missing)
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir, families)?;
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            state: RwLock::new(State::default()),
        })
    }

    /// The store's revisions, applied position and sizes, for Status and the gauges.
    pub fn status(&self) -> StoreStatus {
        let state = self.state.read();
        StoreStatus {
            current: state.current,
            compacted: state.compacted,
            applied: state.applied,
            keys: state.tree.len(),
            leases: state.leases.len(),
        }
    }

    /// The replica that publishes the revision stream.
    pub fn publisher(&self) -> PublisherClaim {
        self.state.read().publisher.clone()
    }

    /// The alarms raised.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.state.read().alarms.clone()
    }

    /// Bytes on disk (files and memtables) and the estimate of live data in them.
    pub fn db_size(&self) -> (i64, i64) {
        let mut total = 0_u64;
        let mut live = 0_u64;
        for name in schema::FAMILIES {
            let Some(family) = self.db.cf_handle(name) else {
                continue;
            };
            let property = |key: &str| {
                self.db
                    .property_int_value_cf(&family, key)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            let memtables = property("rocksdb.cur-size-all-mem-tables");
            total += property("rocksdb.total-sst-files-size") + memtables;
            live += property("rocksdb.estimate-live-data-size") + memtables;
        }
        let clamp = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
        (clamp(total), clamp(live.min(total)))
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A consistent copy of the store in `dir` (hard links where it can):
    /// every column family at one point, the applied log position with them.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), MvccError> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Compacts every column family's files: what etcd's defragment does for
    /// bbolt, giving back the space of deleted and compacted rows.
    pub fn defragment(&self) -> Result<(), MvccError> {
        for name in schema::FAMILIES {
            if let Some(family) = self.db.cf_handle(name) {
                self.db.flush_cf(&family)?;
                self.db
                    .compact_range_cf(&family, None::<&[u8]>, None::<&[u8]>);
            }
        }
        Ok(())
    }

    /// Applies committed log entries, in order, as one write.
    pub fn apply(&self, entries: &[LogEntry]) -> Result<Applied, MvccError> {
        let mut state = self.state.write();
        apply::apply(&self.db, &mut state, entries)
    }

    /// Makes every write so far durable (the WAL is synced).
    pub fn sync(&self) -> Result<(), MvccError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// A Range from local state; the header carries only the current
    /// revision. One key is read at once; a range of keys is read on a
    /// blocking thread, so a large one holds no async worker.
    pub async fn range(
        self: &Arc<Self>,
        request: RangeRequest,
    ) -> Result<RangeResponse, MvccError> {
        if request.range_end.is_empty() {
            return self.range_now(&request);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.range_now(&request))
            .await
            .map_err(|_| MvccError::Stopped)?
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
        let revs = self.family(schema::REVS)?;
        range::fill(
            range::Found::from(keys),
            request,
            current,
            range::MAX_RESPONSE_BYTES,
            |revision| {
                let bytes = snapshot
                    .get_pinned_cf(revs, revision.to_key())?
                    .ok_or_else(|| {
                        MvccError::Corrupt(format!(
                            "revision {revision:?} is indexed but not stored"
                        ))
                    })?;
                Record::decode(&bytes)
            },
        )
    }

    /// Whether a lease exists, and its keys.
    pub fn lease(&self, id: i64) -> Option<(LeaseRecord, Vec<Vec<u8>>)> {
        self.lease_view(id, true)
            .map(|view| (view.record, view.keys))
    }

    /// A lease, its keys if `with_keys`, and the revision they were read at,
    /// all under one lock so they agree.
    pub fn lease_view(&self, id: i64, with_keys: bool) -> Option<LeaseView> {
        let state = self.state.read();
        let record = *state.leases.get(&id)?;
        let keys = match state.lease_keys.get(&id) {
            Some(keys) if with_keys => keys.iter().cloned().collect(),
            _ => Vec::new(),
        };
        Some(LeaseView {
            record,
            keys,
            revision: state.current,
        })
    }

    /// Every lease with its last checkpoint, and the claim in force, at one
    /// applied position.
    pub fn lease_table(&self) -> LeaseTable {
        let state = self.state.read();
        LeaseTable {
            leases: state.leases.values().copied().collect(),
            holder: state.holder.clone(),
            revision: state.current,
            applied: state.applied,
        }
    }

    /// The cairn-lease claim in force.
    pub fn lease_holder(&self) -> LeaseHolder {
        self.state.read().holder.clone()
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

    fn family(&self, name: &str) -> Result<&rocksdb::ColumnFamily, MvccError> {
        family(&self.db, name)
    }
}

pub(crate) fn family<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, MvccError> {
    db.cf_handle(name)
        .ok_or_else(|| MvccError::Corrupt(format!("column family {name} is missing")))
}

/// Bytes a column family buffers in memory before it writes a file. RocksDB's
/// 64 MiB default, times five families, would be most of a replica's memory;
/// reads of recent values are served from the block cache and the OS's pages
/// as well.
const WRITE_BUFFER_BYTES: usize = 16 * 1024 * 1024;

fn family_options() -> Options {
    let mut options = Options::default();
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    options
}

/// Keys a Range finds under one hold of the index lock.
const RANGE_PIECE: usize = 256;

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

/// Reads the in-memory state back from disk.
fn rebuild(db: &DB) -> Result<State, MvccError> {
    let mut state = State::default();
    let meta = family(db, schema::META)?;
    if let Some(bytes) = db.get_cf(meta, schema::META_APPLIED)? {
        let index = bytes.get(..8).map(schema::decode_i64).transpose()?;
        let term = bytes.get(8..16).map(schema::decode_i64).transpose()?;
        state.applied = LogPosition {
            index: index.unwrap_or(0) as u64,
            term: term.unwrap_or(0) as u64,
        };
    }
    if let Some(bytes) = db.get_cf(meta, schema::META_CURRENT)? {
        state.current = schema::decode_i64(&bytes)?;
    }
    if let Some(bytes) = db.get_cf(meta, schema::META_COMPACTED)? {
        state.compacted = schema::decode_i64(&bytes)?;
    }
    if let Some(bytes) = db.get_cf(meta, schema::META_LEASE_HOLDER)? {
        state.holder = schema::decode_holder(&bytes)?;
    }
    if let Some(bytes) = db.get_cf(meta, schema::META_ALARMS)? {
        state.alarms = schema::decode_alarms(&bytes)?.alarms;
    }
    if let Some(bytes) = db.get_cf(meta, schema::META_PUBLISHER)? {
        state.publisher = schema::decode_publisher(&bytes)?;
    }

    let keys = family(db, schema::KEYS)?;
    for item in db.iterator_cf(keys, IteratorMode::Start) {
        let (row, value) = item?;
        let row = KeyRow::decode(&row, &value)?;
        let restored = if row.tombstone {
            state.tree.restore_tombstone(&row.key, row.revision)
        } else {
            state
                .tree
                .restore(&row.key, row.revision, row.created, row.version)
        };
        restored.map_err(|error| MvccError::Corrupt(format!("key index: {error}")))?;
    }

    let leases = family(db, schema::LEASES)?;
    for item in db.iterator_cf(leases, IteratorMode::Start) {
        let (_, value) = item?;
        let record = schema::decode_lease(&value)?;
        state.leases.insert(record.id, record);
    }
    let lease_keys = family(db, schema::LEASE_KEYS)?;
    for item in db.iterator_cf(lease_keys, IteratorMode::From(&[], Direction::Forward)) {
        let (row, _) = item?;
        let (lease, key) = schema::split_lease_key_row(&row)?;
        state.lease_keys.entry(lease).or_default().insert(key);
    }
    Ok(state)
}
