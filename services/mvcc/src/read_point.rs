//! Linearizable read points, one read-index call for many reads: every read
//! that queues while a call is out shares the next call. Each of them arrived
//! before that call was sent, and the log's answer covers every write
//! acknowledged before the call arrived, so each read still sees every write
//! acknowledged before it began.

use std::sync::Arc;

use cairn_kit::share::{ShareLimits, Sharing, Weighed};
use tokio::sync::oneshot;

use crate::error::MvccError;
use crate::log_client::LogFailure;
use crate::replica::Replica;

/// A read waiting for a read point.
struct Waiting(oneshot::Sender<Result<u64, LogFailure>>);

impl Weighed for Waiting {}

/// Hands out read points from the log, sharing calls between concurrent reads.
pub(crate) struct ReadPoints {
    sharing: Arc<Sharing<Waiting>>,
}

impl ReadPoints {
    pub(crate) fn new(replica: Arc<Replica>) -> Self {
        let sharing = Sharing::new(ShareLimits::unbounded(1), move |waiting: Vec<Waiting>| {
            let replica = replica.clone();
            async move {
                let point = replica.log.read_index().await.map(|point| point.index);
                for Waiting(reply) in waiting {
                    let _ = reply.send(point.clone());
                }
            }
        });
        Self { sharing }
    }

    /// A log index this replica must have applied before it answers a read
    /// that began before this call.
    pub(crate) async fn read_point(&self) -> Result<u64, MvccError> {
        let (reply, answer) = oneshot::channel();
        self.sharing.submit(Waiting(reply));
        Ok(answer.await.map_err(|_| MvccError::Stopped)??)
    }
}
