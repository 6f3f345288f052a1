//! Serving gRPC on a listener bound beforehand (tests bind port 0 first).

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::KitError;

/// The connections `listener` accepts, with TCP_NODELAY and keep-alive set.
///
/// tonic sets TCP_NODELAY only on listeners it binds itself. Without it a
/// small response can wait for the peer's delayed ACK: tens of milliseconds
/// added to a sub-millisecond call.
pub fn incoming(listener: TcpListener) -> Result<TcpIncoming, KitError> {
    TcpIncoming::from_listener(listener, true, Some(Duration::from_secs(60)))
        .map_err(|error| KitError::Grpc(format!("cannot serve the listener: {error}")))
}
