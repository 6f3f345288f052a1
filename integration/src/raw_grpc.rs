//! Sends hand-made bytes as a gRPC request, to check how services answer
//! messages no generated client would produce.

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::Status;

/// A codec that sends and receives raw bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// Calls the unary method at `path` (e.g. `/cairn.log.v1.Log/Propose`) with `body`.
pub async fn unary(channel: Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(error.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// One step of a hand-made request body.
#[derive(Clone, Debug)]
pub enum Part {
    /// Bytes sent as they are: frame headers, messages, or pieces of either.
    Data(bytes::Bytes),
    /// A wait before the next step.
    Pause(std::time::Duration),
    /// The body fails here, which resets the stream (RST_STREAM) with no
    /// end of stream sent.
    Reset,
}

/// A gRPC frame: the compressed flag, the length the header declares, and
/// the bytes that follow it (which need not be that long).
pub fn frame(compressed: u8, declared: u32, data: &[u8]) -> bytes::Bytes {
    let mut framed = Vec::with_capacity(5 + data.len());
    framed.push(compressed);
    framed.extend_from_slice(&declared.to_be_bytes());
    framed.extend_from_slice(data);
    framed.into()
}

/// A well-formed uncompressed frame holding `message`.
pub fn message_frame(message: &[u8]) -> bytes::Bytes {
    frame(0, u32::try_from(message.len()).unwrap_or(u32::MAX), message)
}

/// A request body that plays its parts in order, then ends the stream
/// (a half-close) unless a part reset it.
struct PartsBody {
    parts: std::collections::VecDeque<Part>,
    waiting: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for PartsBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        use std::future::Future;
        use std::task::Poll;
        loop {
            if let Some(waiting) = self.waiting.as_mut() {
                if waiting.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.waiting = None;
            }
            match self.parts.pop_front() {
                None => return Poll::Ready(None),
                Some(Part::Data(data)) => {
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))))
                }
                Some(Part::Pause(pause)) => {
                    self.waiting = Some(Box::pin(tokio::time::sleep(pause)))
                }
                Some(Part::Reset) => {
                    return Poll::Ready(Some(Err(Status::cancelled("the caller reset the stream"))))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

/// How a hand-made call ended, as the caller saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The server ended it with a gRPC status (trailers, or headers alone).
    Status { code: tonic::Code, message: String },
    /// The response or its body failed without a status: a reset stream, a
    /// dropped connection, or an answer that was not gRPC at all.
    Broken(String),
    /// Nothing ended it within the patience given: the response headers never
    /// came (`answered` false), or the stream was still open.
    Open { answered: bool },
}

/// What a server answered to a hand-made call.
#[derive(Clone, Debug)]
pub struct Answer {
    pub ending: Ending,
    /// The response messages received before the ending.
    pub messages: Vec<bytes::Bytes>,
    /// Whether a part of the request reset the stream before the answer ended.
    pub reset_by_caller: bool,
}

/// Sends `parts` as the body of a gRPC call to `path` on `channel` and reads
/// the answer until it ends or `patience` passes (then the call is dropped,
/// which resets the stream). Headers are those of a plain gRPC client, plus
/// `extra` (e.g. a `grpc-encoding`).
pub async fn exchange(
    channel: Channel,
    path: &str,
    parts: Vec<Part>,
    extra: &[(&'static str, &'static str)],
    patience: std::time::Duration,
) -> Answer {
    use tonic::codegen::Service;
    let deadline = tokio::time::Instant::now() + patience;
    let resets = parts.iter().any(|part| matches!(part, Part::Reset));
    let answer = |ending: Ending, messages: Vec<bytes::Bytes>| Answer {
        ending,
        messages,
        reset_by_caller: resets,
    };
    let body = PartsBody {
        parts: parts.into(),
        waiting: None,
    };
    let mut request = http::Request::new(tonic::body::Body::new(body));
    *request.method_mut() = http::Method::POST;
    *request.version_mut() = http::Version::HTTP_2;
    let uri = match http::Uri::builder().path_and_query(path).build() {
        Ok(uri) => uri,
        Err(error) => {
            return answer(
                Ending::Broken(format!("bad path {path:?}: {error}")),
                vec![],
            )
        }
    };
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("te", http::HeaderValue::from_static("trailers"));
    for (name, value) in extra {
        headers.insert(*name, http::HeaderValue::from_static(value));
    }
    let mut channel = channel;
    let sent = async move {
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
        channel.call(request).await
    };
    let response = match tokio::time::timeout_at(deadline, sent).await {
        Err(_) => return answer(Ending::Open { answered: false }, vec![]),
        Ok(Err(error)) => return answer(Ending::Broken(chain(&error)), vec![]),
        Ok(Ok(response)) => response,
    };
    let (head, mut body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&head.headers) {
        if head.headers.contains_key("grpc-status") {
            return answer(
                Ending::Status {
                    code: status.code(),
                    message: status.message().to_owned(),
                },
                vec![],
            );
        }
    }
    if head.status != http::StatusCode::OK {
        return answer(
            Ending::Broken(format!("HTTP {} without a grpc-status", head.status)),
            vec![],
        );
    }
    let mut received = bytes::BytesMut::new();
    let mut messages = Vec::new();
    loop {
        let next = std::future::poll_fn(|cx| {
            http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
        });
        let frame = match tokio::time::timeout_at(deadline, next).await {
            Err(_) => return answer(Ending::Open { answered: true }, messages),
            Ok(None) => {
                return answer(
                    Ending::Broken("the answer ended without trailers".into()),
                    messages,
                )
            }
            Ok(Some(Err(error))) => return answer(Ending::Broken(chain(&error)), messages),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                received.extend_from_slice(&data);
                while received.len() >= 5 {
                    let length =
                        u32::from_be_bytes([received[1], received[2], received[3], received[4]])
                            as usize;
                    if received.len() < 5 + length {
                        break;
                    }
                    let mut message = received.split_to(5 + length);
                    messages.push(message.split_off(5).freeze());
                }
            }
            Err(frame) => {
                let Ok(trailers) = frame.into_trailers() else {
                    continue;
                };
                return answer(
                    match Status::from_header_map(&trailers) {
                        Some(status) => Ending::Status {
                            code: status.code(),
                            message: status.message().to_owned(),
                        },
                        None => Ending::Broken("trailers without a grpc-status".into()),
                    },
                    messages,
                );
            }
        }
    }
}

/// An error with its sources, for a failure message.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
