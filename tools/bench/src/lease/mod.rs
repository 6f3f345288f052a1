//! etcd leases against any etcd v3 endpoint: how long N leases (one key each)
//! take to grant, how many keep-alives a few streams get answered and how
//! fast, and — read from the active cairn-lease instance's metrics — how many
//! log commands the leases cost while idle (the periodic checkpoints of every
//! remaining TTL) and while they are being renewed.

mod checkpoints;
mod grant;
mod keep_alive;

use std::time::Duration;

use clap::Args;
use serde::Serialize;

pub(crate) use checkpoints::Commands;
use checkpoints::{commands_between, ActiveInstance};
pub(crate) use grant::{grant, GrantPlan};
pub(crate) use keep_alive::{keep_alive, KeepAlivePlan};

use crate::drive::{connect, MAX_CONNECTIONS, WARM_UP};
use crate::log::parse_duration;
use crate::report::Summary;

/// The lease workload's settings.
#[derive(Args)]
pub(crate) struct LeaseArgs {
    /// An etcd v3 endpoint, host:port.
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoint: String,
    /// Leases granted, each with one key attached.
    #[arg(long, default_value_t = 10_000)]
    leases: usize,
    /// TTL of every lease in seconds: long enough that none expires between
    /// its grant and the keep-alives (granting, then the idle period).
    #[arg(long, default_value_t = 60)]
    ttl: i64,
    /// Grants (each followed by the Put of its key) in flight at once. With
    /// many leases every grant competes with their periodic checkpoints, and
    /// more in flight pack more into each log entry: on a 2-core loopback
    /// cluster 100,000 leases took 45 s at 256, 30-37 s at 1024.
    #[arg(long, default_value_t = 1024)]
    grant_concurrency: usize,
    /// LeaseKeepAlive streams, each renewing an equal share of the leases.
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// Keep-alives sent and not yet answered, per stream.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Recorded keep-alive time, after a 1 s warm-up, e.g. 10s (at most 300s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Time with no keep-alives over which the periodic checkpoints are
    /// counted, e.g. 10 or 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    idle: Duration,
    /// Prometheus pages of the lease instances, comma separated; the one
    /// reporting `cairn_lease_active 1` is read. Empty (e.g. against etcd):
    /// no checkpoint figures and no idle period.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9131/metrics,http://127.0.0.1:9132/metrics"
    )]
    lease_metrics: Vec<String>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Everything one run measured, for `--json`, so runs at different lease
/// counts can be compared by a script.
#[derive(Debug, Serialize)]
pub(crate) struct LeaseReport {
    pub leases: usize,
    pub ttl_secs: i64,
    pub grant_concurrency: usize,
    pub grant_seconds: f64,
    pub grant_retries: u64,
    pub keep_alive: Summary,
    /// Keep-alives answered with TTL 0: their lease was gone.
    pub ttl_zero: u64,
    /// Periodic checkpoints alone, with nothing renewed.
    pub idle: Option<Commands>,
    /// Checkpoints while the keep-alives ran, renewals included.
    pub renewing: Option<Commands>,
    /// Leases the active instance expired between the grants and the end.
    pub expired: Option<f64>,
}

/// Runs the lease workload and prints its figures.
pub(crate) async fn run(args: LeaseArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.leases > 0, "--leases must be positive");
    anyhow::ensure!(args.ttl > 0, "--ttl must be positive");
    anyhow::ensure!(
        args.grant_concurrency > 0 && args.streams > 0 && args.in_flight > 0,
        "--grant-concurrency, --streams and --in-flight must be positive"
    );
    let connections = args
        .grant_concurrency
        .max(args.streams)
        .min(MAX_CONNECTIONS);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(&args.endpoint).await?);
    }
    println!(
        "leases against {}: {} leases with one key each, TTL {} s",
        args.endpoint, args.leases, args.ttl
    );

    let plan = GrantPlan {
        leases: args.leases,
        ttl: args.ttl,
        concurrency: args.grant_concurrency,
        attach_keys: true,
    };
    let granted = grant(plan, &channels).await?;
    let grant_seconds = granted.elapsed.as_secs_f64();
    let ms = |micros: u64| micros as f64 / 1000.0;
    println!(
        "granted {} leases and put their keys in {:.2} s ({:.0} leases/s, {} in flight, \
         {} retries); grant + put p50 {:.3} ms, p99 {:.3} ms",
        granted.ids.len(),
        grant_seconds,
        granted.ids.len() as f64 / grant_seconds.max(f64::EPSILON),
        args.grant_concurrency,
        granted.retries,
        ms(granted.latencies.value_at_quantile(0.50)),
        ms(granted.latencies.value_at_quantile(0.99)),
    );
    if granted.elapsed + args.idle + WARM_UP >= Duration::from_secs(args.ttl.unsigned_abs()) {
        eprintln!(
            "warning: granting and the idle period take longer than the TTL; \
             the first leases may expire before their keep-alives (raise --ttl)"
        );
    }

    let active = ActiveInstance::find(&args.lease_metrics).await;
    let mut idle = None;
    let mut first = None;
    if let Some(active) = &active {
        first = active.read().await;
        if let Some(before) = &first {
            println!(
                "active lease instance {} holds {} leases",
                active.url,
                before.counter("cairn_lease_leases")
            );
        }
        tokio::time::sleep(args.idle).await;
        if let (Some(before), Some(after)) = (&first, active.read().await) {
            idle = Some(commands_between(before, &after));
        }
    } else if args.lease_metrics.iter().any(|url| !url.is_empty()) {
        eprintln!("no active lease instance at {:?}", args.lease_metrics);
    }

    let plan = KeepAlivePlan {
        streams: args.streams,
        in_flight: args.in_flight,
        duration: args.duration,
    };
    let kept = keep_alive(plan, &channels, &granted.ids, active.as_ref()).await?;
    let summary = Summary::new(
        format!("keep-alive {} streams", args.streams),
        &kept.latencies,
        kept.errors,
        args.duration,
    );
    println!("{}     ttl 0", Summary::HEADER);
    println!("{} {:>9}", summary.row(), kept.ttl_zero);

    let mut expired = None;
    if let (Some(active), Some(first)) = (&active, &first) {
        if let Some(last) = active.read().await {
            expired = Some(
                last.counter("cairn_lease_expired_total")
                    - first.counter("cairn_lease_expired_total"),
            );
        }
    }
    if let Some(idle) = &idle {
        println!("checkpoint commands written by the active lease instance:");
        println!("phase           seconds  commands  commands/s  keep-alives  keep-alives/command");
        print_commands("idle", idle);
        if let Some(renewing) = &kept.commands {
            print_commands("keep-alive", renewing);
        }
        if let Some(expired) = expired {
            println!(
                "leases expired between the end of granting and the end of the run: {expired}"
            );
        }
    }

    if let Some(path) = &args.json {
        let report = LeaseReport {
            leases: args.leases,
            ttl_secs: args.ttl,
            grant_concurrency: args.grant_concurrency,
            grant_seconds,
            grant_retries: granted.retries,
            keep_alive: summary,
            ttl_zero: kept.ttl_zero,
            idle,
            renewing: kept.commands,
            expired,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// One row of the checkpoint table.
fn print_commands(phase: &str, commands: &Commands) {
    let per_command = if commands.commands > 0.0 && commands.keep_alives > 0.0 {
        format!("{:.1}", commands.keep_alives / commands.commands)
    } else {
        "-".into()
    };
    println!(
        "{phase:<12} {:>10.2} {:>9} {:>11.2} {:>12} {:>20}",
        commands.seconds, commands.commands, commands.per_second, commands.keep_alives, per_command
    );
}
