//! Prometheus metrics over HTTP: `GET /metrics` (the process's default registry,
//! including process RSS and CPU) and `GET /healthz`.

use std::future::Future;
use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::shutdown::ShutdownWatch;
use crate::KitError;

/// The `[metrics]` section every service has.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Address of the HTTP listener, e.g. `0.0.0.0:9100`; empty serves none.
    pub listen: String,
}

async fn render() -> Response {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&prometheus::gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), KitError> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(KitError::Io)
}

/// Binds `settings.listen` (if set) and serves in the background until shutdown.
pub async fn spawn(
    settings: &MetricsSettings,
    shutdown: ShutdownWatch,
) -> Result<Option<SocketAddr>, KitError> {
    if settings.listen.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| KitError::Bind {
            addr: settings.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut shutdown = shutdown;
        let stop = async move { shutdown.cancelled().await };
        if let Err(error) = serve(listener, stop).await {
            tracing::warn!(%error, "metrics endpoint stopped");
        }
    });
    Ok(Some(addr))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn metrics_and_health_are_served() {
        let counter =
            prometheus::IntCounter::new("cairn_kit_test_total", "a test counter").expect("counter");
        prometheus::register(Box::new(counter.clone())).expect("register");
        counter.inc_by(3);

        let (trigger, watch) = crate::shutdown::channel();
        let addr = spawn(
            &MetricsSettings {
                listen: "127.0.0.1:0".into(),
            },
            watch,
        )
        .await
        .expect("spawn")
        .expect("an address");
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("cairn_kit_test_total 3"), "{metrics}");
        assert!(
            metrics.contains("process_resident_memory_bytes"),
            "{metrics}"
        );
        let health = get(addr, "/healthz").await;
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
            "{health}"
        );
        trigger.trigger();
    }

    #[tokio::test]
    async fn no_listener_when_off() {
        let (_trigger, watch) = crate::shutdown::channel();
        let addr = spawn(&MetricsSettings::default(), watch)
            .await
            .expect("spawn");
        assert!(addr.is_none());
    }
}
