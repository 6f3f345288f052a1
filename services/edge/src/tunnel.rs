//! KV calls to one replica as messages on a few long-lived streams
//! (`Mvcc/Calls`) instead of an HTTP/2 stream per call: a call costs the edge
//! and the replica a message each way, and its answer comes back, matched by
//! id, whenever it is ready.

use cairn_kit::multiplex::Multiplex;
use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::mvcc::v1::mvcc_client::MvccClient;
use cairn_proto::cairn::mvcc::v1::{KvAnswer, KvCall};
use tonic::transport::Channel;

/// Streams per replica: one large answer being written holds up only the
/// calls behind it on its own lane.
const LANES: usize = 4;

/// The streams to one replica.
pub(crate) type Tunnel = Multiplex<KvCall, KvAnswer>;

/// The streams to the replica at the other end of `channel`, opened on first use.
pub(crate) fn tunnel(channel: Channel) -> Tunnel {
    Multiplex::new(
        LANES,
        |call, id| call.id = id,
        |answer| answer.id,
        move |calls| {
            let mut client = MvccClient::with_interceptor(channel.clone(), TraceInterceptor)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            async move { client.calls(calls).await.map(tonic::Response::into_inner) }
        },
    )
}
