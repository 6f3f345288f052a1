//! Load shedding: a bounded number of calls in progress, and a call beyond it
//! refused at once with etcd's "too many requests" rather than queued, so an
//! overloaded edge answers quickly instead of hanging its clients.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cairn_proto::etcd_error::EtcdError;
use tokio::sync::Semaphore;
use tonic::body::Body as BoxBody;
use tonic::Status;

use crate::metrics::EDGE_METRICS;

/// Wraps every service of the server in a shared limit of calls in progress.
#[derive(Clone)]
pub(crate) struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    pub(crate) fn new(max_in_progress: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_progress)),
        }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// The service [`ShedLayer`] wraps around each tonic service.
#[derive(Clone)]
pub(crate) struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Shed<S> {
    const NAME: &'static str = S::NAME;
}

type ShedFuture<E> = Pin<Box<dyn Future<Output = Result<http::Response<BoxBody>, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Shed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<BoxBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = S::Error;
    type Future = ShedFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            EDGE_METRICS.shed.inc();
            let refused = Status::from(EtcdError::TooManyRequests).into_http();
            return Box::pin(async move { Ok(refused) });
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let answer = call.await;
            drop(permit);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible as Never;

    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn calls_beyond_the_limit_are_refused_at_once_and_admitted_again_after() {
        let (release, released) = tokio::sync::watch::channel(false);
        let slow = tower::service_fn(move |_: http::Request<()>| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|done| *done).await;
                Ok::<_, Never>(http::Response::new(tonic::body::Body::empty()))
            }
        });
        let mut service = ShedLayer::new(1).layer(slow);
        let first = service
            .ready()
            .await
            .map(|ready| ready.call(http::Request::new(())));
        let Ok(first) = first;
        let second = service
            .ready()
            .await
            .map(|ready| ready.call(http::Request::new(())));
        let Ok(second) = second;
        let refused = second.await;
        let Ok(refused) = refused;
        let status = Status::from_header_map(refused.headers()).expect("a grpc status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "etcdserver: too many requests");
        let _ = release.send(true);
        let Ok(answered) = first.await;
        assert!(Status::from_header_map(answered.headers()).is_none());
    }
}
