//! Many calls on a few long-lived gRPC streams, instead of an HTTP/2 stream
//! per call: each call is a message tagged with an id, and its answer, tagged
//! the same, comes back whenever it is ready, in any order. A call then costs
//! both ends a message each way. Lanes (streams) open on first use and again
//! after one breaks; calls spread over them, so one large answer being
//! written holds up only the calls behind it on its own lane.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

/// Calls that may wait to be written on one lane.
const LANE_QUEUE: usize = 1024;

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum MultiplexError {
    /// The call never reached the other end: safe to send elsewhere.
    #[error("{0}")]
    Unreached(String),
    /// The stream broke after the call was written: it may have been carried out.
    #[error("{0}")]
    Lost(String),
}

type Waiting<Resp> = oneshot::Sender<Result<Resp, String>>;

type Opened<Resp> = Pin<Box<dyn Future<Output = Result<Streaming<Resp>, Status>> + Send>>;

/// Opens one lane: the call that takes a stream of requests and answers with
/// a stream of responses.
type Open<Req, Resp> = Box<dyn Fn(ReceiverStream<Req>) -> Opened<Resp> + Send + Sync>;

/// One open stream: where calls are written, and who waits for which answer
/// (`None` once the stream has broken: nothing more may wait on it).
struct Lane<Req, Resp> {
    calls: mpsc::Sender<Req>,
    waiting: Mutex<Option<HashMap<u64, Waiting<Resp>>>>,
}

impl<Req, Resp> Lane<Req, Resp> {
    /// Registers a call's waiter; false when the stream has broken.
    fn wait_for(&self, id: u64, answer: Waiting<Resp>) -> bool {
        match self.waiting.lock().as_mut() {
            Some(waiting) => {
                waiting.insert(id, answer);
                true
            }
            None => false,
        }
    }

    fn is_open(&self) -> bool {
        self.waiting.lock().is_some()
    }

    /// Closes the lane: every call still waiting hears that the stream broke.
    fn break_off(&self, reason: &str) {
        let waiting = self.waiting.lock().take();
        for (_, waiting) in waiting.into_iter().flatten() {
            let _ = waiting.send(Err(reason.to_owned()));
        }
    }
}

/// Where a lane lives: open, or to be opened by the next call.
type Slot<Req, Resp> = tokio::sync::Mutex<Option<Arc<Lane<Req, Resp>>>>;

/// Calls of type `Req` answered by `Resp`, over lanes to one peer.
pub struct Multiplex<Req, Resp> {
    open: Open<Req, Resp>,
    tag: fn(&mut Req, u64),
    tag_of: fn(&Resp) -> u64,
    lanes: Vec<Slot<Req, Resp>>,
    next_lane: AtomicUsize,
    next_id: AtomicU64,
}

impl<Req, Resp> Multiplex<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// `lanes` streams opened with `open`; `tag` writes a call's id into
    /// its request, `tag_of` reads it back from an answer.
    pub fn new<F, Fut>(
        lanes: usize,
        tag: fn(&mut Req, u64),
        tag_of: fn(&Resp) -> u64,
        open: F,
    ) -> Self
    where
        F: Fn(ReceiverStream<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Streaming<Resp>, Status>> + Send + 'static,
    {
        Self {
            open: Box::new(move |requests| Box::pin(open(requests))),
            tag,
            tag_of,
            lanes: (0..lanes.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next_lane: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends `call` and waits for its answer.
    pub async fn call(&self, mut call: Req) -> Result<Resp, MultiplexError> {
        let slot = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let lane = self.lane(slot).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        (self.tag)(&mut call, id);
        let (answer, answered) = oneshot::channel();
        let written = lane.wait_for(id, answer) && lane.calls.send(call).await.is_ok();
        if !written {
            self.forget(slot, &lane).await;
            return Err(MultiplexError::Unreached(
                "the stream to the peer had closed".into(),
            ));
        }
        match answered.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(reason)) => Err(MultiplexError::Lost(reason)),
            Err(_) => Err(MultiplexError::Lost("the stream to the peer closed".into())),
        }
    }

    /// Lane `slot`, opened if it is not.
    async fn lane(&self, slot: usize) -> Result<Arc<Lane<Req, Resp>>, MultiplexError> {
        let mut open = self.lanes[slot].lock().await;
        if let Some(lane) = open.as_ref() {
            if lane.is_open() {
                return Ok(lane.clone());
            }
        }
        let (calls, queued) = mpsc::channel(LANE_QUEUE);
        // Refused or unreachable, the peer took no call on it.
        let answers = (self.open)(ReceiverStream::new(queued))
            .await
            .map_err(|status| {
                MultiplexError::Unreached(format!(
                    "cannot open a stream to the peer: {}",
                    status.message()
                ))
            })?;
        let lane = Arc::new(Lane {
            calls,
            waiting: Mutex::new(Some(HashMap::new())),
        });
        tokio::spawn(read_answers(lane.clone(), answers, self.tag_of));
        *open = Some(lane.clone());
        Ok(lane)
    }

    /// Forgets `lane` if it is still the one in `slot`.
    async fn forget(&self, slot: usize, lane: &Arc<Lane<Req, Resp>>) {
        let mut open = self.lanes[slot].lock().await;
        if open
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, lane))
        {
            *open = None;
        }
    }
}

/// Hands each answer to the call waiting for it, until the stream ends; then
/// every call still waiting hears that it broke.
async fn read_answers<Req, Resp>(
    lane: Arc<Lane<Req, Resp>>,
    mut answers: Streaming<Resp>,
    tag_of: fn(&Resp) -> u64,
) {
    let reason = loop {
        match answers.message().await {
            Ok(Some(answer)) => {
                let id = tag_of(&answer);
                let waiting = lane
                    .waiting
                    .lock()
                    .as_mut()
                    .and_then(|waiting| waiting.remove(&id));
                if let Some(waiting) = waiting {
                    let _ = waiting.send(Ok(answer));
                }
            }
            Ok(None) => break "the peer closed the stream".to_owned(),
            Err(status) => break format!("the stream to the peer broke: {}", status.message()),
        }
    };
    lane.break_off(&reason);
}
