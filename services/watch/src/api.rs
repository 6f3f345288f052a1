//! etcd's Watch service: each client stream gets its own task.

use std::sync::Arc;

use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::WatchRequest;
use tonic::{Request, Response, Status, Streaming};

use crate::outbox::{Outbox, ResponseStream};
use crate::stream::{Shared, WatchStream};

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
        let (outbox, answers) = Outbox::new(self.queue);
        let stream = WatchStream::new(self.shared.clone(), outbox);
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(answers))
    }
}
