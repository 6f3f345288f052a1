//! cairn against etcd on the same machine: the same workloads through the
//! same client against both, in alternating rounds so that drift (a busy
//! neighbour, a warming disk) falls on both; reported as absolute figures and
//! ratios, as JSON, as a chart of the latency distributions, and with the
//! peak memory of every process of each system.

mod chart;
mod leader;
mod memory;
mod results;
mod table;
mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::keys::KEY_BYTES;
use crate::log::parse_duration;
use results::{distribution, Compared, Memory, Report, Side};
use workload::{workloads, Round, Settings, System, Workload};

#[derive(Args)]
pub(crate) struct CompareArgs {
    /// An etcd endpoint, host:port; its cluster's leader is measured.
    #[arg(long, default_value = "127.0.0.1:23790")]
    etcd: String,
    /// Measure the etcd member given, even if it is a follower.
    #[arg(long)]
    etcd_as_given: bool,
    /// The cairn edge, host:port.
    #[arg(long, default_value = "127.0.0.1:2379")]
    cairn: String,
    /// Recorded time per workload per round (the watch workloads' put time).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// A/B rounds; the better round of each system counts.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Workloads to run, by id (put-1, put-100, put-hot, txn-cas, range-lin,
    /// range-ser, range-10k, put-under-ranges, watch-1k, watch-10k,
    /// watch-keys, lease); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Puts per second in the watch workloads.
    #[arg(long, default_value_t = 1000)]
    watch_rate: u64,
    /// How long watchers may go on receiving after the last put: a system
    /// that falls behind is measured, not waited for.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    watch_drain: Duration,
    /// Leases renewed in the lease workload (granted once per system).
    #[arg(long, default_value_t = 10_000)]
    leases: usize,
    /// Files listing etcd's process ids, comma separated, for its CPU per
    /// request and peak memory.
    #[arg(long, value_delimiter = ',')]
    etcd_pids: Vec<PathBuf>,
    /// Files listing cairn's process ids, comma separated, for its CPU per
    /// request and peak memory.
    #[arg(long, value_delimiter = ',')]
    cairn_pids: Vec<PathBuf>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw the latency distributions as a PNG here.
    #[arg(long)]
    png: Option<PathBuf>,
    /// The TrueType font of the PNG's text.
    #[arg(long, default_value = chart::DEFAULT_FONT)]
    font: PathBuf,
}

/// Redraws the chart of an earlier comparison from its JSON.
#[derive(Args)]
pub(crate) struct ChartArgs {
    /// What `compare --json` wrote.
    #[arg(long, default_value = ".bench/compare.json")]
    json: PathBuf,
    /// The PNG to write.
    #[arg(long, default_value = ".bench/compare.png")]
    png: PathBuf,
    /// The TrueType font of the PNG's text.
    #[arg(long, default_value = chart::DEFAULT_FONT)]
    font: PathBuf,
}

/// A system's rounds of one workload, gathered into its side of the row.
#[derive(Default)]
struct Rounds {
    best: Option<Round>,
    rates: Vec<f64>,
    failures: Vec<String>,
}

impl Rounds {
    fn add(&mut self, round: anyhow::Result<Round>) {
        match round {
            Ok(round) => {
                self.rates.push(round.summary.per_second);
                let better = self
                    .best
                    .as_ref()
                    .is_none_or(|best| round.summary.per_second > best.summary.per_second);
                if better {
                    self.best = Some(round);
                }
            }
            Err(error) => self.failures.push(format!("{error:#}")),
        }
    }

    fn into_side(self) -> Option<Side> {
        let best = self.best?;
        Some(Side {
            distribution: distribution(&best.latencies),
            best: best.summary,
            notes: best.notes,
            rounds_per_second: self.rates,
            failures: self.failures,
        })
    }
}

/// Runs every round of one workload, alternating which system goes first.
async fn compare(
    workload: &Workload,
    systems: &mut [System; 2],
    settings: &Settings,
    rounds: usize,
) -> Compared {
    let mut gathered = [Rounds::default(), Rounds::default()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            let system = &mut systems[index];
            let measured = system.round(workload, settings).await;
            match &measured {
                Ok(measured) => println!(
                    "  round {} {:<5} {:<30} {:>10.0}/s  p50 {:>8.3} ms  p99 {:>8.3} ms{}",
                    round + 1,
                    system.name,
                    workload.name,
                    measured.summary.per_second,
                    measured.summary.p50_ms,
                    measured.summary.p99_ms,
                    measured
                        .notes
                        .cpu_us_per_request
                        .map(|cpu| format!("  server CPU {cpu:.0} µs/request"))
                        .unwrap_or_default()
                ),
                Err(error) => println!(
                    "  round {} {:<5} {:<30} failed: {error:#}",
                    round + 1,
                    system.name,
                    workload.name
                ),
            }
            gathered[index].add(measured);
        }
    }
    let [etcd, cairn] = gathered;
    Compared::new(
        workload.id,
        &workload.name,
        etcd.into_side(),
        cairn.into_side(),
    )
}

/// Writes the JSON and the chart where asked; a chart that cannot be drawn
/// (no font) is reported, not fatal, since the figures are already out.
fn write_outputs(
    report: &Report,
    json: Option<&Path>,
    png: Option<&Path>,
    font: &Path,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)?;
        println!("figures: {}", path.display());
    }
    if let Some(path) = png {
        match chart::load_font(font).and_then(|()| chart::draw(report, path)) {
            Ok(()) => println!("chart: {}", path.display()),
            Err(error) => eprintln!(
                "no chart: {error:#} (Debian: apt-get install fonts-dejavu-core, or --font FILE)"
            ),
        }
    }
    Ok(())
}

pub(crate) async fn run(args: CompareArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be positive");
    anyhow::ensure!(args.size > 0, "--size must be positive");
    let settings = Settings {
        duration: args.duration,
        value_bytes: args.size,
        watch_rate: args.watch_rate,
        watch_drain: args.watch_drain,
        leases: args.leases,
        lease_ttl: 60,
    };
    let selected: Vec<Workload> = workloads(&settings)
        .into_iter()
        .filter(|workload| args.only.is_empty() || args.only.iter().any(|id| id == workload.id))
        .collect();
    anyhow::ensure!(
        !selected.is_empty(),
        "no workload matches --only {:?}",
        args.only
    );
    let etcd = if args.etcd_as_given {
        args.etcd.clone()
    } else {
        leader::etcd_leader(&args.etcd).await?
    };
    let (etcd_pids, cairn_pids) = (
        memory::pids(&args.etcd_pids),
        memory::pids(&args.cairn_pids),
    );
    let mut systems = [
        System::new("etcd", etcd.clone(), etcd_pids.clone()),
        System::new("cairn", args.cairn.clone(), cairn_pids.clone()),
    ];
    println!(
        "cairn at {} against etcd at {etcd}{}: {} alternating rounds of {:?} per workload, \
         {KEY_BYTES} B keys, {} B values; the better round of each system counts",
        args.cairn,
        if args.etcd_as_given {
            ""
        } else {
            " (its leader)"
        },
        args.rounds,
        args.duration,
        args.size
    );
    for system in &mut systems {
        if let Some(took) = system.preload(&settings).await? {
            println!(
                "{}: preloaded {} keys in {:.1} s",
                system.name,
                crate::kv::READ_KEYS,
                took.as_secs_f64()
            );
        }
    }
    let mut rows = Vec::new();
    for workload in &selected {
        rows.push(compare(workload, &mut systems, &settings, args.rounds).await);
    }
    let memory = Memory::new(memory::peaks(&etcd_pids), memory::peaks(&cairn_pids));
    let report = Report {
        etcd_endpoint: etcd,
        cairn_endpoint: args.cairn.clone(),
        rounds: args.rounds,
        round_seconds: args.duration.as_secs_f64(),
        value_bytes: args.size,
        key_bytes: KEY_BYTES,
        workloads: rows,
        memory,
    };
    println!();
    print!("{}", table::render(&report));
    if !args.etcd_pids.is_empty() || !args.cairn_pids.is_empty() {
        println!();
        print!("{}", table::render_memory(&report.memory));
    }
    write_outputs(
        &report,
        args.json.as_deref(),
        args.png.as_deref(),
        &args.font,
    )?;
    let failed = report
        .workloads
        .iter()
        .filter(|row| row.etcd.is_none() || row.cairn.is_none())
        .count();
    anyhow::ensure!(
        failed == 0,
        "{failed} workloads have no figures for one system"
    );
    Ok(())
}

/// Redraws a chart from JSON, so the picture can change without a rerun.
pub(crate) fn redraw(args: &ChartArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.json)
        .map_err(|error| anyhow::anyhow!("{}: {error}", args.json.display()))?;
    let report: Report = serde_json::from_str(&text)?;
    chart::load_font(&args.font)?;
    chart::draw(&report, &args.png)?;
    println!("chart: {}", args.png.display());
    Ok(())
}
