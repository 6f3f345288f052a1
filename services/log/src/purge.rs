//! The purge policy: the log may forget an entry only when every registered
//! consumer has durably applied it and a snapshot covers it.
//!
//! openraft's own purging is switched off (`max_in_snapshot_log_to_keep` is
//! `u64::MAX`); this task decides instead. With no consumer registered, the
//! node keeps `retain_entries` entries behind its snapshot.

use std::sync::Arc;
use std::time::Duration;

use cairn_kit::shutdown::ShutdownWatch;
use parking_lot::RwLock;

use crate::store::Bookkeeping;
use crate::types::Raft;

/// The highest index that may be purged, or `None` to keep everything.
pub(crate) fn purge_floor(
    snapshot_index: Option<u64>,
    consumers: impl IntoIterator<Item = u64>,
    retain_entries: u64,
) -> Option<u64> {
    let snapshot_index = snapshot_index?;
    let slowest = consumers.into_iter().min();
    let floor = match slowest {
        Some(slowest) => slowest.min(snapshot_index),
        None => snapshot_index.checked_sub(retain_entries)?,
    };
    Some(floor)
}

/// Runs the policy every `interval` until shutdown.
pub(crate) async fn run(
    raft: Raft,
    bookkeeping: Arc<RwLock<Bookkeeping>>,
    retain_entries: u64,
    interval: Duration,
    mut shutdown: ShutdownWatch,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let (snapshot, purged) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            (
                metrics.snapshot.map(|id| id.index),
                metrics.purged.map(|id| id.index),
            )
        };
        let consumers: Vec<u64> = bookkeeping.read().consumers.values().copied().collect();
        let Some(floor) = purge_floor(snapshot, consumers, retain_entries) else {
            continue;
        };
        if purged.is_some_and(|purged| purged >= floor) {
            continue;
        }
        tracing::debug!(upto = floor, "purging log");
        if raft.trigger().purge_log(floor).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_purged_without_a_snapshot() {
        assert_eq!(purge_floor(None, [100], 0), None);
    }

    #[test]
    fn the_slowest_consumer_bounds_the_purge() {
        assert_eq!(purge_floor(Some(1000), [700, 300, 900], 10), Some(300));
    }

    #[test]
    fn consumers_ahead_of_the_snapshot_are_bounded_by_it() {
        assert_eq!(purge_floor(Some(500), [700], 10), Some(500));
    }

    #[test]
    fn without_consumers_a_tail_is_retained() {
        assert_eq!(purge_floor(Some(1000), [], 100), Some(900));
        assert_eq!(purge_floor(Some(50), [], 100), None);
    }
}
