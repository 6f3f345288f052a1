//! cairn-mvcc's settings: `configs/mvcc.toml`, `--config FILE`, `CAIRN_<SECTION>__<KEY>`.

use std::path::PathBuf;

use cairn_kit::metrics::MetricsSettings;
use cairn_kit::settings::{LogPeers, NatsSettings};
use cairn_kit::telemetry::TelemetrySettings;
use cairn_kit::tls::InternalTlsSettings;
use serde::{Deserialize, Serialize};

use crate::error::MvccError;
use crate::validate::Limits;

/// Everything a replica needs to start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MvccSettings {
    pub node: NodeSettings,
    /// The log nodes; a write or read index that takes longer than the
    /// timeout gets etcd's "request timed out".
    pub log: LogPeers,
    pub limits: LimitSettings,
    /// Where revisions are published; an empty `url` publishes nothing.
    pub nats: NatsSettings,
    /// TLS among cairn's services (off unless its files are set).
    pub internal_tls: InternalTlsSettings,
    pub metrics: MetricsSettings,
    pub telemetry: TelemetrySettings,
    pub testing: TestingSettings,
    /// Where a replica copies its store from when the log has purged what it
    /// needs; without it such a replica cannot start.
    pub seed: SeedSettings,
    pub auth: AuthSettings,
}

/// How etcd's auth is served: tokens and password hashing. Users, roles
/// and whether auth is on are not settings: they are in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// How long a token from Authenticate is accepted. etcd's simple tokens
    /// live 300 s past their last use; cairn's are signed and cannot be
    /// renewed by use, so they live a day by default: clients that keep one
    /// longer (python-etcd3, the etcd-client crate) would otherwise fail
    /// where etcd keeps serving them. A deleted user or a changed password
    /// ends them sooner.
    pub token_ttl_secs: u64,
    /// bcrypt's cost for new passwords (etcd's default: 10; 4 to 31). A
    /// password is checked at the cost it was hashed with.
    pub bcrypt_cost: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            token_ttl_secs: 24 * 60 * 60,
            bcrypt_cost: 10,
        }
    }
}

impl AuthSettings {
    fn validate(&self) -> Result<(), MvccError> {
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(MvccError::Settings(format!(
                "setting `auth.bcrypt_cost`: {} is not between 4 and 31",
                self.bcrypt_cost
            )));
        }
        if self.token_ttl_secs == 0 {
            return Err(MvccError::Settings(
                "setting `auth.token_ttl_secs`: a token must live at least a second".into(),
            ));
        }
        Ok(())
    }
}

/// Other replicas to copy the store from when the log no longer holds what
/// this replica needs: a new replica joining after the log purged its
/// beginning, a replica whose disk was lost, or one that was away too long.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedSettings {
    /// The peers' gRPC addresses (`host:port`), as they reach each other. A
    /// shared list may name this replica too: its own address is skipped.
    pub replicas: Vec<String>,
}

impl SeedSettings {
    /// Checks each address is `host:port`, once.
    fn validate(&self) -> Result<(), MvccError> {
        let mut seen = std::collections::BTreeSet::new();
        for replica in &self.replicas {
            let fail = |why: &str| {
                Err(MvccError::Settings(format!(
                    "setting `seed.replicas`: {replica:?} {why}"
                )))
            };
            let Some((host, port)) = replica.rsplit_once(':') else {
                return fail("is not host:port");
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
                return fail("has no usable host (host:port, without a scheme)");
            }
            if !port.parse::<u16>().is_ok_and(|port| port != 0) {
                return fail("has no port between 1 and 65535");
            }
            if !seen.insert(replica.to_ascii_lowercase()) {
                return fail("is listed twice");
            }
        }
        Ok(())
    }
}

/// Faults a test can switch on to show its checks can fail. Never set in a
/// deployment: each one breaks a guarantee on purpose.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestingSettings {
    /// Answer linearizable reads from what this replica has applied, without
    /// asking the log for a read index: reads may be stale.
    pub skip_read_index: bool,
    /// Apply each entry only this long after it arrived, so this replica
    /// trails its peers; with `skip_read_index`, its reads are then stale
    /// whenever a peer has just acknowledged a write. 0 is no lag.
    pub apply_lag_ms: u64,
}

/// Who this replica is and where it keeps its state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// The replica's name: its consumer name in the log, so unique per replica.
    pub name: String,
    /// Where the gRPC server (etcd KV, cairn Mvcc, health) listens.
    pub listen: String,
    /// RocksDB directory of the materialised state.
    pub data_dir: PathBuf,
    /// etcd's cluster_id in response headers.
    pub cluster_id: u64,
    /// How often the state is synced to disk and the applied index acknowledged
    /// to the log, which may then purge entries before it.
    pub ack_interval_ms: u64,
    /// A standby replica claims the revision stream when it has stayed
    /// behind its store, without moving, for this long.
    pub publisher_takeover_ms: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            name: "mvcc-1".to_owned(),
            listen: "127.0.0.1:7101".to_owned(),
            data_dir: PathBuf::from("data/mvcc-1"),
            cluster_id: 0x6361_6972_6e00_0001,
            ack_interval_ms: 1000,
            publisher_takeover_ms: 2000,
        }
    }
}

/// etcd's request limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// etcd's --max-request-bytes.
    pub max_request_bytes: usize,
    /// etcd's --max-txn-ops.
    pub max_txn_ops: usize,
    /// etcd's --quota-backend-bytes: past this size on disk the replica
    /// raises NOSPACE and writes that add data fail until it is disarmed;
    /// 0 = no quota.
    pub quota_backend_bytes: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            max_request_bytes: limits.max_request_bytes,
            max_txn_ops: limits.max_txn_ops,
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

impl LimitSettings {
    /// The limits `validate` checks requests against.
    pub fn limits(&self) -> Limits {
        Limits {
            max_txn_ops: self.max_txn_ops,
            max_request_bytes: self.max_request_bytes,
        }
    }
}

impl MvccSettings {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), MvccError> {
        let fail = |message: &str| Err(MvccError::Settings(message.to_owned()));
        self.internal_tls
            .validate("setting `internal_tls`")
            .map_err(|error| MvccError::Settings(error.to_string()))?;
        if self.node.name.is_empty() {
            return fail("setting `node.name`: must not be empty");
        }
        self.log
            .validate("log")
            .map_err(|error| MvccError::Settings(error.to_string()))?;
        if self.node.publisher_takeover_ms == 0 {
            return fail("setting `node.publisher_takeover_ms`: must be above 0");
        }
        if self.node.ack_interval_ms == 0 {
            return fail("setting `node.ack_interval_ms`: must be above 0");
        }
        if self.limits.max_txn_ops == 0 {
            return fail("setting `limits.max_txn_ops`: must be above 0");
        }
        if self.limits.max_request_bytes == 0 {
            return fail("setting `limits.max_request_bytes`: must be above 0");
        }
        if !self.nats.url.is_empty() {
            self.nats
                .validate()
                .map_err(|error| MvccError::Settings(error.to_string()))?;
        }
        self.auth.validate()?;
        self.seed.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_lists_every_key_and_the_defaults_are_valid() {
        cairn_kit::settings::assert_shipped_config_lists_every_key::<MvccSettings>(
            "configs/mvcc.toml",
            include_str!("../../../configs/mvcc.toml"),
        );
        assert!(MvccSettings::default().validate().is_ok());
        let mut nameless = MvccSettings::default();
        nameless.node.name.clear();
        assert!(nameless.validate().is_err());
    }

    fn seeded(replicas: &[&str]) -> Result<(), MvccError> {
        let mut settings = MvccSettings::default();
        settings.seed.replicas = replicas.iter().map(|peer| (*peer).to_owned()).collect();
        settings.validate()
    }

    #[test]
    fn seed_peers_must_be_distinct_host_and_port_pairs() {
        assert!(seeded(&[]).is_ok());
        assert!(seeded(&["mvcc-1:7101", "mvcc-2:7101", "127.0.0.1:7102", "[::1]:7103"]).is_ok());
        for bad in [
            "mvcc-1",
            ":7101",
            "mvcc-1:",
            "mvcc-1:0",
            "mvcc-1:70000",
            "http://mvcc-1:7101",
            "mvcc 1:7101",
        ] {
            let refused = seeded(&[bad]).expect_err(bad);
            assert!(refused.to_string().contains("seed.replicas"), "{refused}");
        }
        assert!(seeded(&["mvcc-1:7101", "MVCC-1:7101"]).is_err());
    }
}
