//! Subscribe: a node's applied entries in order from an index on, then new
//! ones as they are applied. Blank, membership and bookkeeping entries come
//! too (without commands), so indexes are contiguous across the stream.

use cairn_proto::cairn::log::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::LogApi;
use crate::error::LogError;
use crate::store::to_wire;

/// Entries per Subscribe message.
const SUBSCRIBE_BATCH: usize = 512;

/// What Subscribe streams.
pub(super) type EntryStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

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

    /// Up to a batch of applied entries from `next` on, through `applied`:
    /// from the tail in memory when it still holds them, else from disk.
    fn entries_from(&self, next: u64, applied: u64) -> Result<Vec<pb::Entry>, LogError> {
        if let Some(entries) = self.inner.tail.read(next, SUBSCRIBE_BATCH) {
            return Ok(entries);
        }
        let batch = self.inner.store.read(next, applied + 1, SUBSCRIBE_BATCH)?;
        // A snapshot install or purge took the entries away underneath.
        if batch.first().map(|entry| entry.log_id.index) != Some(next) {
            let first = self.inner.store.first_index().unwrap_or(next);
            return Err(LogError::Truncated {
                requested: next,
                first,
            });
        }
        Ok(batch.into_iter().map(to_wire).collect())
    }

    /// Streams applied entries from `next` on until the subscriber leaves or
    /// the node stops, each as soon as it is applied.
    async fn feed(
        self,
        mut next: u64,
        sender: mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    ) {
        let mut applied = self.inner.tail.applied();
        let mut shutdown = self.inner.shutdown.clone();
        loop {
            let last = *applied.borrow_and_update();
            if next <= last {
                let entries = match self.entries_from(next, last) {
                    Ok(entries) => entries,
                    Err(error) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
                next = entries.last().map_or(next, |entry| entry.index + 1);
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
                changed = applied.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
                () = sender.closed() => return,
            }
        }
    }
}
