//! The live feed: one ordered JetStream consumer on the revision stream,
//! whose sequence is the revision, into the hub. A revision the stream does
//! not have in order (a gap, a restart further on) is filled from history,
//! never skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use cairn_kit::shutdown::ShutdownWatch;
use cairn_proto::cairn::mvcc::v1::RevisionEvents;
use cairn_proto::contract::revision_stream::{self, Body};
use futures::StreamExt;
use prost::Message;

use crate::encoded::Revision;
use crate::error::WatchError;
use crate::history::{stream_error, History};
use crate::hub::Hub;
use cairn_kit::settings::NatsSettings;

/// How long to wait before connecting or subscribing again.
const RETRY: Duration = Duration::from_millis(500);

/// Feeds the hub until shutdown, reconnecting as often as it takes.
pub(crate) async fn run(
    hub: Arc<Hub>,
    history: Arc<History>,
    nats: NatsSettings,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let fed = tokio::select! {
            fed = feed(&hub, &history, &nats) => fed,
            () = shutdown.cancelled() => return,
        };
        if let Err(error) = fed {
            tracing::warn!(%error, "revision feed interrupted; resubscribing");
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

fn nats_error(error: impl std::fmt::Display) -> WatchError {
    WatchError::Nats(error.to_string())
}

/// One subscription, from the revision after the hub's newest.
async fn feed(hub: &Hub, history: &History, nats: &NatsSettings) -> Result<(), WatchError> {
    let client = async_nats::connect(nats.url.as_str())
        .await
        .map_err(nats_error)?;
    let jetstream = async_nats::jetstream::new(client.clone());
    let stream = jetstream
        .get_stream(&nats.stream)
        .await
        .map_err(nats_error)?;
    let start = if hub.latest() > 0 {
        hub.latest() + 1
    } else {
        // A new gateway starts at the present; older revisions are history.
        history.current().await?.0 + 1
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: nats.subject.clone(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: u64::try_from(start.max(1)).unwrap_or(1),
            },
            ..Default::default()
        })
        .await
        .map_err(nats_error)?;
    let mut messages = consumer.messages().await.map_err(nats_error)?;
    tracing::info!(from = start, "following the revision stream");
    while let Some(message) = messages.next().await {
        let message = message.map_err(nats_error)?;
        let sequence = message.info().map_err(nats_error)?.stream_sequence;
        let revision = i64::try_from(sequence).map_err(nats_error)?;
        if revision <= hub.latest() {
            continue;
        }
        if hub.latest() > 0 && revision > hub.latest() + 1 {
            fill_gap(hub, history, revision).await?;
        }
        let body = revision_stream::body(|name| {
            message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(name))
                .map(|value| value.as_str())
        });
        let events = if body == Body::Oversized {
            Revision::new(revision_from_history(history, revision).await?)
        } else if matches!(body, Body::Compacted(_)) || message.payload.is_empty() {
            Revision::empty(revision)
        } else {
            let decoded = RevisionEvents::decode(message.payload.as_ref())
                .map_err(|error| WatchError::Corrupt(format!("revision {revision}: {error}")))?;
            if decoded.revision != revision {
                return Err(WatchError::Corrupt(format!(
                    "sequence {revision} holds revision {}",
                    decoded.revision
                )));
            }
            Revision::new(decoded)
        };
        // A traced write's revision continues its trace here: the hand-off
        // to every stream of this gateway. Without an exporter the headers
        // are not even read: every revision would pay for a map of them.
        let trace = if cairn_kit::telemetry::exporting() {
            trace_context(message.headers.as_ref())
        } else {
            HashMap::new()
        };
        let span = if !cairn_kit::telemetry::carries_trace(&trace) {
            tracing::Span::none()
        } else {
            let span = tracing::info_span!(
                "cairn.revisions process",
                otel.kind = "consumer",
                messaging.system = "nats",
                messaging.operation = "process",
                messaging.destination.name = %nats.subject,
                cairn.revision = revision,
                cairn.watch.streams = hub.streams(),
            );
            cairn_kit::telemetry::continue_trace(&span, &trace);
            span
        };
        span.in_scope(|| hub.push(events));
    }
    Err(WatchError::Nats("the revision stream ended".into()))
}

/// A message's headers as a plain map, from which the trace context the
/// publisher wrote is read back (the propagator knows its header names).
fn trace_context(headers: Option<&async_nats::HeaderMap>) -> HashMap<String, String> {
    headers
        .map(|headers| {
            headers
                .iter()
                .filter_map(|(name, values)| {
                    let value = values.first()?;
                    Some((name.to_string(), value.as_str().to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One revision's events out of history, for a revision too large for the
/// stream; compacted meanwhile, it is an empty revision like any placeholder.
async fn revision_from_history(
    history: &History,
    revision: i64,
) -> Result<RevisionEvents, WatchError> {
    let empty = RevisionEvents {
        revision,
        events: Vec::new(),
        raft_term: 0,
    };
    let mut chunks = match history.events(&[0], &[0], revision, true).await {
        Ok(chunks) => chunks,
        Err(WatchError::Compacted { .. }) => return Ok(empty),
        Err(error) => return Err(error),
    };
    while let Some(chunk) = chunks.message().await.map_err(stream_error)? {
        if let Some(found) = chunk
            .revisions
            .into_iter()
            .find(|events| events.revision == revision)
        {
            return Ok(found);
        }
    }
    Err(WatchError::Corrupt(format!(
        "revision {revision} is marked oversized but history does not have it"
    )))
}

/// Brings the hub from its newest revision up to just before `until` out of
/// history, so watchers see every revision in order.
async fn fill_gap(hub: &Hub, history: &History, until: i64) -> Result<(), WatchError> {
    let from = hub.latest() + 1;
    tracing::info!(
        from,
        until,
        "filling a gap in the revision stream from history"
    );
    let mut chunks = match history.events(&[0], &[0], from, true).await {
        Ok(chunks) => chunks,
        // Compacted meanwhile: the window starts again at `until`, and
        // readers further back catch up from history (or learn of the compaction).
        Err(WatchError::Compacted { .. }) => return Ok(()),
        Err(error) => return Err(error),
    };
    let mut next = from;
    while let Some(chunk) = chunks.message().await.map_err(stream_error)? {
        for revision in chunk.revisions {
            if revision.revision >= until {
                return Ok(());
            }
            // Revisions with no event in history (compacted placeholders)
            // still count, so the window stays contiguous.
            while next < revision.revision {
                hub.push(Revision::empty(next));
                next += 1;
            }
            next = revision.revision + 1;
            hub.push(Revision::new(revision));
        }
    }
    Ok(())
}
