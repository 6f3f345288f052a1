//! One client's Watch stream: its watchers, each with the next revision it
//! is owed, brought forward from the hub's window or, when behind it, from a
//! replica's history. Events go out in revision order, every event of a
//! revision in one response (or its fragments), none twice, none skipped.
//!
//! The stream's task waits when its client reads slowly; the hub does not,
//! so a slow client holds back only its own watchers, which later catch up
//! from history.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairn::mvcc::v1::RevisionEvents;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::Event;
use prost::Message;
use tonic::{Status, Streaming};

use crate::error::WatchError;
use crate::history::{stream_error, History};
use crate::hub::{Hub, Window};
use crate::metrics::WATCH_METRICS;
use crate::outbox::Outbox;

/// Revisions read from the window at a time.
const WINDOW_BATCH: usize = 256;
/// Above this, a watcher that allows fragments gets its events in pieces.
const FRAGMENT_BYTES: usize = 1024 * 1024;
/// The most revisions one response carries, as etcd's watch batches do.
const BATCH_REVISIONS: usize = 1000;
/// Revisions join a response until it would pass this size; a revision is
/// never split between responses (but for fragments), so one larger than
/// this goes alone.
const BATCH_BYTES: usize = 32 * 1024;
/// The watch ID of a progress response to RequestProgress.
const PROGRESS_WATCH_ID: i64 = -1;

/// What every watcher of a gateway shares.
pub(crate) struct Shared {
    pub hub: Arc<Hub>,
    pub history: Arc<History>,
    pub cluster_id: u64,
    pub member_id: u64,
    pub progress_interval: Duration,
}

/// One watcher of a stream.
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    /// The next revision this watcher is owed.
    next: i64,
    /// Whether anything was sent since the last progress notification.
    active_since_notify: bool,
}

impl Watcher {
    fn matches(&self, event: &Event) -> bool {
        let Some(kv) = event.kv.as_ref() else {
            return false;
        };
        let kind_wanted = if event.r#type == EventType::Delete as i32 {
            !self.no_delete
        } else {
            !self.no_put
        };
        kind_wanted && in_range(&kv.key, &self.key, &self.range_end)
    }

    /// This watcher's share of one revision's events.
    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|event| self.matches(event))
            .map(|event| {
                let mut event = event.clone();
                if !self.prev_kv {
                    event.prev_kv = None;
                }
                event
            })
            .collect()
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

/// A client stream's state and its way out.
pub(crate) struct WatchStream {
    shared: Arc<Shared>,
    out: Outbox,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
}

/// The client went away: the stream's work is over.
struct Gone;

impl WatchStream {
    pub(crate) fn new(shared: Arc<Shared>, out: Outbox) -> Self {
        Self {
            shared,
            out,
            watchers: BTreeMap::new(),
            next_id: 0,
        }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.shared.cluster_id,
            member_id: self.shared.member_id,
            revision,
            raft_term: self.shared.hub.term(),
        })
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Gone> {
        self.out.send(response).await.map_err(|_| Gone)
    }

    /// Serves the stream until the client goes away. A client that only
    /// stops sending (half-closes) keeps its watchers, as etcd's does.
    pub(crate) async fn run(mut self, mut requests: Streaming<WatchRequest>) {
        WATCH_METRICS.streams.inc();
        let mut latest = self.shared.hub.subscribe();
        let mut progress = tokio::time::interval(self.shared.progress_interval);
        progress.tick().await;
        let mut sending = true;
        loop {
            if self.deliver().await.is_err() {
                break;
            }
            let step = tokio::select! {
                request = requests.message(), if sending => match request {
                    Ok(Some(request)) => self.handle(request).await,
                    Ok(None) => {
                        sending = false;
                        Ok(())
                    }
                    // A request that does not decode (or a broken request
                    // body) ends the stream with gRPC's status, as etcd's
                    // does, not with a silent OK.
                    Err(status) => {
                        let _ = self.out.fail(status).await;
                        Err(Gone)
                    }
                },
                changed = latest.changed() => changed.map_err(|_| Gone),
                _ = progress.tick() => self.notify_progress().await,
                () = self.out.closed() => Err(Gone),
            };
            if step.is_err() {
                break;
            }
        }
        WATCH_METRICS.streams.dec();
        WATCH_METRICS.watchers.sub(self.watchers.len() as i64);
    }

    async fn handle(&mut self, request: WatchRequest) -> Result<(), Gone> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    WATCH_METRICS.watchers.dec();
                }
                self.send(WatchResponse {
                    header: self.header(self.shared.hub.latest()),
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..Default::default()
                })
                .await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let revision = self.progress_revision();
                self.send(WatchResponse {
                    header: self.header(revision),
                    watch_id: PROGRESS_WATCH_ID,
                    ..Default::default()
                })
                .await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Gone> {
        let (current, compacted) = match self.shared.history.current().await {
            Ok(revisions) => revisions,
            Err(error) => {
                let _ = self.out.fail(Status::from(error)).await;
                return Err(Gone);
            }
        };
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        if self.watchers.contains_key(&id) {
            return self
                .send(WatchResponse {
                    header: self.header(current),
                    watch_id: id,
                    created: true,
                    canceled: true,
                    cancel_reason: "etcdserver: duplicate watch ID".to_owned(),
                    ..Default::default()
                })
                .await;
        }
        let watcher = Watcher {
            key: create.key,
            range_end: create.range_end,
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: create.prev_kv,
            progress_notify: create.progress_notify,
            fragment: create.fragment,
            next: if create.start_revision > 0 {
                create.start_revision
            } else {
                current + 1
            },
            active_since_notify: false,
        };
        self.watchers.insert(id, watcher);
        WATCH_METRICS.watchers.inc();
        self.send(WatchResponse {
            header: self.header(current),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await?;
        // The window may still hold revisions a compaction removed from the
        // store; etcd refuses a start below the compact revision all the same.
        if create.start_revision > 0 && create.start_revision < compacted {
            return self
                .fail_watcher(
                    id,
                    WatchError::Compacted {
                        compact_revision: compacted,
                    },
                )
                .await;
        }
        Ok(())
    }

    /// Brings every watcher up to the newest revision the gateway has.
    async fn deliver(&mut self) -> Result<(), Gone> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            while let Some(next) = self.watchers.get(&id).map(|watcher| watcher.next) {
                if next > self.shared.hub.latest() {
                    break;
                }
                match self.shared.hub.read(next, WINDOW_BATCH) {
                    Window::Here(revisions) => {
                        let current = self.shared.hub.latest();
                        self.deliver_revisions(id, &revisions, current).await?
                    }
                    Window::Gone => {
                        WATCH_METRICS.catch_ups.inc();
                        self.catch_up(id).await?;
                        // Caught up to the store, perhaps past the window's newest.
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends watcher `id` the events it wants of `revisions` (in revision
    /// order), as etcd does: many revisions to a response, whole revisions
    /// only, at most [`BATCH_REVISIONS`] of them and about [`BATCH_BYTES`].
    /// Each response's header carries the store's `current` revision (or
    /// its last event's, if newer), as etcd's does for a watcher catching up.
    async fn deliver_revisions<R: Borrow<RevisionEvents>>(
        &mut self,
        id: i64,
        revisions: &[R],
        current: i64,
    ) -> Result<(), Gone> {
        let Some(fragment) = self.watchers.get(&id).map(|watcher| watcher.fragment) else {
            return Ok(());
        };
        let mut batch: Vec<Event> = Vec::new();
        let mut batch_bytes = 0;
        let mut batch_revisions = 0;
        let mut last_revision = 0;
        for revision in revisions.iter().map(Borrow::borrow) {
            let Some(watcher) = self.watchers.get_mut(&id) else {
                return Ok(());
            };
            if revision.revision < watcher.next {
                continue;
            }
            watcher.next = revision.revision + 1;
            let events = watcher.select(&revision.events);
            if events.is_empty() {
                continue;
            }
            watcher.active_since_notify = true;
            let bytes: usize = events.iter().map(Message::encoded_len).sum();
            let full = batch_revisions == BATCH_REVISIONS || batch_bytes + bytes > BATCH_BYTES;
            if !batch.is_empty() && full {
                let events = std::mem::take(&mut batch);
                self.send_events(
                    id,
                    last_revision.max(current),
                    events,
                    batch_bytes,
                    fragment,
                )
                .await?;
                batch_bytes = 0;
                batch_revisions = 0;
            }
            batch.extend(events);
            batch_bytes += bytes;
            batch_revisions += 1;
            last_revision = revision.revision;
        }
        if !batch.is_empty() {
            self.send_events(id, last_revision.max(current), batch, batch_bytes, fragment)
                .await?;
        }
        Ok(())
    }

    /// Sends `events` (`size` bytes encoded) of revisions up to `revision`
    /// to watcher `id`: in one response, or in fragments when they are
    /// large and the watcher allows it.
    async fn send_events(
        &self,
        id: i64,
        revision: i64,
        events: Vec<Event>,
        size: usize,
        fragment: bool,
    ) -> Result<(), Gone> {
        WATCH_METRICS.events.inc_by(events.len() as u64);
        let mut pieces: Vec<(Vec<Event>, usize)> = Vec::new();
        if !fragment || size <= FRAGMENT_BYTES {
            pieces.push((events, size));
        } else {
            pieces.push((Vec::new(), 0));
            for event in events {
                let event_size = event.encoded_len();
                if let Some((piece, piece_size)) = pieces.last_mut() {
                    if *piece_size + event_size <= FRAGMENT_BYTES || piece.is_empty() {
                        piece.push(event);
                        *piece_size += event_size;
                        continue;
                    }
                }
                pieces.push((vec![event], event_size));
            }
        }
        let last = pieces.len() - 1;
        for (index, (events, size)) in pieces.into_iter().enumerate() {
            let response = WatchResponse {
                header: self.header(revision),
                watch_id: id,
                events,
                fragment: index < last,
                ..Default::default()
            };
            self.out.send_of(response, size).await.map_err(|_| Gone)?;
        }
        Ok(())
    }

    /// Brings watcher `id` up to the store's current revision from history;
    /// a watcher whose next revision was compacted is cancelled as etcd does.
    async fn catch_up(&mut self, id: i64) -> Result<(), Gone> {
        let Some(watcher) = self.watchers.get(&id) else {
            return Ok(());
        };
        let (key, range_end, from, prev_kv) = (
            watcher.key.clone(),
            watcher.range_end.clone(),
            watcher.next,
            watcher.prev_kv,
        );
        let mut chunks = match self
            .shared
            .history
            .events(&key, &range_end, from, prev_kv)
            .await
        {
            Ok(chunks) => chunks,
            Err(error) => return self.fail_watcher(id, error).await,
        };
        loop {
            let chunk = match chunks.message().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(()),
                Err(status) => return self.fail_watcher(id, stream_error(status)).await,
            };
            let current = chunk.current_revision.max(self.shared.hub.latest());
            self.deliver_revisions(id, &chunk.revisions, current)
                .await?;
            if let Some(watcher) = self.watchers.get_mut(&id) {
                // Everything up to the revision current at the call is in.
                watcher.next = watcher.next.max(chunk.current_revision + 1);
            }
        }
    }

    /// Ends watcher `id` after a history failure: compacted history cancels
    /// it with the compact revision; anything else ends the stream, and the
    /// client resumes elsewhere from its last revision + 1.
    async fn fail_watcher(&mut self, id: i64, error: WatchError) -> Result<(), Gone> {
        match error {
            WatchError::Compacted { compact_revision } => {
                self.watchers.remove(&id);
                WATCH_METRICS.watchers.dec();
                self.send(WatchResponse {
                    header: self.header(self.shared.hub.latest()),
                    watch_id: id,
                    canceled: true,
                    compact_revision,
                    cancel_reason: EtcdError::Compacted.message().to_owned(),
                    ..Default::default()
                })
                .await
            }
            other => {
                tracing::warn!(error = %other, "history unavailable; ending the watch stream");
                let _ = self.out.fail(Status::from(other)).await;
                Err(Gone)
            }
        }
    }

    /// The revision every watcher has been given everything up to: never
    /// ahead of what was delivered.
    fn progress_revision(&self) -> i64 {
        match self.watchers.values().map(|watcher| watcher.next - 1).min() {
            Some(revision) => revision,
            None => self.shared.hub.latest(),
        }
    }

    /// etcd's progress_notify: a watcher that heard nothing lately is told
    /// the revision it has caught up to.
    async fn notify_progress(&mut self) -> Result<(), Gone> {
        let due: Vec<(i64, i64)> = self
            .watchers
            .iter_mut()
            .filter(|(_, watcher)| watcher.progress_notify)
            .filter_map(|(id, watcher)| {
                let quiet = !watcher.active_since_notify;
                watcher.active_since_notify = false;
                quiet.then_some((*id, watcher.next - 1))
            })
            .collect();
        for (id, revision) in due {
            self.send(WatchResponse {
                header: self.header(revision),
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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

    fn event(kind: EventType, key: &str) -> Event {
        Event {
            r#type: kind as i32,
            kv: Some(cairn_proto::mvccpb::KeyValue {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }),
            prev_kv: Some(cairn_proto::mvccpb::KeyValue::default()),
        }
    }

    #[test]
    fn filters_and_prev_kv_shape_what_a_watcher_gets() {
        let watcher = Watcher {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            no_put: true,
            no_delete: false,
            prev_kv: false,
            progress_notify: false,
            fragment: false,
            next: 1,
            active_since_notify: false,
        };
        let events = [
            event(EventType::Put, "k1"),
            event(EventType::Delete, "k2"),
            event(EventType::Delete, "z"),
        ];
        let selected = watcher.select(&events);
        assert_eq!(selected.len(), 1);
        assert_eq!(
            selected[0].kv.as_ref().map(|kv| kv.key.clone()),
            Some(b"k2".to_vec())
        );
        assert!(selected[0].prev_kv.is_none());
    }
}
