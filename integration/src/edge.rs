//! A real `cairn-edge` in front of real replicas and log nodes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use tokio::process::Child;
use tonic::transport::Channel;

use crate::{bin_path, eventually, free_port};

/// The addresses of the services behind an edge.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    pub mvcc: Vec<String>,
    pub log: Vec<String>,
    pub lease: Vec<String>,
    pub watch: Vec<String>,
}

/// One edge: its address, files and (while running) its process.
pub struct Edge {
    pub addr: String,
    config: PathBuf,
    output: PathBuf,
    child: Option<Child>,
}

/// TOML's list of strings.
pub fn quoted(addrs: &[String]) -> String {
    addrs
        .iter()
        .map(|addr| format!("\"{addr}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Edge {
    /// Writes the edge's settings under `dir`: the given backends behind it,
    /// and `extra` TOML appended (e.g. a `[limits]` table).
    pub fn configure(dir: &Path, backends: &Backends, extra: &str) -> Result<Self> {
        Self::configure_named(dir, "edge", backends, extra)
    }

    /// [`Edge::configure`] for a second edge beside the first: its files are
    /// `<name>.toml` and `<name>.log`.
    pub fn configure_named(
        dir: &Path,
        name: &str,
        backends: &Backends,
        extra: &str,
    ) -> Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "[edge]\nlisten = \"{addr}\"\nadvertise_client_urls = [\"http://{addr}\"]\n\n\
             [backends]\nmvcc = [{mvcc}]\nlog = [{log}]\nlease = [{lease}]\nwatch = [{watch}]\n\
             discovery_interval_ms = 200\n\n\
             [telemetry]\nlog_filter = \"info\"\n\n{extra}",
            mvcc = quoted(&backends.mvcc),
            log = quoted(&backends.log),
            lease = quoted(&backends.lease),
            watch = quoted(&backends.watch),
        );
        std::fs::write(&config, text)?;
        Ok(Self {
            addr,
            config,
            output: dir.join(format!("{name}.log")),
            child: None,
        })
    }

    /// Starts the edge and waits until it accepts connections.
    pub async fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the edge is running");
        }
        let binary = bin_path("cairn-edge")?;
        self.child = Some(
            crate::spawn_service(&binary, &self.config, &self.output)
                .context("starting cairn-edge")?,
        );
        let addr = self.addr.clone();
        eventually(Duration::from_secs(10), "the edge to listen", || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.ok() }
        })
        .await
        .with_context(|| self.output_tail(20))?;
        Ok(())
    }

    /// Freezes the process with SIGSTOP: it keeps its connections and answers nothing.
    pub fn pause(&self) -> Result<()> {
        crate::signal_child(self.child.as_ref(), crate::Signal::STOP, "cairn-edge")
    }

    /// Lets a process frozen by `pause` run again (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        crate::signal_child(self.child.as_ref(), crate::Signal::CONT, "cairn-edge")
    }

    /// SIGKILL: no shutdown path runs.
    pub async fn kill(&mut self) -> Result<()> {
        crate::kill_child(self.child.take(), "cairn-edge").await
    }

    /// A channel to the edge that connects on first use.
    pub fn channel(&self) -> Result<Channel> {
        crate::channel(&self.addr)
    }

    /// An etcd KV client through the edge.
    pub fn kv(&self) -> Result<KvClient<Channel>> {
        Ok(KvClient::new(self.channel()?))
    }

    /// The last `lines` lines the edge printed, to explain a failure.
    pub fn output_tail(&self, lines: usize) -> String {
        crate::tail_of(&self.output, lines)
    }
}
