//! Real `cairn-lease` instances in front of real mvcc replicas.

use std::path::Path;

use anyhow::Result;

use crate::edge::quoted;
use crate::service::Service;

/// Configures a lease instance under `dir`; `rules` is the body of its
/// `[lease]` table (e.g. `checkpoint_interval_ms = 500`).
pub(crate) fn configure(dir: &Path, name: &str, mvcc: &[String], rules: &str) -> Result<Service> {
    Service::configure(dir, name, "cairn-lease", |addr| {
        format!(
            "[node]\nlisten = \"{addr}\"\n\n[mvcc]\nendpoints = [{mvcc}]\n\n\
             [lease]\n{rules}\n\n[telemetry]\nlog_filter = \"info\"\n",
            mvcc = quoted(mvcc),
        )
    })
}
