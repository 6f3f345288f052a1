//! Turning a run of revisions into the responses a stream's watchers are
//! owed, as etcd batches them: many revisions to a response, whole
//! revisions only (but for `fragment`), at most [`BATCH_REVISIONS`] of them
//! and about [`BATCH_BYTES`]. The events' bytes are the shared encodings of
//! `encoded`, copied once per kind of synced watcher (watchers alike in range
//! and filters take the same bytes) and once per watcher catching up alone.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cairn_proto::etcdserverpb::{ResponseHeader, WatchResponse};

use crate::encoded::{EncodedResponse, Revision};
use crate::watchers::{Twins, Watchers};

/// Above this, a watcher that allows fragments gets a revision in pieces.
pub(crate) const FRAGMENT_BYTES: usize = 1024 * 1024;
/// The most revisions one response carries, as etcd's watch batches do.
const BATCH_REVISIONS: usize = 1000;
/// Revisions join a response until it passes this size; one revision larger
/// than this goes alone.
const BATCH_BYTES: usize = 32 * 1024;
/// One pass stops taking revisions once its responses hold this much, so a
/// stream's memory stays bounded while its client reads slowly.
const PASS_BYTES: usize = 256 * 1024;

/// What every response header of a gateway carries but the revision.
#[derive(Clone, Copy)]
pub(crate) struct Heads {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
}

impl Heads {
    /// A response's header at `revision`.
    pub(crate) fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        })
    }
}

/// The responses one pass produced, in the order to send them (each
/// watcher's in revision order).
pub(crate) struct Pass {
    pub responses: Vec<EncodedResponse>,
    /// How many of the revisions given were taken; the rest are for the
    /// next pass.
    pub taken: usize,
    pub events: u64,
}

/// One watcher's response in the making.
struct Batch {
    fields: BytesMut,
    revisions: usize,
    /// The newest revision before the open one, in `fields`.
    closed: i64,
    /// The revision being added, and where its fields begin.
    open: i64,
    open_start: usize,
    /// Where each of the open revision's events begins, for fragments.
    open_events: Vec<usize>,
}

impl Batch {
    fn new() -> Self {
        Self {
            fields: BytesMut::new(),
            revisions: 0,
            closed: 0,
            open: 0,
            open_start: 0,
            open_events: Vec::new(),
        }
    }

    fn begin(&mut self, revision: i64) {
        if self.revisions > 0 {
            self.closed = self.open;
        }
        self.open = revision;
        self.open_start = self.fields.len();
        self.open_events.clear();
        self.revisions += 1;
    }

    fn take_all(&mut self) -> Bytes {
        self.revisions = 0;
        self.open_start = 0;
        self.open_events.clear();
        self.fields.split().freeze()
    }
}

/// Builds the responses of one pass over `revisions` (in revision order,
/// from the floor when for the synced watchers) for `only` one unsynced
/// watcher, or else the stream's synced watchers. Each response's header
/// carries `current` (or its newest revision, if newer), as etcd's does for
/// a watcher catching up. Those served are owed only later revisions
/// afterwards.
pub(crate) fn collect<R: Borrow<Revision>>(
    watchers: &mut Watchers,
    only: Option<i64>,
    revisions: &[R],
    current: i64,
    heads: Heads,
) -> Pass {
    let mut batches: HashMap<i64, Batch> = HashMap::new();
    let mut touched: Vec<i64> = Vec::new();
    // Synced watchers alike share the first one's batch: its events are
    // copied once, and each twin's response carries the same bytes.
    let twins = match only {
        Some(_) => Arc::default(),
        None => watchers.synced_twins(),
    };
    let mut out = Out {
        responses: Vec::new(),
        bytes: 0,
        current,
        heads,
        twins,
    };
    let mut events = 0;
    let mut taken: usize = 0;
    let mut ids: Vec<i64> = Vec::new();
    for revision in revisions.iter().map(Borrow::borrow) {
        for event in revision.events() {
            ids.clear();
            match only {
                Some(id) => ids.push(id),
                None => ids.extend(watchers.candidates(event.key())),
            }
            for &id in &ids {
                if out.twins.followers.contains(&id) {
                    continue;
                }
                let Some(watcher) = watchers.get(id) else {
                    continue;
                };
                let owed = watcher.owed(watchers.floor());
                // The synced pass is for synced watchers, a watcher's own pass for it.
                if watcher.synced() == only.is_some()
                    || revision.revision < owed
                    || !watcher.wants(event)
                {
                    continue;
                }
                let batch = batches.entry(id).or_insert_with(Batch::new);
                if batch.revisions == 0 || batch.open != revision.revision {
                    batch.begin(revision.revision);
                    touched.push(id);
                }
                batch.open_events.push(batch.fields.len());
                event.write_field(watcher.prev_kv, &mut batch.fields);
                events += out.twins.sharing(id) as u64;
            }
        }
        for id in touched.drain(..) {
            let (Some(batch), Some(watcher)) = (batches.get_mut(&id), watchers.get(id)) else {
                continue;
            };
            out.after_revision(id, batch, watcher.fragment);
        }
        taken += 1;
        let held: usize = batches
            .iter()
            .map(|(id, batch)| batch.fields.len() * out.twins.sharing(*id))
            .sum();
        if out.bytes + held > PASS_BYTES {
            break;
        }
    }
    for (id, mut batch) in batches {
        if batch.revisions > 0 {
            let last = batch.open;
            out.respond(id, batch.take_all(), last, false);
        }
        for id in out.twins.alike(id) {
            if let Some(watcher) = watchers.get_mut(id) {
                watcher.active_since_notify = true;
            }
        }
    }
    if let Some(last) = taken
        .checked_sub(1)
        .and_then(|index| revisions.get(index))
        .map(|revision| revision.borrow().revision)
    {
        match only {
            Some(id) => watchers.advance(id, last + 1),
            None => watchers.raise_floor(last + 1),
        }
    }
    Pass {
        responses: out.responses,
        taken,
        events,
    }
}

/// The responses made so far.
struct Out {
    responses: Vec<EncodedResponse>,
    bytes: usize,
    current: i64,
    heads: Heads,
    /// The watchers that take a batch's responses besides its own.
    twins: Arc<Twins>,
}

impl Out {
    fn respond(&mut self, id: i64, fields: Bytes, last: i64, fragment: bool) {
        let twins = Arc::clone(&self.twins);
        for watch_id in twins.alike(id) {
            let head = WatchResponse {
                header: self.heads.header(last.max(self.current)),
                watch_id,
                fragment,
                ..Default::default()
            };
            let response = EncodedResponse::with_events(&head, fields.clone());
            self.bytes += response.len();
            self.responses.push(response);
        }
    }

    /// Sends what a batch holds once a revision is in it and it is full: the
    /// revisions before the open one when the open one made it too large, a
    /// large open revision in fragments to a watcher that allows them.
    fn after_revision(&mut self, id: i64, batch: &mut Batch, fragment: bool) {
        let open_bytes = batch.fields.len() - batch.open_start;
        if batch.revisions > 1
            && (batch.fields.len() > BATCH_BYTES || (fragment && open_bytes > FRAGMENT_BYTES))
        {
            let earlier = batch.fields.split_to(batch.open_start).freeze();
            let shift = batch.open_start;
            batch
                .open_events
                .iter_mut()
                .for_each(|start| *start -= shift);
            batch.open_start = 0;
            batch.revisions = 1;
            self.respond(id, earlier, batch.closed, false);
        }
        if fragment && open_bytes > FRAGMENT_BYTES {
            self.fragments(id, batch);
        } else if batch.revisions == BATCH_REVISIONS || batch.fields.len() > BATCH_BYTES {
            let last = batch.open;
            self.respond(id, batch.take_all(), last, false);
        }
    }

    /// The batch's only revision in pieces of at most [`FRAGMENT_BYTES`]
    /// (or one event, if larger), every piece but the last marked
    /// `fragment`; an event is never split.
    fn fragments(&mut self, id: i64, batch: &mut Batch) {
        let revision = batch.open;
        let starts = std::mem::take(&mut batch.open_events);
        let mut whole = batch.take_all();
        let ends = starts.iter().skip(1).copied().chain([whole.len()]);
        let mut cuts = Vec::new();
        let mut piece_start = 0;
        for (start, end) in starts.iter().copied().zip(ends) {
            if end - piece_start > FRAGMENT_BYTES && start > piece_start {
                cuts.push(start);
                piece_start = start;
            }
        }
        let mut consumed = 0;
        for cut in cuts {
            let piece = whole.split_to(cut - consumed);
            consumed = cut;
            self.respond(id, piece, revision, true);
        }
        self.respond(id, whole, revision, false);
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::cairn::mvcc::v1::RevisionEvents;
    use cairn_proto::mvccpb::event::EventType;
    use cairn_proto::mvccpb::{Event, KeyValue};
    use prost::Message;

    use super::*;
    use crate::watchers::Watcher;

    const HEADS: Heads = Heads {
        cluster_id: 1,
        member_id: 2,
        raft_term: 3,
    };

    fn revision(number: i64, keys: &[&str], value_bytes: usize) -> Revision {
        Revision::new(RevisionEvents {
            revision: number,
            events: keys
                .iter()
                .map(|key| Event {
                    r#type: EventType::Put as i32,
                    kv: Some(KeyValue {
                        key: key.as_bytes().to_vec(),
                        mod_revision: number,
                        value: vec![b'v'; value_bytes],
                        ..Default::default()
                    }),
                    prev_kv: Some(KeyValue {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    }),
                })
                .collect(),
            raft_term: 3,
        })
    }

    fn watcher(key: &str, range_end: &str, next: i64) -> Watcher {
        Watcher::new(key.as_bytes().to_vec(), range_end.as_bytes().to_vec(), next)
    }

    fn decoded(pass: &Pass) -> Vec<WatchResponse> {
        pass.responses
            .iter()
            .map(|response| {
                let mut bytes = Vec::new();
                response.write(&mut bytes);
                WatchResponse::decode(bytes.as_slice()).expect("a WatchResponse")
            })
            .collect()
    }

    /// (watch ID, the revisions of its events) of each response.
    fn shape(responses: &[WatchResponse]) -> Vec<(i64, Vec<i64>)> {
        let mut shape: Vec<(i64, Vec<i64>)> = responses
            .iter()
            .map(|response| {
                let revisions = response
                    .events
                    .iter()
                    .filter_map(|event| event.kv.as_ref().map(|kv| kv.mod_revision))
                    .collect();
                (response.watch_id, revisions)
            })
            .collect();
        shape.sort();
        shape
    }

    #[test]
    fn each_synced_watcher_gets_what_it_wants_of_the_revisions_in_one_response() {
        let mut watchers = Watchers::new(5);
        watchers.insert(1, watcher("a", "", 5));
        watchers.insert(2, watcher("a", "c", 5));
        watchers.insert(3, watcher("x", "", 5));
        watchers.insert(4, watcher("a", "", 7));
        let revisions = [
            revision(5, &["a"], 8),
            revision(6, &["b", "a"], 8),
            revision(7, &["z"], 8),
        ];
        let pass = collect(&mut watchers, None, &revisions, 9, HEADS);
        assert_eq!(pass.taken, 3);
        assert_eq!(pass.events, 5);
        let responses = decoded(&pass);
        assert_eq!(
            shape(&responses),
            vec![(1, vec![5, 6]), (2, vec![5, 6, 6])],
            "watcher 4 is not synced: it is served on its own"
        );
        for response in &responses {
            assert_eq!(response.header.as_ref().map(|h| h.revision), Some(9));
            assert!(response.events.iter().all(|event| event.prev_kv.is_none()));
        }
        for id in [1, 2, 3] {
            assert_eq!(watchers.owed(id), Some(8), "watcher {id}");
        }
        assert_eq!(watchers.owed(4), Some(7));
        assert!(watchers.get(1).is_some_and(|w| w.active_since_notify));
        assert!(watchers.get(3).is_some_and(|w| !w.active_since_notify));
    }

    #[test]
    fn synced_watchers_alike_share_one_batch_and_each_gets_its_own_responses() {
        let mut watchers = Watchers::new(5);
        watchers.insert(1, watcher("a", "c", 5));
        watchers.insert(2, watcher("a", "c", 5));
        let mut with_prev_kv = watcher("a", "c", 5);
        with_prev_kv.prev_kv = true;
        watchers.insert(3, with_prev_kv);
        watchers.insert(4, watcher("a", "c", 5));
        watchers.insert(5, watcher("a", "c", 6));
        let revisions = [revision(5, &["a"], 8), revision(6, &["b"], 8)];
        let pass = collect(&mut watchers, None, &revisions, 6, HEADS);
        assert_eq!(pass.taken, 2);
        assert_eq!(
            pass.events, 8,
            "two events to each of the four synced watchers"
        );
        let responses = decoded(&pass);
        assert_eq!(
            shape(&responses),
            vec![
                (1, vec![5, 6]),
                (2, vec![5, 6]),
                (3, vec![5, 6]),
                (4, vec![5, 6])
            ],
            "watcher 5 is not synced: it is served on its own"
        );
        let events_of = |id: i64| {
            responses
                .iter()
                .find(|response| response.watch_id == id)
                .map(|response| response.events.clone())
        };
        assert_eq!(events_of(2), events_of(1));
        assert_eq!(events_of(4), events_of(1));
        assert_ne!(events_of(3), events_of(1), "watcher 3 also takes prev_kv");
        for id in [1, 2, 3, 4] {
            assert_eq!(watchers.owed(id), Some(7), "watcher {id}");
            assert!(watchers.get(id).is_some_and(|w| w.active_since_notify));
        }
        assert_eq!(watchers.owed(5), Some(6));
    }

    #[test]
    fn watchers_alike_are_found_again_after_one_joins_and_one_leaves() {
        let mut watchers = Watchers::new(5);
        watchers.insert(1, watcher("a", "c", 5));
        watchers.insert(2, watcher("a", "c", 5));
        let first = collect(&mut watchers, None, &[revision(5, &["a"], 8)], 5, HEADS);
        assert_eq!(shape(&decoded(&first)), vec![(1, vec![5]), (2, vec![5])]);
        watchers.insert(3, watcher("a", "c", 6));
        watchers.remove(1);
        let second = collect(&mut watchers, None, &[revision(6, &["b"], 8)], 6, HEADS);
        assert_eq!(shape(&decoded(&second)), vec![(2, vec![6]), (3, vec![6])]);
        assert_eq!(second.events, 2);
    }

    #[test]
    fn a_response_stops_at_a_revision_boundary_past_its_byte_bound() {
        let mut watchers = Watchers::new(1);
        watchers.insert(1, watcher("a", "", 1));
        // Each revision about 10 KiB: three fit under 32 KiB, the fourth not.
        let revisions: Vec<Revision> = (1..=8)
            .map(|number| revision(number, &["a"], 10 * 1024))
            .collect();
        let pass = collect(&mut watchers, None, &revisions, 8, HEADS);
        let responses = decoded(&pass);
        let sizes: Vec<usize> = responses.iter().map(|r| r.events.len()).collect();
        assert_eq!(sizes, vec![3, 3, 2]);
        let headers: Vec<i64> = responses
            .iter()
            .filter_map(|r| r.header.as_ref().map(|h| h.revision))
            .collect();
        assert_eq!(headers, vec![8, 8, 8]);
        assert!(responses.iter().all(|r| !r.fragment));
    }

    #[test]
    fn a_large_revision_goes_in_fragments_only_to_a_watcher_that_allows_them() {
        let mut watchers = Watchers::new(1);
        let mut fragments = watcher("k", "l", 1);
        fragments.fragment = true;
        fragments.prev_kv = true;
        watchers.insert(1, fragments);
        watchers.insert(2, watcher("k", "l", 1));
        // 5 events of 400 KiB: fragments of two events each, then one.
        let keys = ["k1", "k2", "k3", "k4", "k5"];
        let revisions = [revision(1, &["k0"], 8), revision(2, &keys, 400 * 1024)];
        let pass = collect(&mut watchers, None, &revisions, 2, HEADS);
        let responses = decoded(&pass);
        let of = |id: i64| -> Vec<(usize, bool)> {
            responses
                .iter()
                .filter(|r| r.watch_id == id)
                .map(|r| (r.events.len(), r.fragment))
                .collect()
        };
        assert_eq!(
            of(1),
            vec![(1, false), (2, true), (2, true), (1, false)],
            "revision 1 alone, then revision 2 in fragments"
        );
        assert_eq!(of(2), vec![(1, false), (5, false)]);
        assert!(responses
            .iter()
            .filter(|r| r.watch_id == 1)
            .flat_map(|r| &r.events)
            .all(|event| event.prev_kv.is_some()));
    }

    #[test]
    fn one_watcher_catching_up_leaves_the_others_alone() {
        let mut watchers = Watchers::new(6);
        watchers.insert(1, watcher("a", "", 6));
        watchers.insert(2, watcher("a", "", 1));
        watchers.insert(3, watcher("a", "", 2));
        let revisions = [revision(1, &["a"], 8), revision(4, &["a"], 8)];
        let pass = collect(&mut watchers, Some(2), &revisions, 4, HEADS);
        assert_eq!(shape(&decoded(&pass)), vec![(2, vec![1, 4])]);
        assert_eq!(watchers.owed(1), Some(6));
        assert_eq!(watchers.owed(2), Some(5));
        assert_eq!(watchers.owed(3), Some(2));
    }

    #[test]
    fn a_pass_stops_once_its_responses_hold_enough() {
        let mut watchers = Watchers::new(1);
        watchers.insert(1, watcher("a", "", 1));
        let revisions: Vec<Revision> = (1..=100)
            .map(|number| revision(number, &["a"], 16 * 1024))
            .collect();
        let pass = collect(&mut watchers, None, &revisions, 100, HEADS);
        assert!(pass.taken < 100, "took all {} revisions", pass.taken);
        let next = i64::try_from(pass.taken).expect("small") + 1;
        assert_eq!(watchers.owed(1), Some(next));
        let delivered: usize = decoded(&pass).iter().map(|r| r.events.len()).sum();
        assert_eq!(delivered, pass.taken);
    }
}
