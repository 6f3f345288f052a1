//! Linearizable read points, one read-index call for many reads: every read
//! that queues while a call is out shares the next call. Each of them arrived
//! before that call was sent, and the log's answer covers every write
//! acknowledged before the call arrived, so each read still sees every write
//! acknowledged before it began.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::error::MvccError;
use crate::replica::Replica;

type Reply = oneshot::Sender<Result<u64, String>>;

/// Reads waiting for a read point, and whether a call is out.
#[derive(Default)]
struct Queue {
    waiting: Vec<Reply>,
    calling: bool,
}

/// Hands out read points from the log, sharing calls between concurrent reads.
pub struct ReadPoints {
    replica: Arc<Replica>,
    queue: Mutex<Queue>,
}

impl ReadPoints {
    pub fn new(replica: Arc<Replica>) -> Arc<Self> {
        Arc::new(Self {
            replica,
            queue: Mutex::new(Queue::default()),
        })
    }

    /// A log index this replica must have applied before it answers a read
    /// that began before this call.
    pub async fn read_point(self: &Arc<Self>) -> Result<u64, MvccError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock();
            queue.waiting.push(reply);
            !std::mem::replace(&mut queue.calling, true)
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

    /// Calls the log for whoever is waiting, until no one is.
    async fn call(self: Arc<Self>) {
        loop {
            let waiting = {
                let mut queue = self.queue.lock();
                if queue.waiting.is_empty() {
                    queue.calling = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let point = self
                .replica
                .log
                .read_index()
                .await
                .map(|point| point.index)
                .map_err(MvccError::into_shared);
            for reply in waiting {
                let _ = reply.send(point.clone());
            }
        }
    }
}
