//! cairn-mvcc: etcd's KV semantics, materialised from the log.
//!
//! A replica tails cairn-log from its applied index, applies each committed
//! command deterministically into RocksDB, answers etcd's KV API (writes by
//! proposing and waiting for its own apply; linearizable reads through the
//! log's read index), serves history to the watch gateways, and publishes
//! every revision's events to NATS JetStream.
//!
//! # Layout
//! - `revision`, `key_index`, `tree_index`: etcd's revisions and key history.
//! - `store`: RocksDB and the deterministic apply; `range`: etcd's Range.
//! - `validate`: etcd's checks before a request is proposed.
//! - `replica`: tailing the log and routing results; `api`: the gRPC services.
//! - `proposals`, `read_point`: calls to the log shared by concurrent requests.
//! - `publish`: the JetStream revision stream.

pub mod api;
pub mod error;
pub mod key_index;
pub mod log_client;
pub mod metrics;
pub mod proposals;
pub mod publish;
pub mod range;
pub mod read_point;
pub mod replica;
pub mod revision;
pub mod settings;
pub mod snapshot;
pub mod store;
pub mod tree_index;
pub mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_kit::telemetry::GrpcServerTraceLayer;
use cairn_proto::cairn::mvcc::v1::mvcc_server::MvccServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use tokio::net::TcpListener;

pub use error::MvccError;
pub use settings::MvccSettings;

use crate::api::MvccApi;
use crate::log_client::LogClient;
use crate::replica::Replica;
use crate::store::Store;

/// Room etcd leaves above --max-request-bytes for gRPC's own framing.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Binds `node.listen` and runs the replica until `shutdown` resolves.
pub async fn serve(
    settings: MvccSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MvccError> {
    let listener = TcpListener::bind(&settings.node.listen)
        .await
        .map_err(|source| MvccError::Bind {
            addr: settings.node.listen.clone(),
            source,
        })?;
    serve_on(listener, settings, shutdown).await
}

/// Runs the replica on an already bound listener (tests bind port 0 first).
pub async fn serve_on(
    listener: TcpListener,
    settings: MvccSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MvccError> {
    settings.validate()?;
    let shutdown = cairn_kit::shutdown::from_future(shutdown);
    std::fs::create_dir_all(&settings.node.data_dir).map_err(|error| {
        MvccError::Settings(format!(
            "setting `node.data_dir`: cannot create {}: {error}",
            settings.node.data_dir.display()
        ))
    })?;
    let store = Arc::new(Store::open(&settings.node.data_dir)?);
    let log = LogClient::new(
        &settings.log.endpoints,
        Duration::from_millis(settings.log.request_timeout_ms),
    )?;
    let replica = Replica::new(store, log, settings.node.name.clone());

    let metrics_addr = cairn_kit::metrics::spawn(&settings.metrics, shutdown.clone())
        .await
        .map_err(|error| MvccError::Settings(format!("setting `metrics.listen`: {error}")))?;
    let tail = tokio::spawn(replica::tail(replica.clone(), shutdown.clone()));
    tokio::spawn(replica::acknowledge(
        replica.clone(),
        Duration::from_millis(settings.node.ack_interval_ms),
        shutdown.clone(),
    ));
    if !settings.nats.url.is_empty() {
        tokio::spawn(publish::run(
            replica.clone(),
            settings.nats.clone(),
            shutdown.clone(),
        ));
    }

    let api = MvccApi::new(
        replica.clone(),
        settings.limits.limits(),
        settings.node.cluster_id,
    );
    // Housekeeping every ack interval: the size and publish-lag gauges, and
    // the NOSPACE quota.
    let quota = settings.limits.quota_backend_bytes;
    {
        let api = api.clone();
        let interval = Duration::from_millis(settings.node.ack_interval_ms);
        let mut stop = shutdown.clone();
        let published = !settings.nats.url.is_empty();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = stop.cancelled() => return,
                }
                let size = api.observe(published);
                if let Err(error) = api.enforce_quota(quota, size).await {
                    tracing::warn!(%error, "cannot raise NOSPACE; trying again");
                }
            }
        });
    }
    let (mut health_reporter, health_service) = cairn_kit::health::grpc_health();
    health_reporter.set_serving::<KvServer<MvccApi>>().await;
    let local = listener.local_addr().map_err(|source| MvccError::Bind {
        addr: settings.node.listen.clone(),
        source,
    })?;
    tracing::info!(
        name = settings.node.name,
        listen = %local,
        metrics = ?metrics_addr,
        applied = replica.applied().index,
        "cairn-mvcc ready"
    );

    let incoming = cairn_kit::grpc::incoming(listener).map_err(|error| MvccError::Bind {
        addr: local.to_string(),
        source: std::io::Error::other(error.to_string()),
    })?;
    let max_request = settings
        .limits
        .max_request_bytes
        .saturating_add(GRPC_OVERHEAD_BYTES);
    let mut stop = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(GrpcServerTraceLayer)
        .add_service(health_service)
        .add_service(
            KvServer::new(api.clone())
                .max_decoding_message_size(max_request)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(MvccServer::new(api).max_encoding_message_size(usize::MAX))
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
    tokio::pin!(server);
    let mut tail = tail;
    let outcome = tokio::select! {
        served = &mut server => served.map_err(MvccError::from),
        tailed = &mut tail => match tailed {
            Ok(Ok(())) => server.await.map_err(MvccError::from),
            Ok(Err(fatal)) => Err(fatal),
            Err(_) => Err(MvccError::Stopped),
        },
    };
    tracing::info!(name = settings.node.name, "cairn-mvcc stopping");
    if let Err(error) = replica.store.sync() {
        tracing::warn!(%error, "cannot sync the store on the way out");
    }
    outcome
}
