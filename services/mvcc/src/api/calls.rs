//! The edge's KV calls, many on one stream (`Mvcc/Calls`): each is decoded,
//! answered by the same code as the KV service, and its answer sent back
//! with the call's id as soon as it is ready, so a slow call holds up no
//! other. The answer carries exactly what a unary call would have: the
//! encoded response, or the status code, message and details.

use std::pin::Pin;

use cairn_proto::cairn::mvcc::v1::{KvAnswer, KvCall, KvMethod};
use cairn_proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
    AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest, AuthenticateRequest,
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest,
};
use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Response, Status, Streaming};
use tracing::Instrument;

use super::{answer, MvccApi};

/// Answers that may wait for the edge to read them.
const ANSWER_QUEUE: usize = 1024;

/// The stream of answers `Mvcc/Calls` returns.
pub(super) type AnswerStream = Pin<Box<dyn Stream<Item = Result<KvAnswer, Status>> + Send>>;

/// The answer to a call, from the response or the status a unary call gives.
fn to_answer<T: Message>(id: u64, result: Result<Response<T>, Status>) -> KvAnswer {
    match result {
        Ok(response) => KvAnswer {
            id,
            body: response.into_inner().encode_to_vec().into(),
            ..Default::default()
        },
        Err(status) => KvAnswer {
            id,
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: status.details().to_vec(),
            body: bytes::Bytes::new(),
        },
    }
}

fn malformed(id: u64, error: prost::DecodeError) -> KvAnswer {
    to_answer::<()>(
        id,
        Err(Status::invalid_argument(format!(
            "grpc: error unmarshalling request: {error}"
        ))),
    )
}

impl MvccApi {
    /// Serves one edge's stream of calls until the edge closes it.
    pub(super) fn serve_calls(&self, mut calls: Streaming<KvCall>) -> AnswerStream {
        let (answers, out) = mpsc::channel(ANSWER_QUEUE);
        let api = self.clone();
        tokio::spawn(async move {
            // A store being replaced by a restore ends the stream, so that
            // nothing holds it open; the edge opens a new one.
            loop {
                let call = tokio::select! {
                    call = calls.message() => call,
                    _ = api.replica.restore_point() => {
                        if let Err(refused) = api.replica.check_serving() {
                            let _ = answers.send(Err(refused.into())).await;
                        }
                        break;
                    }
                };
                let Ok(Some(call)) = call else {
                    break;
                };
                let api = api.clone();
                let answers = answers.clone();
                tokio::spawn(async move {
                    let answer = api.one_call(call).await;
                    let _ = answers.send(Ok(answer)).await;
                });
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))
    }

    /// One call, as the KV service would answer it.
    async fn one_call(&self, call: KvCall) -> KvAnswer {
        let span = cairn_kit::telemetry::message_span(
            &call.trace_context,
            cairn_proto::etcdserverpb::kv_server::SERVICE_NAME,
            call.method().as_str_name(),
        );
        self.dispatch(call).instrument(span).await
    }

    async fn dispatch(&self, call: KvCall) -> KvAnswer {
        let id = call.id;
        let body = call.body;
        let caller = call.caller.unwrap_or_default();
        /// Decodes the body as `$request` and answers it with `$of`.
        macro_rules! call {
            ($label:literal, $request:ty, $of:ident) => {
                match <$request>::decode(body) {
                    Ok(request) => {
                        to_answer(id, answer(self, $label, self.$of(request, &caller)).await)
                    }
                    Err(error) => malformed(id, error),
                }
            };
        }
        match KvMethod::try_from(call.method).unwrap_or(KvMethod::Unspecified) {
            KvMethod::Range => call!("Range", RangeRequest, range_of),
            KvMethod::Put => call!("Put", PutRequest, put_of),
            KvMethod::DeleteRange => call!("DeleteRange", DeleteRangeRequest, delete_of),
            KvMethod::Txn => call!("Txn", TxnRequest, txn_of),
            KvMethod::Compact => call!("Compact", CompactionRequest, compact_of),
            KvMethod::AuthEnable => call!("AuthEnable", AuthEnableRequest, auth_enable_of),
            KvMethod::AuthDisable => call!("AuthDisable", AuthDisableRequest, auth_disable_of),
            KvMethod::AuthStatus => call!("AuthStatus", AuthStatusRequest, auth_status_of),
            KvMethod::Authenticate => call!("Authenticate", AuthenticateRequest, authenticate_of),
            KvMethod::UserAdd => call!("UserAdd", AuthUserAddRequest, user_add_of),
            KvMethod::UserGet => call!("UserGet", AuthUserGetRequest, user_get_of),
            KvMethod::UserList => call!("UserList", AuthUserListRequest, user_list_of),
            KvMethod::UserDelete => call!("UserDelete", AuthUserDeleteRequest, user_delete_of),
            KvMethod::UserChangePassword => call!(
                "UserChangePassword",
                AuthUserChangePasswordRequest,
                user_change_password_of
            ),
            KvMethod::UserGrantRole => {
                call!(
                    "UserGrantRole",
                    AuthUserGrantRoleRequest,
                    user_grant_role_of
                )
            }
            KvMethod::UserRevokeRole => {
                call!(
                    "UserRevokeRole",
                    AuthUserRevokeRoleRequest,
                    user_revoke_role_of
                )
            }
            KvMethod::RoleAdd => call!("RoleAdd", AuthRoleAddRequest, role_add_of),
            KvMethod::RoleGet => call!("RoleGet", AuthRoleGetRequest, role_get_of),
            KvMethod::RoleList => call!("RoleList", AuthRoleListRequest, role_list_of),
            KvMethod::RoleDelete => call!("RoleDelete", AuthRoleDeleteRequest, role_delete_of),
            KvMethod::RoleGrantPermission => call!(
                "RoleGrantPermission",
                AuthRoleGrantPermissionRequest,
                role_grant_permission_of
            ),
            KvMethod::RoleRevokePermission => call!(
                "RoleRevokePermission",
                AuthRoleRevokePermissionRequest,
                role_revoke_permission_of
            ),
            KvMethod::Unspecified => to_answer::<()>(
                id,
                Err(Status::unimplemented("unknown KV method in a call")),
            ),
        }
    }
}
