//! One client's Watch stream: its watchers, each with the next revision it
//! is owed, brought forward from the hub's window or, when behind it, from a
//! replica's history. Events go out in revision order, every event of a
//! revision in one response (or its fragments), none twice, none skipped.
//!
//! The stream's task waits when its client reads slowly; the hub does not,
//! so a slow client holds back only its own watchers, which later catch up
//! from history.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairn::mvcc::v1::Caller;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use tonic::{Status, Streaming};

use crate::batch::{self, Heads, Pass};
use crate::encoded::Revision;
use crate::error::WatchError;
use crate::history::{stream_error, History};
use crate::hub::{Hub, Window};
use crate::metrics::WATCH_METRICS;
use crate::outbox::Outbox;
use crate::watchers::{Watcher, Watchers};

/// Revisions read from the window at a time.
const WINDOW_BATCH: usize = 256;
/// The watch ID of a progress response to RequestProgress.
const PROGRESS_WATCH_ID: i64 = -1;

/// How many revisions to read from `from` to reach `target`, at most
/// [`WINDOW_BATCH`]: the synced and the unsynced watchers stop at the same
/// revision, so those brought up join the synced ones.
fn up_to(from: i64, target: i64) -> usize {
    usize::try_from(target - from + 1)
        .unwrap_or(0)
        .min(WINDOW_BATCH)
}

/// What every watcher of a gateway shares.
pub(crate) struct Shared {
    pub hub: Arc<Hub>,
    pub history: Arc<History>,
    pub cluster_id: u64,
    pub member_id: u64,
    pub progress_interval: Duration,
}

/// A client stream's state and its way out.
pub(crate) struct WatchStream {
    shared: Arc<Shared>,
    out: Outbox,
    /// Who opened the stream, for the READ check on each watch it creates.
    caller: Caller,
    watchers: Watchers,
    next_id: i64,
}

/// The client went away: the stream's work is over.
struct Gone;

impl WatchStream {
    pub(crate) fn new(shared: Arc<Shared>, out: Outbox, caller: Caller) -> Self {
        Self {
            watchers: Watchers::new(shared.hub.latest() + 1),
            shared,
            out,
            caller,
            next_id: 0,
        }
    }

    fn heads(&self) -> Heads {
        Heads {
            cluster_id: self.shared.cluster_id,
            member_id: self.shared.member_id,
            raft_term: self.shared.hub.term(),
        }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        self.heads().header(revision)
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Gone> {
        self.out.send(&response).await.map_err(|_| Gone)
    }

    /// Queues a pass's responses in order.
    async fn send_pass(&self, pass: Pass) -> Result<(), Gone> {
        WATCH_METRICS.events.inc_by(pass.events);
        self.out.send_all(pass.responses).await.map_err(|_| Gone)
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
                if self.watchers.remove(cancel.watch_id).is_some() {
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
        let history = &self.shared.history;
        let (current, allowed) = tokio::join!(
            history.current(),
            history.may_read(&self.caller, &create.key, &create.range_end)
        );
        let (current, compacted) = match current.and_then(|current| Ok((current, allowed?))) {
            Ok((revisions, None)) => revisions,
            Ok(((current, _), Some(refused))) => {
                // etcd answers a watch its user may not read as created
                // and canceled at once, not with a stream error, and names
                // every reason "permission denied".
                tracing::debug!(reason = refused.message(), "a watch was refused");
                return self
                    .send(WatchResponse {
                        header: self.header(current),
                        watch_id: create.watch_id,
                        created: true,
                        canceled: true,
                        cancel_reason: EtcdError::PermissionDenied.message().to_owned(),
                        ..Default::default()
                    })
                    .await;
            }
            Err(error) => {
                let _ = self.out.fail(Status::from(error)).await;
                return Err(Gone);
            }
        };
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watchers.contains(self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        if self.watchers.contains(id) {
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
        let next = if create.start_revision > 0 {
            create.start_revision
        } else {
            current + 1
        };
        let mut watcher = Watcher::new(create.key, create.range_end, next);
        watcher.no_put = create.filters.contains(&(FilterType::Noput as i32));
        watcher.no_delete = create.filters.contains(&(FilterType::Nodelete as i32));
        watcher.prev_kv = create.prev_kv;
        watcher.progress_notify = create.progress_notify;
        watcher.fragment = create.fragment;
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

    /// Brings every watcher up to the newest revision the gateway had when
    /// called: the unsynced ones one by one (from the window, or from history
    /// when behind it), then the synced ones together, each revision read
    /// from the window once for the whole stream.
    async fn deliver(&mut self) -> Result<(), Gone> {
        let target = self.shared.hub.latest();
        loop {
            let before = self.position();
            let oldest = self.shared.hub.oldest().unwrap_or(i64::MAX);
            let floor = self.watchers.floor();
            if floor <= target && floor < oldest && self.watchers.any_synced() {
                self.watchers.fall_behind();
            }
            for id in self.watchers.unsynced() {
                self.bring_up(id, target).await?;
            }
            let floor = self.watchers.floor();
            if floor <= target {
                if !self.watchers.any_synced() {
                    self.watchers.raise_floor(target + 1);
                } else if let Window::Here(revisions) =
                    self.shared.hub.read(floor, up_to(floor, target))
                {
                    self.deliver_from_window(None, &revisions).await?;
                }
                // Gone: the window moved on meanwhile; the synced watchers
                // fall behind on the next turn.
            }
            self.watchers.rejoin();
            let position = self.position();
            // Everyone there, or no step forward (history behind the
            // window): the next revision to arrive tries again.
            if position.0 > target && position.1 > target || position == before {
                return Ok(());
            }
        }
    }

    /// The floor and the lowest revision an unsynced watcher is owed: how far
    /// the stream has got.
    fn position(&self) -> (i64, i64) {
        let unsynced = self
            .watchers
            .unsynced()
            .into_iter()
            .filter_map(|id| self.watchers.owed(id))
            .min()
            .unwrap_or(i64::MAX);
        (self.watchers.floor(), unsynced)
    }

    /// Brings unsynced watcher `id` up to `target` from the window, or from
    /// history when the window no longer holds what it is owed.
    async fn bring_up(&mut self, id: i64, target: i64) -> Result<(), Gone> {
        while let Some(next) = self.watchers.owed(id).filter(|next| *next <= target) {
            match self.shared.hub.read(next, up_to(next, target)) {
                Window::Here(revisions) if !revisions.is_empty() => {
                    self.deliver_from_window(Some(id), &revisions).await?;
                }
                _ => {
                    WATCH_METRICS.catch_ups.inc();
                    // Caught up to the store, perhaps past the window's newest.
                    return self.catch_up(id).await;
                }
            }
        }
        Ok(())
    }

    /// Sends `only` watcher, or the synced ones, what they want of
    /// `revisions`, a pass at a time.
    async fn deliver_from_window<R: std::borrow::Borrow<Revision>>(
        &mut self,
        only: Option<i64>,
        revisions: &[R],
    ) -> Result<(), Gone> {
        let current = self.shared.hub.latest();
        let mut done = 0;
        while done < revisions.len() {
            let heads = self.heads();
            let pass = batch::collect(&mut self.watchers, only, &revisions[done..], current, heads);
            done += pass.taken.max(1);
            self.send_pass(pass).await?;
        }
        Ok(())
    }

    /// Brings watcher `id` up to the store's current revision from history;
    /// a watcher whose next revision was compacted is cancelled as etcd does.
    async fn catch_up(&mut self, id: i64) -> Result<(), Gone> {
        let (Some(watcher), Some(from)) = (self.watchers.get(id), self.watchers.owed(id)) else {
            return Ok(());
        };
        let (key, range_end, prev_kv) = (
            watcher.key.clone(),
            watcher.range_end.clone(),
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
            let revisions: Vec<Revision> = chunk.revisions.into_iter().map(Revision::new).collect();
            let mut done = 0;
            while done < revisions.len() {
                let heads = self.heads();
                let pass = batch::collect(
                    &mut self.watchers,
                    Some(id),
                    &revisions[done..],
                    current,
                    heads,
                );
                done += pass.taken.max(1);
                self.send_pass(pass).await?;
            }
            // Everything up to the revision current at the call is in.
            self.watchers.advance(id, chunk.current_revision + 1);
        }
    }

    /// Ends watcher `id` after a history failure: compacted history cancels
    /// it with the compact revision; anything else ends the stream, and the
    /// client resumes elsewhere from its last revision + 1.
    async fn fail_watcher(&mut self, id: i64, error: WatchError) -> Result<(), Gone> {
        match error {
            WatchError::Compacted { compact_revision } => {
                if self.watchers.remove(id).is_some() {
                    WATCH_METRICS.watchers.dec();
                }
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
        match self.watchers.owed_all().map(|(_, next)| next - 1).min() {
            Some(revision) => revision,
            None => self.shared.hub.latest(),
        }
    }

    /// etcd's progress_notify: a watcher that heard nothing lately is told
    /// the revision it has caught up to.
    async fn notify_progress(&mut self) -> Result<(), Gone> {
        let floor = self.watchers.floor();
        let due: Vec<(i64, i64)> = self
            .watchers
            .iter_mut()
            .filter(|(_, watcher)| watcher.progress_notify)
            .filter_map(|(id, watcher)| {
                let quiet = !watcher.active_since_notify;
                watcher.active_since_notify = false;
                quiet.then_some((id, watcher.owed(floor) - 1))
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
