//! Idle watchers: what holding many watchers that receive nothing costs in
//! memory. Each watcher watches a key of its own that no one writes; the
//! resident memory of the processes that hold them is read before the
//! watchers are created and after, and the difference is divided among them.

use std::time::Duration;

use cairn_proto::etcdserverpb::WatchCreateRequest;
use clap::Args;

use super::stream::{open_stream, shares, OpenStream};
use crate::procfs::status_kib;

/// How long the processes get to settle after the last watcher is created,
/// before their memory is read.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Args)]
pub(crate) struct IdleArgs {
    /// An etcd v3 endpoint, host:port.
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoint: String,
    /// Watchers, each on a key of its own.
    #[arg(long, default_value_t = 100_000)]
    watchers: usize,
    /// Watch streams the watchers are spread over, one connection each.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Processes that hold the watchers (etcd's member, or cairn's watch
    /// gateways), whose resident memory is summed.
    #[arg(long, value_delimiter = ',', required = true)]
    holder_pids: Vec<u32>,
    /// Other processes whose memory growth is reported on its own line
    /// (cairn's edge, which carries the streams).
    #[arg(long, value_delimiter = ',')]
    other_pids: Vec<u32>,
    /// Label of the result line.
    #[arg(long, default_value = "idle watchers")]
    label: String,
}

fn resident_kib(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter()
        .map(|pid| {
            status_kib(*pid, "VmRSS").ok_or_else(|| anyhow::anyhow!("process {pid} is not running"))
        })
        .sum()
}

/// Opens one stream holding `watchers` watchers, each on a key no one
/// writes, and returns it once every watcher is created.
async fn open_idle_stream(
    endpoint: String,
    stream: usize,
    watchers: u64,
) -> anyhow::Result<OpenStream> {
    let creates = (0..watchers)
        .map(|watcher| WatchCreateRequest {
            key: format!("idle/{stream:04}/{watcher:06}").into_bytes(),
            ..Default::default()
        })
        .collect();
    open_stream(endpoint, creates).await
}

pub(crate) async fn run(args: IdleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.watchers > 0 && args.streams > 0,
        "watchers and streams must be positive"
    );
    let split = shares(args.watchers as u64, args.streams as u64);
    let streams = split.len();
    let before = resident_kib(&args.holder_pids)?;
    let others_before = resident_kib(&args.other_pids)?;
    let mut opening = Vec::new();
    for (stream, share) in split.into_iter().enumerate() {
        opening.push(tokio::spawn(open_idle_stream(
            args.endpoint.clone(),
            stream,
            share.end - share.start,
        )));
    }
    // Held open until the memory is read.
    let mut open = Vec::new();
    for stream in opening {
        open.push(stream.await??);
    }
    tokio::time::sleep(SETTLE).await;
    let after = resident_kib(&args.holder_pids)?;
    let others_after = resident_kib(&args.other_pids)?;
    let grown = after.saturating_sub(before);
    println!(
        "{}: {} watchers on {streams} streams: holders {} MiB -> {} MiB, {:.0} bytes per watcher",
        args.label,
        args.watchers,
        before / 1024,
        after / 1024,
        grown as f64 * 1024.0 / args.watchers as f64
    );
    if !args.other_pids.is_empty() {
        let others = others_after.saturating_sub(others_before);
        println!(
            "{}: the other processes grew {} MiB, {:.0} bytes per watcher",
            args.label,
            others / 1024,
            others as f64 * 1024.0 / args.watchers as f64
        );
    }
    drop(open);
    Ok(())
}
