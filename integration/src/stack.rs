//! A whole cairn on loopback — log, NATS, mvcc replicas, lease instances,
//! watch gateways and the edge, each a real process — and the calls tests
//! make through its edge.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_proto::cairn::mvcc::v1::LeasesRequest;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
};
use tonic::transport::Channel;

use crate::edge::{Backends, Edge};
use crate::log_cluster::{LogCluster, LogClusterOptions};
use crate::mvcc_cluster::{MvccReplica, NatsServer};
use crate::service::Service;

/// The lease instances' checkpoint interval in a test stack.
pub const CHECKPOINT_MS: u64 = 500;
/// How long a standby waits before taking over, in a test stack.
pub const TAKEOVER_MS: u64 = 1500;

/// Everything the tests run on.
pub struct Stack {
    pub cluster: LogCluster,
    pub nats: NatsServer,
    pub replicas: Vec<MvccReplica>,
    pub leases: Vec<Service>,
    pub watches: Vec<Service>,
    pub edge: Edge,
    /// What the edge forwards to, for a second edge in front of the same services.
    pub backends: Backends,
    /// One whole stack at a time per test binary: a dozen processes each on
    /// two cores is all the machine has.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// Whose turn it is to run a whole stack.
static TURN: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(tokio::sync::Mutex::new(())));

/// What varies between the tests that use a whole stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// The body of each lease instance's `[lease]` table.
    pub lease_rules: String,
    pub watch_gateways: usize,
    /// More lines of each watch gateway's `[node]` table.
    pub watch_node: String,
    /// TOML appended to each watch gateway's settings (e.g. `[window]`).
    pub watch_extra: String,
    /// TOML appended to each mvcc replica's settings (e.g. `[testing]`).
    pub mvcc_extra: String,
    /// TOML appended to the second replica's settings instead of
    /// `mvcc_extra`, when set: one replica unlike the other.
    pub second_mvcc_extra: Option<String>,
    /// Whether the replicas list each other in `seed.replicas`, as deploy's
    /// do, so one can copy another's store (`mvcc_extra` must then hold no
    /// `[seed]` table).
    pub seed_each_other: bool,
    pub log: LogClusterOptions,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            lease_rules: format!(
                "checkpoint_interval_ms = {CHECKPOINT_MS}\ntakeover_after_ms = {TAKEOVER_MS}\nmin_ttl_secs = 1"
            ),
            watch_gateways: 2,
            watch_node: String::new(),
            watch_extra: String::new(),
            mvcc_extra: String::new(),
            second_mvcc_extra: None,
            seed_each_other: false,
            log: LogClusterOptions::default(),
        }
    }
}

/// Starts one replica per name, each listing all of them in `seed.replicas`,
/// and waits until all serve.
async fn seeding_each_other(
    dir: &std::path::Path,
    names: &[&str],
    log: &[String],
    nats_url: &str,
    extra: &str,
) -> Result<Vec<MvccReplica>> {
    let mut replicas = names
        .iter()
        .map(|name| MvccReplica::configure_with(dir, name, log, nats_url, extra))
        .collect::<Result<Vec<_>>>()?;
    let addrs: Vec<String> = replicas
        .iter()
        .map(|replica| replica.addr.clone())
        .collect();
    for replica in &mut replicas {
        replica.set_seed_replicas(&addrs)?;
        replica.start()?;
    }
    for replica in &replicas {
        replica.wait_applied(0, Duration::from_secs(20)).await?;
    }
    Ok(replicas)
}

impl Stack {
    /// The log nodes asked for (three by default), NATS, two mvcc replicas, two lease instances, the
    /// watch gateways asked for and an edge, all real processes on loopback;
    /// returns once a lease instance is active.
    pub async fn start(options: StackOptions) -> Result<Self> {
        let turn = TURN.clone().lock_owned().await;
        let cluster = LogCluster::start(options.log.clone()).await?;
        let log: Vec<String> = cluster.addrs()?;
        let nats = NatsServer::start(cluster.dir()).await?;
        let names = ["mvcc-1", "mvcc-2"];
        let replicas = if options.seed_each_other {
            seeding_each_other(cluster.dir(), &names, &log, &nats.url, &options.mvcc_extra).await?
        } else {
            let second = options.second_mvcc_extra.as_deref();
            let each = [
                (names[0], options.mvcc_extra.as_str()),
                (names[1], second.unwrap_or(&options.mvcc_extra)),
            ];
            crate::mvcc_cluster::start_replicas_each(cluster.dir(), &each, &log, &nats.url).await?
        };
        let mvcc: Vec<String> = replicas
            .iter()
            .map(|replica| replica.addr.clone())
            .collect();
        let mut leases = Vec::new();
        for name in ["lease-1", "lease-2"] {
            let mut instance =
                crate::lease::configure(cluster.dir(), name, &mvcc, &options.lease_rules)?;
            instance.start()?;
            leases.push(instance);
        }
        let mut watches = Vec::new();
        for number in 1..=options.watch_gateways {
            let mut gateway = crate::watch::configure(
                cluster.dir(),
                &format!("watch-{number}"),
                &mvcc,
                &nats.url,
                &options.watch_node,
                &options.watch_extra,
            )?;
            gateway.start()?;
            watches.push(gateway);
        }
        let backends = Backends {
            mvcc: mvcc.clone(),
            log,
            lease: leases.iter().map(|lease| lease.addr.clone()).collect(),
            watch: watches.iter().map(|watch| watch.addr.clone()).collect(),
        };
        let mut edge = Edge::configure(cluster.dir(), &backends, "")?;
        edge.start().await?;
        let stack = Self {
            cluster,
            nats,
            replicas,
            leases,
            watches,
            edge,
            backends,
            _turn: turn,
        };
        let ready = async {
            stack.holder(Duration::from_secs(20)).await?;
            // The holder serves once it has loaded the leases: until then a
            // call through the edge may still hear that none is active.
            crate::eventually(
                Duration::from_secs(20),
                "the lease service to answer",
                || {
                    let lease = stack.lease();
                    async move {
                        let request = LeaseTimeToLiveRequest { id: 1, keys: false };
                        lease.ok()?.lease_time_to_live(request).await.ok()
                    }
                },
            )
            .await
        }
        .await;
        crate::with_process_output(stack.cluster.dir(), ready)?;
        Ok(stack)
    }

    /// An etcd Lease client through the edge.
    pub fn lease(&self) -> Result<LeaseClient<Channel>> {
        Ok(LeaseClient::new(self.edge.channel()?))
    }

    /// The address of the instance holding the claim, once one does and runs.
    pub async fn holder(&self, patience: Duration) -> Result<String> {
        crate::eventually(patience, "an active lease instance", || async {
            let state = self.replicas[0]
                .mvcc()
                .ok()?
                .leases(LeasesRequest {})
                .await
                .ok()?
                .into_inner();
            let holder = state.holder?.holder;
            self.leases
                .iter()
                .any(|lease| lease.addr == holder && lease.is_running())
                .then_some(holder)
        })
        .await
    }

    /// SIGKILLs the instance holding the claim; returns its index in `leases`.
    pub async fn kill_holder(&mut self) -> Result<usize> {
        let holder = self.holder(Duration::from_secs(20)).await?;
        let index = self
            .leases
            .iter()
            .position(|lease| lease.addr == holder)
            .context("the holder is one of ours")?;
        self.leases[index].kill().await?;
        Ok(index)
    }

    /// Whether `key` exists now, read through the edge.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        let found = self
            .edge
            .kv()?
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(!found.kvs.is_empty())
    }

    /// Puts `key` (value `v`) under `lease` through the edge; returns the revision.
    pub async fn put(&self, key: &str, lease: i64) -> Result<i64> {
        let put = self
            .edge
            .kv()?
            .put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                lease,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(put.header.map_or(0, |header| header.revision))
    }

    /// Grants a lease of `ttl` seconds through the edge; returns its id.
    pub async fn grant(&self, ttl: i64) -> Result<i64> {
        Ok(self
            .lease()?
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await?
            .into_inner()
            .id)
    }

    /// One keep-alive on a fresh stream; the TTL it answered.
    pub async fn keep_alive(&self, id: i64) -> Result<i64> {
        let requests = tokio_stream::iter([LeaseKeepAliveRequest { id }]);
        let mut answers = self.lease()?.lease_keep_alive(requests).await?.into_inner();
        let answer = answers.message().await?.context("no keep-alive answer")?;
        Ok(answer.ttl)
    }

    /// Waits for `key` to vanish; the time it was first seen gone.
    pub async fn gone_at(&self, key: &str, patience: Duration) -> Result<Instant> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if !self.exists(key).await? {
                return Ok(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{key} still there after {patience:?}")
    }
}
