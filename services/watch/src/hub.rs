//! The gateway's window of recent revisions, fed in order from the revision
//! stream and read by every client stream; a reader that finds its next
//! revision gone from the window catches up from a replica's history.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::encoded::Revision;
use crate::metrics::WATCH_METRICS;

/// Recent revisions, contiguous, oldest first.
pub(crate) struct Hub {
    window: RwLock<VecDeque<Arc<Revision>>>,
    latest: watch::Sender<i64>,
    /// The newest log term a revision came with: etcd's raft_term.
    term: AtomicU64,
    capacity: usize,
}

/// What a reader finds in the window.
pub(crate) enum Window {
    /// The revisions from the one asked for through the newest.
    Here(Vec<Arc<Revision>>),
    /// The revision asked for has left the window (or never entered it).
    Gone,
}

impl Hub {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            window: RwLock::new(VecDeque::with_capacity(capacity.min(65_536))),
            latest: watch::channel(0).0,
            term: AtomicU64::new(0),
            capacity,
        })
    }

    /// The newest revision in the window, 0 before the first.
    pub(crate) fn latest(&self) -> i64 {
        *self.latest.borrow()
    }

    /// The newest log term seen, for response headers; 0 before any.
    pub(crate) fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    /// How many client streams are following the hub.
    pub(crate) fn streams(&self) -> usize {
        self.latest.receiver_count()
    }

    /// Changes whenever a revision arrives.
    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.latest.subscribe()
    }

    /// Appends the next revision. One that does not follow the newest starts
    /// the window again from it (the feed restarted further on); older
    /// readers then catch up from history.
    pub(crate) fn push(&self, revision: Revision) {
        let number = revision.revision;
        self.term.fetch_max(revision.raft_term, Ordering::Relaxed);
        {
            let mut window = self.window.write();
            match window.back() {
                Some(newest) if newest.revision >= number => return,
                Some(newest) if newest.revision + 1 != number => window.clear(),
                _ => {}
            }
            window.push_back(Arc::new(revision));
            while window.len() > self.capacity {
                window.pop_front();
            }
            WATCH_METRICS.window.set(window.len() as i64);
        }
        WATCH_METRICS.latest.set(number);
        self.latest.send_replace(number);
    }

    /// The oldest revision in the window, `None` while it is empty.
    pub(crate) fn oldest(&self) -> Option<i64> {
        self.window.read().front().map(|first| first.revision)
    }

    /// Revisions `from` through the newest, or `Gone` if `from` is older
    /// than the window. Empty when `from` is beyond the newest.
    pub(crate) fn read(&self, from: i64, max: usize) -> Window {
        let window = self.window.read();
        let Some(oldest) = window.front().map(|first| first.revision) else {
            return Window::Gone;
        };
        if from < oldest {
            return Window::Gone;
        }
        let skip = usize::try_from(from - oldest).unwrap_or(usize::MAX);
        Window::Here(window.iter().skip(skip).take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::cairn::mvcc::v1::RevisionEvents;

    use super::*;

    fn revision_in_term(number: i64, raft_term: u64) -> Revision {
        Revision::new(RevisionEvents {
            revision: number,
            events: Vec::new(),
            raft_term,
        })
    }

    fn revision(number: i64) -> Revision {
        revision_in_term(number, 2)
    }

    #[test]
    fn the_term_is_the_newest_seen_and_a_revision_from_history_leaves_it() {
        let hub = Hub::new(8);
        assert_eq!(hub.term(), 0);
        hub.push(revision(2));
        hub.push(Revision::empty(3));
        assert_eq!(hub.term(), 2);
        hub.push(revision_in_term(4, 3));
        assert_eq!(hub.term(), 3);
    }

    fn numbers(window: Window) -> Option<Vec<i64>> {
        match window {
            Window::Here(revisions) => Some(revisions.iter().map(|r| r.revision).collect()),
            Window::Gone => None,
        }
    }

    #[test]
    fn the_window_keeps_the_newest_contiguous_revisions() {
        let hub = Hub::new(3);
        assert!(numbers(hub.read(1, 10)).is_none());
        assert_eq!(hub.oldest(), None);
        for number in 5..=9 {
            hub.push(revision(number));
        }
        hub.push(revision(8));
        assert_eq!(hub.latest(), 9);
        assert_eq!(hub.oldest(), Some(7));
        assert_eq!(numbers(hub.read(7, 10)), Some(vec![7, 8, 9]));
        assert_eq!(numbers(hub.read(8, 1)), Some(vec![8]));
        assert_eq!(numbers(hub.read(10, 10)), Some(vec![]));
        assert!(numbers(hub.read(6, 10)).is_none(), "6 left the window");
    }

    #[test]
    fn a_jump_restarts_the_window() {
        let hub = Hub::new(10);
        hub.push(revision(2));
        hub.push(revision(3));
        hub.push(revision(7));
        assert!(numbers(hub.read(3, 10)).is_none());
        assert_eq!(numbers(hub.read(7, 10)), Some(vec![7]));
    }
}
