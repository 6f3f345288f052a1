//! A cluster of real `cairn-log` processes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_proto::cairn::log::v1::log_client::LogClient;
use cairn_proto::cairn::log::v1::{
    Entry, EntryKind, StatusRequest, StatusResponse, SubscribeRequest,
};
use tempfile::TempDir;
use tokio::process::Child;
use tonic::transport::Channel;

use crate::relay::Relay;
use crate::{bin_path, eventually, free_port};

/// Knobs a test may turn; the rest are the service defaults.
#[derive(Clone, Debug)]
pub struct LogClusterOptions {
    pub nodes: u64,
    pub request_timeout_ms: u64,
    pub snapshot_every: u64,
    pub retain_entries: u64,
    pub purge_interval_ms: u64,
    pub max_command_bytes: usize,
    /// The cluster token every node sends on raft messages; `None` gives the
    /// cluster one of its own (its directory's name), so two clusters of
    /// one test, or of tests running side by side, never take each other's.
    pub cluster_token: Option<String>,
    /// Whether peers and services reach each node through a [`Relay`] a test
    /// can cut or slow (the harness's own probes still reach it directly).
    pub relays: bool,
}

impl Default for LogClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            request_timeout_ms: 3000,
            snapshot_every: 10_000,
            retain_entries: 100_000,
            purge_interval_ms: 1000,
            max_command_bytes: 2 * 1024 * 1024,
            cluster_token: None,
            relays: false,
        }
    }
}

/// One node: its address, files and (while running) its process.
pub struct LogNode {
    pub id: u64,
    pub addr: String,
    config: PathBuf,
    output: PathBuf,
    child: Option<Child>,
}

/// A running cluster; dropping it kills every process and removes the files.
pub struct LogCluster {
    nodes: BTreeMap<u64, LogNode>,
    /// Per node, the relay its peers reach it through, when asked for.
    relays: BTreeMap<u64, Relay>,
    dir: TempDir,
    options: LogClusterOptions,
}

impl LogNode {
    /// Writes node `id`'s configuration file under `dir`.
    fn write(
        dir: &std::path::Path,
        id: u64,
        addr: &str,
        advertise: &str,
        bootstrap: bool,
        members: &[String],
        options: &LogClusterOptions,
    ) -> Result<Self> {
        let data = dir.join(format!("node-{id}"));
        let config = dir.join(format!("node-{id}.toml"));
        let text = format!(
            "[node]\nid = {id}\nlisten = \"{addr}\"\nadvertise = \"{advertise}\"\ndata_dir = \"{data}\"\n\n\
             [cluster]\nbootstrap = {bootstrap}\nmembers = [{members}]\ntoken = \"{token}\"\n\n\
             [raft]\nrequest_timeout_ms = {timeout}\nsnapshot_every = {snapshot}\n\
             retain_entries = {retain}\npurge_interval_ms = {purge}\nmax_command_bytes = {max}\n\n\
             [telemetry]\nlog_filter = \"info,openraft=warn\"\n",
            data = data.display(),
            members = members.join(", "),
            token = options.cluster_token.clone().unwrap_or_else(|| {
                dir.file_name()
                    .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
            }),
            timeout = options.request_timeout_ms,
            snapshot = options.snapshot_every,
            retain = options.retain_entries,
            purge = options.purge_interval_ms,
            max = options.max_command_bytes,
        );
        std::fs::write(&config, text)?;
        Ok(Self {
            id,
            addr: addr.to_owned(),
            config,
            output: dir.join(format!("node-{id}.log")),
            child: None,
        })
    }
}

impl LogCluster {
    /// Starts `options.nodes` nodes that bootstrap one cluster, and waits for a leader.
    pub async fn start(options: LogClusterOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-log-test")
            .tempdir()?;
        let mut addrs = BTreeMap::new();
        let mut relays = BTreeMap::new();
        for id in 1..=options.nodes {
            let addr = format!("127.0.0.1:{}", free_port()?);
            if options.relays {
                relays.insert(id, Relay::start(&addr).await?);
            }
            addrs.insert(id, addr);
        }
        // Peers know each node by its relay's address when there is one.
        let advertised = |id: u64, addr: &str| -> String {
            relays
                .get(&id)
                .map_or_else(|| addr.to_owned(), |relay: &Relay| relay.addr.clone())
        };
        let members: Vec<String> = addrs
            .iter()
            .map(|(id, addr)| format!("\"{id}={}\"", advertised(*id, addr)))
            .collect();
        let mut nodes = BTreeMap::new();
        for (id, addr) in &addrs {
            let advertise = advertised(*id, addr);
            let node = LogNode::write(dir.path(), *id, addr, &advertise, true, &members, &options)?;
            nodes.insert(*id, node);
        }
        let mut cluster = Self {
            nodes,
            relays,
            dir,
            options,
        };
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in &ids {
            cluster.start_node(*id)?;
        }
        let elected = cluster.wait_for_leader(&ids, Duration::from_secs(20)).await;
        crate::with_process_output(cluster.dir(), elected)?;
        Ok(cluster)
    }

    /// Starts a node `id` that is not a member yet and does not bootstrap; the
    /// caller adds it through the membership API.
    pub fn add_node(&mut self, id: u64) -> Result<()> {
        if self.nodes.contains_key(&id) {
            bail!("node {id} exists");
        }
        let addr = format!("127.0.0.1:{}", free_port()?);
        let node = LogNode::write(self.dir.path(), id, &addr, &addr, false, &[], &self.options)?;
        self.nodes.insert(id, node);
        self.start_node(id)
    }

    /// The relay node `id`'s peers reach it through, when the cluster has relays.
    pub fn relay(&self, id: u64) -> Result<&Relay> {
        self.relays
            .get(&id)
            .with_context(|| format!("node {id} has no relay"))
    }

    /// The ids of all nodes, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`'s address.
    pub fn addr(&self, id: u64) -> Result<&str> {
        Ok(&self.node(id)?.addr)
    }

    /// Every node's address, for the services that call the log: the one its
    /// peers know it by (its relay's, when it has one), as leader hints name it.
    pub fn addrs(&self) -> Result<Vec<String>> {
        self.ids()
            .iter()
            .map(|id| match self.relays.get(id) {
                Some(relay) => Ok(relay.addr.clone()),
                None => self.addr(*id).map(str::to_owned),
            })
            .collect()
    }

    fn node(&self, id: u64) -> Result<&LogNode> {
        self.nodes.get(&id).with_context(|| format!("no node {id}"))
    }

    /// Starts (or restarts, on the same data) node `id`.
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        let binary = bin_path("cairn-log")?;
        let node = self
            .nodes
            .get_mut(&id)
            .with_context(|| format!("no node {id}"))?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        node.child = Some(
            crate::spawn_service(&binary, &node.config, &node.output)
                .with_context(|| format!("starting node {id}"))?,
        );
        Ok(())
    }

    /// Kills node `id` with SIGKILL: no shutdown path runs, like a power cut
    /// for the process (the OS keeps what the process had written).
    pub async fn kill(&mut self, id: u64) -> Result<()> {
        let node = self
            .nodes
            .get_mut(&id)
            .with_context(|| format!("no node {id}"))?;
        crate::kill_child(node.child.take(), &format!("node {id}")).await
    }

    /// Stops node `id` with SIGTERM and waits for it to exit.
    pub async fn terminate(&mut self, id: u64) -> Result<std::process::ExitStatus> {
        let node = self
            .nodes
            .get_mut(&id)
            .with_context(|| format!("no node {id}"))?;
        let mut child = node
            .child
            .take()
            .with_context(|| format!("node {id} is not running"))?;
        crate::signal_child(Some(&child), crate::Signal::TERM, &format!("log node {id}"))?;
        Ok(tokio::time::timeout(Duration::from_secs(10), child.wait()).await??)
    }

    /// Freezes node `id` with SIGSTOP: it holds its connections but answers
    /// nothing, as a process stuck in a long pause would.
    pub fn pause(&self, id: u64) -> Result<()> {
        self.signal(id, crate::Signal::STOP)
    }

    /// Lets a node frozen by [`LogCluster::pause`] run again (SIGCONT).
    pub fn resume(&self, id: u64) -> Result<()> {
        self.signal(id, crate::Signal::CONT)
    }

    fn signal(&self, id: u64, signal: crate::Signal) -> Result<()> {
        crate::signal_child(
            self.node(id)?.child.as_ref(),
            signal,
            &format!("log node {id}"),
        )
    }

    /// Whether node `id`'s process was started and not killed.
    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|node| node.child.is_some())
    }

    /// A channel to node `id` that connects on first use.
    pub fn channel(&self, id: u64) -> Result<Channel> {
        crate::peer_channel(&self.node(id)?.addr)
    }

    /// A Log client of node `id`, with no message size limits.
    pub fn client(&self, id: u64) -> Result<LogClient<Channel>> {
        Ok(LogClient::new(self.channel(id)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// Node `id`'s Status, waiting at most a second.
    pub async fn status(&self, id: u64) -> Result<StatusResponse> {
        let mut client = self.client(id)?;
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(Duration::from_secs(1));
        Ok(client.status(request).await?.into_inner())
    }

    /// Waits until every node in `among` is up and agrees on one leader that is
    /// itself among them; returns its id.
    pub async fn wait_for_leader(&self, among: &[u64], patience: Duration) -> Result<u64> {
        eventually(patience, "an agreed leader", || async {
            let mut leaders = Vec::new();
            for id in among {
                leaders.push(self.status(*id).await.ok()?.leader);
            }
            let first = *leaders.first()?;
            (first != 0 && among.contains(&first) && leaders.iter().all(|leader| *leader == first))
                .then_some(first)
        })
        .await
    }

    /// Waits until node `id` has applied `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, patience: Duration) -> Result<()> {
        eventually(
            patience,
            &format!("node {id} to apply index {index}"),
            || async {
                let status = self.status(id).await.ok()?;
                (status.applied_index >= index).then_some(())
            },
        )
        .await
    }

    /// Node `id`'s committed entries from `from` through `through`, via Subscribe.
    pub async fn entries(&self, id: u64, from: u64, through: u64) -> Result<Vec<Entry>> {
        let mut client = self.client(id)?;
        let mut stream = client
            .subscribe(SubscribeRequest { from_index: from })
            .await?
            .into_inner();
        let mut entries: Vec<Entry> = Vec::new();
        let read = async {
            while entries.last().is_none_or(|entry| entry.index < through) {
                let Some(message) = stream.message().await? else {
                    bail!("node {id} ended the subscription early");
                };
                entries.extend(message.entries);
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .with_context(|| format!("reading node {id}'s log through {through}"))??;
        entries.retain(|entry| entry.index <= through);
        Ok(entries)
    }

    /// The client commands among `entries`, each with its position: the entry's
    /// index and the command's offset in it.
    pub fn commands(entries: &[Entry]) -> Vec<((u64, u32), Vec<u8>)> {
        entries
            .iter()
            .filter(|entry| entry.kind == EntryKind::Command as i32)
            .flat_map(|entry| {
                entry
                    .commands
                    .iter()
                    .enumerate()
                    .map(|(offset, command)| ((entry.index, offset as u32), command.to_vec()))
            })
            .collect()
    }

    /// The last lines a node printed, to explain a failure.
    pub fn output_tail(&self, id: u64, lines: usize) -> String {
        let Ok(node) = self.node(id) else {
            return String::new();
        };
        crate::tail_of(&node.output, lines)
    }

    /// The directory the nodes' data, configs and output are in.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `outcome`, with what every process under this cluster's directory
    /// printed last if it is a failure.
    pub fn explain<T>(&self, outcome: Result<T>) -> Result<T> {
        crate::with_process_output(self.dir(), outcome)
    }
}

impl Drop for LogCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}
