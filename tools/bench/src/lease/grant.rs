//! Granting leases: N leases, each optionally with one key attached, a few
//! grants in flight at a time, retried across a leader election.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::drive::Conn;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, PutRequest};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::report::{histogram, record};

/// Attempts per grant or put before the run gives up on it: enough to ride
/// out a log leader election (about 10 s of pauses in all).
const ATTEMPTS: u32 = 8;
/// Pause before reopening a failed stream, and before the first retry; each
/// further retry waits twice as long, up to `MAX_RETRY_PAUSE`.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause between attempts.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// The keys attached to the leases, one each, under this prefix.
const KEY_PREFIX: &str = "bench/lease/";

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

/// How many leases to grant, and how.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GrantPlan {
    pub leases: usize,
    /// TTL of every lease in seconds.
    pub ttl: i64,
    /// Grants (each with the put of its key) in flight at once.
    pub concurrency: usize,
    /// Whether each lease gets a key attached, as applications' leases do;
    /// without keys granting is cheaper, and keep-alives cost the same.
    pub attach_keys: bool,
}

/// What granting measured.
pub(crate) struct Granted {
    pub ids: Vec<i64>,
    pub elapsed: Duration,
    /// Grant (+ put) of one lease, each.
    pub latencies: Histogram<u64>,
    pub retries: u64,
}

/// Calls `attempt` until it succeeds, a transient failure at most
/// `ATTEMPTS` times; `done_already` says when a retry's failure means an
/// earlier, lost attempt took effect. Returns the retries it took.
async fn with_retries<F, Fut>(
    what: &str,
    done_already: impl Fn(&Status) -> bool,
    mut attempt: F,
) -> anyhow::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt().await {
            Ok(()) => return Ok(u64::from(attempts - 1)),
            Err(status) if attempts > 1 && done_already(&status) => {
                return Ok(u64::from(attempts - 1))
            }
            Err(status) if attempts < ATTEMPTS && transient(&status) => {
                tokio::time::sleep(retry_pause(attempts)).await;
            }
            Err(status) => anyhow::bail!("{what}: {status}"),
        }
    }
}

/// Grants the plan's leases, `concurrency` at a time, and puts one key on
/// each if asked. IDs are chosen here, so a grant retried after a lost
/// answer finds its lease already there instead of leaving a second one to
/// expire.
pub(crate) async fn grant(plan: GrantPlan, channels: &[Conn]) -> anyhow::Result<Granted> {
    anyhow::ensure!(!channels.is_empty(), "no connections to grant over");
    // Distinct from an earlier run's leases on the same data, and positive.
    let first_id = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros()
            % (1 << 40),
    )? << 20;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(plan.concurrency);
    for worker in 0..plan.concurrency {
        let channel = channels[worker % channels.len()].clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let lease = LeaseClient::new(channel.clone());
            let kv = KvClient::new(channel);
            let mut ids = Vec::new();
            let mut latencies = histogram()?;
            let mut retries = 0_u64;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= plan.leases {
                    break;
                }
                let id = first_id + i64::try_from(index)?;
                let sent = Instant::now();
                let exists = |status: &Status| status.message() == EtcdError::LeaseExists.message();
                retries += with_retries(&format!("grant of lease {id}"), exists, || {
                    let mut lease = lease.clone();
                    async move {
                        lease
                            .lease_grant(LeaseGrantRequest { ttl: plan.ttl, id })
                            .await
                            .map(|_| ())
                    }
                })
                .await?;
                if plan.attach_keys {
                    let what = format!("put of a key on lease {id}");
                    retries += with_retries(
                        &what,
                        |_| false,
                        || {
                            let mut kv = kv.clone();
                            let put = PutRequest {
                                key: key(index),
                                value: b"x".to_vec(),
                                lease: id,
                                ..Default::default()
                            };
                            async move { kv.put(put).await.map(|_| ()) }
                        },
                    )
                    .await?;
                }
                record(&mut latencies, sent.elapsed());
                ids.push(id);
            }
            anyhow::Ok((ids, latencies, retries))
        }));
    }
    let mut granted = Granted {
        ids: Vec::with_capacity(plan.leases),
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
