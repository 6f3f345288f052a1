//! Which writes of a key survive a compaction, by etcd's rule
//! (`mvcc/key_index.go`, `keyIndex.doCompact`, `compact` and `keep` in
//! 3.4): what finishing an interrupted compaction removes, and what etcd's
//! HashKV counts below the compact revision.

use std::collections::{BTreeMap, HashSet};

use super::mapping::Write;
use crate::revision::Revision;

/// Each key's writes in generations, as etcd's key index holds them: a
/// delete ends a generation, and the last one is open (empty when the key's
/// last write was a delete).
fn generations(writes: &[Write]) -> BTreeMap<&[u8], Vec<Vec<Revision>>> {
    let mut keys: BTreeMap<&[u8], Vec<Vec<Revision>>> = BTreeMap::new();
    for write in writes {
        let generations = keys
            .entry(write.kv.key.as_slice())
            .or_insert_with(|| vec![Vec::new()]);
        if let Some(open) = generations.last_mut() {
            open.push(write.revision);
        }
        if write.tombstone {
            generations.push(Vec::new());
        }
    }
    keys
}

/// The write of one key that a compaction at `at` keeps: in the first
/// generation deleted after `at` (or the open one), the newest write at or
/// before `at`, unless that write is the generation's delete.
fn survivor(generations: &[Vec<Revision>], at: i64) -> Option<Revision> {
    let last = generations.len().checked_sub(1)?;
    let mut index = 0;
    while index < last {
        let deleted = generations[index]
            .last()
            .is_none_or(|tombstone| tombstone.main > at);
        if deleted {
            break;
        }
        index += 1;
    }
    let generation = &generations[index];
    let position = generation
        .iter()
        .rposition(|revision| revision.main <= at)?;
    if position == generation.len() - 1 && index != last {
        return None;
    }
    Some(generation[position])
}

/// The writes at or before `at` that a compaction at `at` keeps; every
/// other write at or before it goes.
pub(crate) fn kept_by_compaction(writes: &[Write], at: i64) -> HashSet<Revision> {
    generations(writes)
        .values()
        .filter_map(|generations| survivor(generations, at))
        .collect()
}
