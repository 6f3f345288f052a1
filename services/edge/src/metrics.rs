//! The edge's Prometheus metrics, served on `/metrics` by cairn-kit.

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts};

/// Every metric of the edge.
pub(crate) struct EdgeMetrics {
    /// Time to the response's headers, by gRPC path (for streams: to the start).
    pub calls: HistogramVec,
    /// Backends known, by service.
    pub backends: IntGaugeVec,
    /// Connections a backend refused or dropped, by service.
    pub backend_failures: IntCounterVec,
    /// Calls sent to a second backend after the first could not be reached.
    pub retries: IntCounterVec,
    /// Calls refused because `limits.max_concurrent_requests` were in progress.
    pub shed: IntCounter,
}

pub(crate) static EDGE_METRICS: LazyLock<EdgeMetrics> = LazyLock::new(EdgeMetrics::register);

const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

// Names are literals checked by the test below, so construction cannot fail
// at run time; registering twice (several edges in one test process) is
// harmless and ignored.
fn registered<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    let _ = prometheus::register(Box::new(metric.clone()));
    metric
}

impl EdgeMetrics {
    fn register() -> Self {
        Self {
            calls: registered(
                HistogramVec::new(
                    HistogramOpts::new(
                        "cairn_edge_call_seconds",
                        "Calls through the edge, by gRPC path",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["path"],
                )
                .expect("valid metric name"),
            ),
            backends: registered(
                IntGaugeVec::new(
                    Opts::new("cairn_edge_backends", "Backends known, by service"),
                    &["service"],
                )
                .expect("valid metric name"),
            ),
            backend_failures: registered(
                IntCounterVec::new(
                    Opts::new(
                        "cairn_edge_backend_failures_total",
                        "Connections a backend refused or dropped, by service",
                    ),
                    &["service"],
                )
                .expect("valid metric name"),
            ),
            retries: registered(
                IntCounterVec::new(
                    Opts::new(
                        "cairn_edge_retries_total",
                        "Calls sent to another backend after one could not be reached",
                    ),
                    &["service"],
                )
                .expect("valid metric name"),
            ),
            shed: registered(
                IntCounter::new(
                    "cairn_edge_shed_total",
                    "Calls refused at once because too many were in progress",
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
        EDGE_METRICS.shed.inc();
        EDGE_METRICS.backends.with_label_values(&["mvcc"]).set(2);
        let names: Vec<String> = prometheus::gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        for wanted in ["cairn_edge_shed_total", "cairn_edge_backends"] {
            assert!(names.iter().any(|name| name == wanted), "{wanted} missing");
        }
    }
}
