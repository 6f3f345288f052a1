//! Publishes every revision's events to the JetStream revision stream, one
//! message per revision, so that the stream sequence equals the revision.
//!
//! One replica publishes at a time: the holder of the publisher claim, a
//! command in the log like the lease claim. The others stand by, watching
//! the stream; when it stays behind their store for `takeover_after`, one
//! claims the next epoch and takes over, and the old holder stops once it
//! applies that claim. Each message is published with
//! `Nats-Expected-Last-Sequence` = revision − 1, so even two publishers for a
//! moment (a takeover under way) leave the stream in order with no gap and no
//! duplicate: the second copy is refused, and its publisher re-reads where the
//! stream is. A publisher that finds the stream behind (NATS restarted and
//! lost its tail) re-publishes the gap from history.
//! Revision 1, the empty store, is a message without events, so that the
//! stream's first sequence is the first revision. A revision that compaction
//! removed before it reached the stream (only when NATS lost its data) is
//! published as an empty placeholder marked with the compact revision, so
//! sequence and revision stay equal.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;
use cairn_kit::shutdown::ShutdownWatch;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{PublisherClaim, RevisionEvents};
use cairn_proto::contract::revision_stream::{self, Body};
use prost::Message;
use tracing::Instrument;

use crate::api::MvccApi;
use crate::error::MvccError;
use crate::metrics::MVCC_METRICS;
use crate::replica::{Published, Replica};
use crate::tree_index::KeyRange;
use cairn_kit::settings::NatsSettings;

/// Publishes in flight before the first acknowledgement is awaited.
const WINDOW: usize = 256;

/// Bytes kept free for headers below the server's max_payload.
const HEADER_ROOM: usize = 4096;
/// How often a standby looks at the stream, and the publisher at its claim.
const STANDBY_CHECK: Duration = Duration::from_secs(1);

/// Publishes while this replica holds the publisher claim and stands by
/// otherwise, until shutdown, reconnecting to NATS whenever it is lost.
pub(crate) async fn run(
    api: MvccApi,
    settings: NatsSettings,
    takeover_after: Duration,
    mut shutdown: ShutdownWatch,
) {
    loop {
        match session(&api, &settings, takeover_after, shutdown.clone()).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(%error, "revision publishing interrupted; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One connection to NATS: publishing or standing by, as the claim says.
async fn session(
    api: &MvccApi,
    settings: &NatsSettings,
    takeover_after: Duration,
    shutdown: ShutdownWatch,
) -> Result<(), MvccError> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(&settings.url)
        .await
        .map_err(nats)?;
    // What the server takes in one message, less room for the headers.
    let max_payload = client.server_info().max_payload.saturating_sub(HEADER_ROOM);
    let context = jetstream::new(client);
    let mut stream = context
        .get_or_create_stream(stream_config(settings))
        .await
        .map_err(nats)?;
    let mut publisher = Publisher {
        replica: api.replica_handle(),
        context,
        subject: settings.subject.clone(),
        history: VecDeque::new(),
        max_payload,
    };
    loop {
        let go_on = if is_publisher(api.replica()) {
            tracing::info!(stream = settings.stream, "publishing revisions");
            publisher.publish(&mut stream, shutdown.clone()).await?
        } else {
            stand_by(api, &mut stream, takeover_after, shutdown.clone()).await?
        };
        if !go_on || shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// Whether this replica holds the publisher claim.
fn is_publisher(replica: &Replica) -> bool {
    let holds = replica.store.publisher().holder == replica.name;
    MVCC_METRICS.publisher.set(i64::from(holds));
    holds
}

/// Waits while another replica publishes. Claims the next epoch when none
/// has yet, or when the stream has stayed behind this replica's store without
/// moving for `takeover_after`. Returns true once this replica holds the
/// claim, false at shutdown.
async fn stand_by(
    api: &MvccApi,
    stream: &mut stream::Stream,
    takeover_after: Duration,
    mut shutdown: ShutdownWatch,
) -> Result<bool, MvccError> {
    let replica = api.replica();
    let mut stalled: Option<(i64, tokio::time::Instant)> = None;
    loop {
        if is_publisher(replica) {
            return Ok(true);
        }
        let claim = replica.store.publisher();
        let last = last_sequence(stream).await?;
        let behind = last < replica.store.status().current;
        let takeover = match stalled {
            _ if claim.epoch == 0 => true,
            Some((seen, since)) if behind && seen == last => since.elapsed() >= takeover_after,
            _ => {
                stalled = behind.then(|| (last, tokio::time::Instant::now()));
                false
            }
        };
        if takeover {
            tracing::info!(
                holder = claim.holder,
                epoch = claim.epoch,
                published = last,
                "the revision stream has stopped following the store; claiming it"
            );
            let claimed = PublisherClaim {
                holder: replica.name.clone(),
                epoch: claim.epoch + 1,
            };
            if let Err(error) = api.raise(Op::PublisherClaim(claimed)).await {
                tracing::warn!(%error, "cannot claim the revision stream yet");
            }
            stalled = None;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(STANDBY_CHECK) => {}
            () = shutdown.cancelled() => return Ok(false),
        }
    }
}

fn nats<E: std::fmt::Display>(error: E) -> MvccError {
    MvccError::Nats(error.to_string())
}

/// The stream every replica publishes to and every gateway reads.
pub(crate) fn stream_config(settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name: settings.stream.clone(),
        subjects: vec![settings.subject.clone()],
        max_messages: settings.max_messages,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

async fn last_sequence(stream: &mut stream::Stream) -> Result<i64, MvccError> {
    let info = stream.info().await.map_err(nats)?;
    let last = info.state.last_sequence as i64;
    MVCC_METRICS.published_revision.set(last);
    Ok(last)
}

struct Publisher {
    replica: Arc<Replica>,
    context: jetstream::Context,
    subject: String,
    /// Revisions read from history for a gap, oldest first.
    history: VecDeque<RevisionEvents>,
    /// The largest body the server accepts; a larger revision goes out as a
    /// marker that readers resolve from history.
    max_payload: usize,
}

impl Publisher {
    /// Publishes every revision as the store reaches it, while this replica
    /// holds the claim. Returns true once it no longer does, false at shutdown.
    async fn publish(
        &mut self,
        stream: &mut stream::Stream,
        mut shutdown: ShutdownWatch,
    ) -> Result<bool, MvccError> {
        let mut current = self.replica.current_revision();
        let mut next = last_sequence(stream).await? + 1;
        loop {
            if !is_publisher(&self.replica) {
                tracing::info!("another replica publishes revisions now; standing by");
                return Ok(true);
            }
            let target = *current.borrow_and_update();
            if next <= target {
                next = self.publish_up_to(stream, next, target).await?;
                continue;
            }
            tokio::select! {
                changed = current.changed() => if changed.is_err() { return Ok(false) },
                // NATS may have lost its tail, or the claim moved: look at
                // where the stream is now and then.
                () = tokio::time::sleep(STANDBY_CHECK) => {
                    next = last_sequence(stream).await? + 1;
                }
                () = shutdown.cancelled() => return Ok(false),
            }
        }
    }

    /// Publishes `next..=target`, pipelined; returns the next revision to publish.
    async fn publish_up_to(
        &mut self,
        stream: &mut stream::Stream,
        next: i64,
        target: i64,
    ) -> Result<i64, MvccError> {
        let mut pending = VecDeque::with_capacity(WINDOW);
        let mut revision = next;
        while revision <= target || !pending.is_empty() {
            while revision <= target && pending.len() < WINDOW {
                let published = self.revision(revision)?;
                let ack = self.send(published).await?;
                pending.push_back((revision, ack));
                revision += 1;
            }
            let Some((sent, ack)) = pending.pop_front() else {
                break;
            };
            match ack.await {
                Ok(_) => MVCC_METRICS.published_revision.set(sent),
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    // Someone else published it, or the stream lost messages.
                    self.history.clear();
                    return Ok(last_sequence(stream).await? + 1);
                }
                Err(error) => return Err(nats(error)),
            }
        }
        Ok(revision)
    }

    async fn send(
        &self,
        published: Published,
    ) -> Result<jetstream::context::PublishAckFuture, MvccError> {
        let revision = published.events.revision;
        // Only a traced write's revision gets a span: the others would each
        // be a trace of their own.
        let span = if published.trace_context.is_empty() {
            tracing::Span::none()
        } else {
            let span = tracing::info_span!(
                "cairn.revisions publish",
                otel.kind = "producer",
                messaging.system = "nats",
                messaging.destination.name = %self.subject,
                messaging.operation = "publish",
                cairn.revision = revision,
            );
            cairn_kit::telemetry::continue_trace(&span, &published.trace_context);
            span
        };
        let mut payload = Bytes::from(published.events.encode_to_vec());
        let size = payload.len();
        let body = if size > self.max_payload {
            payload = Bytes::new();
            Body::Oversized
        } else if published.compacted > 0 {
            Body::Compacted(published.compacted)
        } else {
            Body::Events
        };
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in revision_stream::headers(revision, body, size) {
            headers.insert(name, value.as_str());
        }
        let mut trace = std::collections::HashMap::new();
        span.in_scope(|| cairn_kit::telemetry::inject_into(&mut trace));
        for (name, value) in &trace {
            headers.insert(name.as_str(), value.as_str());
        }
        self.context
            .publish_with_headers(self.subject.clone(), headers, payload)
            .instrument(span)
            .await
            .map_err(nats)
    }

    /// The events of `revision`: from the applier's recent window, else from history.
    fn revision(&mut self, revision: i64) -> Result<Published, MvccError> {
        let compacted = self.replica.store.status().compacted;
        if revision <= 1 || revision < compacted {
            return Ok(Published {
                events: RevisionEvents {
                    revision,
                    events: Vec::new(),
                    // History keeps no terms; gateways keep the newest seen.
                    raft_term: 0,
                },
                trace_context: Default::default(),
                compacted: if revision > 1 { compacted } else { 0 },
            });
        }
        if let Some(published) = self.replica.recent(revision) {
            return Ok(published);
        }
        while self
            .history
            .front()
            .is_some_and(|events| events.revision < revision)
        {
            self.history.pop_front();
        }
        if self.history.is_empty() {
            let everything = KeyRange::new(&[0], &[0]);
            self.history = self
                .replica
                .store
                .events(&everything, revision, true, WINDOW)?
                .into();
        }
        match self.history.pop_front() {
            Some(events) if events.revision == revision => Ok(Published {
                events,
                trace_context: Default::default(),
                compacted: 0,
            }),
            // The compact revision keeps only what compaction left of it,
            // possibly nothing (a store restored from a compacted snapshot
            // is published from revision 2 up): a placeholder like those
            // before it.
            later if revision <= compacted => {
                if let Some(later) = later {
                    self.history.push_front(later);
                }
                Ok(Published {
                    events: RevisionEvents {
                        revision,
                        events: Vec::new(),
                        raft_term: 0,
                    },
                    trace_context: Default::default(),
                    compacted,
                })
            }
            _ => Err(MvccError::Corrupt(format!(
                "revision {revision} has no events in history"
            ))),
        }
    }
}
