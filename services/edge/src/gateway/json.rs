//! The gateway's JSON on the wire: request bodies holding one message or
//! several in a row, answers as etcd's grpc-gateway writes them, and gRPC
//! statuses as HTTP errors.

use axum::body::{Body, BodyDataStream};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

/// One message from a whole body; an empty body is the message with every
/// field at its default, as etcd's gateway reads it.
pub(crate) fn message<M: DeserializeOwned + Default>(body: &[u8]) -> Result<M, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(M::default());
    }
    serde_json::from_slice(body).map_err(malformed)
}

fn malformed(error: serde_json::Error) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The messages of a body that holds any number of them in a row, each as
/// soon as it is complete. A malformed one ends the stream with its error.
pub(crate) fn messages<M: DeserializeOwned>(
    body: BodyDataStream,
) -> impl Stream<Item = Result<M, Status>> + Send {
    struct Reading {
        body: BodyDataStream,
        pending: BytesMut,
        ended: bool,
    }
    let start = Reading {
        body,
        pending: BytesMut::new(),
        ended: false,
    };
    futures::stream::unfold(start, |mut reading| async move {
        loop {
            match parse_next(&mut reading.pending, reading.ended) {
                Parsed::Message(message) => return Some((Ok(message), reading)),
                Parsed::Malformed(status) => {
                    reading.pending.clear();
                    reading.ended = true;
                    return Some((Err(status), reading));
                }
                Parsed::Incomplete if reading.ended => return None,
                Parsed::Incomplete => {}
            }
            match reading.body.next().await {
                Some(Ok(chunk)) => reading.pending.extend_from_slice(&chunk),
                Some(Err(_)) | None => reading.ended = true,
            }
        }
    })
}

enum Parsed<M> {
    Message(M),
    Malformed(Status),
    /// Only white space so far, or a message not yet complete.
    Incomplete,
}

/// The first whole message in `pending`, taken out of it.
fn parse_next<M: DeserializeOwned>(pending: &mut BytesMut, ended: bool) -> Parsed<M> {
    let mut parsed = serde_json::Deserializer::from_slice(pending).into_iter::<M>();
    match parsed.next() {
        Some(Ok(message)) => {
            let used = parsed.byte_offset();
            pending.advance(used);
            Parsed::Message(message)
        }
        Some(Err(error)) if !error.is_eof() || ended => Parsed::Malformed(malformed(error)),
        _ => Parsed::Incomplete,
    }
}

/// A successful unary answer.
pub(crate) fn answer<M: Serialize>(message: &M) -> Response {
    match serde_json::to_vec(message) {
        Ok(body) => respond(StatusCode::OK, Body::from(body)),
        Err(error) => failure(&Status::internal(error.to_string())),
    }
}

/// One message of a streamed answer: `{"result":…}` or, for the status that
/// ended the stream, `{"error":{…}}`, each on a line of its own.
pub(crate) fn chunk<M: Serialize>(item: Result<M, Status>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Result<M> {
        result: M,
    }
    #[derive(Serialize)]
    struct StreamError<'a> {
        grpc_code: i32,
        http_code: u16,
        message: &'a str,
        http_status: &'a str,
    }
    #[derive(Serialize)]
    struct Error<'a> {
        error: StreamError<'a>,
    }
    let line = match item {
        Ok(result) => serde_json::to_vec(&Result { result }),
        Err(status) => {
            let http = http_status(status.code());
            serde_json::to_vec(&Error {
                error: StreamError {
                    grpc_code: status.code() as i32,
                    http_code: http.as_u16(),
                    message: status.message(),
                    http_status: http.canonical_reason().unwrap_or_default(),
                },
            })
        }
    };
    let mut line = line.unwrap_or_default();
    line.push(b'\n');
    line
}

/// A streamed answer whose lines come from `lines`.
pub(crate) fn stream(lines: impl Stream<Item = Vec<u8>> + Send + 'static) -> Response {
    let body = Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>));
    respond(StatusCode::OK, body)
}

/// A failed unary call: the HTTP status for its code and etcd 3.4's body,
/// `{"error":…,"message":…,"code":…}`.
pub(crate) fn failure(status: &Status) -> Response {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: &'a str,
        message: &'a str,
        code: i32,
    }
    let body = serde_json::to_vec(&ErrorBody {
        error: status.message(),
        message: status.message(),
        code: status.code() as i32,
    })
    .unwrap_or_default();
    respond(http_status(status.code()), Body::from(body))
}

fn respond(status: StatusCode, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // etcd's gateway answers browsers from any origin.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    response
}

/// The HTTP status grpc-gateway gives each gRPC code.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb::watch_request::RequestUnion;
    use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader, WatchRequest};

    use super::*;

    #[test]
    fn requests_read_proto_and_camel_case_names_and_numbers_as_strings_or_numbers() {
        let proto: RangeRequest =
            message(br#"{"key":"Zm9v","range_end":"Zm9w","revision":"7","keys_only":true}"#)
                .expect("proto names");
        let camel: RangeRequest =
            message(br#"{"key":"Zm9v","rangeEnd":"Zm9w","revision":7,"keysOnly":true}"#)
                .expect("camel case");
        assert_eq!(proto, camel);
        assert_eq!(proto.key, b"foo");
        assert_eq!(proto.revision, 7);
        let sorted: RangeRequest = message(br#"{"sort_order":"DESCEND","sort_target":3}"#)
            .expect("enums by name or number");
        assert_eq!((sorted.sort_order, sorted.sort_target), (2, 3));
        let unknown: RangeRequest =
            message(br#"{"key":"Zm9v","no_such_field":1}"#).expect("unknown fields ignored");
        assert_eq!(unknown.key, b"foo");
        assert_eq!(
            message::<RangeRequest>(b"").expect("empty"),
            RangeRequest::default()
        );
        let broken = message::<RangeRequest>(b"{\"key\":").expect_err("malformed");
        assert_eq!(broken.code(), Code::InvalidArgument);
    }

    #[test]
    fn answers_use_proto_names_strings_for_64_bit_and_omit_defaults() {
        let answer = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: u64::MAX,
                revision: 2,
                ..Default::default()
            }),
            count: 1,
            ..Default::default()
        };
        let text = serde_json::to_string(&answer).expect("serialise");
        assert_eq!(
            text,
            r#"{"header":{"cluster_id":"18446744073709551615","revision":"2"},"count":"1"}"#
        );
    }

    #[tokio::test]
    async fn a_body_may_carry_several_messages_split_anywhere() {
        let parts = [
            "{\"create_request\":{\"key\":\"Zm9v\"}}\n{\"progress",
            "_request\":{}}  {\"cancel_request\":{\"watch_id\":\"3\"}}",
        ];
        let chunks = futures::stream::iter(parts.map(Ok::<_, std::io::Error>));
        let body = Body::from_stream(chunks).into_data_stream();
        let read: Vec<WatchRequest> = messages(body)
            .map(|item| item.expect("well formed"))
            .collect()
            .await;
        let kinds: Vec<_> = read
            .iter()
            .map(|request| match request.request_union {
                Some(RequestUnion::CreateRequest(_)) => "create",
                Some(RequestUnion::ProgressRequest(_)) => "progress",
                Some(RequestUnion::CancelRequest(_)) => "cancel",
                None => "none",
            })
            .collect();
        assert_eq!(kinds, ["create", "progress", "cancel"]);
    }

    #[tokio::test]
    async fn a_malformed_message_in_a_stream_ends_it_with_invalid_argument() {
        let chunks =
            futures::stream::iter([Ok::<_, std::io::Error>("{\"create_request\":{}} {oops")]);
        let body = Body::from_stream(chunks).into_data_stream();
        let read: Vec<Result<WatchRequest, Status>> = messages(body).collect().await;
        assert_eq!(read.len(), 2);
        assert!(read[0].is_ok());
        let error = read[1].as_ref().expect_err("malformed");
        assert_eq!(error.code(), Code::InvalidArgument);
    }
}
