//! Every key's history, ordered by key: what a Range at some revision walks.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use crate::key_index::{KeyAt, KeyIndex, KeyIndexError};
use crate::revision::Revision;

/// etcd's key-range convention for Range, DeleteRange, Watch and Compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// `range_end` empty: just `key`.
    Single(Vec<u8>),
    /// `range_end` is one zero byte: every key from `key` on.
    FromKey(Vec<u8>),
    /// `[key, range_end)`; empty when `range_end <= key`.
    Interval(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    /// The keys a request's `key` and `range_end` select, read as etcd reads them.
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => Self::Single(key.to_vec()),
            [0] => Self::FromKey(key.to_vec()),
            end => Self::Interval(key.to_vec(), end.to_vec()),
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            Self::Single(only) => key == only.as_slice(),
            Self::FromKey(start) => key >= start.as_slice(),
            Self::Interval(start, end) => key >= start.as_slice() && key < end.as_slice(),
        }
    }

    fn bounds(&self) -> Option<KeyBounds<'_>> {
        match self {
            Self::Single(only) => Some((Bound::Included(only), Bound::Included(only))),
            Self::FromKey(start) => Some((Bound::Included(start), Bound::Unbounded)),
            Self::Interval(start, end) if start < end => {
                Some((Bound::Included(start), Bound::Excluded(end)))
            }
            Self::Interval(..) => None,
        }
    }
}

/// Whether a range starting at `start` begins at or before `key`.
fn start_is_before(start: Bound<&[u8]>, key: &[u8]) -> bool {
    match start {
        Bound::Included(start) => start <= key,
        Bound::Excluded(start) => start < key,
        Bound::Unbounded => true,
    }
}

/// A key range as `BTreeMap::range` takes it.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The key index of the whole store. Keys are shared, so a reader can take
/// what a range found under the lock for the price of a reference count each.
#[derive(Clone, Debug, Default)]
pub struct TreeIndex {
    keys: BTreeMap<Arc<[u8]>, KeyIndex>,
}

impl TreeIndex {
    /// Changes the history of `key`, starting an empty one if it has none;
    /// the key is copied into the index only when it is new.
    fn change<T>(&mut self, key: &[u8], change: impl FnOnce(&mut KeyIndex) -> T) -> T {
        if let Some(index) = self.keys.get_mut(key) {
            return change(index);
        }
        let mut index = KeyIndex::default();
        let changed = change(&mut index);
        if !index.is_empty() {
            self.keys.insert(Arc::from(key), index);
        }
        changed
    }

    /// Records a put of `key` at `revision`.
    pub fn put(&mut self, key: &[u8], revision: Revision) -> Result<(), KeyIndexError> {
        self.change(key, |index| index.put(revision))
    }

    /// Re-records a put read back from disk (see `KeyIndex::restore`).
    pub fn restore(
        &mut self,
        key: &[u8],
        revision: Revision,
        created: Revision,
        version: i64,
    ) -> Result<(), KeyIndexError> {
        self.change(key, |index| index.restore(revision, created, version))
    }

    /// Re-records a delete read back from disk (see `KeyIndex::restore_tombstone`).
    pub fn restore_tombstone(
        &mut self,
        key: &[u8],
        revision: Revision,
    ) -> Result<(), KeyIndexError> {
        self.change(key, |index| index.restore_tombstone(revision))
    }

    /// Records a delete of `key` at `revision`; the key must be live.
    pub fn tombstone(&mut self, key: &[u8], revision: Revision) -> Result<(), KeyIndexError> {
        match self.keys.get_mut(key) {
            Some(index) => index.tombstone(revision),
            None => Err(KeyIndexError::NotLive),
        }
    }

    /// `key` as it was at main revision `at`.
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at)
    }

    /// The keys of `range` that existed at `at`, ascending, with what they were.
    pub fn range<'a>(
        &'a self,
        range: &KeyRange,
        at: i64,
    ) -> impl Iterator<Item = (&'a Arc<[u8]>, KeyAt)> + 'a {
        let entries = range
            .bounds()
            .map(|bounds| self.keys.range::<[u8], _>(bounds));
        entries
            .into_iter()
            .flatten()
            .filter_map(move |(key, index)| Some((key, index.get(at)?)))
    }

    /// The keys of `range` after `after` (all of them when `None`) that
    /// existed at `at`, ascending: a range read a piece at a time.
    pub fn range_after<'a>(
        &'a self,
        range: &KeyRange,
        after: Option<&[u8]>,
        at: i64,
    ) -> impl Iterator<Item = (&'a Arc<[u8]>, KeyAt)> + 'a {
        let entries = range.bounds().and_then(|(start, end)| {
            let start = match after {
                Some(after) if start_is_before(start, after) => Bound::Excluded(after),
                _ => start,
            };
            let empty = match (start, end) {
                (Bound::Excluded(from), Bound::Excluded(to))
                | (Bound::Excluded(from), Bound::Included(to)) => from >= to,
                _ => false,
            };
            (!empty).then(|| self.keys.range::<[u8], _>((start, end)))
        });
        entries
            .into_iter()
            .flatten()
            .filter_map(move |(key, index)| Some((key, index.get(at)?)))
    }

    /// Each key's changes from main revision `from` on, for the keys of `range`.
    pub fn since(&self, range: &KeyRange, from: i64) -> Vec<(Arc<[u8]>, Revision)> {
        let Some(bounds) = range.bounds() else {
            return Vec::new();
        };
        let mut changes: Vec<(Arc<[u8]>, Revision)> = self
            .keys
            .range::<[u8], _>(bounds)
            .flat_map(|(key, index)| {
                index
                    .since(from)
                    .into_iter()
                    .map(move |revision| (key.clone(), revision))
            })
            .collect();
        changes.sort_by_key(|(_, revision)| *revision);
        changes
    }

    /// Compacts every key at main revision `at` and forgets keys with nothing
    /// left. Returns the revisions at or before `at` that stay readable: every
    /// other revision at or before `at` may leave the revision index.
    pub fn compact(&mut self, at: i64) -> BTreeSet<Revision> {
        let mut kept = BTreeSet::new();
        self.keys.retain(|_, index| {
            if let Some(revision) = index.compact(at) {
                kept.insert(revision);
            }
            !index.is_empty()
        });
        kept
    }

    /// Number of keys with any history left.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is indexed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// a@1, ab@2, b@3, delete ab@4, c@5, \xff@6
    fn store() -> TreeIndex {
        let mut tree = TreeIndex::default();
        for (key, main) in [(&b"a"[..], 1), (b"ab", 2), (b"b", 3)] {
            assert_eq!(tree.put(key, rev(main)), Ok(()));
        }
        assert_eq!(tree.tombstone(b"ab", rev(4)), Ok(()));
        assert_eq!(tree.put(b"c", rev(5)), Ok(()));
        assert_eq!(tree.put(b"\xff", rev(6)), Ok(()));
        tree
    }

    fn keys(tree: &TreeIndex, range: &KeyRange, at: i64) -> Vec<Vec<u8>> {
        tree.range(range, at).map(|(key, _)| key.to_vec()).collect()
    }

    #[test]
    fn range_end_conventions() {
        let tree = store();
        // (key, range_end, at, keys expected)
        type Case<'a> = (&'a [u8], &'a [u8], i64, Vec<&'a [u8]>);
        let cases: [Case<'_>; 7] = [
            (b"a", b"", 9, vec![b"a"]),
            (b"a", b"b", 3, vec![b"a", b"ab"]),
            (b"a", b"b", 9, vec![b"a"]),
            (b"b", b"\0", 9, vec![b"b", b"c", b"\xff"]),
            (b"\0", b"\0", 9, vec![b"a", b"b", b"c", b"\xff"]),
            (b"c", b"a", 9, vec![]),
            (b"zz", b"", 9, vec![]),
        ];
        for (key, end, at, expected) in cases {
            let expected: Vec<Vec<u8>> = expected.into_iter().map(<[u8]>::to_vec).collect();
            assert_eq!(
                keys(&tree, &KeyRange::new(key, end), at),
                expected,
                "{key:?}..{end:?} at {at}"
            );
        }
    }

    #[test]
    fn a_range_read_piece_by_piece_sees_every_key_once() {
        let tree = store();
        let everything = KeyRange::new(b"\0", b"\0");
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let piece: Vec<Vec<u8>> = tree
                .range_after(&everything, after.as_deref(), 9)
                .take(2)
                .map(|(key, _)| key.to_vec())
                .collect();
            if piece.is_empty() {
                break;
            }
            after = piece.last().cloned();
            seen.extend(piece);
        }
        assert_eq!(seen, keys(&tree, &everything, 9));
        let single = KeyRange::new(b"a", b"");
        assert_eq!(tree.range_after(&single, Some(b"a"), 9).count(), 0);
    }

    #[test]
    fn a_delete_of_a_missing_key_is_refused() {
        let mut tree = store();
        assert_eq!(tree.tombstone(b"zz", rev(7)), Err(KeyIndexError::NotLive));
        assert_eq!(tree.tombstone(b"ab", rev(7)), Err(KeyIndexError::NotLive));
    }

    #[test]
    fn since_orders_changes_by_revision_across_keys() {
        let tree = store();
        let changes = tree.since(&KeyRange::new(b"a", b"\0"), 2);
        let mains: Vec<i64> = changes.iter().map(|(_, revision)| revision.main).collect();
        assert_eq!(mains, vec![2, 3, 4, 5, 6]);
    }

    #[test]
    fn compaction_keeps_what_reads_at_the_point_need_and_drops_dead_keys() {
        let mut tree = store();
        let kept = tree.compact(5);
        assert_eq!(kept, BTreeSet::from([rev(1), rev(3), rev(5)]));
        assert_eq!(tree.len(), 4, "ab was deleted before the point and is gone");
        assert_eq!(
            keys(&tree, &KeyRange::new(b"\0", b"\0"), 5),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
    }
}
