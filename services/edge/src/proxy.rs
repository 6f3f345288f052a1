//! Forwarding whole etcd services (KV, Watch, Lease) to their backends as
//! gRPC over HTTP/2, without decoding a message: the edge adds a hop, not a
//! re-encode.
//!
//! A unary call is buffered, so it can be sent to a second backend when the
//! first could not be reached: always when the connection was refused (the
//! request never left), and also after a broken connection when the call is a
//! read. A streaming call goes to one backend and stays there; the backend's
//! calls-in-progress count holds for the stream's life, so new streams spread
//! across gateways.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_proto::etcd_error::EtcdError;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use tonic::body::Body as BoxBody;
use tonic::server::NamedService;
use tonic::Status;
use tower::{Service, ServiceExt};

use crate::metrics::EDGE_METRICS;
use crate::pool::{BackendPool, InFlight};

/// Which etcd service a proxy carries, and how its methods may be retried.
pub trait Route: Clone + Send + Sync + 'static {
    /// The gRPC service name, e.g. `etcdserverpb.KV`.
    const NAME: &'static str;
    /// Methods that open a stream: no buffering, no retry.
    const STREAMING: &'static [&'static str];
    /// Unary methods that change nothing, so a call whose connection broke
    /// after sending may be sent again.
    const READS: &'static [&'static str];
}

/// etcd's KV service, served by cairn-mvcc.
#[derive(Clone)]
pub struct Kv;

impl Route for Kv {
    const NAME: &'static str = "etcdserverpb.KV";
    const STREAMING: &'static [&'static str] = &[];
    const READS: &'static [&'static str] = &["Range"];
}

/// etcd's Watch service, served by cairn-watch.
#[derive(Clone)]
pub struct Watch;

impl Route for Watch {
    const NAME: &'static str = "etcdserverpb.Watch";
    const STREAMING: &'static [&'static str] = &["Watch"];
    const READS: &'static [&'static str] = &[];
}

/// etcd's Lease service, served by the active cairn-lease.
#[derive(Clone)]
pub struct Lease;

impl Route for Lease {
    const NAME: &'static str = "etcdserverpb.Lease";
    const STREAMING: &'static [&'static str] = &["LeaseKeepAlive"];
    const READS: &'static [&'static str] = &["LeaseTimeToLive", "LeaseLeases"];
}

/// A tonic service that forwards every call of route `R` to `pool`.
pub struct Proxy<R> {
    inner: Arc<ProxyInner>,
    route: PhantomData<R>,
}

impl<R> Clone for Proxy<R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            route: PhantomData,
        }
    }
}

struct ProxyInner {
    pool: Arc<BackendPool>,
    unary_timeout: Duration,
    max_request_bytes: usize,
}

impl<R: Route> NamedService for Proxy<R> {
    const NAME: &'static str = R::NAME;
}

impl<R: Route> Proxy<R> {
    pub fn new(pool: Arc<BackendPool>, unary_timeout: Duration, max_request_bytes: usize) -> Self {
        Self {
            inner: Arc::new(ProxyInner {
                pool,
                unary_timeout,
                max_request_bytes,
            }),
            route: PhantomData,
        }
    }
}

type ProxyFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<BoxBody>, Infallible>> + Send>>;

impl<R: Route> Service<http::Request<BoxBody>> for Proxy<R> {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let method = path.rsplit('/').next().unwrap_or_default().to_owned();
            let started = Instant::now();
            let answer = if R::STREAMING.contains(&method.as_str()) {
                inner.forward_stream(request).await
            } else {
                let read = R::READS.contains(&method.as_str());
                inner.forward_unary(request, read).await
            };
            EDGE_METRICS
                .calls
                .with_label_values(&[path.as_str()])
                .observe(started.elapsed().as_secs_f64());
            Ok(answer.unwrap_or_else(Status::into_http))
        })
    }
}

/// Whether a transport error happened before the request left: the
/// connection was refused or could not be made in time.
fn never_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::TimedOut
            ) {
                return true;
            }
        }
        let text = error.to_string();
        if text.contains("error trying to connect") || text.contains("tcp connect error") {
            return true;
        }
        source = error.source();
    }
    false
}

/// The headers to send on: the caller's, with this hop's trace context.
fn onward_headers(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
    cairn_kit::telemetry::inject_context(&mut metadata);
    metadata.into_headers()
}

impl ProxyInner {
    fn no_backend(&self) -> Status {
        if self.pool.is_configured() {
            Status::unavailable(format!(
                "cairn: no {} backend is reachable",
                self.pool.service()
            ))
        } else {
            Status::unavailable(format!(
                "cairn: no {} backend is configured at this edge",
                self.pool.service()
            ))
        }
    }

    async fn forward_unary(
        &self,
        request: http::Request<BoxBody>,
        read: bool,
    ) -> Result<http::Response<BoxBody>, Status> {
        let deadline = tokio::time::Instant::now() + self.unary_timeout;
        let (parts, body) = request.into_parts();
        let body: Bytes = Limited::new(body, self.max_request_bytes)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    Status::from(EtcdError::RequestTooLarge)
                } else {
                    Status::cancelled(format!("the request body did not arrive: {error}"))
                }
            })?
            .to_bytes();
        let headers = onward_headers(&parts.headers);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last_failure = None;
        while let Some(backend) = self.pool.pick(&tried) {
            if !tried.is_empty() {
                EDGE_METRICS
                    .retries
                    .with_label_values(&[self.pool.service()])
                    .inc();
            }
            tried.push(backend.addr);
            let mut onward = http::Request::new(BoxBody::new(Full::new(body.clone())));
            *onward.method_mut() = parts.method.clone();
            *onward.uri_mut() = parts.uri.clone();
            *onward.version_mut() = parts.version;
            *onward.headers_mut() = headers.clone();
            let _call = backend.start();
            let channel = backend.channel.clone();
            let sent =
                tokio::time::timeout_at(deadline, async move { channel.oneshot(onward).await })
                    .await;
            match sent {
                Err(_) => return Err(Status::from(EtcdError::Timeout)),
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) => {
                    self.pool.mark_down(&backend);
                    let unsent = never_sent(&error);
                    let failure = format!(
                        "cairn: the {} backend at {} failed: {error}",
                        self.pool.service(),
                        backend.addr
                    );
                    if !unsent && !read {
                        // The backend may have carried the write out.
                        return Err(Status::unavailable(format!(
                            "{failure}; the request may or may not have taken effect"
                        )));
                    }
                    last_failure = Some(failure);
                }
            }
        }
        Err(last_failure.map_or_else(|| self.no_backend(), Status::unavailable))
    }

    async fn forward_stream(
        &self,
        request: http::Request<BoxBody>,
    ) -> Result<http::Response<BoxBody>, Status> {
        let backend = self.pool.pick(&[]).ok_or_else(|| self.no_backend())?;
        let (mut parts, body) = request.into_parts();
        parts.headers = onward_headers(&parts.headers);
        let call = backend.start();
        let channel = backend.channel.clone();
        match channel
            .oneshot(http::Request::from_parts(parts, body))
            .await
        {
            Ok(response) => Ok(response.map(|body| {
                BoxBody::new(Counted {
                    inner: body,
                    _call: call,
                })
            })),
            Err(error) => {
                self.pool.mark_down(&backend);
                Err(Status::unavailable(format!(
                    "cairn: the {} backend at {} failed: {error}",
                    self.pool.service(),
                    backend.addr
                )))
            }
        }
    }
}

/// A response body that keeps its stream counted against its backend until
/// the stream ends.
struct Counted {
    inner: BoxBody,
    _call: InFlight,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_counts_as_never_sent_and_a_reset_does_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(never_sent(&refused));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!never_sent(&reset));
    }
}
