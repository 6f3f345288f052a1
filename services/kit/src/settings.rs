//! Layered settings: built-in defaults, then a TOML file, then the environment.
//!
//! The file is `--config FILE`, or `configs/<service>.toml` when it exists. An
//! environment variable `CAIRN_<SECTION>__<KEY>` sets `section.key`; a list
//! setting takes comma-separated values. A key the service does not know, in the
//! file or the environment, stops the service with a message naming it: a typo
//! must not silently leave a default in force.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::KitError;

const ENV_PREFIX: &str = "CAIRN_";

/// Loads `S` for `service` from defaults, the file and the process environment.
pub fn load<S>(service: &str, config_file: Option<&Path>) -> Result<S, KitError>
where
    S: DeserializeOwned + Serialize + Default,
{
    load_from(service, config_file, std::env::vars())
}

/// Like [`load`], with the environment given as pairs, so tests need not touch
/// the process environment.
pub fn load_from<S>(
    service: &str,
    config_file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<S, KitError>
where
    S: DeserializeOwned + Serialize + Default,
{
    let known = known_key_kinds::<S>()?;
    let defaults = Config::try_from(&S::default())
        .map_err(|error| KitError::Settings(format!("defaults do not serialize: {error}")))?;
    let mut builder = Config::builder().add_source(defaults);

    if let Some(path) = settings_file(service, config_file)? {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|error| KitError::Settings(format!("settings file {shown}: {error}")))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|error| KitError::Settings(format!("settings file {shown}: {error}")))?;
        let mut given = BTreeMap::new();
        key_paths(&table, "", &mut given);
        if let Some(unknown) = given.keys().find(|key| !known.contains_key(*key)) {
            return Err(KitError::Settings(format!(
                "unknown setting `{unknown}` (in {shown})"
            )));
        }
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }

    for (variable, value) in env {
        let Some(rest) = variable.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = rest
            .split("__")
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        let Some(is_list) = known.get(&key) else {
            return Err(KitError::Settings(format!(
                "unknown setting `{key}` (from environment variable {variable})"
            )));
        };
        let value: Value = if *is_list {
            let items: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect();
            items.into()
        } else {
            value.into()
        };
        builder = builder.set_override(&key, value).map_err(|error| {
            KitError::Settings(format!("setting `{key}` (from {variable}): {error}"))
        })?;
    }

    builder
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|error| KitError::Settings(format!("invalid settings: {error}")))
}

/// The effective settings as TOML, for `--print-config`.
pub fn render<S: Serialize>(settings: &S) -> Result<String, KitError> {
    toml::to_string(settings)
        .map_err(|error| KitError::Settings(format!("cannot render settings: {error}")))
}

fn settings_file(service: &str, config_file: Option<&Path>) -> Result<Option<PathBuf>, KitError> {
    match config_file {
        Some(path) if path.is_file() => Ok(Some(path.to_owned())),
        Some(path) => Err(KitError::Settings(format!(
            "settings file {} does not exist or is not a regular file",
            path.display()
        ))),
        None => {
            let conventional = Path::new("configs").join(format!("{service}.toml"));
            Ok(conventional.is_file().then_some(conventional))
        }
    }
}

/// Every key path in `table` (sections and leaves), each marked whether its value is a list.
fn key_paths(table: &toml::Table, prefix: &str, paths: &mut BTreeMap<String, bool>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => {
                paths.insert(path.clone(), false);
                key_paths(inner, &path, paths);
            }
            toml::Value::Array(_) => {
                paths.insert(path, true);
            }
            _ => {
                paths.insert(path, false);
            }
        }
    }
}

/// `S`'s key paths from its defaults, serialized with toml so that empty lists
/// and sections count too.
fn known_key_kinds<S: Serialize + Default>() -> Result<BTreeMap<String, bool>, KitError> {
    let defaults = toml::Table::try_from(S::default())
        .map_err(|error| KitError::Settings(format!("defaults do not serialize: {error}")))?;
    let mut paths = BTreeMap::new();
    key_paths(&defaults, "", &mut paths);
    Ok(paths)
}

/// The key paths of `S`'s defaults; for tools that list settings.
pub fn known_keys<S: Serialize + Default>() -> Result<BTreeSet<String>, KitError> {
    Ok(known_key_kinds::<S>()?.into_keys().collect())
}

/// The keys of `S` that a shipped config file (`text`, every key shown
/// commented out with its default, under its section) fails to document;
/// empty when it documents them all. Each service's tests hold its
/// `configs/<service>.toml` to this, so the file never falls behind the code.
pub fn undocumented_keys<S: Serialize + Default>(text: &str) -> Result<Vec<String>, KitError> {
    Ok(known_keys::<S>()?
        .into_iter()
        .filter(|key| match key.split_once('.') {
            Some((section, name)) => {
                !text.contains(&format!("[{section}]")) || !text.contains(&format!("# {name} ="))
            }
            None => false,
        })
        .collect())
}

/// How a service reaches the nodes of another one (the log, the replicas):
/// any of them may answer, and each call, retries included, gets
/// `request_timeout_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerSettings {
    /// The nodes, as host:port.
    pub endpoints: Vec<String>,
    /// How long a call may take before the caller gives up on it.
    pub request_timeout_ms: u64,
}

impl Default for PeerSettings {
    fn default() -> Self {
        Self::at(&[])
    }
}

impl PeerSettings {
    /// `endpoints` with the default timeout (5 s).
    pub fn at(endpoints: &[&str]) -> Self {
        Self {
            endpoints: endpoints
                .iter()
                .map(|endpoint| (*endpoint).to_owned())
                .collect(),
            request_timeout_ms: 5000,
        }
    }

    /// `request_timeout_ms` as a duration, for the clients built from these settings.
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_timeout_ms)
    }

    /// Checks what serde cannot; `section` names the settings in the error.
    pub fn validate(&self, section: &str) -> Result<(), KitError> {
        if self.endpoints.is_empty() {
            return Err(KitError::Settings(format!(
                "setting `{section}.endpoints`: at least one node is needed"
            )));
        }
        if self.request_timeout_ms == 0 {
            return Err(KitError::Settings(format!(
                "setting `{section}.request_timeout_ms`: must be above 0"
            )));
        }
        Ok(())
    }
}

/// The log's nodes, by default the three of a local cluster (`just dev`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogPeers(pub PeerSettings);

impl Default for LogPeers {
    fn default() -> Self {
        Self(PeerSettings::at(&[
            "127.0.0.1:7001",
            "127.0.0.1:7002",
            "127.0.0.1:7003",
        ]))
    }
}

impl std::ops::Deref for LogPeers {
    type Target = PeerSettings;

    fn deref(&self) -> &PeerSettings {
        &self.0
    }
}

/// The mvcc replicas, by default the two of a local cluster (`just dev`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplicaPeers(pub PeerSettings);

impl Default for ReplicaPeers {
    fn default() -> Self {
        Self(PeerSettings::at(&["127.0.0.1:7101", "127.0.0.1:7102"]))
    }
}

impl std::ops::Deref for ReplicaPeers {
    type Target = PeerSettings;

    fn deref(&self) -> &PeerSettings {
        &self.0
    }
}

/// The JetStream stream the replicas publish every revision to and the
/// watch gateways read: one message per revision, sequence = revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// NATS server URL.
    pub url: String,
    pub stream: String,
    pub subject: String,
    /// Revisions the stream keeps when a publisher creates it; older ones
    /// are served from history.
    pub max_messages: i64,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "CAIRN_REVISIONS".to_owned(),
            subject: "cairn.revisions".to_owned(),
            max_messages: 1_000_000,
        }
    }
}

impl NatsSettings {
    /// Checks what serde cannot, for a service that needs the stream.
    pub fn validate(&self) -> Result<(), KitError> {
        if self.url.is_empty() || self.stream.is_empty() || self.subject.is_empty() {
            return Err(KitError::Settings(
                "setting `nats.url`, `nats.stream`, `nats.subject`: must not be empty".into(),
            ));
        }
        if self.max_messages <= 0 {
            return Err(KitError::Settings(
                "setting `nats.max_messages`: must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// For each service's tests: fails, naming them, when the shipped config file
/// `name` (its `text`) leaves a key of `S` out.
pub fn assert_shipped_config_lists_every_key<S: Serialize + Default>(name: &str, text: &str) {
    match undocumented_keys::<S>(text) {
        Ok(missing) => assert!(missing.is_empty(), "{name} lacks {missing:?}"),
        Err(error) => panic!("the settings do not serialise: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Example {
        raft: Raft,
        cluster: Cluster,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Raft {
        heartbeat_ms: u64,
        verbose: bool,
        name: String,
    }

    impl Default for Raft {
        fn default() -> Self {
            Self {
                heartbeat_ms: 100,
                verbose: false,
                name: "log".into(),
            }
        }
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Cluster {
        members: Vec<String>,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        std::fs::write(file.path(), text).expect("write temp file");
        file
    }

    #[test]
    fn defaults_alone() {
        let loaded: Example = load_from("nothing", None, env(&[])).expect("defaults load");
        assert_eq!(loaded, Example::default());
    }

    #[test]
    fn file_overrides_defaults_and_environment_overrides_file() {
        let settings = file("[raft]\nheartbeat_ms = 50\nname = \"from-file\"\n");
        let loaded: Example = load_from(
            "x",
            Some(settings.path()),
            env(&[
                ("CAIRN_RAFT__HEARTBEAT_MS", "25"),
                ("CAIRN_RAFT__VERBOSE", "true"),
                ("PATH", "/bin"),
            ]),
        )
        .expect("layers load");
        assert_eq!(loaded.raft.heartbeat_ms, 25);
        assert!(loaded.raft.verbose);
        assert_eq!(loaded.raft.name, "from-file");
    }

    #[test]
    fn list_settings_take_comma_separated_values() {
        let loaded: Example = load_from(
            "x",
            None,
            env(&[("CAIRN_CLUSTER__MEMBERS", "1=a:1, 2=b:2")]),
        )
        .expect("list loads");
        assert_eq!(loaded.cluster.members, vec!["1=a:1", "2=b:2"]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let settings = file("[raft]\nheartbeat_msx = 50\n");
        let error = load_from::<Example>("x", Some(settings.path()), env(&[]))
            .expect_err("unknown key in file")
            .to_string();
        assert!(error.contains("`raft.heartbeat_msx`"), "{error}");

        let settings = file("[rafts]\n");
        let error = load_from::<Example>("x", Some(settings.path()), env(&[]))
            .expect_err("unknown section in file")
            .to_string();
        assert!(error.contains("`rafts`"), "{error}");

        let error = load_from::<Example>("x", None, env(&[("CAIRN_RAFT__HEARTBEAT_MSX", "1")]))
            .expect_err("unknown key in env")
            .to_string();
        assert!(error.contains("`raft.heartbeat_msx`"), "{error}");
        assert!(error.contains("CAIRN_RAFT__HEARTBEAT_MSX"), "{error}");
    }

    #[test]
    fn bad_values_are_named() {
        let error = load_from::<Example>("x", None, env(&[("CAIRN_RAFT__HEARTBEAT_MS", "soon")]))
            .expect_err("bad number")
            .to_string();
        assert!(error.contains("raft.heartbeat_ms"), "{error}");

        let settings = file("[raft]\nverbose = \"very\"\n");
        let error = load_from::<Example>("x", Some(settings.path()), env(&[]))
            .expect_err("bad bool")
            .to_string();
        assert!(error.contains("raft.verbose"), "{error}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let error = load_from::<Example>("x", Some(Path::new("/nonexistent/cairn.toml")), env(&[]))
            .expect_err("missing file")
            .to_string();
        assert!(error.contains("/nonexistent/cairn.toml"), "{error}");
    }

    #[test]
    fn rendered_settings_load_back() {
        let mut original = Example::default();
        original.raft.heartbeat_ms = 7;
        original.cluster.members = vec!["1=a:1".into()];
        let text = render(&original).expect("renders");
        let settings = file(&text);
        let loaded: Example = load_from("x", Some(settings.path()), env(&[])).expect("loads back");
        assert_eq!(loaded, original);
        assert!(known_keys::<Example>()
            .expect("keys")
            .contains("raft.heartbeat_ms"));
    }

    #[test]
    fn a_config_file_must_show_every_key_under_its_section() {
        let complete = "[raft]\n# heartbeat_ms = 100\n# verbose = false\n# name = \"\"\n\
                        [cluster]\n# members = []\n# bootstrap = false\n";
        let missing = undocumented_keys::<Example>(complete).expect("keys");
        assert!(missing.is_empty(), "{missing:?}");
        let documented = "[raft]\n# heartbeat_ms = 100\n";
        let lacking = undocumented_keys::<Example>(documented).expect("keys");
        assert!(lacking.contains(&"raft.verbose".to_owned()), "{lacking:?}");
        assert!(!lacking.contains(&"raft.heartbeat_ms".to_owned()));
    }
}
