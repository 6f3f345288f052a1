//! Serving gRPC the way every cairn service does: on a listener bound
//! beforehand (tests bind port 0 first), with TCP_NODELAY, one trace span per
//! call, and a clean stop on shutdown; and telling, from a failed call,
//! whether the request ever left.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_stream::Stream;
use tonic::service::Routes;
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::{Code, Status};

use crate::shutdown::ShutdownWatch;
use crate::telemetry::GrpcServerTraceLayer;
use crate::KitError;

/// Binds `address` (`host:port`); the error names it.
pub async fn bind(address: &str) -> Result<TcpListener, KitError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| KitError::Bind {
            addr: address.to_owned(),
            source,
        })
}

/// The address `listener` is bound to.
pub fn local_addr(listener: &TcpListener) -> Result<SocketAddr, KitError> {
    listener.local_addr().map_err(KitError::Io)
}

/// The connections `listener` accepts, with TCP_NODELAY and keep-alive set.
///
/// tonic sets TCP_NODELAY only on listeners it binds itself. Without it a
/// small response can wait for the peer's delayed ACK: tens of milliseconds
/// added to a sub-millisecond call.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

/// Serves `routes` on `listener`, each call in a span continuing the caller's
/// trace, until `shutdown` fires; then waits for the calls in progress. With
/// internal TLS on (`tls::init_internal`), only peers holding a certificate
/// from the internal CA get in.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: ShutdownWatch,
) -> Result<(), KitError> {
    match crate::tls::internal_server() {
        None => serve_routes(incoming(listener), routes, shutdown, false).await,
        Some(config) => {
            let accepted = crate::tls::accept(listener, config, shutdown.clone());
            serve_routes(accepted, routes, shutdown, false).await
        }
    }
}

/// [`serve`], also taking HTTP/1.1 requests: for routes that include plain
/// HTTP endpoints (the edge's JSON gateway) beside gRPC on one port. With
/// `tls` every connection is TLS (offer both `h2` and `http/1.1` by ALPN).
pub async fn serve_with_http1(
    listener: TcpListener,
    routes: Routes,
    shutdown: ShutdownWatch,
    tls: Option<Arc<ServerConfig>>,
) -> Result<(), KitError> {
    match tls {
        None => serve_routes(incoming(listener), routes, shutdown, true).await,
        Some(config) => {
            let accepted = crate::tls::accept(listener, config, shutdown.clone());
            serve_routes(accepted, routes, shutdown, true).await
        }
    }
}

/// How long calls in progress may go on after shutdown before the server
/// stops without them. Long-lived streams between services never end by
/// themselves: two log nodes each waiting for the other's replication stream
/// to close would otherwise wait forever.
pub const DRAIN_GRACE: Duration = Duration::from_secs(3);

async fn serve_routes<Io, Incoming>(
    incoming: Incoming,
    routes: Routes,
    shutdown: ShutdownWatch,
    http1: bool,
) -> Result<(), KitError>
where
    Incoming: Stream<Item = Result<Io, std::io::Error>>,
    Io: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    let mut stop = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .accept_http1(http1)
        .layer(GrpcServerTraceLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
    let mut drained = shutdown;
    tokio::select! {
        served = server => served.map_err(|error| KitError::Grpc(error.to_string())),
        () = async move {
            drained.cancelled().await;
            tokio::time::sleep(DRAIN_GRACE).await;
        } => {
            tracing::warn!(grace = ?DRAIN_GRACE, "calls still open after shutdown; stopping without them");
            Ok(())
        }
    }
}

/// Whether a failed call never reached the callee: the connection was
/// refused, could not be made in time, or the address was unusable. Such a
/// call is safe to send elsewhere even when it is not idempotent. Decided on
/// the error's types along its source chain, never on its text.
pub fn never_sent(error: &(dyn Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        // tonic wraps every failure to open a connection in ConnectError.
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            );
        }
        source = error.source();
    }
    false
}

/// [`never_sent`] for a failed call's status.
pub fn status_never_sent(status: &Status) -> bool {
    status.source().is_some_and(never_sent)
}

/// The opening words of the messages tonic and hyper give a call whose
/// connection broke, kept by a status that crossed a process since (which
/// loses its source): a backend's own UNKNOWN never reads like these.
const TRANSPORT_MESSAGES: [&str; 8] = [
    "transport error",
    "h2 protocol error",
    "error reading a body from connection",
    "connection closed before message completed",
    "connection error",
    "operation was canceled",
    "protocol error: missing grpc-status trailer",
    "grpc-status header missing",
];

/// Whether a failed call's status tells of its connection rather than of
/// the callee: the connection broke or was torn down under the call, or the
/// answer ended without a gRPC status. tonic reports these as UNKNOWN
/// ("transport error"), CANCELLED or INTERNAL, which a client cannot act on.
///
/// tonic gives a status a source only when it made the status from an error
/// of the call itself; one the callee sent is decoded from its trailers and
/// has none. So a status with a source is the transport's, unless it is the
/// caller's own deadline; one without is the callee's, unless it repeats
/// the transport's words after crossing a process. A backend's genuine
/// UNKNOWN (etcd's "election: not leader") stays what it is.
pub fn transport_failed(status: &Status) -> bool {
    if !matches!(
        status.code(),
        Code::Unknown | Code::Cancelled | Code::Internal
    ) {
        return false;
    }
    match status.source() {
        Some(source) => !deadline_passed(source),
        None => TRANSPORT_MESSAGES
            .iter()
            .any(|words| status.message().starts_with(words)),
    }
}

/// Whether the caller's own deadline ended the call (tonic's timeout).
fn deadline_passed(error: &(dyn Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A failed backend call's status as its caller should hear it: a transport
/// failure ([`transport_failed`]) as UNAVAILABLE, which every gRPC client
/// retries, with `message` in front of what broke; anything the backend
/// said, exactly as it said it. The original stays the source, so
/// [`status_never_sent`] still answers for the mapped status.
pub fn unavailable_if_broken(status: Status, message: &str) -> Status {
    if !transport_failed(&status) {
        return status;
    }
    let text = if message.is_empty() {
        format!("the connection broke: {}", status.message())
    } else {
        format!("{message}: the connection broke: {}", status.message())
    };
    let mut unavailable = Status::unavailable(text);
    unavailable.set_source(Arc::new(status));
    unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_was_never_sent_and_a_reset_one_may_have_been() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(never_sent(&refused));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!never_sent(&reset));
        let text_only = Status::unavailable("error trying to connect: Connection refused");
        assert!(!status_never_sent(&text_only));
    }

    /// A status as tonic makes it from an error of the call's own transport.
    fn from_transport(error: impl Error + Send + Sync + 'static) -> Status {
        Status::from_error(Box::new(error))
    }

    #[test]
    fn a_broken_connection_becomes_unavailable_and_a_backends_unknown_stays_unknown() {
        let reset = from_transport(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let mut torn = Status::unknown("transport error");
        torn.set_source(Arc::new(reset));
        let mut cancelled = Status::cancelled("operation was canceled: connection closed");
        cancelled.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        let relayed = Status::unknown("transport error");
        let no_trailer = Status::unknown(
            "protocol error: missing grpc-status trailer, stream was terminated without a final status",
        );
        for broken in [torn, cancelled, relayed, no_trailer] {
            let before = broken.message().to_owned();
            assert!(transport_failed(&broken), "{broken:?}");
            let mapped = unavailable_if_broken(broken, "put via a:1");
            assert_eq!(mapped.code(), Code::Unavailable);
            assert_eq!(
                mapped.message(),
                format!("put via a:1: the connection broke: {before}")
            );
        }

        for backend_said in [
            Status::unknown("election: not leader"),
            Status::unknown("mutex: session is expired"),
            Status::cancelled("etcdserver: request canceled"),
            Status::internal("a replica's own failure"),
            Status::unavailable("etcdserver: no leader"),
            Status::failed_precondition("another cluster"),
        ] {
            assert!(!transport_failed(&backend_said), "{backend_said:?}");
            let kept = unavailable_if_broken(backend_said.clone(), "call");
            assert_eq!(kept.code(), backend_said.code());
            assert_eq!(kept.message(), backend_said.message());
        }
    }

    #[test]
    fn the_callers_own_deadline_is_not_a_broken_connection() {
        let late = from_transport(tonic::TimeoutExpired(()));
        assert_eq!(late.code(), Code::Cancelled);
        assert!(!transport_failed(&late), "{late:?}");
    }

    #[tokio::test]
    async fn a_mapped_refusal_is_still_known_as_never_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let refused = client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect_err("nothing listens there");
        let mut wrapped = Status::unknown("transport error");
        wrapped.set_source(Arc::new(refused));
        let mapped = unavailable_if_broken(wrapped, "");
        assert_eq!(mapped.code(), Code::Unavailable);
        assert!(status_never_sent(&mapped), "{mapped:?}");
    }

    #[tokio::test]
    async fn a_connection_torn_down_under_a_call_is_unavailable() {
        use tokio::io::AsyncReadExt;
        // A server that reads the request and then drops the connection
        // without answering, as a killed process does.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0_u8; 1024];
                let _ = socket.read(&mut buffer).await;
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let broken = client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect_err("the connection was dropped");
        // tonic 0.14 says UNKNOWN "transport error" (a broken pipe under it).
        assert!(!status_never_sent(&broken), "{broken:?}");
        let mapped = unavailable_if_broken(broken, "health");
        assert_eq!(mapped.code(), Code::Unavailable, "{mapped:?}");
    }

    #[tokio::test]
    async fn a_call_to_a_closed_port_was_never_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect_err("nothing listens there");
        assert!(status_never_sent(&status), "{status:?}");
    }
}
