//! The etcdctl walkthrough (`scripts/ctl-walkthrough.sh`) driven from tests:
//! one scripted session run with any etcdctl-compatible client against any
//! fresh etcd-compatible endpoint, giving a transcript in which only what
//! must differ between servers is replaced by placeholders. Comparing two
//! transcripts checks a client against etcdctl, or a server against etcd.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use crate::etcd::Etcd;

/// The walkthrough script.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ctl-walkthrough.sh")
}

/// The HTTP/JSON walkthrough: curl against etcd's gateway paths.
pub fn http_script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/http-walkthrough.sh")
}

/// The auth walkthrough: users, roles, permissions and auth errors.
pub fn auth_script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/auth-walkthrough.sh")
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

/// Runs `script` against `endpoint`, with `ctl` as the client when it
/// takes one, and returns its transcript.
pub async fn run_script(script: &Path, endpoint: &str, ctl: Option<&Path>) -> Result<String> {
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

/// The first `name` on `PATH`, as a shell would find it.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
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
