//! Read indexes, one leadership check for many: a check is a heartbeat round
//! to a quorum, and every read that arrived before a check began is answered
//! by it. A read arriving during a check waits for the next one, so no read
//! gets a point older than its own arrival.

use std::sync::{Arc, Weak};

use cairn_kit::share::{ShareLimits, Sharing, Weighed};
use cairn_proto::cairn::log::v1 as pb;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::route::{no_quorum, Effect, Routed};
use super::{Inner, LogApi};
use crate::error::LogError;
use crate::metrics::LOG_METRICS;

/// A linearizable read point: the index (and its term) a reader must have applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ReadPoint {
    index: u64,
    term: u64,
}

/// A read-index request waiting for the next leadership check.
pub(super) struct ReadWaiter {
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Result<Routed<ReadPoint>, LogError>>,
}

impl Weighed for ReadWaiter {}

/// One leadership check at a time, for every reader waiting.
pub(super) fn sharing(inner: Weak<Inner>) -> Arc<Sharing<ReadWaiter>> {
    Sharing::new(
        ShareLimits::unbounded(1),
        move |waiters: Vec<ReadWaiter>| {
            let inner = inner.upgrade();
            async move {
                match inner {
                    Some(inner) => LogApi::from_inner(inner).confirm_reads(waiters).await,
                    None => {
                        for waiter in waiters {
                            let _ = waiter.reply.send(Err(LogError::Stopping));
                        }
                    }
                }
            }
        },
    )
}

impl LogApi {
    /// ReadIndex: a point covering every write acknowledged before the call.
    pub(super) async fn read_point(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let deadline = self.deadline();
        let (reply, answer) = oneshot::channel();
        self.inner.reads.submit(ReadWaiter { deadline, reply });
        let routed = answer.await.map_err(|_| LogError::Stopping)??;
        let here = |point: ReadPoint| pb::ReadIndexResponse {
            index: point.index,
            term: point.term,
        };
        self.answer(
            routed,
            here,
            request,
            deadline,
            |mut leader, request| async move { leader.read_index(request).await },
        )
        .await
    }

    /// One leadership check for every waiting reader.
    async fn confirm_reads(&self, waiters: Vec<ReadWaiter>) {
        let Some(deadline) = waiters.iter().map(|waiter| waiter.deadline).min() else {
            return;
        };
        let outcome = self
            .on_leader(
                deadline,
                Effect::Asks,
                || self.inner.raft.ensure_linearizable(),
                no_quorum,
            )
            .await
            .map(|routed| match routed {
                Routed::Here(read_log_id) => Routed::Here(ReadPoint {
                    index: read_log_id.map_or(0, |id| id.index),
                    term: read_log_id.map_or(0, |id| id.leader_id.term),
                }),
                Routed::There(leader) => Routed::There(leader),
            });
        LOG_METRICS.read_batch.observe(waiters.len() as f64);
        for waiter in waiters {
            let answer = match &outcome {
                Ok(routed) => Ok(routed.clone()),
                Err(error) => Err(error.copy()),
            };
            let _ = waiter.reply.send(answer);
        }
    }
}
