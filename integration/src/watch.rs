//! Real `cairn-watch` gateways on real replicas and NATS.

use std::path::Path;

use anyhow::Result;

use crate::edge::quoted;
use crate::service::Service;

/// Configures a watch gateway under `dir`; `node` is more lines of its
/// `[node]` table, `extra` TOML appended (e.g. a `[window]` table).
pub fn configure(
    dir: &Path,
    name: &str,
    mvcc: &[String],
    nats_url: &str,
    node: &str,
    extra: &str,
) -> Result<Service> {
    Service::configure(dir, name, "cairn-watch", |addr| {
        format!(
            "[node]\nlisten = \"{addr}\"\n{node}\n\n[mvcc]\nendpoints = [{mvcc}]\n\n\
             [nats]\nurl = \"{nats_url}\"\n\n[telemetry]\nlog_filter = \"info\"\n\n{extra}",
            mvcc = quoted(mvcc),
        )
    })
}
