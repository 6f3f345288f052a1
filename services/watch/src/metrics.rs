//! The gateway's Prometheus metrics, served on `/metrics` by cairn-kit.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntGauge};

/// Every metric of a watch gateway.
pub(crate) struct WatchMetrics {
    pub streams: IntGauge,
    pub watchers: IntGauge,
    /// Revisions held in the window.
    pub window: IntGauge,
    /// The newest revision the live feed delivered.
    pub latest: IntGauge,
    pub events: IntCounter,
    /// Times a watcher behind the window was caught up from history.
    pub catch_ups: IntCounter,
}

pub(crate) static WATCH_METRICS: LazyLock<WatchMetrics> = LazyLock::new(WatchMetrics::register);

// Names are literals checked by the test below, so construction cannot fail
// at run time; registering twice is harmless and ignored.
fn registered<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    let _ = prometheus::register(Box::new(metric.clone()));
    metric
}

fn gauge(name: &str, help: &str) -> IntGauge {
    registered(IntGauge::new(name, help).expect("valid metric name"))
}

fn counter(name: &str, help: &str) -> IntCounter {
    registered(IntCounter::new(name, help).expect("valid metric name"))
}

impl WatchMetrics {
    fn register() -> Self {
        Self {
            streams: gauge("cairn_watch_streams", "Client Watch streams open"),
            watchers: gauge("cairn_watch_watchers", "Watchers on this gateway"),
            window: gauge("cairn_watch_window_revisions", "Revisions held in memory"),
            latest: gauge(
                "cairn_watch_latest_revision",
                "Newest revision from the live feed",
            ),
            events: counter("cairn_watch_events_total", "Events sent to watchers"),
            catch_ups: counter(
                "cairn_watch_catch_ups_total",
                "Watchers behind the window caught up from history",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_under_their_names() {
        WATCH_METRICS.events.inc();
        let names: Vec<String> = prometheus::gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert!(names.iter().any(|name| name == "cairn_watch_events_total"));
    }
}
