//! etcd's checksums over a snapshot: HashKV (what etcd answers for the key
//! space, `mvcc/kvstore.go` `HashByRev` in 3.4) and the hash and counts
//! `etcdctl snapshot status` prints (`clientv3/snapshot` `Status`). Both are
//! CRC-32 with the Castagnoli polynomial.

use crate::bbolt::Buckets;
use crate::error::MvccError;
use cairn_proto::etcd_error::EtcdError;

use super::history;
use super::mapping::{self, Contents, KEY};

/// CRC-32C's lookup table (reflected polynomial 0x82F63B78).
const TABLE: [u32; 256] = table();

const fn table() -> [u32; 256] {
    let mut table = [0_u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
}

/// CRC-32C, as Go's `crc32.MakeTable(crc32.Castagnoli)` computes it.
pub(crate) struct Crc32c(u32);

impl Crc32c {
    pub(crate) fn new() -> Self {
        Self(!0)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = TABLE[((self.0 ^ u32::from(*byte)) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    pub(crate) fn finish(&self) -> u32 {
        !self.0
    }
}

/// What etcd's HashKV answers for a snapshot's key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdHashKv {
    pub hash: u32,
    /// The revision hashed up to.
    pub revision: i64,
    pub current_revision: i64,
    pub compact_revision: i64,
}

/// etcd's HashKV at `revision` (0: the current one) of the store these
/// buckets describe, once restored: the bucket name `key`, then every write
/// up to `revision`, except that writes at or below the compact revision
/// count only if a compaction at `revision` would keep them.
pub fn hash_kv(buckets: &Buckets, revision: i64) -> Result<EtcdHashKv, MvccError> {
    hash_contents(&mapping::from_buckets(buckets)?, revision)
}

pub(crate) fn hash_contents(contents: &Contents, revision: i64) -> Result<EtcdHashKv, MvccError> {
    let current = contents.current();
    let compacted = contents.compacted;
    if revision > 0 && revision <= compacted {
        return Err(MvccError::Compacted {
            compact_revision: compacted,
        });
    }
    if revision > current {
        return Err(EtcdError::FutureRevision.into());
    }
    let at = if revision <= 0 { current } else { revision };
    let keep = history::kept_by_compaction(&contents.writes, at);
    let mut crc = Crc32c::new();
    crc.update(KEY);
    for write in &contents.writes {
        if write.revision.main > at {
            break;
        }
        let below = write.revision.main <= compacted;
        if below && !keep.is_empty() && !keep.contains(&write.revision) {
            continue;
        }
        let (key, value) = mapping::key_entry(write);
        crc.update(&key);
        crc.update(&value);
    }
    Ok(EtcdHashKv {
        hash: crc.finish(),
        revision: at,
        current_revision: current,
        compact_revision: compacted,
    })
}

/// What `etcdctl snapshot status` prints about a snapshot (but its size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdStatus {
    /// CRC-32C over every bucket's name and entries, in name order.
    pub hash: u32,
    /// The main revision of the last entry of the `key` bucket.
    pub revision: i64,
    /// Entries in every bucket, not only keys: etcd counts them all.
    pub total_key: u64,
}

/// `etcdctl snapshot status` of the database these buckets make.
pub fn status(buckets: &Buckets) -> EtcdStatus {
    let mut crc = Crc32c::new();
    let mut revision = 0;
    let mut total_key = 0;
    for (name, entries) in buckets {
        crc.update(name);
        for (key, value) in entries {
            crc.update(key);
            crc.update(value);
            if name == KEY {
                // etcd reads the first 8 bytes whatever the key is.
                if let Some(main) = key.get(..8).and_then(|main| <[u8; 8]>::try_from(main).ok()) {
                    revision = i64::from_be_bytes(main);
                }
            }
            total_key += 1;
        }
    }
    EtcdStatus {
        hash: crc.finish(),
        revision,
        total_key,
    }
}
