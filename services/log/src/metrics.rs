//! Prometheus metrics of a log node, on the process's default registry.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

/// The node's metrics. One set per process: a process runs one node.
pub(crate) struct LogMetrics {
    pub term: IntGauge,
    pub is_leader: IntGauge,
    pub last_log_index: IntGauge,
    pub commit_index: IntGauge,
    pub applied_index: IntGauge,
    pub first_index: IntGauge,
    pub appended_entries: IntCounter,
    pub proposals: IntCounterVec,
    pub propose_seconds: Histogram,
    pub fsync_seconds: Histogram,
    /// Commands packed into one entry by the leader.
    pub batch_commands: Histogram,
    /// Read-index requests answered by one leadership check.
    pub read_batch: Histogram,
    /// Raft RPC time by rpc and side: `sent` is the round trip a leader or
    /// candidate sees, `handled` is the time the receiving node spent.
    pub raft_rpc_seconds: HistogramVec,
}

/// The metrics, registered on first use.
pub(crate) static LOG_METRICS: LazyLock<LogMetrics> = LazyLock::new(LogMetrics::register);

// Metric names are literals checked by the test below, so construction cannot
// fail at run time; registering twice (several nodes in one test process) is
// harmless and ignored.
fn gauge(name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("valid metric name");
    let _ = prometheus::register(Box::new(gauge.clone()));
    gauge
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    let histogram = Histogram::with_opts(opts).expect("valid metric name");
    let _ = prometheus::register(Box::new(histogram.clone()));
    histogram
}

impl LogMetrics {
    fn register() -> Self {
        let proposals = IntCounterVec::new(
            Opts::new("cairn_log_proposals_total", "Proposals answered, by result"),
            &["result"],
        )
        .expect("valid metric name");
        let _ = prometheus::register(Box::new(proposals.clone()));
        let appended_entries = IntCounter::new(
            "cairn_log_appended_entries_total",
            "Entries appended to the local log",
        )
        .expect("valid metric name");
        let _ = prometheus::register(Box::new(appended_entries.clone()));
        let raft_rpc_seconds = HistogramVec::new(
            HistogramOpts::new(
                "cairn_log_raft_rpc_seconds",
                "Raft RPC time, by rpc and side",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16).unwrap_or_default()),
            &["rpc", "side"],
        )
        .expect("valid metric name");
        let _ = prometheus::register(Box::new(raft_rpc_seconds.clone()));
        Self {
            raft_rpc_seconds,
            term: gauge("cairn_log_term", "Current raft term"),
            is_leader: gauge("cairn_log_is_leader", "1 when this node is the leader"),
            last_log_index: gauge("cairn_log_last_log_index", "Last index in the local log"),
            commit_index: gauge("cairn_log_commit_index", "Last index known committed"),
            applied_index: gauge("cairn_log_applied_index", "Last index applied on this node"),
            first_index: gauge(
                "cairn_log_first_index",
                "First index still held (older ones purged)",
            ),
            appended_entries,
            proposals,
            propose_seconds: histogram(
                "cairn_log_propose_seconds",
                "Propose latency on the node that took the request",
                prometheus::exponential_buckets(0.0005, 2.0, 16).unwrap_or_default(),
            ),
            fsync_seconds: histogram(
                "cairn_log_fsync_seconds",
                "Time of one append's synced write",
                prometheus::exponential_buckets(0.0001, 2.0, 16).unwrap_or_default(),
            ),
            batch_commands: histogram(
                "cairn_log_batch_commands",
                "Proposals packed into one entry",
                prometheus::exponential_buckets(1.0, 2.0, 13).unwrap_or_default(),
            ),
            read_batch: histogram(
                "cairn_log_read_index_batch",
                "Read-index requests answered by one leadership check",
                prometheus::exponential_buckets(1.0, 2.0, 13).unwrap_or_default(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_with_valid_names() {
        LOG_METRICS.term.set(3);
        let families = prometheus::gather();
        assert!(families
            .iter()
            .any(|family| family.name() == "cairn_log_term"));
    }
}
