//! Serving gRPC the way every cairn service does: on a listener bound
//! beforehand (tests bind port 0 first), with TCP_NODELAY, one trace span per
//! call, and a clean stop on shutdown; and telling, from a failed call,
//! whether the request ever left.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::Status;

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
/// trace, until `shutdown` fires; then waits for the calls in progress.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: ShutdownWatch,
) -> Result<(), KitError> {
    serve_routes(listener, routes, shutdown, false).await
}

/// [`serve`], also taking HTTP/1.1 requests: for routes that include plain
/// HTTP endpoints (the edge's JSON gateway) beside gRPC on one port.
pub async fn serve_with_http1(
    listener: TcpListener,
    routes: Routes,
    shutdown: ShutdownWatch,
) -> Result<(), KitError> {
    serve_routes(listener, routes, shutdown, true).await
}

/// How long calls in progress may go on after shutdown before the server
/// stops without them. Long-lived streams between services never end by
/// themselves: two log nodes each waiting for the other's replication stream
/// to close would otherwise wait forever.
pub const DRAIN_GRACE: Duration = Duration::from_secs(3);

async fn serve_routes(
    listener: TcpListener,
    routes: Routes,
    shutdown: ShutdownWatch,
    http1: bool,
) -> Result<(), KitError> {
    let mut stop = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .accept_http1(http1)
        .layer(GrpcServerTraceLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), async move { stop.cancelled().await });
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
