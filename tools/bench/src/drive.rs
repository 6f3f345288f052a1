//! The load loop every workload shares: N clients over a few shared HTTP/2
//! connections, each sending its next request as soon as the last is answered;
//! latencies after a warm-up are recorded, failures counted by gRPC code.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::report::{histogram, record};

/// At most this many connections, shared round-robin by the clients: a few
/// connections spread the load over the server's threads as real clients do.
pub const MAX_CONNECTIONS: usize = 8;
/// Not recorded: connections warm up, batches settle.
pub const WARM_UP: Duration = Duration::from_secs(1);

pub async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{endpoint}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await?)
}

/// What a run of clients measured.
pub struct Measured {
    pub latencies: Histogram<u64>,
    pub errors: u64,
    /// Every request sent, the warm-up's included.
    pub sent: u64,
}

/// Runs `clients` clients against `endpoint` for the warm-up plus `duration`.
/// `call(channel, client, sequence)` sends one request.
pub async fn drive<F, Fut>(
    endpoint: &str,
    clients: usize,
    duration: Duration,
    call: F,
) -> anyhow::Result<Measured>
where
    F: Fn(Channel, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    let mut channels = Vec::new();
    for _ in 0..clients.min(MAX_CONNECTIONS) {
        channels.push(connect(endpoint).await?);
    }
    let record_from = Instant::now() + WARM_UP;
    let stop = record_from + duration;
    let mut tasks = Vec::new();
    for number in 0..clients {
        let channel = channels[number % channels.len()].clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = histogram()?;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut sequence = 0_u64;
            let mut warm_up = 0_u64;
            while Instant::now() < stop {
                let sent = Instant::now();
                let answer = call(channel.clone(), number, sequence).await;
                sequence += 1;
                if sent < record_from {
                    warm_up += 1;
                    continue;
                }
                match answer {
                    Ok(()) => record(&mut latencies, sent.elapsed()),
                    Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                }
            }
            anyhow::Ok((latencies, errors, warm_up))
        }));
    }
    let mut latencies = histogram()?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut warm_up = 0;
    for task in tasks {
        let (client_latencies, client_errors, client_warm_up) = task.await??;
        warm_up += client_warm_up;
        latencies.add(&client_latencies)?;
        for (code, count) in client_errors {
            *errors.entry(code).or_default() += count;
        }
    }
    let error_count = errors.values().sum();
    if error_count > 0 {
        eprintln!("errors by code: {errors:?}");
    }
    Ok(Measured {
        sent: latencies.len() + error_count + warm_up,
        latencies,
        errors: error_count,
    })
}

/// CPU seconds (user + system) a process has used, from /proc; `None` where
/// there is no /proc or no such process.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks; USER_HZ is 100 on every mainstream build.
    Some((user + system) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_cpu_reading() {
        let mut spin = 0_u64;
        for step in 0..5_000_000_u64 {
            spin = spin.wrapping_add(step * step);
        }
        assert!(spin > 0);
        let used = cpu_seconds(std::process::id());
        assert!(matches!(used, Some(seconds) if seconds >= 0.0), "{used:?}");
    }
}
