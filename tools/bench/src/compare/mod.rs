//! cairn against etcd on the same machine: the same KV workloads through the
//! same client against both, in alternating rounds so that drift (a busy
//! neighbour, a warming disk) falls on both, reported as ratios.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::kv::{measure, seed, KvOperation};
use crate::log::parse_duration;
use crate::report::Summary;

#[derive(Args)]
pub struct CompareArgs {
    /// The etcd endpoint, host:port.
    #[arg(long, default_value = "127.0.0.1:23790")]
    etcd: String,
    /// The cairn edge, host:port.
    #[arg(long, default_value = "127.0.0.1:2379")]
    cairn: String,
    /// Recorded time per workload per round.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// A/B rounds; the better round of each system counts.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One workload's figures for both systems.
#[derive(Serialize)]
struct Compared {
    workload: String,
    etcd: Summary,
    cairn: Summary,
    /// cairn ops/s over etcd's: above 1 is faster.
    throughput_ratio: f64,
    /// cairn p50 over etcd's: below 1 is faster.
    p50_ratio: f64,
    p99_ratio: f64,
}

/// The workloads, as etcd's own benchmark runs them: 256-byte values.
const WORKLOADS: [(&str, KvOperation, usize); 4] = [
    ("put, 1 client", KvOperation::Put, 1),
    ("put, 100 clients", KvOperation::Put, 100),
    ("range linearizable, 100", KvOperation::Range, 100),
    (
        "range serializable, 100",
        KvOperation::RangeSerializable,
        100,
    ),
];
const VALUE_BYTES: usize = 256;

/// The better of two runs: more operations per second.
fn better(kept: Option<Summary>, new: Summary) -> Summary {
    match kept {
        Some(kept) if kept.per_second >= new.per_second => kept,
        _ => new,
    }
}

pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be positive");
    for endpoint in [&args.etcd, &args.cairn] {
        seed(endpoint, 100, VALUE_BYTES).await?;
    }
    println!(
        "cairn at {} against etcd at {}: {} rounds of {:?} per workload",
        args.cairn, args.etcd, args.rounds, args.duration
    );
    println!(
        "{:<26} {:>12} {:>12} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "workload",
        "etcd ops/s",
        "cairn ops/s",
        "ratio",
        "etcd p50",
        "cairn p50",
        "etcd p99",
        "cairn p99"
    );
    let mut results = Vec::new();
    for (name, op, clients) in WORKLOADS {
        let mut etcd = None;
        let mut cairn = None;
        for round in 0..args.rounds {
            // Alternate which goes first, so neither always runs warm.
            let order = if round % 2 == 0 {
                [(&args.etcd, true), (&args.cairn, false)]
            } else {
                [(&args.cairn, false), (&args.etcd, true)]
            };
            for (endpoint, is_etcd) in order {
                let measured = measure(endpoint, op, clients, args.duration, VALUE_BYTES).await?;
                let summary = Summary::new(
                    name.to_owned(),
                    &measured.latencies,
                    measured.errors,
                    args.duration,
                );
                if is_etcd {
                    etcd = Some(better(etcd, summary));
                } else {
                    cairn = Some(better(cairn, summary));
                }
            }
        }
        let (Some(etcd), Some(cairn)) = (etcd, cairn) else {
            anyhow::bail!("no round ran");
        };
        let ratio = |ours: f64, theirs: f64| {
            if theirs > 0.0 {
                ours / theirs
            } else {
                f64::NAN
            }
        };
        let compared = Compared {
            workload: name.to_owned(),
            throughput_ratio: ratio(cairn.per_second, etcd.per_second),
            p50_ratio: ratio(cairn.p50_ms, etcd.p50_ms),
            p99_ratio: ratio(cairn.p99_ms, etcd.p99_ms),
            etcd,
            cairn,
        };
        println!(
            "{:<26} {:>12.0} {:>12.0} {:>6.2}x {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            compared.workload,
            compared.etcd.per_second,
            compared.cairn.per_second,
            compared.throughput_ratio,
            compared.etcd.p50_ms,
            compared.cairn.p50_ms,
            compared.etcd.p99_ms,
            compared.cairn.p99_ms
        );
        results.push(compared);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(per_second: f64) -> Summary {
        Summary {
            label: String::new(),
            operations: 0,
            errors: 0,
            per_second,
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
        }
    }

    #[test]
    fn the_better_round_is_the_faster_one() {
        let kept = better(None, summary(10.0));
        assert_eq!(better(Some(kept), summary(20.0)).per_second, 20.0);
        assert_eq!(better(Some(summary(30.0)), summary(20.0)).per_second, 30.0);
    }
}
