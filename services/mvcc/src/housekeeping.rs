//! What a replica does on a timer besides serving: the gauges read off the
//! store (size on disk, publish lag) and etcd's NOSPACE quota.

use std::time::Duration;

use cairn_kit::shutdown::ShutdownWatch;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{AlarmRequest, AlarmType};

use crate::api::MvccApi;
use crate::error::MvccError;
use crate::metrics::MVCC_METRICS;
use crate::replica::Replica;

/// Every `interval` until shutdown: sets the gauges and raises NOSPACE for
/// this replica once its store is past `quota` bytes (0: no quota).
pub(crate) async fn run(
    api: MvccApi,
    interval: Duration,
    quota: u64,
    published: bool,
    mut shutdown: ShutdownWatch,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        let size = observe(api.replica(), published);
        if let Err(error) = enforce_quota(&api, quota, size).await {
            tracing::warn!(%error, "cannot raise NOSPACE; trying again");
        }
    }
}

/// Sets the gauges that are read off the store rather than counted, and
/// returns the store's size on disk.
fn observe(replica: &Replica, published: bool) -> i64 {
    let (size, _) = replica.store.db_size();
    MVCC_METRICS.db_bytes.set(size);
    if published {
        let lag = MVCC_METRICS.current_revision.get() - MVCC_METRICS.published_revision.get();
        MVCC_METRICS.publish_lag.set(lag.max(0));
    }
    size
}

/// Raises NOSPACE for this replica once its store (`size` bytes) is past
/// `quota` bytes, as etcd does when a member exceeds --quota-backend-bytes.
async fn enforce_quota(api: &MvccApi, quota: u64, size: i64) -> Result<(), MvccError> {
    if quota == 0 || u64::try_from(size).unwrap_or(0) <= quota {
        return Ok(());
    }
    let member_id = api.member_id();
    let raised = api
        .replica()
        .store
        .alarms()
        .iter()
        .any(|alarm| alarm.member_id == member_id && alarm.alarm == AlarmType::Nospace as i32);
    if raised {
        return Ok(());
    }
    tracing::warn!(size, quota, "the store is past its quota; raising NOSPACE");
    api.raise(Op::Alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id,
        alarm: AlarmType::Nospace as i32,
    }))
    .await
}
