//! Malformed input at every public RPC of the edge: random bytes, cut and
//! padded messages, fields of the wrong wire type, oversized bodies, gRPC
//! frames whose headers lie, extreme values, and streams that carry garbage or
//! break off. Whatever arrives, the edge must answer with a gRPC status etcd
//! would send for it, promptly, without dropping the connection, and no
//! process may die; values written between rounds must read back intact and
//! both replicas must hash alike.
//!
//! `CAIRNTEST_FUZZ_FOR` (e.g. `90s`, `5m`; what `just fuzz-edge` sets) runs
//! it longer than CI's 45 s; `CAIRNTEST_SEED` replays a run's choices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cairn_integration::raw_grpc::{exchange, frame, message_frame, Answer, Ending, Part};
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::{duration_from_env, eventually, run_seed, with_process_output};
use cairn_proto::etcdserverpb as pb;
use cairn_proto::v3electionpb as election;
use cairn_proto::v3lockpb as lock;
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

/// How long the input is thrown unless `CAIRNTEST_FUZZ_FOR` says otherwise.
const FUZZ_FOR: Duration = Duration::from_secs(45);
/// Callers sending at once, each on its own connection.
const WORKERS: u64 = 6;
/// Calls per round; each round ends with writes of known values.
const CALLS_PER_ROUND: usize = 25;
/// Known values written after each round.
const WRITES_PER_ROUND: usize = 3;
/// The longest a call may go unanswered: above the edge's own unary timeout
/// (10 s), which answers etcd's "request timed out" itself.
const PATIENCE: Duration = Duration::from_secs(12);
/// How long a well-formed call that may rightly wait (a watch, a lock held
/// by another, a campaign) is given before the caller gives up on it.
const SETTLE: Duration = Duration::from_millis(1500);
/// Keys the known values live under; nothing the fuzz sends may touch them.
const KNOWN: &[u8] = b"known/";
/// The end of the known keys' range.
const KNOWN_END: &[u8] = b"known0";
/// etcd's request limit (`--max-request-bytes`).
const ETCD_MAX_REQUEST: usize = 3 * 1024 * 1024 / 2;

/// The shape of an RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Unary,
    ServerStream,
    Bidi,
}

/// One public RPC of the edge (or a method it does not have).
struct Method {
    path: &'static str,
    shape: Shape,
    /// Whether `bytes` decode as this method's request.
    decodes: fn(&[u8]) -> bool,
    /// A valid-looking request with extreme values.
    valid: fn(&mut Gen) -> Vec<u8>,
    /// A well-formed call may rightly stay unanswered (a watch, a lock or
    /// leadership held by another, an observer with no leader yet).
    may_wait: bool,
    /// It is no method at all: cairn answers UNIMPLEMENTED.
    unimplemented: bool,
}

fn decodes<T: Message + Default>(bytes: &[u8]) -> bool {
    T::decode(bytes).is_ok()
}

macro_rules! method {
    ($path:literal, $shape:ident, $request:ty, $valid:expr) => {
        method!($path, $shape, $request, $valid, false, false)
    };
    ($path:literal, $shape:ident, $request:ty, $valid:expr, $waits:expr, $unimplemented:expr) => {
        Method {
            path: $path,
            shape: Shape::$shape,
            decodes: decodes::<$request>,
            valid: $valid,
            may_wait: $waits,
            unimplemented: $unimplemented,
        }
    };
}

/// Every method of the etcd protos under `proto/etcd/`, and a few that do
/// not exist.
fn methods() -> Vec<Method> {
    vec![
        method!("/etcdserverpb.KV/Range", Unary, pb::RangeRequest, range),
        method!("/etcdserverpb.KV/Put", Unary, pb::PutRequest, put),
        method!(
            "/etcdserverpb.KV/DeleteRange",
            Unary,
            pb::DeleteRangeRequest,
            delete_range
        ),
        method!("/etcdserverpb.KV/Txn", Unary, pb::TxnRequest, txn),
        method!(
            "/etcdserverpb.KV/Compact",
            Unary,
            pb::CompactionRequest,
            compact
        ),
        method!(
            "/etcdserverpb.Watch/Watch",
            Bidi,
            pb::WatchRequest,
            watch,
            true,
            false
        ),
        method!(
            "/etcdserverpb.Lease/LeaseGrant",
            Unary,
            pb::LeaseGrantRequest,
            lease_grant
        ),
        method!(
            "/etcdserverpb.Lease/LeaseRevoke",
            Unary,
            pb::LeaseRevokeRequest,
            |g| { pb::LeaseRevokeRequest { id: g.int() }.encode_to_vec() }
        ),
        method!(
            "/etcdserverpb.Lease/LeaseKeepAlive",
            Bidi,
            pb::LeaseKeepAliveRequest,
            |g| pb::LeaseKeepAliveRequest { id: g.int() }.encode_to_vec(),
            true,
            false
        ),
        method!(
            "/etcdserverpb.Lease/LeaseTimeToLive",
            Unary,
            pb::LeaseTimeToLiveRequest,
            |g| {
                pb::LeaseTimeToLiveRequest {
                    id: g.int(),
                    keys: g.rng.random_bool(0.5),
                }
                .encode_to_vec()
            }
        ),
        method!(
            "/etcdserverpb.Lease/LeaseLeases",
            Unary,
            pb::LeaseLeasesRequest,
            |_| Vec::new()
        ),
        method!(
            "/etcdserverpb.Cluster/MemberAdd",
            Unary,
            pb::MemberAddRequest,
            member_add
        ),
        method!(
            "/etcdserverpb.Cluster/MemberRemove",
            Unary,
            pb::MemberRemoveRequest,
            |g| { pb::MemberRemoveRequest { id: g.member_id() }.encode_to_vec() }
        ),
        method!(
            "/etcdserverpb.Cluster/MemberUpdate",
            Unary,
            pb::MemberUpdateRequest,
            |g| {
                let peer_ur_ls = g.urls();
                pb::MemberUpdateRequest {
                    id: g.member_id(),
                    peer_ur_ls,
                }
                .encode_to_vec()
            }
        ),
        method!(
            "/etcdserverpb.Cluster/MemberList",
            Unary,
            pb::MemberListRequest,
            |g| {
                pb::MemberListRequest {
                    linearizable: g.rng.random_bool(0.5),
                }
                .encode_to_vec()
            }
        ),
        method!(
            "/etcdserverpb.Cluster/MemberPromote",
            Unary,
            pb::MemberPromoteRequest,
            |g| { pb::MemberPromoteRequest { id: g.member_id() }.encode_to_vec() }
        ),
        method!(
            "/etcdserverpb.Maintenance/Alarm",
            Unary,
            pb::AlarmRequest,
            |g| {
                pb::AlarmRequest {
                    action: g.small_enum(),
                    member_id: g.member_id(),
                    alarm: g.small_enum(),
                }
                .encode_to_vec()
            }
        ),
        method!(
            "/etcdserverpb.Maintenance/Status",
            Unary,
            pb::StatusRequest,
            |_| Vec::new()
        ),
        method!(
            "/etcdserverpb.Maintenance/Defragment",
            Unary,
            pb::DefragmentRequest,
            |_| Vec::new()
        ),
        method!(
            "/etcdserverpb.Maintenance/Hash",
            Unary,
            pb::HashRequest,
            |_| Vec::new()
        ),
        method!(
            "/etcdserverpb.Maintenance/HashKV",
            Unary,
            pb::HashKvRequest,
            |g| {
                pb::HashKvRequest {
                    revision: g.revision(),
                }
                .encode_to_vec()
            }
        ),
        method!(
            "/etcdserverpb.Maintenance/Snapshot",
            ServerStream,
            pb::SnapshotRequest,
            |_| Vec::new(),
            false,
            false
        ),
        method!(
            "/etcdserverpb.Maintenance/MoveLeader",
            Unary,
            pb::MoveLeaderRequest,
            |g| {
                pb::MoveLeaderRequest {
                    target_id: g.member_id(),
                }
                .encode_to_vec()
            }
        ),
        method!(
            "/etcdserverpb.Maintenance/Downgrade",
            Unary,
            pb::DowngradeRequest,
            |g| pb::DowngradeRequest {
                action: g.small_enum(),
                version: g.text()
            }
            .encode_to_vec(),
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/AuthEnable",
            Unary,
            pb::AuthEnableRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/AuthDisable",
            Unary,
            pb::AuthDisableRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/AuthStatus",
            Unary,
            pb::AuthStatusRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/Authenticate",
            Unary,
            pb::AuthenticateRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/UserAdd",
            Unary,
            pb::AuthUserAddRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/UserGet",
            Unary,
            pb::AuthUserGetRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/UserList",
            Unary,
            pb::AuthUserListRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/UserDelete",
            Unary,
            pb::AuthUserDeleteRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/UserChangePassword",
            Unary,
            pb::AuthUserChangePasswordRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/UserGrantRole",
            Unary,
            pb::AuthUserGrantRoleRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/UserRevokeRole",
            Unary,
            pb::AuthUserRevokeRoleRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/RoleAdd",
            Unary,
            pb::AuthRoleAddRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/RoleGet",
            Unary,
            pb::AuthRoleGetRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/RoleList",
            Unary,
            pb::AuthRoleListRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/RoleDelete",
            Unary,
            pb::AuthRoleDeleteRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/RoleGrantPermission",
            Unary,
            pb::AuthRoleGrantPermissionRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/etcdserverpb.Auth/RoleRevokePermission",
            Unary,
            pb::AuthRoleRevokePermissionRequest,
            auth_names,
            false,
            false
        ),
        method!(
            "/v3lockpb.Lock/Lock",
            Unary,
            lock::LockRequest,
            |g| {
                lock::LockRequest {
                    name: g.name(),
                    lease: g.lease(),
                }
                .encode_to_vec()
            },
            true,
            false
        ),
        method!("/v3lockpb.Lock/Unlock", Unary, lock::UnlockRequest, |g| {
            lock::UnlockRequest { key: g.key() }.encode_to_vec()
        }),
        method!(
            "/v3electionpb.Election/Campaign",
            Unary,
            election::CampaignRequest,
            |g| {
                election::CampaignRequest {
                    name: g.name(),
                    lease: g.lease(),
                    value: g.value(),
                }
                .encode_to_vec()
            },
            true,
            false
        ),
        method!(
            "/v3electionpb.Election/Proclaim",
            Unary,
            election::ProclaimRequest,
            |g| {
                let leader = g.rng.random_bool(0.8).then(|| g.leader_key());
                election::ProclaimRequest {
                    leader,
                    value: g.value(),
                }
                .encode_to_vec()
            }
        ),
        method!(
            "/v3electionpb.Election/Leader",
            Unary,
            election::LeaderRequest,
            |g| { election::LeaderRequest { name: g.name() }.encode_to_vec() }
        ),
        method!(
            "/v3electionpb.Election/Observe",
            ServerStream,
            election::LeaderRequest,
            |g| election::LeaderRequest { name: g.name() }.encode_to_vec(),
            true,
            false
        ),
        method!(
            "/v3electionpb.Election/Resign",
            Unary,
            election::ResignRequest,
            |g| {
                let leader = g.rng.random_bool(0.8).then(|| g.leader_key());
                election::ResignRequest { leader }.encode_to_vec()
            }
        ),
        // Methods and services etcd does not have.
        method!(
            "/etcdserverpb.KV/RangeStream",
            ServerStream,
            pb::RangeRequest,
            range,
            false,
            true
        ),
        method!(
            "/etcdserverpb.KV/Nope",
            Unary,
            pb::RangeRequest,
            range,
            false,
            true
        ),
        method!(
            "/etcdserverpb.Watch/Nope",
            Unary,
            pb::WatchRequest,
            watch,
            false,
            true
        ),
        method!(
            "/etcdserverpb.Lease/Nope",
            Unary,
            pb::LeaseGrantRequest,
            lease_grant,
            false,
            true
        ),
        method!(
            "/etcdserverpb.Nope/Range",
            Unary,
            pb::RangeRequest,
            range,
            false,
            true
        ),
        method!(
            "/v3lockpb.Lock/Nope",
            Unary,
            lock::UnlockRequest,
            |_| Vec::new(),
            false,
            true
        ),
    ]
}

/// What a run knows while it generates requests.
struct Gen {
    rng: StdRng,
    /// The store's revision when the round began.
    revision: i64,
    /// The log's members: id and peer address.
    members: Vec<(u64, String)>,
    /// Makes names unique, so a valid lock or campaign rarely waits.
    counter: u64,
    worker: u64,
    /// Inside a transaction: no key or value past etcd's limit, so that
    /// many operations stay a small request.
    small: bool,
}

impl Gen {
    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.rng.random_range(0..choices.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.rng.fill(bytes.as_mut_slice());
        bytes
    }

    /// Mostly short random lengths, sometimes a few KiB.
    fn length(&mut self) -> usize {
        match self.rng.random_range(0..10) {
            0 => 0,
            1..=6 => self.rng.random_range(1..32),
            7 | 8 => self.rng.random_range(32..512),
            _ => self.rng.random_range(512..8192),
        }
    }

    /// An int64 at the edges of its range or of the store's revisions.
    fn int(&mut self) -> i64 {
        let revision = self.revision;
        match self.rng.random_range(0..14) {
            0 => 0,
            1 => -1,
            2 => i64::MIN,
            3 => i64::MAX,
            4 => i64::MIN + 1,
            5 => i64::MAX - 1,
            6 => revision,
            7 => revision + 1,
            8 => revision.saturating_sub(self.rng.random_range(1..50)),
            9 => 9_000_000_001,
            10 => self.rng.random_range(1..100),
            11 => -self.rng.random_range(1..100),
            12 => i64::from(u32::MAX) + 1,
            _ => self.rng.random(),
        }
    }

    fn revision(&mut self) -> i64 {
        self.int()
    }

    fn lease(&mut self) -> i64 {
        if self.rng.random_bool(0.4) {
            0
        } else {
            self.int()
        }
    }

    /// Enum values in and out of range.
    fn small_enum(&mut self) -> i32 {
        self.pick(&[0, 1, 2, 3, 4, 5, -1, 99, i32::MAX, i32::MIN])
    }

    fn member_id(&mut self) -> u64 {
        match self.rng.random_range(0..6) {
            0 => 0,
            1 => u64::MAX,
            2 => self.members.first().map_or(1, |member| member.0),
            3 => self.rng.random_range(1..10),
            _ => self.rng.random(),
        }
    }

    fn text(&mut self) -> String {
        match self.rng.random_range(0..5) {
            0 => String::new(),
            1 => "3.4.0".into(),
            2 => "\u{0}\u{ffff}".into(),
            3 => "x".repeat(self.rng.random_range(1..5000)),
            _ => format!("v{}", self.rng.random::<u32>()),
        }
    }

    /// Peer URLs that never add a member: malformed, several, or one that is
    /// already a member's.
    fn urls(&mut self) -> Vec<String> {
        let existing = self
            .members
            .first()
            .map_or_else(String::new, |member| format!("http://{}", member.1));
        match self.rng.random_range(0..7) {
            0 => Vec::new(),
            1 => vec![String::new()],
            2 => vec!["not a url".into()],
            3 => vec!["http://".into()],
            4 => vec![existing],
            5 => vec![
                "http://[::1".into(),
                "http://a:1".into(),
                "http://b:2".into(),
            ],
            _ => vec!["x".repeat(self.rng.random_range(1..3000))],
        }
    }

    /// A key for a request: empty, the zero byte, the fuzz's own keys, random
    /// bytes, or (rarely) one larger than etcd's request limit.
    fn key(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..40) {
            0..=3 => Vec::new(),
            4..=6 => vec![0],
            7 => vec![0xff; self.rng.random_range(1..8)],
            8 if !self.small => {
                let mut key = b"zz-fuzz/big/".to_vec();
                key.resize(ETCD_MAX_REQUEST + 4096, b'k');
                key
            }
            9..=20 => {
                let len = self.length();
                self.bytes(len)
            }
            _ => format!("zz-fuzz/{}/{}", self.worker, self.rng.random_range(0..50)).into_bytes(),
        }
    }

    fn range_end(&mut self, key: &[u8]) -> Vec<u8> {
        match self.rng.random_range(0..8) {
            0 | 1 => Vec::new(),
            2 | 3 => vec![0],
            4 => {
                let mut end = key.to_vec();
                match end.iter().rposition(|&byte| byte < 0xff) {
                    Some(at) => {
                        end.truncate(at + 1);
                        end[at] += 1;
                    }
                    None => end = vec![0],
                }
                end
            }
            5 => vec![0xff; 4],
            _ => {
                let len = self.length();
                self.bytes(len)
            }
        }
    }

    fn value(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..30) {
            0..=5 => Vec::new(),
            6 if !self.small => vec![b'v'; ETCD_MAX_REQUEST + 1024],
            _ => {
                let len = self.length();
                self.bytes(len)
            }
        }
    }

    /// A lock or election name, usually new so a valid call rarely waits.
    fn name(&mut self) -> Vec<u8> {
        self.counter += 1;
        match self.rng.random_range(0..10) {
            0 => Vec::new(),
            1 => vec![0],
            2 => {
                let len = self.length();
                self.bytes(len)
            }
            _ => format!("zz-fuzz/name/{}/{}", self.worker, self.counter).into_bytes(),
        }
    }

    fn leader_key(&mut self) -> election::LeaderKey {
        election::LeaderKey {
            name: self.name(),
            key: self.key(),
            rev: self.int(),
            lease: self.int(),
        }
    }
}

fn range(g: &mut Gen) -> Vec<u8> {
    range_request(g).encode_to_vec()
}

fn range_request(g: &mut Gen) -> pb::RangeRequest {
    let key = g.key();
    pb::RangeRequest {
        range_end: g.range_end(&key),
        key,
        limit: g.int(),
        revision: g.revision(),
        sort_order: g.small_enum(),
        sort_target: g.small_enum(),
        serializable: g.rng.random_bool(0.5),
        keys_only: g.rng.random_bool(0.3),
        count_only: g.rng.random_bool(0.3),
        min_mod_revision: if g.rng.random_bool(0.3) { g.int() } else { 0 },
        max_mod_revision: if g.rng.random_bool(0.3) { g.int() } else { 0 },
        min_create_revision: if g.rng.random_bool(0.3) { g.int() } else { 0 },
        max_create_revision: if g.rng.random_bool(0.3) { g.int() } else { 0 },
    }
}

fn put_request(g: &mut Gen) -> pb::PutRequest {
    pb::PutRequest {
        key: g.key(),
        value: g.value(),
        lease: g.lease(),
        prev_kv: g.rng.random_bool(0.5),
        ignore_value: g.rng.random_bool(0.15),
        ignore_lease: g.rng.random_bool(0.15),
    }
}

fn put(g: &mut Gen) -> Vec<u8> {
    put_request(g).encode_to_vec()
}

fn delete_request(g: &mut Gen) -> pb::DeleteRangeRequest {
    let key = g.key();
    pb::DeleteRangeRequest {
        range_end: g.range_end(&key),
        key,
        prev_kv: g.rng.random_bool(0.5),
    }
}

fn delete_range(g: &mut Gen) -> Vec<u8> {
    delete_request(g).encode_to_vec()
}

fn txn(g: &mut Gen) -> Vec<u8> {
    g.small = true;
    let txn = txn_request(g, 0);
    g.small = false;
    txn.encode_to_vec()
}

fn txn_request(g: &mut Gen, depth: usize) -> pb::TxnRequest {
    use pb::compare::TargetUnion;
    // Sometimes past etcd's 128 operations.
    let many = |g: &mut Gen| match g.rng.random_range(0..12) {
        0 if depth == 0 => g.rng.random_range(120..140),
        _ => g.rng.random_range(0..4),
    };
    let compares = many(g);
    let compare = (0..compares)
        .map(|_| {
            let key = g.key();
            pb::Compare {
                result: g.small_enum(),
                target: g.small_enum(),
                range_end: if g.rng.random_bool(0.3) {
                    g.range_end(&key)
                } else {
                    Vec::new()
                },
                key,
                target_union: match g.rng.random_range(0..6) {
                    0 => None,
                    1 => Some(TargetUnion::Version(g.int())),
                    2 => Some(TargetUnion::CreateRevision(g.int())),
                    3 => Some(TargetUnion::ModRevision(g.int())),
                    4 => Some(TargetUnion::Value(g.value())),
                    _ => Some(TargetUnion::Lease(g.int())),
                },
            }
        })
        .collect();
    let ops = |g: &mut Gen| {
        let count = many(g);
        (0..count)
            .map(|_| {
                use pb::request_op::Request;
                let request = match g.rng.random_range(0..5) {
                    0 => None,
                    1 => Some(Request::RequestRange(range_request(g))),
                    2 => Some(Request::RequestPut(put_request(g))),
                    3 => Some(Request::RequestDeleteRange(delete_request(g))),
                    _ if depth < 3 && count < 10 => {
                        Some(Request::RequestTxn(txn_request(g, depth + 1)))
                    }
                    _ => None,
                };
                pb::RequestOp { request }
            })
            .collect()
    };
    let success = ops(g);
    let failure = ops(g);
    pb::TxnRequest {
        compare,
        success,
        failure,
    }
}

fn compact(g: &mut Gen) -> Vec<u8> {
    pb::CompactionRequest {
        revision: g.revision(),
        physical: g.rng.random_bool(0.5),
    }
    .encode_to_vec()
}

fn watch(g: &mut Gen) -> Vec<u8> {
    watch_request(g).encode_to_vec()
}

fn watch_request(g: &mut Gen) -> pb::WatchRequest {
    use pb::watch_request::RequestUnion;
    let union = match g.rng.random_range(0..8) {
        0 => None,
        1 => Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: g.int(),
        })),
        2 => Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
        _ => {
            let key = g.key();
            let filters = (0..g.rng.random_range(0..3))
                .map(|_| g.small_enum())
                .collect();
            Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                range_end: g.range_end(&key),
                key,
                start_revision: if g.rng.random_bool(0.5) {
                    0
                } else {
                    g.revision()
                },
                progress_notify: g.rng.random_bool(0.3),
                filters,
                prev_kv: g.rng.random_bool(0.5),
                watch_id: if g.rng.random_bool(0.5) { 0 } else { g.int() },
                fragment: g.rng.random_bool(0.3),
            }))
        }
    };
    pb::WatchRequest {
        request_union: union,
    }
}

fn lease_grant(g: &mut Gen) -> Vec<u8> {
    // A fresh lease that no known key uses, so revoking it costs nothing.
    pb::LeaseGrantRequest {
        ttl: g.int(),
        id: if g.rng.random_bool(0.5) { 0 } else { g.int() },
    }
    .encode_to_vec()
}

fn member_add(g: &mut Gen) -> Vec<u8> {
    pb::MemberAddRequest {
        peer_ur_ls: g.urls(),
        is_learner: g.rng.random_bool(0.5),
    }
    .encode_to_vec()
}

/// Two strings, the shape of most of the Auth requests.
fn auth_names(g: &mut Gen) -> Vec<u8> {
    let mut out = Vec::new();
    for field in 1..=2 {
        let text = g.text();
        put_key(&mut out, field, 2);
        put_varint(&mut out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

/// One protobuf field that no well-formed message of these protos holds at
/// that place: the wrong wire type, an unknown or invalid number, a length
/// past the end, groups, overlong varints, deep nesting.
fn wrong_field(g: &mut Gen) -> Vec<u8> {
    let mut out = Vec::new();
    let field = match g.rng.random_range(0..6) {
        0 => g.rng.random_range(1000..100_000),
        1 => (1 << 29) - 1,
        2 => 64,
        _ => g.rng.random_range(1..16),
    };
    match g.rng.random_range(0..12) {
        // A varint where bytes may be expected.
        0 => {
            put_key(&mut out, field, 0);
            put_varint(&mut out, g.rng.random());
        }
        // Bytes where a varint may be expected.
        1 => {
            put_key(&mut out, field, 2);
            let len = g.length();
            put_varint(&mut out, len as u64);
            out.extend(g.bytes(len));
        }
        // Fixed-width where anything else is expected.
        2 => {
            put_key(&mut out, field, g.pick(&[1, 5]));
            let len = g.pick(&[8, 4, 3]);
            out.extend(g.bytes(len));
        }
        // Wire types 6 and 7 do not exist.
        3 => {
            put_key(&mut out, field, g.pick(&[6, 7]));
            out.extend(g.bytes(4));
        }
        // A group that never ends, or an end with no start.
        4 => put_key(&mut out, field, g.pick(&[3, 4])),
        // Field number 0 is invalid.
        5 => {
            put_key(&mut out, 0, 0);
            out.push(1);
        }
        // A length far past the end of the message.
        6 => {
            put_key(&mut out, field, 2);
            put_varint(
                &mut out,
                g.pick(&[1 << 31, u64::MAX, i64::MAX as u64, 1 << 20]),
            );
            out.extend(g.bytes(3));
        }
        // A varint longer than ten bytes.
        7 => {
            put_key(&mut out, field, 0);
            out.extend([0xff; 11]);
        }
        // A varint cut off.
        8 => {
            put_key(&mut out, field, 0);
            out.push(0x80);
        }
        // Nesting deeper than any decoder follows, along Txn's own path
        // (success → request_txn → success …) or a random field's.
        9 => {
            let depth = g.rng.random_range(90..400);
            let mut nested: Vec<u8> = g.bytes(2);
            for level in 0..depth {
                let mut outer = Vec::new();
                let number = if level % 2 == 0 { 4 } else { 2 };
                put_key(&mut outer, number, 2);
                put_varint(&mut outer, nested.len() as u64);
                outer.extend(nested);
                nested = outer;
            }
            out = nested;
        }
        // A negative enum as the ten-byte varint, in a low field.
        10 => {
            put_key(&mut out, g.rng.random_range(1..14), 0);
            put_varint(&mut out, (-1i64) as u64);
        }
        // A string that is not UTF-8.
        _ => {
            put_key(&mut out, g.rng.random_range(1..4), 2);
            out.extend([2, 0xc3, 0x28]);
        }
    }
    out
}

/// The kinds of input, for the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Category {
    RandomBytes,
    Truncated,
    Appended,
    WrongTypes,
    Oversized,
    FrameLies,
    Extreme,
    StreamGarbageFrames,
    StreamValidThenGarbage,
    StreamHalfClose,
    StreamReset,
}

/// One call to make: its body's parts, extra headers, and what the input
/// was.
struct Case {
    category: Category,
    parts: Vec<Part>,
    headers: &'static [(&'static str, &'static str)],
    /// The messages the server can decode from the body (each frame's
    /// declared bytes, as far as they arrive), to judge and to guard.
    messages: Vec<Vec<u8>>,
    /// Every frame is whole and honest, every message decodes, a unary call
    /// has one, and nothing resets the stream.
    well_formed: bool,
    /// Whether the body half-closes after its last part.
    half_closes: bool,
}

fn case(method: &Method, g: &mut Gen) -> Case {
    let streaming = method.shape != Shape::Unary;
    let roll = g.rng.random_range(0..100);
    let valid = (method.valid)(g);
    let (category, frames): (Category, Vec<Vec<u8>>) = match roll {
        0..=13 => {
            let len = g.length();
            (Category::RandomBytes, vec![g.bytes(len)])
        }
        14..=23 => {
            let cut = g.rng.random_range(0..=valid.len());
            (Category::Truncated, vec![valid[..cut].to_vec()])
        }
        24..=33 => {
            let mut body = valid.clone();
            let len = g.length().max(1);
            body.extend(g.bytes(len));
            (Category::Appended, vec![body])
        }
        34..=49 => {
            let mut body = if g.rng.random_bool(0.5) {
                valid.clone()
            } else {
                Vec::new()
            };
            for _ in 0..g.rng.random_range(1..3) {
                let at = if g.rng.random_bool(0.5) {
                    body.len()
                } else {
                    0
                };
                let wrong = wrong_field(g);
                body.splice(at..at, wrong);
            }
            (Category::WrongTypes, vec![body])
        }
        50..=53 => {
            let size = g.pick(&[
                ETCD_MAX_REQUEST + 100,
                2 * 1024 * 1024 + 100,
                4 * 1024 * 1024 + 100,
            ]);
            let body = if g.rng.random_bool(0.5) {
                g.bytes(size)
            } else {
                // A valid prefix with a bytes field padding it out.
                let mut body = valid.clone();
                put_key(&mut body, 2, 2);
                put_varint(&mut body, size as u64);
                body.resize(body.len() + size, b'p');
                body
            };
            (Category::Oversized, vec![body])
        }
        54..=67 => return frame_lie(method, g, valid),
        68..=84 if streaming => return stream_case(method, g, valid),
        _ => (Category::Extreme, vec![valid]),
    };
    let well_formed = frames.iter().all(|message| (method.decodes)(message));
    Case {
        category,
        parts: frames
            .iter()
            .map(|message| Part::Data(message_frame(message)))
            .collect(),
        headers: &[],
        messages: frames,
        well_formed,
        half_closes: true,
    }
}

/// A body whose gRPC framing lies: lengths shorter or longer than the data,
/// the compressed flag with no encoding, a flag that does not exist, a cut
/// header, no frame, two frames for one request, a frame cut off by a reset.
fn frame_lie(method: &Method, g: &mut Gen, valid: Vec<u8>) -> Case {
    let len = valid.len() as u32;
    let mut headers: &'static [(&'static str, &'static str)] = &[];
    let mut half_closes = true;
    let mut well_formed = false;
    let (parts, messages) = match g.rng.random_range(0..10) {
        0 if len > 0 => {
            let declared = g.rng.random_range(0..len);
            let seen = valid[..declared as usize].to_vec();
            (vec![Part::Data(frame(0, declared, &valid))], vec![seen])
        }
        1 => {
            let declared = len + g.rng.random_range(1..1_000_000);
            (vec![Part::Data(frame(0, declared, &valid))], vec![])
        }
        2 => (vec![Part::Data(frame(0, u32::MAX, &valid))], vec![]),
        3 => {
            if g.rng.random_bool(0.5) {
                headers = g.pick(&[
                    &[("grpc-encoding", "identity")][..],
                    &[("grpc-encoding", "gzip")][..],
                    &[("grpc-encoding", "no-such-codec")][..],
                ]);
            }
            (vec![Part::Data(frame(1, len, &valid))], vec![])
        }
        4 => {
            let flag = g.rng.random_range(2..=255);
            (vec![Part::Data(frame(flag, len, &valid))], vec![])
        }
        5 => {
            let cut = g.rng.random_range(0..5);
            // Nothing at all sent is an empty stream, which a watch or
            // keep-alive may be.
            well_formed = cut == 0 && method.shape == Shape::Bidi;
            let header = message_frame(&valid);
            (vec![Part::Data(header.slice(..cut))], vec![])
        }
        6 => {
            // No request at all: a watch or keep-alive stream may be empty.
            well_formed = method.shape == Shape::Bidi;
            (vec![], vec![])
        }
        7 => {
            // Two frames for one request: the second valid or not.
            let second = if g.rng.random_bool(0.5) {
                (method.valid)(g)
            } else {
                wrong_field(g)
            };
            well_formed = (method.decodes)(&valid) && (method.decodes)(&second);
            (
                vec![
                    Part::Data(message_frame(&valid)),
                    Part::Data(message_frame(&second)),
                ],
                vec![valid.clone(), second],
            )
        }
        8 => {
            // Cut off mid-frame, then the stream is reset.
            half_closes = false;
            let declared = len + g.rng.random_range(1..100);
            (
                vec![
                    Part::Data(frame(0, declared, &valid)),
                    Part::Pause(Duration::from_millis(g.rng.random_range(0..200))),
                    Part::Reset,
                ],
                vec![],
            )
        }
        _ => {
            // A frame split across several writes, with pauses, but honest.
            let framed = message_frame(&valid);
            let at = g.rng.random_range(0..=framed.len());
            well_formed = (method.decodes)(&valid);
            (
                vec![
                    Part::Data(framed.slice(..at)),
                    Part::Pause(Duration::from_millis(g.rng.random_range(0..300))),
                    Part::Data(framed.slice(at..)),
                ],
                vec![valid.clone()],
            )
        }
    };
    if method.shape == Shape::Unary && parts.is_empty() {
        well_formed = false;
    }
    Case {
        category: Category::FrameLies,
        parts,
        headers,
        messages,
        well_formed,
        half_closes,
    }
}

/// Streams: several garbage frames, a valid request then garbage, an early
/// half-close, a reset.
fn stream_case(method: &Method, g: &mut Gen, valid: Vec<u8>) -> Case {
    let garbage = |g: &mut Gen| -> Vec<u8> {
        if g.rng.random_bool(0.5) {
            let len = g.length().max(1);
            g.bytes(len)
        } else {
            wrong_field(g)
        }
    };
    let pause = |g: &mut Gen| Part::Pause(Duration::from_millis(g.rng.random_range(0..150)));
    let mut parts = Vec::new();
    let mut messages = Vec::new();
    let mut half_closes = true;
    let category = match g.rng.random_range(0..4) {
        0 => {
            for _ in 0..g.rng.random_range(2..6) {
                let message = garbage(g);
                parts.push(Part::Data(message_frame(&message)));
                messages.push(message);
            }
            Category::StreamGarbageFrames
        }
        1 => {
            for _ in 0..g.rng.random_range(1..3) {
                let message = (method.valid)(g);
                parts.push(Part::Data(message_frame(&message)));
                parts.push(pause(g));
                messages.push(message);
            }
            let message = garbage(g);
            parts.push(Part::Data(message_frame(&message)));
            messages.push(message);
            Category::StreamValidThenGarbage
        }
        2 => {
            if method.shape == Shape::Bidi || g.rng.random_bool(0.5) {
                for _ in 0..g.rng.random_range(0..3) {
                    let message = (method.valid)(g);
                    parts.push(Part::Data(message_frame(&message)));
                    messages.push(message);
                }
            }
            Category::StreamHalfClose
        }
        _ => {
            half_closes = false;
            if g.rng.random_bool(0.7) {
                parts.push(Part::Data(message_frame(&valid)));
                messages.push(valid);
                parts.push(pause(g));
            }
            parts.push(Part::Reset);
            Category::StreamReset
        }
    };
    let well_formed = half_closes
        && messages.iter().all(|message| (method.decodes)(message))
        && (method.shape == Shape::Bidi || !messages.is_empty());
    Case {
        category,
        parts,
        headers: &[],
        messages,
        well_formed,
        half_closes,
    }
}

/// Whether the range `[key, range_end)` (etcd's conventions) may hold a
/// known key.
fn touches_known(key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        return key.starts_with(KNOWN);
    }
    if range_end == [0] {
        return key < KNOWN_END;
    }
    key < KNOWN_END && range_end > KNOWN
}

fn op_touches_known(op: &pb::RequestOp) -> bool {
    use pb::request_op::Request;
    match &op.request {
        Some(Request::RequestPut(put)) => touches_known(&put.key, b""),
        Some(Request::RequestDeleteRange(delete)) => touches_known(&delete.key, &delete.range_end),
        Some(Request::RequestTxn(txn)) => txn_touches_known(txn),
        _ => false,
    }
}

fn txn_touches_known(txn: &pb::TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(op_touches_known)
}

fn name_touches_known(name: &[u8]) -> bool {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix.starts_with(KNOWN) || KNOWN.starts_with(&prefix)
}

/// Whether a message the server could decode would do what this test must
/// not let through: change a known value, or the log's membership or
/// leadership (a valid request doing its job, not malformed input).
fn harmful(path: &str, message: &[u8], members: &[(u64, String)]) -> bool {
    let member = |id: u64| members.iter().any(|member| member.0 == id);
    match path {
        "/etcdserverpb.KV/Put" => {
            pb::PutRequest::decode(message).is_ok_and(|put| touches_known(&put.key, b""))
        }
        "/etcdserverpb.KV/DeleteRange" => pb::DeleteRangeRequest::decode(message)
            .is_ok_and(|delete| touches_known(&delete.key, &delete.range_end)),
        "/etcdserverpb.KV/Txn" => {
            pb::TxnRequest::decode(message).is_ok_and(|txn| txn_touches_known(&txn))
        }
        "/v3lockpb.Lock/Unlock" => {
            lock::UnlockRequest::decode(message).is_ok_and(|unlock| touches_known(&unlock.key, b""))
        }
        "/v3lockpb.Lock/Lock" => lock::LockRequest::decode(message)
            .is_ok_and(|request| name_touches_known(&request.name)),
        "/v3electionpb.Election/Campaign" => election::CampaignRequest::decode(message)
            .is_ok_and(|request| name_touches_known(&request.name)),
        "/v3electionpb.Election/Proclaim" => {
            election::ProclaimRequest::decode(message).is_ok_and(|request| {
                request
                    .leader
                    .is_some_and(|leader| touches_known(&leader.key, b""))
            })
        }
        "/v3electionpb.Election/Resign" => {
            election::ResignRequest::decode(message).is_ok_and(|request| {
                request
                    .leader
                    .is_some_and(|leader| touches_known(&leader.key, b""))
            })
        }
        "/etcdserverpb.Cluster/MemberRemove" => {
            pb::MemberRemoveRequest::decode(message).is_ok_and(|request| member(request.id))
        }
        "/etcdserverpb.Cluster/MemberPromote" => {
            pb::MemberPromoteRequest::decode(message).is_ok_and(|request| member(request.id))
        }
        "/etcdserverpb.Maintenance/MoveLeader" => {
            pb::MoveLeaderRequest::decode(message).is_ok_and(|request| member(request.target_id))
        }
        "/etcdserverpb.Cluster/MemberAdd" => {
            pb::MemberAddRequest::decode(message).is_ok_and(|request| {
                // One URL of the form http(s)://host:port that is no
                // member's: the edge would add a node that does not exist.
                let [url] = request.peer_ur_ls.as_slice() else {
                    return false;
                };
                let addr = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"))
                    .map(|rest| rest.trim_end_matches('/'));
                addr.is_some_and(|addr| !members.iter().any(|member| member.1 == addr))
            })
        }
        _ => false,
    }
}

/// Messages gRPC itself gives (tonic here, grpc-go in etcd, both INTERNAL)
/// for a body that is no message of the method's type or a frame it
/// refuses.
const DECODING_FAILURES: &[&str] = &[
    "failed to decode Protobuf message",
    "protocol error: received message with",
    "Unexpected EOF decoding stream",
    "Missing request message",
];

/// etcd's Lock and Election servers' plain errors, which gRPC sends as
/// UNKNOWN with their text.
const ELECTION_ERRORS: &[&str] = &[
    "election: not leader",
    "election: no leader",
    "\"leader\" field must be provided",
    "mutex: session is expired",
];

/// A method cairn decodes and then refuses as UNIMPLEMENTED: there is no
/// older version to downgrade to.
const DOWNGRADE: &str = "/etcdserverpb.Maintenance/Downgrade";

/// Why an answer is not one etcd would give, if it is not.
fn judge(method: &Method, case: &Case, answer: &Answer) -> Option<String> {
    if answer.reset_by_caller {
        // The caller gave up on the call: there is no answer to judge; the
        // process and the connection must only live on.
        return None;
    }
    match &answer.ending {
        Ending::Status { code, message } => {
            let fine = match code {
                Code::Ok => case.well_formed && !method.unimplemented,
                Code::InvalidArgument
                | Code::OutOfRange
                | Code::ResourceExhausted
                | Code::NotFound
                | Code::FailedPrecondition => !method.unimplemented,
                Code::Unimplemented => {
                    method.unimplemented
                        || method.path == DOWNGRADE
                        || case
                            .headers
                            .iter()
                            .any(|(name, value)| *name == "grpc-encoding" && *value != "identity")
                }
                Code::Internal => {
                    !case.well_formed
                        && DECODING_FAILURES
                            .iter()
                            .any(|known| message.contains(known))
                }
                Code::Unknown => {
                    (method.path.starts_with("/v3electionpb.")
                        || method.path.starts_with("/v3lockpb."))
                        && ELECTION_ERRORS.contains(&message.as_str())
                }
                Code::DataLoss => message == "etcdserver: corrupt cluster",
                _ => false,
            };
            (!fine).then(|| format!("answered {code:?} {message:?}"))
        }
        Ending::Broken(error) => Some(format!("no status: {error}")),
        Ending::Open { answered } => {
            let may_wait = case.well_formed && method.may_wait;
            (!may_wait).then(|| {
                if *answered {
                    format!("the stream stayed open, no status after {PATIENCE:?}")
                } else {
                    format!("no answer within {PATIENCE:?}")
                }
            })
        }
    }
}

/// What one call came to, for the summary.
#[derive(Default)]
struct Tally {
    calls: BTreeMap<&'static str, u64>,
    answers: BTreeMap<(&'static str, String), u64>,
    codes: BTreeMap<String, u64>,
    categories: BTreeMap<String, u64>,
    skipped: u64,
    slow: u64,
    findings: Vec<String>,
}

fn ending_name(answer: &Answer) -> String {
    if answer.reset_by_caller {
        return "reset by caller".into();
    }
    match &answer.ending {
        Ending::Status { code, .. } => format!("{code:?}"),
        Ending::Broken(_) => "BROKEN".into(),
        Ending::Open { .. } => "waiting".into(),
    }
}

/// A short description of a case, to reproduce a finding.
fn describe(case: &Case) -> String {
    let mut shown = String::new();
    for part in &case.parts {
        match part {
            Part::Data(data) => {
                let head: String = data
                    .iter()
                    .take(48)
                    .map(|byte| format!("{byte:02x}"))
                    .collect();
                shown.push_str(&format!(" data[{}]={head}", data.len()));
            }
            Part::Pause(pause) => shown.push_str(&format!(" pause {pause:?}")),
            Part::Reset => shown.push_str(" reset"),
        }
    }
    format!(
        "{:?} headers={:?} well_formed={} half_close={}{shown}",
        case.category, case.headers, case.well_formed, case.half_closes
    )
}

/// Known values, written between rounds, that must read back intact.
type Known = Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>;

struct Worker {
    gen: Gen,
    channel: Channel,
    methods: Arc<Vec<Method>>,
    tally: Arc<Mutex<Tally>>,
    known: Known,
}

impl Worker {
    async fn run(mut self, until: Instant) -> Result<()> {
        let mut round = 0u64;
        while Instant::now() < until {
            for _ in 0..CALLS_PER_ROUND {
                self.one_call().await;
                if Instant::now() >= until {
                    break;
                }
            }
            self.write_known(round).await?;
            round += 1;
        }
        Ok(())
    }

    async fn one_call(&mut self) {
        let methods = self.methods.clone();
        // Methods cairn answers get most calls; missing methods (all
        // UNIMPLEMENTED) a fifth. The Auth calls can never turn auth on:
        // their names are never "root".
        let unimplemented = self.gen.rng.random_bool(0.2);
        let choices: Vec<&Method> = methods
            .iter()
            .filter(|method| method.unimplemented == unimplemented)
            .collect();
        let method = choices[self.gen.rng.random_range(0..choices.len())];
        // A case that could change a known value or the membership is drawn
        // again; after a few tries the call is skipped.
        let mut drawn = None;
        for _ in 0..8 {
            let case = case(method, &mut self.gen);
            let dangerous = case
                .messages
                .iter()
                .any(|message| harmful(method.path, message, &self.gen.members));
            if !dangerous {
                drawn = Some(case);
                break;
            }
        }
        let Some(case) = drawn else {
            if let Ok(mut tally) = self.tally.lock() {
                tally.skipped += 1;
            }
            return;
        };
        let waits = case.well_formed && method.may_wait && !case.parts.is_empty();
        let patience = if waits { SETTLE } else { PATIENCE };
        let started = Instant::now();
        let answer = exchange(
            self.channel.clone(),
            method.path,
            case.parts.clone(),
            case.headers,
            patience,
        )
        .await;
        let took = started.elapsed();
        let finding = judge(method, &case, &answer);
        let Ok(mut tally) = self.tally.lock() else {
            return;
        };
        *tally.calls.entry(method.path).or_default() += 1;
        *tally
            .answers
            .entry((method.path, ending_name(&answer)))
            .or_default() += 1;
        *tally.codes.entry(ending_name(&answer)).or_default() += 1;
        *tally
            .categories
            .entry(format!("{:?}", case.category))
            .or_default() += 1;
        if took > Duration::from_secs(3) && !waits {
            tally.slow += 1;
        }
        if let Some(finding) = finding {
            tally.findings.push(format!(
                "{}: {finding} after {took:?} ({} messages back) to {}",
                method.path,
                answer.messages.len(),
                describe(&case)
            ));
        }
    }

    /// Puts known values through the edge with a typed client. A NOSPACE
    /// alarm the fuzz raised (Alarm ACTIVATE is a valid request) is disarmed
    /// first, as an operator would.
    async fn write_known(&mut self, round: u64) -> Result<()> {
        let mut kv = pb::kv_client::KvClient::new(self.channel.clone());
        for index in 0..WRITES_PER_ROUND {
            let key = format!("known/{}/{round}/{index}", self.gen.worker).into_bytes();
            let value = format!(
                "value {} {round} {index} {}",
                self.gen.worker,
                self.gen.rng.random::<u64>()
            )
            .into_bytes();
            let mut attempt = 0;
            let put = loop {
                attempt += 1;
                let put = tokio::time::timeout(
                    PATIENCE,
                    kv.put(pb::PutRequest {
                        key: key.clone(),
                        value: value.clone(),
                        ..Default::default()
                    }),
                )
                .await
                .context("a known put timed out")?;
                match put {
                    Err(status)
                        if status.code() == Code::ResourceExhausted
                            && status.message().contains("space exceeded")
                            && attempt < 5 =>
                    {
                        disarm(&self.channel).await?;
                    }
                    other => break other,
                }
            };
            let put = put.with_context(|| format!("putting known key {key:?}"))?;
            if let Some(header) = put.into_inner().header {
                self.gen.revision = header.revision;
            }
            if let Ok(mut known) = self.known.lock() {
                known.insert(key, value);
            }
        }
        Ok(())
    }
}

/// Deactivates every alarm raised.
async fn disarm(channel: &Channel) -> Result<()> {
    use pb::alarm_request::AlarmAction;
    let mut maintenance = pb::maintenance_client::MaintenanceClient::new(channel.clone());
    let raised = maintenance
        .alarm(pb::AlarmRequest {
            action: AlarmAction::Get as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .alarms;
    for alarm in raised {
        maintenance
            .alarm(pb::AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: alarm.member_id,
                alarm: alarm.alarm,
            })
            .await?;
    }
    Ok(())
}

/// This process's children (every service of the stack, and NATS) with
/// their names and states, from /proc: a child that exited stays a zombie
/// (`Z`) until it is waited for.
fn children() -> Result<BTreeMap<u32, (String, char)>> {
    let me = std::process::id();
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest
            .next()
            .and_then(|state| state.chars().next())
            .unwrap_or('?');
        let parent: Option<u32> = rest.next().and_then(|parent| parent.parse().ok());
        if parent == Some(me) {
            found.insert(pid, (name, state));
        }
    }
    Ok(found)
}

/// Every process the stack started is still running.
fn all_alive(stack: &mut Stack, before: &BTreeMap<u32, (String, char)>) -> Result<()> {
    let now = children()?;
    let mut dead = Vec::new();
    for (pid, (name, _)) in before {
        match now.get(pid) {
            Some((_, state)) if *state != 'Z' && *state != 'X' => {}
            Some((_, state)) => dead.push(format!("{name} (pid {pid}) exited (state {state})")),
            None => dead.push(format!("{name} (pid {pid}) is gone")),
        }
    }
    for replica in &mut stack.replicas {
        if !replica.is_running() {
            dead.push(format!("replica {} exited", replica.name));
        }
    }
    for id in stack.cluster.ids() {
        if !stack.cluster.is_running(id) {
            dead.push(format!("log node {id} is not running"));
        }
    }
    for service in stack.leases.iter().chain(&stack.watches) {
        if !service.is_running() {
            dead.push(format!("{} is not running", service.name));
        }
    }
    ensure!(dead.is_empty(), "processes died: {}", dead.join("; "));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_public_rpc_of_the_edge_answers_malformed_input_as_etcd_would_and_nothing_breaks(
) -> Result<()> {
    let fuzz_for = duration_from_env("CAIRNTEST_FUZZ_FOR", FUZZ_FOR)?;
    let seed = run_seed("malformed input");
    let mut stack = Stack::start(StackOptions::default()).await?;
    let dir = stack.cluster.dir().to_path_buf();
    let outcome = fuzz(&mut stack, seed, fuzz_for).await;
    with_process_output(&dir, outcome)
}

async fn fuzz(stack: &mut Stack, seed: u64, fuzz_for: Duration) -> Result<()> {
    let before = children()?;
    ensure!(
        before.len() >= 10,
        "expected the stack's processes as children, found {before:?}"
    );
    let members: Vec<(u64, String)> = {
        let mut cluster = pb::cluster_client::ClusterClient::new(stack.edge.channel()?);
        let listed = cluster
            .member_list(pb::MemberListRequest::default())
            .await?
            .into_inner();
        listed
            .members
            .iter()
            .map(|member| {
                let addr = member
                    .peer_ur_ls
                    .first()
                    .map(|url| url.trim_start_matches("http://").to_owned())
                    .unwrap_or_default();
                (member.id, addr)
            })
            .collect()
    };
    ensure!(members.len() == 3, "three log members, not {members:?}");
    let methods = Arc::new(methods());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let known: Known = Arc::default();
    let until = Instant::now() + fuzz_for;
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let runner = Worker {
            gen: Gen {
                rng: StdRng::seed_from_u64(seed.wrapping_add(worker)),
                revision: 1,
                members: members.clone(),
                counter: 0,
                worker,
                small: false,
            },
            channel: stack.edge.channel()?,
            methods: methods.clone(),
            tally: tally.clone(),
            known: known.clone(),
        };
        workers.push(tokio::spawn(runner.run(until)));
    }
    for worker in workers {
        worker.await.context("a worker panicked")??;
    }
    let elapsed = started.elapsed();

    // The summary, before any verdict, so a failing run still shows it.
    let tally = std::mem::take(
        &mut *tally
            .lock()
            .map_err(|_| anyhow::anyhow!("tally poisoned"))?,
    );
    let total: u64 = tally.calls.values().sum();
    println!(
        "\n{total} calls in {elapsed:.0?} (seed {seed}), {} skipped as harmful, {} took over 3 s",
        tally.skipped, tally.slow
    );
    println!("by input: {:?}", tally.categories);
    println!("by answer: {:?}", tally.codes);
    println!("{:<45} {:>6}  answers", "method", "calls");
    for (path, calls) in &tally.calls {
        let answers: Vec<String> = tally
            .answers
            .iter()
            .filter(|((answered, _), _)| answered == path)
            .map(|((_, code), count)| format!("{code}:{count}"))
            .collect();
        println!("{path:<45} {calls:>6}  {}", answers.join(" "));
    }
    ensure!(
        tally.calls.len() == methods.len(),
        "some methods were never called: {} of {}",
        tally.calls.len(),
        methods.len()
    );

    all_alive(stack, &before)?;

    // Every known value reads back as written.
    let disarmed = disarm(&stack.edge.channel()?).await;
    disarmed.context("disarming the alarms the fuzz raised")?;
    let known = known
        .lock()
        .map_err(|_| anyhow::anyhow!("known values poisoned"))?
        .clone();
    ensure!(!known.is_empty(), "no known value was written");
    let mut kv = stack.edge.kv()?;
    let mut wrong = Vec::new();
    for (key, value) in &known {
        let read = kv
            .range(pb::RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        match read.kvs.first() {
            Some(kv) if &kv.value == value => {}
            Some(kv) => wrong.push(format!(
                "{}: {:?} instead of {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&kv.value),
                String::from_utf8_lossy(value)
            )),
            None => wrong.push(format!("{} is gone", String::from_utf8_lossy(key))),
        }
    }
    println!(
        "{} known values written; {} read back wrong",
        known.len(),
        wrong.len()
    );

    // Both replicas hold the same store at the same revision.
    let revision = kv
        .put(pb::PutRequest {
            key: b"known/last".to_vec(),
            value: b"last".to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .context("a put's header")?
        .revision;
    let replicas = &stack.replicas;
    let hashes = eventually(
        Duration::from_secs(20),
        "both replicas to hash the last revision",
        || async {
            let mut hashes = Vec::new();
            for replica in replicas {
                hashes.push(replica.hash_kv(revision).await.ok()?.hash);
            }
            Some(hashes)
        },
    )
    .await?;
    println!("HashKV at revision {revision}: {hashes:?}");

    let findings = &tally.findings;
    for finding in findings.iter().take(30) {
        println!("FINDING {finding}");
    }
    if !findings.is_empty() {
        bail!(
            "{} answers were not ones etcd would give (seed {seed}); the first: {}",
            findings.len(),
            findings[0]
        );
    }
    ensure!(wrong.is_empty(), "known values read back wrong: {wrong:?}");
    ensure!(
        hashes.windows(2).all(|pair| pair[0] == pair[1]),
        "the replicas' HashKV differ at revision {revision}: {hashes:?}"
    );
    Ok(())
}
