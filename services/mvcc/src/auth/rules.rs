//! etcd's permission rules over the auth state: which users hold which key
//! ranges for reading and writing, what a request needs, and who is root.
//! Pure functions of the state, so the check before a proposal and the one
//! at apply give the same answer for the same auth revision.

use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::authpb::{Permission, Role};
use cairn_proto::cairn::mvcc::v1::{AuthState, AuthUser};
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};

/// The role that may do anything, as in etcd.
pub(crate) const ROOT: &str = "root";

/// Reading or writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

impl Access {
    fn granted_by(self, permission: &Permission) -> bool {
        let granted = PermType::try_from(permission.perm_type).unwrap_or(PermType::Read);
        granted == PermType::Readwrite
            || (granted == PermType::Read && self == Access::Read)
            || (granted == PermType::Write && self == Access::Write)
    }
}

/// One access a request needs: to `key` alone when `range_end` is empty,
/// to every key from `key` on when it is `\0`, else to `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Need {
    pub access: Access,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

impl Need {
    fn new(access: Access, key: &[u8], range_end: &[u8]) -> Self {
        Self {
            access,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        }
    }
}

/// What the caller of a request must hold, or that it must be root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Needs {
    Keys(Vec<Need>),
    Root,
}

/// A half-open interval of keys; `None` as the end is "no end".
type Interval = (Vec<u8>, Option<Vec<u8>>);

/// The interval etcd's `key`/`range_end` convention names.
fn interval(key: &[u8], range_end: &[u8]) -> Interval {
    if range_end.is_empty() {
        let mut end = key.to_vec();
        end.push(0);
        (key.to_vec(), Some(end))
    } else if range_end == [0] {
        (key.to_vec(), None)
    } else {
        (key.to_vec(), Some(range_end.to_vec()))
    }
}

/// Whether the union of `granted` covers `wanted`, as etcd merges a user's
/// permissions before checking a range against them.
fn covered(mut granted: Vec<Interval>, wanted: &Interval) -> bool {
    let (start, end) = wanted;
    if end.as_ref().is_some_and(|end| end <= start) {
        // An empty range needs nothing.
        return true;
    }
    granted.sort();
    // The first point not yet covered, walking the grants in start order.
    let mut reach: Vec<u8> = start.clone();
    for (from, to) in granted {
        if from > reach {
            break;
        }
        match to {
            None => return true,
            Some(to) if to > reach => reach = to,
            Some(_) => {}
        }
        if end.as_ref().is_some_and(|end| &reach >= end) {
            return true;
        }
    }
    false
}

/// A user by name.
pub(crate) fn user<'a>(state: &'a AuthState, name: &str) -> Option<&'a AuthUser> {
    state
        .users
        .binary_search_by(|record| user_name(record).cmp(name.as_bytes()))
        .ok()
        .map(|found| &state.users[found])
}

/// A role by name.
pub(crate) fn role<'a>(state: &'a AuthState, name: &str) -> Option<&'a Role> {
    state
        .roles
        .binary_search_by(|role| role.name.as_slice().cmp(name.as_bytes()))
        .ok()
        .map(|found| &state.roles[found])
}

/// The name a user record is sorted by.
pub(crate) fn user_name(record: &AuthUser) -> &[u8] {
    record.user.as_ref().map_or(&[][..], |user| &user.name)
}

/// The roles a user holds (none for an unknown user).
fn roles_of<'a>(state: &'a AuthState, name: &str) -> &'a [String] {
    user(state, name)
        .and_then(|record| record.user.as_ref())
        .map_or(&[][..], |user| &user.roles)
}

/// Whether `name` holds the root role.
pub(crate) fn is_root(state: &AuthState, name: &str) -> bool {
    roles_of(state, name).iter().any(|role| role == ROOT)
}

/// Whether `name` may do what `needs` says under `state`, with etcd's errors:
/// no user is "user name is empty", an unknown one "user name not found"
/// for root-only requests, anything else not held "permission denied".
pub(crate) fn check(state: &AuthState, name: &str, needs: &Needs) -> Result<(), EtcdError> {
    if !state.enabled {
        return Ok(());
    }
    if name.is_empty() {
        return Err(EtcdError::UserEmpty);
    }
    if is_root(state, name) {
        return Ok(());
    }
    let needed = match needs {
        Needs::Root => {
            return Err(if user(state, name).is_none() {
                EtcdError::UserNotFound
            } else {
                EtcdError::PermissionDenied
            })
        }
        Needs::Keys(needed) => needed,
    };
    let roles = roles_of(state, name);
    for need in needed {
        let granted = roles
            .iter()
            .filter_map(|name| role(state, name))
            .flat_map(|role| &role.key_permission)
            .filter(|permission| need.access.granted_by(permission))
            .map(|permission| interval(&permission.key, &permission.range_end))
            .collect();
        if !covered(granted, &interval(&need.key, &need.range_end)) {
            return Err(EtcdError::PermissionDenied);
        }
    }
    Ok(())
}

/// Writing each of `keys` (a lease's, for its revoke).
pub(crate) fn write_needs(keys: Vec<Vec<u8>>) -> Needs {
    Needs::Keys(
        keys.into_iter()
            .map(|key| Need {
                access: Access::Write,
                key,
                range_end: Vec::new(),
            })
            .collect(),
    )
}

/// A Range needs to read its whole range.
pub(crate) fn range_needs(request: &RangeRequest) -> Needs {
    Needs::Keys(vec![Need::new(
        Access::Read,
        &request.key,
        &request.range_end,
    )])
}

/// A Put needs to write its key, and to read it when it asks for the
/// previous value.
pub(crate) fn put_needs(request: &PutRequest) -> Needs {
    let mut needs = Vec::new();
    push_put(&mut needs, request);
    Needs::Keys(needs)
}

/// A DeleteRange needs to write its range, and to read it for prev_kv.
pub(crate) fn delete_needs(request: &DeleteRangeRequest) -> Needs {
    let mut needs = Vec::new();
    push_delete(&mut needs, request);
    Needs::Keys(needs)
}

/// A Txn needs to read every compared key and whatever each operation of
/// either branch needs, as etcd 3.4 checks it.
pub(crate) fn txn_needs(request: &TxnRequest) -> Needs {
    let mut needs = Vec::new();
    push_txn(&mut needs, request);
    Needs::Keys(needs)
}

fn push_put(needs: &mut Vec<Need>, request: &PutRequest) {
    needs.push(Need::new(Access::Write, &request.key, &[]));
    if request.prev_kv {
        needs.push(Need::new(Access::Read, &request.key, &[]));
    }
}

fn push_delete(needs: &mut Vec<Need>, request: &DeleteRangeRequest) {
    needs.push(Need::new(Access::Write, &request.key, &request.range_end));
    if request.prev_kv {
        needs.push(Need::new(Access::Read, &request.key, &request.range_end));
    }
}

fn push_txn(needs: &mut Vec<Need>, request: &TxnRequest) {
    for compare in &request.compare {
        needs.push(Need::new(Access::Read, &compare.key, &compare.range_end));
    }
    for op in request.success.iter().chain(&request.failure) {
        match &op.request {
            Some(Request::RequestRange(range)) => {
                needs.push(Need::new(Access::Read, &range.key, &range.range_end));
            }
            Some(Request::RequestPut(put)) => push_put(needs, put),
            Some(Request::RequestDeleteRange(delete)) => push_delete(needs, delete),
            Some(Request::RequestTxn(txn)) => push_txn(needs, txn),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::authpb::User;

    fn permission(kind: PermType, key: &str, range_end: &str) -> Permission {
        Permission {
            perm_type: kind as i32,
            key: key.as_bytes().to_vec(),
            range_end: range_end.as_bytes().to_vec(),
        }
    }

    fn state(permissions: Vec<Permission>) -> AuthState {
        AuthState {
            enabled: true,
            revision: 2,
            signing_key: vec![],
            users: vec![
                AuthUser {
                    user: Some(User {
                        name: b"alice".to_vec(),
                        password: vec![],
                        roles: vec!["reader".into()],
                        options: None,
                    }),
                    since_revision: 1,
                },
                AuthUser {
                    user: Some(User {
                        name: b"root".to_vec(),
                        password: vec![],
                        roles: vec![ROOT.into()],
                        options: None,
                    }),
                    since_revision: 1,
                },
            ],
            roles: vec![Role {
                name: b"reader".to_vec(),
                key_permission: permissions,
            }],
        }
    }

    fn read(key: &str, range_end: &str) -> Needs {
        Needs::Keys(vec![Need::new(
            Access::Read,
            key.as_bytes(),
            range_end.as_bytes(),
        )])
    }

    #[test]
    fn a_prefix_grant_covers_keys_and_ranges_inside_it_and_nothing_outside() {
        let auth = state(vec![permission(PermType::Read, "foo", "fop")]);
        assert_eq!(check(&auth, "alice", &read("foo", "")), Ok(()));
        assert_eq!(check(&auth, "alice", &read("foo/bar", "")), Ok(()));
        assert_eq!(check(&auth, "alice", &read("foo", "fop")), Ok(()));
        assert_eq!(check(&auth, "alice", &read("foo/a", "foo/b")), Ok(()));
        assert_eq!(
            check(&auth, "alice", &read("fo", "")),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(
            check(&auth, "alice", &read("foo", "foq")),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(
            check(&auth, "alice", &read("foo", "\0")),
            Err(EtcdError::PermissionDenied)
        );
    }

    #[test]
    fn adjacent_grants_together_cover_a_range_neither_covers_alone() {
        let auth = state(vec![
            permission(PermType::Read, "a", "m"),
            permission(PermType::Readwrite, "m", "\0"),
        ]);
        assert_eq!(check(&auth, "alice", &read("b", "\0")), Ok(()));
        assert_eq!(check(&auth, "alice", &read("a", "z")), Ok(()));
        assert_eq!(
            check(&auth, "alice", &read("", "b")),
            Err(EtcdError::PermissionDenied)
        );
    }

    #[test]
    fn a_read_grant_does_not_allow_writes_but_readwrite_allows_both() {
        let reader = state(vec![permission(PermType::Read, "k", "")]);
        let put = put_needs(&PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        });
        assert_eq!(
            check(&reader, "alice", &put),
            Err(EtcdError::PermissionDenied)
        );
        let both = state(vec![permission(PermType::Readwrite, "k", "")]);
        assert_eq!(check(&both, "alice", &put), Ok(()));
        let writer = state(vec![permission(PermType::Write, "k", "")]);
        let put_prev = put_needs(&PutRequest {
            key: b"k".to_vec(),
            prev_kv: true,
            ..Default::default()
        });
        assert_eq!(
            check(&writer, "alice", &put_prev),
            Err(EtcdError::PermissionDenied)
        );
    }

    #[test]
    fn root_may_do_anything_and_others_are_told_etcds_reasons() {
        let auth = state(vec![]);
        assert_eq!(check(&auth, "root", &Needs::Root), Ok(()));
        assert_eq!(check(&auth, "root", &read("", "\0")), Ok(()));
        assert_eq!(
            check(&auth, "alice", &Needs::Root),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(
            check(&auth, "mallory", &Needs::Root),
            Err(EtcdError::UserNotFound)
        );
        assert_eq!(check(&auth, "", &read("k", "")), Err(EtcdError::UserEmpty));
    }

    #[test]
    fn nothing_is_checked_while_auth_is_disabled() {
        let mut auth = state(vec![]);
        auth.enabled = false;
        assert_eq!(check(&auth, "", &Needs::Root), Ok(()));
    }

    #[test]
    fn a_txn_needs_its_compares_and_both_branches() {
        use cairn_proto::etcdserverpb::{Compare, RequestOp};
        let txn = TxnRequest {
            compare: vec![Compare {
                key: b"c".to_vec(),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"s".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: b"f".to_vec(),
                    ..Default::default()
                })),
            }],
        };
        let Needs::Keys(needs) = txn_needs(&txn) else {
            panic!("a txn needs keys");
        };
        assert_eq!(
            needs,
            vec![
                Need::new(Access::Read, b"c", b""),
                Need::new(Access::Write, b"s", b""),
                Need::new(Access::Read, b"f", b""),
            ]
        );
    }
}
