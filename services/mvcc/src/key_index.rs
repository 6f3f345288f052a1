//! One key's history: the revisions at which it was written, grouped into
//! generations. A generation runs from the put that created the key to the
//! delete that removed it; the last generation is the live one, or empty when
//! the key is deleted. This is what answers "what was this key at revision R",
//! version numbers included, and what compaction trims.

use crate::revision::Revision;

/// What a key was at some revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAt {
    /// The revision of the write in force: where its value is in the revision index.
    pub modified: Revision,
    /// The revision that created this incarnation of the key.
    pub created: Revision,
    /// Writes to this incarnation up to and including `modified` (1 for the creating put).
    pub version: i64,
}

/// A change the key index refuses; both mean the caller's bookkeeping is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyIndexError {
    #[error("revision {given:?} is not after the key's last change {last:?}")]
    OutOfOrder { last: Revision, given: Revision },
    #[error("the key does not exist, so it cannot be deleted")]
    NotLive,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Generation {
    /// Writes ever made in this generation, including any compacted away.
    version: i64,
    created: Revision,
    /// Ascending; in a finished generation the last one is the delete.
    revisions: Vec<Revision>,
}

/// The history of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    modified: Revision,
    /// Never empty; only the last may hold no revisions.
    generations: Vec<Generation>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self {
            modified: Revision::default(),
            generations: vec![Generation::default()],
        }
    }
}

impl KeyIndex {
    /// True when nothing of the key is left: the index can be dropped.
    pub(crate) fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].revisions.is_empty()
    }

    /// Whether the key exists now.
    pub(crate) fn is_live(&self) -> bool {
        self.generations
            .last()
            .is_some_and(|generation| !generation.revisions.is_empty())
    }

    /// Records a put at `revision`.
    pub(crate) fn put(&mut self, revision: Revision) -> Result<(), KeyIndexError> {
        if revision <= self.modified {
            return Err(KeyIndexError::OutOfOrder {
                last: self.modified,
                given: revision,
            });
        }
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let current = self.generations.len() - 1;
        let generation = &mut self.generations[current];
        if generation.revisions.is_empty() {
            generation.created = revision;
        }
        generation.revisions.push(revision);
        generation.version += 1;
        self.modified = revision;
        Ok(())
    }

    /// Re-records a put read back from disk, where compaction may have removed
    /// the writes before it: the stored creation revision and version win over
    /// what counting the surviving writes would give.
    pub(crate) fn restore(
        &mut self,
        revision: Revision,
        created: Revision,
        version: i64,
    ) -> Result<(), KeyIndexError> {
        self.put(revision)?;
        if let Some(generation) = self.generations.last_mut() {
            generation.created = created;
            generation.version = version;
        }
        Ok(())
    }

    /// Re-records a delete read back from disk. Compaction may have removed
    /// every put before it, so unlike [`KeyIndex::tombstone`] it does not ask
    /// for a live key.
    pub(crate) fn restore_tombstone(&mut self, revision: Revision) -> Result<(), KeyIndexError> {
        self.put(revision)?;
        self.generations.push(Generation::default());
        Ok(())
    }

    /// Records a delete at `revision`: it ends the live generation.
    pub(crate) fn tombstone(&mut self, revision: Revision) -> Result<(), KeyIndexError> {
        if !self.is_live() {
            return Err(KeyIndexError::NotLive);
        }
        self.put(revision)?;
        self.generations.push(Generation::default());
        Ok(())
    }

    /// The key as it was at main revision `at`, or `None` if it did not exist
    /// then (never created yet, deleted, or compacted away).
    pub(crate) fn get(&self, at: i64) -> Option<KeyAt> {
        let last = self.generations.len().checked_sub(1)?;
        for (index, generation) in self.generations.iter().enumerate().rev() {
            let Some(first) = generation.revisions.first() else {
                continue;
            };
            if index != last {
                // A finished generation ends with its delete.
                let deleted = generation.revisions.last()?;
                if deleted.main <= at {
                    return None;
                }
            }
            if first.main <= at {
                let position = last_at_or_before(&generation.revisions, at)?;
                let later = (generation.revisions.len() - 1 - position) as i64;
                return Some(KeyAt {
                    modified: generation.revisions[position],
                    created: generation.created,
                    version: generation.version - later,
                });
            }
        }
        None
    }

    /// The key's changes from main revision `from` on, in order. One txn may
    /// write a key twice (a nested txn puts it, a later one deletes it), and
    /// both writes are events.
    pub(crate) fn since(&self, from: i64) -> Vec<Revision> {
        self.generations
            .iter()
            .flat_map(|generation| &generation.revisions)
            .filter(|revision| revision.main >= from)
            .copied()
            .collect()
    }

    /// Forgets history before main revision `at`, keeping the newest revision at
    /// or before it (so reads at `at` still work) and everything after. A
    /// generation whose delete came before `at` goes entirely; one deleted at
    /// exactly `at` keeps its delete. Returns the revision kept at or before
    /// `at`, which the revision index must keep too.
    pub(crate) fn compact(&mut self, at: i64) -> Option<Revision> {
        let last = self.generations.len().saturating_sub(1);
        let mut first_kept = 0;
        while first_kept < last {
            let deleted = self.generations[first_kept]
                .revisions
                .last()
                .map_or(i64::MIN, |revision| revision.main);
            if deleted >= at {
                break;
            }
            first_kept += 1;
        }
        self.generations.drain(..first_kept);
        let generation = self.generations.first_mut()?;
        let position = last_at_or_before(&generation.revisions, at)?;
        generation.revisions.drain(..position);
        generation.revisions.first().copied()
    }
}

/// The position of the last revision with main at or before `at`.
fn last_at_or_before(revisions: &[Revision], at: i64) -> Option<usize> {
    revisions
        .partition_point(|revision| revision.main <= at)
        .checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put at 2, 4; delete at 6; put at 8, 10; delete at 12; put at 14.
    fn history() -> KeyIndex {
        let mut key = KeyIndex::default();
        for (main, delete) in [
            (2, false),
            (4, false),
            (6, true),
            (8, false),
            (10, false),
            (12, true),
            (14, false),
        ] {
            let outcome = if delete {
                key.tombstone(rev(main))
            } else {
                key.put(rev(main))
            };
            assert_eq!(outcome, Ok(()), "at {main}");
        }
        key
    }

    fn at(key: &KeyIndex, main: i64) -> Option<(i64, i64, i64)> {
        key.get(main)
            .map(|found| (found.modified.main, found.created.main, found.version))
    }

    #[test]
    fn reads_see_the_write_in_force_with_its_version() {
        let key = history();
        let cases = [
            (1, None),
            (2, Some((2, 2, 1))),
            (3, Some((2, 2, 1))),
            (5, Some((4, 2, 2))),
            (6, None),
            (7, None),
            (8, Some((8, 8, 1))),
            (11, Some((10, 8, 2))),
            (12, None),
            (14, Some((14, 14, 1))),
            (99, Some((14, 14, 1))),
        ];
        for (main, expected) in cases {
            assert_eq!(at(&key, main), expected, "at {main}");
        }
    }

    #[test]
    fn version_resets_after_delete() {
        let key = history();
        assert_eq!(key.get(10).map(|found| found.version), Some(2));
        assert_eq!(key.get(14).map(|found| found.version), Some(1));
    }

    #[test]
    fn writes_must_move_forward_and_deletes_need_a_live_key() {
        let mut key = KeyIndex::default();
        assert_eq!(key.tombstone(rev(1)), Err(KeyIndexError::NotLive));
        assert_eq!(key.put(rev(3)), Ok(()));
        assert!(matches!(
            key.put(rev(3)),
            Err(KeyIndexError::OutOfOrder { .. })
        ));
        assert_eq!(key.tombstone(rev(4)), Ok(()));
        assert_eq!(key.tombstone(rev(5)), Err(KeyIndexError::NotLive));
        assert!(!key.is_live());
    }

    #[test]
    fn since_lists_every_change() {
        let mut key = KeyIndex::default();
        for revision in [
            Revision::new(2, 0),
            Revision::new(3, 0),
            Revision::new(3, 1),
            Revision::new(5, 0),
        ] {
            assert_eq!(key.put(revision), Ok(()));
        }
        assert_eq!(
            key.since(3),
            vec![
                Revision::new(3, 0),
                Revision::new(3, 1),
                Revision::new(5, 0)
            ]
        );
        assert_eq!(key.since(6), Vec::new());
    }

    #[test]
    fn compaction_keeps_the_newest_revision_at_or_before_the_point() {
        let mut key = history();
        assert_eq!(key.compact(11), Some(rev(10)));
        assert_eq!(
            at(&key, 11),
            Some((10, 8, 2)),
            "version survives compaction"
        );
        assert_eq!(at(&key, 14), Some((14, 14, 1)));
        assert_eq!(at(&key, 9), None, "history before the point is gone");
    }

    #[test]
    fn a_generation_deleted_before_the_point_goes_entirely() {
        let mut key = history();
        assert_eq!(key.compact(7), None);
        assert_eq!(at(&key, 5), None);
        assert_eq!(at(&key, 8), Some((8, 8, 1)));
    }

    #[test]
    fn a_delete_at_exactly_the_point_is_kept() {
        let mut key = history();
        assert_eq!(key.compact(12), Some(rev(12)));
        assert_eq!(at(&key, 12), None);
        assert_eq!(key.since(12), vec![rev(12), rev(14)]);
    }

    #[test]
    fn a_deleted_key_compacted_past_its_delete_is_empty() {
        let mut key = KeyIndex::default();
        assert_eq!(key.put(rev(1)), Ok(()));
        assert_eq!(key.tombstone(rev(2)), Ok(()));
        assert_eq!(key.compact(2), Some(rev(2)));
        assert!(!key.is_empty());
        assert_eq!(key.compact(3), None);
        assert!(key.is_empty());
        // It can be created again afterwards.
        assert_eq!(key.put(rev(4)), Ok(()));
        assert_eq!(at(&key, 4), Some((4, 4, 1)));
    }

    mod model {
        //! The key index against the plainest possible account of a key's
        //! history: replay every write up to the revision asked about.

        use proptest::prelude::*;

        use super::*;

        #[derive(Clone, Debug)]
        enum Step {
            Put,
            Delete,
            Compact,
        }

        fn replay(writes: &[(i64, bool)], at: i64) -> Option<(i64, i64, i64)> {
            let mut state: Option<(i64, i64, i64)> = None;
            for (main, delete) in writes.iter().filter(|(main, _)| *main <= at) {
                state = match (state, delete) {
                    (_, true) => None,
                    (None, false) => Some((*main, *main, 1)),
                    (Some((_, created, version)), false) => Some((*main, created, version + 1)),
                };
            }
            state
        }

        proptest! {
            #[test]
            fn reads_at_or_after_the_compaction_point_match_a_replay(
                steps in proptest::collection::vec(
                    prop_oneof![3 => Just(Step::Put), 1 => Just(Step::Delete), 1 => Just(Step::Compact)],
                    1..60,
                )
            ) {
                let mut key = KeyIndex::default();
                let mut writes: Vec<(i64, bool)> = Vec::new();
                let mut compacted = 0;
                for (number, step) in steps.iter().enumerate() {
                    // Writes land on even revisions so reads can fall between them.
                    let main = 2 * (number as i64 + 1);
                    match step {
                        Step::Put => {
                            prop_assert_eq!(key.put(Revision::new(main, 0)), Ok(()));
                            writes.push((main, false));
                        }
                        Step::Delete => {
                            let live = replay(&writes, main).is_some();
                            let outcome = key.tombstone(Revision::new(main, 0));
                            prop_assert_eq!(outcome.is_ok(), live);
                            if live {
                                writes.push((main, true));
                            }
                        }
                        Step::Compact => {
                            compacted = main - 1;
                            let kept = key.compact(compacted);
                            // What stays readable at the point is what was in force there.
                            let in_force = writes.iter().rev().find(|(at, _)| *at <= compacted);
                            match in_force {
                                Some((at, false)) => prop_assert_eq!(kept, Some(Revision::new(*at, 0))),
                                _ => prop_assert!(kept.is_none() || replay(&writes, compacted).is_none()),
                            }
                        }
                    }
                    for at in compacted..=main + 1 {
                        let found = key.get(at).map(|found| (found.modified.main, found.created.main, found.version));
                        prop_assert_eq!(found, replay(&writes, at), "at {}", at);
                    }
                }
            }
        }
    }
}
