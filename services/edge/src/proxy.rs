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

use bytes::{BufMut, Bytes, BytesMut};
use cairn_proto::cairn::mvcc::v1::{Caller, KvAnswer, KvCall, KvMethod};
use cairn_proto::contract::{Failure, FailureKind};
use cairn_proto::etcd_error::EtcdError;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use tonic::body::Body as BoxBody;
use tonic::server::NamedService;
use tonic::Status;
use tower::{Service, ServiceExt};

use crate::framing::{closing_frame, Answered, CutShort, Watched};
use crate::metrics::EDGE_METRICS;
use crate::pool::{Backend, BackendPool, InFlight};
use cairn_kit::multiplex::MultiplexError;

/// Which etcd service a proxy carries, and how its methods may be retried.
pub(crate) trait Route: Clone + Send + Sync + 'static {
    /// The gRPC service name, e.g. `etcdserverpb.KV`.
    const NAME: &'static str;
    /// Every method of the service; any other is refused as UNIMPLEMENTED
    /// before its body is read, as a gRPC server does.
    const METHODS: &'static [&'static str];
    /// Methods that open a stream: no buffering, no retry.
    const STREAMING: &'static [&'static str];
    /// Unary methods that change nothing, so a call whose connection broke
    /// after sending may be sent again.
    const READS: &'static [&'static str];

    /// The method a unary call is, when the backend takes it as a message on
    /// a shared stream rather than as a call of its own.
    fn tunnelled(_method: &str) -> Option<KvMethod> {
        None
    }
}

/// etcd's KV service, served by cairn-mvcc.
#[derive(Clone)]
pub(crate) struct Kv;

impl Route for Kv {
    const NAME: &'static str = cairn_proto::etcdserverpb::kv_server::SERVICE_NAME;
    const METHODS: &'static [&'static str] = &["Range", "Put", "DeleteRange", "Txn", "Compact"];
    const STREAMING: &'static [&'static str] = &[];
    const READS: &'static [&'static str] = &["Range"];

    fn tunnelled(method: &str) -> Option<KvMethod> {
        match method {
            "Range" => Some(KvMethod::Range),
            "Put" => Some(KvMethod::Put),
            "DeleteRange" => Some(KvMethod::DeleteRange),
            "Txn" => Some(KvMethod::Txn),
            "Compact" => Some(KvMethod::Compact),
            _ => None,
        }
    }
}

/// etcd's Watch service, served by cairn-watch.
#[derive(Clone)]
pub(crate) struct Watch;

impl Route for Watch {
    const NAME: &'static str = cairn_proto::etcdserverpb::watch_server::SERVICE_NAME;
    const METHODS: &'static [&'static str] = &["Watch"];
    const STREAMING: &'static [&'static str] = &["Watch"];
    const READS: &'static [&'static str] = &[];
}

/// etcd's Lease service, served by the active cairn-lease.
#[derive(Clone)]
pub(crate) struct Lease;

impl Route for Lease {
    const NAME: &'static str = cairn_proto::etcdserverpb::lease_server::SERVICE_NAME;
    const METHODS: &'static [&'static str] = &[
        "LeaseGrant",
        "LeaseRevoke",
        "LeaseKeepAlive",
        "LeaseTimeToLive",
        "LeaseLeases",
    ];
    const STREAMING: &'static [&'static str] = &["LeaseKeepAlive"];
    const READS: &'static [&'static str] = &["LeaseTimeToLive", "LeaseLeases"];
}

/// etcd's Auth service, answered by cairn-mvcc replicas, which hold the
/// users and roles.
#[derive(Clone)]
pub(crate) struct Auth;

impl Route for Auth {
    const NAME: &'static str = cairn_proto::etcdserverpb::auth_server::SERVICE_NAME;
    const METHODS: &'static [&'static str] = &[
        "AuthEnable",
        "AuthDisable",
        "AuthStatus",
        "Authenticate",
        "UserAdd",
        "UserGet",
        "UserList",
        "UserDelete",
        "UserChangePassword",
        "UserGrantRole",
        "UserRevokeRole",
        "RoleAdd",
        "RoleGet",
        "RoleList",
        "RoleDelete",
        "RoleGrantPermission",
        "RoleRevokePermission",
    ];
    const STREAMING: &'static [&'static str] = &[];
    const READS: &'static [&'static str] = &[
        "AuthStatus",
        "Authenticate",
        "UserGet",
        "UserList",
        "RoleGet",
        "RoleList",
    ];

    fn tunnelled(method: &str) -> Option<KvMethod> {
        Some(match method {
            "AuthEnable" => KvMethod::AuthEnable,
            "AuthDisable" => KvMethod::AuthDisable,
            "AuthStatus" => KvMethod::AuthStatus,
            "Authenticate" => KvMethod::Authenticate,
            "UserAdd" => KvMethod::UserAdd,
            "UserGet" => KvMethod::UserGet,
            "UserList" => KvMethod::UserList,
            "UserDelete" => KvMethod::UserDelete,
            "UserChangePassword" => KvMethod::UserChangePassword,
            "UserGrantRole" => KvMethod::UserGrantRole,
            "UserRevokeRole" => KvMethod::UserRevokeRole,
            "RoleAdd" => KvMethod::RoleAdd,
            "RoleGet" => KvMethod::RoleGet,
            "RoleList" => KvMethod::RoleList,
            "RoleDelete" => KvMethod::RoleDelete,
            "RoleGrantPermission" => KvMethod::RoleGrantPermission,
            "RoleRevokePermission" => KvMethod::RoleRevokePermission,
            _ => return None,
        })
    }
}

/// A tonic service that forwards every call of route `R` to `pool`.
pub(crate) struct Proxy<R> {
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
    pub(crate) fn new(
        pool: Arc<BackendPool>,
        unary_timeout: Duration,
        max_request_bytes: usize,
    ) -> Self {
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
            if !R::METHODS.contains(&method.as_str()) {
                // Not read, not forwarded, and not a metric label of its own.
                return Ok(Status::unimplemented(format!(
                    "unknown method {method} for service {}",
                    R::NAME
                ))
                .into_http());
            }
            let started = Instant::now();
            let read = R::READS.contains(&method.as_str());
            let answer = if R::STREAMING.contains(&method.as_str()) {
                inner.forward_stream(request).await
            } else if let Some(kv) = R::tunnelled(&method) {
                inner.forward_call(request, kv, read).await
            } else {
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

/// The headers to send on: the caller's, with this hop's trace context and
/// the user of its verified client certificate. A certificate user is only
/// ever the edge's to name: one a client sent is replaced.
fn onward_headers(headers: &http::HeaderMap, extensions: &http::Extensions) -> http::HeaderMap {
    let caller = crate::identity::caller(headers, extensions);
    let mut metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
    cairn_kit::telemetry::inject_context(&mut metadata);
    cairn_proto::contract::metadata::set_certificate_user(&mut metadata, &caller.certificate_user);
    metadata.into_headers()
}

/// What sending a unary call to one backend came to.
enum Sent {
    Answered(http::Response<BoxBody>),
    /// It never reached the backend: safe to send elsewhere.
    Unreached(String),
    /// It reached the backend, which may have carried it out.
    Lost(String),
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

    /// Sends one unary call to a backend after another with `send`, until
    /// one answers, the deadline passes, or none is left. A call that never
    /// reached its backend, or a read, moves on to the next; a write that
    /// may have been carried out does not.
    async fn on_backends<F, Fut>(
        &self,
        read: bool,
        mut send: F,
    ) -> Result<http::Response<BoxBody>, Status>
    where
        F: FnMut(Arc<Backend>) -> Fut,
        Fut: std::future::Future<Output = Sent>,
    {
        let deadline = tokio::time::Instant::now() + self.unary_timeout;
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
            let _call = backend.start();
            let sent = tokio::time::timeout_at(deadline, send(backend.clone())).await;
            let (reason, may_have_happened) = match sent {
                Err(_) => return Err(Status::from(EtcdError::Timeout)),
                Ok(Sent::Answered(response)) => return Ok(response),
                Ok(Sent::Unreached(reason)) => (reason, false),
                Ok(Sent::Lost(reason)) => (reason, true),
            };
            self.pool.mark_down(&backend);
            let failure = format!(
                "cairn: the {} backend at {} failed: {reason}",
                self.pool.service(),
                backend.addr
            );
            if may_have_happened && !read {
                return Err(Status::unavailable(format!(
                    "{failure}; the request may or may not have taken effect"
                )));
            }
            last_failure = Some(failure);
        }
        Err(last_failure.map_or_else(|| self.no_backend(), Status::unavailable))
    }

    /// A unary call forwarded whole, as HTTP/2, buffered so it can be sent again.
    async fn forward_unary(
        &self,
        request: http::Request<BoxBody>,
        read: bool,
    ) -> Result<http::Response<BoxBody>, Status> {
        let (parts, body) = request.into_parts();
        let body = self.collect(body).await?;
        let headers = onward_headers(&parts.headers, &parts.extensions);
        self.on_backends(read, |backend| {
            let mut onward = http::Request::new(BoxBody::new(Full::new(body.clone())));
            *onward.method_mut() = parts.method.clone();
            *onward.uri_mut() = parts.uri.clone();
            *onward.version_mut() = parts.version;
            *onward.headers_mut() = headers.clone();
            let channel = backend.channel.clone();
            async move {
                match channel.oneshot(onward).await {
                    Ok(response) => {
                        Sent::Answered(response.map(|body| BoxBody::new(Settled::new(body))))
                    }
                    Err(error) if never_sent(&error) => Sent::Unreached(error.to_string()),
                    Err(error) => Sent::Lost(error.to_string()),
                }
            }
        })
        .await
    }

    /// A unary KV call as a message on one of the backend's shared streams.
    /// A replica that answers it has stopped applying passes it on, like
    /// one that was never reached.
    async fn forward_call(
        &self,
        request: http::Request<BoxBody>,
        method: KvMethod,
        read: bool,
    ) -> Result<http::Response<BoxBody>, Status> {
        let (parts, body) = request.into_parts();
        let body = self.collect(body).await?;
        let Some(message) = grpc_message(&body) else {
            // Compressed or several frames: let the backend read it as sent.
            let request = http::Request::from_parts(parts, BoxBody::new(Full::new(body)));
            return self.forward_unary(request, read).await;
        };
        let mut trace_context = std::collections::HashMap::new();
        cairn_kit::telemetry::inject_into(&mut trace_context);
        let caller = Some(crate::identity::caller(&parts.headers, &parts.extensions))
            .filter(|caller| *caller != Caller::default());
        let call = KvCall {
            id: 0,
            method: method as i32,
            body: message,
            trace_context,
            caller,
        };
        self.on_backends(read, |backend| {
            let call = call.clone();
            async move {
                match backend.tunnel.call(call).await {
                    Ok(answer) if failure_kind_of(&answer) == FailureKind::ReplicaFailed => {
                        Sent::Unreached(answer.message)
                    }
                    Ok(answer) => Sent::Answered(grpc_response(answer)),
                    Err(MultiplexError::Unreached(reason)) => Sent::Unreached(reason),
                    Err(MultiplexError::Lost(reason)) => Sent::Lost(reason),
                }
            }
        })
        .await
    }

    /// A unary call's body, whole; larger than the request limit is etcd's
    /// "request is too large".
    async fn collect(&self, body: BoxBody) -> Result<Bytes, Status> {
        Ok(Limited::new(body, self.max_request_bytes)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    Status::from(EtcdError::RequestTooLarge)
                } else {
                    Status::cancelled(format!("the request body did not arrive: {error}"))
                }
            })?
            .to_bytes())
    }

    async fn forward_stream(
        &self,
        request: http::Request<BoxBody>,
    ) -> Result<http::Response<BoxBody>, Status> {
        let backend = self.pool.pick(&[]).ok_or_else(|| self.no_backend())?;
        let (mut parts, body) = request.into_parts();
        parts.headers = onward_headers(&parts.headers, &parts.extensions);
        let call = backend.start();
        let channel = backend.channel.clone();
        let cut = CutShort::default();
        let body = BoxBody::new(Watched::new(body, cut.clone()));
        match channel
            .oneshot(http::Request::from_parts(parts, body))
            .await
        {
            Ok(response) => Ok(response.map(|body| {
                let answer = Settled::new(Counted {
                    inner: body,
                    _call: call,
                });
                BoxBody::new(Answered::new(answer, cut))
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

/// The one message of a unary gRPC request body: a single uncompressed
/// length-prefixed frame, or `None` for anything else.
fn grpc_message(body: &Bytes) -> Option<Bytes> {
    let (&compressed, rest) = body.split_first()?;
    let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (compressed == 0 && rest.len() == 4 + length).then(|| body.slice(5..))
}

/// The kind of cairn failure an answer carries, if any.
fn failure_kind_of(answer: &KvAnswer) -> FailureKind {
    Failure::from_details(&answer.details)
        .map_or(FailureKind::Unspecified, |failure| failure.kind())
}

/// The HTTP response a unary call with this answer gets: the encoded
/// message and an OK status in the trailers, or a trailers-only error with
/// the replica's code, message and details.
fn grpc_response(answer: KvAnswer) -> http::Response<BoxBody> {
    if answer.code != 0 {
        return Status::with_details(
            tonic::Code::from(answer.code),
            answer.message,
            answer.details.into(),
        )
        .into_http();
    }
    let mut framed = BytesMut::with_capacity(5 + answer.body.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(answer.body.len()).unwrap_or(u32::MAX));
    framed.extend_from_slice(&answer.body);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames: [Result<Frame<Bytes>, Status>; 2] = [
        Ok(Frame::data(framed.freeze())),
        Ok(Frame::trailers(trailers)),
    ];
    let mut response =
        http::Response::new(BoxBody::new(StreamBody::new(futures::stream::iter(frames))));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A backend's response body as the client reads it: when it breaks off
/// (the backend's connection broke) it ends with trailers carrying a status,
/// UNAVAILABLE for a broken connection, instead of a reset stream, which a
/// client hears as UNKNOWN "transport error" or INTERNAL and cannot act on.
struct Settled<B> {
    inner: B,
    ended: bool,
}

impl<B> Settled<B> {
    fn new(inner: B) -> Self {
        Self {
            inner,
            ended: false,
        }
    }
}

impl<B> Body for Settled<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(status))) => {
                self.ended = true;
                let status = cairn_kit::grpc::unavailable_if_broken(
                    status,
                    "cairn: the backend's answer broke off",
                );
                Poll::Ready(Some(closing_frame(status)))
            }
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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

    #[tokio::test]
    async fn an_unknown_method_is_unimplemented_before_its_body_is_read() {
        let pool = BackendPool::new(
            "mvcc",
            &["127.0.0.1:1".to_owned()],
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let mut proxy = Proxy::<Kv>::new(pool, Duration::from_secs(1), 16);
        let mut request = http::Request::new(BoxBody::new(Full::new(Bytes::from(vec![0; 64]))));
        *request.uri_mut() = http::Uri::from_static("/etcdserverpb.KV/RangeStream");
        let Ok(answer) = proxy.call(request).await;
        let status = Status::from_header_map(answer.headers()).expect("a grpc status");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }

    #[test]
    fn a_refused_connection_counts_as_never_sent_and_a_reset_does_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(never_sent(&refused));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!never_sent(&reset));
    }

    #[tokio::test]
    async fn an_answer_that_breaks_off_ends_with_unavailable_trailers() {
        let mut torn = Status::unknown("transport error");
        torn.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        let frames: Vec<Result<Frame<Bytes>, Status>> = vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Err(torn),
        ];
        let body = Settled::new(BoxBody::new(StreamBody::new(futures::stream::iter(frames))));
        let collected = body.collect().await.expect("trailers, not an error");
        let trailers = collected.trailers().cloned().expect("trailers");
        let status = Status::from_header_map(&trailers).expect("a grpc-status");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("transport error"), "{status:?}");

        let said: Vec<Result<Frame<Bytes>, Status>> =
            vec![Err(Status::unknown("election: not leader"))];
        let body = Settled::new(BoxBody::new(StreamBody::new(futures::stream::iter(said))));
        let collected = body.collect().await.expect("trailers, not an error");
        let trailers = collected.trailers().cloned().expect("trailers");
        let status = Status::from_header_map(&trailers).expect("a grpc-status");
        assert_eq!(status.code(), tonic::Code::Unknown);
        assert_eq!(status.message(), "election: not leader");
    }
}
