//! Publishes every revision's events to the JetStream revision stream, one
//! message per revision, so that the stream sequence equals the revision.
//!
//! Each message is published with `Nats-Expected-Last-Sequence` = revision − 1:
//! every replica may publish, the first one wins, and the others' copies are
//! refused, so the stream stays in order with no gap and no duplicate. A
//! publisher that is refused re-reads where the stream is and goes on from
//! there; one that finds the stream behind (NATS restarted and lost its tail,
//! or no replica published for a while) re-publishes the gap from history.
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
use cairn_proto::cairn::mvcc::v1::RevisionEvents;
use prost::Message;
use tracing::Instrument;

use crate::error::MvccError;
use crate::metrics::MVCC_METRICS;
use crate::replica::{Published, Replica};
use crate::tree_index::KeyRange;
use cairn_kit::settings::NatsSettings;

/// Publishes in flight before the first acknowledgement is awaited.
const WINDOW: usize = 256;

/// The header carrying the revision, for readers that want it without decoding.
pub const REVISION_HEADER: &str = "Cairn-Revision";

/// On a placeholder for a revision whose events compaction removed before it
/// reached the stream: the compact revision. A reader must treat the revision
/// as compacted (etcd cancels a watcher that asks for it).
pub const COMPACTED_HEADER: &str = "Cairn-Compacted";
/// Marks a revision whose events exceed the server's largest message: the
/// body is empty and readers take the revision from a replica's history.
pub const OVERSIZED_HEADER: &str = "Cairn-Oversized";
/// Bytes kept free for headers below the server's max_payload.
const HEADER_ROOM: usize = 4096;

/// Publishes until shutdown, reconnecting to NATS whenever it is lost.
pub async fn run(replica: Arc<Replica>, settings: NatsSettings, mut shutdown: ShutdownWatch) {
    loop {
        let stop = shutdown.clone();
        match publish(&replica, &settings, stop).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(%error, "revision publishing interrupted; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

fn nats<E: std::fmt::Display>(error: E) -> MvccError {
    MvccError::Nats(error.to_string())
}

/// The stream every replica publishes to and every gateway reads.
pub fn stream_config(settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name: settings.stream.clone(),
        subjects: vec![settings.subject.clone()],
        max_messages: settings.max_messages,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

async fn publish(
    replica: &Arc<Replica>,
    settings: &NatsSettings,
    mut shutdown: ShutdownWatch,
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
        replica: replica.clone(),
        context,
        subject: settings.subject.clone(),
        history: VecDeque::new(),
        max_payload,
    };
    let mut current = replica.current_revision();
    let mut next = last_sequence(&mut stream).await? + 1;
    tracing::info!(stream = settings.stream, next, "publishing revisions");
    loop {
        let target = *current.borrow_and_update();
        if next <= target {
            next = publisher.publish_up_to(&mut stream, next, target).await?;
            continue;
        }
        tokio::select! {
            changed = current.changed() => if changed.is_err() { return Ok(()) },
            // Another replica may have published ahead, or NATS may have lost
            // its tail: look where the stream is now and then.
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                next = last_sequence(&mut stream).await? + 1;
            }
            () = shutdown.cancelled() => return Ok(()),
        }
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
        let span = tracing::info_span!(
            "cairn.revisions publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %self.subject,
            messaging.operation = "publish",
            cairn.revision = revision,
        );
        cairn_kit::telemetry::continue_trace(&span, &published.trace_context);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Sequence",
            (revision - 1).to_string().as_str(),
        );
        headers.insert(REVISION_HEADER, revision.to_string().as_str());
        if published.compacted > 0 {
            headers.insert(COMPACTED_HEADER, published.compacted.to_string().as_str());
        }
        let mut trace = std::collections::HashMap::new();
        span.in_scope(|| cairn_kit::telemetry::inject_into(&mut trace));
        for (name, value) in &trace {
            headers.insert(name.as_str(), value.as_str());
        }
        let mut payload = Bytes::from(published.events.encode_to_vec());
        if payload.len() > self.max_payload {
            headers.insert(OVERSIZED_HEADER, payload.len().to_string().as_str());
            payload = Bytes::new();
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
            _ => Err(MvccError::Corrupt(format!(
                "revision {revision} has no events in history"
            ))),
        }
    }
}
