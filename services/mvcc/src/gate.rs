//! A gRPC service that answers only once the replica has a store it may
//! serve. The port is bound and health answers from the start, so probes and
//! the edge hear "not serving yet" at once instead of waiting on a silent
//! socket while the replica decides whether its store is usable, copies one
//! from a peer, or catches up.

use std::convert::Infallible;
use std::sync::Arc;

use parking_lot::RwLock;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;

use crate::error::MvccError;

enum State<S> {
    /// Why calls are refused for now.
    Closed(String),
    Open(S),
}

/// `S` once opened; until then every call fails UNAVAILABLE with
/// `REPLICA_FAILED`, which the edge sends to another replica.
pub(crate) struct Gate<S> {
    state: Arc<RwLock<State<S>>>,
}

impl<S> Clone for Gate<S> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }
}

impl<S: Clone> Gate<S> {
    /// A gate closed for `reason`.
    pub(crate) fn closed(reason: impl Into<String>) -> Self {
        Self {
            state: Arc::new(RwLock::new(State::Closed(reason.into()))),
        }
    }

    /// Changes why calls are refused; an open gate stays open.
    pub(crate) fn refuse_because(&self, reason: impl Into<String>) {
        let mut state = self.state.write();
        if let State::Closed(why) = &mut *state {
            *why = reason.into();
        }
    }

    /// Refuses calls again, for `reason`: the service behind is going away
    /// (its store is being replaced).
    pub(crate) fn close(&self, reason: impl Into<String>) {
        *self.state.write() = State::Closed(reason.into());
    }

    /// Lets calls through to `service` from now on.
    pub(crate) fn open(&self, service: S) {
        *self.state.write() = State::Open(service);
    }

    /// The service to call, or why there is none yet.
    fn service(&self) -> Result<S, String> {
        match &*self.state.read() {
            State::Open(service) => Ok(service.clone()),
            State::Closed(reason) => Err(reason.clone()),
        }
    }
}

impl<S> Service<Request<Body>> for Gate<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // tonic's generated servers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.service() {
            Ok(mut service) => Box::pin(async move { service.call(request).await }),
            Err(reason) => {
                let status = tonic::Status::from(MvccError::NotReady(reason));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

impl<S: NamedService> NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use cairn_proto::contract::FailureKind;

    use super::*;

    /// Answers every call OK with an empty body.
    #[derive(Clone)]
    struct Answers;

    impl Service<Request<Body>> for Answers {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            std::future::ready(Ok(tonic::Status::ok("").into_http()))
        }
    }

    fn grpc_status(response: &Response<Body>) -> (i32, String) {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        (
            header("grpc-status").parse().unwrap_or(-1),
            header("grpc-message"),
        )
    }

    #[tokio::test]
    async fn a_closed_gate_refuses_with_its_reason_and_an_open_one_passes_calls_on() {
        let mut gate = Gate::closed("deciding");
        gate.refuse_because("copying the store from a peer");
        let refused = gate
            .call(Request::new(Body::empty()))
            .await
            .unwrap_or_else(|never| match never {});
        let (code, message) = grpc_status(&refused);
        assert_eq!(code, tonic::Code::Unavailable as i32);
        assert!(message.contains("copying"), "{message}");
        let status = tonic::Status::from_header_map(refused.headers()).expect("a status");
        assert_eq!(
            cairn_proto::contract::failure_kind(&status),
            FailureKind::ReplicaFailed
        );

        gate.open(Answers);
        gate.refuse_because("too late");
        let passed = gate
            .call(Request::new(Body::empty()))
            .await
            .unwrap_or_else(|never| match never {});
        assert_eq!(grpc_status(&passed).0, tonic::Code::Ok as i32);
    }
}
