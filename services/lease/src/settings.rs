//! cairn-lease's settings: `configs/lease.toml`, `--config FILE`, `CAIRN_<SECTION>__<KEY>`.

use cairn_kit::metrics::MetricsSettings;
use cairn_kit::settings::ReplicaPeers;
use cairn_kit::telemetry::TelemetrySettings;
use cairn_kit::tls::InternalTlsSettings;
use serde::{Deserialize, Serialize};

use crate::error::LeaseError;

/// etcd's largest lease TTL, seconds.
pub(crate) const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Everything an instance needs to start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseSettings {
    pub node: NodeSettings,
    /// The replicas every lease command goes through to the log.
    pub mvcc: ReplicaPeers,
    pub lease: LeaseRules,
    /// TLS among cairn's services (off unless its files are set).
    pub internal_tls: InternalTlsSettings,
    pub metrics: MetricsSettings,
    pub telemetry: TelemetrySettings,
}

/// Where this instance listens and how the others reach it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// etcd's Lease service and gRPC health.
    pub listen: String,
    /// The address the other instance forwards Lease calls to while this one
    /// is active; empty = `listen`.
    pub advertise: String,
    /// etcd's cluster_id in response headers.
    pub cluster_id: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7201".to_owned(),
            advertise: String::new(),
            cluster_id: 0x6361_6972_6e00_0001,
        }
    }
}

impl NodeSettings {
    /// The address other instances reach this one at: `advertise`, or `listen` when that is unset.
    pub fn advertised(&self) -> &str {
        if self.advertise.is_empty() {
            &self.listen
        } else {
            &self.advertise
        }
    }
}

/// The rules of leases and of the active instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseRules {
    /// Remaining TTLs are written to the log this often, so a successor
    /// resumes deadlines at most this much late.
    pub checkpoint_interval_ms: u64,
    /// A standby claims the leases when the active instance's checkpoints
    /// have not moved for this long.
    pub takeover_after_ms: u64,
    /// A grant asking less gets this (etcd's minimum TTL), seconds.
    pub min_ttl_secs: i64,
}

impl Default for LeaseRules {
    fn default() -> Self {
        Self {
            checkpoint_interval_ms: 1000,
            takeover_after_ms: 3000,
            min_ttl_secs: 2,
        }
    }
}

impl LeaseSettings {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), LeaseError> {
        let fail = |message: &str| Err(LeaseError::Settings(message.to_owned()));
        self.internal_tls
            .validate("setting `internal_tls`")
            .map_err(|error| LeaseError::Settings(error.to_string()))?;
        self.mvcc
            .validate("mvcc")
            .map_err(|error| LeaseError::Settings(error.to_string()))?;
        if self.lease.checkpoint_interval_ms == 0 {
            return fail("setting `lease.checkpoint_interval_ms`: must be above 0");
        }
        if self.lease.takeover_after_ms <= 2 * self.lease.checkpoint_interval_ms {
            return fail("setting `lease.takeover_after_ms`: must be above twice `lease.checkpoint_interval_ms`, or a live instance could be taken over");
        }
        if !(1..=MAX_LEASE_TTL).contains(&self.lease.min_ttl_secs) {
            return fail("setting `lease.min_ttl_secs`: must be between 1 and etcd's largest TTL");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_lists_every_key_and_the_defaults_are_valid() {
        cairn_kit::settings::assert_shipped_config_lists_every_key::<LeaseSettings>(
            "configs/lease.toml",
            include_str!("../../../configs/lease.toml"),
        );
        assert!(LeaseSettings::default().validate().is_ok());
        let mut hasty = LeaseSettings::default();
        hasty.lease.takeover_after_ms = hasty.lease.checkpoint_interval_ms;
        assert!(hasty.validate().is_err());
    }
}
