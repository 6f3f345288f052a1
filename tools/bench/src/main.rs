//! `cairn-bench`: measurements, not tests. Each workload runs for a bounded time
//! on loopback and prints a table (and JSON on request).

mod compare;
mod drive;
mod fsync;
mod http;
mod keys;
mod kv;
mod lease;
mod log;
mod procfs;
mod prometheus;
mod report;
mod watch;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "benchmarks for cairn")]
struct Cli {
    /// Call every gRPC endpoint over TLS, trusting this CA bundle (PEM); the JSON gateway transport stays plaintext
    #[arg(long, global = true)]
    cacert: Option<std::path::PathBuf>,
    /// The client certificate (PEM) shown with --cacert
    #[arg(long, global = true, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM)
    #[arg(long, global = true, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// Authenticate as name:password at every endpoint and send the token with every call: what auth costs
    #[arg(long, global = true)]
    user: Option<String>,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Propose throughput and latency of a cairn-log cluster.
    Log(log::LogArgs),
    /// The raw fsync rate of a disk: the ceiling of any durable log on it.
    Fsync(fsync::FsyncArgs),
    /// etcd KV puts, transactions or reads against any etcd v3 endpoint
    /// (edge, replica, etcd).
    Kv(kv::KvArgs),
    /// etcd leases against any etcd v3 endpoint: grant time, keep-alive
    /// throughput and latency, and what the leases cost the log in checkpoints.
    Lease(lease::LeaseArgs),
    /// Watch fan-out: watchers on one prefix, puts at a fixed rate, and the
    /// put-to-event latency every watcher sees.
    Watch(watch::WatchArgs),
    /// Idle watchers, each on a key of its own: the memory each costs the
    /// processes that hold them.
    WatchIdle(watch::IdleArgs),
    /// The same workloads against etcd and cairn in alternating rounds:
    /// figures, ratios, peak memory, JSON and a chart.
    Compare(compare::CompareArgs),
    /// Redraws the chart of an earlier `compare --json`.
    Chart(compare::ChartArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(ca) = &cli.cacert {
        drive::use_tls(ca, cli.cert.as_deref().zip(cli.key.as_deref()))?;
    }
    if let Some(user) = &cli.user {
        drive::use_user(user)?;
    }
    match cli.workload {
        Workload::Log(args) => log::run(args).await,
        Workload::Fsync(args) => fsync::run(&args),
        Workload::Kv(args) => kv::run(args).await,
        Workload::Lease(args) => lease::run(args).await,
        Workload::Watch(args) => watch::run(args).await,
        Workload::WatchIdle(args) => watch::run_idle(args).await,
        Workload::Compare(args) => compare::run(args).await,
        Workload::Chart(args) => compare::redraw(&args),
    }
}
