//! cairn-watch's one error type, and its mapping to gRPC status at the boundary.

use cairn_proto::etcd_error::EtcdError;
use tonic::Status;

/// Everything that can go wrong in a gateway.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Kit(#[from] cairn_kit::KitError),
    /// History below the compact revision was asked for.
    #[error("{}", EtcdError::Compacted.message())]
    Compacted { compact_revision: i64 },
    /// A replica could not be reached or refused.
    #[error("{0}")]
    Replica(Status),
    #[error("nats: {0}")]
    Nats(String),
    /// Something on the revision stream does not decode.
    #[error("revision stream: {0}")]
    Corrupt(String),
}

impl From<WatchError> for Status {
    fn from(error: WatchError) -> Self {
        match error {
            WatchError::Replica(status) => status,
            WatchError::Compacted { .. } => Status::from(EtcdError::Compacted),
            _ => Status::unavailable(error.to_string()),
        }
    }
}
