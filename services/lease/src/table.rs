//! The deadlines of every lease, kept by the active instance. Pure logic over
//! a clock passed in, so the rules are tested without waiting.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use cairn_proto::cairn::mvcc::v1::LeaseRecord;

/// One lease as the active instance sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Granted TTL, seconds.
    pub ttl: i64,
    pub deadline: Instant,
}

/// Every lease's deadline, and the leases ordered by it.
#[derive(Default)]
pub(crate) struct DeadlineTable {
    leases: HashMap<i64, Lease>,
    by_deadline: BTreeSet<(Instant, i64)>,
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

impl DeadlineTable {
    /// The table a newly active instance starts from: each lease resumes its
    /// last checkpointed remaining TTL (from `now`, which is after the
    /// checkpoint, so never early), or its full TTL if it has none.
    pub(crate) fn resume(records: &[LeaseRecord], now: Instant) -> Self {
        let mut table = Self::default();
        for record in records {
            let remaining = if record.remaining_ms > 0 {
                Duration::from_millis(u64::try_from(record.remaining_ms).unwrap_or(0))
            } else {
                seconds(record.ttl)
            };
            table.set(record.id, record.ttl, now + remaining);
        }
        table
    }

    pub(crate) fn len(&self) -> usize {
        self.leases.len()
    }

    #[cfg(test)]
    pub(crate) fn get(&self, id: i64) -> Option<Lease> {
        self.leases.get(&id).copied()
    }

    fn set(&mut self, id: i64, ttl: i64, deadline: Instant) {
        if let Some(old) = self.leases.insert(id, Lease { ttl, deadline }) {
            self.by_deadline.remove(&(old.deadline, id));
        }
        self.by_deadline.insert((deadline, id));
    }

    /// A lease granted now.
    pub(crate) fn grant(&mut self, id: i64, ttl: i64, now: Instant) {
        self.set(id, ttl, now + seconds(ttl));
    }

    /// A keep-alive: the full TTL again from `now`. `None` for an unknown lease.
    pub(crate) fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let ttl = self.leases.get(&id)?.ttl;
        self.set(id, ttl, now + seconds(ttl));
        Some(ttl)
    }

    pub(crate) fn remove(&mut self, id: i64) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.by_deadline.remove(&(lease.deadline, id));
        Some(lease)
    }

    /// The earliest deadline, to sleep until.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    /// Takes out every lease whose deadline is at or before `now`.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<i64> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            self.leases.remove(&id);
            expired.push(id);
        }
        expired
    }

    /// Milliseconds left for `id` at `now`, rounded up so a checkpoint never
    /// shortens a lease; at least 1 (0 means "no checkpoint" to the replicas).
    pub(crate) fn remaining_ms(&self, id: i64, now: Instant) -> Option<i64> {
        let lease = self.leases.get(&id)?;
        let left = lease.deadline.saturating_duration_since(now);
        let millis = left.as_micros().div_ceil(1000);
        Some(i64::try_from(millis).unwrap_or(i64::MAX).max(1))
    }

    /// Every lease with its remaining milliseconds at `now`.
    pub(crate) fn all_remaining(&self, now: Instant) -> Vec<(i64, i64)> {
        let mut all: Vec<(i64, i64)> = self
            .leases
            .keys()
            .filter_map(|id| Some((*id, self.remaining_ms(*id, now)?)))
            .collect();
        all.sort_unstable();
        all
    }

    /// Seconds left for `id` at `now`, as etcd reports them (rounded up).
    pub(crate) fn remaining_secs(&self, id: i64, now: Instant) -> Option<i64> {
        self.remaining_ms(id, now)
            .map(|millis| (millis + 999) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64, ttl: i64, remaining_ms: i64) -> LeaseRecord {
        LeaseRecord {
            id,
            ttl,
            remaining_ms,
        }
    }

    #[test]
    fn a_lease_expires_at_its_deadline_and_not_before() {
        let start = Instant::now();
        let mut table = DeadlineTable::default();
        table.grant(1, 10, start);
        table.grant(2, 5, start);
        assert!(table
            .take_expired(start + Duration::from_millis(4999))
            .is_empty());
        assert_eq!(table.take_expired(start + Duration::from_secs(5)), vec![2]);
        assert_eq!(table.next_deadline(), Some(start + Duration::from_secs(10)));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_keep_alive_restarts_the_full_ttl_and_unknown_leases_are_not_kept() {
        let start = Instant::now();
        let mut table = DeadlineTable::default();
        table.grant(7, 10, start);
        assert_eq!(table.renew(7, start + Duration::from_secs(8)), Some(10));
        assert!(table
            .take_expired(start + Duration::from_secs(17))
            .is_empty());
        assert_eq!(table.take_expired(start + Duration::from_secs(18)), vec![7]);
        assert_eq!(table.renew(7, start), None);
    }

    #[test]
    fn a_resumed_table_continues_checkpoints_or_starts_full_ttls() {
        let now = Instant::now();
        let table = DeadlineTable::resume(&[record(1, 60, 2500), record(2, 30, 0)], now);
        assert_eq!(
            table.get(1).map(|lease| lease.deadline),
            Some(now + Duration::from_millis(2500))
        );
        assert_eq!(
            table.get(2).map(|lease| lease.deadline),
            Some(now + Duration::from_secs(30))
        );
    }

    #[test]
    fn remaining_time_rounds_up_and_is_never_zero() {
        let now = Instant::now();
        let mut table = DeadlineTable::default();
        table.grant(1, 3, now);
        assert_eq!(
            table.remaining_ms(1, now + Duration::from_micros(1)),
            Some(3000)
        );
        assert_eq!(
            table.remaining_secs(1, now + Duration::from_millis(1)),
            Some(3)
        );
        assert_eq!(table.remaining_ms(1, now + Duration::from_secs(4)), Some(1));
        assert_eq!(table.all_remaining(now), vec![(1, 3000)]);
    }
}
