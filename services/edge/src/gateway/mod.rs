//! etcd's HTTP/JSON gateway: `POST /v3/...` (or `/v3beta/...`, as etcd 3.4
//! also serves) with a JSON request, answered in
//! etcd's JSON (proto field names, 64-bit integers as strings, bytes as
//! base64, enums by name). Each path is the gRPC call it names, made through
//! the edge's own routes, so it is routed, limited and traced as that call.
//!
//! - `call`: turning a JSON call into a gRPC call and back.
//! - `json`: bodies, answers and errors as etcd's gateway writes them.

mod call;
mod json;

use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::{v3electionpb as election, v3lockpb as lock};

use crate::local::Local;
use call::Message;

/// The gateway's routes, calling into `local`. A JSON body may be up to
/// `max_body` bytes; the gRPC call it becomes meets the edge's own limit.
pub(crate) fn router(local: Local, max_body: usize) -> Router {
    Table {
        router: Router::new(),
        local,
    }
    .unary::<pb::RangeRequest, pb::RangeResponse>("/v3/kv/range", "/etcdserverpb.KV/Range")
    .unary::<pb::PutRequest, pb::PutResponse>("/v3/kv/put", "/etcdserverpb.KV/Put")
    .unary::<pb::DeleteRangeRequest, pb::DeleteRangeResponse>(
        "/v3/kv/deleterange",
        "/etcdserverpb.KV/DeleteRange",
    )
    .unary::<pb::TxnRequest, pb::TxnResponse>("/v3/kv/txn", "/etcdserverpb.KV/Txn")
    .unary::<pb::CompactionRequest, pb::CompactionResponse>(
        "/v3/kv/compaction",
        "/etcdserverpb.KV/Compact",
    )
    .streaming::<pb::WatchRequest, pb::WatchResponse>("/v3/watch", "/etcdserverpb.Watch/Watch")
    .leases()
    .cluster()
    .maintenance()
    .auth()
    .unary::<lock::LockRequest, lock::LockResponse>("/v3/lock/lock", "/v3lockpb.Lock/Lock")
    .unary::<lock::UnlockRequest, lock::UnlockResponse>("/v3/lock/unlock", "/v3lockpb.Lock/Unlock")
    .elections()
    .router
    .route("/v3/{*unknown}", axum::routing::any(not_found))
    .route("/v3beta/{*unknown}", axum::routing::any(not_found))
    .layer(DefaultBodyLimit::max(max_body))
}

/// An answer to any path the gateway does not serve, as etcd's: 404 and text.
async fn not_found() -> Response {
    (http::StatusCode::NOT_FOUND, "Not Found\n").into_response()
}

/// An answer to a method other than POST on a gateway path, as etcd's.
async fn method_not_allowed() -> Response {
    (http::StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response()
}

struct Table {
    router: Router,
    local: Local,
}

/// The prefix etcd 3.3 and 3.4 serve every gateway path under besides `/v3`.
const BETA_PREFIX: &str = "/v3beta/";

impl Table {
    /// Routes POST `path` (under `/v3/`, and its twin under `/v3beta/`) to
    /// `handler`; another method is refused.
    fn post(mut self, path: &str, handler: axum::routing::MethodRouter) -> Self {
        let handler = handler.fallback(method_not_allowed);
        let beta = path.replacen("/v3/", BETA_PREFIX, 1);
        self.router = self
            .router
            .route(path, handler.clone())
            .route(&beta, handler);
        self
    }

    fn unary<Req: Message, Resp: Message>(self, path: &str, grpc: &'static str) -> Self {
        let local = self.local.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            call::unary::<Req, Resp>(local.clone(), grpc, headers, body)
        };
        self.post(path, post(handler))
    }

    fn server_streaming<Req: Message, Resp: Message>(self, path: &str, grpc: &'static str) -> Self {
        let local = self.local.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            call::server_streaming::<Req, Resp>(local.clone(), grpc, headers, body)
        };
        self.post(path, post(handler))
    }

    fn streaming<Req: Message, Resp: Message>(self, path: &str, grpc: &'static str) -> Self {
        let local = self.local.clone();
        let handler = move |headers: HeaderMap, body: Body| {
            call::streaming::<Req, Resp>(local.clone(), grpc, headers, body)
        };
        self.post(path, post(handler))
    }

    fn leases(self) -> Self {
        // etcd serves revoke, time-to-live and the lease list under /v3/kv/lease too.
        self.unary::<pb::LeaseGrantRequest, pb::LeaseGrantResponse>(
            "/v3/lease/grant",
            "/etcdserverpb.Lease/LeaseGrant",
        )
        .unary::<pb::LeaseRevokeRequest, pb::LeaseRevokeResponse>(
            "/v3/lease/revoke",
            "/etcdserverpb.Lease/LeaseRevoke",
        )
        .unary::<pb::LeaseRevokeRequest, pb::LeaseRevokeResponse>(
            "/v3/kv/lease/revoke",
            "/etcdserverpb.Lease/LeaseRevoke",
        )
        .streaming::<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>(
            "/v3/lease/keepalive",
            "/etcdserverpb.Lease/LeaseKeepAlive",
        )
        .unary::<pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse>(
            "/v3/lease/timetolive",
            "/etcdserverpb.Lease/LeaseTimeToLive",
        )
        .unary::<pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse>(
            "/v3/kv/lease/timetolive",
            "/etcdserverpb.Lease/LeaseTimeToLive",
        )
        .unary::<pb::LeaseLeasesRequest, pb::LeaseLeasesResponse>(
            "/v3/lease/leases",
            "/etcdserverpb.Lease/LeaseLeases",
        )
        .unary::<pb::LeaseLeasesRequest, pb::LeaseLeasesResponse>(
            "/v3/kv/lease/leases",
            "/etcdserverpb.Lease/LeaseLeases",
        )
    }

    fn cluster(self) -> Self {
        self.unary::<pb::MemberAddRequest, pb::MemberAddResponse>(
            "/v3/cluster/member/add",
            "/etcdserverpb.Cluster/MemberAdd",
        )
        .unary::<pb::MemberRemoveRequest, pb::MemberRemoveResponse>(
            "/v3/cluster/member/remove",
            "/etcdserverpb.Cluster/MemberRemove",
        )
        .unary::<pb::MemberUpdateRequest, pb::MemberUpdateResponse>(
            "/v3/cluster/member/update",
            "/etcdserverpb.Cluster/MemberUpdate",
        )
        .unary::<pb::MemberListRequest, pb::MemberListResponse>(
            "/v3/cluster/member/list",
            "/etcdserverpb.Cluster/MemberList",
        )
        .unary::<pb::MemberPromoteRequest, pb::MemberPromoteResponse>(
            "/v3/cluster/member/promote",
            "/etcdserverpb.Cluster/MemberPromote",
        )
    }

    fn maintenance(self) -> Self {
        self.unary::<pb::AlarmRequest, pb::AlarmResponse>(
            "/v3/maintenance/alarm",
            "/etcdserverpb.Maintenance/Alarm",
        )
        .unary::<pb::StatusRequest, pb::StatusResponse>(
            "/v3/maintenance/status",
            "/etcdserverpb.Maintenance/Status",
        )
        .unary::<pb::DefragmentRequest, pb::DefragmentResponse>(
            "/v3/maintenance/defragment",
            "/etcdserverpb.Maintenance/Defragment",
        )
        .unary::<pb::HashRequest, pb::HashResponse>(
            "/v3/maintenance/hash",
            "/etcdserverpb.Maintenance/Hash",
        )
        .unary::<pb::HashKvRequest, pb::HashKvResponse>(
            "/v3/maintenance/hashkv",
            "/etcdserverpb.Maintenance/HashKV",
        )
        .server_streaming::<pb::SnapshotRequest, pb::SnapshotResponse>(
            "/v3/maintenance/snapshot",
            "/etcdserverpb.Maintenance/Snapshot",
        )
        .unary::<pb::MoveLeaderRequest, pb::MoveLeaderResponse>(
            "/v3/maintenance/transfer-leadership",
            "/etcdserverpb.Maintenance/MoveLeader",
        )
        .unary::<pb::DowngradeRequest, pb::DowngradeResponse>(
            "/v3/maintenance/downgrade",
            "/etcdserverpb.Maintenance/Downgrade",
        )
    }

    fn auth(self) -> Self {
        self.unary::<pb::AuthEnableRequest, pb::AuthEnableResponse>(
            "/v3/auth/enable",
            "/etcdserverpb.Auth/AuthEnable",
        )
        .unary::<pb::AuthDisableRequest, pb::AuthDisableResponse>(
            "/v3/auth/disable",
            "/etcdserverpb.Auth/AuthDisable",
        )
        .unary::<pb::AuthStatusRequest, pb::AuthStatusResponse>(
            "/v3/auth/status",
            "/etcdserverpb.Auth/AuthStatus",
        )
        .unary::<pb::AuthenticateRequest, pb::AuthenticateResponse>(
            "/v3/auth/authenticate",
            "/etcdserverpb.Auth/Authenticate",
        )
        .unary::<pb::AuthUserAddRequest, pb::AuthUserAddResponse>(
            "/v3/auth/user/add",
            "/etcdserverpb.Auth/UserAdd",
        )
        .unary::<pb::AuthUserGetRequest, pb::AuthUserGetResponse>(
            "/v3/auth/user/get",
            "/etcdserverpb.Auth/UserGet",
        )
        .unary::<pb::AuthUserListRequest, pb::AuthUserListResponse>(
            "/v3/auth/user/list",
            "/etcdserverpb.Auth/UserList",
        )
        .unary::<pb::AuthUserDeleteRequest, pb::AuthUserDeleteResponse>(
            "/v3/auth/user/delete",
            "/etcdserverpb.Auth/UserDelete",
        )
        .unary::<pb::AuthUserChangePasswordRequest, pb::AuthUserChangePasswordResponse>(
            "/v3/auth/user/changepw",
            "/etcdserverpb.Auth/UserChangePassword",
        )
        .unary::<pb::AuthUserGrantRoleRequest, pb::AuthUserGrantRoleResponse>(
            "/v3/auth/user/grant",
            "/etcdserverpb.Auth/UserGrantRole",
        )
        .unary::<pb::AuthUserRevokeRoleRequest, pb::AuthUserRevokeRoleResponse>(
            "/v3/auth/user/revoke",
            "/etcdserverpb.Auth/UserRevokeRole",
        )
        .unary::<pb::AuthRoleAddRequest, pb::AuthRoleAddResponse>(
            "/v3/auth/role/add",
            "/etcdserverpb.Auth/RoleAdd",
        )
        .unary::<pb::AuthRoleGetRequest, pb::AuthRoleGetResponse>(
            "/v3/auth/role/get",
            "/etcdserverpb.Auth/RoleGet",
        )
        .unary::<pb::AuthRoleListRequest, pb::AuthRoleListResponse>(
            "/v3/auth/role/list",
            "/etcdserverpb.Auth/RoleList",
        )
        .unary::<pb::AuthRoleDeleteRequest, pb::AuthRoleDeleteResponse>(
            "/v3/auth/role/delete",
            "/etcdserverpb.Auth/RoleDelete",
        )
        .unary::<pb::AuthRoleGrantPermissionRequest, pb::AuthRoleGrantPermissionResponse>(
            "/v3/auth/role/grant",
            "/etcdserverpb.Auth/RoleGrantPermission",
        )
        .unary::<pb::AuthRoleRevokePermissionRequest, pb::AuthRoleRevokePermissionResponse>(
            "/v3/auth/role/revoke",
            "/etcdserverpb.Auth/RoleRevokePermission",
        )
    }

    fn elections(self) -> Self {
        self.unary::<election::CampaignRequest, election::CampaignResponse>(
            "/v3/election/campaign",
            "/v3electionpb.Election/Campaign",
        )
        .unary::<election::ProclaimRequest, election::ProclaimResponse>(
            "/v3/election/proclaim",
            "/v3electionpb.Election/Proclaim",
        )
        .unary::<election::LeaderRequest, election::LeaderResponse>(
            "/v3/election/leader",
            "/v3electionpb.Election/Leader",
        )
        .server_streaming::<election::LeaderRequest, election::LeaderResponse>(
            "/v3/election/observe",
            "/v3electionpb.Election/Observe",
        )
        .unary::<election::ResignRequest, election::ResignResponse>(
            "/v3/election/resign",
            "/v3electionpb.Election/Resign",
        )
    }
}
