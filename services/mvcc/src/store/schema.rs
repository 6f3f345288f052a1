//! How the replica's state is laid out in RocksDB.
//!
//! - `revs`: revision (16 bytes, big-endian main then sub) → one write, a
//!   tag byte (put or delete) and the `mvccpb.KeyValue`. Byte order is
//!   revision order, so history is a forward scan.
//! - `keys`: the key index on disk, one row per write: key length (4 bytes),
//!   key, revision → tag, creation revision and version. Rows of one key are
//!   adjacent and in revision order, which is how the index is rebuilt.
//! - `leases`: lease id → `LeaseRecord`; `lease_keys`: lease id ++ key → ().
//! - `meta`: the applied log position, the current and compact revisions and
//!   the lease claim in force (`LeaseHolder`), written in the same batch as
//!   the state they describe.

use cairn_proto::cairn::mvcc::v1::{
    AlarmList, AuthState, LeaseHolder, LeaseRecord, PublisherClaim,
};
use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use crate::error::MvccError;
use crate::revision::Revision;

pub(crate) const REVS: &str = "revs";
pub(crate) const KEYS: &str = "keys";
pub(crate) const LEASES: &str = "leases";
pub(crate) const LEASE_KEYS: &str = "lease_keys";
pub(crate) const META: &str = "meta";
pub(crate) const FAMILIES: [&str; 5] = [REVS, KEYS, LEASES, LEASE_KEYS, META];

pub(crate) const META_APPLIED: &[u8] = b"applied";
pub(crate) const META_CURRENT: &[u8] = b"current";
pub(crate) const META_COMPACTED: &[u8] = b"compacted";
/// The lease claim in force and its last checkpoint: fencing must survive a
/// restart, or a deposed cairn-lease could expire leases again.
pub(crate) const META_LEASE_HOLDER: &[u8] = b"lease_holder";
/// Meta key of the alarms raised (`AlarmList`).
pub(crate) const META_ALARMS: &[u8] = b"alarms";
pub(crate) const META_PUBLISHER: &[u8] = b"publisher";
/// Meta key of the auth state (`AuthState`).
pub(crate) const META_AUTH: &[u8] = b"auth";

const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;

/// One write as the revision index keeps it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    pub tombstone: bool,
    /// For a delete: the key and the deletion's mod_revision, as etcd's
    /// DELETE events carry them.
    pub kv: KeyValue,
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + self.kv.encoded_len());
        bytes.push(if self.tombstone { TAG_DELETE } else { TAG_PUT });
        // Encoding into a Vec cannot fail: it grows as needed.
        self.kv.encode(&mut bytes).ok();
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, MvccError> {
        let (tag, body) = bytes
            .split_first()
            .ok_or_else(|| MvccError::Corrupt("empty revision record".into()))?;
        let kv = KeyValue::decode(body)
            .map_err(|error| MvccError::Corrupt(format!("revision record: {error}")))?;
        match *tag {
            TAG_PUT => Ok(Self {
                tombstone: false,
                kv,
            }),
            TAG_DELETE => Ok(Self {
                tombstone: true,
                kv,
            }),
            other => Err(MvccError::Corrupt(format!("revision record tag {other}"))),
        }
    }
}

/// One row of the key index on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRow {
    pub key: Vec<u8>,
    pub revision: Revision,
    pub tombstone: bool,
    pub created: Revision,
    pub version: i64,
}

impl KeyRow {
    pub(crate) fn row_key(key: &[u8], revision: Revision) -> Vec<u8> {
        let mut row = Vec::with_capacity(4 + key.len() + 16);
        row.extend_from_slice(&(key.len() as u32).to_be_bytes());
        row.extend_from_slice(key);
        row.extend_from_slice(&revision.to_key());
        row
    }

    pub(crate) fn value(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(25);
        value.push(if self.tombstone { TAG_DELETE } else { TAG_PUT });
        value.extend_from_slice(&self.created.to_key());
        value.extend_from_slice(&self.version.to_be_bytes());
        value
    }

    pub(crate) fn decode(row: &[u8], value: &[u8]) -> Result<Self, MvccError> {
        let corrupt = || MvccError::Corrupt("key index row".into());
        let length = u32::from_be_bytes(
            row.get(..4)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        ) as usize;
        let key = row.get(4..4 + length).ok_or_else(corrupt)?.to_vec();
        let revision =
            Revision::from_key(row.get(4 + length..).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        let (tag, rest) = value.split_first().ok_or_else(corrupt)?;
        let created =
            Revision::from_key(rest.get(..16).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        let version = i64::from_be_bytes(
            rest.get(16..24)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        );
        Ok(Self {
            key,
            revision,
            tombstone: *tag == TAG_DELETE,
            created,
            version,
        })
    }
}

pub(crate) fn lease_key(lease: i64) -> [u8; 8] {
    lease.to_be_bytes()
}

pub(crate) fn lease_key_row(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(8 + key.len());
    row.extend_from_slice(&lease.to_be_bytes());
    row.extend_from_slice(key);
    row
}

pub(crate) fn split_lease_key_row(row: &[u8]) -> Result<(i64, Vec<u8>), MvccError> {
    let id = row
        .get(..8)
        .and_then(|bytes| bytes.try_into().ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| MvccError::Corrupt("lease key row".into()))?;
    Ok((id, row[8..].to_vec()))
}

pub(crate) fn decode_lease(bytes: &[u8]) -> Result<LeaseRecord, MvccError> {
    LeaseRecord::decode(bytes).map_err(|error| MvccError::Corrupt(format!("lease record: {error}")))
}

/// Reads the stored lease claim back; a damaged one stops the replica rather
/// than unfence the lease service.
pub(crate) fn decode_alarms(bytes: &[u8]) -> Result<AlarmList, MvccError> {
    AlarmList::decode(bytes).map_err(|error| MvccError::Corrupt(format!("alarms: {error}")))
}

pub(crate) fn decode_publisher(bytes: &[u8]) -> Result<PublisherClaim, MvccError> {
    PublisherClaim::decode(bytes)
        .map_err(|error| MvccError::Corrupt(format!("publisher claim: {error}")))
}

pub(crate) fn decode_auth(bytes: &[u8]) -> Result<AuthState, MvccError> {
    AuthState::decode(bytes).map_err(|error| MvccError::Corrupt(format!("auth state: {error}")))
}

pub(crate) fn decode_holder(bytes: &[u8]) -> Result<LeaseHolder, MvccError> {
    LeaseHolder::decode(bytes).map_err(|error| MvccError::Corrupt(format!("lease holder: {error}")))
}

pub(crate) fn decode_i64(bytes: &[u8]) -> Result<i64, MvccError> {
    bytes
        .try_into()
        .map(i64::from_be_bytes)
        .map_err(|_| MvccError::Corrupt("meta value".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_rows_round_trip() {
        let record = Record {
            tombstone: true,
            kv: KeyValue {
                key: b"k".to_vec(),
                mod_revision: 9,
                ..Default::default()
            },
        };
        assert_eq!(Record::decode(&record.encode()).ok(), Some(record));
        let row = KeyRow {
            key: b"a\x00b".to_vec(),
            revision: Revision::new(7, 2),
            tombstone: false,
            created: Revision::new(3, 0),
            version: 4,
        };
        let decoded = KeyRow::decode(&KeyRow::row_key(&row.key, row.revision), &row.value());
        assert_eq!(decoded.ok(), Some(row));
        assert!(Record::decode(&[]).is_err());
        assert!(KeyRow::decode(&[0, 0], &[]).is_err());
    }

    #[test]
    fn rows_of_one_key_are_adjacent() {
        // "a" then "a\0": without the length prefix the second key's rows
        // would interleave with the first's.
        let mut rows = [
            KeyRow::row_key(b"a", Revision::new(1, 0)),
            KeyRow::row_key(b"a\0", Revision::new(0, 5)),
            KeyRow::row_key(b"a", Revision::new(300, 0)),
            KeyRow::row_key(b"b", Revision::new(2, 0)),
        ];
        rows.sort();
        let lengths: Vec<u32> = rows
            .iter()
            .map(|row| u32::from_be_bytes([row[0], row[1], row[2], row[3]]))
            .collect();
        assert_eq!(lengths, vec![1, 1, 1, 2]);
        assert_eq!(&rows[0][4..5], b"a");
        assert_eq!(&rows[1][4..5], b"a");
    }
}
