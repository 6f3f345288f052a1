//! Proposing commands to the log, many per call: commands that queue while
//! earlier calls are out go together in the next one (the log puts them in one
//! entry, in order). A lone command goes out at once.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::error::MvccError;
use crate::replica::Replica;

/// Calls out at a time: one being committed while the next one fills.
const IN_FLIGHT: usize = 2;
/// A call carries at most this many bytes of commands (a larger lone command
/// still goes, alone).
const MAX_BYTES: usize = 1024 * 1024;
/// A call carries at most this many commands.
const MAX_COMMANDS: usize = 1024;

type Reply = oneshot::Sender<Result<(), String>>;

/// A command waiting for a call: its bytes, who waits for it, and the span of
/// the request behind it (the call continues that request's trace).
struct Waiting {
    command: Vec<u8>,
    reply: Reply,
    span: tracing::Span,
}

/// Commands waiting for a call, and how many calls are out.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    calling: usize,
}

/// One call's worth of commands.
struct Batch {
    commands: Vec<Vec<u8>>,
    replies: Vec<Reply>,
    spans: Vec<tracing::Span>,
}

/// Sends a replica's commands to the log, sharing calls between concurrent writes.
pub struct Proposals {
    replica: Arc<Replica>,
    queue: Mutex<Queue>,
}

impl Proposals {
    pub fn new(replica: Arc<Replica>) -> Arc<Self> {
        Arc::new(Self {
            replica,
            queue: Mutex::new(Queue::default()),
        })
    }

    /// Proposes `command` and returns once its entry is committed. An error
    /// leaves the outcome unknown: the command may still commit.
    pub async fn propose(self: &Arc<Self>, command: Vec<u8>) -> Result<(), MvccError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock();
            queue.waiting.push_back(Waiting {
                command,
                reply,
                span: tracing::Span::current(),
            });
            let start = queue.calling < IN_FLIGHT;
            if start {
                queue.calling += 1;
            }
            start
        };
        if start {
            // A task of its own, so a caller that goes away strands no one.
            tokio::spawn(self.clone().call());
        }
        answer
            .await
            .map_err(|_| MvccError::Stopped)?
            .map_err(MvccError::Log)
    }

    /// Takes what is queued, within the limits; the first command always.
    fn take(&self) -> Option<Batch> {
        let mut queue = self.queue.lock();
        let mut batch = Batch {
            commands: Vec::new(),
            replies: Vec::new(),
            spans: Vec::new(),
        };
        let mut bytes = 0_usize;
        while let Some(next) = queue.waiting.front() {
            let full = batch.commands.len() >= MAX_COMMANDS
                || (!batch.commands.is_empty() && bytes + next.command.len() > MAX_BYTES);
            if full {
                break;
            }
            bytes += next.command.len();
            let Some(waiting) = queue.waiting.pop_front() else {
                break;
            };
            batch.commands.push(waiting.command);
            batch.replies.push(waiting.reply);
            batch.spans.push(waiting.span);
        }
        if batch.commands.is_empty() {
            queue.calling -= 1;
            return None;
        }
        Some(batch)
    }

    /// Calls the log for whatever is queued, until nothing is.
    async fn call(self: Arc<Self>) {
        while let Some(batch) = self.take() {
            // The call belongs to the first request's trace; the others'
            // traces link to it.
            let span = tracing::info_span!(
                parent: batch.spans.first().and_then(tracing::Span::id),
                "cairn.log propose",
                otel.kind = "client",
                cairn.commands = batch.commands.len(),
            );
            for other in batch.spans.iter().skip(1) {
                span.follows_from(other);
            }
            let proposed = self.replica.log.propose_batch(batch.commands);
            let outcome = proposed
                .instrument(span)
                .await
                .map(|_| ())
                .map_err(MvccError::into_shared);
            for reply in batch.replies {
                let _ = reply.send(outcome.clone());
            }
        }
    }
}
