//! etcd's errors as its clients recognise them.
//!
//! Clients match on the exact message (clientv3 turns it back into a typed
//! error), so the text and the gRPC code are part of the wire contract. Every
//! cairn service maps its own errors onto these at its API boundary.

use std::fmt;

use tonic::{Code, Status};

/// An error etcd's clients know, by its exact message and code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EtcdError {
    Compacted,
    FutureRevision,
    LeaseTtlTooLarge,
    NoSpace,
    TooManyRequests,
    LeaseNotFound,
    MemberNotFound,
    LeaseExists,
    KeyNotProvided,
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    TooManyOps,
    DuplicateKey,
    InvalidSortOption,
    RequestTooLarge,
    WatchCanceled,
    RequestCanceled,
    NoLeader,
    LeaderChanged,
    Stopped,
    Timeout,
    NotLeader,
    NotSupportedForLearner,
    BadLeaderTransferee,
    MemberIdExists,
    PeerUrlExists,
    MemberNotLearner,
    InvalidPeerUrls,
    PermissionDenied,
    InvalidAuthToken,
    AuthNotEnabled,
    AuthFailed,
    UserEmpty,
    RoleEmpty,
    PermissionNotGiven,
    InvalidAuthManagement,
    AuthOldRevision,
    UserExists,
    UserNotFound,
    RoleExists,
    RoleNotFound,
    RootUserNotExist,
    RootRoleNotExist,
    RoleNotGranted,
    PermissionNotGranted,
    Corrupt,
}

impl EtcdError {
    /// The message, exactly as etcd sends it.
    pub fn message(self) -> &'static str {
        match self {
            Self::Compacted => "etcdserver: mvcc: required revision has been compacted",
            Self::FutureRevision => "etcdserver: mvcc: required revision is a future revision",
            Self::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            Self::NoSpace => "etcdserver: mvcc: database space exceeded",
            Self::TooManyRequests => "etcdserver: too many requests",
            Self::LeaseNotFound => "etcdserver: requested lease not found",
            Self::MemberNotFound => "etcdserver: member not found",
            Self::LeaseExists => "etcdserver: lease already exists",
            Self::KeyNotProvided => "etcdserver: key is not provided",
            Self::KeyNotFound => "etcdserver: key not found",
            Self::ValueProvided => "etcdserver: value is provided",
            Self::LeaseProvided => "etcdserver: lease is provided",
            Self::TooManyOps => "etcdserver: too many operations in txn request",
            Self::DuplicateKey => "etcdserver: duplicate key given in txn request",
            Self::InvalidSortOption => "etcdserver: invalid sort option",
            Self::RequestTooLarge => "etcdserver: request is too large",
            Self::WatchCanceled => "etcdserver: watch canceled",
            Self::RequestCanceled => "etcdserver: request canceled",
            Self::NoLeader => "etcdserver: no leader",
            Self::LeaderChanged => "etcdserver: leader changed",
            Self::Stopped => "etcdserver: server stopped",
            Self::Timeout => "etcdserver: request timed out",
            Self::NotLeader => "etcdserver: not leader",
            Self::NotSupportedForLearner => "etcdserver: rpc not supported for learner",
            Self::BadLeaderTransferee => "etcdserver: bad leader transferee",
            Self::MemberIdExists => "etcdserver: member ID already exist",
            Self::PeerUrlExists => "etcdserver: Peer URLs already exists",
            Self::MemberNotLearner => "etcdserver: can only promote a learner member",
            Self::InvalidPeerUrls => "etcdserver: given member URLs are invalid",
            Self::PermissionDenied => "etcdserver: permission denied",
            Self::InvalidAuthToken => "etcdserver: invalid auth token",
            Self::AuthNotEnabled => "etcdserver: authentication is not enabled",
            Self::AuthFailed => "etcdserver: authentication failed, invalid user ID or password",
            Self::UserEmpty => "etcdserver: user name is empty",
            Self::RoleEmpty => "etcdserver: role name is empty",
            Self::PermissionNotGiven => "etcdserver: permission not given",
            Self::InvalidAuthManagement => "etcdserver: invalid auth management",
            Self::AuthOldRevision => "etcdserver: revision of auth store is old",
            Self::UserExists => "etcdserver: user name already exists",
            Self::UserNotFound => "etcdserver: user name not found",
            Self::RoleExists => "etcdserver: role name already exists",
            Self::RoleNotFound => "etcdserver: role name not found",
            Self::RootUserNotExist => "etcdserver: root user does not exist",
            Self::RootRoleNotExist => "etcdserver: root user does not have root role",
            Self::RoleNotGranted => "etcdserver: role is not granted to the user",
            Self::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            Self::Corrupt => "etcdserver: corrupt cluster",
        }
    }

    /// The gRPC code etcd sends it with.
    pub fn code(self) -> Code {
        match self {
            Self::Compacted | Self::FutureRevision | Self::LeaseTtlTooLarge => Code::OutOfRange,
            Self::NoSpace | Self::TooManyRequests => Code::ResourceExhausted,
            Self::LeaseNotFound | Self::MemberNotFound => Code::NotFound,
            Self::KeyNotProvided
            | Self::KeyNotFound
            | Self::ValueProvided
            | Self::LeaseProvided
            | Self::TooManyOps
            | Self::DuplicateKey
            | Self::InvalidSortOption
            | Self::RequestTooLarge
            | Self::InvalidPeerUrls
            | Self::AuthFailed
            | Self::UserEmpty
            | Self::RoleEmpty
            | Self::PermissionNotGiven
            | Self::InvalidAuthManagement
            | Self::AuthOldRevision => Code::InvalidArgument,
            Self::WatchCanceled | Self::RequestCanceled => Code::Cancelled,
            Self::NoLeader | Self::LeaderChanged | Self::Stopped | Self::Timeout => {
                Code::Unavailable
            }
            Self::LeaseExists
            | Self::NotLeader
            | Self::NotSupportedForLearner
            | Self::BadLeaderTransferee
            | Self::MemberIdExists
            | Self::PeerUrlExists
            | Self::MemberNotLearner
            | Self::AuthNotEnabled
            | Self::UserExists
            | Self::UserNotFound
            | Self::RoleExists
            | Self::RoleNotFound
            | Self::RootUserNotExist
            | Self::RootRoleNotExist
            | Self::RoleNotGranted
            | Self::PermissionNotGranted => Code::FailedPrecondition,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::InvalidAuthToken => Code::Unauthenticated,
            Self::Corrupt => Code::DataLoss,
        }
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for EtcdError {}

impl From<EtcdError> for Status {
    fn from(error: EtcdError) -> Self {
        Status::new(error.code(), error.message())
    }
}
