//! Command-line clients as tests run them: Debian's etcdctl and cairnctl,
//! speaking etcd's v3 API, with none of the test's own `ETCDCTL_*` settings.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

/// How long a client may take before the test gives up on it.
const PATIENCE: Duration = Duration::from_secs(60);

/// What a client printed, and whether it succeeded.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program` with `args` to its end (within a minute).
pub async fn run_client(program: &Path, args: &[&str]) -> Result<Ran> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("ETCDCTL_") && key != "ETCDCTL_API" {
            command.env_remove(key);
        }
    }
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .with_context(|| format!("{} did not finish in time", program.display()))??;
    Ok(Ran {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Debian's etcdctl with `args`; what it printed, or an error saying so.
pub async fn etcdctl(args: &[&str]) -> Result<String> {
    let ran = run_client(&crate::walkthrough::etcdctl_path()?, args).await?;
    ensure!(
        ran.ok,
        "etcdctl {args:?} failed: {}{}",
        ran.stdout,
        ran.stderr
    );
    Ok(ran.stdout)
}
