//! cairn-edge's settings: `configs/edge.toml`, `--config FILE`, `CAIRN_<SECTION>__<KEY>`.

use cairn_kit::metrics::MetricsSettings;
use cairn_kit::telemetry::TelemetrySettings;
use cairn_kit::tls::InternalTlsSettings;
use cairn_kit::tls::TlsSettings;
use serde::{Deserialize, Serialize};

use crate::error::EdgeError;

/// Everything the edge needs to start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeSettings {
    pub edge: NodeSettings,
    pub backends: BackendSettings,
    pub limits: LimitSettings,
    /// TLS for clients, on `edge.listen` and `edge.http_listen` alike.
    pub tls: TlsSettings,
    /// TLS among cairn's services (off unless its files are set).
    pub internal_tls: InternalTlsSettings,
    pub metrics: MetricsSettings,
    pub telemetry: TelemetrySettings,
}

/// Where clients reach the edge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Where the etcd gRPC API listens.
    pub listen: String,
    /// The client URLs MemberList hands out: how clients reach this edge (or
    /// the load balancer in front of the edges), never an internal address.
    pub advertise_client_urls: Vec<String>,
    /// etcd's cluster_id in the headers the edge writes itself.
    pub cluster_id: u64,
    /// A second listener serving only the HTTP/JSON gateway, which `listen`
    /// serves too (as etcd does, beside gRPC); none when empty.
    pub http_listen: String,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2379".to_owned(),
            advertise_client_urls: vec!["http://127.0.0.1:2379".to_owned()],
            cluster_id: 0x6361_6972_6e00_0001,
            http_listen: String::new(),
        }
    }
}

/// The services behind the edge, each a list of `host:port` names. A name is
/// re-resolved every `discovery_interval_ms`, and every address it resolves
/// to is a backend: scaling a service behind one DNS name needs no change here.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendSettings {
    /// cairn-mvcc replicas: KV, and the data behind Maintenance.
    pub mvcc: Vec<String>,
    /// cairn-log nodes: Cluster, and raft facts in Maintenance.Status.
    pub log: Vec<String>,
    /// cairn-watch gateways; empty answers Watch with UNAVAILABLE.
    pub watch: Vec<String>,
    /// cairn-lease instances; empty answers Lease with UNAVAILABLE.
    pub lease: Vec<String>,
    pub discovery_interval_ms: u64,
    /// How long a backend that refused a connection is passed over.
    pub down_backoff_ms: u64,
    pub connect_timeout_ms: u64,
}

impl Default for BackendSettings {
    fn default() -> Self {
        Self {
            mvcc: vec!["127.0.0.1:7101".to_owned(), "127.0.0.1:7102".to_owned()],
            log: vec![
                "127.0.0.1:7001".to_owned(),
                "127.0.0.1:7002".to_owned(),
                "127.0.0.1:7003".to_owned(),
            ],
            watch: Vec::new(),
            lease: Vec::new(),
            discovery_interval_ms: 2000,
            down_backoff_ms: 1000,
            connect_timeout_ms: 500,
        }
    }
}

/// What keeps one client, or many, from taking the edge down.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// A unary call that has no answer after this fails with etcd's
    /// "request timed out" (UNAVAILABLE); a client's shorter deadline wins.
    pub unary_timeout_ms: u64,
    /// Calls in progress at once; beyond it new calls are refused at once with
    /// etcd's "too many requests" (RESOURCE_EXHAUSTED) instead of queueing.
    pub max_concurrent_requests: usize,
    /// The largest request accepted, as etcd's --max-request-bytes plus gRPC's
    /// framing; the backends enforce their own limits below it.
    pub max_request_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            unary_timeout_ms: 10_000,
            max_concurrent_requests: 10_000,
            max_request_bytes: 2 * 1024 * 1024,
        }
    }
}

impl EdgeSettings {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), EdgeError> {
        let fail = |message: &str| Err(EdgeError::Settings(message.to_owned()));
        self.internal_tls
            .validate("setting `internal_tls`")
            .map_err(|error| EdgeError::Settings(error.to_string()))?;
        if self.edge.advertise_client_urls.is_empty() {
            return fail("setting `edge.advertise_client_urls`: at least one URL is needed");
        }
        if self.backends.mvcc.is_empty() {
            return fail("setting `backends.mvcc`: at least one replica is needed");
        }
        if self.backends.log.is_empty() {
            return fail("setting `backends.log`: at least one log node is needed");
        }
        for (key, value) in [
            (
                "backends.discovery_interval_ms",
                self.backends.discovery_interval_ms,
            ),
            (
                "backends.connect_timeout_ms",
                self.backends.connect_timeout_ms,
            ),
            ("limits.unary_timeout_ms", self.limits.unary_timeout_ms),
        ] {
            if value == 0 {
                return Err(EdgeError::Settings(format!(
                    "setting `{key}`: must be above 0"
                )));
            }
        }
        self.tls.validate("setting `tls`")?;
        if self.limits.max_concurrent_requests == 0 {
            return fail("setting `limits.max_concurrent_requests`: must be above 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_lists_every_key_and_the_defaults_are_valid() {
        cairn_kit::settings::assert_shipped_config_lists_every_key::<EdgeSettings>(
            "configs/edge.toml",
            include_str!("../../../configs/edge.toml"),
        );
        assert!(EdgeSettings::default().validate().is_ok());
        let mut without_replicas = EdgeSettings::default();
        without_replicas.backends.mvcc.clear();
        assert!(without_replicas.validate().is_err());
    }

    #[test]
    fn the_optional_listener_and_tls_are_settings_a_file_may_give() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("edge.toml");
        std::fs::write(
            &file,
            "[edge]\nhttp_listen = \"127.0.0.1:2380\"\n\n\
             [tls]\ncert_file = \"edge.crt\"\nkey_file = \"edge.key\"\n\
             trusted_ca_file = \"ca.crt\"\nclient_cert_auth = true\n",
        )
        .expect("writing the settings");
        let settings: EdgeSettings =
            cairn_kit::settings::load_from("edge", Some(&file), Vec::new()).expect("known keys");
        assert_eq!(settings.edge.http_listen, "127.0.0.1:2380");
        assert!(settings.tls.enabled() && settings.tls.client_cert_auth);
        assert!(settings.validate().is_ok());
    }
}
