//! The lease instance's Prometheus metrics, served on `/metrics` by cairn-kit.

use std::sync::LazyLock;

use cairn_proto::contract::metrics;
use prometheus::{IntCounter, IntGauge};

/// Every metric of a lease instance.
pub(crate) struct LeaseMetrics {
    /// 1 while this instance holds the claim.
    pub active: IntGauge,
    /// Leases with a deadline here (0 on a standby).
    pub leases: IntGauge,
    pub keep_alives: IntCounter,
    pub expired: IntCounter,
    /// Checkpoint commands written to the log, renewals included.
    pub checkpoint_commands: IntCounter,
}

pub(crate) static LEASE_METRICS: LazyLock<LeaseMetrics> = LazyLock::new(LeaseMetrics::register);

// Names are literals checked by the test below, so construction cannot fail
// at run time; registering twice is harmless and ignored.
fn registered<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    let _ = prometheus::register(Box::new(metric.clone()));
    metric
}

impl LeaseMetrics {
    fn register() -> Self {
        Self {
            active: registered(
                IntGauge::new(
                    metrics::LEASE_ACTIVE,
                    "1 while this instance holds the claim",
                )
                .expect("valid metric name"),
            ),
            leases: registered(
                IntGauge::new(
                    "cairn_lease_leases",
                    "Leases with a deadline on this instance",
                )
                .expect("valid metric name"),
            ),
            keep_alives: registered(
                IntCounter::new(metrics::LEASE_KEEP_ALIVES, "Keep-alives taken")
                    .expect("valid metric name"),
            ),
            expired: registered(
                IntCounter::new(
                    "cairn_lease_expired_total",
                    "Leases expired by this instance",
                )
                .expect("valid metric name"),
            ),
            checkpoint_commands: registered(
                IntCounter::new(
                    metrics::LEASE_CHECKPOINT_COMMANDS,
                    "Checkpoint commands written to the log, renewals included",
                )
                .expect("valid metric name"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_under_their_names() {
        LEASE_METRICS.keep_alives.inc();
        let names: Vec<String> = prometheus::gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert!(names.iter().any(|name| name == metrics::LEASE_KEEP_ALIVES));
    }
}
