//! Calls into this edge's own services, in process. Lock, Election and the
//! HTTP gateway reach KV, Watch and Lease the way a client would, so each of
//! their calls takes the same routes, limits and backends as a client's gRPC
//! call, without a socket in between.

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use tonic::service::Routes;

/// The edge's services as a client sees them.
#[derive(Clone)]
pub(crate) struct Local {
    routes: Routes,
}

impl Local {
    pub(crate) fn new(routes: Routes) -> Self {
        Self { routes }
    }

    /// A gRPC client of any method the routes serve, for callers that pick
    /// the method at run time (the HTTP gateway).
    pub(crate) fn grpc(&self) -> tonic::client::Grpc<Routes> {
        tonic::client::Grpc::new(self.routes.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    pub(crate) fn kv(&self) -> KvClient<Routes> {
        KvClient::new(self.routes.clone()).max_decoding_message_size(usize::MAX)
    }

    pub(crate) fn watch(&self) -> WatchClient<Routes> {
        WatchClient::new(self.routes.clone()).max_decoding_message_size(usize::MAX)
    }

    pub(crate) fn lease(&self) -> LeaseClient<Routes> {
        LeaseClient::new(self.routes.clone())
    }
}
