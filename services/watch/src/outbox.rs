//! A client stream's outgoing responses, bounded in number and in bytes. A
//! response may carry many revisions, so a bound on the count alone would
//! let a stream whose client reads slowly hold hundreds of megabytes; with
//! both, the stream's task waits instead and its watchers catch up later.

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::WatchResponse;
use futures::Stream;
use prost::Message;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Status;

/// What tonic sends to the client.
pub(crate) type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// KiB of responses one stream may hold before they are sent.
const QUEUED_KIB: usize = 64;

/// The client is gone: nothing more will be read.
#[derive(Debug)]
pub(crate) struct Closed;

/// The sending half; the stream half goes to tonic.
pub(crate) struct Outbox {
    sender: mpsc::Sender<(Result<WatchResponse, Status>, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
}

impl Outbox {
    /// An outbox of at most `responses` responses and [`QUEUED_KIB`] KiB.
    pub(crate) fn new(responses: usize) -> (Self, ResponseStream) {
        let (sender, queued) = mpsc::channel(responses);
        let budget = Arc::new(Semaphore::new(QUEUED_KIB));
        // A response leaves the budget as tonic takes it to encode.
        let stream = ReceiverStream::new(queued).map(
            |(answer, permit): (Result<WatchResponse, Status>, OwnedSemaphorePermit)| {
                drop(permit);
                answer
            },
        );
        (Self { sender, budget }, Box::pin(stream))
    }

    /// Queues `response`, waiting while the stream holds too much.
    pub(crate) async fn send(&self, response: WatchResponse) -> Result<(), Closed> {
        let bytes = response.encoded_len();
        self.send_of(response, bytes).await
    }

    /// [`Outbox::send`] for a response whose size the caller already knows
    /// (its events' bytes), so the events are not measured again.
    pub(crate) async fn send_of(
        &self,
        response: WatchResponse,
        bytes: usize,
    ) -> Result<(), Closed> {
        self.queue(Ok(response), bytes.div_ceil(1024)).await
    }

    /// Resolves once the client is gone and nothing more will be read.
    pub(crate) async fn closed(&self) {
        self.sender.closed().await;
    }

    /// Ends the stream with `status` once what is queued has gone.
    pub(crate) async fn fail(&self, status: Status) -> Result<(), Closed> {
        self.queue(Err(status), 1).await
    }

    async fn queue(&self, answer: Result<WatchResponse, Status>, kib: usize) -> Result<(), Closed> {
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
                .send(response_of_kib(QUEUED_KIB / 3 + 10))
                .await
                .expect("room");
        }
        let third = tokio::time::timeout(
            Duration::from_millis(100),
            outbox.send(response_of_kib(QUEUED_KIB / 3 + 10)),
        );
        assert!(
            third.await.is_err(),
            "a third response fit past the byte bound"
        );
        let _read = stream.next().await.expect("a response");
        tokio::time::timeout(
            Duration::from_secs(5),
            outbox.send(response_of_kib(QUEUED_KIB / 3 + 10)),
        )
        .await
        .expect("room once the client read")
        .expect("the stream is open");
    }

    #[tokio::test]
    async fn a_response_larger_than_the_bound_still_goes_alone() {
        let (outbox, mut stream) = Outbox::new(4);
        outbox
            .send(response_of_kib(QUEUED_KIB * 2))
            .await
            .expect("room");
        let _read = stream.next().await.expect("a response");
        outbox.send(response_of_kib(1)).await.expect("room again");
    }

    #[tokio::test]
    async fn a_gone_client_closes_the_outbox() {
        let (outbox, stream) = Outbox::new(4);
        drop(stream);
        assert!(outbox.send(response_of_kib(1)).await.is_err());
    }
}
