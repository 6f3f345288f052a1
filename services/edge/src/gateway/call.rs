//! One gateway call: the JSON request becomes the gRPC call it maps to, made
//! in process through the edge's own routes, and the answer goes back as JSON.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::uri::PathAndQuery;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::client::Grpc;
use tonic::metadata::MetadataMap;

use tonic::{Request, Status};
use tonic_prost::ProstCodec;

use super::json;
use crate::local::{AsCaller, Local};

/// What a gateway message must be: a protobuf message with etcd's JSON form.
pub(crate) trait Message:
    prost::Message + Serialize + DeserializeOwned + Default + Send + Sync + 'static
{
}

impl<M> Message for M where
    M: prost::Message + Serialize + DeserializeOwned + Default + Send + Sync + 'static
{
}

/// The gRPC call the gateway makes for a request: the token etcd's gateway
/// takes from `Authorization` (no "Bearer" prefix) goes on as etcd's
/// `token` metadata.
fn request<M>(message: M, headers: &HeaderMap) -> Request<M> {
    let mut metadata = HeaderMap::new();
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        metadata.insert(cairn_proto::contract::metadata::TOKEN, value.clone());
    }
    Request::from_parts(
        MetadataMap::from_headers(metadata),
        Default::default(),
        message,
    )
}

/// The client to make one call with, ready, and the call's request read
/// from `body`.
async fn prepare<Req: Message>(
    local: &Local,
    body: &[u8],
) -> Result<(Grpc<AsCaller>, Req), Status> {
    let message: Req = json::message(body)?;
    let mut grpc = local.grpc();
    grpc.ready().await.map_err(unreachable)?;
    Ok((grpc, message))
}

/// A unary call: one message in, one out.
pub(crate) async fn unary<Req: Message, Resp: Message>(
    local: Local,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let outcome = async {
        let (mut grpc, message) = prepare::<Req>(&local, &body).await?;
        let codec = ProstCodec::<Req, Resp>::default();
        let path = PathAndQuery::from_static(path);
        grpc.unary(request(message, &headers), path, codec).await
    };
    match outcome.await {
        Ok(answer) => json::answer(answer.get_ref()),
        Err(status) => json::failure(&status),
    }
}

/// A call whose answer is a stream (Snapshot, Observe): one message in.
pub(crate) async fn server_streaming<Req: Message, Resp: Message>(
    local: Local,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let outcome = async {
        let (mut grpc, message) = prepare::<Req>(&local, &body).await?;
        let codec = ProstCodec::<Req, Resp>::default();
        let path = PathAndQuery::from_static(path);
        grpc.server_streaming(request(message, &headers), path, codec)
            .await
    };
    match outcome.await {
        Ok(answers) => json::stream(lines(answers.into_inner())),
        Err(status) => json::failure(&status),
    }
}

/// A call streaming both ways (Watch, LeaseKeepAlive): the body's messages
/// in, as they arrive. The call stays open when the body ends, as etcd's
/// does, until the client goes away; a first message that does not parse is
/// a 400, a later one ends what is sent.
pub(crate) async fn streaming<Req: Message, Resp: Message>(
    local: Local,
    path: &'static str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut sent = Box::pin(json::messages::<Req>(body.into_data_stream()));
    let first = match sent.next().await {
        Some(Err(status)) => return json::failure(&status),
        first => first.and_then(Result::ok),
    };
    let rest = sent.take_while(|message| std::future::ready(message.is_ok()));
    let requests = futures::stream::iter(first)
        .chain(rest.filter_map(|message| std::future::ready(message.ok())))
        .chain(futures::stream::pending());
    let outcome = async {
        let mut grpc = local.grpc();
        grpc.ready().await.map_err(unreachable)?;
        grpc.streaming(
            request(requests, &headers),
            PathAndQuery::from_static(path),
            ProstCodec::<Req, Resp>::default(),
        )
        .await
    }
    .await;
    match outcome {
        Ok(answers) => json::stream(lines(answers.into_inner())),
        Err(status) => json::failure(&status),
    }
}

/// The lines of a streamed answer, the last one the error that ended it, if
/// one did.
fn lines<Resp: Message>(
    answers: impl Stream<Item = Result<Resp, Status>> + Send + 'static,
) -> impl Stream<Item = Vec<u8>> + Send + 'static {
    let mut failed = false;
    answers
        .take_while(move |item| {
            let go_on = !failed;
            failed |= item.is_err();
            std::future::ready(go_on)
        })
        .map(json::chunk)
}

fn unreachable(error: std::convert::Infallible) -> Status {
    match error {}
}
