//! Raft traffic between log nodes over tonic.
//!
//! openraft's messages travel as bincode inside `RaftMessage`: openraft owns their
//! shape, so the proto stays a thin envelope. Each peer gets one lazily connected
//! HTTP/2 channel that reconnects by itself after the peer comes back.

use std::error::Error;
use std::fmt;

use cairn_proto::cairn::log::v1::raft_client::RaftClient;
use cairn_proto::cairn::log::v1::raft_server;
use cairn_proto::cairn::log::v1::RaftMessage;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::metrics::LOG_METRICS;
use crate::types::{NodeId, Raft, TypeConfig};

/// The largest raft message a node accepts: a full AppendEntries batch of big commands.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 1024 * 1024 * 1024;

/// Makes a client per peer for openraft.
#[derive(Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let client = Endpoint::from_shared(format!("http://{}", node.addr))
            .map(|endpoint| {
                let channel = endpoint
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(std::time::Duration::from_secs(10))
                    .connect_lazy();
                RaftClient::new(channel)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            })
            .map_err(|error| error.to_string());
        PeerClient {
            target,
            addr: node.addr.clone(),
            client,
        }
    }
}

/// One peer, as openraft's replication and election see it.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<Channel>, String>,
}

/// Why a call to a peer failed before the peer answered.
#[derive(Debug)]
struct PeerFailure(String);

impl fmt::Display for PeerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for PeerFailure {}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::AppendEntries => "append_entries",
            Rpc::Vote => "vote",
            Rpc::InstallSnapshot => "install_snapshot",
        }
    }
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(client) => client,
            Err(error) => {
                let failure = PeerFailure(format!("bad peer address {}: {error}", self.addr));
                return Err(RPCError::Unreachable(Unreachable::new(&failure)));
            }
        };
        let payload = bincode::serialize(request).map_err(|error| {
            RPCError::Network(NetworkError::new(&PeerFailure(error.to_string())))
        })?;
        let mut message = Request::new(RaftMessage { payload });
        message.set_timeout(option.hard_ttl());
        let sent = std::time::Instant::now();
        let answer = match rpc {
            Rpc::AppendEntries => client.append_entries(message).await,
            Rpc::Vote => client.vote(message).await,
            Rpc::InstallSnapshot => client.install_snapshot(message).await,
        };
        LOG_METRICS
            .raft_rpc_seconds
            .with_label_values(&[rpc.name(), "sent"])
            .observe(sent.elapsed().as_secs_f64());
        let answer = answer.map_err(|status| {
            let failure = PeerFailure(format!("{}: {}", self.addr, status.message()));
            match status.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&failure)),
                _ => RPCError::Network(NetworkError::new(&failure)),
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&answer.into_inner().payload).map_err(|error| {
                RPCError::Network(NetworkError::new(&PeerFailure(error.to_string())))
            })?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

/// The receiving side: hands peers' messages to the local raft.
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    pub fn new(raft: Raft) -> Self {
        Self { raft }
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftMessage>) -> Result<T, Status> {
    bincode::deserialize(&request.into_inner().payload)
        .map_err(|error| Status::invalid_argument(format!("malformed raft message: {error}")))
}

fn encode<T: Serialize>(result: &T) -> Result<Response<RaftMessage>, Status> {
    let payload = bincode::serialize(result)
        .map_err(|error| Status::internal(format!("cannot encode raft message: {error}")))?;
    Ok(Response::new(RaftMessage { payload }))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let started = std::time::Instant::now();
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request)?;
        let answer = encode(&self.raft.append_entries(rpc).await);
        LOG_METRICS
            .raft_rpc_seconds
            .with_label_values(&[Rpc::AppendEntries.name(), "handled"])
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}
