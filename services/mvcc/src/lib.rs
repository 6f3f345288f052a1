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
//! - `seed`: at start, the store the replica goes on from: its own, or a copy
//!   of a peer's (`snapshot`) when the log has purged what it needs;
//!   `gate`: the refusals it answers until then.
//! - `etcd_snapshot`: etcd's snapshot buckets to and from a store, which
//!   Snapshot sends in etcd's format (`bbolt` writes the file).
//! - `restore`: a fresh cluster's state replaced by a snapshot's, at one log
//!   index on every replica.
//! - `auth`: etcd's permission rules, tokens and passwords; the users and
//!   roles themselves change in `store` (apply) and are served by `api`.

mod api;
mod auth;
pub mod bbolt;
mod error;
pub mod etcd_snapshot;
mod gate;
mod housekeeping;
mod key_index;
mod log_client;
mod metrics;
mod proposals;
mod publish;
mod range;
mod read_point;
mod read_threads;
mod replica;
mod restore;
mod revision;
mod seed;
mod settings;
mod snapshot;
pub mod store;
pub mod tree_index;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use cairn_kit::shutdown::Signal;
use cairn_proto::cairn::mvcc::v1::mvcc_server::MvccServer;
use cairn_proto::etcdserverpb::auth_server::AuthServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use tonic::service::Routes;

/// What the replica, its store and its requests can fail with.
pub use error::MvccError;
/// A replica's settings, which the `cairn-mvcc` binary loads and hands to `serve`.
pub use settings::MvccSettings;

use crate::api::MvccApi;
use crate::gate::Gate;
use crate::log_client::LogClient;
use crate::replica::Replica;

/// Room etcd leaves above --max-request-bytes for gRPC's own framing.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Binds `node.listen` and runs the replica until `shutdown` resolves.
///
/// The port answers from the start: health says NOT_SERVING and calls are
/// refused (`REPLICA_FAILED`, so the edge goes elsewhere) until the replica
/// has a store it may serve: its own, when the log still holds what follows
/// it, or otherwise a copy from a peer in `seed.replicas`, once caught up.
pub async fn serve(settings: MvccSettings, shutdown: impl Signal) -> Result<(), MvccError> {
    settings.validate()?;
    cairn_kit::tls::init_internal(&settings.internal_tls)?;
    let listener = cairn_kit::grpc::bind(&settings.node.listen).await?;
    let own = cairn_kit::grpc::local_addr(&listener)?;
    let shutdown = cairn_kit::shutdown::from_future(shutdown);
    std::fs::create_dir_all(&settings.node.data_dir).map_err(|error| {
        MvccError::Settings(format!(
            "setting `node.data_dir`: cannot create {}: {error}",
            settings.node.data_dir.display()
        ))
    })?;
    let log = LogClient::new(&settings.log)?;
    let metrics_addr = cairn_kit::metrics::spawn(&settings.metrics, shutdown.clone()).await?;

    let (health_reporter, health_service) = cairn_kit::health::grpc_health();
    health_reporter.set_not_serving::<KvServer<MvccApi>>().await;
    let kv_gate = Gate::closed("opening its store");
    let mvcc_gate = Gate::closed("opening its store");
    let auth_gate = Gate::closed("opening its store");
    let routes = Routes::new(health_service)
        .add_service(kv_gate.clone())
        .add_service(mvcc_gate.clone())
        .add_service(auth_gate.clone());
    let mut server = tokio::spawn(cairn_kit::grpc::serve(listener, routes, shutdown.clone()));
    tracing::info!(
        name = settings.node.name,
        listen = %own,
        metrics = ?metrics_addr,
        "cairn-mvcc listening; not serving until its store is ready"
    );

    let start = seed::Start {
        name: &settings.node.name,
        data_dir: &settings.node.data_dir,
        own,
        peers: &settings.seed.replicas,
    };
    let progress = |doing: String| {
        kv_gate.refuse_because(doing.clone());
        auth_gate.refuse_because(doing.clone());
        mvcc_gate.refuse_because(doing);
    };
    let prepared = tokio::select! {
        prepared = seed::prepare(&start, &log, &progress, shutdown.clone()) => prepared,
        served = &mut server => return stopped(served),
    };
    let prepared = match prepared {
        Ok(Some(prepared)) => prepared,
        Ok(None) => return stopped(server.await),
        Err(error @ MvccError::NoSeedPeers { .. }) => {
            return refuse_until_stopped(error, &progress, server).await
        }
        Err(error) => return Err(error),
    };
    let ack_interval = Duration::from_millis(settings.node.ack_interval_ms);
    let mut prepared = prepared;
    loop {
        let seeded = prepared.seeded;
        let replica = Replica::new(
            Arc::new(prepared.store),
            LogClient::new(&settings.log)?,
            settings.node.name.clone(),
        );
        // Everything of this store stops when it is replaced, or at shutdown.
        let (end_store, store_shutdown) = child_shutdown(&shutdown);
        tokio::spawn(replica::tail(
            replica.clone(),
            Some(prepared.subscription),
            Duration::from_millis(settings.testing.apply_lag_ms),
            store_shutdown.clone(),
        ));
        tokio::spawn(replica::acknowledge(
            replica.clone(),
            ack_interval,
            store_shutdown.clone(),
        ));
        if seeded {
            // A copy is behind the log by the time it was made and moved: it
            // serves once it has applied what the log had committed by now.
            progress("catching up with the log after copying the store".into());
            let caught_up = tokio::select! {
                caught_up = catch_up(&replica) => caught_up,
                served = &mut server => return stopped(served),
            };
            if let Err(error) = caught_up {
                return refuse_until_stopped(error, &progress, server).await;
            }
        }

        let api = MvccApi::new(
            replica.clone(),
            settings.limits.limits(),
            settings.node.cluster_id,
        )
        .skipping_read_index(settings.testing.skip_read_index)
        .with_auth(&settings.auth);
        if settings.testing.skip_read_index {
            tracing::warn!("testing.skip_read_index is set: linearizable reads may be stale");
        }
        if settings.testing.apply_lag_ms > 0 {
            let lag_ms = settings.testing.apply_lag_ms;
            tracing::warn!(
                lag_ms,
                "testing.apply_lag_ms is set: this replica trails its peers"
            );
        }
        let published = !settings.nats.url.is_empty();
        if published {
            tokio::spawn(publish::run(
                api.clone(),
                settings.nats.clone(),
                Duration::from_millis(settings.node.publisher_takeover_ms),
                store_shutdown.clone(),
            ));
        }
        tokio::spawn(housekeeping::run(
            api.clone(),
            ack_interval,
            settings.limits.quota_backend_bytes,
            published,
            store_shutdown.clone(),
        ));
        let max_request = settings
            .limits
            .max_request_bytes
            .saturating_add(GRPC_OVERHEAD_BYTES);
        kv_gate.open(
            KvServer::new(api.clone())
                .max_decoding_message_size(max_request)
                .max_encoding_message_size(usize::MAX),
        );
        auth_gate.open(AuthServer::new(api.clone()));
        mvcc_gate.open(MvccServer::new(api).max_encoding_message_size(usize::MAX));
        health_reporter.set_serving::<KvServer<MvccApi>>().await;
        {
            // A replica whose apply failed answers nothing; health says so too.
            let replica = replica.clone();
            let health_reporter = health_reporter.clone();
            let mut store_shutdown = store_shutdown.clone();
            tokio::spawn(async move {
                let reason = tokio::select! {
                    reason = replica.stopped_applying() => reason,
                    () = store_shutdown.cancelled() => return,
                };
                tracing::error!(reason, "reporting not serving");
                health_reporter.set_not_serving::<KvServer<MvccApi>>().await;
            });
        }
        tracing::info!(
            name = settings.node.name,
            listen = %own,
            applied = replica.applied().index,
            seeded,
            "cairn-mvcc ready"
        );

        let point = tokio::select! {
            served = &mut server => {
                tracing::info!(name = settings.node.name, "cairn-mvcc stopping");
                if let Err(error) = replica.store.sync() {
                    tracing::warn!(%error, "cannot sync the store on the way out");
                }
                return stopped(served);
            }
            point = replica.restore_point() => point,
        };
        // A restore was committed: this store is replaced before anything
        // more is applied or answered.
        let why = format!(
            "replacing its store for the restore at log index {}",
            point.index
        );
        kv_gate.close(why.clone());
        auth_gate.close(why.clone());
        mvcc_gate.close(why);
        health_reporter.set_not_serving::<KvServer<MvccApi>>().await;
        drop(end_store);
        let closed = Arc::downgrade(&replica.store);
        drop(replica);
        // RocksDB opens a directory once per process: the new store opens
        // where the old one is only once every call holding the old one ended.
        let replaced = tokio::select! {
            replaced = async {
                wait_closed(closed, &progress).await;
                restore::replace(&start, &log, &point, &progress, shutdown.clone()).await
            } => replaced,
            served = &mut server => return stopped(served),
        };
        prepared = match replaced {
            Ok(Some(prepared)) => prepared,
            Ok(None) => return stopped(server.await),
            Err(error) => return refuse_until_stopped(error, &progress, server).await,
        };
    }
}

/// Waits until nothing holds the store `closed` refers to any more.
async fn wait_closed(closed: std::sync::Weak<store::Store>, progress: &impl Fn(String)) {
    let started = tokio::time::Instant::now();
    let mut warned = false;
    while closed.strong_count() > 0 {
        if !warned && started.elapsed() > Duration::from_secs(10) {
            tracing::warn!(
                "calls still hold the store a restore replaces; waiting for them to end"
            );
            progress("waiting for calls on the replaced store to end".into());
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A shutdown that fires with `parent`, or when the returned sender is
/// dropped: what a store's tasks stop on when it is replaced.
fn child_shutdown(
    parent: &cairn_kit::shutdown::ShutdownWatch,
) -> (
    tokio::sync::oneshot::Sender<()>,
    cairn_kit::shutdown::ShutdownWatch,
) {
    let (trigger, watch) = cairn_kit::shutdown::channel();
    let (end, ended) = tokio::sync::oneshot::channel::<()>();
    let mut parent = parent.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = parent.cancelled() => {}
            _ = ended => {}
        }
        trigger.trigger();
    });
    (end, watch)
}

/// Keeps the port up, not serving, telling every caller why, until shutdown:
/// as a replica whose apply failed does, rather than exiting into a restart
/// loop that cannot end differently. Then ends with `error`.
async fn refuse_until_stopped(
    error: MvccError,
    refuse: &impl Fn(String),
    server: tokio::task::JoinHandle<Result<(), cairn_kit::KitError>>,
) -> Result<(), MvccError> {
    tracing::error!(%error, "this replica cannot serve; it answers every call with why");
    refuse(error.to_string());
    stopped(server.await)?;
    Err(error)
}

/// What the server task ended with.
fn stopped(
    served: Result<Result<(), cairn_kit::KitError>, tokio::task::JoinError>,
) -> Result<(), MvccError> {
    match served {
        Ok(served) => served.map_err(MvccError::from),
        Err(_) => Err(MvccError::Stopped),
    }
}

/// Waits until the replica has applied what the log had committed when it
/// was asked, asking again while the log has no leader.
async fn catch_up(replica: &Replica) -> Result<(), MvccError> {
    let point = loop {
        match replica.log.read_index().await {
            Ok(point) => break point.index,
            Err(failure) => {
                tracing::warn!(%failure, "cannot get the log's read index to catch up to; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::select! {
        applied = replica.wait_applied(point) => applied,
        reason = replica.stopped_applying() => Err(MvccError::Failed(reason)),
    }
}
