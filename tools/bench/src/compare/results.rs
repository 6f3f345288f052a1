//! The comparison's figures as they are printed, written to JSON and drawn:
//! per workload and system the best round, every round's rate, and the
//! latency distribution; the cairn/etcd ratios; each process's peak memory.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::report::Summary;

/// Percentiles of a distribution are sampled at these "nines" (p50 is
/// 0.3, p90 1, p99 2, p99.9 3, p99.99 4), then the maximum.
const NINES_STEP: f64 = 0.1;
const MAX_NINES: f64 = 4.0;

/// Figures some workloads have beyond rate and latency.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Notes {
    /// Compare-and-swap transactions answered with the compare failing.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub conflicts: Option<u64>,
    /// Puts answered in a watch round: fewer than the rate asks if the
    /// system (or the client, decoding events) could not keep up.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub puts: Option<u64>,
    /// Watch events received by all watchers together, and how many every
    /// put would have made.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delivered: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expected: Option<u64>,
    /// Seconds to grant the leases (once per system).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_seconds: Option<f64>,
    /// Keep-alives answered with TTL 0: their lease was gone.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ttl_zero: Option<u64>,
    /// Whole-read-set ranges answered while the round's puts ran.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ranges: Option<u64>,
    /// Closed-loop puts per second to watched keys with every watcher open,
    /// the same after they are closed, and the first over the second: what
    /// holding the watchers costs the puts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub puts_with_watchers: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub puts_without_watchers: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub puts_with_over_without: Option<f64>,
    /// CPU microseconds (user + system, every process of the system) per
    /// request the round sent, its warm-up's included: on a machine the
    /// client shares, what a request costs the server decides the rate, and
    /// it moves less with a noisy neighbour than the rate does.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_us_per_request: Option<f64>,
}

/// One point of a latency distribution.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(super) struct Point {
    /// 0-100; 100 is the maximum.
    pub percentile: f64,
    pub ms: f64,
}

/// One system's figures for one workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Side {
    /// The round with the highest rate: the one least disturbed.
    pub best: Summary,
    pub notes: Notes,
    /// Every round's rate, in the order they ran, to show the spread.
    pub rounds_per_second: Vec<f64>,
    /// The best round's latency distribution.
    pub distribution: Vec<Point>,
    /// Why rounds failed, if any did.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub failures: Vec<String>,
}

/// Latency at percentiles spread evenly in nines, then the maximum, so both
/// the body and the tail of the distribution are drawn.
pub(super) fn distribution(latencies: &Histogram<u64>) -> Vec<Point> {
    if latencies.is_empty() {
        return Vec::new();
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    let steps = (MAX_NINES / NINES_STEP).round() as u32;
    let mut points: Vec<Point> = (0..=steps)
        .map(|step| {
            let quantile = 1.0 - 10_f64.powf(-f64::from(step) * NINES_STEP);
            Point {
                percentile: quantile * 100.0,
                ms: ms(latencies.value_at_quantile(quantile)),
            }
        })
        .collect();
    points.push(Point {
        percentile: 100.0,
        ms: ms(latencies.max()),
    });
    points
}

/// One workload's figures for both systems, and how they compare.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Compared {
    pub id: String,
    pub workload: String,
    pub etcd: Option<Side>,
    pub cairn: Option<Side>,
    /// cairn's rate over etcd's: above 1, cairn is faster.
    pub throughput_ratio: Option<f64>,
    /// cairn's latency over etcd's: below 1, cairn is faster.
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    pub max_ratio: Option<f64>,
}

/// `ours / theirs`, where both are figures.
pub(super) fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    (theirs > 0.0 && ours.is_finite() && theirs.is_finite()).then(|| ours / theirs)
}

impl Compared {
    pub(super) fn new(id: &str, workload: &str, etcd: Option<Side>, cairn: Option<Side>) -> Self {
        let of = |figure: fn(&Summary) -> f64| match (&cairn, &etcd) {
            (Some(cairn), Some(etcd)) => ratio(figure(&cairn.best), figure(&etcd.best)),
            _ => None,
        };
        Self {
            id: id.to_owned(),
            workload: workload.to_owned(),
            throughput_ratio: of(|summary| summary.per_second),
            p50_ratio: of(|summary| summary.p50_ms),
            p99_ratio: of(|summary| summary.p99_ms),
            max_ratio: of(|summary| summary.max_ms),
            etcd,
            cairn,
        }
    }
}

/// The peak resident memory of one process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ProcessPeak {
    pub pid: u32,
    pub name: String,
    /// `VmHWM`; `None` if the process was gone when read.
    pub peak_kib: Option<u64>,
}

/// Peak memory of every process of both systems.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Memory {
    pub etcd: Vec<ProcessPeak>,
    pub cairn: Vec<ProcessPeak>,
    pub etcd_total_kib: u64,
    pub cairn_total_kib: u64,
    /// cairn's total over etcd's.
    pub ratio: Option<f64>,
}

impl Memory {
    pub(super) fn new(etcd: Vec<ProcessPeak>, cairn: Vec<ProcessPeak>) -> Self {
        let total = |processes: &[ProcessPeak]| processes.iter().filter_map(|p| p.peak_kib).sum();
        let (etcd_total_kib, cairn_total_kib): (u64, u64) = (total(&etcd), total(&cairn));
        Self {
            ratio: ratio(cairn_total_kib as f64, etcd_total_kib as f64),
            etcd,
            cairn,
            etcd_total_kib,
            cairn_total_kib,
        }
    }
}

/// Everything one comparison found: what `--json` writes and `chart` reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Report {
    pub etcd_endpoint: String,
    pub cairn_endpoint: String,
    pub rounds: usize,
    pub round_seconds: f64,
    pub value_bytes: usize,
    pub key_bytes: usize,
    pub workloads: Vec<Compared>,
    pub memory: Memory,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{histogram, record};
    use std::time::Duration;

    fn summary(per_second: f64, p50_ms: f64) -> Summary {
        Summary {
            label: String::new(),
            operations: 0,
            errors: 0,
            per_second,
            p50_ms,
            p99_ms: 0.0,
            max_ms: 0.0,
        }
    }

    fn side(per_second: f64, p50_ms: f64) -> Side {
        Side {
            best: summary(per_second, p50_ms),
            notes: Notes::default(),
            rounds_per_second: vec![per_second],
            distribution: Vec::new(),
            failures: Vec::new(),
        }
    }

    #[test]
    fn ratios_are_cairn_over_etcd_and_absent_without_both() {
        let both = Compared::new("x", "x", Some(side(100.0, 2.0)), Some(side(50.0, 4.0)));
        assert_eq!(both.throughput_ratio, Some(0.5));
        assert_eq!(both.p50_ratio, Some(2.0));
        // No etcd p99 to divide by.
        assert_eq!(both.p99_ratio, None);
        let one = Compared::new("x", "x", None, Some(side(50.0, 4.0)));
        assert_eq!(one.throughput_ratio, None);
    }

    #[test]
    fn a_distribution_climbs_to_the_maximum() -> anyhow::Result<()> {
        let mut latencies = histogram()?;
        for millis in 1..=1000 {
            record(&mut latencies, Duration::from_millis(millis));
        }
        let points = distribution(&latencies);
        assert_eq!(points.len(), 42);
        assert!(points.windows(2).all(|pair| pair[0].ms <= pair[1].ms));
        assert!(points
            .windows(2)
            .all(|pair| pair[0].percentile < pair[1].percentile));
        let last = points.last().map(|point| point.ms);
        assert!(
            matches!(last, Some(ms) if (ms - 1000.0).abs() < 1.0),
            "{last:?}"
        );
        assert!(distribution(&histogram()?).is_empty());
        Ok(())
    }

    #[test]
    fn memory_totals_skip_processes_that_were_gone() {
        let peak = |kib| ProcessPeak {
            pid: 1,
            name: String::new(),
            peak_kib: kib,
        };
        let memory = Memory::new(vec![peak(Some(100))], vec![peak(Some(150)), peak(None)]);
        assert_eq!(memory.cairn_total_kib, 150);
        assert_eq!(memory.ratio, Some(1.5));
    }

    #[test]
    fn a_report_survives_json() -> anyhow::Result<()> {
        let report = Report {
            etcd_endpoint: "e".into(),
            cairn_endpoint: "c".into(),
            rounds: 2,
            round_seconds: 3.0,
            value_bytes: 256,
            key_bytes: 8,
            workloads: vec![Compared::new("x", "x", Some(side(1.0, 1.0)), None)],
            memory: Memory::default(),
        };
        let text = serde_json::to_string(&report)?;
        let back: Report = serde_json::from_str(&text)?;
        assert_eq!(back.workloads.len(), 1);
        assert_eq!(back.workloads[0].throughput_ratio, None);
        Ok(())
    }
}
