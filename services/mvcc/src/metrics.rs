//! The replica's Prometheus metrics, served on `/metrics` by cairn-kit.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntGauge};

/// Every metric of an mvcc replica.
pub(crate) struct MvccMetrics {
    pub applied_index: IntGauge,
    pub current_revision: IntGauge,
    pub published_revision: IntGauge,
    /// 1 while this replica holds the publisher claim.
    pub publisher: IntGauge,
    /// Revisions applied here and not yet known to be on the stream.
    pub publish_lag: IntGauge,
    /// RocksDB's size on disk: what the NOSPACE quota is measured against.
    pub db_bytes: IntGauge,
    pub apply_seconds: Histogram,
    /// Request latency by etcd method and result ("ok" or the gRPC code).
    pub requests: HistogramVec,
}

pub(crate) static MVCC_METRICS: LazyLock<MvccMetrics> = LazyLock::new(MvccMetrics::register);

// Names are literals checked by the test below, so construction cannot fail
// at run time; registering twice (several replicas in one test process) is
// harmless and ignored.
fn gauge(name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("valid metric name");
    let _ = prometheus::register(Box::new(gauge.clone()));
    gauge
}

const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

impl MvccMetrics {
    fn register() -> Self {
        let apply_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "cairn_mvcc_apply_seconds",
                "Time to apply one batch of log entries",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric name");
        let _ = prometheus::register(Box::new(apply_seconds.clone()));
        let requests = HistogramVec::new(
            HistogramOpts::new(
                "cairn_mvcc_request_seconds",
                "etcd KV requests served, by method and result",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "result"],
        )
        .expect("valid metric name");
        let _ = prometheus::register(Box::new(requests.clone()));
        Self {
            applied_index: gauge("cairn_mvcc_applied_index", "Last log index applied"),
            current_revision: gauge("cairn_mvcc_current_revision", "The store's revision"),
            published_revision: gauge(
                "cairn_mvcc_published_revision",
                "Last revision known to be on the JetStream stream",
            ),
            publisher: gauge(
                "cairn_mvcc_publisher",
                "1 while this replica publishes the revision stream",
            ),
            publish_lag: gauge(
                "cairn_mvcc_publish_lag_revisions",
                "Revisions applied but not yet confirmed on the JetStream stream",
            ),
            db_bytes: gauge("cairn_mvcc_db_bytes", "RocksDB's size on disk"),
            apply_seconds,
            requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_under_their_names() {
        MVCC_METRICS.current_revision.set(5);
        MVCC_METRICS
            .requests
            .with_label_values(&["Range", "ok"])
            .observe(0.001);
        let names: Vec<String> = prometheus::gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert!(names
            .iter()
            .any(|name| name == "cairn_mvcc_current_revision"));
        assert!(names
            .iter()
            .any(|name| name == "cairn_mvcc_request_seconds"));
    }
}
