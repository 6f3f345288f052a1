//! cairn-edge: the one etcd v3 address clients use.
//!
//! KV, Watch and Lease calls are forwarded whole to the service that owns them
//! (cairn-mvcc, cairn-watch, cairn-lease), balanced across the addresses the
//! configured names resolve to. Cluster and Maintenance are answered here from
//! the log and an mvcc replica. Every call gets a span continuing the caller's
//! trace and counts against one limit of calls in progress.
//!
//! # Layout
//! - `pool`: discovery and balancing; `proxy`: forwarding whole services.
//! - `shed`: load shedding; `backends`: typed clients of the log and replicas.
//! - `tunnel`: unary KV calls as messages on a few streams per replica.
//! - `cluster`, `maintenance`: the etcd services answered here.
//! - `local`: the edge's services called in process, by `lock`, `election`
//!   (etcd's Lock and Election, over KV, Lease and Watch via `candidacy`) and
//!   `gateway` (etcd's HTTP/JSON API, on the same port as gRPC).

mod backends;
mod candidacy;
mod cluster;
mod election;
mod error;
mod framing;
mod gateway;
mod identity;
mod local;
mod lock;
mod maintenance;
mod metrics;
mod pool;
mod proxy;
mod settings;
mod shed;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use cairn_kit::shutdown::Signal;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use tonic::service::Routes;
use tower::Layer;

/// What starting or serving the edge can fail with.
pub use error::EdgeError;
/// The edge's settings, which the `cairn-edge` binary loads and hands to `serve`.
pub use settings::EdgeSettings;

use crate::backends::Log;
use crate::cluster::ClusterApi;
use crate::election::ElectionApi;
use crate::local::Local;
use crate::lock::LockApi;
use crate::maintenance::MaintenanceApi;
use crate::pool::BackendPool;
use crate::proxy::Proxy;
use crate::shed::ShedLayer;

/// Binds `edge.listen` and serves until `shutdown` resolves.
pub async fn serve(settings: EdgeSettings, shutdown: impl Signal) -> Result<(), EdgeError> {
    settings.validate()?;
    cairn_kit::tls::init_internal(&settings.internal_tls)?;
    // Read every TLS file before binding, so a bad one stops the start.
    let tls = settings.tls.server_config(&[b"h2", b"http/1.1"])?;
    let listener = cairn_kit::grpc::bind(&settings.edge.listen).await?;
    let shutdown = cairn_kit::shutdown::from_future(shutdown);
    let backends = &settings.backends;
    let pool = |service: &'static str, names: &[String]| {
        let pool = BackendPool::new(
            service,
            names,
            Duration::from_millis(backends.down_backoff_ms),
            Duration::from_millis(backends.connect_timeout_ms),
        );
        pool.spawn_discovery(
            Duration::from_millis(backends.discovery_interval_ms),
            shutdown.clone(),
        );
        pool
    };
    let mvcc = pool("mvcc", &backends.mvcc);
    let watch = pool("watch", &backends.watch);
    let lease = pool("lease", &backends.lease);
    for first in [&mvcc, &watch, &lease] {
        first.refresh().await;
    }
    let unary_timeout = Duration::from_millis(settings.limits.unary_timeout_ms);
    let log = Arc::new(Log::new(&backends.log, unary_timeout)?);
    let max_request = settings.limits.max_request_bytes;

    let metrics_addr = cairn_kit::metrics::spawn(&settings.metrics, shutdown.clone()).await?;
    let (health_reporter, health_service) = cairn_kit::health::grpc_health();
    health_reporter.set_serving::<Proxy<proxy::Kv>>().await;
    tracing::info!(
        listen = %cairn_kit::grpc::local_addr(&listener)?,
        tls = tls.is_some(),
        client_cert_auth = settings.tls.client_cert_auth,
        metrics = ?metrics_addr,
        mvcc = mvcc.backends().len(),
        watch = watch.backends().len(),
        lease = lease.backends().len(),
        "cairn-edge ready"
    );

    let cluster_id = settings.edge.cluster_id;
    // One limit of calls in progress shared by every service.
    let shed = ShedLayer::new(settings.limits.max_concurrent_requests);
    let routes = Routes::new(shed.layer(health_service))
        .add_service(shed.layer(Proxy::<proxy::Kv>::new(
            mvcc.clone(),
            unary_timeout,
            max_request,
        )))
        .add_service(shed.layer(Proxy::<proxy::Watch>::new(
            watch,
            unary_timeout,
            max_request,
        )))
        .add_service(shed.layer(Proxy::<proxy::Auth>::new(
            mvcc.clone(),
            unary_timeout,
            max_request,
        )))
        .add_service(shed.layer(Proxy::<proxy::Lease>::new(
            lease,
            unary_timeout,
            max_request,
        )))
        .add_service(shed.layer(ClusterServer::new(ClusterApi::new(
            log.clone(),
            mvcc.clone(),
            settings.edge.advertise_client_urls.clone(),
            cluster_id,
        ))))
        .add_service(
            shed.layer(
                MaintenanceServer::new(MaintenanceApi::new(log, mvcc, cluster_id))
                    .max_encoding_message_size(usize::MAX),
            ),
        );
    // Lock and Election are clients of the services above; the gateway of
    // all of them.
    let kv_lease_watch = Local::new(routes.clone());
    let routes = routes
        .add_service(shed.layer(LockServer::new(LockApi::new(kv_lease_watch.clone()))))
        .add_service(shed.layer(ElectionServer::new(ElectionApi::new(kv_lease_watch))));
    // A JSON body carries bytes as base64, a third longer than the message.
    let gateway = gateway::router(Local::new(routes.clone()), 2 * max_request + 64 * 1024);
    if !settings.edge.http_listen.is_empty() {
        let address = &settings.edge.http_listen;
        // The JSON-only listener speaks HTTP/1.1 alone.
        let http_tls = tls.as_deref().map(|config| {
            let mut config = config.clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        });
        spawn_http_listener(address, gateway.clone(), shutdown.clone(), http_tls).await?;
    }
    let routes = tonic::service::Routes::from(routes.into_axum_router().merge(gateway));
    cairn_kit::grpc::serve_with_http1(listener, routes, shutdown, tls).await?;
    tracing::info!("cairn-edge stopping");
    Ok(())
}

/// Serves the HTTP/JSON gateway alone on a listener of its own, for setups
/// that keep HTTP and gRPC apart.
async fn spawn_http_listener(
    address: &str,
    gateway: axum::Router,
    shutdown: cairn_kit::shutdown::ShutdownWatch,
    tls: Option<Arc<cairn_kit::tls::ServerConfig>>,
) -> Result<(), EdgeError> {
    let listener = cairn_kit::grpc::bind(address).await?;
    tracing::info!(listen = %cairn_kit::grpc::local_addr(&listener)?, "HTTP/JSON gateway ready");
    let routes = tonic::service::Routes::from(gateway);
    tokio::spawn(async move {
        let served = cairn_kit::grpc::serve_with_http1(listener, routes, shutdown, tls).await;
        if let Err(error) = served {
            tracing::error!(%error, "the HTTP/JSON listener failed");
        }
    });
    Ok(())
}
