//! Subscribe: a node's applied entries in order from an index on, then new
//! ones as they are applied. Blank, membership and bookkeeping entries come
//! too (without commands), so indexes are contiguous across the stream.

use cairn_proto::cairn::log::v1 as pb;
use openraft::EntryPayload;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::LogApi;
use crate::error::LogError;
use crate::types::{Entry, LogCommand};

/// Entries per Subscribe message.
const SUBSCRIBE_BATCH: usize = 512;

/// What Subscribe streams.
pub(super) type EntryStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

fn to_wire(entry: Entry) -> pb::Entry {
    let (kind, commands) = match entry.payload {
        EntryPayload::Blank => (pb::EntryKind::Blank, Vec::new()),
        EntryPayload::Membership(_) => (pb::EntryKind::Membership, Vec::new()),
        EntryPayload::Normal(LogCommand::Commands(commands)) => (pb::EntryKind::Command, commands),
        EntryPayload::Normal(
            LogCommand::ConsumerAck { .. } | LogCommand::ConsumerRemove { .. },
        ) => (pb::EntryKind::Consumer, Vec::new()),
    };
    pb::Entry {
        index: entry.log_id.index,
        term: entry.log_id.leader_id.term,
        kind: kind as i32,
        commands,
    }
}

impl LogApi {
    /// Starts streaming from `requested` (0: the first index held); an
    /// index this node has purged is refused with the first one it holds.
    pub(super) fn open_subscription(&self, requested: u64) -> Result<EntryStream, LogError> {
        let first = self.inner.store.first_index()?;
        let from = if requested == 0 { first } else { requested };
        if from < first {
            return Err(LogError::Truncated {
                requested: from,
                first,
            });
        }
        let (sender, receiver) = mpsc::channel(8);
        let api = self.clone();
        tokio::spawn(async move { api.feed(from, sender).await });
        Ok(ReceiverStream::new(receiver))
    }

    /// Streams applied entries from `next` on until the subscriber leaves or the node stops.
    async fn feed(
        self,
        mut next: u64,
        sender: mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    ) {
        let mut metrics = self.inner.raft.metrics();
        let mut shutdown = self.inner.shutdown.clone();
        loop {
            let applied = metrics.borrow_and_update().last_applied.map(|id| id.index);
            if let Some(applied) = applied.filter(|applied| next <= *applied) {
                let batch = match self.inner.store.read(next, applied + 1, SUBSCRIBE_BATCH) {
                    Ok(batch) => batch,
                    Err(error) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
                // A snapshot install or purge took the entries away underneath.
                if batch.first().map(|entry| entry.log_id.index) != Some(next) {
                    let first = self.inner.store.first_index().unwrap_or(next);
                    let _ = sender
                        .send(Err(LogError::Truncated {
                            requested: next,
                            first,
                        }
                        .into()))
                        .await;
                    return;
                }
                next = batch.last().map_or(next, |entry| entry.log_id.index + 1);
                let entries = batch.into_iter().map(to_wire).collect();
                if sender
                    .send(Ok(pb::SubscribeResponse { entries }))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
                () = sender.closed() => return,
            }
        }
    }
}
