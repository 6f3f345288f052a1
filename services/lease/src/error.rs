//! cairn-lease's one error type, and its mapping to gRPC status at the boundary.

use cairn_proto::etcd_error::EtcdError;
use tonic::Status;

/// Everything that can go wrong in a lease instance.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// An error etcd's clients know; it goes back to them as etcd sends it.
    #[error("{0}")]
    Etcd(EtcdError),
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Kit(#[from] cairn_kit::KitError),
    /// A replica answered with an error; it goes to the client as it came.
    #[error("{0}")]
    Replica(Status),
    /// This instance lost its claim while the call was in progress.
    #[error("cairn: this lease instance is no longer active")]
    Deposed,
    /// No instance is active, or the active one cannot be reached.
    #[error("cairn: no active lease instance: {0}")]
    NoActive(String),
}

impl From<EtcdError> for LeaseError {
    fn from(error: EtcdError) -> Self {
        Self::Etcd(error)
    }
}

impl From<Status> for LeaseError {
    fn from(status: Status) -> Self {
        Self::Replica(status)
    }
}

impl From<LeaseError> for Status {
    fn from(error: LeaseError) -> Self {
        match error {
            LeaseError::Etcd(etcd) => etcd.into(),
            LeaseError::Replica(status) => status,
            LeaseError::Deposed | LeaseError::NoActive(_) => Status::unavailable(error.to_string()),
            LeaseError::Settings(_) | LeaseError::Kit(_) => Status::internal(error.to_string()),
        }
    }
}
