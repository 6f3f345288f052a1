//! A client that stops reading its watch stream must not slow anyone else
//! down, nor grow the gateway without bound: its stream waits, the others go
//! on, and the gateway's memory stays within its window and queues.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cairn_integration::stack::{Stack, StackOptions};
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
use tokio::sync::mpsc;
use tonic::transport::Channel;

const WATCHERS: usize = 20;
const PUTS: usize = 1000;
const VALUE_BYTES: usize = 32 * 1024;
/// The gateway's window, in revisions: what it may hold for a stalled client.
const WINDOW: usize = 200;

fn create(prefix: &str) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: format!("{}0", prefix.trim_end_matches('/')).into_bytes(),
            ..Default::default()
        })),
    }
}

/// Kilobytes of resident memory of process `pid`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Puts `PUTS` keys under `prefix` while `WATCHERS` readers watch it; the
/// put-to-event latencies every reader saw, in milliseconds, sorted.
async fn run_round(stack: &Stack, prefix: &str) -> Result<Vec<f64>> {
    let sent_at: Arc<Mutex<HashMap<Vec<u8>, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut readers = Vec::new();
    for _ in 0..WATCHERS {
        let channel: Channel = stack.edge.channel()?;
        let (requests, queued) = mpsc::channel(4);
        requests.send(create(prefix)).await?;
        let mut answers = WatchClient::new(channel)
            .watch(tokio_stream::wrappers::ReceiverStream::new(queued))
            .await?
            .into_inner();
        let sent_at = sent_at.clone();
        let latencies = latencies.clone();
        readers.push(tokio::spawn(async move {
            let _keep_open = requests;
            let mut received = 0;
            while received < PUTS {
                let Some(answer) = answers.message().await? else {
                    anyhow::bail!("the watch stream ended");
                };
                let now = Instant::now();
                for event in answer.events {
                    let Some(kv) = event.kv else { continue };
                    let sent = sent_at
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .get(&kv.key)
                        .copied();
                    if let Some(sent) = sent {
                        latencies
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .push(now.duration_since(sent).as_secs_f64() * 1000.0);
                    }
                    received += 1;
                }
            }
            anyhow::Ok(())
        }));
    }
    // Let the watches be created before writing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut kv = stack.edge.kv()?;
    let value = vec![b'v'; VALUE_BYTES];
    for number in 0..PUTS {
        let key = format!("{prefix}{number:05}").into_bytes();
        sent_at
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(key.clone(), Instant::now());
        kv.put(PutRequest {
            key,
            value: value.clone(),
            ..Default::default()
        })
        .await?;
    }
    for reader in readers {
        tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .context("a reader fell behind for a minute")???;
    }
    let mut latencies = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_neither_slows_the_others_nor_grows_the_gateway() -> Result<()> {
    let stack = Stack::start(StackOptions {
        watch_gateways: 1,
        watch_extra: format!("[window]\nrevisions = {WINDOW}\n"),
        ..Default::default()
    })
    .await?;
    let gateway = stack.watches[0].pid().context("the gateway runs")?;

    let alone = run_round(&stack, "alone/").await?;
    let rss_before = rss_kib(gateway).context("the gateway's memory")?;

    // A client that asks for everything under "slow/" and never reads.
    let (stalled_requests, queued) = mpsc::channel(4);
    stalled_requests.send(create("slow/")).await?;
    let _stalled = WatchClient::new(stack.edge.channel()?)
        .watch(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await?;
    let beside = run_round(&stack, "slow/").await?;
    let rss_after = rss_kib(gateway).context("the gateway's memory")?;

    let (alone_p50, alone_p99) = (percentile(&alone, 0.5), percentile(&alone, 0.99));
    let (beside_p50, beside_p99) = (percentile(&beside, 0.5), percentile(&beside, 0.99));
    println!(
        "put→event ms, {WATCHERS} watchers: alone p50 {alone_p50:.2} p99 {alone_p99:.2}; beside a stalled client p50 {beside_p50:.2} p99 {beside_p99:.2}; gateway RSS {rss_before} → {rss_after} KiB"
    );
    ensure!(
        beside_p99 <= (alone_p99 * 2.0).max(alone_p99 + 50.0),
        "a stalled client slowed the others: p99 {beside_p99:.2} ms against {alone_p99:.2} ms"
    );
    // 1,000 revisions of 32 KiB (32 MiB) went past the stalled stream; the
    // gateway holds at most its window (200 revisions, 6.4 MiB) and one
    // stream's queue.
    let grown = rss_after.saturating_sub(rss_before);
    ensure!(
        grown < 24 * 1024,
        "the gateway grew {grown} KiB while a client stalled"
    );
    Ok(())
}
