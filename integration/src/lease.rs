//! Real `cairn-lease` instances in front of real mvcc replicas.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokio::process::Child;

use crate::edge::quoted;
use crate::{bin_path, free_port};

/// One lease instance: its address, files and (while running) its process.
pub struct LeaseInstance {
    pub name: String,
    pub addr: String,
    config: PathBuf,
    output: PathBuf,
    child: Option<Child>,
}

impl LeaseInstance {
    /// Writes the instance's settings under `dir`; `rules` is the body of its
    /// `[lease]` table (e.g. `checkpoint_interval_ms = 500`).
    pub fn configure(dir: &Path, name: &str, mvcc: &[String], rules: &str) -> Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "[node]\nlisten = \"{addr}\"\n\n[mvcc]\nendpoints = [{mvcc}]\n\n\
             [lease]\n{rules}\n\n[telemetry]\nlog_filter = \"info\"\n",
            mvcc = quoted(mvcc),
        );
        std::fs::write(&config, text)?;
        Ok(Self {
            name: name.to_owned(),
            addr,
            config,
            output: dir.join(format!("{name}.log")),
            child: None,
        })
    }

    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is running", self.name);
        }
        let binary = bin_path("cairn-lease")?;
        self.child = Some(
            crate::spawn_service(&binary, &self.config, &self.output)
                .with_context(|| format!("starting {}", self.name))?,
        );
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: no shutdown path runs.
    pub async fn kill(&mut self) -> Result<()> {
        crate::kill_child(self.child.take(), &self.name).await
    }

    pub fn output_tail(&self, lines: usize) -> String {
        crate::tail_of(&self.output, lines)
    }
}
