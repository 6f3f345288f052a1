//! etcd's Range over the key index, at a revision: revision checks, limit,
//! count, more, filters, sort, keys_only and count_only, as etcd's
//! `txn/range.go` does them. Used for client reads and for Range ops inside a Txn.

use std::sync::Arc;

use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use cairn_proto::mvccpb::KeyValue;

use crate::error::MvccError;
use crate::revision::Revision;
use crate::store::schema::Record;
use crate::tree_index::{KeyRange, TreeIndex};

/// What a Range reads: the key index and the values of revisions.
pub(crate) trait RangeSource {
    fn tree(&self) -> &TreeIndex;
    fn record(&self, revision: Revision) -> Result<Record, MvccError>;
}

/// Which revisions may be read: `latest` answers revision 0, anything above it
/// is a future revision, anything below `compacted` is gone.
#[derive(Clone, Copy, Debug)]
pub struct ReadBounds {
    pub latest: i64,
    pub compacted: i64,
}

impl ReadBounds {
    /// The revision a request for `requested` reads at.
    pub fn resolve(self, requested: i64) -> Result<i64, MvccError> {
        if requested <= 0 {
            return Ok(self.latest);
        }
        if requested > self.latest {
            return Err(EtcdError::FutureRevision.into());
        }
        if requested < self.compacted {
            return Err(MvccError::Compacted {
                compact_revision: self.compacted,
            });
        }
        Ok(requested)
    }
}

/// What a Range found in the key index: every key of its range that
/// existed at the revision read, with the revision of its value. Taken under
/// the index lock; the values are read after, without it.
#[derive(Debug, Default)]
pub(crate) struct Found {
    keys: Vec<(Arc<[u8]>, Revision)>,
}

impl From<Vec<(Arc<[u8]>, Revision)>> for Found {
    fn from(keys: Vec<(Arc<[u8]>, Revision)>) -> Self {
        Self { keys }
    }
}

/// The keys `request` covers at the revision it reads.
pub(crate) fn find(
    tree: &TreeIndex,
    request: &RangeRequest,
    bounds: ReadBounds,
) -> Result<Found, MvccError> {
    let at = bounds.resolve(request.revision)?;
    let key_range = KeyRange::new(&request.key, &request.range_end);
    let keys = tree
        .range(&key_range, at)
        .map(|(key, key_at)| (key.clone(), key_at.modified))
        .collect();
    Ok(Found { keys })
}

/// etcd's gRPC limit on a response's size: what a Range may return at most.
pub(crate) const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// Builds the answer to `request` from what [`find`] found, reading values
/// through `record`. The header carries only the revision
/// (`header_revision`, the store's current one); the caller fills the rest.
/// An answer larger than `max_bytes` is refused as gRPC refuses to send it,
/// before it is all in memory.
pub(crate) fn fill(
    found: Found,
    request: &RangeRequest,
    header_revision: i64,
    max_bytes: usize,
    mut record: impl FnMut(Revision) -> Result<Record, MvccError>,
) -> Result<RangeResponse, MvccError> {
    let count = found.keys.len() as i64;
    let header = Some(ResponseHeader {
        revision: header_revision,
        ..Default::default()
    });
    if request.count_only {
        return Ok(RangeResponse {
            header,
            count,
            ..Default::default()
        });
    }

    let sort_order = SortOrder::try_from(request.sort_order)
        .map_err(|_| MvccError::Etcd(EtcdError::InvalidSortOption))?;
    let sort_target = SortTarget::try_from(request.sort_target)
        .map_err(|_| MvccError::Etcd(EtcdError::InvalidSortOption))?;
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    let fetch = if sort_order != SortOrder::None || filtered || request.limit <= 0 {
        found.keys.len()
    } else {
        found
            .keys
            .len()
            .min(request.limit.saturating_add(1) as usize)
    };

    let mut kvs = Vec::with_capacity(fetch);
    let mut bytes = 0_usize;
    let wanted = &found.keys[..fetch];
    for chunk in wanted.chunks(READ_CHUNK) {
        // Read in revision order, so the store walks its records forward.
        let mut order: Vec<usize> = (0..chunk.len()).collect();
        order.sort_unstable_by_key(|&at| chunk[at].1);
        let mut read: Vec<Option<KeyValue>> = vec![None; chunk.len()];
        for at in order {
            let (key, revision) = &chunk[at];
            let record = record(*revision)?;
            if record.kv.key.as_slice() != &**key {
                return Err(MvccError::Corrupt(format!(
                    "revision {revision:?} holds another key than the index says"
                )));
            }
            bytes = bytes.saturating_add(record.kv.key.len() + record.kv.value.len() + 32);
            if bytes > max_bytes {
                return Err(MvccError::ResponseTooLarge { limit: max_bytes });
            }
            read[at] = Some(record.kv);
        }
        kvs.extend(read.into_iter().flatten());
    }
    if filtered {
        kvs.retain(|kv| passes_filters(kv, request));
    }
    sort(&mut kvs, sort_order, sort_target);

    let mut more = false;
    if request.limit > 0 && kvs.len() > request.limit as usize {
        kvs.truncate(request.limit as usize);
        more = true;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header,
        kvs,
        more,
        count,
    })
}

/// Records a Range reads at a time: each piece is read in revision order
/// (records are stored by revision, so reading them in that order walks the
/// store forward) and put back in key order; the response's byte limit is
/// checked as each record arrives.
const READ_CHUNK: usize = 1024;

/// Runs `request` against `source` at once (inside an apply, for a Txn).
pub(crate) fn range(
    source: &impl RangeSource,
    request: &RangeRequest,
    bounds: ReadBounds,
    header_revision: i64,
) -> Result<RangeResponse, MvccError> {
    let found = find(source.tree(), request, bounds)?;
    fill(
        found,
        request,
        header_revision,
        MAX_RESPONSE_BYTES,
        |revision| source.record(revision),
    )
}

fn passes_filters(kv: &KeyValue, request: &RangeRequest) -> bool {
    let at_least = |value: i64, bound: i64| bound == 0 || value >= bound;
    let at_most = |value: i64, bound: i64| bound == 0 || value <= bound;
    at_least(kv.mod_revision, request.min_mod_revision)
        && at_most(kv.mod_revision, request.max_mod_revision)
        && at_least(kv.create_revision, request.min_create_revision)
        && at_most(kv.create_revision, request.max_create_revision)
}

/// etcd sorts by the target, ascending unless told otherwise once the target
/// is not the key. Ties keep key order ascending (descending when reversed).
pub(crate) fn sort(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = if target != SortTarget::Key && order == SortOrder::None {
        SortOrder::Ascend
    } else {
        order
    };
    if order == SortOrder::None {
        return;
    }
    match target {
        SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(index: usize, revision: Revision) -> KeyValue {
        KeyValue {
            key: format!("key-{index:05}").into_bytes(),
            mod_revision: revision.main,
            value: b"v".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn records_are_read_in_revision_order_and_answered_in_key_order() {
        // Keys written in reverse, across more than one read chunk.
        let count = READ_CHUNK * 2 + 7;
        let revision_of = |index: usize| Revision {
            main: (count - index) as i64,
            sub: 0,
        };
        let keys: Vec<(Arc<[u8]>, Revision)> = (0..count)
            .map(|index| {
                (
                    Arc::from(kv(index, revision_of(index)).key),
                    revision_of(index),
                )
            })
            .collect();
        let mut asked = Vec::new();
        let request = RangeRequest::default();
        let response = fill(Found::from(keys), &request, 0, usize::MAX, |revision| {
            asked.push(revision);
            let index = count - revision.main as usize;
            Ok(Record {
                tombstone: false,
                kv: kv(index, revision),
            })
        })
        .expect("the range is answered");

        let answered: Vec<Vec<u8>> = response.kvs.iter().map(|kv| kv.key.clone()).collect();
        let expected: Vec<Vec<u8>> = (0..count)
            .map(|index| kv(index, revision_of(index)).key)
            .collect();
        assert_eq!(answered, expected);
        for piece in asked.chunks(READ_CHUNK) {
            assert!(piece.windows(2).all(|pair| pair[0] < pair[1]), "{piece:?}");
        }
    }
}
