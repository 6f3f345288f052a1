//! Latency summaries and their table rows.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Records latencies in microseconds, from 1 µs to 1 minute.
pub(crate) fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// Adds one latency, clamped into the histogram's range.
pub(crate) fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// What one run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub label: String,
    pub operations: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub(crate) fn new(
        label: String,
        histogram: &Histogram<u64>,
        errors: u64,
        elapsed: Duration,
    ) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
        Self {
            label,
            operations: histogram.len(),
            errors,
            per_second: histogram.len() as f64 / seconds,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }

    pub(crate) const HEADER: &'static str =
        "workload                      ops    errors       ops/s    p50 ms    p99 ms    max ms";

    pub(crate) fn row(&self) -> String {
        format!(
            "{:<24} {:>9} {:>9} {:>11.0} {:>9.3} {:>9.3} {:>9.3}",
            self.label,
            self.operations,
            self.errors,
            self.per_second,
            self.p50_ms,
            self.p99_ms,
            self.max_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rate_come_from_the_recorded_latencies() -> anyhow::Result<()> {
        let mut latencies = histogram()?;
        for millis in 1..=100 {
            record(&mut latencies, Duration::from_millis(millis));
        }
        let summary = Summary::new("x".into(), &latencies, 2, Duration::from_secs(4));
        assert_eq!(summary.operations, 100);
        assert!((summary.per_second - 25.0).abs() < 1e-9);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{}", summary.p50_ms);
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{}", summary.p99_ms);
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{}", summary.max_ms);
        assert_eq!(summary.row().split_whitespace().count(), 7);
        Ok(())
    }

    #[test]
    fn latencies_out_of_range_are_clamped_not_lost() -> anyhow::Result<()> {
        let mut latencies = histogram()?;
        record(&mut latencies, Duration::ZERO);
        record(&mut latencies, Duration::from_secs(3600));
        assert_eq!(latencies.len(), 2);
        Ok(())
    }
}
