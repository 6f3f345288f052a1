//! cairn-lease: etcd's Lease API, with deadlines that survive a takeover.
//!
//! Grants, revokes, expiries and checkpoints are commands in the log, applied
//! by every mvcc replica; deadlines live in the memory of the one active
//! instance, whose claim fences everything it proposes. A standby forwards
//! calls to the active instance and takes over when its checkpoints stop.
//!
//! # Layout
//! - `table`: deadlines; `active`: keep-alives, checkpoints, expiry.
//! - `instance`: standing by and claiming; `api`: etcd's Lease service.
//! - `replicas`: the mvcc replicas every command goes through.

mod active;
mod api;
mod error;
mod instance;
mod metrics;
mod replicas;
mod settings;
mod table;

use std::sync::Arc;

use cairn_kit::shutdown::Signal;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use tonic::service::Routes;

/// What starting or serving a lease instance can fail with.
pub use error::LeaseError;
/// A lease instance's settings, which the `cairn-lease` binary loads and hands to `serve`.
pub use settings::LeaseSettings;

use crate::api::LeaseApi;
use crate::instance::Instance;
use crate::replicas::Replicas;

/// Binds `node.listen` and serves until `shutdown` resolves.
pub async fn serve(settings: LeaseSettings, shutdown: impl Signal) -> Result<(), LeaseError> {
    settings.validate()?;
    cairn_kit::tls::init_internal(&settings.internal_tls)?;
    let listener = cairn_kit::grpc::bind(&settings.node.listen).await?;
    // A standby's /metrics shows the lease gauges too (at 0), not nothing.
    std::sync::LazyLock::force(&metrics::LEASE_METRICS);
    let shutdown = cairn_kit::shutdown::from_future(shutdown);
    let replicas = Arc::new(Replicas::new(&settings.mvcc)?);
    let instance = Instance::new(
        settings.node.advertised().to_owned(),
        replicas,
        settings.lease.clone(),
    );
    tokio::spawn(instance.clone().run(shutdown.clone()));

    let metrics_addr = cairn_kit::metrics::spawn(&settings.metrics, shutdown.clone()).await?;
    let (health_reporter, health_service) = cairn_kit::health::grpc_health();
    health_reporter.set_serving::<LeaseServer<LeaseApi>>().await;
    tracing::info!(
        listen = %cairn_kit::grpc::local_addr(&listener)?,
        advertise = instance.me,
        metrics = ?metrics_addr,
        "cairn-lease ready"
    );
    let routes = Routes::new(health_service).add_service(LeaseServer::new(LeaseApi::new(
        instance,
        settings.node.cluster_id,
    )));
    cairn_kit::grpc::serve(listener, routes, shutdown).await?;
    tracing::info!("cairn-lease stopping");
    Ok(())
}
