//! cairn-watch: etcd's Watch API, fanned out from the revision stream.
//!
//! A gateway keeps one live subscription to the JetStream stream the mvcc
//! replicas publish (one message per revision, sequence = revision) and a
//! window of recent revisions; any number of client streams read it. A
//! watcher that starts behind the window, or falls behind it, is caught up
//! from a replica's history. Gateways hold no durable state: add more to
//! carry more watchers.
//!
//! # Layout
//! - `feed`: the live subscription; `hub`: the window.
//! - `stream`: one client stream; `watchers`: its watchers; `batch`: their
//!   responses; `history`: the replicas.
//! - `encoded`: events encoded once for every watcher; `api`: etcd's Watch
//!   service, which sends them as they are.

mod api;
mod batch;
mod encoded;
mod error;
mod feed;
mod history;
mod hub;
mod metrics;
mod outbox;
mod settings;
mod stream;
mod watchers;

use std::sync::Arc;
use std::time::Duration;

use cairn_kit::shutdown::Signal;
use cairn_proto::etcdserverpb::watch_server::SERVICE_NAME;
use tonic::service::Routes;
use tonic_health::ServingStatus;

/// What starting or serving a watch gateway can fail with.
pub use error::WatchError;
/// A watch gateway's settings, which the `cairn-watch` binary loads and hands to `serve`.
pub use settings::WatchSettings;

use crate::api::WatchApi;
use crate::history::History;
use crate::hub::Hub;
use crate::stream::Shared;

/// Binds `node.listen` and serves until `shutdown` resolves.
pub async fn serve(settings: WatchSettings, shutdown: impl Signal) -> Result<(), WatchError> {
    settings.validate()?;
    cairn_kit::tls::init_internal(&settings.internal_tls)?;
    let listener = cairn_kit::grpc::bind(&settings.node.listen).await?;
    let shutdown = cairn_kit::shutdown::from_future(shutdown);
    let history = Arc::new(History::new(&settings.mvcc)?);
    let hub = Hub::new(settings.window.revisions);
    tokio::spawn(feed::run(
        hub.clone(),
        history.clone(),
        settings.nats.clone(),
        shutdown.clone(),
    ));

    let metrics_addr = cairn_kit::metrics::spawn(&settings.metrics, shutdown.clone()).await?;
    let local = cairn_kit::grpc::local_addr(&listener)?;
    let shared = Arc::new(Shared {
        hub,
        history,
        cluster_id: settings.node.cluster_id,
        member_id: cairn_proto::contract::member_id(&local.to_string()),
        progress_interval: Duration::from_millis(settings.node.progress_interval_ms),
    });
    let (health_reporter, health_service) = cairn_kit::health::grpc_health();
    health_reporter
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    tracing::info!(listen = %local, metrics = ?metrics_addr, "cairn-watch ready");
    let routes = Routes::new(health_service)
        .add_service(WatchApi::new(shared, settings.window.stream_queue));
    cairn_kit::grpc::serve(listener, routes, shutdown).await?;
    tracing::info!("cairn-watch stopping");
    Ok(())
}
