//! etcd's Watch service, each client stream in a task of its own.
//!
//! Served by hand rather than through the generated `WatchServer`, because
//! what goes out is responses already encoded (see `encoded`): the codec
//! writes their bytes as they are, where the generated server would want a
//! `WatchResponse` to encode once per watcher.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cairn_proto::cairn::mvcc::v1::Caller;
use cairn_proto::etcdserverpb::watch_server::SERVICE_NAME;
use cairn_proto::etcdserverpb::WatchRequest;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstDecoder;

use crate::encoded::EncodedResponse;
use crate::outbox::{Outbox, ResponseStream};
use crate::stream::{Shared, WatchStream};

/// The one method's path.
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// The Watch service of one gateway.
#[derive(Clone)]
pub(crate) struct WatchApi {
    shared: Arc<Shared>,
    queue: usize,
}

impl WatchApi {
    pub(crate) fn new(shared: Arc<Shared>, queue: usize) -> Self {
        Self { shared, queue }
    }

    /// Starts a client stream's task; its responses are the answer.
    fn open(&self, requests: Streaming<WatchRequest>, caller: Caller) -> ResponseStream {
        let (outbox, answers) = Outbox::new(self.queue);
        let stream = WatchStream::new(self.shared.clone(), outbox, caller);
        tokio::spawn(stream.run(requests));
        answers
    }
}

impl NamedService for WatchApi {
    const NAME: &'static str = SERVICE_NAME;
}

type Answer = http::Response<Body>;

impl tower::Service<http::Request<Body>> for WatchApi {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != WATCH_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let api = self.clone();
        Box::pin(async move {
            let method = tower::service_fn(move |call: Request<Streaming<WatchRequest>>| {
                let caller = cairn_proto::contract::metadata::caller(call.metadata());
                let answers = api.open(call.into_inner(), caller);
                async move { Ok::<_, Status>(Response::new(answers)) }
            });
            let mut grpc = Grpc::new(WatchCodec).max_encoding_message_size(usize::MAX);
            Ok(grpc.streaming(method, request).await)
        })
    }
}

/// Requests decoded by prost, as the generated server does; responses
/// written as the bytes they already are.
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = EncodedResponse;
    type Decode = WatchRequest;
    type Encoder = WriteEncoded;
    type Decoder = ProstDecoder<WatchRequest>;

    fn encoder(&mut self) -> WriteEncoded {
        WriteEncoded
    }

    fn decoder(&mut self) -> ProstDecoder<WatchRequest> {
        ProstDecoder::default()
    }
}

/// Copies an encoded response into the frame.
struct WriteEncoded;

impl Encoder for WriteEncoded {
    type Item = EncodedResponse;
    type Error = Status;

    fn encode(&mut self, item: EncodedResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        item.write(dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
