//! Watch fan-out: many watchers on one prefix (or each on a key of its
//! own), puts at a fixed rate, and the time from sending a put to each
//! watcher receiving its event.

mod fan_out;
mod idle;
mod own_keys;
mod stream;

use std::time::Duration;

use clap::Args;

pub(crate) use fan_out::{fan_out, FanOut, FanOutPlan, Watched};
pub(crate) use idle::{run as run_idle, IdleArgs};
pub(crate) use own_keys::own_keys;

use crate::drive::Load;
use crate::log::parse_duration;
use crate::procfs::{cpu_seconds, status_kib};
use crate::report::Summary;

#[derive(Args)]
pub(crate) struct WatchArgs {
    /// An etcd v3 endpoint, host:port.
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoint: String,
    /// Watchers on the one prefix (or on keys of their own).
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Each watcher on a key of its own, the puts going round-robin over
    /// them; then closed-loop puts to those keys with the watchers open and
    /// after they are closed, for what holding them costs the puts.
    #[arg(long)]
    own_keys: bool,
    /// Closed-loop putting clients with --own-keys.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Connections the putting clients share with --own-keys.
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Watch streams the watchers are spread over.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Puts per second to the watched keys.
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
    /// Gateway process ids whose CPU time over the run and resident memory
    /// at the end are reported.
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
        watched: if args.own_keys {
            Watched::OwnKeys
        } else {
            Watched::OnePrefix
        },
        rate: args.rate,
        duration: args.duration,
        size: args.size,
        drain: args.drain,
    };
    println!(
        "{} watchers {} on {} streams at {}; {} puts/s of {} B for {:?}",
        args.watchers,
        if args.own_keys {
            "each on its own key"
        } else {
            "on one prefix"
        },
        args.streams.min(args.watchers),
        args.endpoint,
        args.rate,
        args.size,
        args.duration
    );
    let cpu_before: Vec<Option<f64>> = args
        .gateway_pids
        .iter()
        .map(|pid| cpu_seconds(*pid))
        .collect();
    let (measured, puts) = if args.own_keys {
        let load = Load {
            endpoint: args.endpoint.clone(),
            clients: args.clients,
            connections: args.connections,
            duration: args.duration,
        };
        let own = own_keys(&plan, &load).await?;
        (own.events, Some(own.puts))
    } else {
        (fan_out(&args.endpoint, &plan).await?, None)
    };
    let cpu_used: Vec<Option<f64>> = args
        .gateway_pids
        .iter()
        .zip(cpu_before)
        .map(|(pid, before)| Some(cpu_seconds(*pid)? - before?))
        .collect();
    let row = summary(
        format!("{} {} watchers", args.label, args.watchers),
        &measured,
    );
    println!("{}", Summary::HEADER);
    println!("{}", row.row());
    if let Some(puts) = &puts {
        println!("{}", puts.with_watchers.row());
        println!("{}", puts.without_watchers.row());
        if let Some(ratio) = puts.with_over_without() {
            println!(
                "{} closed-loop clients: puts/s with the watchers over without {ratio:.3}",
                args.clients
            );
        }
    }
    println!(
        "{} puts, {} of {} events delivered ({} unmatched), {:.0} events/s",
        measured.puts,
        measured.delivered(),
        measured.expected,
        measured.unmatched,
        row.per_second
    );
    for (pid, cpu) in args.gateway_pids.iter().zip(&cpu_used) {
        let cpu = cpu.map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.2}"));
        match status_kib(*pid, "VmRSS") {
            Some(rss) => println!("gateway {pid}: RSS {} MiB, CPU {cpu} s", rss / 1024),
            None => println!("gateway {pid}: not running"),
        }
    }
    // With --own-keys the CPU also covers the closed-loop puts: not per event.
    let per_million = cpu_per_million_events(&cpu_used, measured.delivered());
    if let Some(per_million) = per_million.filter(|_| puts.is_none()) {
        println!(
            "gateways together: {per_million:.2} CPU s per million events delivered \
             (flat as gateways are added means fan-out scales with cores)"
        );
    }
    Ok(())
}

/// The gateways' CPU seconds, summed, per million events delivered; `None`
/// when a reading is missing or nothing was delivered.
fn cpu_per_million_events(cpu_used: &[Option<f64>], delivered: u64) -> Option<f64> {
    if cpu_used.is_empty() || delivered == 0 {
        return None;
    }
    let total: f64 = cpu_used.iter().copied().sum::<Option<f64>>()?;
    Some(total * 1_000_000.0 / delivered as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_million_events_needs_every_reading_and_some_events() {
        assert_eq!(
            cpu_per_million_events(&[Some(1.5), Some(0.5)], 4_000_000),
            Some(0.5)
        );
        assert_eq!(cpu_per_million_events(&[Some(1.0), None], 1_000_000), None);
        assert_eq!(cpu_per_million_events(&[Some(1.0)], 0), None);
        assert_eq!(cpu_per_million_events(&[], 1_000_000), None);
    }
}
