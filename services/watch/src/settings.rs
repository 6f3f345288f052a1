//! cairn-watch's settings: `configs/watch.toml`, `--config FILE`, `CAIRN_<SECTION>__<KEY>`.

use cairn_kit::metrics::MetricsSettings;
use cairn_kit::settings::{NatsSettings, ReplicaPeers};
use cairn_kit::telemetry::TelemetrySettings;
use cairn_kit::tls::InternalTlsSettings;
use serde::{Deserialize, Serialize};

use crate::error::WatchError;

/// Everything a gateway needs to start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchSettings {
    pub node: NodeSettings,
    /// The replicas that serve history (catch-up, gaps) and the current revision.
    pub mvcc: ReplicaPeers,
    /// The revision stream the replicas publish.
    pub nats: NatsSettings,
    pub window: WindowSettings,
    /// TLS among cairn's services (off unless its files are set).
    pub internal_tls: InternalTlsSettings,
    pub metrics: MetricsSettings,
    pub telemetry: TelemetrySettings,
}

/// Where the gateway listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// etcd's Watch service and gRPC health.
    pub listen: String,
    /// etcd's cluster_id in response headers.
    pub cluster_id: u64,
    /// How often a watcher created with progress_notify hears the revision
    /// it has caught up to, when it had no events (etcd: 10 minutes).
    pub progress_interval_ms: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7301".to_owned(),
            cluster_id: 0x6361_6972_6e00_0001,
            progress_interval_ms: 600_000,
        }
    }
}

/// What the gateway keeps in memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowSettings {
    /// Recent revisions kept for watchers to read; one further behind is
    /// caught up from a replica's history instead.
    pub revisions: usize,
    /// Responses queued for one client stream (and at most 64 KiB of them);
    /// a stream whose client reads slower than this waits, and its watchers
    /// catch up later.
    pub stream_queue: usize,
}

impl Default for WindowSettings {
    fn default() -> Self {
        Self {
            revisions: 10_000,
            stream_queue: 256,
        }
    }
}

impl WatchSettings {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), WatchError> {
        let fail = |message: &str| Err(WatchError::Settings(message.to_owned()));
        self.internal_tls
            .validate("setting `internal_tls`")
            .map_err(|error| WatchError::Settings(error.to_string()))?;
        let kit = |error: cairn_kit::KitError| WatchError::Settings(error.to_string());
        self.mvcc.validate("mvcc").map_err(kit)?;
        self.nats.validate().map_err(kit)?;
        if self.window.revisions == 0 || self.window.stream_queue == 0 {
            return fail("setting `window.revisions` and `window.stream_queue`: must be above 0");
        }
        if self.node.progress_interval_ms == 0 {
            return fail("setting `node.progress_interval_ms`: must be above 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_lists_every_key_and_the_defaults_are_valid() {
        cairn_kit::settings::assert_shipped_config_lists_every_key::<WatchSettings>(
            "configs/watch.toml",
            include_str!("../../../configs/watch.toml"),
        );
        assert!(WatchSettings::default().validate().is_ok());
    }
}
