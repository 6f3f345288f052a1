//! A real etcd cluster on loopback — the reference cairn is compared with —
//! whose members a test can kill, restart, pause and resume.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{RangeRequest, StatusRequest};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::walkthrough::find_on_path;
use crate::{channel, eventually, free_port, tail_of};

/// How long a fresh etcd may take to elect itself and serve.
const ETCD_START_PATIENCE: Duration = Duration::from_secs(30);

/// One member: how to start it again, and its process while it runs.
struct Member {
    /// `127.0.0.1:<port>` where clients reach this member.
    endpoint: String,
    command: Vec<String>,
    output: PathBuf,
    child: Option<Child>,
}

/// A real etcd cluster with free ports and its data in a temporary
/// directory; killed when dropped.
pub struct Etcd {
    /// Where clients connect (the first member), `127.0.0.1:<port>`.
    pub endpoint: String,
    binary: PathBuf,
    members: Vec<Member>,
    _dir: TempDir,
}

impl Etcd {
    /// One member, as the walkthrough's reference for clients.
    pub async fn start() -> Result<Self> {
        Self::start_cluster(1).await
    }

    /// `members` members, e.g. three to compare with a cairn cluster whose
    /// log has three nodes. Returns once a linearizable read succeeds, which
    /// needs a leader.
    pub async fn start_cluster(members: usize) -> Result<Self> {
        let binary =
            find_on_path("etcd").context("etcd not found; install Debian's etcd-server")?;
        let dir = tempfile::tempdir()?;
        let mut urls = Vec::with_capacity(members);
        for _ in 0..members {
            urls.push((
                format!("http://127.0.0.1:{}", free_port()?),
                format!("http://127.0.0.1:{}", free_port()?),
            ));
        }
        let initial_cluster = urls
            .iter()
            .enumerate()
            .map(|(number, (_, peer_url))| format!("walkthrough-{number}={peer_url}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut started = Vec::with_capacity(members);
        for (number, (client_url, peer_url)) in urls.iter().enumerate() {
            let data = dir.path().join(format!("data-{number}"));
            started.push(Member {
                endpoint: client_url.trim_start_matches("http://").to_owned(),
                command: vec![
                    format!("--name=walkthrough-{number}"),
                    format!("--data-dir={}", data.display()),
                    format!("--listen-client-urls={client_url}"),
                    format!("--advertise-client-urls={client_url}"),
                    format!("--listen-peer-urls={peer_url}"),
                    format!("--initial-advertise-peer-urls={peer_url}"),
                    format!("--initial-cluster={initial_cluster}"),
                ],
                output: dir.path().join(format!("etcd-{number}.log")),
                child: None,
            });
        }
        let Some(first) = started.first() else {
            bail!("an etcd cluster needs at least one member");
        };
        let mut etcd = Self {
            endpoint: first.endpoint.clone(),
            binary,
            members: started,
            _dir: dir,
        };
        for number in 0..members {
            etcd.restart(number)?;
        }
        let kv = KvClient::new(channel(&etcd.endpoint)?);
        let ready = eventually(ETCD_START_PATIENCE, "etcd to serve reads", || {
            let mut kv = kv.clone();
            async move {
                let request = RangeRequest {
                    key: b"walkthrough-ready".to_vec(),
                    ..RangeRequest::default()
                };
                kv.range(request).await.ok()
            }
        })
        .await;
        if let Err(error) = ready {
            bail!("{error}; etcd's log ends with:\n{}", etcd.output_tail(20));
        }
        Ok(etcd)
    }

    /// One member on an existing data directory, e.g. what `etcdctl snapshot
    /// restore --name <name> --initial-cluster <name>=<peer_url>
    /// --initial-advertise-peer-urls <peer_url>` wrote, serving clients on a
    /// free port. Returns once a linearizable read succeeds.
    pub async fn start_on(data_dir: &std::path::Path, name: &str, peer_url: &str) -> Result<Self> {
        let binary =
            find_on_path("etcd").context("etcd not found; install Debian's etcd-server")?;
        let dir = tempfile::tempdir()?;
        let client_url = format!("http://127.0.0.1:{}", free_port()?);
        let member = Member {
            endpoint: client_url.trim_start_matches("http://").to_owned(),
            command: vec![
                format!("--name={name}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={name}={peer_url}"),
            ],
            output: dir.path().join("etcd-0.log"),
            child: None,
        };
        let mut etcd = Self {
            endpoint: member.endpoint.clone(),
            binary,
            members: vec![member],
            _dir: dir,
        };
        etcd.restart(0)?;
        let kv = KvClient::new(channel(&etcd.endpoint)?);
        let ready = eventually(ETCD_START_PATIENCE, "etcd to serve reads", || {
            let mut kv = kv.clone();
            let request = RangeRequest {
                key: b"restored-ready".to_vec(),
                ..RangeRequest::default()
            };
            async move { kv.range(request).await.ok() }
        })
        .await;
        if let Err(error) = ready {
            bail!("{error}; etcd's log ends with:\n{}", etcd.output_tail(20));
        }
        Ok(etcd)
    }

    /// Every member's client endpoint, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.endpoint.clone())
            .collect()
    }

    /// Starts member `number` (again) on its ports and data.
    pub fn restart(&mut self, number: usize) -> Result<()> {
        let member = self.member(number)?;
        if member.child.is_some() {
            bail!("etcd member {number} is running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.output)?;
        let mut command = Command::new(&self.binary);
        command
            .args(&member.command)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // etcd reads ETCD_* as flags; the test's own must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        let child = command.spawn().context("starting etcd")?;
        self.members[number].child = Some(child);
        Ok(())
    }

    /// SIGKILLs member `number`.
    pub async fn kill(&mut self, number: usize) -> Result<()> {
        self.member(number)?;
        crate::kill_child(self.members[number].child.take(), "etcd").await
    }

    /// Freezes member `number` with SIGSTOP.
    pub fn pause(&self, number: usize) -> Result<()> {
        crate::signal_child(
            self.member(number)?.child.as_ref(),
            crate::Signal::STOP,
            "etcd",
        )
    }

    /// Lets member `number` run again after [`Etcd::pause`].
    pub fn resume(&self, number: usize) -> Result<()> {
        crate::signal_child(
            self.member(number)?.child.as_ref(),
            crate::Signal::CONT,
            "etcd",
        )
    }

    /// The member that says it leads, asked of every running member.
    pub async fn leader(&self) -> Option<usize> {
        for member in self.members.iter().filter(|member| member.child.is_some()) {
            let Ok(channel) = channel(&member.endpoint) else {
                continue;
            };
            let mut request = tonic::Request::new(StatusRequest {});
            request.set_timeout(Duration::from_secs(1));
            let Ok(status) = MaintenanceClient::new(channel).status(request).await else {
                continue;
            };
            let status = status.into_inner();
            let me = status.header.map_or(0, |header| header.member_id);
            if status.leader != 0 && status.leader == me {
                return self
                    .members
                    .iter()
                    .position(|candidate| candidate.endpoint == member.endpoint);
            }
        }
        None
    }

    /// How many members there are, running or not.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The last lines the first member logged, for failure messages.
    pub fn output_tail(&self, lines: usize) -> String {
        self.members
            .first()
            .map(|member| tail_of(&member.output, lines))
            .unwrap_or_default()
    }

    fn member(&self, number: usize) -> Result<&Member> {
        self.members
            .get(number)
            .with_context(|| format!("etcd has no member {number}"))
    }
}
