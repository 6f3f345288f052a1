//! Proposing commands to the log, many per call: commands that queue while
//! earlier calls are out go together in the next one (the log puts them in one
//! entry, in order). A lone command goes out at once.

use std::sync::Arc;

use cairn_kit::share::{ShareLimits, Sharing, Weighed};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::error::MvccError;
use crate::log_client::LogFailure;
use crate::replica::Replica;

/// Calls out at a time: one being committed while the next one fills.
const IN_FLIGHT: usize = 2;
/// A call carries at most this many bytes of commands (a larger lone command
/// still goes, alone).
const MAX_BYTES: usize = 1024 * 1024;
/// A call carries at most this many commands.
const MAX_COMMANDS: usize = 1024;

/// A command waiting for a call: its bytes, who waits for it, and the span of
/// the request behind it (the call continues that request's trace).
struct Waiting {
    command: Vec<u8>,
    reply: oneshot::Sender<Result<(), LogFailure>>,
    span: tracing::Span,
}

impl Weighed for Waiting {
    fn bytes(&self) -> usize {
        self.command.len()
    }
}

/// Sends a replica's commands to the log, sharing calls between concurrent writes.
pub(crate) struct Proposals {
    sharing: Arc<Sharing<Waiting>>,
}

impl Proposals {
    pub(crate) fn new(replica: Arc<Replica>) -> Self {
        let limits = ShareLimits {
            in_flight: IN_FLIGHT,
            max_items: MAX_COMMANDS,
            max_bytes: MAX_BYTES,
        };
        let sharing = Sharing::new(limits, move |batch: Vec<Waiting>| {
            let replica = replica.clone();
            async move { call(&replica, batch).await }
        });
        Self { sharing }
    }

    /// Proposes `command` and returns once its entry is committed. An error
    /// may leave the outcome unknown: the command may still commit.
    pub(crate) async fn propose(&self, command: Vec<u8>) -> Result<(), MvccError> {
        let (reply, answer) = oneshot::channel();
        self.sharing.submit(Waiting {
            command,
            reply,
            span: tracing::Span::current(),
        });
        answer.await.map_err(|_| MvccError::Stopped)??;
        Ok(())
    }
}

/// One call to the log for a batch of commands; every waiter hears its outcome.
async fn call(replica: &Replica, batch: Vec<Waiting>) {
    let mut commands = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let mut spans = Vec::with_capacity(batch.len());
    for waiting in batch {
        commands.push(waiting.command);
        replies.push(waiting.reply);
        spans.push(waiting.span);
    }
    // The call belongs to the first request's trace; the others' traces link to it.
    let span = if cairn_kit::telemetry::exporting() {
        let span = tracing::info_span!(
            parent: spans.first().and_then(tracing::Span::id),
            "cairn.log propose",
            otel.kind = "client",
            cairn.commands = commands.len(),
        );
        for other in spans.iter().skip(1) {
            span.follows_from(other);
        }
        span
    } else {
        tracing::Span::none()
    };
    let outcome = replica
        .log
        .propose_batch(commands)
        .instrument(span)
        .await
        .map(|_| ());
    for reply in replies {
        let _ = reply.send(outcome.clone());
    }
}
