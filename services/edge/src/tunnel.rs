//! KV calls to one replica as messages on a few long-lived streams
//! (`Mvcc/Calls`), instead of an HTTP/2 stream per call: a call costs the
//! edge and the replica one message each way, and its answer comes back,
//! matched by id, whenever it is ready. Lanes (streams) open on first use and
//! again after one breaks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::mvcc::v1::mvcc_client::MvccClient;
use cairn_proto::cairn::mvcc::v1::{KvAnswer, KvCall};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Streams per replica: calls spread over them, so one large answer being
/// written holds up only the calls behind it on its own lane.
const LANES: usize = 4;
/// Calls that may wait to be written on one lane.
const LANE_QUEUE: usize = 1024;

/// Why a call through the tunnel got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TunnelError {
    /// The call never reached the replica: safe to send elsewhere.
    #[error("{0}")]
    NotSent(String),
    /// The stream broke after the call was written: it may have been carried out.
    #[error("{0}")]
    Lost(String),
}

type Waiting = oneshot::Sender<Result<KvAnswer, String>>;

/// One open stream: where calls are written, and who waits for which
/// answer (`None` once the stream has broken: nothing more may wait on it).
struct Lane {
    calls: mpsc::Sender<KvCall>,
    waiting: Mutex<Option<HashMap<u64, Waiting>>>,
}

impl Lane {
    /// Registers a call's waiter; false when the stream has broken.
    fn wait_for(&self, id: u64, answer: Waiting) -> bool {
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

/// The streams to one replica.
pub(crate) struct Tunnel {
    channel: Channel,
    lanes: Vec<tokio::sync::Mutex<Option<Arc<Lane>>>>,
    next_lane: AtomicUsize,
    next_id: AtomicU64,
}

impl Tunnel {
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            channel,
            lanes: (0..LANES).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next_lane: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends `call` (its id is set here) and waits for its answer.
    pub(crate) async fn call(&self, mut call: KvCall) -> Result<KvAnswer, TunnelError> {
        let slot = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let lane = self.lane(slot).await?;
        call.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        let written = lane.wait_for(call.id, answer) && lane.calls.send(call).await.is_ok();
        if !written {
            self.close(slot, &lane).await;
            return Err(TunnelError::NotSent(
                "the stream to the replica had closed".into(),
            ));
        }
        match answered.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(reason)) => Err(TunnelError::Lost(reason)),
            Err(_) => Err(TunnelError::Lost("the stream to the replica closed".into())),
        }
    }

    /// Lane `slot`, opened if it is not.
    async fn lane(&self, slot: usize) -> Result<Arc<Lane>, TunnelError> {
        let mut open = self.lanes[slot].lock().await;
        if let Some(lane) = open.as_ref() {
            if lane.is_open() {
                return Ok(lane.clone());
            }
        }
        let (calls, queued) = mpsc::channel(LANE_QUEUE);
        let mut client = MvccClient::with_interceptor(self.channel.clone(), TraceInterceptor)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let answers = client
            .calls(ReceiverStream::new(queued))
            .await
            // Refused or unreachable, the replica took no call on it.
            .map_err(|status| {
                TunnelError::NotSent(format!(
                    "cannot open a stream to the replica: {}",
                    status.message()
                ))
            })?
            .into_inner();
        let lane = Arc::new(Lane {
            calls,
            waiting: Mutex::new(Some(HashMap::new())),
        });
        tokio::spawn(read_answers(lane.clone(), answers));
        *open = Some(lane.clone());
        Ok(lane)
    }

    /// Forgets `lane` if it is still the one in `slot`.
    async fn close(&self, slot: usize, lane: &Arc<Lane>) {
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
async fn read_answers(lane: Arc<Lane>, mut answers: tonic::Streaming<KvAnswer>) {
    let reason = loop {
        match answers.message().await {
            Ok(Some(answer)) => {
                let waiting = lane
                    .waiting
                    .lock()
                    .as_mut()
                    .and_then(|waiting| waiting.remove(&answer.id));
                if let Some(waiting) = waiting {
                    let _ = waiting.send(Ok(answer));
                }
            }
            Ok(None) => break "the replica closed the stream".to_owned(),
            Err(status) => break format!("the stream to the replica broke: {}", status.message()),
        }
    };
    lane.break_off(&reason);
}
