//! cairn-watch's one error type, and its mapping to gRPC status at the boundary.

use tonic::Status;

/// Everything that can go wrong in a gateway.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    Settings(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// History below the compact revision was asked for.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted { compact_revision: i64 },
    /// A replica could not be reached or refused.
    #[error("{0}")]
    Replica(Status),
    #[error("nats: {0}")]
    Nats(String),
    /// Something on the revision stream does not decode.
    #[error("revision stream: {0}")]
    Corrupt(String),
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<WatchError> for Status {
    fn from(error: WatchError) -> Self {
        match error {
            WatchError::Replica(status) => status,
            WatchError::Compacted { .. } => Status::out_of_range(error.to_string()),
            _ => Status::unavailable(error.to_string()),
        }
    }
}
