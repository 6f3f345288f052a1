//! openraft's log storage on RocksDB.
//!
//! `append` writes the entries with a synced write and reports them flushed
//! before it returns: an append is never acknowledged before it is on disk.
//! openraft 0.9 waits for each append's flush before it does anything else
//! (`append_to_log`), so no two appends could ever share a sync: handing the
//! sync to another thread only added two thread switches to every append.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use super::{cf, decode, encode, index_key, read_meta, sync_write, CF_LOG, CF_META};
use crate::error::LogError;
use crate::metrics::LOG_METRICS;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Entries the store keeps in memory after appending them, for the readers
/// that want the newest: replication to the followers, and the leader's own
/// apply. Older entries are read from RocksDB.
const RECENT_ENTRIES: usize = 1024;

/// The newest appended entries, contiguous, oldest first.
#[derive(Default)]
struct Recent {
    entries: std::collections::VecDeque<Entry>,
}

impl Recent {
    fn push(&mut self, entry: Entry) {
        if self
            .entries
            .back()
            .is_some_and(|newest| newest.log_id.index + 1 != entry.log_id.index)
        {
            self.entries.clear();
        }
        self.entries.push_back(entry);
        if self.entries.len() > RECENT_ENTRIES {
            self.entries.pop_front();
        }
    }

    /// Entries in `[start, end)`, at most `limit`, if all of them are here.
    fn read(&self, start: u64, end: u64, limit: usize) -> Option<Vec<Entry>> {
        let oldest = self.entries.front()?.log_id.index;
        let newest = self.entries.back()?.log_id.index;
        if start < oldest || end > newest + 1 {
            return None;
        }
        let skip = usize::try_from(start - oldest).ok()?;
        let count = usize::try_from(end.saturating_sub(start)).ok()?.min(limit);
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(count)
                .cloned()
                .collect(),
        )
    }

    /// Forgets entries from `index` on (a truncation).
    fn truncate(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|newest| newest.log_id.index >= index)
        {
            self.entries.pop_back();
        }
    }

    /// Forgets entries up to `index` (a purge).
    fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|oldest| oldest.log_id.index <= index)
        {
            self.entries.pop_front();
        }
    }
}

/// The raft log of one node. Cloning shares the database.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<DB>,
    /// The newest appended entries, served without RocksDB.
    recent: Arc<parking_lot::Mutex<Recent>>,
    /// The commit index openraft last reported, for Status (`u64::MAX` = none).
    committed: Arc<AtomicU64>,
}

impl LogStore {
    pub(super) fn new(db: Arc<DB>) -> Result<Self, LogError> {
        let committed = read_meta::<LogId>(&db, KEY_COMMITTED)?.map_or(u64::MAX, |id| id.index);
        Ok(Self {
            db,
            recent: Arc::new(parking_lot::Mutex::new(Recent::default())),
            committed: Arc::new(AtomicU64::new(committed)),
        })
    }

    /// The last commit index openraft reported to this node.
    pub(crate) fn committed_index(&self) -> Option<u64> {
        match self.committed.load(Ordering::Relaxed) {
            u64::MAX => None,
            index => Some(index),
        }
    }

    /// The first index still held; everything before it was purged.
    pub(crate) fn first_index(&self) -> Result<u64, LogError> {
        let last_purged = read_meta::<LogId>(&self.db, KEY_LAST_PURGED)?;
        Ok(last_purged.map_or(0, |id| id.index + 1))
    }

    /// Entries with index in `[start, end)`, at most `limit` of them, in order.
    pub(crate) fn read(&self, start: u64, end: u64, limit: usize) -> Result<Vec<Entry>, LogError> {
        if let Some(entries) = self.recent.lock().read(start, end, limit) {
            return Ok(entries);
        }
        let log = cf(&self.db, CF_LOG)?;
        let mut entries = Vec::new();
        let from = index_key(start);
        for item in self
            .db
            .iterator_cf(log, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item?;
            let index = key_index(&key)?;
            if index >= end || entries.len() >= limit {
                break;
            }
            entries.push(decode::<Entry>(&value)?);
        }
        Ok(entries)
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, LogError> {
        let log = cf(&self.db, CF_LOG)?;
        match self.db.iterator_cf(log, IteratorMode::End).next() {
            Some(item) => {
                let (_, value) = item?;
                Ok(Some(decode::<Entry>(&value)?.log_id))
            }
            None => Ok(None),
        }
    }

    fn put_meta_sync<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), LogError> {
        self.db
            .put_cf_opt(cf(&self.db, CF_META)?, key, encode(value)?, &sync_write())?;
        Ok(())
    }
}

fn key_index(key: &[u8]) -> Result<u64, LogError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| LogError::Codec(format!("log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn to_storage(error: LogError, write: bool) -> StorageError {
    let source = AnyError::error(error.to_string());
    let io = if write {
        StorageIOError::write_logs(source)
    } else {
        StorageIOError::read_logs(source)
    };
    io.into()
}

fn bound_start(bound: Bound<&u64>) -> u64 {
    match bound {
        Bound::Included(index) => *index,
        Bound::Excluded(index) => index.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

fn bound_end(bound: Bound<&u64>) -> u64 {
    match bound {
        Bound::Included(index) => index.saturating_add(1),
        Bound::Excluded(index) => *index,
        Bound::Unbounded => u64::MAX,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = bound_start(range.start_bound());
        let end = bound_end(range.end_bound());
        self.read(start, end, usize::MAX)
            .map_err(|error| to_storage(error, false))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = read_meta::<LogId>(&self.db, KEY_LAST_PURGED)
            .map_err(|error| to_storage(error, false))?;
        let last = self
            .last_entry_id()
            .map_err(|error| to_storage(error, false))?
            .or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta_sync(KEY_VOTE, vote)
            .map_err(|error| StorageIOError::write_vote(AnyError::error(error.to_string())).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        read_meta(&self.db, KEY_VOTE)
            .map_err(|error| StorageIOError::read_vote(AnyError::error(error.to_string())).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: a commit point lost in a crash is learned again from the
        // leader; this copy only lets a restart re-apply without waiting for it.
        let write = || -> Result<(), LogError> {
            self.db
                .put_cf(cf(&self.db, CF_META)?, KEY_COMMITTED, encode(&committed)?)?;
            Ok(())
        };
        write().map_err(|error| to_storage(error, true))?;
        self.committed
            .store(committed.map_or(u64::MAX, |id| id.index), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> =
            read_meta(&self.db, KEY_COMMITTED).map_err(|error| to_storage(error, false))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let write = || -> Result<Vec<Entry>, LogError> {
            let log = cf(&self.db, CF_LOG)?;
            let mut batch = WriteBatch::default();
            let mut written = Vec::new();
            for entry in entries {
                batch.put_cf(log, index_key(entry.log_id.index), encode(&entry)?);
                written.push(entry);
            }
            let started = Instant::now();
            self.db.write_opt(batch, &sync_write())?;
            LOG_METRICS
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            Ok(written)
        };
        // On failure the callback is dropped unanswered: the error returned
        // here is what openraft acts on.
        let written = write().map_err(|error| to_storage(error, true))?;
        let count = written.len();
        {
            let mut recent = self.recent.lock();
            for entry in written {
                recent.push(entry);
            }
        }
        LOG_METRICS.appended_entries.inc_by(count as u64);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let write = || -> Result<(), LogError> {
            let log = cf(&self.db, CF_LOG)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(log, index_key(log_id.index), index_key(u64::MAX));
            self.db.write_opt(batch, &sync_write())?;
            Ok(())
        };
        self.recent.lock().truncate(log_id.index);
        write().map_err(|error| to_storage(error, true))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let write = || -> Result<(), LogError> {
            let log = cf(&self.db, CF_LOG)?;
            let mut batch = WriteBatch::default();
            batch.put_cf(cf(&self.db, CF_META)?, KEY_LAST_PURGED, encode(&log_id)?);
            batch.delete_range_cf(log, index_key(0), index_key(log_id.index.saturating_add(1)));
            self.db.write_opt(batch, &sync_write())?;
            Ok(())
        };
        self.recent.lock().purge(log_id.index);
        write().map_err(|error| to_storage(error, true))?;
        LOG_METRICS
            .first_index
            .set(log_id.index.saturating_add(1) as i64);
        Ok(())
    }
}
