//! Renewing leases: a few LeaseKeepAlive streams, each renewing its share
//! of the leases as fast as the answers come back, reopened if they fail.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::drive::Conn;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::LeaseKeepAliveRequest;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};

// tonic's own re-export of tokio-stream: a request stream without another
// dependency of this crate.
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

use super::checkpoints::{commands_between, ActiveInstance, Commands};
use super::grant::RETRY_PAUSE;
use crate::drive::WARM_UP;
use crate::report::{histogram, record};

/// How the leases are renewed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeepAlivePlan {
    /// LeaseKeepAlive streams, each renewing an equal share of the leases.
    pub streams: usize,
    /// Keep-alives sent and not yet answered, per stream.
    pub in_flight: usize,
    /// Recorded time, after the warm-up.
    pub duration: std::time::Duration,
}

/// What the keep-alive streams measured.
pub(crate) struct Kept {
    /// Send → answer of each keep-alive sent after the warm-up.
    pub latencies: Histogram<u64>,
    pub errors: u64,
    pub ttl_zero: u64,
    /// The instance's checkpoint commands over the recorded time.
    pub commands: Option<Commands>,
}

/// Renews the leases `ids` as the plan says for the warm-up plus its
/// duration, reading the active instance's counters (if given) when the
/// recording starts and when it stops.
pub(crate) async fn keep_alive(
    plan: KeepAlivePlan,
    channels: &[Conn],
    ids: &[i64],
    active: Option<&ActiveInstance>,
) -> anyhow::Result<Kept> {
    anyhow::ensure!(
        plan.streams > 0 && plan.in_flight > 0 && !channels.is_empty(),
        "streams, keep-alives in flight and connections must be positive"
    );
    let record_from = Instant::now() + WARM_UP;
    let stop = record_from + plan.duration;
    let mut shares: Vec<Vec<i64>> = vec![Vec::new(); plan.streams];
    for (index, id) in ids.iter().enumerate() {
        shares[index % plan.streams].push(*id);
    }
    let mut streams = Vec::with_capacity(plan.streams);
    for (number, share) in shares.into_iter().enumerate() {
        if share.is_empty() {
            continue;
        }
        let channel = channels[number % channels.len()].clone();
        let in_flight = plan.in_flight;
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

/// Sends ready leases until `in_flight` keep-alives are waiting.
fn send_ready(
    requests: &mpsc::Sender<LeaseKeepAliveRequest>,
    ready: &mut VecDeque<i64>,
    waiting: &mut HashMap<i64, Instant>,
    in_flight: usize,
) {
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
}

/// One LeaseKeepAlive stream renewing `leases` until `stop`: each lease is
/// sent again once its last keep-alive is answered, at most `in_flight`
/// waiting at a time. Answers may come in any order; each names its lease.
/// A stream that fails is counted and reopened, its unanswered leases sent
/// again.
async fn keep_alive_stream(
    channel: Conn,
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
        // The first keep-alives go before the call: a gRPC server may send
        // the stream's headers only with its first answer (etcd does), and
        // the call returns only once it has them.
        send_ready(&requests, &mut ready, &mut waiting, in_flight);
        let mut answers =
            match timeout_at(stop, client.lease_keep_alive(ReceiverStream::new(queued))).await {
                Err(_) => break,
                Ok(Ok(answers)) => answers.into_inner(),
                Ok(Err(status)) => {
                    count(&mut measured.errors, format!("{:?}", status.code()));
                    ready.extend(waiting.drain().map(|(id, _)| id));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
        loop {
            send_ready(&requests, &mut ready, &mut waiting, in_flight);
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
