//! Packing requests that arrive together into one round of consensus.
//!
//! Every raft entry costs the leader an append, a sync and a round of
//! replication, whatever its size; every read index costs a round of
//! heartbeats to a quorum. Requests that arrive while earlier rounds are still
//! under way are therefore packed into the next one: a lone request goes out at
//! once, and under load each round carries everything that queued up
//! meanwhile. At most `in_flight` rounds run at a time, which is what lets the
//! queue form.

use std::sync::Arc;

use cairn_kit::shutdown::ShutdownWatch;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Status;

/// Where a proposal landed: its entry and its place among the entry's commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub index: u64,
    pub term: u64,
    pub offset: u32,
}

/// The answer to one proposal: placed here, to be sent to the leader at an
/// address, or refused.
pub type Answer = Result<Routed<Placed>, Status>;

/// Where a request that must run on the leader was carried out.
#[derive(Clone, Debug)]
pub enum Routed<T> {
    Here(T),
    /// Not the leader: the leader is at this address.
    There(String),
}

/// Something that can be packed: it says how many bytes and commands it adds
/// to a batch.
pub trait Packable {
    fn bytes(&self) -> usize;

    fn commands(&self) -> usize {
        1
    }
}

/// A proposal waiting to be packed: one or more commands that go into the
/// same entry, in order.
pub struct Pending {
    pub commands: Vec<Vec<u8>>,
    pub deadline: tokio::time::Instant,
    pub reply: oneshot::Sender<Answer>,
}

impl Packable for Pending {
    fn bytes(&self) -> usize {
        self.commands.iter().map(Vec::len).sum()
    }

    fn commands(&self) -> usize {
        self.commands.len()
    }
}

/// A read-index request waiting for the next leadership check.
pub struct ReadWaiter {
    pub deadline: tokio::time::Instant,
    pub reply: oneshot::Sender<Result<Routed<ReadPoint>, Status>>,
}

impl Packable for ReadWaiter {
    fn bytes(&self) -> usize {
        0
    }
}

/// A linearizable read point: the index (and its term) a reader must have applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPoint {
    pub index: u64,
    pub term: u64,
}

/// The limits of one packed entry.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Stop adding commands once the entry holds this many bytes.
    pub max_bytes: usize,
    /// Stop adding commands once the entry holds this many.
    pub max_commands: usize,
    /// Entries packed but not yet committed.
    pub in_flight: usize,
}

/// Takes the requests queued on `receiver` and hands each packed batch to
/// `commit`, which must answer every request in it. A batch is taken only once
/// a round is free, so every request in it arrived before its round began.
/// Ends when the queue closes or `stop` resolves.
pub async fn pack<T, C, Fut>(
    mut receiver: mpsc::Receiver<T>,
    limits: BatchLimits,
    commit: C,
    stop: impl std::future::Future<Output = ()>,
) where
    T: Packable,
    C: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = &mut stop => return,
        };
        let first = tokio::select! {
            pending = receiver.recv() => match pending {
                Some(pending) => pending,
                None => return,
            },
            () = &mut stop => return,
        };
        let batch = fill(first, &mut receiver, limits);
        let committing = commit(batch);
        tokio::spawn(async move {
            committing.await;
            drop(permit);
        });
    }
}

/// Runs [`pack`] as a task that stops with `shutdown`.
pub fn spawn<T, C, Fut>(
    receiver: mpsc::Receiver<T>,
    limits: BatchLimits,
    shutdown: ShutdownWatch,
    commit: C,
) where
    T: Packable + Send + 'static,
    C: Fn(Vec<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stop = shutdown;
        pack(
            receiver,
            limits,
            commit,
            async move { stop.cancelled().await },
        )
        .await;
    });
}

/// Adds what is already queued to `first`, within the limits.
fn fill<T: Packable>(first: T, receiver: &mut mpsc::Receiver<T>, limits: BatchLimits) -> Vec<T> {
    let mut bytes = first.bytes();
    let mut commands = first.commands();
    let mut batch = vec![first];
    while bytes < limits.max_bytes && commands < limits.max_commands {
        match receiver.try_recv() {
            Ok(more) => {
                bytes = bytes.saturating_add(more.bytes());
                commands = commands.saturating_add(more.commands());
                batch.push(more);
            }
            Err(_) => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn pending(size: usize) -> (Pending, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            commands: vec![vec![0; size]],
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
            reply,
        };
        (pending, answer)
    }

    fn limits(max_bytes: usize, max_commands: usize) -> BatchLimits {
        BatchLimits {
            max_bytes,
            max_commands,
            in_flight: 1,
        }
    }

    #[tokio::test]
    async fn fill_takes_what_is_queued_within_the_limits() {
        let (sender, mut receiver) = mpsc::channel(16);
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (item, answer) = pending(10);
            answers.push(answer);
            assert!(sender.send(item).await.is_ok());
        }
        let (first, _answer) = pending(10);
        assert_eq!(fill(first, &mut receiver, limits(1000, 3)).len(), 3);
        let (first, _answer) = pending(10);
        // 10 + 10 reaches 15 bytes: the second command is the last one taken.
        assert_eq!(fill(first, &mut receiver, limits(15, 100)).len(), 2);
        let (first, _answer) = pending(10);
        // The two still queued, and then the queue is empty.
        assert_eq!(fill(first, &mut receiver, limits(1000, 100)).len(), 3);
        let (first, _answer) = pending(10);
        assert_eq!(fill(first, &mut receiver, limits(1000, 100)).len(), 1);
    }

    #[tokio::test]
    async fn a_lone_proposal_is_not_held_back_and_later_ones_are_packed() {
        let (sender, receiver) = mpsc::channel(64);
        let (stop, stopped) = oneshot::channel::<()>();
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (release, released) = tokio::sync::watch::channel(false);
        let batches = Arc::new(AtomicUsize::new(0));
        let seen = sizes.clone();
        let count = batches.clone();
        let packer = tokio::spawn(pack(
            receiver,
            limits(1 << 20, 1000),
            move |batch: Vec<Pending>| {
                let seen = seen.clone();
                let count = count.clone();
                let mut released = released.clone();
                async move {
                    // The first batch stays in flight until released, so the
                    // proposals sent meanwhile must queue and be packed together.
                    if count.fetch_add(1, Ordering::SeqCst) == 0 {
                        let _ = released.wait_for(|go| *go).await;
                    }
                    if let Ok(mut sizes) = seen.lock() {
                        sizes.push(batch.len());
                    }
                    for (offset, pending) in batch.into_iter().enumerate() {
                        let placed = Placed {
                            index: 1,
                            term: 1,
                            offset: offset as u32,
                        };
                        let _ = pending.reply.send(Ok(Routed::Here(placed)));
                    }
                }
            },
            async {
                let _ = stopped.await;
            },
        ));
        let (first, first_answer) = pending(1);
        assert!(sender.send(first).await.is_ok());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut later = Vec::new();
        for _ in 0..10 {
            let (item, answer) = pending(1);
            assert!(sender.send(item).await.is_ok());
            later.push(answer);
        }
        let _ = release.send(true);
        assert!(matches!(first_answer.await, Ok(Ok(Routed::Here(_)))));
        let mut offsets = Vec::new();
        for answer in later {
            if let Ok(Ok(Routed::Here(placed))) = answer.await {
                offsets.push(placed.offset);
            }
        }
        assert_eq!(offsets, (0..10).collect::<Vec<u32>>());
        assert_eq!(*sizes.lock().expect("sizes"), vec![1, 10]);
        let _ = stop.send(());
        assert!(packer.await.is_ok());
    }
}
