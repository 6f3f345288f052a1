//! What leases cost the log, read from the active cairn-lease instance's
//! metrics: the checkpoint commands it writes while the leases sit idle and
//! while they are renewed.

use cairn_proto::contract::metrics;
use serde::Serialize;
use tokio::time::Instant;

use crate::prometheus::{scrape, value};

/// Log commands one lease instance wrote over a period: what the leases
/// cost the log, the figure that grows with the lease count.
#[derive(Debug, Serialize)]
pub(crate) struct Commands {
    pub seconds: f64,
    pub commands: f64,
    pub per_second: f64,
    /// Keep-alives the instance took over the period.
    pub keep_alives: f64,
}

/// The counters of the active instance read at one moment.
pub(crate) struct Reading {
    at: Instant,
    page: String,
}

impl Reading {
    pub(crate) fn counter(&self, name: &str) -> f64 {
        value(&self.page, name).unwrap_or(f64::NAN)
    }
}

/// The active lease instance's metrics page, found once and read around
/// each phase.
pub(crate) struct ActiveInstance {
    pub url: String,
}

impl ActiveInstance {
    /// The instance reporting `cairn_lease_active 1`, if any answers.
    pub(crate) async fn find(urls: &[String]) -> Option<Self> {
        for url in urls.iter().filter(|url| !url.is_empty()) {
            match scrape(url).await {
                Ok(page) if value(&page, metrics::LEASE_ACTIVE) == Some(1.0) => {
                    return Some(Self { url: url.clone() })
                }
                Ok(_) => {}
                Err(error) => eprintln!("{error:#}"),
            }
        }
        None
    }

    /// The counters now; `None` (and why, on stderr) if the instance cannot
    /// be read or is no longer active, so a takeover costs the checkpoint
    /// figures but not the rest of the run.
    pub(crate) async fn read(&self) -> Option<Reading> {
        match scrape(&self.url).await {
            Ok(page) if value(&page, metrics::LEASE_ACTIVE) == Some(1.0) => Some(Reading {
                at: Instant::now(),
                page,
            }),
            Ok(_) => {
                eprintln!("{} is no longer the active lease instance", self.url);
                None
            }
            Err(error) => {
                eprintln!("{error:#}");
                None
            }
        }
    }
}

/// The checkpoint commands and keep-alives between two readings.
pub(super) fn commands_between(before: &Reading, after: &Reading) -> Commands {
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let delta = |name| after.counter(name) - before.counter(name);
    let commands = delta(metrics::LEASE_CHECKPOINT_COMMANDS);
    Commands {
        seconds,
        commands,
        per_second: commands / seconds.max(f64::EPSILON),
        keep_alives: delta(metrics::LEASE_KEEP_ALIVES),
    }
}
