//! The node's RocksDB: raft log, vote, commit point and snapshot in one database.
//!
//! Column family `log` maps a big-endian index to a bincode entry, so RocksDB's
//! key order is log order; `meta` holds the few single values.

mod log_store;
mod state_machine;
mod tail;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use log_store::LogStore;
pub(crate) use state_machine::{Bookkeeping, StateMachineStore};
pub(crate) use tail::{to_wire, Tail};

use crate::error::LogError;

const CF_LOG: &str = "log";
const CF_META: &str = "meta";

/// Opens (or creates) a node's database and returns the log and state-machine halves.
pub(crate) fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), LogError> {
    std::fs::create_dir_all(dir).map_err(|source| LogError::DataDir {
        dir: dir.display().to_string(),
        source,
    })?;
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Whole-log durability rests on the WAL; keep it and never recycle it unsynced.
    options.set_manual_wal_flush(false);
    let families =
        [CF_LOG, CF_META].map(|name| ColumnFamilyDescriptor::new(name, family_options()));
    let db = Arc::new(DB::open_cf_descriptors(&options, dir, families)?);
    let log = LogStore::new(db.clone())?;
    let state_machine = StateMachineStore::new(db)?;
    Ok((log, state_machine))
}

/// Bytes a column family buffers in memory before it writes a file. RocksDB's
/// 64 MiB default lets the log's memtable alone outgrow the whole process;
/// entries are read back from memory only by a subscriber far behind.
const WRITE_BUFFER_BYTES: usize = 8 * 1024 * 1024;

fn family_options() -> Options {
    let mut options = Options::default();
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    options
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, LogError> {
    bincode::serialize(value).map_err(|error| LogError::Codec(error.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, LogError> {
    bincode::deserialize(bytes).map_err(|error| LogError::Codec(error.to_string()))
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, LogError> {
    db.cf_handle(name)
        .ok_or_else(|| LogError::Codec(format!("column family `{name}` is missing")))
}

fn read_meta<T: DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, LogError> {
    match db.get_pinned_cf(cf(db, CF_META)?, key)? {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

fn sync_write() -> rocksdb::WriteOptions {
    let mut options = rocksdb::WriteOptions::default();
    options.set_sync(true);
    options
}

/// Index to key: big-endian so that byte order is numeric order.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

#[cfg(test)]
mod conformance {
    //! openraft's storage conformance suite, run on the real RocksDB store.

    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{AnyError, StorageIOError};
    use tempfile::TempDir;

    use super::{open, LogStore, StateMachineStore};
    use crate::types::{StorageError, TypeConfig};

    struct RocksBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
            let failed = |error: String| -> StorageError {
                StorageIOError::write(AnyError::error(error)).into()
            };
            let dir = TempDir::new().map_err(|error| failed(error.to_string()))?;
            let (log, state_machine) =
                open(dir.path()).map_err(|error| failed(error.to_string()))?;
            Ok((dir, log, state_machine))
        }
    }

    #[test]
    fn rocksdb_store_passes_openraft_storage_suite() -> Result<(), StorageError> {
        Suite::test_all(RocksBuilder)
    }
}
