//! The etcdctl walkthrough (`scripts/ctl-walkthrough.sh`) driven from tests:
//! one scripted session run with any etcdctl-compatible client against any
//! fresh etcd-compatible endpoint, giving a transcript in which only what
//! must differ between servers is replaced by placeholders. Comparing two
//! transcripts checks a client against etcdctl, or a server against etcd.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::RangeRequest;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{channel, eventually, free_port, tail_of};

/// How long a fresh etcd may take to elect itself and serve.
const ETCD_START_PATIENCE: Duration = Duration::from_secs(30);

/// The walkthrough script.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ctl-walkthrough.sh")
}

/// The HTTP/JSON walkthrough: curl against etcd's gateway paths.
pub fn http_script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/http-walkthrough.sh")
}

/// Runs the walkthrough with the client `ctl` against `endpoint`
/// (`host:port` of a store still at revision 1) and returns its transcript.
pub async fn run_walkthrough(ctl: &Path, endpoint: &str) -> Result<String> {
    run_script(&script_path(), endpoint, Some(ctl)).await
}

/// Runs the HTTP/JSON walkthrough against `endpoint` (`host:port` of a
/// store still at revision 1) and returns its transcript.
pub async fn run_http_walkthrough(endpoint: &str) -> Result<String> {
    run_script(&http_script_path(), endpoint, None).await
}

async fn run_script(script: &Path, endpoint: &str, ctl: Option<&Path>) -> Result<String> {
    let mut command = Command::new("bash");
    command
        .arg(script)
        .env("ENDPOINT", endpoint)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(ctl) = ctl {
        command.env("CTL", ctl);
    }
    // etcdctl reads ETCDCTL_* as flags, and refuses ones that clash with
    // the command line; the test's own must not leak in.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCDCTL_") {
            command.env_remove(key);
        }
    }
    let output = command
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} against {endpoint} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).context("the transcript is not UTF-8")
}

/// The reference transcript: Debian's etcdctl against a fresh real etcd.
pub async fn etcd_transcript() -> Result<String> {
    let etcdctl = etcdctl_path()?;
    let etcd = Etcd::start().await?;
    run_walkthrough(&etcdctl, &etcd.endpoint).await
}

/// Debian's etcdctl (package etcd-client), the reference client.
pub fn etcdctl_path() -> Result<PathBuf> {
    find_on_path("etcdctl").context("etcdctl not found; install Debian's etcd-client")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A real etcd cluster on loopback, with free ports and its data in a
/// temporary directory; killed when dropped.
pub struct Etcd {
    /// Where clients connect (the first member), `127.0.0.1:<port>`.
    pub endpoint: String,
    output: PathBuf,
    _children: Vec<Child>,
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
        let output = dir.path().join("etcd-0.log");
        let mut children = Vec::with_capacity(members);
        for (number, (client_url, peer_url)) in urls.iter().enumerate() {
            let log = std::fs::File::create(dir.path().join(format!("etcd-{number}.log")))?;
            let mut command = Command::new(&binary);
            command
                .arg(format!("--name=walkthrough-{number}"))
                .arg(format!(
                    "--data-dir={}",
                    dir.path().join(format!("data-{number}")).display()
                ))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={initial_cluster}"))
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
            children.push(command.spawn().context("starting etcd")?);
        }
        let Some((first_client_url, _)) = urls.first() else {
            bail!("an etcd cluster needs at least one member");
        };
        let endpoint = first_client_url.trim_start_matches("http://").to_owned();
        let etcd = Self {
            endpoint,
            output,
            _children: children,
            _dir: dir,
        };
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

    /// The last lines etcd logged, for failure messages.
    pub fn output_tail(&self, lines: usize) -> String {
        tail_of(&self.output, lines)
    }
}

/// A line diff of two transcripts (`-` only in `expected`, `+` only in
/// `actual`), with two lines of context around each change.
pub fn diff(expected: &str, actual: &str) -> String {
    const CONTEXT: usize = 2;
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut lines: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            lines.push((' ', old[i]));
            i += 1;
            j += 1;
        } else if i < old.len() && (j == new.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(('-', old[i]));
            i += 1;
        } else {
            lines.push(('+', new[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..lines.len())
        .filter(|&index| lines[index].0 != ' ')
        .collect();
    let mut out = String::new();
    let mut last_shown: Option<usize> = None;
    for (index, (mark, text)) in lines.iter().enumerate() {
        let near_change = changed
            .iter()
            .any(|&change| change.abs_diff(index) <= CONTEXT);
        if !near_change {
            continue;
        }
        if last_shown.is_some_and(|last| last + 1 < index) {
            out.push_str("...\n");
        }
        out.push_str(&format!("{mark} {text}\n"));
        last_shown = Some(index);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changes_with_context() {
        let expected = "a\nb\nc\nd\ne\nf\ng\n";
        let actual = "a\nb\nc\nD\ne\nf\ng\nh\n";
        assert_eq!(
            diff(expected, actual),
            "  b\n  c\n- d\n+ D\n  e\n  f\n  g\n+ h\n"
        );
        assert_eq!(diff("same\n", "same\n"), "");
    }
}
