//! cairn-log's one error type, and its mapping to gRPC status at the boundary.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key carrying the first index a node still holds, on a Truncated error.
pub const FIRST_INDEX_METADATA: &str = "cairn-first-index";

/// Everything that can go wrong in a log node.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Settings(String),
    #[error("cannot use {dir}: {source}")]
    DataDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("undecodable data: {0}")]
    Codec(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The caller sent something the log will not take.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request may be retried: no leader, no quorum, timed out, shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The membership change cannot be made in the cluster's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A subscription asked for entries this node has purged.
    #[error(
        "log index {requested} was purged from this node; the first available index is {first}"
    )]
    Truncated { requested: u64, first: u64 },
}

impl From<LogError> for Status {
    fn from(error: LogError) -> Self {
        let message = error.to_string();
        match error {
            LogError::InvalidArgument(_) => Status::invalid_argument(message),
            LogError::Unavailable(_) => Status::unavailable(message),
            LogError::FailedPrecondition(_) => Status::failed_precondition(message),
            LogError::Truncated { first, .. } => {
                let mut status = Status::new(Code::OutOfRange, message);
                status
                    .metadata_mut()
                    .insert(FIRST_INDEX_METADATA, MetadataValue::from(first));
                status
            }
            LogError::Raft(_) => Status::unavailable(message),
            LogError::Settings(_)
            | LogError::DataDir { .. }
            | LogError::Bind { .. }
            | LogError::Rocks(_)
            | LogError::Codec(_)
            | LogError::Transport(_) => Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_facing_error_has_its_code_and_message() {
        let cases = [
            (
                LogError::InvalidArgument("command is empty".into()),
                Code::InvalidArgument,
                "command is empty",
            ),
            (
                LogError::Unavailable("no leader".into()),
                Code::Unavailable,
                "no leader",
            ),
            (
                LogError::FailedPrecondition("in progress".into()),
                Code::FailedPrecondition,
                "in progress",
            ),
            (
                LogError::Truncated {
                    requested: 3,
                    first: 10,
                },
                Code::OutOfRange,
                "log index 3 was purged from this node; the first available index is 10",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn truncated_carries_the_first_index_in_metadata() {
        let status = Status::from(LogError::Truncated {
            requested: 3,
            first: 10,
        });
        let first = status
            .metadata()
            .get(FIRST_INDEX_METADATA)
            .and_then(|value| value.to_str().ok());
        assert_eq!(first, Some("10"));
    }
}
