//! Real `cairn-watch` gateways on real replicas and NATS.

use std::path::Path;

use anyhow::Result;

use crate::edge::quoted;
use crate::service::Service;

/// Configures a watch gateway under `dir`; `extra` is TOML appended (e.g.
/// a `[window]` table).
pub fn configure(
    dir: &Path,
    name: &str,
    mvcc: &[String],
    nats_url: &str,
    extra: &str,
) -> Result<Service> {
    Service::configure(dir, name, "cairn-watch", |addr| {
        format!(
            "[node]\nlisten = \"{addr}\"\n\n[mvcc]\nendpoints = [{mvcc}]\n\n\
             [nats]\nurl = \"{nats_url}\"\n\n[telemetry]\nlog_filter = \"info\"\n\n{extra}",
            mvcc = quoted(mvcc),
        )
    })
}
