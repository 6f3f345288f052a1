//! etcd's snapshot data model and cairn's store, mapped both ways, so
//! `etcdctl snapshot save` against cairn gives a file etcd restores from,
//! and an etcd snapshot becomes a cairn store.
//!
//! An etcd 3.4 snapshot is a bbolt database ([`crate::bbolt`]) of buckets:
//! - `key`: one entry per write still held. The key is the revision, 8-byte
//!   big-endian main, `_`, 8-byte big-endian sub, plus `t` for a delete
//!   (etcd's `mvcc/revision.go`); the value is the `mvccpb.KeyValue`, for a
//!   delete with only its key set (`storeTxnWrite.delete`). cairn's `revs`
//!   holds the same writes, so the mapping is one to one, with one
//!   exception: cairn's compaction keeps a delete at exactly the compaction
//!   revision (so history from there still shows it) and etcd 3.4's removes
//!   it (`keyIndex.doCompact` skips a generation whose delete is at or
//!   before the revision); export leaves it out, as etcd would hold it.
//! - `lease`: lease id, 8-byte big-endian → `leasepb.Lease{ID=1, TTL=2,
//!   RemainingTTL=3}` (`EtcdLease`). cairn's last checkpointed remaining
//!   milliseconds become whole seconds, rounded up; a lease's keys are not
//!   stored, etcd reattaches them from the keys' `lease` field.
//! - `meta`: `consistent_index` (8-byte big-endian; cairn's applied log
//!   index, which `snapshot restore` overwrites), and after a compaction
//!   `scheduledCompactRev` and `finishedCompactRev`, each a 17-byte revision
//!   key with sub 0 (`kvstore.go`, `kvstore_compaction.go`). Equal, they
//!   say the compaction finished; a later scheduled one is finished at
//!   import, as etcd finishes it when it starts.
//! - `cluster` (`clusterVersion` = `3.4.0`) and `auth` (`authRevision` = 1)
//!   as an etcd 3.4 member writes them when it first starts, and `alarm`,
//!   `authUsers`, `authRoles`, `members`, `members_removed` empty: restore
//!   and start create what they need, and restore replaces the members.
//!   Alarms are not carried over: a restored store raises NOSPACE again if
//!   it is still over its quota.
//!
//! The revision a restored etcd starts from is the last write's, or the
//! compaction's when that is later (`store.restore`); HashKV over the result
//! is etcd's (`hash`).
//!
//! [`export`] reads a RocksDB checkpoint of a replica's store, so apply waits
//! only while the checkpoint is taken. [`import`] checks the buckets whole
//! first, builds the store in a directory beside its destination and
//! renames it into place only once it opens with the expected revisions:
//! a refused snapshot writes nothing.

mod hash;
mod history;
mod mapping;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use prost::Message;
use rocksdb::{IteratorMode, Options, WriteBatch, DB};

use crate::bbolt::{self, Buckets};
use crate::error::MvccError;
use crate::revision::Revision;
use crate::store::schema::{self, KeyRow, Record};
use crate::store::{Store, StoreStatus};
pub use hash::{hash_kv, status, EtcdHashKv, EtcdStatus};
use mapping::{Contents, Write};

/// Rows written to a new store per RocksDB write batch.
const IMPORT_BATCH_ROWS: usize = 4096;

/// The buckets an etcd 3.4 member holding `store`'s data would have, read
/// from a checkpoint of the store taken beside it (hard links, removed
/// afterwards). Every write, lease and revision of the store is held in
/// memory while they are built: about the size of the store's live data.
pub fn export(store: &Store) -> Result<Buckets, MvccError> {
    let checkpoint =
        crate::snapshot::Checkpoint::take(store, crate::snapshot::checkpoint_dir(store))?;
    let contents = read_checkpoint(checkpoint.dir())?;
    Ok(mapping::to_buckets(&contents))
}

/// `store` as the file `etcdctl snapshot save` writes: a bbolt database
/// followed by its SHA-256.
pub fn export_file(store: &Store) -> Result<Vec<u8>, MvccError> {
    let buckets = export(store)?;
    Ok(bbolt::with_sha256_trailer(bbolt::write(&buckets)))
}

/// Reads what an etcd snapshot holds out of a checkpoint of a store.
fn read_checkpoint(dir: &Path) -> Result<Contents, MvccError> {
    let db = DB::open_cf_for_read_only(&Options::default(), dir, schema::FAMILIES, false)?;
    let meta = crate::store::family(&db, schema::META)?;
    let applied = match db.get_cf(meta, schema::META_APPLIED)? {
        Some(bytes) => bytes
            .get(..8)
            .map(schema::decode_i64)
            .transpose()?
            .unwrap_or(0),
        None => 0,
    };
    let compacted = match db.get_cf(meta, schema::META_COMPACTED)? {
        Some(bytes) => schema::decode_i64(&bytes)?,
        None => -1,
    };
    let mut writes = Vec::new();
    let revs = crate::store::family(&db, schema::REVS)?;
    for item in db.iterator_cf(revs, IteratorMode::Start) {
        let (key, value) = item?;
        let revision = Revision::from_key(&key)
            .ok_or_else(|| MvccError::Corrupt("revision index key".into()))?;
        let record = Record::decode(&value)?;
        if record.tombstone && revision.main <= compacted {
            // Kept by cairn for history at the compaction revision; etcd's
            // compaction removes it.
            continue;
        }
        writes.push(Write {
            revision,
            tombstone: record.tombstone,
            kv: record.kv,
        });
    }
    let mut leases = Vec::new();
    let family = crate::store::family(&db, schema::LEASES)?;
    for item in db.iterator_cf(family, IteratorMode::Start) {
        let (_, value) = item?;
        leases.push(schema::decode_lease(&value)?);
    }
    leases.sort_by_key(|lease| lease.id);
    Ok(Contents {
        writes,
        leases,
        compacted,
        consistent_index: u64::try_from(applied).unwrap_or(0),
    })
}

/// Builds a new cairn store in `dir` (which must not exist) from an etcd
/// snapshot's buckets: its writes, their key index, its leases and their
/// keys, the current and compact revisions, and applied log position 0 (a
/// restored store starts a fresh log). Inconsistent buckets are refused
/// with [`MvccError::EtcdSnapshot`] naming what is wrong, and nothing is
/// left behind. Returns the new store's status.
pub fn import(buckets: &Buckets, dir: &Path) -> Result<StoreStatus, MvccError> {
    if dir.exists() {
        return Err(MvccError::EtcdSnapshot(format!(
            "{} exists; import builds a new store",
            dir.display()
        )));
    }
    let contents = mapping::from_buckets(buckets)?;
    // Beside `dir`, so that renaming it into place is atomic.
    let staging = crate::seed::beside(dir, "import")?;
    let built = build(&contents, &staging).and_then(|status| {
        std::fs::rename(&staging, dir)
            .map_err(|error| io_error("renaming the new store", error))?;
        sync_dir(&parent_of(dir))?;
        Ok(status)
    });
    if built.is_err() {
        if let Err(error) = std::fs::remove_dir_all(&staging) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %staging.display(), %error, "cannot remove an unfinished import");
            }
        }
    }
    built
}

/// [`import`] of an etcd snapshot file (with or without its SHA-256
/// trailer, which is checked when present).
pub fn import_file(bytes: &[u8], dir: &Path) -> Result<StoreStatus, MvccError> {
    import(&bbolt::read(bytes)?, dir)
}

/// Writes `contents` as a store into `dir`, then opens it as a replica
/// would and checks that it holds the revisions it should.
fn build(contents: &Contents, dir: &Path) -> Result<StoreStatus, MvccError> {
    {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let db = DB::open_cf(&options, dir, schema::FAMILIES)?;
        write_contents(&db, contents)?;
        for name in schema::FAMILIES {
            db.flush_cf(crate::store::family(&db, name)?)?;
        }
        db.flush_wal(true)?;
    }
    let status = Store::open(dir)?.status();
    if status.current != contents.current() || status.compacted != contents.compacted {
        return Err(MvccError::Corrupt(format!(
            "the imported store opened at revision {} compacted {}, not {} compacted {}",
            status.current,
            status.compacted,
            contents.current(),
            contents.compacted
        )));
    }
    sync_dir(dir)?;
    Ok(status)
}

fn write_contents(db: &DB, contents: &Contents) -> Result<(), MvccError> {
    let revs = crate::store::family(db, schema::REVS)?;
    let keys = crate::store::family(db, schema::KEYS)?;
    let leases = crate::store::family(db, schema::LEASES)?;
    let lease_keys = crate::store::family(db, schema::LEASE_KEYS)?;
    let meta = crate::store::family(db, schema::META)?;
    let mut batch = WriteBatch::default();
    // Each live key's creation revision and lease. etcd keeps only the
    // creation's main revision; its sub is known while the creating write
    // is still held, and 0 otherwise (as etcd's own restore takes it).
    let mut lives: std::collections::HashMap<&[u8], (Revision, i64)> =
        std::collections::HashMap::new();
    for write in &contents.writes {
        let key = write.kv.key.as_slice();
        let (created, version) = if write.tombstone {
            lives.remove(key);
            (write.revision, 0)
        } else {
            let created = match lives.get(key) {
                Some((created, _)) => *created,
                None if write.kv.create_revision == write.revision.main => write.revision,
                None => Revision::new(write.kv.create_revision, 0),
            };
            lives.insert(key, (created, write.kv.lease));
            (created, write.kv.version)
        };
        let row = KeyRow {
            key: key.to_vec(),
            revision: write.revision,
            tombstone: write.tombstone,
            created,
            version,
        };
        let record = Record {
            tombstone: write.tombstone,
            kv: write.kv.clone(),
        };
        batch.put_cf(revs, write.revision.to_key(), record.encode());
        batch.put_cf(keys, KeyRow::row_key(key, write.revision), row.value());
        if batch.len() >= IMPORT_BATCH_ROWS {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    for lease in &contents.leases {
        batch.put_cf(leases, schema::lease_key(lease.id), lease.encode_to_vec());
    }
    for (key, (_, lease)) in &lives {
        if *lease != 0 {
            batch.put_cf(lease_keys, schema::lease_key_row(*lease, key), []);
        }
    }
    batch.put_cf(meta, schema::META_APPLIED, [0_u8; 16]);
    batch.put_cf(meta, schema::META_CURRENT, contents.current().to_be_bytes());
    batch.put_cf(
        meta,
        schema::META_COMPACTED,
        contents.compacted.to_be_bytes(),
    );
    db.write(batch)?;
    Ok(())
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> Result<(), MvccError> {
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| io_error("syncing a directory", error))
}

fn io_error(doing: &str, error: std::io::Error) -> MvccError {
    MvccError::EtcdSnapshot(format!("{doing}: {error}"))
}
