//! etcd's Range over the key index, at a revision: revision checks, limit,
//! count, more, filters, sort, keys_only and count_only, as etcd's
//! `txn/range.go` does them. Used for client reads and for Range ops inside a Txn.

use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use cairn_proto::mvccpb::KeyValue;

use crate::error::MvccError;
use crate::revision::Revision;
use crate::store::schema::Record;
use crate::tree_index::{KeyRange, TreeIndex};

/// What a Range reads: the key index and the values of revisions.
pub trait RangeSource {
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

/// Runs `request` against `source`. The header carries only the revision
/// (`header_revision`, the store's current one); the caller fills the rest.
pub fn range(
    source: &impl RangeSource,
    request: &RangeRequest,
    bounds: ReadBounds,
    header_revision: i64,
) -> Result<RangeResponse, MvccError> {
    let at = bounds.resolve(request.revision)?;
    let key_range = KeyRange::new(&request.key, &request.range_end);
    let found: Vec<(&[u8], Revision)> = source
        .tree()
        .range(&key_range, at)
        .map(|(key, key_at)| (key, key_at.modified))
        .collect();
    let count = found.len() as i64;
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
        found.len()
    } else {
        found.len().min(request.limit.saturating_add(1) as usize)
    };

    let mut kvs = Vec::with_capacity(fetch);
    for (key, revision) in found.into_iter().take(fetch) {
        let record = source.record(revision)?;
        if record.kv.key != key {
            return Err(MvccError::Corrupt(format!(
                "revision {revision:?} holds another key than the index says"
            )));
        }
        kvs.push(record.kv);
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
pub fn sort(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
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
