//! cairn-log: the replicated, totally ordered log of commands that every other
//! cairn service builds on. openraft decides; RocksDB remembers; an append is
//! acknowledged only once it is synced to disk.
//!
//! # Layout
//! - `settings`: what a node is configured with.
//! - `store`: RocksDB log storage (each append synced) and the bookkeeping state machine.
//! - `network`: raft messages between nodes over tonic.
//! - `api`: the Log service (Propose, ReadIndex, Subscribe, Ack, Status, membership).
//!   Proposals and read indexes that arrive together share one round of consensus.
//! - `purge`: the policy that never drops an entry a consumer still needs.

mod api;
mod error;
mod metrics;
mod network;
mod purge;
mod settings;
mod store;
mod types;

use std::sync::Arc;
use std::time::Duration;

use cairn_kit::shutdown::ShutdownWatch;
use cairn_kit::shutdown::Signal;
use cairn_proto::cairn::log::v1::log_server::LogServer;
use cairn_proto::cairn::log::v1::raft_server::RaftServer;
use openraft::{BasicNode, SnapshotPolicy};
use tonic::service::Routes;

/// What starting or serving a log node can fail with.
pub use error::LogError;
/// A log node's settings, which the `cairn-log` binary loads and hands to `serve`.
pub use settings::LogSettings;

use crate::api::LogApi;
use crate::metrics::LOG_METRICS;
use crate::network::{Network, RaftService, MAX_RAFT_MESSAGE_BYTES};
use crate::types::Raft;

/// Binds `node.listen` and runs the node until `shutdown` resolves.
pub async fn serve(settings: LogSettings, shutdown: impl Signal) -> Result<(), LogError> {
    settings.validate()?;
    cairn_kit::tls::init_internal(&settings.internal_tls)?;
    let listener = cairn_kit::grpc::bind(&settings.node.listen).await?;
    let shutdown = cairn_kit::shutdown::from_future(shutdown);
    let (log_store, state_machine) = store::open(&settings.node.data_dir)?;
    let bookkeeping = state_machine.state();
    let tail = state_machine.tail();

    let raft_config = raft_config(&settings)?;
    let raft = Raft::new(
        settings.node.id,
        raft_config,
        Network::new(&settings.cluster.token),
        log_store.clone(),
        state_machine,
    )
    .await
    .map_err(|fatal| LogError::Raft(fatal.to_string()))?;

    if settings.cluster.bootstrap {
        bootstrap(&raft, &settings).await?;
    }

    let metrics_addr = cairn_kit::metrics::spawn(&settings.metrics, shutdown.clone()).await?;
    tokio::spawn(purge::run(
        raft.clone(),
        bookkeeping.clone(),
        settings.raft.retain_entries,
        Duration::from_millis(settings.raft.purge_interval_ms),
        shutdown.clone(),
    ));
    tokio::spawn(export_raft_metrics(raft.clone(), shutdown.clone()));

    let api = LogApi::new(
        raft.clone(),
        log_store,
        tail,
        bookkeeping,
        settings.advertise().to_owned(),
        &settings.raft,
        shutdown.clone(),
    );
    let (health_reporter, health_service) = cairn_kit::health::grpc_health();
    health_reporter.set_serving::<LogServer<LogApi>>().await;

    let max_request = settings
        .raft
        .max_command_bytes
        .saturating_mul(2)
        .max(64 * 1024 * 1024);
    tracing::info!(
        node = settings.node.id,
        listen = %cairn_kit::grpc::local_addr(&listener)?,
        advertise = settings.advertise(),
        metrics = ?metrics_addr,
        "cairn-log ready"
    );
    let routes = Routes::new(health_service)
        .add_service(LogServer::new(api).max_decoding_message_size(max_request))
        .add_service(
            RaftServer::new(RaftService::new(raft.clone(), &settings.cluster.token))
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        );
    let served = cairn_kit::grpc::serve(listener, routes, shutdown).await;
    tracing::info!(node = settings.node.id, "cairn-log stopping");
    if let Err(error) = raft.shutdown().await {
        tracing::warn!(%error, "raft did not stop cleanly");
    }
    served.map_err(LogError::from)
}

fn raft_config(settings: &LogSettings) -> Result<Arc<openraft::Config>, LogError> {
    let raft = &settings.raft;
    let config = openraft::Config {
        cluster_name: "cairn-log".to_owned(),
        heartbeat_interval: raft.heartbeat_ms,
        election_timeout_min: raft.election_timeout_min_ms,
        election_timeout_max: raft.election_timeout_max_ms,
        max_payload_entries: raft.max_payload_entries,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(raft.snapshot_every),
        // Purging is decided by `purge`, which knows the consumers' positions.
        max_in_snapshot_log_to_keep: u64::MAX,
        purge_batch_size: 1,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|error| LogError::Settings(format!("raft settings: {error}")))
}

/// Initialises an empty cluster with the configured members. Every initial member
/// may call this: openraft accepts the same membership on all of them and refuses
/// it on a node that already has state, which is what a restart looks like.
async fn bootstrap(raft: &Raft, settings: &LogSettings) -> Result<(), LogError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|fatal| LogError::Raft(fatal.to_string()))?;
    if initialized {
        return Ok(());
    }
    let members: std::collections::BTreeMap<_, _> = settings
        .initial_members()?
        .into_iter()
        .map(|(id, addr)| (id, BasicNode::new(addr)))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!(node = settings.node.id, "cluster initialised"),
        Err(error) => {
            tracing::info!(node = settings.node.id, %error, "cluster already initialised elsewhere")
        }
    }
    Ok(())
}

/// Mirrors raft's own metrics into Prometheus: when the leader, term or
/// membership changes, and twice a second for the indexes. (Following every
/// change of raft's metrics would wake this task on every raft event.)
async fn export_raft_metrics(raft: Raft, mut shutdown: ShutdownWatch) {
    let mut server = raft.server_metrics();
    loop {
        {
            let current = raft.metrics().borrow().clone();
            LOG_METRICS.term.set(current.current_term as i64);
            LOG_METRICS
                .is_leader
                .set(i64::from(current.current_leader == Some(current.id)));
            LOG_METRICS
                .last_log_index
                .set(current.last_log_index.unwrap_or(0) as i64);
            let applied = current.last_applied.map_or(0, |id| id.index);
            LOG_METRICS.applied_index.set(applied as i64);
            LOG_METRICS.commit_index.set(applied as i64);
        }
        tokio::select! {
            changed = server.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
