//! The replicas of one service behind the edge: found by re-resolving names,
//! chosen by the power of two choices on calls in progress, and passed over
//! for a while after refusing a connection.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_kit::shutdown::ShutdownWatch;
use parking_lot::{Mutex, RwLock};
use rand::seq::IndexedRandom;
use tonic::transport::Channel;

use crate::metrics::EDGE_METRICS;
use crate::tunnel::{tunnel, Tunnel};

/// Bytes a backend may send on one stream before the edge acknowledges them.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;

/// The largest HTTP/2 frame a backend may send the edge. A watch gateway's
/// events and a large range come in frames up to this large instead of
/// HTTP/2's 16 KiB default, so the backend writes and the edge reads them in
/// fewer, larger system calls; the edge re-frames them at each client's own
/// limit.
const MAX_FRAME: u32 = 256 * 1024;

/// One address of a service, with its connection.
pub(crate) struct Backend {
    pub addr: SocketAddr,
    pub channel: Channel,
    /// Unary KV calls as messages on shared streams (replicas only).
    pub tunnel: Tunnel,
    in_flight: AtomicUsize,
    down_until: Mutex<Option<Instant>>,
}

/// A call in progress on a backend; dropping it ends the call's count.
pub(crate) struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Backend {
    /// A backend at `addr`, which `host` (a configured name) resolved to.
    fn new(
        addr: SocketAddr,
        host: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<Self, cairn_kit::KitError> {
        let channel = cairn_kit::tls::peer_endpoint(&addr.to_string(), host)?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            // Many calls' answers share a stream: a small window would make
            // a large answer wait for a window update every 64 KiB.
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(2 * STREAM_WINDOW))
            .max_frame_size(Some(MAX_FRAME))
            .connect_lazy();
        Ok(Self {
            addr,
            tunnel: tunnel(channel.clone()),
            channel,
            in_flight: AtomicUsize::new(0),
            down_until: Mutex::new(None),
        })
    }

    /// Counts a call until the returned guard is dropped.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn is_down(&self, now: Instant) -> bool {
        matches!(*self.down_until.lock(), Some(until) if until > now)
    }

    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Every backend of one service.
pub(crate) struct BackendPool {
    service: &'static str,
    names: Vec<String>,
    /// The addresses each name last resolved to: a name that fails to resolve
    /// keeps them, a name that resolves to fewer drops the rest.
    resolved: Mutex<BTreeMap<String, BTreeSet<SocketAddr>>>,
    backends: RwLock<Arc<Vec<Arc<Backend>>>>,
    down_backoff: Duration,
    connect_timeout: Duration,
}

impl BackendPool {
    pub(crate) fn new(
        service: &'static str,
        names: &[String],
        down_backoff: Duration,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            service,
            names: names.to_vec(),
            resolved: Mutex::new(BTreeMap::new()),
            backends: RwLock::new(Arc::new(Vec::new())),
            down_backoff,
            connect_timeout,
        })
    }

    pub(crate) fn service(&self) -> &'static str {
        self.service
    }

    /// Whether the service is configured at all.
    pub(crate) fn is_configured(&self) -> bool {
        !self.names.is_empty()
    }

    pub(crate) fn backends(&self) -> Arc<Vec<Arc<Backend>>> {
        self.backends.read().clone()
    }

    /// Resolves every name once more and makes the backends match.
    pub(crate) async fn refresh(&self) {
        for name in &self.names {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(addrs) => {
                    let addrs: BTreeSet<SocketAddr> = addrs.collect();
                    self.resolved.lock().insert(name.clone(), addrs);
                }
                Err(error) => {
                    tracing::debug!(service = self.service, name, %error, "cannot resolve; keeping its last addresses");
                }
            }
        }
        // Each address with the host of the name it came from: the name a
        // backend's certificate carries when internal TLS is on.
        let named: BTreeMap<SocketAddr, String> = self
            .resolved
            .lock()
            .iter()
            .flat_map(|(name, addrs)| {
                let host = host_of(name).to_owned();
                addrs.iter().map(move |addr| (*addr, host.clone()))
            })
            .collect();
        let wanted: BTreeSet<SocketAddr> = named.keys().copied().collect();
        let current = self.backends();
        let unchanged = current.len() == wanted.len()
            && current.iter().all(|backend| wanted.contains(&backend.addr));
        if unchanged {
            return;
        }
        let next: Vec<Arc<Backend>> = wanted
            .iter()
            .filter_map(|addr| {
                if let Some(known) = current.iter().find(|backend| backend.addr == *addr) {
                    return Some(known.clone());
                }
                let host = named.get(addr).map(String::as_str);
                match Backend::new(*addr, host, self.connect_timeout) {
                    Ok(backend) => Some(Arc::new(backend)),
                    Err(error) => {
                        tracing::warn!(service = self.service, %addr, %error, "cannot use this address");
                        None
                    }
                }
            })
            .collect();
        tracing::info!(
            service = self.service,
            backends = ?wanted,
            "backends changed"
        );
        EDGE_METRICS
            .backends
            .with_label_values(&[self.service])
            .set(next.len() as i64);
        *self.backends.write() = Arc::new(next);
    }

    /// Re-resolves the names every `interval` until shutdown.
    pub(crate) fn spawn_discovery(
        self: &Arc<Self>,
        interval: Duration,
        mut shutdown: ShutdownWatch,
    ) {
        let pool = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => pool.refresh().await,
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }

    /// A backend for the next call: of two random ones not yet `tried` and not
    /// passed over, the one with fewer calls in progress. `None` when every
    /// backend was tried or is down, so the caller fails at once.
    pub(crate) fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Backend>> {
        let now = Instant::now();
        let backends = self.backends();
        let candidates: Vec<&Arc<Backend>> = backends
            .iter()
            .filter(|backend| !tried.contains(&backend.addr) && !backend.is_down(now))
            .collect();
        let mut rng = rand::rng();
        let two: Vec<&&Arc<Backend>> = candidates.sample(&mut rng, 2).collect();
        two.into_iter()
            .min_by_key(|backend| backend.load())
            .map(|backend| (*backend).clone())
    }

    /// Passes `backend` over for the backoff: it refused or dropped a connection.
    pub(crate) fn mark_down(&self, backend: &Backend) {
        *backend.down_until.lock() = Some(Instant::now() + self.down_backoff);
        EDGE_METRICS
            .backend_failures
            .with_label_values(&[self.service])
            .inc();
        tracing::warn!(service = self.service, addr = %backend.addr, "backend unreachable; passing it over");
    }
}

/// The host part of a `host:port` name (brackets kept off an IPv6 address).
fn host_of(name: &str) -> &str {
    let host = name.rsplit_once(':').map_or(name, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_is_known_by_the_host_of_the_name_it_was_resolved_from() {
        assert_eq!(host_of("watch:7301"), "watch");
        assert_eq!(host_of("127.0.0.1:7101"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7101"), "::1");
        assert_eq!(host_of("mvcc"), "mvcc");
    }

    fn pool_of(addrs: &[&str]) -> Arc<BackendPool> {
        let names: Vec<String> = addrs.iter().map(|addr| (*addr).to_owned()).collect();
        BackendPool::new(
            "test",
            &names,
            Duration::from_secs(60),
            Duration::from_millis(100),
        )
    }

    #[tokio::test]
    async fn names_resolve_to_backends_and_a_down_or_tried_one_is_passed_over() {
        let pool = pool_of(&["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(pool.pick(&[]).is_none(), "nothing resolved yet");
        pool.refresh().await;
        assert_eq!(pool.backends().len(), 2);
        let first = pool.pick(&[]).expect("a backend");
        let other = pool.pick(&[first.addr]).expect("the other backend");
        assert_ne!(first.addr, other.addr);
        assert!(pool.pick(&[first.addr, other.addr]).is_none());
        pool.mark_down(&first);
        for _ in 0..20 {
            assert_eq!(pool.pick(&[]).map(|backend| backend.addr), Some(other.addr));
        }
        pool.mark_down(&other);
        assert!(pool.pick(&[]).is_none(), "every backend is down");
    }

    #[tokio::test]
    async fn the_less_busy_of_two_is_chosen() {
        let pool = pool_of(&["127.0.0.1:1", "127.0.0.1:2"]);
        pool.refresh().await;
        let busy = pool.pick(&[]).expect("a backend");
        let _calls: Vec<InFlight> = (0..3).map(|_| busy.start()).collect();
        for _ in 0..20 {
            let chosen = pool.pick(&[]).expect("a backend");
            assert_ne!(chosen.addr, busy.addr);
        }
    }

    #[tokio::test]
    async fn an_unresolvable_name_keeps_its_last_addresses() {
        let pool = pool_of(&["127.0.0.1:1", "no-such-host.invalid:1"]);
        pool.refresh().await;
        assert_eq!(pool.backends().len(), 1);
    }
}
