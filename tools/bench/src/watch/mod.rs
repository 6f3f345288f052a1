//! Watch fan-out: many watchers on one prefix, puts at a fixed rate, and the
//! time from sending a put to each watcher receiving its event.

mod fan_out;

use std::time::Duration;

use clap::Args;

pub(crate) use fan_out::{fan_out, FanOut, FanOutPlan};

use crate::log::parse_duration;
use crate::procfs::status_kib;
use crate::report::Summary;

#[derive(Args)]
pub(crate) struct WatchArgs {
    /// An etcd v3 endpoint, host:port.
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoint: String,
    /// Watchers on the one prefix.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Watch streams the watchers are spread over.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Puts per second under the prefix.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long the puts go on, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// How long the watchers may go on receiving after the last put.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain: Duration,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Gateway process ids whose resident memory is reported at the end.
    #[arg(long, value_delimiter = ',')]
    gateway_pids: Vec<u32>,
    /// Label of the row, e.g. `3 gateways`.
    #[arg(long, default_value = "watch")]
    label: String,
}

/// The row of a fan-out run: events delivered per second, and their latencies.
pub(crate) fn summary(label: String, measured: &FanOut) -> Summary {
    Summary::new(
        label,
        &measured.latencies,
        measured.put_errors,
        measured.elapsed,
    )
}

pub(crate) async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let plan = FanOutPlan {
        watchers: args.watchers,
        streams: args.streams,
        rate: args.rate,
        duration: args.duration,
        size: args.size,
        drain: args.drain,
    };
    println!(
        "{} watchers on {} streams at {}; {} puts/s of {} B for {:?}",
        args.watchers,
        args.streams.min(args.watchers),
        args.endpoint,
        args.rate,
        args.size,
        args.duration
    );
    let measured = fan_out(&args.endpoint, &plan).await?;
    let row = summary(
        format!("{} {} watchers", args.label, args.watchers),
        &measured,
    );
    println!("{}", Summary::HEADER);
    println!("{}", row.row());
    println!(
        "{} puts, {} of {} events delivered ({} unmatched), {:.0} events/s",
        measured.puts,
        measured.delivered(),
        measured.expected,
        measured.unmatched,
        row.per_second
    );
    for pid in &args.gateway_pids {
        match status_kib(*pid, "VmRSS") {
            Some(rss) => println!("gateway {pid}: RSS {} MiB", rss / 1024),
            None => println!("gateway {pid}: not running"),
        }
    }
    Ok(())
}
