//! Each etcd error reaches the client with etcd's code and exact message.

use cairn_proto::etcd_error::EtcdError;
use tonic::{Code, Status};

#[test]
fn every_error_has_etcds_code_and_message() {
    let cases = [
        (
            EtcdError::Compacted,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            EtcdError::FutureRevision,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            EtcdError::LeaseTtlTooLarge,
            Code::OutOfRange,
            "etcdserver: too large lease TTL",
        ),
        (
            EtcdError::NoSpace,
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        ),
        (
            EtcdError::TooManyRequests,
            Code::ResourceExhausted,
            "etcdserver: too many requests",
        ),
        (
            EtcdError::LeaseNotFound,
            Code::NotFound,
            "etcdserver: requested lease not found",
        ),
        (
            EtcdError::MemberNotFound,
            Code::NotFound,
            "etcdserver: member not found",
        ),
        (
            EtcdError::LeaseExists,
            Code::FailedPrecondition,
            "etcdserver: lease already exists",
        ),
        (
            EtcdError::KeyNotProvided,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            EtcdError::KeyNotFound,
            Code::InvalidArgument,
            "etcdserver: key not found",
        ),
        (
            EtcdError::ValueProvided,
            Code::InvalidArgument,
            "etcdserver: value is provided",
        ),
        (
            EtcdError::LeaseProvided,
            Code::InvalidArgument,
            "etcdserver: lease is provided",
        ),
        (
            EtcdError::TooManyOps,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        (
            EtcdError::DuplicateKey,
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            EtcdError::InvalidSortOption,
            Code::InvalidArgument,
            "etcdserver: invalid sort option",
        ),
        (
            EtcdError::RequestTooLarge,
            Code::InvalidArgument,
            "etcdserver: request is too large",
        ),
        (
            EtcdError::WatchCanceled,
            Code::Cancelled,
            "etcdserver: watch canceled",
        ),
        (
            EtcdError::RequestCanceled,
            Code::Cancelled,
            "etcdserver: request canceled",
        ),
        (
            EtcdError::NoLeader,
            Code::Unavailable,
            "etcdserver: no leader",
        ),
        (
            EtcdError::LeaderChanged,
            Code::Unavailable,
            "etcdserver: leader changed",
        ),
        (
            EtcdError::Stopped,
            Code::Unavailable,
            "etcdserver: server stopped",
        ),
        (
            EtcdError::Timeout,
            Code::Unavailable,
            "etcdserver: request timed out",
        ),
        (
            EtcdError::NotLeader,
            Code::FailedPrecondition,
            "etcdserver: not leader",
        ),
        (
            EtcdError::NotSupportedForLearner,
            Code::FailedPrecondition,
            "etcdserver: rpc not supported for learner",
        ),
        (
            EtcdError::BadLeaderTransferee,
            Code::FailedPrecondition,
            "etcdserver: bad leader transferee",
        ),
        (
            EtcdError::MemberIdExists,
            Code::FailedPrecondition,
            "etcdserver: member ID already exist",
        ),
        (
            EtcdError::PeerUrlExists,
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        ),
        (
            EtcdError::MemberNotLearner,
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member",
        ),
        (
            EtcdError::InvalidPeerUrls,
            Code::InvalidArgument,
            "etcdserver: given member URLs are invalid",
        ),
        (
            EtcdError::PermissionDenied,
            Code::PermissionDenied,
            "etcdserver: permission denied",
        ),
        (
            EtcdError::InvalidAuthToken,
            Code::Unauthenticated,
            "etcdserver: invalid auth token",
        ),
        (
            EtcdError::AuthNotEnabled,
            Code::FailedPrecondition,
            "etcdserver: authentication is not enabled",
        ),
        (
            EtcdError::AuthFailed,
            Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password",
        ),
        (
            EtcdError::UserEmpty,
            Code::InvalidArgument,
            "etcdserver: user name is empty",
        ),
        (
            EtcdError::RoleEmpty,
            Code::InvalidArgument,
            "etcdserver: role name is empty",
        ),
        (
            EtcdError::PermissionNotGiven,
            Code::InvalidArgument,
            "etcdserver: permission not given",
        ),
        (
            EtcdError::InvalidAuthManagement,
            Code::InvalidArgument,
            "etcdserver: invalid auth management",
        ),
        (
            EtcdError::AuthOldRevision,
            Code::InvalidArgument,
            "etcdserver: revision of auth store is old",
        ),
        (
            EtcdError::UserExists,
            Code::FailedPrecondition,
            "etcdserver: user name already exists",
        ),
        (
            EtcdError::UserNotFound,
            Code::FailedPrecondition,
            "etcdserver: user name not found",
        ),
        (
            EtcdError::RoleExists,
            Code::FailedPrecondition,
            "etcdserver: role name already exists",
        ),
        (
            EtcdError::RoleNotFound,
            Code::FailedPrecondition,
            "etcdserver: role name not found",
        ),
        (
            EtcdError::RootUserNotExist,
            Code::FailedPrecondition,
            "etcdserver: root user does not exist",
        ),
        (
            EtcdError::RootRoleNotExist,
            Code::FailedPrecondition,
            "etcdserver: root user does not have root role",
        ),
        (
            EtcdError::RoleNotGranted,
            Code::FailedPrecondition,
            "etcdserver: role is not granted to the user",
        ),
        (
            EtcdError::PermissionNotGranted,
            Code::FailedPrecondition,
            "etcdserver: permission is not granted to the role",
        ),
        (
            EtcdError::Corrupt,
            Code::DataLoss,
            "etcdserver: corrupt cluster",
        ),
    ];
    for (error, code, message) in cases {
        let status = Status::from(error);
        assert_eq!(status.code(), code, "{error:?}");
        assert_eq!(status.message(), message, "{error:?}");
        assert_eq!(error.to_string(), message);
    }
}
