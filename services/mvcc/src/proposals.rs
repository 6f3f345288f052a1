//! Proposing commands to the log, many per call: commands that queue while
//! earlier calls are out go together in the next one (the log puts them in one
//! entry, in order). A lone command goes out at once.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

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

/// Commands waiting for a call, and how many calls are out.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<(Vec<u8>, Reply)>,
    calling: usize,
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
            queue.waiting.push_back((command, reply));
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
    fn take(&self) -> Option<(Vec<Vec<u8>>, Vec<Reply>)> {
        let mut queue = self.queue.lock();
        let mut commands = Vec::new();
        let mut replies = Vec::new();
        let mut bytes = 0_usize;
        while let Some((command, _)) = queue.waiting.front() {
            let full = commands.len() >= MAX_COMMANDS
                || (!commands.is_empty() && bytes + command.len() > MAX_BYTES);
            if full {
                break;
            }
            bytes += command.len();
            let Some((command, reply)) = queue.waiting.pop_front() else {
                break;
            };
            commands.push(command);
            replies.push(reply);
        }
        if commands.is_empty() {
            queue.calling -= 1;
            return None;
        }
        Some((commands, replies))
    }

    /// Calls the log for whatever is queued, until nothing is.
    async fn call(self: Arc<Self>) {
        while let Some((commands, replies)) = self.take() {
            let outcome = match self.replica.log.propose_batch(commands).await {
                Ok(_) => Ok(()),
                Err(MvccError::Log(message)) => Err(message),
                Err(other) => Err(other.to_string()),
            };
            for reply in replies {
                let _ = reply.send(outcome.clone());
            }
        }
    }
}
