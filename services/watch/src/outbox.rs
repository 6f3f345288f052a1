//! A client stream's outgoing responses, bounded in number and in bytes. A
//! response may carry many revisions, so a bound on the count alone would
//! let a stream whose client reads slowly hold hundreds of megabytes; with
//! both, the stream's task waits instead and its watchers catch up later.

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::WatchResponse;
use futures::Stream;
use futures::StreamExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::encoded::EncodedResponse;

/// What tonic sends to the client: responses already encoded.
pub(crate) type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<EncodedResponse, Status>> + Send>>;

/// KiB of responses one stream may hold before they are sent.
const QUEUED_KIB: usize = 64;

/// The client is gone: nothing more will be read.
#[derive(Debug)]
pub(crate) struct Closed;

/// What one place in the queue holds: a run of responses (queued together
/// so a pass over many watchers costs the queue one send, not one per
/// response), or the status that ends the stream.
enum Queued {
    Responses(Vec<EncodedResponse>),
    Failure(Status),
}

impl IntoIterator for Queued {
    type Item = Result<EncodedResponse, Status>;
    type IntoIter = QueuedItems;

    fn into_iter(self) -> QueuedItems {
        match self {
            Queued::Responses(responses) => QueuedItems {
                responses: responses.into_iter(),
                failure: None,
            },
            Queued::Failure(status) => QueuedItems {
                responses: Vec::new().into_iter(),
                failure: Some(status),
            },
        }
    }
}

/// The responses of a [`Queued`], one at a time, as tonic takes them.
struct QueuedItems {
    responses: std::vec::IntoIter<EncodedResponse>,
    failure: Option<Status>,
}

impl Iterator for QueuedItems {
    type Item = Result<EncodedResponse, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.responses.next() {
            Some(response) => Some(Ok(response)),
            None => self.failure.take().map(Err),
        }
    }
}

/// The sending half; the stream half goes to tonic.
pub(crate) struct Outbox {
    sender: mpsc::Sender<(Queued, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
}

impl Outbox {
    /// An outbox of at most `responses` responses and [`QUEUED_KIB`] KiB.
    pub(crate) fn new(responses: usize) -> (Self, ResponseStream) {
        let (sender, queued) = mpsc::channel(responses);
        let budget = Arc::new(Semaphore::new(QUEUED_KIB));
        // Responses leave the budget as tonic takes the first of them to encode.
        let stream = ReceiverStream::new(queued).flat_map(
            |(queued, permit): (Queued, OwnedSemaphorePermit)| {
                drop(permit);
                futures::stream::iter(queued)
            },
        );
        (Self { sender, budget }, Box::pin(stream))
    }

    /// Queues `response`, waiting while the stream holds too much.
    pub(crate) async fn send(&self, response: &WatchResponse) -> Result<(), Closed> {
        self.send_all(vec![EncodedResponse::plain(response)]).await
    }

    /// Queues `responses` in order, as few places in the queue as the byte
    /// bound allows.
    pub(crate) async fn send_all(&self, responses: Vec<EncodedResponse>) -> Result<(), Closed> {
        const RUN_BYTES: usize = QUEUED_KIB * 1024 / 2;
        let mut run = Vec::new();
        let mut run_bytes = 0;
        for response in responses {
            let bytes = response.len();
            if !run.is_empty() && run_bytes + bytes > RUN_BYTES {
                let full = Queued::Responses(std::mem::take(&mut run));
                self.queue(full, run_bytes.div_ceil(1024)).await?;
                run_bytes = 0;
            }
            run.push(response);
            run_bytes += bytes;
        }
        if run.is_empty() {
            return Ok(());
        }
        self.queue(Queued::Responses(run), run_bytes.div_ceil(1024))
            .await
    }

    /// Resolves once the client is gone and nothing more will be read.
    pub(crate) async fn closed(&self) {
        self.sender.closed().await;
    }

    /// Ends the stream with `status` once what is queued has gone.
    pub(crate) async fn fail(&self, status: Status) -> Result<(), Closed> {
        self.queue(Queued::Failure(status), 1).await
    }

    async fn queue(&self, answer: Queued, kib: usize) -> Result<(), Closed> {
        let kib = kib.clamp(1, QUEUED_KIB);
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX))
            .await
            .map_err(|_| Closed)?;
        self.sender.send((answer, permit)).await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cairn_proto::mvccpb::{Event, KeyValue};

    use super::*;

    fn response_of_kib(kib: usize) -> WatchResponse {
        WatchResponse {
            events: vec![Event {
                kv: Some(KeyValue {
                    key: b"k".to_vec(),
                    value: vec![b'v'; kib * 1024],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_stream_holds_at_most_its_bytes_until_the_client_reads() {
        let (outbox, mut stream) = Outbox::new(1024);
        // Responses of a little over a third of the bound fit two at a time.
        for _ in 0..2 {
            outbox
                .send(&response_of_kib(QUEUED_KIB / 3 + 10))
                .await
                .expect("room");
        }
        let third_response = response_of_kib(QUEUED_KIB / 3 + 10);
        let third = tokio::time::timeout(Duration::from_millis(100), outbox.send(&third_response));
        assert!(
            third.await.is_err(),
            "a third response fit past the byte bound"
        );
        let _read = stream.next().await.expect("a response");
        tokio::time::timeout(
            Duration::from_secs(5),
            outbox.send(&response_of_kib(QUEUED_KIB / 3 + 10)),
        )
        .await
        .expect("room once the client read")
        .expect("the stream is open");
    }

    #[tokio::test]
    async fn a_response_larger_than_the_bound_still_goes_alone() {
        let (outbox, mut stream) = Outbox::new(4);
        outbox
            .send(&response_of_kib(QUEUED_KIB * 2))
            .await
            .expect("room");
        let _read = stream.next().await.expect("a response");
        outbox.send(&response_of_kib(1)).await.expect("room again");
    }

    #[tokio::test]
    async fn a_gone_client_closes_the_outbox() {
        let (outbox, stream) = Outbox::new(4);
        drop(stream);
        assert!(outbox.send(&response_of_kib(1)).await.is_err());
    }

    #[tokio::test]
    async fn responses_queued_together_come_out_one_by_one_in_order_before_a_failure() {
        let (outbox, mut stream) = Outbox::new(4);
        let responses: Vec<EncodedResponse> = (1..=100)
            .map(|id| {
                EncodedResponse::plain(&WatchResponse {
                    watch_id: id,
                    ..response_of_kib(1)
                })
            })
            .collect();
        let sending = tokio::spawn(async move {
            outbox.send_all(responses).await.expect("open");
            outbox
                .fail(Status::unavailable("gone"))
                .await
                .expect("open");
        });
        for id in 1..=100 {
            let response = stream
                .next()
                .await
                .expect("a response")
                .expect("not a failure");
            let mut bytes = Vec::new();
            response.write(&mut bytes);
            let decoded = <WatchResponse as prost::Message>::decode(bytes.as_slice())
                .expect("a WatchResponse");
            assert_eq!(decoded.watch_id, id);
        }
        let failure = stream.next().await.expect("the failure");
        assert!(failure.is_err());
        sending.await.expect("sent");
    }
}
