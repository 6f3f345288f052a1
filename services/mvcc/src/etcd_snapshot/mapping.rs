//! etcd 3.4's buckets and what cairn keeps, as plain values: the layout
//! facts live here, and so do the checks an imported snapshot must pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cairn_proto::cairn::mvcc::v1::{EtcdLease, LeaseRecord};
use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use super::history;
use crate::bbolt::Buckets;
use crate::error::MvccError;
use crate::revision::Revision;

pub(crate) const KEY: &[u8] = b"key";
pub(crate) const LEASE: &[u8] = b"lease";
pub(crate) const META: &[u8] = b"meta";
pub(crate) const CLUSTER: &[u8] = b"cluster";
pub(crate) const AUTH: &[u8] = b"auth";
/// The buckets etcd 3.4 creates at start that cairn has nothing for. Members
/// are left out on purpose: `etcdctl snapshot restore` replaces them.
const EMPTY_BUCKETS: [&[u8]; 5] = [
    b"alarm",
    b"authRoles",
    b"authUsers",
    b"members",
    b"members_removed",
];

pub(crate) const CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub(crate) const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
pub(crate) const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
/// etcd 3.4 keeps its cluster version in the backend as well as in raft's
/// store; restore and start do not need it, but an etcd 3.4 snapshot has it.
const CLUSTER_VERSION: (&[u8], &[u8]) = (b"clusterVersion", b"3.4.0");
/// An etcd auth store commits revision 1 when it is first opened.
const AUTH_REVISION: &[u8] = b"authRevision";

/// Main (8), `_`, sub (8): etcd's `revBytesLen`.
const REVISION_BYTES: usize = 17;
/// The mark etcd appends to a delete's revision key.
const TOMBSTONE_MARK: u8 = b't';

/// One write in the `key` bucket, as cairn's revision index holds it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Write {
    pub revision: Revision,
    pub tombstone: bool,
    /// For a delete: only the key and the delete's mod_revision, as cairn's
    /// DELETE events carry them (etcd stores only the key).
    pub kv: KeyValue,
}

/// What an etcd snapshot holds of the key space, its leases and compaction.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Contents {
    /// In revision order.
    pub writes: Vec<Write>,
    /// In id order.
    pub leases: Vec<LeaseRecord>,
    /// The last compaction's revision; -1 for none.
    pub compacted: i64,
    /// etcd's applied raft index; cairn's applied log index on export.
    pub consistent_index: u64,
}

impl Contents {
    /// The store's revision, as etcd's `store.restore` decides it: the last
    /// write held, or the compaction's if that is later (compaction may have
    /// removed the newest writes: a delete at the compaction revision).
    pub(crate) fn current(&self) -> i64 {
        self.writes
            .last()
            .map_or(1, |write| write.revision.main)
            .max(self.compacted)
            .max(1)
    }
}

/// etcd's revision key: main and sub big-endian around `_`, then `t` for a delete.
pub(crate) fn revision_key(revision: Revision, tombstone: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(REVISION_BYTES + 1);
    key.extend_from_slice(&revision.main.to_be_bytes());
    key.push(b'_');
    key.extend_from_slice(&revision.sub.to_be_bytes());
    if tombstone {
        key.push(TOMBSTONE_MARK);
    }
    key
}

/// Reads a revision key back: the revision and whether it is a delete.
pub(crate) fn parse_revision_key(key: &[u8]) -> Option<(Revision, bool)> {
    let tombstone = match key.len() {
        REVISION_BYTES => false,
        18 if key[REVISION_BYTES] == TOMBSTONE_MARK => true,
        _ => return None,
    };
    if key[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(key[..8].try_into().ok()?);
    let sub = i64::from_be_bytes(key[9..REVISION_BYTES].try_into().ok()?);
    (main >= 1 && sub >= 0).then_some((Revision::new(main, sub), tombstone))
}

/// A write's entry in the `key` bucket. A delete's value is the KeyValue
/// with only its key set, as etcd's `storeTxnWrite.delete` writes it.
pub(crate) fn key_entry(write: &Write) -> (Vec<u8>, Vec<u8>) {
    let value = if write.tombstone {
        KeyValue {
            key: write.kv.key.clone(),
            ..Default::default()
        }
        .encode_to_vec()
    } else {
        write.kv.encode_to_vec()
    };
    (revision_key(write.revision, write.tombstone), value)
}

/// Remaining milliseconds as etcd's whole seconds, rounded up so a restored
/// lease never ends before cairn would have ended it.
fn remaining_seconds(remaining_ms: i64) -> i64 {
    if remaining_ms <= 0 {
        0
    } else {
        remaining_ms.saturating_add(999) / 1000
    }
}

/// The buckets an etcd 3.4 member would hold for `contents`.
pub(crate) fn to_buckets(contents: &Contents) -> Buckets {
    let mut buckets = Buckets::new();
    for name in EMPTY_BUCKETS {
        buckets.insert(name.to_vec(), Vec::new());
    }
    buckets.insert(
        KEY.to_vec(),
        contents.writes.iter().map(key_entry).collect(),
    );
    let leases = contents
        .leases
        .iter()
        .map(|lease| {
            let value = EtcdLease {
                id: lease.id,
                ttl: lease.ttl,
                remaining_ttl: remaining_seconds(lease.remaining_ms),
            };
            (lease.id.to_be_bytes().to_vec(), value.encode_to_vec())
        })
        .collect();
    buckets.insert(LEASE.to_vec(), leases);
    let mut meta = vec![(
        CONSISTENT_INDEX.to_vec(),
        contents.consistent_index.to_be_bytes().to_vec(),
    )];
    if contents.compacted >= 0 {
        // etcd writes the scheduled revision before compacting and the
        // finished one after; equal, the compaction is complete.
        let compacted = revision_key(Revision::new(contents.compacted, 0), false);
        meta.push((FINISHED_COMPACT.to_vec(), compacted.clone()));
        meta.push((SCHEDULED_COMPACT.to_vec(), compacted));
    }
    buckets.insert(META.to_vec(), meta);
    buckets.insert(
        CLUSTER.to_vec(),
        vec![(CLUSTER_VERSION.0.to_vec(), CLUSTER_VERSION.1.to_vec())],
    );
    buckets.insert(
        AUTH.to_vec(),
        vec![(AUTH_REVISION.to_vec(), 1_u64.to_be_bytes().to_vec())],
    );
    for entries in buckets.values_mut() {
        entries.sort();
    }
    buckets
}

fn refuse(why: String) -> MvccError {
    MvccError::EtcdSnapshot(why)
}

/// A revision as etcd's logs show it.
pub(crate) fn show(revision: Revision) -> String {
    format!("{}_{}", revision.main, revision.sub)
}

/// What an etcd snapshot's buckets hold, checked: every revision parses,
/// every value decodes, every put's mod_revision is its revision, versions
/// and create revisions run on within a key's life, and every live key's
/// lease exists. A compaction that was scheduled but not finished is
/// finished, as etcd finishes it when it starts.
pub(crate) fn from_buckets(buckets: &Buckets) -> Result<Contents, MvccError> {
    if !buckets.contains_key(KEY) && !buckets.contains_key(META) {
        return Err(refuse(
            "not an etcd snapshot: it has neither a `key` nor a `meta` bucket".into(),
        ));
    }
    let none = Vec::new();
    let meta = buckets.get(META).unwrap_or(&none);
    let consistent_index = match meta_value(meta, CONSISTENT_INDEX) {
        None => 0,
        Some(bytes) => bytes.try_into().map(u64::from_be_bytes).map_err(|_| {
            refuse(format!(
                "meta {{consistent_index}} is {} bytes, not 8",
                bytes.len()
            ))
        })?,
    };
    let finished = meta_revision(meta, FINISHED_COMPACT)?;
    let scheduled = meta_revision(meta, SCHEDULED_COMPACT)?;
    let mut writes = parse_writes(buckets.get(KEY).unwrap_or(&none))?;
    let mut compacted = finished.unwrap_or(-1);
    if let Some(scheduled) = scheduled.filter(|scheduled| *scheduled > compacted) {
        let kept = history::kept_by_compaction(&writes, scheduled);
        writes.retain(|write| write.revision.main > scheduled || kept.contains(&write.revision));
        compacted = scheduled;
    }
    let leases = parse_leases(buckets.get(LEASE).unwrap_or(&none))?;
    check_leases(&writes, &leases)?;
    Ok(Contents {
        writes,
        leases,
        compacted,
        consistent_index,
    })
}

fn meta_value<'a>(meta: &'a [(Vec<u8>, Vec<u8>)], name: &[u8]) -> Option<&'a [u8]> {
    meta.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_slice())
}

/// A compaction revision in `meta`, as etcd writes it: a revision key.
fn meta_revision(meta: &[(Vec<u8>, Vec<u8>)], name: &[u8]) -> Result<Option<i64>, MvccError> {
    let Some(bytes) = meta_value(meta, name) else {
        return Ok(None);
    };
    match parse_revision_key(bytes) {
        Some((revision, false)) => Ok(Some(revision.main)),
        _ => Err(refuse(format!(
            "meta {{{}}} is not a revision: {}",
            String::from_utf8_lossy(name),
            bytes.escape_ascii()
        ))),
    }
}

/// The key's life so far: its creation and version, or none once deleted.
struct Life {
    created: i64,
    version: i64,
}

fn parse_writes(entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Write>, MvccError> {
    let mut writes: Vec<Write> = Vec::with_capacity(entries.len());
    let mut lives: HashMap<Vec<u8>, Life> = HashMap::new();
    for (key, value) in entries {
        let (revision, tombstone) = parse_revision_key(key).ok_or_else(|| {
            refuse(format!(
                "`key` bucket: {} is not a revision (8-byte main, `_`, 8-byte sub, optional `t`)",
                key.escape_ascii()
            ))
        })?;
        if let Some(last) = writes.last() {
            if revision <= last.revision {
                return Err(refuse(format!(
                    "`key` bucket: revision {} comes twice",
                    show(revision)
                )));
            }
        }
        let kv = KeyValue::decode(value.as_slice()).map_err(|error| {
            refuse(format!(
                "revision {}: the value is not an mvccpb.KeyValue: {error}",
                show(revision)
            ))
        })?;
        if kv.key.is_empty() {
            return Err(refuse(format!(
                "revision {}: the KeyValue has no key",
                show(revision)
            )));
        }
        let at = |what: String| {
            refuse(format!(
                "revision {} of key {}: {what}",
                show(revision),
                kv.key.escape_ascii()
            ))
        };
        if tombstone {
            if kv.mod_revision != 0 && kv.mod_revision != revision.main {
                return Err(at(format!(
                    "the delete's mod_revision {} disagrees with its revision",
                    kv.mod_revision
                )));
            }
            lives.remove(&kv.key);
            writes.push(Write {
                revision,
                tombstone,
                kv: KeyValue {
                    key: kv.key,
                    mod_revision: revision.main,
                    ..Default::default()
                },
            });
            continue;
        }
        if kv.mod_revision != revision.main {
            return Err(at(format!(
                "mod_revision {} disagrees with the revision it is stored at",
                kv.mod_revision
            )));
        }
        match lives.get(&kv.key) {
            Some(life) if kv.create_revision != life.created || kv.version != life.version + 1 => {
                return Err(at(format!(
                    "create_revision {} and version {} do not follow the key's previous write (created {}, version {})",
                    kv.create_revision, kv.version, life.created, life.version
                )));
            }
            Some(_) => {}
            None => {
                let plausible = kv.version >= 1
                    && kv.create_revision >= 1
                    && kv.create_revision <= revision.main
                    && (kv.version > 1 || kv.create_revision == revision.main);
                if !plausible {
                    return Err(at(format!(
                        "create_revision {} and version {} cannot begin the key's life here",
                        kv.create_revision, kv.version
                    )));
                }
            }
        }
        lives.insert(
            kv.key.clone(),
            Life {
                created: kv.create_revision,
                version: kv.version,
            },
        );
        writes.push(Write {
            revision,
            tombstone,
            kv,
        });
    }
    Ok(writes)
}

fn parse_leases(entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<LeaseRecord>, MvccError> {
    let mut leases = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let id = <[u8; 8]>::try_from(key.as_slice())
            .map(i64::from_be_bytes)
            .map_err(|_| {
                refuse(format!(
                    "`lease` bucket: {} is not a lease id",
                    key.escape_ascii()
                ))
            })?;
        let lease = EtcdLease::decode(value.as_slice()).map_err(|error| {
            refuse(format!(
                "lease {id:016x}: the value is not a leasepb.Lease: {error}"
            ))
        })?;
        if lease.id != id {
            return Err(refuse(format!(
                "lease {id:016x}: stored under id {id}, holds id {}",
                lease.id
            )));
        }
        if id <= 0 {
            return Err(refuse(format!("lease id {id} is not positive")));
        }
        leases.push(LeaseRecord {
            id,
            ttl: lease.ttl,
            remaining_ms: lease.remaining_ttl.max(0).saturating_mul(1000),
        });
    }
    Ok(leases)
}

/// Every key that exists at the end must be on a lease that exists. etcd
/// 3.4 only warns ("failed to attach a lease") and keeps such a key, which
/// then never expires; cairn refuses the snapshot instead, since its own
/// apply never produces that state.
fn check_leases(writes: &[Write], leases: &[LeaseRecord]) -> Result<(), MvccError> {
    let mut live: BTreeMap<&[u8], i64> = BTreeMap::new();
    for write in writes {
        if write.tombstone {
            live.remove(write.kv.key.as_slice());
        } else {
            live.insert(&write.kv.key, write.kv.lease);
        }
    }
    let known: BTreeSet<i64> = leases.iter().map(|lease| lease.id).collect();
    match live
        .iter()
        .find(|(_, lease)| **lease != 0 && !known.contains(*lease))
    {
        Some((key, lease)) => Err(refuse(format!(
            "key {} is on lease {lease:016x}, which the `lease` bucket does not hold",
            key.escape_ascii()
        ))),
        None => Ok(()),
    }
}
