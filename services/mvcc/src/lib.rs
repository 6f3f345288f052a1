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
//! - `replica`: tailing the log and routing results; `api`: the gRPC services;
//!   `housekeeping`: gauges and the NOSPACE quota on a timer.
//! - `proposals`, `read_point`: calls to the log shared by concurrent requests.
//! - `publish`: the JetStream revision stream.

mod api;
mod error;
mod housekeeping;
mod key_index;
mod log_client;
mod metrics;
mod proposals;
mod publish;
mod range;
mod read_point;
mod replica;
mod revision;
mod settings;
mod snapshot;
pub mod store;
pub mod tree_index;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use cairn_kit::shutdown::Signal;
use cairn_proto::cairn::mvcc::v1::mvcc_server::MvccServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use tonic::service::Routes;

/// What the replica, its store and its requests can fail with.
pub use error::MvccError;
/// A replica's settings, which the `cairn-mvcc` binary loads and hands to `serve`.
pub use settings::MvccSettings;

use crate::api::MvccApi;
use crate::log_client::LogClient;
use crate::replica::Replica;
use crate::store::Store;

/// Room etcd leaves above --max-request-bytes for gRPC's own framing.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Binds `node.listen` and runs the replica until `shutdown` resolves.
pub async fn serve(settings: MvccSettings, shutdown: impl Signal) -> Result<(), MvccError> {
    settings.validate()?;
    let listener = cairn_kit::grpc::bind(&settings.node.listen).await?;
    let shutdown = cairn_kit::shutdown::from_future(shutdown);
    std::fs::create_dir_all(&settings.node.data_dir).map_err(|error| {
        MvccError::Settings(format!(
            "setting `node.data_dir`: cannot create {}: {error}",
            settings.node.data_dir.display()
        ))
    })?;
    let store = Arc::new(Store::open(&settings.node.data_dir)?);
    let log = LogClient::new(&settings.log)?;
    let replica = Replica::new(store, log, settings.node.name.clone());

    let metrics_addr = cairn_kit::metrics::spawn(&settings.metrics, shutdown.clone()).await?;
    let ack_interval = Duration::from_millis(settings.node.ack_interval_ms);
    tokio::spawn(replica::tail(replica.clone(), shutdown.clone()));
    tokio::spawn(replica::acknowledge(
        replica.clone(),
        ack_interval,
        shutdown.clone(),
    ));
    let api = MvccApi::new(
        replica.clone(),
        settings.limits.limits(),
        settings.node.cluster_id,
    )
    .skipping_read_index(settings.testing.skip_read_index);
    if settings.testing.skip_read_index {
        tracing::warn!("testing.skip_read_index is set: linearizable reads may be stale");
    }
    let published = !settings.nats.url.is_empty();
    if published {
        tokio::spawn(publish::run(
            api.clone(),
            settings.nats.clone(),
            Duration::from_millis(settings.node.publisher_takeover_ms),
            shutdown.clone(),
        ));
    }
    tokio::spawn(housekeeping::run(
        api.clone(),
        ack_interval,
        settings.limits.quota_backend_bytes,
        published,
        shutdown.clone(),
    ));
    let (health_reporter, health_service) = cairn_kit::health::grpc_health();
    health_reporter.set_serving::<KvServer<MvccApi>>().await;
    {
        // A replica whose apply failed answers nothing; health says so too.
        let replica = replica.clone();
        tokio::spawn(async move {
            let reason = replica.stopped_applying().await;
            tracing::error!(reason, "reporting not serving");
            health_reporter.set_not_serving::<KvServer<MvccApi>>().await;
        });
    }
    tracing::info!(
        name = settings.node.name,
        listen = %cairn_kit::grpc::local_addr(&listener)?,
        metrics = ?metrics_addr,
        applied = replica.applied().index,
        "cairn-mvcc ready"
    );

    let max_request = settings
        .limits
        .max_request_bytes
        .saturating_add(GRPC_OVERHEAD_BYTES);
    let routes = Routes::new(health_service)
        .add_service(
            KvServer::new(api.clone())
                .max_decoding_message_size(max_request)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(MvccServer::new(api).max_encoding_message_size(usize::MAX));
    let served = cairn_kit::grpc::serve(listener, routes, shutdown).await;
    tracing::info!(name = settings.node.name, "cairn-mvcc stopping");
    if let Err(error) = replica.store.sync() {
        tracing::warn!(%error, "cannot sync the store on the way out");
    }
    served.map_err(MvccError::from)
}
