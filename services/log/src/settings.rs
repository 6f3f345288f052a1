//! cairn-log's settings: `configs/log.toml`, `--config FILE`, `CAIRN_<SECTION>__<KEY>`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cairn_kit::metrics::MetricsSettings;
use cairn_kit::telemetry::TelemetrySettings;
use cairn_kit::tls::InternalTlsSettings;
use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::types::NodeId;

/// Everything a log node needs to start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub node: NodeSettings,
    pub cluster: ClusterSettings,
    pub raft: RaftSettings,
    /// TLS among cairn's services (off unless its files are set).
    pub internal_tls: InternalTlsSettings,
    pub metrics: MetricsSettings,
    pub telemetry: TelemetrySettings,
}

/// Who this node is and where it keeps its state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Raft node id; unique in the cluster, never 0.
    pub id: NodeId,
    /// Where the gRPC server (Log, Raft, health) listens.
    pub listen: String,
    /// The address peers and forwarded requests use; empty means `listen`.
    pub advertise: String,
    /// RocksDB directory for the raft log, vote and snapshot.
    pub data_dir: PathBuf,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            id: 1,
            listen: "127.0.0.1:7001".to_owned(),
            advertise: String::new(),
            data_dir: PathBuf::from("data/log-1"),
        }
    }
}

/// The initial membership, used once to bootstrap an empty cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Whether this node may initialise the cluster when its log is empty.
    /// Every initial member may: openraft accepts the same call on all of them.
    pub bootstrap: bool,
    /// Initial voters as `id=host:port`.
    pub members: Vec<String>,
    /// Names this cluster on every raft message (etcd's
    /// `--initial-cluster-token`): a node refuses messages with another
    /// token, so a process of another cluster that reaches it (a leftover
    /// of an earlier run on the same ports) cannot disturb it. Every node
    /// of a cluster must have the same one.
    pub token: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            bootstrap: true,
            members: vec!["1=127.0.0.1:7001".to_owned()],
            token: "cairn".to_owned(),
        }
    }
}

/// Timing and size knobs of the consensus.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How long a Propose, ReadIndex or membership change may take before it
    /// fails with UNAVAILABLE.
    pub request_timeout_ms: u64,
    /// The largest command accepted. etcd's request limit is 1.5 MiB; the log
    /// leaves room for the envelope the services put around a request.
    pub max_command_bytes: usize,
    /// Entries per AppendEntries message.
    pub max_payload_entries: u64,
    /// Packed entries of proposals that may be uncommitted at once; proposals
    /// arriving meanwhile queue and share the next entry.
    pub max_batches_in_flight: usize,
    /// Take a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// With no registered consumer, keep this many entries behind the snapshot.
    pub retain_entries: u64,
    /// How often the purge policy runs.
    pub purge_interval_ms: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 50,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 500,
            request_timeout_ms: 5000,
            max_command_bytes: 2 * 1024 * 1024,
            max_payload_entries: 256,
            max_batches_in_flight: 2,
            snapshot_every: 10_000,
            retain_entries: 100_000,
            purge_interval_ms: 1000,
        }
    }
}

impl RaftSettings {
    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl LogSettings {
    /// The address this node is known by.
    pub fn advertise(&self) -> &str {
        if self.node.advertise.is_empty() {
            &self.node.listen
        } else {
            &self.node.advertise
        }
    }

    /// Parses `cluster.members`; each entry must be `id=host:port`.
    pub fn initial_members(&self) -> Result<BTreeMap<NodeId, String>, LogError> {
        let mut members = BTreeMap::new();
        for entry in &self.cluster.members {
            let parsed = entry
                .split_once('=')
                .and_then(|(id, addr)| Some((id.trim().parse::<NodeId>().ok()?, addr.trim())));
            match parsed {
                Some((id, addr)) if id != 0 && !addr.is_empty() => {
                    if members.insert(id, addr.to_owned()).is_some() {
                        return Err(LogError::Settings(format!(
                            "setting `cluster.members`: node id {id} appears twice"
                        )));
                    }
                }
                _ => {
                    return Err(LogError::Settings(format!(
                    "setting `cluster.members`: `{entry}` is not `id=host:port` with a non-zero id"
                )))
                }
            }
        }
        Ok(members)
    }

    /// Checks what serde cannot: relations between values.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |key: &str, why: &str| Err(LogError::Settings(format!("setting `{key}`: {why}")));
        self.internal_tls
            .validate("setting `internal_tls`")
            .map_err(|error| LogError::Settings(error.to_string()))?;
        if self.node.id == 0 {
            return bad("node.id", "must not be 0");
        }
        if self.raft.heartbeat_ms == 0 {
            return bad("raft.heartbeat_ms", "must be positive");
        }
        if self.raft.election_timeout_min_ms <= self.raft.heartbeat_ms {
            return bad(
                "raft.election_timeout_min_ms",
                "must be greater than raft.heartbeat_ms",
            );
        }
        if self.raft.election_timeout_max_ms <= self.raft.election_timeout_min_ms {
            return bad(
                "raft.election_timeout_max_ms",
                "must be greater than raft.election_timeout_min_ms",
            );
        }
        if self.raft.request_timeout_ms == 0 {
            return bad("raft.request_timeout_ms", "must be positive");
        }
        if self.raft.max_command_bytes == 0 {
            return bad("raft.max_command_bytes", "must be positive");
        }
        if self.raft.max_payload_entries == 0 {
            return bad("raft.max_payload_entries", "must be positive");
        }
        if self.raft.max_batches_in_flight == 0 {
            return bad("raft.max_batches_in_flight", "must be positive");
        }
        if self.raft.snapshot_every == 0 {
            return bad("raft.snapshot_every", "must be positive");
        }
        if self.cluster.token.is_empty() {
            return bad("cluster.token", "must not be empty");
        }
        if !self
            .cluster
            .token
            .bytes()
            .all(|byte| byte.is_ascii_graphic())
        {
            return bad(
                "cluster.token",
                "must be ASCII letters, digits and punctuation (it travels as gRPC metadata)",
            );
        }
        let members = self.initial_members()?;
        if self.cluster.bootstrap && !members.contains_key(&self.node.id) {
            return bad(
                "cluster.members",
                "must contain this node's id when cluster.bootstrap is true",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(LogSettings::default().validate().is_ok());
    }

    #[test]
    fn members_parse_and_reject_garbage() {
        let mut settings = LogSettings::default();
        settings.cluster.members = vec!["1=a:1".into(), "2 = b:2".into()];
        let members = settings.initial_members().expect("valid members");
        assert_eq!(members.get(&2).map(String::as_str), Some("b:2"));

        for bad in ["x=a:1", "0=a:1", "1", "1="] {
            settings.cluster.members = vec![bad.into()];
            let error = settings.initial_members().expect_err(bad).to_string();
            assert!(error.contains("cluster.members"), "{error}");
        }
        settings.cluster.members = vec!["1=a:1".into(), "1=b:2".into()];
        assert!(settings.initial_members().is_err());
    }

    #[test]
    fn an_empty_or_unsendable_cluster_token_is_refused() {
        for token in ["", "  ", "caf\u{e9}", "a\nb"] {
            let mut settings = LogSettings::default();
            settings.cluster.token = token.to_owned();
            let error = settings.validate().expect_err(token).to_string();
            assert!(error.contains("cluster.token"), "{error}");
        }
    }

    #[test]
    fn timing_relations_are_checked() {
        let mut settings = LogSettings::default();
        settings.raft.election_timeout_min_ms = settings.raft.heartbeat_ms;
        let error = settings
            .validate()
            .expect_err("min <= heartbeat")
            .to_string();
        assert!(error.contains("raft.election_timeout_min_ms"), "{error}");
    }
}
