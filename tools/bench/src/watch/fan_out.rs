//! The watch measurement shared by `cairn-bench watch` and `compare`:
//! watchers spread over a few streams, either all on one prefix (fan-out:
//! each put reaches every watcher) or each on a key of its own (each put
//! reaches one), puts at a fixed rate to the watched keys, and the time from
//! sending each put to each watcher receiving its event. Every put's value
//! starts with its send time, so a watcher needs no shared table to find it,
//! however many events arrive at once.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, WatchCreateRequest};
use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use super::stream::{open_stream, shares, OpenStream};
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
/// Bytes of [`run_prefix`].
const RUN_PREFIX_BYTES: usize = 3;
/// Keys a run has under its prefix: key numbers wrap past this many.
const KEY_NUMBERS: u64 = 10_u64.pow((KEY_BYTES - RUN_PREFIX_BYTES) as u32);

/// What the watchers watch, and so which watchers each put reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Watched {
    /// All on the run's prefix: every put reaches every watcher.
    OnePrefix,
    /// Each on a single key of its own (no range end), the puts going
    /// round-robin over those keys: every put reaches exactly one watcher,
    /// so the server's cost is finding that watcher among many.
    OwnKeys,
}

/// What one run does.
#[derive(Clone, Debug)]
pub(crate) struct FanOutPlan {
    pub watchers: usize,
    /// Watch streams (each on its own connection) the watchers are spread over.
    pub streams: usize,
    pub watched: Watched,
    /// Puts per second to the watched keys.
    pub rate: u64,
    /// How long the puts go on.
    pub duration: Duration,
    /// Bytes per value (at least the 8 of the send time).
    pub size: usize,
    /// How long the watchers may go on receiving after the last put is
    /// answered: a server that falls behind is measured, not waited for.
    pub drain: Duration,
}

/// What one run measured.
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
/// five digits of an 8-byte key for the key's number.
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

/// Where one run's watchers watch and its puts go, so the puts, the
/// watchers and the count of events due all agree.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    prefix: Vec<u8>,
    watched: Watched,
    watchers: u64,
}

impl Layout {
    /// A layout under a prefix of this run's own.
    fn new(plan: &FanOutPlan) -> anyhow::Result<Self> {
        let watchers = plan.watchers as u64;
        anyhow::ensure!(
            plan.watched != Watched::OwnKeys || watchers <= KEY_NUMBERS,
            "at most {KEY_NUMBERS} watchers fit on keys of their own"
        );
        Ok(Self {
            prefix: run_prefix(),
            watched: plan.watched,
            watchers,
        })
    }

    /// The key put number `number` goes to: the next under the prefix, or
    /// the watched keys round-robin.
    pub(crate) fn put_key(&self, number: u64) -> Vec<u8> {
        match self.watched {
            Watched::OnePrefix => put_key(&self.prefix, number),
            Watched::OwnKeys => put_key(&self.prefix, number % self.watchers),
        }
    }

    /// What watcher number `watcher` asks the server to watch.
    fn create(&self, watcher: u64) -> WatchCreateRequest {
        match self.watched {
            Watched::OnePrefix => WatchCreateRequest {
                key: self.prefix.clone(),
                range_end: prefix_end(&self.prefix),
                ..Default::default()
            },
            Watched::OwnKeys => WatchCreateRequest {
                key: put_key(&self.prefix, watcher),
                ..Default::default()
            },
        }
    }

    /// Events the watchers numbered `share` are due once puts `0..puts`
    /// are made.
    fn events_due(&self, share: &Range<u64>, puts: u64) -> u64 {
        let holding = share.end - share.start;
        match self.watched {
            Watched::OnePrefix => puts * holding,
            Watched::OwnKeys => {
                let (rounds, rest) = (puts / self.watchers, puts % self.watchers);
                rounds * holding + rest.min(share.end).saturating_sub(share.start)
            }
        }
    }
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

/// Whose events one stream reads, and how long it may drain.
struct StreamPlan {
    share: Range<u64>,
    layout: Layout,
    base: Instant,
    drain: Duration,
}

/// One stream's watchers: latencies of every event they receive, until
/// every put has reached those it was due to, or `drain` after the last
/// put. The stream is handed back open.
async fn receive_events(
    mut stream: OpenStream,
    plan: StreamPlan,
    mut done: watch::Receiver<PutsDone>,
) -> anyhow::Result<(Received, OpenStream)> {
    let mut received = Received {
        latencies: histogram()?,
        unmatched: 0,
        last: None,
    };
    loop {
        let finished = *done.borrow();
        if let Some((puts, at)) = finished {
            let count = received.latencies.len() + received.unmatched;
            if count >= plan.layout.events_due(&plan.share, puts) || at.elapsed() > plan.drain {
                break;
            }
        }
        let answer = tokio::select! {
            answer = stream.answers.message() => match answer {
                Ok(Some(answer)) => answer,
                _ => break,
            },
            changed = done.changed() => match changed {
                Ok(()) => continue,
                // The puts gave up: no count of them is coming.
                Err(_) => break,
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
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
    Ok((received, stream))
}

/// What the puts at a fixed rate did.
struct RatePuts {
    sent: u64,
    errors: u64,
    started: Instant,
}

/// Puts at the plan's rate for its duration, put number `n` to
/// `layout.put_key(n)` with a value stamped with its send time, as many in
/// flight as it takes; returns once every put is answered, or `drain` after
/// the last was sent.
async fn put_at_rate(
    endpoint: &str,
    plan: &FanOutPlan,
    layout: &Layout,
    base: Instant,
) -> anyhow::Result<RatePuts> {
    let kv = KvClient::new(connect(endpoint).await?);
    let in_flight = Arc::new(Semaphore::new(PUTS_IN_FLIGHT as usize));
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / plan.rate));
    let started = Instant::now();
    let writes_end = started + plan.duration;
    let mut number = 0_u64;
    let errors = Arc::new(AtomicU64::new(0));
    while Instant::now() < writes_end {
        ticks.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let key = layout.put_key(number);
        number += 1;
        let mut kv = kv.clone();
        let value = stamped(base, plan.size);
        let errors = errors.clone();
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
    let _all = tokio::time::timeout(plan.drain, in_flight.acquire_many(PUTS_IN_FLIGHT)).await;
    Ok(RatePuts {
        sent: number,
        errors: errors.load(Ordering::Relaxed),
        started,
    })
}

/// A run's watchers, all created, their streams open.
pub(crate) struct Watchers {
    layout: Layout,
    streams: Vec<(Range<u64>, OpenStream)>,
}

impl Watchers {
    /// Creates the plan's watchers under a prefix of this run's own, and
    /// returns once the server has created every one.
    pub(crate) async fn open(endpoint: &str, plan: &FanOutPlan) -> anyhow::Result<Self> {
        anyhow::ensure!(
            plan.watchers > 0 && plan.streams > 0 && plan.rate > 0,
            "watchers, streams and rate must be positive"
        );
        let layout = Layout::new(plan)?;
        let split = shares(layout.watchers, plan.streams as u64);
        let mut opening = Vec::new();
        for share in &split {
            let creates = share
                .clone()
                .map(|watcher| layout.create(watcher))
                .collect();
            opening.push(tokio::spawn(open_stream(endpoint.to_owned(), creates)));
        }
        let stalled: Vec<AbortHandle> = opening.iter().map(JoinHandle::abort_handle).collect();
        let opened = tokio::time::timeout(CREATE_TIMEOUT, async {
            let mut streams = Vec::new();
            for stream in opening {
                streams.push(stream.await??);
            }
            anyhow::Ok(streams)
        })
        .await
        .map_err(|_| {
            stalled.iter().for_each(AbortHandle::abort);
            anyhow::anyhow!("the watchers were not created within {CREATE_TIMEOUT:?}")
        })??;
        Ok(Self {
            layout,
            streams: split.into_iter().zip(opened).collect(),
        })
    }

    /// Where the watchers watch.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The open streams, for whoever goes on reading them; dropping them
    /// closes the watchers.
    pub(crate) fn into_streams(self) -> Vec<OpenStream> {
        self.streams.into_iter().map(|(_, stream)| stream).collect()
    }

    /// Puts at the plan's rate for its duration and gathers what every
    /// watcher received; the watchers are handed back still open.
    pub(crate) async fn measure(
        self,
        endpoint: &str,
        plan: &FanOutPlan,
    ) -> anyhow::Result<(FanOut, Self)> {
        let base = Instant::now();
        let (finish, done) = watch::channel(None);
        let mut receiving = Vec::new();
        for (share, stream) in self.streams {
            let stream_plan = StreamPlan {
                share: share.clone(),
                layout: self.layout.clone(),
                base,
                drain: plan.drain,
            };
            let task = tokio::spawn(receive_events(stream, stream_plan, done.clone()));
            receiving.push((share, task));
        }
        let rate_puts = put_at_rate(endpoint, plan, &self.layout, base).await?;
        // Every put answered (or given up on), so the watchers know what to expect.
        let puts = rate_puts.sent.saturating_sub(rate_puts.errors);
        finish.send_replace(Some((puts, Instant::now())));
        let mut latencies = histogram()?;
        let mut unmatched = 0;
        let mut last = rate_puts.started;
        let mut streams = Vec::new();
        for (share, task) in receiving {
            let (received, stream) = task.await??;
            latencies.add(&received.latencies)?;
            unmatched += received.unmatched;
            last = last.max(received.last.unwrap_or(rate_puts.started));
            streams.push((share, stream));
        }
        let measured = FanOut {
            latencies,
            puts,
            put_errors: rate_puts.errors,
            expected: self.layout.events_due(&(0..self.layout.watchers), puts),
            unmatched,
            elapsed: last.duration_since(rate_puts.started),
        };
        let layout = self.layout;
        Ok((measured, Self { layout, streams }))
    }
}

/// Creates the watchers, puts at the plan's rate for its duration, gathers
/// what every watcher received, and closes the watchers.
pub(crate) async fn fan_out(endpoint: &str, plan: &FanOutPlan) -> anyhow::Result<FanOut> {
    let watchers = Watchers::open(endpoint, plan).await?;
    let (measured, _closed) = watchers.measure(endpoint, plan).await?;
    Ok(measured)
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
        assert_eq!(prefix.len(), RUN_PREFIX_BYTES);
        let key = put_key(&prefix, 42);
        assert_eq!(key.len(), KEY_BYTES);
        assert!(key.starts_with(&prefix));
        assert!(key < prefix_end(&prefix));
        assert!(put_key(&prefix, 9) < put_key(&prefix, 10));
    }

    fn own_keys(watchers: u64) -> Layout {
        Layout {
            prefix: b"wab".to_vec(),
            watched: Watched::OwnKeys,
            watchers,
        }
    }

    #[test]
    fn on_own_keys_each_watcher_watches_one_key_and_the_puts_go_round_robin() {
        let layout = own_keys(10_000);
        let create = layout.create(42);
        assert_eq!(create.key, b"wab00042".to_vec());
        assert!(create.range_end.is_empty());
        assert_eq!(layout.put_key(42), create.key);
        assert_eq!(layout.put_key(10_042), create.key);
        assert_eq!(layout.put_key(9_999), b"wab09999".to_vec());
        assert_eq!(layout.put_key(10_000), b"wab00000".to_vec());
    }

    #[test]
    fn on_one_prefix_every_watcher_watches_the_prefix() {
        let layout = Layout {
            watched: Watched::OnePrefix,
            ..own_keys(1_000)
        };
        let create = layout.create(7);
        assert_eq!(create.key, b"wab".to_vec());
        assert_eq!(create.range_end, b"wac".to_vec());
        assert_eq!(layout.put_key(1_234), b"wab01234".to_vec());
        assert_eq!(layout.events_due(&(0..10), 300), 3_000);
    }

    #[test]
    fn on_own_keys_each_put_is_due_to_the_stream_holding_its_key() -> anyhow::Result<()> {
        let layout = own_keys(1_000);
        let split = shares(1_000, 7);
        let mut holder = std::collections::HashMap::new();
        for (stream, share) in split.iter().enumerate() {
            for watcher in share.clone() {
                holder.insert(layout.create(watcher).key, stream);
            }
        }
        for puts in [0, 1, 499, 1_000, 2_345] {
            let mut due = vec![0; split.len()];
            for number in 0..puts {
                let stream = holder
                    .get(&layout.put_key(number))
                    .ok_or_else(|| anyhow::anyhow!("put {number} reaches no watcher"))?;
                due[*stream] += 1;
            }
            for (share, due) in split.iter().zip(&due) {
                assert_eq!(
                    layout.events_due(share, puts),
                    *due,
                    "{share:?} after {puts}"
                );
            }
            assert_eq!(layout.events_due(&(0..1_000), puts), puts);
        }
        Ok(())
    }
}
