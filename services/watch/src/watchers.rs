//! One client stream's watchers. Most are *synced*: owed the same next
//! revision, the stream's floor, so a revision costs the stream the same
//! however many watchers it has. The others (catching up, or starting at a
//! later revision) are followed one by one until they reach the floor.
//! Watchers on a single key are also found by their key, so a revision's
//! events reach the watchers that want them without a look at every
//! watcher of the stream.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::encoded::EncodedEvent;

/// One watcher of a stream.
pub(crate) struct Watcher {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub fragment: bool,
    /// The next revision this watcher is owed, while it is not synced (a
    /// synced watcher is owed the stream's floor).
    pub next: i64,
    /// Whether anything was sent since the last progress notification.
    pub active_since_notify: bool,
    synced: bool,
}

impl Watcher {
    /// Whether the watcher's range and filters take `event`.
    pub(crate) fn wants(&self, event: &EncodedEvent) -> bool {
        let kind_wanted = if event.is_delete() {
            !self.no_delete
        } else {
            !self.no_put
        };
        kind_wanted && in_range(event.key(), &self.key, &self.range_end)
    }

    /// A watcher of `key` to `range_end` owed `next` on, with no filters.
    pub(crate) fn new(key: Vec<u8>, range_end: Vec<u8>, next: i64) -> Self {
        Self {
            key,
            range_end,
            no_put: false,
            no_delete: false,
            prev_kv: false,
            progress_notify: false,
            fragment: false,
            next,
            active_since_notify: false,
            synced: false,
        }
    }

    /// Whether the watcher is owed the stream's floor (and its own `next`
    /// means nothing).
    pub(crate) fn synced(&self) -> bool {
        self.synced
    }

    /// The next revision the watcher is owed, given the stream's floor.
    pub(crate) fn owed(&self, floor: i64) -> i64 {
        if self.synced {
            floor
        } else {
            self.next
        }
    }

    fn single_key(&self) -> bool {
        self.range_end.is_empty()
    }
}

/// etcd's key-range rule: no end = the key alone, `\0` = the key and every
/// key after it, otherwise [key, range_end).
pub(crate) fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

/// Synced watchers alike: the first of each kind builds the responses the
/// others take too.
#[derive(Debug, Default)]
pub(crate) struct Twins {
    /// The first watcher of a kind, and the others of its kind.
    pub of: HashMap<i64, Vec<i64>>,
    /// Every watcher that is not the first of its kind.
    pub followers: HashSet<i64>,
}

impl Twins {
    /// Watcher `id` and the others of its kind, which take its responses.
    pub(crate) fn alike(&self, id: i64) -> impl Iterator<Item = i64> + '_ {
        std::iter::once(id).chain(self.of.get(&id).into_iter().flatten().copied())
    }

    /// How many watchers take the responses of `id`'s batch.
    pub(crate) fn sharing(&self, id: i64) -> usize {
        1 + self.of.get(&id).map_or(0, Vec::len)
    }
}

/// A stream's watchers by ID, single-key ones indexed by key.
pub(crate) struct Watchers {
    all: BTreeMap<i64, Watcher>,
    by_key: HashMap<Vec<u8>, Vec<i64>>,
    ranges: Vec<i64>,
    /// The next revision owed to every synced watcher.
    floor: i64,
    unsynced: BTreeSet<i64>,
    /// Found on the first pass after a change, see [`Watchers::synced_twins`].
    twins: Option<Arc<Twins>>,
}

impl Watchers {
    /// No watchers yet; the first synced ones will be owed `floor` on.
    pub(crate) fn new(floor: i64) -> Self {
        Self {
            all: BTreeMap::new(),
            by_key: HashMap::new(),
            ranges: Vec::new(),
            floor,
            unsynced: BTreeSet::new(),
            twins: None,
        }
    }

    /// The next revision owed to every synced watcher.
    pub(crate) fn floor(&self) -> i64 {
        self.floor
    }

    /// Every synced watcher has been given everything before `next`.
    pub(crate) fn raise_floor(&mut self, next: i64) {
        self.floor = self.floor.max(next);
    }

    /// The next revision watcher `id` is owed.
    pub(crate) fn owed(&self, id: i64) -> Option<i64> {
        Some(self.all.get(&id)?.owed(self.floor))
    }

    /// Watcher `id`, not synced, has been given everything before `next`.
    pub(crate) fn advance(&mut self, id: i64, next: i64) {
        if let Some(watcher) = self.all.get_mut(&id).filter(|watcher| !watcher.synced) {
            watcher.next = watcher.next.max(next);
        }
    }

    /// The watchers followed one by one.
    pub(crate) fn unsynced(&self) -> Vec<i64> {
        self.unsynced.iter().copied().collect()
    }

    /// Whether any watcher is synced.
    pub(crate) fn any_synced(&self) -> bool {
        self.all.len() > self.unsynced.len()
    }

    /// Unsynced watchers that reached the floor are synced again.
    pub(crate) fn rejoin(&mut self) {
        let floor = self.floor;
        let all = &mut self.all;
        let before = self.unsynced.len();
        self.unsynced.retain(|id| match all.get_mut(id) {
            Some(watcher) if watcher.next == floor => {
                watcher.synced = true;
                false
            }
            Some(_) => true,
            None => false,
        });
        if self.unsynced.len() != before {
            self.twins = None;
        }
    }

    /// The floor left the window: every synced watcher is followed on its
    /// own from the floor (each then catches up from history).
    pub(crate) fn fall_behind(&mut self) {
        let floor = self.floor;
        for (id, watcher) in self.all.iter_mut().filter(|(_, w)| w.synced) {
            watcher.synced = false;
            watcher.next = floor;
            self.unsynced.insert(*id);
        }
        self.twins = None;
    }

    /// Adds watcher `id`, replacing none: the caller checked it is free.
    /// One owed the floor is synced at once.
    pub(crate) fn insert(&mut self, id: i64, mut watcher: Watcher) {
        self.twins = None;
        watcher.synced = watcher.next == self.floor;
        if !watcher.synced {
            self.unsynced.insert(id);
        }
        if watcher.single_key() {
            self.by_key.entry(watcher.key.clone()).or_default().push(id);
        } else {
            self.ranges.push(id);
        }
        self.all.insert(id, watcher);
    }

    pub(crate) fn remove(&mut self, id: i64) -> Option<Watcher> {
        let watcher = self.all.remove(&id)?;
        self.twins = None;
        self.unsynced.remove(&id);
        if watcher.single_key() {
            if let Some(ids) = self.by_key.get_mut(&watcher.key) {
                ids.retain(|other| *other != id);
                if ids.is_empty() {
                    self.by_key.remove(&watcher.key);
                }
            }
        } else {
            self.ranges.retain(|other| *other != id);
        }
        Some(watcher)
    }

    pub(crate) fn get(&self, id: i64) -> Option<&Watcher> {
        self.all.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: i64) -> Option<&mut Watcher> {
        self.all.get_mut(&id)
    }

    pub(crate) fn contains(&self, id: i64) -> bool {
        self.all.contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (i64, &mut Watcher)> {
        self.all.iter_mut().map(|(id, watcher)| (*id, watcher))
    }

    /// Synced watchers alike in range and filters, which are owed the same
    /// events in the same bytes. Found again only after the watchers or
    /// their syncing changed, not on every pass.
    pub(crate) fn synced_twins(&mut self) -> Arc<Twins> {
        if let Some(twins) = &self.twins {
            return twins.clone();
        }
        let of = self.find_twins();
        let followers = of.values().flatten().copied().collect();
        let twins = Arc::new(Twins { of, followers });
        self.twins = Some(twins.clone());
        twins
    }

    /// For each kind of synced watcher with more than one, its first
    /// watcher (the lowest ID) and the others.
    fn find_twins(&self) -> HashMap<i64, Vec<i64>> {
        type Kind<'a> = (&'a [u8], &'a [u8], [bool; 4]);
        let mut kinds: HashMap<Kind<'_>, Vec<i64>> = HashMap::new();
        for (id, watcher) in self.all.iter().filter(|(_, watcher)| watcher.synced) {
            let filters = [
                watcher.no_put,
                watcher.no_delete,
                watcher.prev_kv,
                watcher.fragment,
            ];
            kinds
                .entry((&watcher.key, &watcher.range_end, filters))
                .or_default()
                .push(*id);
        }
        kinds
            .into_values()
            .filter(|ids| ids.len() > 1)
            .map(|mut ids| {
                let first = ids.remove(0);
                (first, ids)
            })
            .collect()
    }

    /// Every watcher with the next revision it is owed.
    pub(crate) fn owed_all(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.all
            .iter()
            .map(|(id, watcher)| (*id, watcher.owed(self.floor)))
    }

    /// The watchers whose range may hold `key`: those on that very key and
    /// every range watcher (whose ranges are checked by [`Watcher::wants`]).
    pub(crate) fn candidates<'a>(&'a self, key: &[u8]) -> impl Iterator<Item = i64> + 'a {
        self.by_key
            .get(key)
            .into_iter()
            .flatten()
            .chain(self.ranges.iter())
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::mvccpb::event::EventType;
    use cairn_proto::mvccpb::{Event, KeyValue};

    use super::*;

    #[test]
    fn key_ranges_follow_etcd() {
        assert!(in_range(b"a", b"a", b""));
        assert!(!in_range(b"ab", b"a", b""));
        assert!(in_range(b"zzz", b"a", b"\0"));
        assert!(!in_range(b"0", b"a", b"\0"));
        assert!(in_range(b"foo/bar", b"foo/", b"foo0"));
        assert!(!in_range(b"foo0", b"foo/", b"foo0"));
    }

    fn watcher(key: &str, range_end: &str) -> Watcher {
        Watcher::new(key.as_bytes().to_vec(), range_end.as_bytes().to_vec(), 1)
    }

    fn event(kind: EventType, key: &str) -> EncodedEvent {
        EncodedEvent::new(&Event {
            r#type: kind as i32,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }),
            prev_kv: None,
        })
        .expect("has a kv")
    }

    #[test]
    fn filters_decide_which_kinds_of_event_a_watcher_takes() {
        let no_puts = Watcher {
            no_put: true,
            ..watcher("k", "l")
        };
        assert!(!no_puts.wants(&event(EventType::Put, "k1")));
        assert!(no_puts.wants(&event(EventType::Delete, "k2")));
        assert!(!no_puts.wants(&event(EventType::Delete, "z")));
        let no_deletes = Watcher {
            no_delete: true,
            ..watcher("k", "")
        };
        assert!(no_deletes.wants(&event(EventType::Put, "k")));
        assert!(!no_deletes.wants(&event(EventType::Delete, "k")));
    }

    fn candidates(watchers: &Watchers, key: &str) -> Vec<i64> {
        let mut ids: Vec<i64> = watchers.candidates(key.as_bytes()).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_key_finds_its_own_watchers_and_every_range_watcher_and_no_removed_one() {
        let mut watchers = Watchers::new(1);
        watchers.insert(1, watcher("a", ""));
        watchers.insert(2, watcher("a", ""));
        watchers.insert(3, watcher("b", ""));
        watchers.insert(4, watcher("a", "c"));
        assert_eq!(candidates(&watchers, "a"), vec![1, 2, 4]);
        assert_eq!(candidates(&watchers, "b"), vec![3, 4]);
        assert_eq!(candidates(&watchers, "z"), vec![4]);
        assert!(watchers.remove(2).is_some());
        assert!(watchers.remove(4).is_some());
        assert!(watchers.remove(4).is_none());
        assert_eq!(candidates(&watchers, "a"), vec![1]);
        assert!(watchers.remove(1).is_some());
        assert!(candidates(&watchers, "a").is_empty());
        assert_eq!(watchers.len(), 1);
        assert!(watchers.contains(3));
    }

    #[test]
    fn a_watcher_away_from_the_floor_is_followed_alone_until_it_reaches_it() {
        let mut watchers = Watchers::new(10);
        watchers.insert(1, Watcher::new(b"a".to_vec(), Vec::new(), 10));
        watchers.insert(2, Watcher::new(b"b".to_vec(), Vec::new(), 4));
        watchers.insert(3, Watcher::new(b"c".to_vec(), Vec::new(), 15));
        assert_eq!(watchers.unsynced(), vec![2, 3]);
        assert!(watchers.any_synced());
        watchers.raise_floor(12);
        assert_eq!(watchers.owed(1), Some(12));
        watchers.advance(2, 12);
        watchers.advance(1, 99);
        watchers.rejoin();
        assert_eq!(watchers.unsynced(), vec![3]);
        assert_eq!(watchers.owed(2), Some(12));
        watchers.raise_floor(15);
        watchers.rejoin();
        assert!(watchers.unsynced().is_empty());
        watchers.raise_floor(20);
        let owed: Vec<(i64, i64)> = watchers.owed_all().collect();
        assert_eq!(owed, vec![(1, 20), (2, 20), (3, 20)]);
        watchers.fall_behind();
        assert_eq!(watchers.unsynced(), vec![1, 2, 3]);
        assert!(!watchers.any_synced());
        assert_eq!(watchers.owed(3), Some(20));
        assert!(watchers.remove(3).is_some());
        assert_eq!(watchers.unsynced(), vec![1, 2]);
    }
}
