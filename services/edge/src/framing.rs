//! A streamed call's request body passes through the edge untouched, so the
//! edge tracks its gRPC framing: a body that ends inside a message (its
//! length prefix promised more bytes than came) is a broken request, which
//! etcd answers with INTERNAL. The backend cannot tell: tonic takes a message
//! header it has read, then the end of the body, as a clean end of the
//! stream: it answers OK, or, for a watch (which outlives its requests),
//! nothing at all. So the edge ends such a call itself, with the error in
//! place of the backend's status.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;

/// gRPC's message prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

/// The status a request cut inside a message gets, in tonic's words.
fn cut_short() -> Status {
    Status::internal("Unexpected EOF decoding stream.")
}

/// The trailers that end a gRPC answer with `status`, as a body frame.
pub(crate) fn closing_frame(status: Status) -> Result<Frame<Bytes>, Status> {
    let mut trailers = http::HeaderMap::new();
    match status.add_header(&mut trailers) {
        Ok(()) => Ok(Frame::trailers(trailers)),
        Err(status) => Err(status),
    }
}

/// Whether the request of one call ended inside a message; shared by the
/// request body (which finds out) and the answer (which reports it, waking
/// when it happens).
#[derive(Clone, Default)]
pub(crate) struct CutShort(Arc<Cut>);

#[derive(Default)]
struct Cut {
    marked: AtomicBool,
    answer: AtomicWaker,
}

impl CutShort {
    fn mark(&self) {
        self.0.marked.store(true, Ordering::SeqCst);
        self.0.answer.wake();
    }

    fn is_marked(&self) -> bool {
        self.0.marked.load(Ordering::SeqCst)
    }
}

/// Where a stream of length-prefixed messages stands.
#[derive(Default)]
struct Framing {
    /// Bytes of the next message's prefix seen so far.
    prefix: Vec<u8>,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl Framing {
    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let taken = data.len().min(self.remaining as usize);
                self.remaining -= taken as u64;
                data = &data[taken..];
                continue;
            }
            let taken = data.len().min(PREFIX - self.prefix.len());
            self.prefix.extend_from_slice(&data[..taken]);
            data = &data[taken..];
            if let Ok(prefix) = <[u8; PREFIX]>::try_from(self.prefix.as_slice()) {
                let [_, length @ ..] = prefix;
                self.remaining = u64::from(u32::from_be_bytes(length));
                self.prefix.clear();
            }
        }
    }

    fn inside_a_message(&self) -> bool {
        !self.prefix.is_empty() || self.remaining > 0
    }
}

/// A request body that marks `cut` when it ends inside a message.
pub(crate) struct Watched<B> {
    inner: B,
    framing: Framing,
    cut: CutShort,
}

impl<B> Watched<B> {
    pub(crate) fn new(inner: B, cut: CutShort) -> Self {
        Self {
            inner,
            framing: Framing::default(),
            cut,
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    self.framing.advance(&data);
                }
                // hyper sends the end with the last data and asks no more.
                self.inner.is_end_stream()
            }
            Poll::Ready(None) => true,
            _ => false,
        };
        if ended && self.framing.inside_a_message() {
            self.cut.mark();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer body that ends with INTERNAL as soon as its request was cut
/// inside a message, whatever the backend is doing.
pub(crate) struct Answered<B> {
    inner: B,
    cut: CutShort,
    ended: bool,
}

impl<B> Answered<B> {
    pub(crate) fn new(inner: B, cut: CutShort) -> Self {
        Self {
            inner,
            cut,
            ended: false,
        }
    }

    fn end_cut_short(&mut self) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.ended = true;
        Poll::Ready(Some(closing_frame(cut_short())))
    }
}

impl<B> Body for Answered<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.cut.is_marked() {
            return self.end_cut_short();
        }
        self.cut.0.answer.register(cx.waker());
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() && self.cut.is_marked() => {
                self.end_cut_short()
            }
            // Marked between the check and the registration: end now.
            Poll::Pending if self.cut.is_marked() => self.end_cut_short(),
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: u32) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend(std::iter::repeat_n(7, length as usize));
        framed
    }

    #[test]
    fn whole_messages_in_any_chunks_leave_nothing_open() {
        let mut stream = message(3);
        stream.extend(message(0));
        stream.extend(message(300));
        for chunk in [1, 2, 5, 7, 64, 1000] {
            let mut framing = Framing::default();
            for piece in stream.chunks(chunk) {
                framing.advance(piece);
            }
            assert!(!framing.inside_a_message(), "chunks of {chunk}");
        }
    }

    #[test]
    fn a_prefix_promising_more_than_came_is_inside_a_message() {
        let mut framing = Framing::default();
        framing.advance(&[0, 0, 5, 0x1f, 0x35]);
        assert!(framing.inside_a_message());
        let mut framing = Framing::default();
        framing.advance(&message(10)[..9]);
        assert!(framing.inside_a_message());
        let mut framing = Framing::default();
        framing.advance(&[0, 0]);
        assert!(framing.inside_a_message());
    }

    #[tokio::test]
    async fn a_cut_request_ends_an_answer_the_backend_keeps_open() {
        use http_body_util::BodyExt;
        let cut = CutShort::default();
        let backend = http_body_util::StreamBody::new(futures::stream::pending::<
            Result<Frame<Bytes>, Status>,
        >());
        let mut answer = Answered::new(backend, cut.clone());
        let marking = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            cut.mark();
        });
        let closing = tokio::time::timeout(std::time::Duration::from_secs(5), answer.frame())
            .await
            .expect("the answer ended")
            .and_then(Result::ok)
            .and_then(|frame| frame.into_trailers().ok())
            .expect("trailers");
        marking.await.expect("marked");
        let status = Status::from_header_map(&closing).expect("a status");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(answer.frame().await.is_none());
    }

    #[tokio::test]
    async fn an_answer_to_a_cut_request_closes_with_internal() {
        use http_body_util::BodyExt;
        let cut = CutShort::default();
        let request = http_body_util::Full::new(Bytes::from_static(&[0, 0, 0, 0, 9]));
        let mut request = Watched::new(request, cut.clone());
        while request.frame().await.is_some() {}
        let mut trailers = http::HeaderMap::new();
        Status::ok("").add_header(&mut trailers).expect("trailers");
        let backend = http_body_util::StreamBody::new(futures::stream::iter([Ok::<_, Status>(
            Frame::trailers(trailers),
        )]));
        let mut answer = Answered::new(backend, cut);
        let closing = answer
            .frame()
            .await
            .and_then(Result::ok)
            .and_then(|frame| frame.into_trailers().ok())
            .expect("trailers");
        let status = Status::from_header_map(&closing).expect("a status");
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}
