//! Watch fan-out: many watchers on one prefix, puts at a fixed rate, and the
//! time from sending a put to each watcher receiving its event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use crate::drive::connect;
use crate::log::parse_duration;
use crate::report::{histogram, record, Summary};

const PREFIX: &str = "bench-watch/";

#[derive(Args)]
pub struct WatchArgs {
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

/// Kilobytes of resident memory of `pid`, from /proc.
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

type SentAt = Arc<Mutex<HashMap<Vec<u8>, Instant>>>;

/// One stream's watchers: latencies of every event they receive, until
/// every put (`done` says how many once they are all sent) has reached each
/// of them, or 10 s after the last put.
async fn watch_stream(
    endpoint: String,
    watchers: usize,
    sent_at: SentAt,
    created: Arc<tokio::sync::Barrier>,
    mut done: watch::Receiver<Option<(u64, Instant)>>,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let (requests, queued) = mpsc::channel(watchers + 1);
    for _ in 0..watchers {
        requests
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: PREFIX.as_bytes().to_vec(),
                    range_end: b"bench-watch0".to_vec(),
                    ..Default::default()
                })),
            })
            .await?;
    }
    let mut answers = WatchClient::new(connect(&endpoint).await?)
        .watch(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
            queued,
        ))
        .await?
        .into_inner();
    let mut latencies = histogram()?;
    let mut unmatched = 0_u64;
    let mut waiting = watchers;
    let mut told = false;
    loop {
        let finished = *done.borrow();
        if let Some((puts, at)) = finished {
            let received = latencies.len() + unmatched;
            if received >= puts * watchers as u64 || at.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let answer = tokio::select! {
            answer = answers.message() => match answer {
                Ok(Some(answer)) => answer,
                _ => break,
            },
            _ = done.changed() => continue,
            () = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        if answer.created {
            waiting = waiting.saturating_sub(1);
            if waiting == 0 && !told {
                told = true;
                created.wait().await;
            }
            continue;
        }
        let now = Instant::now();
        for event in answer.events {
            let Some(kv) = event.kv else { continue };
            let sent = sent_at
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .get(&kv.key)
                .copied();
            match sent {
                Some(sent) => record(&mut latencies, now.duration_since(sent)),
                None => unmatched += 1,
            }
        }
    }
    drop(requests);
    Ok((latencies, unmatched))
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.watchers > 0 && args.streams > 0 && args.rate > 0,
        "counts must be positive"
    );
    let streams = args.streams.min(args.watchers);
    let sent_at: SentAt = Arc::default();
    let created = Arc::new(tokio::sync::Barrier::new(streams + 1));
    let (finish, done) = watch::channel(None);
    let mut tasks = Vec::new();
    for stream in 0..streams {
        let watchers = args.watchers / streams + usize::from(stream < args.watchers % streams);
        tasks.push(tokio::spawn(watch_stream(
            args.endpoint.clone(),
            watchers,
            sent_at.clone(),
            created.clone(),
            done.clone(),
        )));
    }
    tokio::time::timeout(Duration::from_secs(120), created.wait())
        .await
        .map_err(|_| anyhow::anyhow!("the watchers were not created within 2 minutes"))?;
    println!(
        "{} watchers on {streams} streams at {}; {} puts/s of {} B for {:?}",
        args.watchers, args.endpoint, args.rate, args.size, args.duration
    );

    // Puts at the rate, as many in flight as it takes.
    let kv = KvClient::new(connect(&args.endpoint).await?);
    let in_flight = Arc::new(Semaphore::new(256));
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.rate));
    let writes_end = Instant::now() + args.duration;
    let mut number = 0_u64;
    let put_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    while Instant::now() < writes_end {
        ticks.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let key = format!("{PREFIX}{number:09}").into_bytes();
        number += 1;
        sent_at
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(key.clone(), Instant::now());
        let mut kv = kv.clone();
        let value = vec![b'v'; args.size];
        let errors = put_errors.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if kv
                .put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                })
                .await
                .is_err()
            {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let puts_started = writes_end - args.duration;
    finish.send_replace(Some((number, Instant::now())));
    let mut latencies = histogram()?;
    let mut unmatched = 0;
    for task in tasks {
        let (stream_latencies, stream_unmatched) = task.await??;
        latencies.add(&stream_latencies)?;
        unmatched += stream_unmatched;
    }
    let expected = number * args.watchers as u64;
    let summary = Summary::new(
        format!("{} {} watchers", args.label, args.watchers),
        &latencies,
        put_errors.load(std::sync::atomic::Ordering::Relaxed),
        puts_started.elapsed(),
    );
    println!("{}", Summary::HEADER);
    println!("{}", summary.row());
    println!(
        "{number} puts, {} of {expected} events delivered ({unmatched} unmatched)",
        latencies.len()
    );
    for pid in &args.gateway_pids {
        match rss_kib(*pid) {
            Some(rss) => println!("gateway {pid}: RSS {} MiB", rss / 1024),
            None => println!("gateway {pid}: not running"),
        }
    }
    Ok(())
}
