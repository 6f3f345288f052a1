//! etcd leases against any etcd v3 endpoint: how long N leases (one key each)
//! take to grant, how many keep-alives a few streams get answered and how
//! fast, and — read from the active cairn-lease instance's metrics — how many
//! log commands the leases cost while idle (the periodic checkpoints of every
//! remaining TTL) and while they are being renewed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};
use tonic::transport::Channel;
use tonic::{Code, Status};

// tonic's own re-export of tokio-stream: a request stream without another
// dependency of this crate.
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

use crate::drive::{connect, MAX_CONNECTIONS, WARM_UP};
use crate::log::parse_duration;
use crate::prometheus::{scrape, value};
use crate::report::{histogram, record, Summary};

/// Attempts per grant or put before the run gives up on it: enough to ride
/// out a log leader election (about 10 s of pauses in all).
const ATTEMPTS: u32 = 8;
/// Pause before reopening a failed stream, and before the first retry; each
/// further retry waits twice as long, up to `MAX_RETRY_PAUSE`.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause between attempts.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// The keys attached to the leases, one each, under this prefix.
const KEY_PREFIX: &str = "bench/lease/";

/// The lease workload's settings.
#[derive(Args)]
pub struct LeaseArgs {
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
pub struct LeaseReport {
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

/// Log commands one lease instance wrote over a period: what the leases
/// cost the log, the figure that grows with the lease count.
#[derive(Debug, Serialize)]
pub struct Commands {
    pub seconds: f64,
    pub commands: f64,
    pub per_second: f64,
    /// Keep-alives the instance took over the period.
    pub keep_alives: f64,
}

/// The counters of the active instance read at one moment.
struct Reading {
    at: Instant,
    page: String,
}

impl Reading {
    fn counter(&self, name: &str) -> f64 {
        value(&self.page, name).unwrap_or(f64::NAN)
    }
}

/// The active lease instance's metrics page, found once and read around
/// each phase.
struct ActiveInstance {
    url: String,
}

impl ActiveInstance {
    /// The instance reporting `cairn_lease_active 1`, if any answers.
    async fn find(urls: &[String]) -> Option<Self> {
        for url in urls.iter().filter(|url| !url.is_empty()) {
            match scrape(url).await {
                Ok(page) if value(&page, "cairn_lease_active") == Some(1.0) => {
                    return Some(Self { url: url.clone() })
                }
                Ok(_) => {}
                Err(error) => eprintln!("{error:#}"),
            }
        }
        None
    }

    /// The counters now; `None` (and why, on stderr) if the instance cannot
    /// be read or is no longer active, so a takeover costs the checkpoint
    /// figures but not the rest of the run.
    async fn read(&self) -> Option<Reading> {
        match scrape(&self.url).await {
            Ok(page) if value(&page, "cairn_lease_active") == Some(1.0) => Some(Reading {
                at: Instant::now(),
                page,
            }),
            Ok(_) => {
                eprintln!("{} is no longer the active lease instance", self.url);
                None
            }
            Err(error) => {
                eprintln!("{error:#}");
                None
            }
        }
    }
}

/// The checkpoint commands and keep-alives between two readings.
fn commands_between(before: &Reading, after: &Reading) -> Commands {
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let delta = |name| after.counter(name) - before.counter(name);
    let commands = delta("cairn_lease_checkpoint_commands_total");
    Commands {
        seconds,
        commands,
        per_second: commands / seconds.max(f64::EPSILON),
        keep_alives: delta("cairn_lease_keep_alives_total"),
    }
}

/// The key attached to lease number `index`.
fn key(index: usize) -> Vec<u8> {
    format!("{KEY_PREFIX}{index:08}").into_bytes()
}

/// Whether an error may pass if the call is simply made again.
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Unknown
    )
}

/// The pause before attempt `attempt + 1` (the first attempt is 1).
fn retry_pause(attempt: u32) -> Duration {
    RETRY_PAUSE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_RETRY_PAUSE)
}

/// Runs the lease workload and prints its figures.
pub async fn run(args: LeaseArgs) -> anyhow::Result<()> {
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

    let granted = grant(&args, &channels).await?;
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

    let kept = keep_alive(&args, &channels, granted.ids, active.as_ref()).await?;
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

/// What granting measured.
struct Granted {
    ids: Vec<i64>,
    elapsed: Duration,
    /// Grant + put of one lease, each.
    latencies: Histogram<u64>,
    retries: u64,
}

/// Grants `--leases` leases and puts one key on each, `--grant-concurrency`
/// at a time. IDs are chosen here, so a grant retried after a lost answer
/// finds its lease already there instead of leaving a second one to expire.
async fn grant(args: &LeaseArgs, channels: &[Channel]) -> anyhow::Result<Granted> {
    // Distinct from an earlier run's leases on the same data, and positive.
    let first_id = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros()
            % (1 << 40),
    )? << 20;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.grant_concurrency);
    for worker in 0..args.grant_concurrency {
        let channel = channels[worker % channels.len()].clone();
        let next = next.clone();
        let (leases, ttl) = (args.leases, args.ttl);
        workers.push(tokio::spawn(async move {
            let mut lease = LeaseClient::new(channel.clone());
            let mut kv = KvClient::new(channel);
            let mut ids = Vec::new();
            let mut latencies = histogram()?;
            let mut retries = 0_u64;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= leases {
                    break;
                }
                let id = first_id + i64::try_from(index)?;
                let sent = Instant::now();
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match lease.lease_grant(LeaseGrantRequest { ttl, id }).await {
                        Ok(_) => break,
                        Err(status)
                            if attempt > 1
                                && status.message() == EtcdError::LeaseExists.message() =>
                        {
                            break
                        }
                        Err(status) if attempt < ATTEMPTS && transient(&status) => {
                            retries += 1;
                            tokio::time::sleep(retry_pause(attempt)).await;
                        }
                        Err(status) => anyhow::bail!("grant of lease {id}: {status}"),
                    }
                }
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let put = PutRequest {
                        key: key(index),
                        value: b"x".to_vec(),
                        lease: id,
                        ..Default::default()
                    };
                    match kv.put(put).await {
                        Ok(_) => break,
                        Err(status) if attempt < ATTEMPTS && transient(&status) => {
                            retries += 1;
                            tokio::time::sleep(retry_pause(attempt)).await;
                        }
                        Err(status) => anyhow::bail!("put of a key on lease {id}: {status}"),
                    }
                }
                record(&mut latencies, sent.elapsed());
                ids.push(id);
            }
            anyhow::Ok((ids, latencies, retries))
        }));
    }
    let mut granted = Granted {
        ids: Vec::with_capacity(args.leases),
        elapsed: Duration::ZERO,
        latencies: histogram()?,
        retries: 0,
    };
    for worker in workers {
        let (ids, latencies, retries) = worker.await??;
        granted.ids.extend(ids);
        granted.latencies.add(&latencies)?;
        granted.retries += retries;
    }
    granted.elapsed = started.elapsed();
    Ok(granted)
}

/// What the keep-alive streams measured.
struct Kept {
    /// Send → answer of each keep-alive sent after the warm-up.
    latencies: Histogram<u64>,
    errors: u64,
    ttl_zero: u64,
    /// The instance's checkpoint commands over the recorded time.
    commands: Option<Commands>,
}

/// Renews the leases over `--streams` streams for the warm-up plus
/// `--duration`, reading the active instance's counters when the recording
/// starts and when it stops.
async fn keep_alive(
    args: &LeaseArgs,
    channels: &[Channel],
    ids: Vec<i64>,
    active: Option<&ActiveInstance>,
) -> anyhow::Result<Kept> {
    let record_from = Instant::now() + WARM_UP;
    let stop = record_from + args.duration;
    let mut shares: Vec<Vec<i64>> = vec![Vec::new(); args.streams];
    for (index, id) in ids.into_iter().enumerate() {
        shares[index % args.streams].push(id);
    }
    let mut streams = Vec::with_capacity(args.streams);
    for (number, share) in shares.into_iter().enumerate() {
        if share.is_empty() {
            continue;
        }
        let channel = channels[number % channels.len()].clone();
        let in_flight = args.in_flight;
        streams.push(tokio::spawn(keep_alive_stream(
            channel,
            share,
            in_flight,
            record_from,
            stop,
        )));
    }
    let mut commands = None;
    if let Some(active) = active {
        tokio::time::sleep_until(record_from).await;
        let before = active.read().await;
        tokio::time::sleep_until(stop).await;
        if let (Some(before), Some(after)) = (before, active.read().await) {
            commands = Some(commands_between(&before, &after));
        }
    }
    let mut kept = Kept {
        latencies: histogram()?,
        errors: 0,
        ttl_zero: 0,
        commands,
    };
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for stream in streams {
        let stream = stream.await??;
        kept.latencies.add(&stream.latencies)?;
        kept.ttl_zero += stream.ttl_zero;
        for (kind, count) in stream.errors {
            *errors.entry(kind).or_default() += count;
        }
    }
    kept.errors = errors.values().sum();
    if kept.errors > 0 {
        eprintln!("keep-alive errors: {errors:?}");
    }
    Ok(kept)
}

/// What one stream measured.
struct StreamMeasured {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    ttl_zero: u64,
}

/// Adds one error of `kind`.
fn count(errors: &mut BTreeMap<String, u64>, kind: String) {
    *errors.entry(kind).or_default() += 1;
}

/// One LeaseKeepAlive stream renewing `leases` until `stop`: each lease is
/// sent again once its last keep-alive is answered, at most `in_flight`
/// waiting at a time. Answers may come in any order; each names its lease.
/// A stream that fails is counted and reopened, its unanswered leases sent
/// again.
async fn keep_alive_stream(
    channel: Channel,
    leases: Vec<i64>,
    in_flight: usize,
    record_from: Instant,
    stop: Instant,
) -> anyhow::Result<StreamMeasured> {
    let mut measured = StreamMeasured {
        latencies: histogram()?,
        errors: BTreeMap::new(),
        ttl_zero: 0,
    };
    let mut client = LeaseClient::new(channel);
    let mut ready: VecDeque<i64> = leases.into();
    let mut waiting: HashMap<i64, Instant> = HashMap::with_capacity(in_flight);
    'streams: while Instant::now() < stop {
        let (requests, queued) = mpsc::channel(in_flight);
        let mut answers =
            match timeout_at(stop, client.lease_keep_alive(ReceiverStream::new(queued))).await {
                Err(_) => break,
                Ok(Ok(answers)) => answers.into_inner(),
                Ok(Err(status)) => {
                    count(&mut measured.errors, format!("{:?}", status.code()));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
        loop {
            while waiting.len() < in_flight {
                let Some(id) = ready.pop_front() else {
                    break;
                };
                // Never full: it holds at most the keep-alives waiting.
                if requests.try_send(LeaseKeepAliveRequest { id }).is_err() {
                    ready.push_front(id);
                    break;
                }
                waiting.insert(id, Instant::now());
            }
            match timeout_at(stop, answers.message()).await {
                Err(_) => break 'streams,
                Ok(Ok(Some(answer))) => {
                    let Some(sent) = waiting.remove(&answer.id) else {
                        count(
                            &mut measured.errors,
                            "answer for no waiting keep-alive".into(),
                        );
                        continue;
                    };
                    if answer.ttl <= 0 {
                        // The lease is gone; sending it again would only
                        // count it again.
                        measured.ttl_zero += 1;
                    } else {
                        ready.push_back(answer.id);
                    }
                    if sent >= record_from {
                        record(&mut measured.latencies, sent.elapsed());
                    }
                }
                Ok(Ok(None)) => {
                    count(&mut measured.errors, "stream ended".into());
                    break;
                }
                Ok(Err(status)) => {
                    count(&mut measured.errors, format!("{:?}", status.code()));
                    break;
                }
            }
        }
        // This stream is gone; what it left unanswered goes on the next.
        ready.extend(waiting.drain().map(|(id, _)| id));
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_ceiling() {
        assert_eq!(retry_pause(1), RETRY_PAUSE);
        assert_eq!(retry_pause(2), RETRY_PAUSE * 2);
        assert_eq!(retry_pause(3), RETRY_PAUSE * 4);
        assert_eq!(retry_pause(ATTEMPTS), MAX_RETRY_PAUSE);
        assert_eq!(retry_pause(u32::MAX), MAX_RETRY_PAUSE);
        let total: Duration = (1..ATTEMPTS).map(retry_pause).sum();
        assert!(total >= Duration::from_secs(8), "{total:?}");
    }

    #[test]
    fn keys_sort_in_grant_order() {
        assert_eq!(key(7), b"bench/lease/00000007".to_vec());
        assert!(key(9) < key(10));
    }
}
