//! etcd's Auth service on a replica, and who a KV call's caller is. A
//! change is checked here (so nothing doomed reaches the log and no password
//! is hashed for nothing), proposed with the auth revision it was checked
//! against, and checked again as it applies. Reads of the auth state wait
//! for the read index first, like a linearizable Range.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_proto::cairn::mvcc::v1::auth_change::Change as AuthOp;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{
    AuthChange, AuthChecked, AuthEnable, AuthState, AuthorizeRequest, AuthorizeResponse, Caller,
};
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::protocol::unexpected;
use super::{answer, MvccApi};
use crate::auth::password::Passwords;
use crate::auth::rules::{self, Needs};
use crate::auth::token;
use crate::error::MvccError;
use crate::settings::AuthSettings;
use crate::store::{AuthChanged, Reply};

/// What serving Authenticate and hashing passwords takes.
pub(crate) struct AuthSupport {
    passwords: Passwords,
    token_ttl: Duration,
}

impl AuthSupport {
    pub(crate) fn new(settings: &AuthSettings) -> Arc<Self> {
        Arc::new(Self {
            passwords: Passwords::new(settings.bcrypt_cost),
            token_ttl: Duration::from_secs(settings.token_ttl_secs),
        })
    }
}

fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}

/// The user a caller is under `auth`: none while auth is off; else the
/// token's (which must be valid), or the certificate's when there is no
/// token, or none.
fn identify(auth: &AuthState, caller: &Caller) -> Result<String, EtcdError> {
    if !auth.enabled {
        return Ok(String::new());
    }
    if !caller.token.is_empty() {
        return token::verify(auth, &caller.token, unix_ms(SystemTime::now()));
    }
    Ok(caller.certificate_user.clone())
}

/// The user `caller` is, if it may do what `needs` says under `auth`.
fn permitted(auth: &AuthState, caller: &Caller, needs: &Needs) -> Result<String, EtcdError> {
    let user = identify(auth, caller)?;
    rules::check(auth, &user, needs)?;
    Ok(user)
}

impl MvccApi {
    /// Checks that `caller` may do what `needs` says now, and names the
    /// user and auth revision the check was made for, which the command
    /// carries into the log.
    pub(super) fn checked(&self, caller: &Caller, needs: &Needs) -> Result<AuthChecked, MvccError> {
        self.replica.store.with_auth(|auth| {
            Ok(AuthChecked {
                user: permitted(auth, caller, needs)?,
                revision: auth.revision,
            })
        })
    }

    /// What `read` makes of the auth state, for a caller that is root or
    /// that `allowed` lets in (etcd lets a user get itself and the roles it
    /// holds); otherwise the refusal root's check gave.
    fn read_auth_as<T>(
        &self,
        caller: &Caller,
        allowed: impl FnOnce(&AuthState, &str) -> bool,
        read: impl FnOnce(&AuthState) -> T,
    ) -> Result<T, EtcdError> {
        self.replica.store.with_auth(|auth| {
            let user = identify(auth, caller)?;
            if let Err(refused) = rules::check(auth, &user, &Needs::Root) {
                if !allowed(auth, &user) {
                    return Err(refused);
                }
            }
            Ok(read(auth))
        })
    }

    /// Mvcc/Authorize: whether a caller of another service may go on.
    pub(super) fn authorize_of(
        &self,
        request: AuthorizeRequest,
    ) -> Result<AuthorizeResponse, MvccError> {
        let needs = if request.root {
            Needs::Root
        } else {
            rules::range_needs(&RangeRequest {
                key: request.key,
                range_end: request.range_end,
                ..Default::default()
            })
        };
        let caller = request.caller.unwrap_or_default();
        self.replica.store.with_auth(|auth| {
            Ok(AuthorizeResponse {
                user: permitted(auth, &caller, &needs)?,
                enabled: auth.enabled,
            })
        })
    }

    /// Proposes an auth change for `caller` (root, once auth is on).
    async fn change(&self, caller: &Caller, change: AuthOp) -> Result<AuthChanged, MvccError> {
        let checked = self.checked(caller, &Needs::Root)?;
        let op = Op::Auth(AuthChange {
            change: Some(change),
        });
        match self.write_checked(op, Some(checked)).await? {
            Reply::Auth(changed) => Ok(changed),
            _ => Err(unexpected("auth change")),
        }
    }

    /// The header of an auth answer.
    fn auth_header(&self, changed: AuthChanged) -> Option<ResponseHeader> {
        self.header(changed.revision)
    }

    /// The store's revision now, for the header of an answer that read.
    fn current_header(&self) -> Option<ResponseHeader> {
        self.header(self.replica.store.status().current)
    }

    pub(super) async fn auth_enable_of(
        &self,
        _: AuthEnableRequest,
        caller: &Caller,
    ) -> Result<AuthEnableResponse, MvccError> {
        let signing_key: [u8; 32] = rand::random();
        let enable = AuthOp::Enable(AuthEnable {
            signing_key: signing_key.to_vec(),
        });
        let changed = self.change(caller, enable).await?;
        Ok(AuthEnableResponse {
            header: self.auth_header(changed),
        })
    }

    pub(super) async fn auth_status_of(
        &self,
        _: AuthStatusRequest,
        _: &Caller,
    ) -> Result<AuthStatusResponse, MvccError> {
        self.linearize().await?;
        let (enabled, auth_revision) = self
            .replica
            .store
            .with_auth(|auth| (auth.enabled, auth.revision));
        Ok(AuthStatusResponse {
            header: self.current_header(),
            enabled,
            auth_revision,
        })
    }

    pub(super) async fn authenticate_of(
        &self,
        request: AuthenticateRequest,
        _: &Caller,
    ) -> Result<AuthenticateResponse, MvccError> {
        self.linearize().await?;
        let failed = EtcdError::AuthFailed;
        let (hashed, since) = self.replica.store.with_auth(|auth| {
            if !auth.enabled {
                return Err(EtcdError::AuthNotEnabled);
            }
            let record = rules::user(auth, &request.name).ok_or(failed)?;
            let user = record.user.as_ref().ok_or(failed)?;
            let no_password = user.options.is_some_and(|options| options.no_password);
            if no_password || user.password.is_empty() {
                return Err(failed);
            }
            Ok((user.password.clone(), record.since_revision))
        })?;
        if !self
            .auth
            .passwords
            .matches(&request.name, request.password, hashed)
            .await?
        {
            return Err(failed.into());
        }
        let expires = unix_ms(SystemTime::now() + self.auth.token_ttl);
        let token = self.replica.store.with_auth(|auth| {
            // The password checked must still be the user's.
            match rules::user(auth, &request.name) {
                Some(record) if record.since_revision == since => {
                    token::issue(auth, &request.name, expires)
                }
                _ => Err(failed),
            }
        })?;
        Ok(AuthenticateResponse {
            header: self.current_header(),
            token,
        })
    }

    pub(super) async fn user_add_of(
        &self,
        mut request: AuthUserAddRequest,
        caller: &Caller,
    ) -> Result<AuthUserAddResponse, MvccError> {
        if request.name.is_empty() {
            return Err(EtcdError::UserEmpty.into());
        }
        // Refused before the password is hashed, not after.
        self.checked(caller, &Needs::Root)?;
        let password = std::mem::take(&mut request.password);
        let no_password = request.options.is_some_and(|options| options.no_password);
        if !no_password && request.hashed_password.is_empty() {
            request.hashed_password = self.auth.passwords.hash(password).await?;
        }
        let changed = self.change(caller, AuthOp::UserAdd(request)).await?;
        Ok(AuthUserAddResponse {
            header: self.auth_header(changed),
        })
    }

    pub(super) async fn user_get_of(
        &self,
        request: AuthUserGetRequest,
        caller: &Caller,
    ) -> Result<AuthUserGetResponse, MvccError> {
        self.linearize().await?;
        let roles = self.read_auth_as(
            caller,
            |_, user| user == request.name,
            |auth| {
                rules::user(auth, &request.name)
                    .and_then(|record| record.user.as_ref())
                    .map(|user| user.roles.clone())
                    .ok_or(EtcdError::UserNotFound)
            },
        )??;
        Ok(AuthUserGetResponse {
            header: self.current_header(),
            roles,
        })
    }

    pub(super) async fn user_list_of(
        &self,
        _: AuthUserListRequest,
        caller: &Caller,
    ) -> Result<AuthUserListResponse, MvccError> {
        self.linearize().await?;
        let users = self.read_auth_as(
            caller,
            |_, _| false,
            |auth| {
                auth.users
                    .iter()
                    .map(|record| String::from_utf8_lossy(rules::user_name(record)).into_owned())
                    .collect()
            },
        )?;
        Ok(AuthUserListResponse {
            header: self.current_header(),
            users,
        })
    }

    pub(super) async fn user_change_password_of(
        &self,
        mut request: AuthUserChangePasswordRequest,
        caller: &Caller,
    ) -> Result<AuthUserChangePasswordResponse, MvccError> {
        self.checked(caller, &Needs::Root)?;
        if !self
            .replica
            .store
            .with_auth(|auth| rules::user(auth, &request.name).is_some())
        {
            return Err(EtcdError::UserNotFound.into());
        }
        let password = std::mem::take(&mut request.password);
        if request.hashed_password.is_empty() {
            request.hashed_password = self.auth.passwords.hash(password).await?;
        }
        let changed = self
            .change(caller, AuthOp::UserChangePassword(request))
            .await?;
        Ok(AuthUserChangePasswordResponse {
            header: self.auth_header(changed),
        })
    }

    pub(super) async fn role_get_of(
        &self,
        request: AuthRoleGetRequest,
        caller: &Caller,
    ) -> Result<AuthRoleGetResponse, MvccError> {
        self.linearize().await?;
        let holds = |auth: &AuthState, user: &str| {
            rules::user(auth, user)
                .and_then(|record| record.user.as_ref())
                .is_some_and(|held| held.roles.contains(&request.role))
        };
        let perm = self.read_auth_as(caller, holds, |auth| {
            rules::role(auth, &request.role)
                .map(|role| role.key_permission.clone())
                .ok_or(EtcdError::RoleNotFound)
        })??;
        Ok(AuthRoleGetResponse {
            header: self.current_header(),
            perm,
        })
    }

    pub(super) async fn role_list_of(
        &self,
        _: AuthRoleListRequest,
        caller: &Caller,
    ) -> Result<AuthRoleListResponse, MvccError> {
        self.linearize().await?;
        let roles = self.read_auth_as(
            caller,
            |_, _| false,
            |auth| {
                auth.roles
                    .iter()
                    .map(|role| String::from_utf8_lossy(&role.name).into_owned())
                    .collect()
            },
        )?;
        Ok(AuthRoleListResponse {
            header: self.current_header(),
            roles,
        })
    }
}

/// Auth changes that answer with a header alone: proposed for their
/// caller, answered once applied.
macro_rules! change_answered {
    ($($of:ident: $request:ty => $response:ident, $op:ident;)*) => {
        impl MvccApi {
            $(
                pub(super) async fn $of(
                    &self,
                    request: $request,
                    caller: &Caller,
                ) -> Result<$response, MvccError> {
                    let changed = self.change(caller, AuthOp::$op(request)).await?;
                    Ok($response {
                        header: self.auth_header(changed),
                    })
                }
            )*
        }
    };
}

change_answered! {
    auth_disable_of: AuthDisableRequest => AuthDisableResponse, Disable;
    user_delete_of: AuthUserDeleteRequest => AuthUserDeleteResponse, UserDelete;
    user_grant_role_of: AuthUserGrantRoleRequest => AuthUserGrantRoleResponse, UserGrantRole;
    user_revoke_role_of: AuthUserRevokeRoleRequest => AuthUserRevokeRoleResponse, UserRevokeRole;
    role_add_of: AuthRoleAddRequest => AuthRoleAddResponse, RoleAdd;
    role_delete_of: AuthRoleDeleteRequest => AuthRoleDeleteResponse, RoleDelete;
    role_grant_permission_of: AuthRoleGrantPermissionRequest => AuthRoleGrantPermissionResponse, RoleGrantPermission;
    role_revoke_permission_of: AuthRoleRevokePermissionRequest => AuthRoleRevokePermissionResponse, RoleRevokePermission;
}

/// The caller of a call that came as a call of its own.
pub(super) fn caller_of<T>(request: &Request<T>) -> Caller {
    cairn_proto::contract::metadata::caller(request.metadata())
}

/// One method of the Auth service over the method above that answers it,
/// spelled as `tonic::async_trait` expands an `async fn` (a macro's output
/// is not rewritten by it).
macro_rules! served {
    ($name:ident, $label:literal, $request:ty, $response:ty, $of:ident) => {
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            request: Request<$request>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<Response<$response>, Status>>
                    + Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let caller = caller_of(&request);
                answer(self, $label, self.$of(request.into_inner(), &caller)).await
            })
        }
    };
}

impl Auth for MvccApi {
    served!(
        auth_enable,
        "AuthEnable",
        AuthEnableRequest,
        AuthEnableResponse,
        auth_enable_of
    );
    served!(
        auth_disable,
        "AuthDisable",
        AuthDisableRequest,
        AuthDisableResponse,
        auth_disable_of
    );
    served!(
        auth_status,
        "AuthStatus",
        AuthStatusRequest,
        AuthStatusResponse,
        auth_status_of
    );
    served!(
        authenticate,
        "Authenticate",
        AuthenticateRequest,
        AuthenticateResponse,
        authenticate_of
    );
    served!(
        user_add,
        "UserAdd",
        AuthUserAddRequest,
        AuthUserAddResponse,
        user_add_of
    );
    served!(
        user_get,
        "UserGet",
        AuthUserGetRequest,
        AuthUserGetResponse,
        user_get_of
    );
    served!(
        user_list,
        "UserList",
        AuthUserListRequest,
        AuthUserListResponse,
        user_list_of
    );
    served!(
        user_delete,
        "UserDelete",
        AuthUserDeleteRequest,
        AuthUserDeleteResponse,
        user_delete_of
    );
    served!(
        user_change_password,
        "UserChangePassword",
        AuthUserChangePasswordRequest,
        AuthUserChangePasswordResponse,
        user_change_password_of
    );
    served!(
        user_grant_role,
        "UserGrantRole",
        AuthUserGrantRoleRequest,
        AuthUserGrantRoleResponse,
        user_grant_role_of
    );
    served!(
        user_revoke_role,
        "UserRevokeRole",
        AuthUserRevokeRoleRequest,
        AuthUserRevokeRoleResponse,
        user_revoke_role_of
    );
    served!(
        role_add,
        "RoleAdd",
        AuthRoleAddRequest,
        AuthRoleAddResponse,
        role_add_of
    );
    served!(
        role_get,
        "RoleGet",
        AuthRoleGetRequest,
        AuthRoleGetResponse,
        role_get_of
    );
    served!(
        role_list,
        "RoleList",
        AuthRoleListRequest,
        AuthRoleListResponse,
        role_list_of
    );
    served!(
        role_delete,
        "RoleDelete",
        AuthRoleDeleteRequest,
        AuthRoleDeleteResponse,
        role_delete_of
    );
    served!(
        role_grant_permission,
        "RoleGrantPermission",
        AuthRoleGrantPermissionRequest,
        AuthRoleGrantPermissionResponse,
        role_grant_permission_of
    );
    served!(
        role_revoke_permission,
        "RoleRevokePermission",
        AuthRoleRevokePermissionRequest,
        AuthRoleRevokePermissionResponse,
        role_revoke_permission_of
    );
}
