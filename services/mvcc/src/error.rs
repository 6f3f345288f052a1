//! cairn-mvcc's one error type, and its mapping to gRPC status at the boundary.

use cairn_proto::contract::{Failure, FailureKind};
use cairn_proto::etcd_error::EtcdError;
use tonic::{Code, Status};

use crate::log_client::LogFailure;

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
    #[error(transparent)]
    Kit(#[from] cairn_kit::KitError),
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Something read back from disk does not decode: the data directory is damaged.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The log refused or could not be reached; its kind says what to tell
    /// the client.
    #[error("log: {0}")]
    Log(LogFailure),
    /// The log no longer holds the entries this replica needs next.
    #[error("the log no longer holds index {wanted} (its first is {first}); this replica can only go on from a copy of another replica's store, which it takes at start from `seed.replicas`")]
    Purged { wanted: u64, first: u64 },
    /// The log has purged what this replica needs and no other replica is
    /// configured to copy the store from: only an operator can fix that.
    #[error("the log no longer holds index {wanted} (its first is {first}) and no other replica is configured to copy the store from: set `seed.replicas` (CAIRN_SEED__REPLICAS) to the other replicas' addresses")]
    NoSeedPeers { wanted: u64, first: u64 },
    /// The replica has no store it may serve yet (it is deciding whether its
    /// own is usable, copying one from a peer, or catching up); the edge
    /// sends the call to another replica.
    #[error("cairn: this replica is not serving yet: {0}")]
    NotReady(String),
    #[error("nats: {0}")]
    Nats(String),
    /// A snapshot could not be taken, sent or unpacked.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// An etcd snapshot's contents are inconsistent, or a store cannot be
    /// mapped to or from them; nothing was written.
    #[error("etcd snapshot: {0}")]
    EtcdSnapshot(String),
    /// A file is not a bbolt database that can be read.
    #[error(transparent)]
    Bbolt(#[from] crate::bbolt::BboltError),
    /// The replica stopped applying the log because its storage failed; it
    /// answers nothing rather than serve state that may have diverged.
    #[error("cairn: this replica stopped applying the log: {0}")]
    Failed(String),
    /// A restore into a cluster that already holds data: decided by the
    /// apply, so every replica refuses the same Restore command alike.
    #[error("{0}")]
    NotFresh(String),
    /// A response would be larger than gRPC sends.
    #[error("grpc: trying to send message larger than max ({limit} bytes)")]
    ResponseTooLarge { limit: usize },
    /// A password could not be hashed or checked (never its text).
    #[error("password: {0}")]
    Password(String),
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

impl From<LogFailure> for MvccError {
    fn from(failure: LogFailure) -> Self {
        Self::Log(failure)
    }
}

impl MvccError {
    /// The etcd error this is, if any: what decides the client-visible outcome.
    pub fn etcd(&self) -> Option<EtcdError> {
        match self {
            Self::Etcd(error) => Some(*error),
            Self::Compacted { .. } => Some(EtcdError::Compacted),
            _ => None,
        }
    }

    /// Whether the apply refused a command on the state's merits (the same
    /// on every replica), rather than failed to write.
    pub(crate) fn is_refusal(&self) -> bool {
        self.etcd().is_some() || matches!(self, Self::NotFresh(_))
    }
}

/// What a client is told when the log failed a request: no leader when
/// nothing was appended, etcd's timeout when the write may still commit.
fn log_status(failure: &LogFailure) -> Status {
    match failure.kind {
        FailureKind::Invalid => Status::invalid_argument(failure.message.clone()),
        _ if failure.outcome_unknown() => EtcdError::Timeout.into(),
        _ => EtcdError::NoLeader.into(),
    }
}

impl From<MvccError> for Status {
    fn from(error: MvccError) -> Self {
        match error {
            MvccError::Etcd(etcd) => etcd.into(),
            MvccError::Compacted { compact_revision } => Failure {
                compact_revision,
                ..Failure::of(FailureKind::Compacted)
            }
            .into_status(EtcdError::Compacted.code(), EtcdError::Compacted.message()),
            MvccError::Log(failure) => {
                tracing::debug!(%failure, kind = ?failure.kind, "the log failed a request");
                log_status(&failure)
            }
            MvccError::Failed(_) | MvccError::NotReady(_) => {
                Failure::of(FailureKind::ReplicaFailed)
                    .into_status(Code::Unavailable, error.to_string())
            }
            MvccError::Stopped => EtcdError::Stopped.into(),
            MvccError::InvalidArgument(message) => Status::invalid_argument(message),
            MvccError::NotFresh(message) => Status::failed_precondition(message),
            MvccError::ResponseTooLarge { .. } => Status::resource_exhausted(error.to_string()),
            other => Status::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: FailureKind, sent: bool) -> MvccError {
        MvccError::Log(LogFailure {
            kind,
            sent,
            first_index: 0,
            message: "from the log".into(),
        })
    }

    #[test]
    fn the_log_failure_kind_decides_what_the_client_hears() {
        let no_leader = Status::from(failure(FailureKind::NoLeader, true));
        assert_eq!(no_leader.code(), Code::Unavailable);
        assert_eq!(no_leader.message(), "etcdserver: no leader");
        let timed_out = Status::from(failure(FailureKind::TimedOut, true));
        assert_eq!(timed_out.message(), "etcdserver: request timed out");
        let broken = Status::from(failure(FailureKind::Unspecified, true));
        assert_eq!(broken.message(), "etcdserver: request timed out");
        let unreachable = Status::from(failure(FailureKind::Unspecified, false));
        assert_eq!(unreachable.message(), "etcdserver: no leader");
    }

    #[test]
    fn compacted_carries_the_compact_revision_as_a_typed_detail() {
        let status = Status::from(MvccError::Compacted {
            compact_revision: 12,
        });
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.message(), EtcdError::Compacted.message());
        let failure = Failure::from_status(&status).expect("a failure detail");
        assert_eq!(failure.kind(), FailureKind::Compacted);
        assert_eq!(failure.compact_revision, 12);
    }

    #[test]
    fn a_failed_replica_says_so_in_a_kind_the_edge_can_act_on() {
        let status = Status::from(MvccError::Failed("disk".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            cairn_proto::contract::failure_kind(&status),
            FailureKind::ReplicaFailed
        );
    }

    #[test]
    fn a_replica_not_serving_yet_is_passed_over_like_a_failed_one() {
        let status = Status::from(MvccError::NotReady("copying the store".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            cairn_proto::contract::failure_kind(&status),
            FailureKind::ReplicaFailed
        );
        assert!(status.message().contains("copying the store"));
    }
}
