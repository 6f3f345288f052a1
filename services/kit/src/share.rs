//! Sharing one call among the requests that queue while earlier calls are out.
//!
//! A round of consensus, a read-index check or a call to another service costs
//! about the same whatever it carries, so requests that arrive while `in_flight`
//! calls are under way wait and go together in the next one. A lone request
//! goes out at once. A batch is taken only when its call starts, so every
//! request in a batch arrived before that call began: a read point shared this
//! way still covers everything acknowledged before each reader arrived.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;

/// How much one call carries and how many run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareLimits {
    /// Calls under way at a time.
    pub in_flight: usize,
    /// Items in one call at most.
    pub max_items: usize,
    /// Bytes in one call at most (a larger lone item still goes, alone).
    pub max_bytes: usize,
}

impl ShareLimits {
    /// Any number of items per call, `in_flight` calls at a time.
    pub fn unbounded(in_flight: usize) -> Self {
        Self {
            in_flight,
            max_items: usize::MAX,
            max_bytes: usize::MAX,
        }
    }
}

/// Something that can ride in a shared call: it says how many bytes it adds.
pub trait Weighed {
    fn bytes(&self) -> usize {
        0
    }
}

type Call<T> = Arc<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Requests waiting for a call, and how many calls are under way.
struct Queue<T> {
    waiting: VecDeque<T>,
    calling: usize,
}

/// Queues items and makes calls that carry them; `call` must answer every
/// item it is given (each item carries its own way back).
pub struct Sharing<T> {
    queue: Mutex<Queue<T>>,
    limits: ShareLimits,
    call: Call<T>,
}

impl<T: Weighed + Send + 'static> Sharing<T> {
    /// Queues items for `call`, which carries all that wait when it starts,
    /// with at most `limits.in_flight` calls out at once.
    pub fn new<F, Fut>(limits: ShareLimits, call: F) -> Arc<Self>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Arc::new(Self {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                calling: 0,
            }),
            limits: ShareLimits {
                in_flight: limits.in_flight.max(1),
                max_items: limits.max_items.max(1),
                ..limits
            },
            call: Arc::new(move |batch| Box::pin(call(batch))),
        })
    }

    /// Queues `item`; it goes in the next call that starts.
    pub fn submit(self: &Arc<Self>, item: T) {
        let start = {
            let mut queue = self.queue.lock();
            queue.waiting.push_back(item);
            let start = queue.calling < self.limits.in_flight;
            if start {
                queue.calling += 1;
            }
            start
        };
        if start {
            // A task of its own, so a submitter that goes away strands no one.
            tokio::spawn(self.clone().run());
        }
    }

    /// Items waiting for a call.
    pub fn waiting(&self) -> usize {
        self.queue.lock().waiting.len()
    }

    /// Makes calls until nothing is queued.
    async fn run(self: Arc<Self>) {
        while let Some(batch) = self.take() {
            (self.call)(batch).await;
        }
    }

    /// What is queued, within the limits; the first item always.
    fn take(&self) -> Option<Vec<T>> {
        let mut queue = self.queue.lock();
        let mut batch = Vec::new();
        let mut bytes = 0_usize;
        while let Some(next) = queue.waiting.front() {
            let full = batch.len() >= self.limits.max_items
                || (!batch.is_empty()
                    && bytes.saturating_add(next.bytes()) > self.limits.max_bytes);
            if full {
                break;
            }
            bytes = bytes.saturating_add(next.bytes());
            match queue.waiting.pop_front() {
                Some(item) => batch.push(item),
                None => break,
            }
        }
        if batch.is_empty() {
            queue.calling -= 1;
            return None;
        }
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::{oneshot, watch};

    use super::*;

    struct Item {
        size: usize,
        reply: oneshot::Sender<usize>,
    }

    impl Weighed for Item {
        fn bytes(&self) -> usize {
            self.size
        }
    }

    fn item(size: usize) -> (Item, oneshot::Receiver<usize>) {
        let (reply, answer) = oneshot::channel();
        (Item { size, reply }, answer)
    }

    /// Calls that answer each item with the size of its batch, the first one
    /// held until released.
    fn held_first(limits: ShareLimits) -> (Arc<Sharing<Item>>, watch::Sender<bool>) {
        let (release, released) = watch::channel(false);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sharing = Sharing::new(limits, move |batch: Vec<Item>| {
            let mut released = released.clone();
            let first = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                if first {
                    let _ = released.wait_for(|go| *go).await;
                }
                let size = batch.len();
                for item in batch {
                    let _ = item.reply.send(size);
                }
            }
        });
        (sharing, release)
    }

    #[tokio::test]
    async fn a_lone_item_goes_at_once_and_those_queued_meanwhile_share_the_next_call() {
        let (sharing, release) = held_first(ShareLimits::unbounded(1));
        let (first, first_answer) = item(1);
        sharing.submit(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut later = Vec::new();
        for _ in 0..10 {
            let (next, answer) = item(1);
            sharing.submit(next);
            later.push(answer);
        }
        assert_eq!(sharing.waiting(), 10);
        let _ = release.send(true);
        assert_eq!(first_answer.await.ok(), Some(1));
        for answer in later {
            assert_eq!(answer.await.ok(), Some(10));
        }
    }

    #[tokio::test]
    async fn a_call_carries_no_more_than_the_limits_allow() {
        let limits = ShareLimits {
            in_flight: 1,
            max_items: 3,
            max_bytes: 25,
        };
        let (sharing, release) = held_first(limits);
        let (first, _first) = item(1);
        sharing.submit(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut answers = Vec::new();
        for size in [10, 10, 10, 1, 1, 1, 1] {
            let (next, answer) = item(size);
            sharing.submit(next);
            answers.push(answer);
        }
        let _ = release.send(true);
        let mut sizes = Vec::new();
        for answer in answers {
            sizes.push(answer.await.unwrap_or(0));
        }
        // 10+10 fills the bytes; 10+1+1 the items; then the rest.
        assert_eq!(sizes, vec![2, 2, 3, 3, 3, 2, 2]);
    }
}
