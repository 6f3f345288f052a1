//! One cairn service process started from a config file written for it: its
//! address, files and (while running) its process.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokio::process::Child;

use crate::{bin_path, free_port};

/// A configured service; `start` runs it, `kill` SIGKILLs it.
pub struct Service {
    pub name: String,
    pub addr: String,
    binary: &'static str,
    config: PathBuf,
    output: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// Picks a free loopback address and writes `settings(addr)` as the
    /// service's config under `dir`.
    pub fn configure(
        dir: &Path,
        name: &str,
        binary: &'static str,
        settings: impl FnOnce(&str) -> String,
    ) -> Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, settings(&addr))?;
        Ok(Self {
            name: name.to_owned(),
            addr,
            binary,
            config,
            output: dir.join(format!("{name}.log")),
            child: None,
        })
    }

    /// Starts the process; an error if it is running.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is running", self.name);
        }
        let binary = bin_path(self.binary)?;
        self.child = Some(
            crate::spawn_service(&binary, &self.config, &self.output)
                .with_context(|| format!("starting {}", self.name))?,
        );
        Ok(())
    }

    /// The process id while it runs, to read its memory from /proc.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process was started and not killed.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
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

    /// The last lines the service printed, for failure messages.
    pub fn output_tail(&self, lines: usize) -> String {
        crate::tail_of(&self.output, lines)
    }
}
