//! cairn-mvcc's one error type, and its mapping to gRPC status at the boundary.

use cairn_proto::etcd_error::EtcdError;
use tonic::metadata::MetadataValue;
use tonic::Status;

/// Metadata key carrying the compact revision on a compacted-history error.
pub const COMPACT_REVISION_METADATA: &str = "cairn-compact-revision";

/// Everything that can go wrong in an mvcc replica.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// An error etcd's clients know; it goes back to them as etcd sends it.
    #[error("{0}")]
    Etcd(EtcdError),
    /// History below the compact revision was asked for.
    #[error("{}", EtcdError::Compacted.message())]
    Compacted { compact_revision: i64 },
    /// A request no etcd check covers is malformed (e.g. a non-lease command
    /// sent to Mvcc/Apply); the caller must fix it, not retry.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Settings(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Something read back from disk does not decode: the data directory is damaged.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The log could not be reached or refused; the request may be retried.
    #[error("log: {0}")]
    Log(String),
    #[error("nats: {0}")]
    Nats(String),
    /// A snapshot could not be taken, sent or unpacked.
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The replica is stopping or its applier died.
    #[error("{}", EtcdError::Stopped.message())]
    Stopped,
}

impl From<EtcdError> for MvccError {
    fn from(error: EtcdError) -> Self {
        match error {
            EtcdError::Compacted => Self::Compacted {
                compact_revision: 0,
            },
            other => Self::Etcd(other),
        }
    }
}

impl MvccError {
    /// One shared call's failure as told to each of its waiters: the log's
    /// own message as it came, anything else described.
    pub fn into_shared(self) -> String {
        match self {
            MvccError::Log(message) => message,
            other => other.to_string(),
        }
    }

    /// The etcd error this is, if any: what decides the client-visible outcome.
    pub fn etcd(&self) -> Option<EtcdError> {
        match self {
            Self::Etcd(error) => Some(*error),
            Self::Compacted { .. } => Some(EtcdError::Compacted),
            _ => None,
        }
    }
}

impl From<MvccError> for Status {
    fn from(error: MvccError) -> Self {
        match error {
            MvccError::Etcd(etcd) => etcd.into(),
            MvccError::Compacted { compact_revision } => {
                let mut status = Status::from(EtcdError::Compacted);
                if let Ok(value) = MetadataValue::try_from(compact_revision.to_string()) {
                    status
                        .metadata_mut()
                        .insert(COMPACT_REVISION_METADATA, value);
                }
                status
            }
            MvccError::Log(message) => {
                tracing::debug!(%message, "log unavailable");
                EtcdError::Timeout.into()
            }
            MvccError::Stopped => EtcdError::Stopped.into(),
            MvccError::InvalidArgument(message) => Status::invalid_argument(message),
            other => Status::internal(other.to_string()),
        }
    }
}
