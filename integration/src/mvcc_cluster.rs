//! Real `cairn-mvcc` replicas on a log cluster, and a real `nats-server`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_proto::cairn::mvcc::v1::mvcc_client::MvccClient;
use cairn_proto::cairn::mvcc::v1::{HashKvRequest, HashKvResponse};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::{bin_path, eventually, free_port};

/// A `nats-server` with JetStream, its store on disk so a restart keeps it.
pub struct NatsServer {
    pub url: String,
    port: u16,
    store: PathBuf,
    output: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts `nats-server` with JetStream on a free port, its files under `dir`.
    pub async fn start(dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let mut server = Self {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store: dir.join("nats-store"),
            output: dir.join("nats.log"),
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// Starts the server (again) on the same port and store.
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("nats-server is running");
        }
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output)?;
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (apt-get install nats-server)")?;
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(10), "nats-server to listen", || {
            let address = address.clone();
            async move { tokio::net::TcpStream::connect(address).await.ok() }
        })
        .await?;
        Ok(())
    }

    /// Deletes the server's store (while it is down): NATS losing everything.
    pub fn wipe(&self) -> Result<()> {
        if self.child.is_some() {
            bail!("nats-server is running");
        }
        if self.store.exists() {
            std::fs::remove_dir_all(&self.store)?;
        }
        Ok(())
    }

    /// Freezes the process with SIGSTOP: it keeps its connections and answers nothing.
    pub fn pause(&self) -> Result<()> {
        crate::signal_child(self.child.as_ref(), crate::Signal::STOP, "nats-server")
    }

    /// Lets a process frozen by `pause` run again (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        crate::signal_child(self.child.as_ref(), crate::Signal::CONT, "nats-server")
    }

    /// Kills the server with SIGKILL.
    pub async fn kill(&mut self) -> Result<()> {
        crate::kill_child(self.child.take(), "nats-server").await
    }
}

/// Starts one replica per name on the log at `log` and NATS at `nats_url`,
/// each with `extra` TOML in its settings, and waits until all serve.
pub async fn start_replicas(
    dir: &Path,
    names: &[&str],
    log: &[String],
    nats_url: &str,
    extra: &str,
) -> Result<Vec<MvccReplica>> {
    let each: Vec<(&str, &str)> = names.iter().map(|name| (*name, extra)).collect();
    start_replicas_each(dir, &each, log, nats_url).await
}

/// [`start_replicas`] with settings of its own for each replica: pairs of
/// name and extra TOML.
pub async fn start_replicas_each(
    dir: &Path,
    replicas_and_extras: &[(&str, &str)],
    log: &[String],
    nats_url: &str,
) -> Result<Vec<MvccReplica>> {
    let mut replicas = Vec::with_capacity(replicas_and_extras.len());
    for (name, extra) in replicas_and_extras {
        let mut replica = MvccReplica::configure_with(dir, name, log, nats_url, extra)?;
        replica.start()?;
        replicas.push(replica);
    }
    for replica in &replicas {
        replica.wait_applied(0, Duration::from_secs(20)).await?;
    }
    Ok(replicas)
}

/// One replica: its address, files and (while running) its process.
pub struct MvccReplica {
    pub name: String,
    pub addr: String,
    config: PathBuf,
    /// The settings as `configure_with` wrote them, before any `[seed]`.
    settings: String,
    data_dir: PathBuf,
    output: PathBuf,
    child: Option<Child>,
}

/// grpc.health.v1's request and answer, for asking a replica whether it serves.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheck {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthAnswer {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// grpc.health.v1's SERVING.
pub const HEALTH_SERVING: i32 = 1;
/// grpc.health.v1's NOT_SERVING.
pub const HEALTH_NOT_SERVING: i32 = 2;

impl MvccReplica {
    /// Writes the replica's settings under `dir`.
    pub fn configure(
        dir: &Path,
        name: &str,
        log_endpoints: &[String],
        nats_url: &str,
    ) -> Result<Self> {
        Self::configure_with(dir, name, log_endpoints, nats_url, "")
    }

    /// As `configure`, with `extra` TOML appended (e.g. a `[limits]` table).
    pub fn configure_with(
        dir: &Path,
        name: &str,
        log_endpoints: &[String],
        nats_url: &str,
        extra: &str,
    ) -> Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let config = dir.join(format!("{name}.toml"));
        let endpoints: Vec<String> = log_endpoints
            .iter()
            .map(|addr| format!("\"{addr}\""))
            .collect();
        let data_dir = dir.join(name);
        let text = format!(
            "[node]\nname = \"{name}\"\nlisten = \"{addr}\"\ndata_dir = \"{data}\"\nack_interval_ms = 200\n\n\
             [log]\nendpoints = [{endpoints}]\nrequest_timeout_ms = 5000\n\n\
             [nats]\nurl = \"{nats_url}\"\n\n\
             [telemetry]\nlog_filter = \"info\"\n\n{extra}",
            data = data_dir.display(),
            endpoints = endpoints.join(", "),
        );
        std::fs::write(&config, &text)?;
        Ok(Self {
            name: name.to_owned(),
            addr,
            config,
            settings: text,
            data_dir,
            output: dir.join(format!("{name}.log")),
            child: None,
        })
    }

    /// Sets the replicas this one copies its store from when the log has
    /// purged what it needs (`seed.replicas`; none unless set), keeping the
    /// rest of its settings. Applies from the next start; `extra` must not
    /// hold a `[seed]` table of its own.
    pub fn set_seed_replicas(&mut self, peers: &[String]) -> Result<()> {
        let peers: Vec<String> = peers.iter().map(|peer| format!("\"{peer}\"")).collect();
        let text = format!(
            "{}\n\n[seed]\nreplicas = [{}]\n",
            self.settings,
            peers.join(", ")
        );
        std::fs::write(&self.config, text)?;
        Ok(())
    }

    /// The replica's RocksDB directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the process was started and has not exited (or been killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// What the replica's gRPC health says of its KV service:
    /// [`HEALTH_SERVING`] or [`HEALTH_NOT_SERVING`].
    pub async fn health(&self) -> Result<i32> {
        let request = HealthCheck {
            service: "etcdserverpb.KV".into(),
        };
        let answer = crate::raw_grpc::unary(
            self.channel()?,
            "/grpc.health.v1.Health/Check",
            prost::Message::encode_to_vec(&request),
        )
        .await?;
        Ok(<HealthAnswer as prost::Message>::decode(answer.as_slice())?.status)
    }

    /// Starts the replica's process; an error if it is running.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is running", self.name);
        }
        let binary = bin_path("cairn-mvcc")?;
        self.child = Some(
            crate::spawn_service(&binary, &self.config, &self.output)
                .with_context(|| format!("starting {}", self.name))?,
        );
        Ok(())
    }

    /// Freezes the process with SIGSTOP: it keeps its connections and answers nothing.
    pub fn pause(&self) -> Result<()> {
        crate::signal_child(self.child.as_ref(), crate::Signal::STOP, &self.name)
    }

    /// Lets a process frozen by `pause` run again (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        crate::signal_child(self.child.as_ref(), crate::Signal::CONT, &self.name)
    }

    /// SIGKILL: no shutdown path runs.
    pub async fn kill(&mut self) -> Result<()> {
        crate::kill_child(self.child.take(), &self.name).await
    }

    /// A channel to the replica that connects on first use.
    pub fn channel(&self) -> Result<Channel> {
        crate::peer_channel(&self.addr)
    }

    /// An etcd KV client of the replica.
    pub fn kv(&self) -> Result<KvClient<Channel>> {
        Ok(KvClient::new(self.channel()?))
    }

    /// A client of the replica's internal Mvcc service.
    pub fn mvcc(&self) -> Result<MvccClient<Channel>> {
        Ok(MvccClient::new(self.channel()?))
    }

    /// The replica's HashKV at `revision`, to compare replicas.
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse> {
        Ok(self
            .mvcc()?
            .hash_kv(HashKvRequest { revision })
            .await?
            .into_inner())
    }

    /// Waits until the replica answers and has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, patience: Duration) -> Result<HashKvResponse> {
        eventually(
            patience,
            &format!("{} to apply {index}", self.name),
            || async {
                let status = self.hash_kv(0).await.ok()?;
                (status.applied_index >= index).then_some(status)
            },
        )
        .await
    }

    /// The last lines the replica printed, for failure messages.
    pub fn output_tail(&self, lines: usize) -> String {
        crate::tail_of(&self.output, lines)
    }
}
