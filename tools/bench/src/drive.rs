//! The load loop every workload shares: N clients over a few shared HTTP/2
//! connections, each sending its next request as soon as the last is answered;
//! latencies after a warm-up are recorded, failures counted by gRPC code.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Status;

use crate::report::{histogram, record};

/// Connections the clients share round-robin unless a workload says
/// otherwise: a few connections spread the load over the server's threads as
/// real clients do.
pub(crate) const MAX_CONNECTIONS: usize = 8;
/// Not recorded: connections warm up, batches settle.
pub(crate) const WARM_UP: Duration = Duration::from_secs(1);
/// A request unanswered this long counts as failed, so a stalled server
/// ends the run late rather than never.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for every connection when `--cacert` is given: what measures the
/// cost of an edge serving TLS.
static TLS: std::sync::OnceLock<ClientTlsConfig> = std::sync::OnceLock::new();

/// Makes every connection TLS, trusting `ca` and showing `identity` (a
/// certificate and its key) when given.
pub(crate) fn use_tls(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<()> {
    let tls = cairn_kit::tls::client_config(ca, identity)?;
    TLS.set(tls).map_err(|_| anyhow::anyhow!("TLS is set once"))
}

/// The user every call authenticates as, when `--user` is given: what
/// measures the cost of auth.
static USER: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// The token each endpoint gave `USER`, asked for once per endpoint.
static TOKENS: std::sync::LazyLock<
    tokio::sync::Mutex<std::collections::HashMap<String, http::HeaderValue>>,
> = std::sync::LazyLock::new(Default::default);

/// Makes every call carry a token for `user` (`name:password`), from each
/// endpoint's Authenticate.
pub(crate) fn use_user(user: &str) -> anyhow::Result<()> {
    let (name, password) = user
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--user takes name:password"))?;
    USER.set((name.to_owned(), password.to_owned()))
        .map_err(|_| anyhow::anyhow!("the user is set once"))
}

/// One HTTP/2 connection to an etcd v3 endpoint: plaintext, or TLS after
/// [`use_tls`]; every call on it carries a token after [`use_user`].
pub(crate) async fn connect(endpoint: &str) -> anyhow::Result<Conn> {
    let channel = channel(endpoint).await?;
    let token = match USER.get() {
        None => None,
        Some((name, password)) => Some(token_for(endpoint, &channel, name, password).await?),
    };
    Ok(Conn { channel, token })
}

async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    let endpoint = match TLS.get() {
        None => Endpoint::from_shared(format!("http://{endpoint}"))?,
        Some(tls) => {
            Endpoint::from_shared(format!("https://{endpoint}"))?.tls_config(tls.clone())?
        }
    };
    Ok(endpoint
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await?)
}

async fn token_for(
    endpoint: &str,
    channel: &Channel,
    name: &str,
    password: &str,
) -> anyhow::Result<http::HeaderValue> {
    let mut tokens = TOKENS.lock().await;
    if let Some(token) = tokens.get(endpoint) {
        return Ok(token.clone());
    }
    let answer = cairn_proto::etcdserverpb::auth_client::AuthClient::new(channel.clone())
        .authenticate(cairn_proto::etcdserverpb::AuthenticateRequest {
            name: name.to_owned(),
            password: password.to_owned(),
        })
        .await?
        .into_inner();
    let token = http::HeaderValue::from_str(&answer.token)?;
    tokens.insert(endpoint.to_owned(), token.clone());
    Ok(token)
}

/// A connection whose calls carry the token of `--user`, if any.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    channel: Channel,
    token: Option<http::HeaderValue>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Conn {
    type Response = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Error;
    type Future = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert(cairn_proto::contract::metadata::TOKEN, token.clone());
        }
        self.channel.call(request)
    }
}

/// How one answered request ended, for workloads where an answer can say no
/// (a transaction whose compare failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    /// Answered, but the request's condition did not hold.
    Conflict,
}

/// What a run of clients measured.
pub(crate) struct Measured {
    /// Every answered request after the warm-up, conflicts included.
    pub latencies: Histogram<u64>,
    pub errors: u64,
    /// Answered requests after the warm-up whose condition did not hold.
    pub conflicts: u64,
    /// Every request sent, the warm-up's included.
    pub sent: u64,
}

/// Where and how hard a run of clients pushes.
#[derive(Clone, Debug)]
pub(crate) struct Load {
    pub endpoint: String,
    pub clients: usize,
    /// Connections shared round-robin by the clients (at most one each).
    pub connections: usize,
    /// Recorded time, after the warm-up.
    pub duration: Duration,
}

/// Runs the load's clients for the warm-up plus its duration.
/// `call(channel, client, sequence)` sends one request.
pub(crate) async fn drive<F, Fut>(load: &Load, call: F) -> anyhow::Result<Measured>
where
    F: Fn(Conn, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Outcome, Status>> + Send,
{
    anyhow::ensure!(
        load.clients > 0 && load.connections > 0,
        "clients and connections must be positive"
    );
    let mut channels = Vec::new();
    for _ in 0..load.clients.min(load.connections) {
        channels.push(connect(&load.endpoint).await?);
    }
    drive_over(load, channels, call).await
}

/// [`drive`] over connections of any kind (`channels`, shared round-robin
/// by the clients), e.g. HTTP/1.1 clients for etcd's JSON gateway.
pub(crate) async fn drive_over<C, F, Fut>(
    load: &Load,
    channels: Vec<C>,
    call: F,
) -> anyhow::Result<Measured>
where
    C: Clone + Send + 'static,
    F: Fn(C, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Outcome, Status>> + Send,
{
    anyhow::ensure!(!channels.is_empty(), "no connections to drive");
    let record_from = Instant::now() + WARM_UP;
    let stop = record_from + load.duration;
    let mut tasks = Vec::new();
    for number in 0..load.clients {
        let channel = channels[number % channels.len()].clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = histogram()?;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut sequence = 0_u64;
            let mut warm_up = 0_u64;
            let mut conflicts = 0_u64;
            while Instant::now() < stop {
                let sent = Instant::now();
                let answer =
                    tokio::time::timeout(CALL_TIMEOUT, call(channel.clone(), number, sequence))
                        .await
                        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")));
                sequence += 1;
                if sent < record_from {
                    warm_up += 1;
                    continue;
                }
                match answer {
                    Ok(outcome) => {
                        record(&mut latencies, sent.elapsed());
                        conflicts += u64::from(outcome == Outcome::Conflict);
                    }
                    Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                }
            }
            anyhow::Ok((latencies, errors, warm_up, conflicts))
        }));
    }
    let mut latencies = histogram()?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut warm_up = 0;
    let mut conflicts = 0;
    for task in tasks {
        let (client_latencies, client_errors, client_warm_up, client_conflicts) = task.await??;
        warm_up += client_warm_up;
        conflicts += client_conflicts;
        latencies.add(&client_latencies)?;
        for (code, count) in client_errors {
            *errors.entry(code).or_default() += count;
        }
    }
    let error_count = errors.values().sum();
    if error_count > 0 {
        eprintln!("{}: errors by code: {errors:?}", load.endpoint);
    }
    Ok(Measured {
        sent: latencies.len() + error_count + warm_up,
        latencies,
        errors: error_count,
        conflicts,
    })
}
