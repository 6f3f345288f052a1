//! The replica's state: RocksDB on disk (see `schema`) and, in memory, the key
//! index and lease table rebuilt from it at start. One writer (the applier)
//! changes it; readers take a consistent view under a read lock and read
//! values through a RocksDB snapshot taken with it.

mod apply;
mod reads;
pub(crate) mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cairn_proto::cairn::mvcc::v1::{AuthState, LeaseHolder, LeaseRecord, PublisherClaim};
use cairn_proto::etcdserverpb::AlarmMember;
use parking_lot::RwLock;
use prost::Message;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, Options, DB,
};

use crate::error::MvccError;
use crate::range::ReadBounds;
use crate::tree_index::TreeIndex;
use schema::KeyRow;

/// What applying log entries takes and gives back, for the replica and the tests that drive the store.
pub use apply::{
    Applied, AuthChanged, FencedResponse, LogEntry, Outcome, PublisherClaimed, Reply, RestorePoint,
};

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
    /// Users, roles, permissions and whether auth is on.
    pub auth: AuthState,
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
            auth: AuthState {
                revision: 1,
                ..Default::default()
            },
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
        options.set_db_write_buffer_size(ALL_WRITE_BUFFERS_BYTES);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let families = schema::FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, family_options(&cache)));
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

    /// Why a restore cannot replace this store's state, if it cannot.
    pub(crate) fn not_fresh(&self) -> Option<MvccError> {
        self.state.read().not_fresh()
    }

    /// Whether a restore may still replace this store's state.
    pub(crate) fn is_fresh(&self) -> bool {
        self.not_fresh().is_none()
    }

    /// The replica that publishes the revision stream.
    pub fn publisher(&self) -> PublisherClaim {
        self.state.read().publisher.clone()
    }

    /// What `look` makes of the auth state as it is now (under the read
    /// lock: `look` must be quick).
    pub(crate) fn with_auth<T>(&self, look: impl FnOnce(&AuthState) -> T) -> T {
        look(&self.state.read().auth)
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

    /// Makes this (restored) store the state at `point`: its applied
    /// position becomes the Restore's entry, and the claims and alarms in
    /// force there carry over, the lease claim one epoch up and held by no
    /// one. Written synced: the store is about to be swapped in.
    pub(crate) fn adopt_restore(&self, point: &RestorePoint) -> Result<(), MvccError> {
        let mut state = self.state.write();
        let holder = LeaseHolder {
            holder: String::new(),
            epoch: point.holder.epoch + 1,
            claim_index: point.index,
            checkpoint_index: point.index,
        };
        let applied = LogPosition {
            index: point.index,
            term: point.term,
        };
        let meta = self.family(schema::META)?;
        let mut batch = rocksdb::WriteBatch::default();
        let mut position = Vec::with_capacity(16);
        position.extend_from_slice(&(applied.index as i64).to_be_bytes());
        position.extend_from_slice(&(applied.term as i64).to_be_bytes());
        batch.put_cf(meta, schema::META_APPLIED, position);
        batch.put_cf(meta, schema::META_LEASE_HOLDER, holder.encode_to_vec());
        batch.put_cf(
            meta,
            schema::META_PUBLISHER,
            point.publisher.encode_to_vec(),
        );
        let alarms = cairn_proto::cairn::mvcc::v1::AlarmList {
            alarms: point.alarms.clone(),
        };
        batch.put_cf(meta, schema::META_ALARMS, alarms.encode_to_vec());
        self.db.write(batch)?;
        self.db.flush_wal(true)?;
        state.applied = applied;
        state.holder = holder;
        state.publisher = point.publisher.clone();
        state.alarms = point.alarms.clone();
        Ok(())
    }

    /// Makes every write so far durable (the WAL is synced).
    pub fn sync(&self) -> Result<(), MvccError> {
        self.db.flush_wal(true)?;
        Ok(())
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

/// Bytes all families together may buffer: past it the largest buffer is
/// written out, so a replica's write buffers stay bounded however the
/// writes spread over families.
const ALL_WRITE_BUFFERS_BYTES: usize = 24 * 1024 * 1024;

/// One block cache for every family. Left alone, RocksDB gives each family
/// a 32 MiB cache of its own.
const BLOCK_CACHE_BYTES: usize = 16 * 1024 * 1024;

fn family_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    let mut options = Options::default();
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    options.set_block_based_table_factory(&table);
    options
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
    if let Some(bytes) = db.get_cf(meta, schema::META_AUTH)? {
        state.auth = schema::decode_auth(&bytes)?;
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
