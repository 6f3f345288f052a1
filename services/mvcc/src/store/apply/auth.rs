//! etcd's auth state through the log: users, roles, permissions and the
//! enabled flag change here, the same on every replica, with etcd's rules
//! and errors; and every client command is held to the auth revision it was
//! checked against.

use cairn_proto::authpb::{Permission, Role, User};
use cairn_proto::cairn::mvcc::v1::auth_change::Change as AuthOp;
use cairn_proto::cairn::mvcc::v1::{AuthChange, AuthState, AuthUser};

use super::*;
use crate::auth::rules::{self, Needs, ROOT};

/// What an auth change gave: the auth revision after it, and the store's
/// revision for the response header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthChanged {
    pub auth_revision: u64,
    pub revision: i64,
}

fn bytes_of(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

impl Change<'_> {
    /// Whether `command`, checked for a client against some auth revision,
    /// may still apply: not when auth changed since (etcd's "revision of
    /// auth store is old"), and not when its user lacks what it needs now.
    pub(super) fn authorized(&self, command: &Command) -> Result<(), EtcdError> {
        let Some(checked) = &command.auth_checked else {
            return Ok(());
        };
        let auth = &self.state.auth;
        if !auth.enabled {
            return Ok(());
        }
        if checked.revision < auth.revision {
            return Err(EtcdError::AuthOldRevision);
        }
        let needs = match &command.op {
            Some(Op::Put(put)) => rules::put_needs(put),
            Some(Op::DeleteRange(delete)) => rules::delete_needs(delete),
            Some(Op::Txn(txn)) => rules::txn_needs(txn),
            Some(Op::LeaseRevoke(revoke)) => rules::write_needs(
                self.state
                    .lease_keys
                    .get(&revoke.id)
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect(),
            ),
            Some(Op::Compaction(_)) | Some(Op::Auth(_)) | Some(Op::Alarm(_)) => Needs::Root,
            _ => return Ok(()),
        };
        rules::check(auth, &checked.user, &needs)
    }

    /// Applies one change to users, roles or the enabled flag.
    pub(super) fn auth_change(&mut self, change: &AuthChange) -> Result<AuthChanged, MvccError> {
        let auth = &mut self.state.auth;
        let bumps = match &change.change {
            None => return Err(EtcdError::InvalidAuthManagement.into()),
            Some(AuthOp::Enable(enable)) => {
                if !auth.enabled {
                    let root = rules::user(auth, ROOT).ok_or(EtcdError::RootUserNotExist)?;
                    let has_root_role = root
                        .user
                        .as_ref()
                        .is_some_and(|user| user.roles.iter().any(|role| role == ROOT));
                    if !has_root_role {
                        return Err(EtcdError::RootRoleNotExist.into());
                    }
                    if auth.signing_key.is_empty() {
                        if enable.signing_key.len() < 32 {
                            return Err(EtcdError::InvalidAuthManagement.into());
                        }
                        auth.signing_key = enable.signing_key.clone();
                    }
                    auth.enabled = true;
                }
                false
            }
            Some(AuthOp::Disable(_)) => {
                auth.enabled = false;
                false
            }
            Some(AuthOp::UserAdd(add)) => {
                if add.name.is_empty() {
                    return Err(EtcdError::UserEmpty.into());
                }
                let at = match auth
                    .users
                    .binary_search_by(|record| rules::user_name(record).cmp(add.name.as_bytes()))
                {
                    Ok(_) => return Err(EtcdError::UserExists.into()),
                    Err(at) => at,
                };
                let no_password = add.options.is_some_and(|options| options.no_password);
                let password = if no_password {
                    Vec::new()
                } else {
                    bytes_of(&add.hashed_password)
                };
                auth.users.insert(
                    at,
                    AuthUser {
                        user: Some(User {
                            name: bytes_of(&add.name),
                            password,
                            roles: Vec::new(),
                            options: add.options,
                        }),
                        since_revision: auth.revision + 1,
                    },
                );
                true
            }
            Some(AuthOp::UserDelete(delete)) => {
                if auth.enabled && delete.name == ROOT {
                    return Err(EtcdError::InvalidAuthManagement.into());
                }
                let at = user_at(auth, &delete.name)?;
                auth.users.remove(at);
                true
            }
            Some(AuthOp::UserChangePassword(change)) => {
                let revision = auth.revision + 1;
                let record = user_mut(auth, &change.name)?;
                if let Some(user) = record.user.as_mut() {
                    user.password = bytes_of(&change.hashed_password);
                }
                record.since_revision = revision;
                true
            }
            Some(AuthOp::UserGrantRole(grant)) => {
                if grant.role != ROOT && rules::role(auth, &grant.role).is_none() {
                    // etcd looks the user up first.
                    user_mut(auth, &grant.user)?;
                    return Err(EtcdError::RoleNotFound.into());
                }
                let user = user_mut(auth, &grant.user)?
                    .user
                    .get_or_insert_with(User::default);
                match user.roles.binary_search(&grant.role) {
                    // Granted already: etcd answers success and changes nothing.
                    Ok(_) => false,
                    Err(at) => {
                        user.roles.insert(at, grant.role.clone());
                        true
                    }
                }
            }
            Some(AuthOp::UserRevokeRole(revoke)) => {
                if auth.enabled && revoke.name == ROOT && revoke.role == ROOT {
                    return Err(EtcdError::InvalidAuthManagement.into());
                }
                let user = user_mut(auth, &revoke.name)?
                    .user
                    .get_or_insert_with(User::default);
                let at = user
                    .roles
                    .binary_search(&revoke.role)
                    .map_err(|_| EtcdError::RoleNotGranted)?;
                user.roles.remove(at);
                true
            }
            Some(AuthOp::RoleAdd(add)) => {
                if add.name.is_empty() {
                    return Err(EtcdError::RoleEmpty.into());
                }
                match auth
                    .roles
                    .binary_search_by(|role| role.name.as_slice().cmp(add.name.as_bytes()))
                {
                    Ok(_) => return Err(EtcdError::RoleExists.into()),
                    Err(at) => auth.roles.insert(
                        at,
                        Role {
                            name: bytes_of(&add.name),
                            key_permission: Vec::new(),
                        },
                    ),
                }
                true
            }
            Some(AuthOp::RoleDelete(delete)) => {
                if auth.enabled && delete.role == ROOT {
                    return Err(EtcdError::InvalidAuthManagement.into());
                }
                let at = role_at(auth, &delete.role)?;
                auth.roles.remove(at);
                for user in auth
                    .users
                    .iter_mut()
                    .filter_map(|record| record.user.as_mut())
                {
                    user.roles.retain(|role| role != &delete.role);
                }
                true
            }
            Some(AuthOp::RoleGrantPermission(grant)) => {
                let permission = grant.perm.clone().ok_or(EtcdError::PermissionNotGiven)?;
                let role = role_mut(auth, &grant.name)?;
                let same = |held: &Permission| {
                    held.key == permission.key && held.range_end == permission.range_end
                };
                match role.key_permission.iter_mut().find(|held| same(held)) {
                    Some(held) => held.perm_type = permission.perm_type,
                    None => {
                        let at = role
                            .key_permission
                            .partition_point(|held| held.key <= permission.key);
                        role.key_permission.insert(at, permission);
                    }
                }
                true
            }
            Some(AuthOp::RoleRevokePermission(revoke)) => {
                let role = role_mut(auth, &revoke.role)?;
                let at = role
                    .key_permission
                    .iter()
                    .position(|held| held.key == revoke.key && held.range_end == revoke.range_end)
                    .ok_or(EtcdError::PermissionNotGranted)?;
                role.key_permission.remove(at);
                true
            }
        };
        if bumps {
            auth.revision += 1;
        }
        let meta = family(self.db, schema::META)?;
        self.batch
            .put_cf(meta, schema::META_AUTH, self.state.auth.encode_to_vec());
        Ok(AuthChanged {
            auth_revision: self.state.auth.revision,
            revision: self.state.current,
        })
    }
}

/// Where user `name` is in the sorted users.
fn user_at(auth: &AuthState, name: &str) -> Result<usize, EtcdError> {
    auth.users
        .binary_search_by(|record| rules::user_name(record).cmp(name.as_bytes()))
        .map_err(|_| EtcdError::UserNotFound)
}

/// Where role `name` is in the sorted roles.
fn role_at(auth: &AuthState, name: &str) -> Result<usize, EtcdError> {
    auth.roles
        .binary_search_by(|role| role.name.as_slice().cmp(name.as_bytes()))
        .map_err(|_| EtcdError::RoleNotFound)
}

fn user_mut<'a>(auth: &'a mut AuthState, name: &str) -> Result<&'a mut AuthUser, EtcdError> {
    let at = user_at(auth, name)?;
    Ok(&mut auth.users[at])
}

fn role_mut<'a>(auth: &'a mut AuthState, name: &str) -> Result<&'a mut Role, EtcdError> {
    let at = role_at(auth, name)?;
    Ok(&mut auth.roles[at])
}
