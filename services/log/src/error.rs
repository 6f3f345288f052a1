//! cairn-log's one error type, and its mapping to gRPC status at the boundary.
//!
//! Every refusal a caller can act on carries a typed [`Failure`] in the
//! status details: whether the request was appended (and so may still
//! commit) is part of the answer, not of its wording.

use cairn_proto::contract::{Failure, FailureKind};
use tonic::{Code, Status};

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
    #[error(transparent)]
    Kit(#[from] cairn_kit::KitError),
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("undecodable data: {0}")]
    Codec(String),
    #[error("raft: {0}")]
    Raft(String),
    /// The caller sent something the log will not take.
    #[error("{0}")]
    InvalidArgument(String),
    /// No node could act as leader before the deadline: an election under
    /// way, or a leader cut off from its quorum. Nothing was appended.
    #[error("{0}")]
    NoLeader(String),
    /// Handed to raft but not committed before the deadline: it may still
    /// commit, so its outcome is unknown.
    #[error("{0}")]
    TimedOut(String),
    /// The request went from node to node without reaching the leader.
    #[error("{0}")]
    NotLeader(String),
    /// The connection to the leader a request was forwarded to broke under
    /// it: the leader may have carried it out.
    #[error("{0}")]
    ForwardBroken(String),
    /// This node is shutting down; the request was not carried out.
    #[error("this log node is shutting down")]
    Stopping,
    /// The membership change cannot be made in the cluster's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A subscription asked for entries this node has purged.
    #[error(
        "log index {requested} was purged from this node; the first available index is {first}"
    )]
    Truncated { requested: u64, first: u64 },
}

impl LogError {
    /// The same failure again, for each request that shared one call: the
    /// kind kept, anything internal told as an unavailable raft.
    pub(crate) fn copy(&self) -> Self {
        let message = self.to_string();
        match self {
            Self::InvalidArgument(_) => Self::InvalidArgument(message),
            Self::NoLeader(_) => Self::NoLeader(message),
            Self::TimedOut(_) => Self::TimedOut(message),
            Self::NotLeader(_) => Self::NotLeader(message),
            Self::Stopping => Self::Stopping,
            Self::FailedPrecondition(_) => Self::FailedPrecondition(message),
            Self::Truncated { requested, first } => Self::Truncated {
                requested: *requested,
                first: *first,
            },
            _ => Self::Raft(message),
        }
    }

    /// The typed failure a caller acts on, if this is one a caller can see.
    fn failure(&self) -> Option<(Code, Failure)> {
        let of = |code, kind| Some((code, Failure::of(kind)));
        match self {
            Self::InvalidArgument(_) => of(Code::InvalidArgument, FailureKind::Invalid),
            Self::NoLeader(_) => of(Code::Unavailable, FailureKind::NoLeader),
            Self::TimedOut(_) => of(Code::Unavailable, FailureKind::TimedOut),
            Self::NotLeader(_) => of(Code::Unavailable, FailureKind::NotLeader),
            Self::Stopping => of(Code::Unavailable, FailureKind::Stopping),
            Self::Truncated { first, .. } => Some((
                Code::OutOfRange,
                Failure {
                    first_index: *first,
                    ..Failure::of(FailureKind::Purged)
                },
            )),
            _ => None,
        }
    }
}

impl From<LogError> for Status {
    fn from(error: LogError) -> Self {
        let message = error.to_string();
        if let Some((code, failure)) = error.failure() {
            return failure.into_status(code, message);
        }
        match error {
            LogError::FailedPrecondition(_) => Status::failed_precondition(message),
            LogError::Raft(_) | LogError::ForwardBroken(_) => Status::unavailable(message),
            _ => Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_facing_error_has_its_code_message_and_kind() {
        let cases = [
            (
                LogError::InvalidArgument("command is empty".into()),
                Code::InvalidArgument,
                "command is empty",
                FailureKind::Invalid,
            ),
            (
                LogError::NoLeader("no leader".into()),
                Code::Unavailable,
                "no leader",
                FailureKind::NoLeader,
            ),
            (
                LogError::TimedOut("not committed".into()),
                Code::Unavailable,
                "not committed",
                FailureKind::TimedOut,
            ),
            (
                LogError::Stopping,
                Code::Unavailable,
                "this log node is shutting down",
                FailureKind::Stopping,
            ),
            (
                LogError::Truncated {
                    requested: 3,
                    first: 10,
                },
                Code::OutOfRange,
                "log index 3 was purged from this node; the first available index is 10",
                FailureKind::Purged,
            ),
        ];
        for (error, code, message, kind) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
            assert_eq!(cairn_proto::contract::failure_kind(&status), kind);
        }
    }

    #[test]
    fn truncated_names_the_first_index_it_holds() {
        let status = Status::from(LogError::Truncated {
            requested: 3,
            first: 10,
        });
        let failure = Failure::from_status(&status).expect("a failure detail");
        assert_eq!(failure.first_index, 10);
    }

    #[test]
    fn a_broken_forward_is_unavailable_without_a_kind() {
        let status = Status::from(LogError::ForwardBroken("reset".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            cairn_proto::contract::failure_kind(&status),
            FailureKind::Unspecified
        );
    }

    #[test]
    fn a_membership_refusal_is_a_failed_precondition_without_a_kind() {
        let status = Status::from(LogError::FailedPrecondition("in progress".into()));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            cairn_proto::contract::failure_kind(&status),
            FailureKind::Unspecified
        );
    }
}
