//! cairn-edge's one error type, and its mapping to gRPC status at the boundary.

use cairn_proto::etcd_error::EtcdError;
use tonic::Status;

/// Everything that can go wrong in the edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// An error etcd's clients know; it goes back to them as etcd sends it.
    #[error("{0}")]
    Etcd(EtcdError),
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Kit(#[from] cairn_kit::KitError),
    /// No backend of a service could be reached.
    #[error("no {service} backend is reachable")]
    NoBackend { service: &'static str },
    /// A backend answered with an error; it goes to the client as it came,
    /// unless the connection broke under the call (then UNAVAILABLE).
    #[error("{0}")]
    Backend(Status),
    /// Proclaim or Resign without the leader key Campaign answered.
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// Proclaim by a candidate whose key is gone or was replaced.
    #[error("election: not leader")]
    ElectionNotLeader,
    /// Leader of an election with no candidates.
    #[error("election: no leader")]
    ElectionNoLeader,
    /// A lock waiter's key vanished (its lease ended) while it waited.
    #[error("mutex: session is expired")]
    SessionExpired,
    /// The watch a lock or campaign waited on ended without the delete.
    #[error("lost watcher waiting for delete")]
    LostWatcher,
}

impl From<EtcdError> for EdgeError {
    fn from(error: EtcdError) -> Self {
        Self::Etcd(error)
    }
}

impl From<Status> for EdgeError {
    fn from(status: Status) -> Self {
        Self::Backend(status)
    }
}

impl From<EdgeError> for Status {
    fn from(error: EdgeError) -> Self {
        match error {
            EdgeError::Etcd(etcd) => Status::new(etcd.code(), etcd.message()),
            EdgeError::Backend(status) => cairn_kit::grpc::unavailable_if_broken(status, "cairn"),
            EdgeError::NoBackend { .. } => Status::unavailable(error.to_string()),
            EdgeError::Settings(_) | EdgeError::Kit(_) => Status::internal(error.to_string()),
            // etcd's lock and election servers return these as plain errors,
            // which gRPC sends as UNKNOWN with the text.
            EdgeError::MissingLeaderKey
            | EdgeError::ElectionNotLeader
            | EdgeError::ElectionNoLeader
            | EdgeError::SessionExpired
            | EdgeError::LostWatcher => Status::unknown(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tonic::Code;

    use super::*;

    #[test]
    fn a_backend_call_that_broke_is_unavailable_and_an_election_refusal_stays_unknown() {
        let mut torn = Status::unknown("transport error");
        torn.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        let broken = Status::from(EdgeError::Backend(torn));
        assert_eq!(broken.code(), Code::Unavailable);
        let relayed = Status::from(EdgeError::Backend(Status::unknown("transport error")));
        assert_eq!(relayed.code(), Code::Unavailable);

        let not_leader = Status::from(EdgeError::ElectionNotLeader);
        assert_eq!(not_leader.code(), Code::Unknown);
        assert_eq!(not_leader.message(), "election: not leader");
        let passed_on = Status::from(EdgeError::Backend(not_leader));
        assert_eq!(passed_on.code(), Code::Unknown);
        assert_eq!(passed_on.message(), "election: not leader");
        let etcd = Status::from(EdgeError::Backend(EtcdError::NoLeader.into()));
        assert_eq!(etcd.code(), Code::Unavailable);
        assert_eq!(etcd.message(), "etcdserver: no leader");
    }
}
