//! etcd's Watch service: each client stream gets its own task.

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{WatchRequest, WatchResponse};
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::stream::{Shared, WatchStream};

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// The Watch service of one gateway.
pub(crate) struct WatchApi {
    shared: Arc<Shared>,
    queue: usize,
}

impl WatchApi {
    pub(crate) fn new(shared: Arc<Shared>, queue: usize) -> Self {
        Self { shared, queue }
    }
}

#[tonic::async_trait]
impl Watch for WatchApi {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (out, answers) = tokio::sync::mpsc::channel(self.queue);
        let stream = WatchStream::new(self.shared.clone(), out);
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(answers))))
    }
}
