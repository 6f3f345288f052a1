//! The fan-out measurement shared by `cairn-bench watch` and `compare`:
//! watchers on one prefix spread over a few streams, puts at a fixed rate
//! under it, and the time from sending each put to each watcher receiving
//! its event. Every put's value starts with its send time, so a watcher
//! needs no shared table to find it, however many events arrive at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch, Barrier, Semaphore};
use tokio::time::Instant;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

use crate::drive::connect;
use crate::keys::{prefix_end, KEY_BYTES};
use crate::report::{histogram, record};

/// Puts sent and not yet answered at most: enough for any rate a loopback
/// server keeps up with, bounded so a stalled one does not pile up tasks.
const PUTS_IN_FLIGHT: u32 = 256;
/// Bytes of the send time at the head of every value.
const STAMP_BYTES: usize = 8;
/// Watchers not all created by then: the run fails rather than hangs.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// What one fan-out run does.
#[derive(Clone, Debug)]
pub(crate) struct FanOutPlan {
    pub watchers: usize,
    /// Watch streams (each on its own connection) the watchers are spread over.
    pub streams: usize,
    /// Puts per second under the prefix.
    pub rate: u64,
    /// How long the puts go on.
    pub duration: Duration,
    /// Bytes per value (at least the 8 of the send time).
    pub size: usize,
    /// How long the watchers may go on receiving after the last put is
    /// answered: a server that falls behind is measured, not waited for.
    pub drain: Duration,
}

/// What one fan-out run measured.
pub(crate) struct FanOut {
    /// Put sent → event received, every event of every watcher.
    pub latencies: Histogram<u64>,
    /// Puts answered without error.
    pub puts: u64,
    pub put_errors: u64,
    /// Events every watcher would have received in all.
    pub expected: u64,
    /// Events whose value held no send time of this run.
    pub unmatched: u64,
    /// From the first put to the last event received.
    pub elapsed: Duration,
}

impl FanOut {
    /// Events received by all watchers together.
    pub(crate) fn delivered(&self) -> u64 {
        self.latencies.len()
    }
}

/// A prefix of this run's own, so a late event of an earlier run on the same
/// server is never taken for one of this run: `w` and two letters, leaving
/// five digits of an 8-byte key for the put's number.
fn run_prefix() -> Vec<u8> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::from(since.subsec_micros()));
    let tag = (clock + RUNS.fetch_add(1, Ordering::Relaxed)) % (26 * 26);
    // Both below 26: the casts cannot truncate.
    vec![b'w', b'a' + (tag / 26) as u8, b'a' + (tag % 26) as u8]
}

/// Key number `number` under `prefix`, 8 bytes in all.
fn put_key(prefix: &[u8], number: u64) -> Vec<u8> {
    let digits = KEY_BYTES.saturating_sub(prefix.len()).max(1);
    let wrap = 10_u64.saturating_pow(digits as u32);
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{:0digits$}", number % wrap).as_bytes());
    key
}

/// A value of `size` bytes that starts with the time it is sent, as
/// nanoseconds since `base`.
fn stamped(base: Instant, size: usize) -> Vec<u8> {
    let nanos = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut value = nanos.to_le_bytes().to_vec();
    value.resize(size.max(STAMP_BYTES), b'v');
    value
}

/// The send time a value starts with, if it has one.
fn sent_at(base: Instant, value: &[u8]) -> Option<Instant> {
    let stamp: [u8; STAMP_BYTES] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    base.checked_add(Duration::from_nanos(u64::from_le_bytes(stamp)))
}

/// What one stream's watchers received.
struct Received {
    latencies: Histogram<u64>,
    unmatched: u64,
    last: Option<Instant>,
}

/// The state of the puts the watchers are told about: once all are answered,
/// how many succeeded and when the last was answered.
type PutsDone = Option<(u64, Instant)>;

/// Where one stream's watchers watch, and how long they may drain.
struct StreamPlan {
    endpoint: String,
    prefix: Vec<u8>,
    watchers: usize,
    base: Instant,
    drain: Duration,
}

/// One stream's watchers: latencies of every event they receive, until
/// every put has reached each of them, or `drain` after the last put.
async fn watch_stream(
    plan: StreamPlan,
    created: Arc<Barrier>,
    mut done: watch::Receiver<PutsDone>,
) -> anyhow::Result<Received> {
    let (requests, queued) = mpsc::channel(plan.watchers + 1);
    for _ in 0..plan.watchers {
        requests
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: plan.prefix.clone(),
                    range_end: prefix_end(&plan.prefix),
                    ..Default::default()
                })),
            })
            .await?;
    }
    let mut answers = WatchClient::new(connect(&plan.endpoint).await?)
        .watch(ReceiverStream::new(queued))
        .await?
        .into_inner();
    let mut received = Received {
        latencies: histogram()?,
        unmatched: 0,
        last: None,
    };
    let mut waiting = plan.watchers;
    let mut told = false;
    loop {
        let finished = *done.borrow();
        if let Some((puts, at)) = finished {
            let count = received.latencies.len() + received.unmatched;
            if count >= puts * plan.watchers as u64 || at.elapsed() > plan.drain {
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
            match sent_at(plan.base, &kv.value) {
                Some(sent) if sent <= now => {
                    record(&mut received.latencies, now.duration_since(sent));
                    received.last = Some(now);
                }
                _ => received.unmatched += 1,
            }
        }
    }
    drop(requests);
    Ok(received)
}

/// Creates the watchers, puts at the plan's rate for its duration, and
/// gathers what every watcher received.
pub(crate) async fn fan_out(endpoint: &str, plan: &FanOutPlan) -> anyhow::Result<FanOut> {
    anyhow::ensure!(
        plan.watchers > 0 && plan.streams > 0 && plan.rate > 0,
        "watchers, streams and rate must be positive"
    );
    let streams = plan.streams.min(plan.watchers);
    let prefix = run_prefix();
    let base = Instant::now();
    let created = Arc::new(Barrier::new(streams + 1));
    let (finish, done) = watch::channel(None);
    let mut tasks = Vec::new();
    for stream in 0..streams {
        let watchers = plan.watchers / streams + usize::from(stream < plan.watchers % streams);
        let stream_plan = StreamPlan {
            endpoint: endpoint.to_owned(),
            prefix: prefix.clone(),
            watchers,
            base,
            drain: plan.drain,
        };
        tasks.push(tokio::spawn(watch_stream(
            stream_plan,
            created.clone(),
            done.clone(),
        )));
    }
    tokio::time::timeout(CREATE_TIMEOUT, created.wait())
        .await
        .map_err(|_| anyhow::anyhow!("the watchers were not created within {CREATE_TIMEOUT:?}"))?;

    // Puts at the rate, as many in flight as it takes.
    let kv = KvClient::new(connect(endpoint).await?);
    let in_flight = Arc::new(Semaphore::new(PUTS_IN_FLIGHT as usize));
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / plan.rate));
    let puts_started = Instant::now();
    let writes_end = puts_started + plan.duration;
    let mut number = 0_u64;
    let put_errors = Arc::new(AtomicU64::new(0));
    while Instant::now() < writes_end {
        ticks.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let key = put_key(&prefix, number);
        number += 1;
        let mut kv = kv.clone();
        let value = stamped(base, plan.size);
        let errors = put_errors.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let put = PutRequest {
                key,
                value,
                ..Default::default()
            };
            if kv.put(put).await.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Every put answered (or given up on), so the watchers know what to expect.
    let _all = tokio::time::timeout(plan.drain, in_flight.acquire_many(PUTS_IN_FLIGHT)).await;
    let put_errors = put_errors.load(Ordering::Relaxed);
    let puts = number.saturating_sub(put_errors);
    finish.send_replace(Some((puts, Instant::now())));
    let mut latencies = histogram()?;
    let mut unmatched = 0;
    let mut last = puts_started;
    for task in tasks {
        let received = task.await??;
        latencies.add(&received.latencies)?;
        unmatched += received.unmatched;
        last = last.max(received.last.unwrap_or(puts_started));
    }
    Ok(FanOut {
        latencies,
        puts,
        put_errors,
        expected: puts * plan.watchers as u64,
        unmatched,
        elapsed: last.duration_since(puts_started),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_carries_its_send_time() {
        let base = Instant::now();
        let value = stamped(base, 256);
        assert_eq!(value.len(), 256);
        let sent = sent_at(base, &value);
        assert!(matches!(sent, Some(at) if at >= base && at <= Instant::now()));
        assert_eq!(sent_at(base, b"short"), None);
        assert_eq!(stamped(base, 1).len(), STAMP_BYTES);
    }

    #[test]
    fn put_keys_are_eight_bytes_under_the_run_prefix() {
        let prefix = run_prefix();
        assert_eq!(prefix.len(), 3);
        let key = put_key(&prefix, 42);
        assert_eq!(key.len(), KEY_BYTES);
        assert!(key.starts_with(&prefix));
        assert!(key < prefix_end(&prefix));
        assert!(put_key(&prefix, 9) < put_key(&prefix, 10));
    }
}
