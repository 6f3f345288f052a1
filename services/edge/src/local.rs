//! Calls into this edge's own services, in process. Lock, Election and the
//! HTTP gateway reach KV, Watch and Lease the way a client would, so each of
//! their calls takes the same routes, limits and backends as a client's gRPC
//! call, without a socket in between.

use std::sync::Arc;
use std::task::{Context, Poll};

use cairn_proto::cairn::mvcc::v1::Caller;
use cairn_proto::contract::metadata::TOKEN;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use tonic::body::Body;
use tonic::service::Routes;
use tower::Service;

use crate::identity::{caller, CertificateUser};

/// The edge's services as a client sees them: as one client in particular
/// once `as_caller` named it, so that auth holds Lock and Election to that
/// client's permissions.
#[derive(Clone)]
pub(crate) struct Local {
    routes: Routes,
    caller: Arc<Caller>,
}

impl Local {
    pub(crate) fn new(routes: Routes) -> Self {
        Self {
            routes,
            caller: Arc::default(),
        }
    }

    /// The same services, called as the client of `request`: its token or
    /// its certificate's user.
    pub(crate) fn as_caller<T>(&self, request: &tonic::Request<T>) -> Self {
        Self {
            routes: self.routes.clone(),
            caller: Arc::new(caller(request.metadata().as_ref(), request.extensions())),
        }
    }

    fn service(&self) -> AsCaller {
        AsCaller {
            routes: self.routes.clone(),
            caller: self.caller.clone(),
        }
    }

    /// A gRPC client of any method the routes serve, for callers that pick
    /// the method at run time (the HTTP gateway).
    pub(crate) fn grpc(&self) -> tonic::client::Grpc<AsCaller> {
        tonic::client::Grpc::new(self.service())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    pub(crate) fn kv(&self) -> KvClient<AsCaller> {
        KvClient::new(self.service()).max_decoding_message_size(usize::MAX)
    }

    pub(crate) fn watch(&self) -> WatchClient<AsCaller> {
        WatchClient::new(self.service()).max_decoding_message_size(usize::MAX)
    }

    pub(crate) fn lease(&self) -> LeaseClient<AsCaller> {
        LeaseClient::new(self.service())
    }
}

/// The routes, with the caller's identity stamped on every request.
#[derive(Clone)]
pub(crate) struct AsCaller {
    routes: Routes,
    caller: Arc<Caller>,
}

impl Service<http::Request<Body>> for AsCaller {
    type Response = <Routes as Service<http::Request<Body>>>::Response;
    type Error = <Routes as Service<http::Request<Body>>>::Error;
    type Future = <Routes as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.routes, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if !self.caller.token.is_empty() {
            if let Ok(token) = http::HeaderValue::from_str(&self.caller.token) {
                request.headers_mut().insert(TOKEN, token);
            }
        }
        if !self.caller.certificate_user.is_empty() {
            let user = CertificateUser(self.caller.certificate_user.clone());
            request.extensions_mut().insert(user);
        }
        self.routes.call(request)
    }
}
