//! Raft traffic between log nodes over tonic.
//!
//! openraft's messages travel as bincode inside `RaftMessage`: openraft owns their
//! shape, so the proto stays a thin envelope. Each peer gets one lazily connected
//! HTTP/2 channel that reconnects by itself after the peer comes back.
//!
//! Every message carries the sender's cluster token as metadata, and a node
//! refuses one with another token before raft sees it: a node of another
//! cluster that reaches this one (a leftover process on a reused address)
//! would otherwise feed raft a log it cannot reconcile.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_kit::multiplex::{Multiplex, MultiplexError};
use cairn_proto::cairn::log::v1::raft_client::RaftClient;
use cairn_proto::cairn::log::v1::raft_server;
use cairn_proto::cairn::log::v1::{RaftCall, RaftMessage, RaftReply, RaftRpc};
use cairn_proto::contract::metadata;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::error::LogError;
use crate::metrics::LOG_METRICS;
use crate::types::{NodeId, Raft, TypeConfig};

/// The largest raft message a node accepts: a full AppendEntries batch of big commands.
pub(crate) const MAX_RAFT_MESSAGE_BYTES: usize = 1024 * 1024 * 1024;

/// Command bytes one AppendEntries carries at most (at least one entry).
///
/// openraft 0.9 gives each AppendEntries one heartbeat interval to complete;
/// a payload of many large entries can never make it, and the follower would
/// never catch up. A longer batch is cut here and reported to openraft as a
/// partial success, which sends the rest next (etcd's MaxSizePerMsg).
pub(crate) const APPEND_BYTES_BUDGET: usize = 1024 * 1024;

/// The command bytes of one entry.
fn entry_bytes(entry: &openraft::Entry<TypeConfig>) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(crate::types::LogCommand::Commands(commands)) => {
            commands.iter().map(Vec::len).sum()
        }
        _ => 0,
    }
}

/// Keeps the longest prefix of `entries` within `budget` bytes (one entry at
/// least); the last kept entry's log id if any were cut.
fn keep_within(
    entries: &mut Vec<openraft::Entry<TypeConfig>>,
    budget: usize,
) -> Option<openraft::LogId<NodeId>> {
    let mut used = 0;
    let mut keep = 0;
    for entry in entries.iter() {
        used += entry_bytes(entry);
        if keep > 0 && used > budget {
            break;
        }
        keep += 1;
    }
    if keep >= entries.len() {
        return None;
    }
    entries.truncate(keep);
    entries.last().map(|entry| entry.log_id)
}

/// Refuses a raft message unless it carries this node's cluster token.
fn admit(ours: &str, metadata: &MetadataMap) -> Result<(), LogError> {
    match metadata::cluster_token(metadata) {
        Some(theirs) if theirs == ours => Ok(()),
        Some(theirs) => Err(LogError::FailedPrecondition(format!(
            "raft message refused: the sender's cluster token is `{theirs}`, this node's \
             (cluster.token) is `{ours}`; a node of another cluster has this node's address"
        ))),
        None => Err(LogError::FailedPrecondition(format!(
            "raft message refused: the sender sent no cluster token, this node's \
             (cluster.token) is `{ours}`; a node of another cluster has this node's address"
        ))),
    }
}

/// How often a refusal by one peer is logged at most: openraft tries again
/// every heartbeat.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// A peer's refusals of this node's cluster token, logged at a bounded rate.
struct Refusals {
    addr: String,
    warned: Mutex<Option<Instant>>,
}

impl Refusals {
    /// Logs `status` if the peer refused this node's token and none was
    /// logged lately; true if it was such a refusal.
    fn note(&self, status: &Status) -> bool {
        if status.code() != Code::FailedPrecondition {
            return false;
        }
        let mut warned = self.warned.lock();
        if warned.is_none_or(|at| at.elapsed() >= REFUSAL_WARNING_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(
                peer = %self.addr,
                refusal = status.message(),
                "a peer refuses this node's raft messages: it belongs to another cluster, \
                 so it counts as unreachable"
            );
        }
        true
    }
}

/// The transport to one peer, shared by every client openraft makes for it:
/// InstallSnapshot as a call of its own, AppendEntries and Vote as messages on
/// one long-lived stream.
struct Peer {
    unary: RaftClient<Channel>,
    exchange: Multiplex<RaftCall, RaftReply>,
    token: Arc<str>,
    refusals: Arc<Refusals>,
}

impl Peer {
    fn connect(addr: &str, token: Arc<str>) -> Result<Self, String> {
        let endpoint =
            cairn_kit::tls::peer_endpoint(addr, None).map_err(|error| error.to_string())?;
        let channel = endpoint
            .tcp_nodelay(true)
            .http2_keep_alive_interval(std::time::Duration::from_secs(10))
            .connect_lazy();
        let unary = RaftClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        let opener = unary.clone();
        let refusals = Arc::new(Refusals {
            addr: addr.to_owned(),
            warned: Mutex::new(None),
        });
        let (stream_token, stream_refusals) = (token.clone(), refusals.clone());
        let exchange = Multiplex::new(
            1,
            |call: &mut RaftCall, id| call.id = id,
            |reply: &RaftReply| reply.id,
            move |calls| {
                let mut client = opener.clone();
                let mut request = Request::new(calls);
                metadata::set_cluster_token(request.metadata_mut(), &stream_token);
                let refusals = stream_refusals.clone();
                async move {
                    client
                        .exchange(request)
                        .await
                        .map(Response::into_inner)
                        .inspect_err(|status| {
                            refusals.note(status);
                        })
                }
            },
        );
        Ok(Self {
            unary,
            exchange,
            token,
            refusals,
        })
    }
}

/// Makes a client per peer for openraft; clients of one peer share its transport.
#[derive(Clone)]
pub(crate) struct Network {
    peers: Arc<Mutex<HashMap<String, Arc<Peer>>>>,
    token: Arc<str>,
}

impl Network {
    /// Peers reached with the cluster `token` on every message.
    pub(crate) fn new(token: &str) -> Self {
        Self {
            peers: Arc::default(),
            token: Arc::from(token),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let peer = {
            let mut peers = self.peers.lock();
            match peers.get(&node.addr) {
                Some(peer) => Ok(peer.clone()),
                None => Peer::connect(&node.addr, self.token.clone()).map(|peer| {
                    let peer = Arc::new(peer);
                    peers.insert(node.addr.clone(), peer.clone());
                    peer
                }),
            }
        };
        PeerClient {
            target,
            addr: node.addr.clone(),
            peer,
        }
    }
}

/// One peer, as openraft's replication and election see it.
pub(crate) struct PeerClient {
    target: NodeId,
    addr: String,
    peer: Result<Arc<Peer>, String>,
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

/// A peer's failure as openraft takes it: unreachable when nothing arrived.
fn peer_error<E>(
    addr: &str,
    unreachable: bool,
    reason: &str,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>>
where
    E: Error,
{
    let failure = PeerFailure(format!("{addr}: {reason}"));
    if unreachable {
        RPCError::Unreachable(Unreachable::new(&failure))
    } else {
        RPCError::Network(NetworkError::new(&failure))
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
        let peer = match &self.peer {
            Ok(peer) => peer.clone(),
            Err(error) => {
                let failure = PeerFailure(format!("bad peer address {}: {error}", self.addr));
                return Err(RPCError::Unreachable(Unreachable::new(&failure)));
            }
        };
        let payload = bincode::serialize(request).map_err(|error| {
            RPCError::Network(NetworkError::new(&PeerFailure(error.to_string())))
        })?;
        let sent = std::time::Instant::now();
        let answer = match rpc {
            Rpc::InstallSnapshot => {
                let mut message = Request::new(RaftMessage { payload });
                message.set_timeout(option.hard_ttl());
                metadata::set_cluster_token(message.metadata_mut(), &peer.token);
                let answered = peer.unary.clone().install_snapshot(message).await;
                answered
                    .map(|answer| answer.into_inner().payload)
                    .map_err(|status| {
                        let refused = peer.refusals.note(&status);
                        let unreachable = refused || status.code() == Code::Unavailable;
                        peer_error(&self.addr, unreachable, status.message())
                    })
            }
            Rpc::AppendEntries | Rpc::Vote => {
                let kind = match rpc {
                    Rpc::Vote => RaftRpc::Vote,
                    _ => RaftRpc::AppendEntries,
                };
                let call = RaftCall {
                    id: 0,
                    rpc: kind as i32,
                    payload,
                };
                match tokio::time::timeout(option.hard_ttl(), peer.exchange.call(call)).await {
                    Err(_) => Err(peer_error(&self.addr, false, "timed out")),
                    Ok(Err(MultiplexError::Unreached(reason))) => {
                        Err(peer_error(&self.addr, true, &reason))
                    }
                    Ok(Err(MultiplexError::Lost(reason))) => {
                        Err(peer_error(&self.addr, false, &reason))
                    }
                    Ok(Ok(reply)) if reply.code != tonic::Code::Ok as i32 => {
                        let unreachable = reply.code == tonic::Code::Unavailable as i32;
                        Err(peer_error(&self.addr, unreachable, &reply.message))
                    }
                    Ok(Ok(reply)) => Ok(reply.payload),
                }
            }
        };
        LOG_METRICS
            .raft_rpc_seconds
            .with_label_values(&[rpc.name(), "sent"])
            .observe(sent.elapsed().as_secs_f64());
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&answer?).map_err(|error| {
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
        let mut rpc = rpc;
        let cut_after = keep_within(&mut rpc.entries, APPEND_BYTES_BUDGET);
        let answer = self.call(Rpc::AppendEntries, &rpc, &option).await?;
        Ok(match (answer, cut_after) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (answer, _) => answer,
        })
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

/// The receiving side: hands peers' messages of its own cluster to the local raft.
#[derive(Clone)]
pub(crate) struct RaftService {
    raft: Raft,
    token: Arc<str>,
}

impl RaftService {
    pub(crate) fn new(raft: Raft, token: &str) -> Self {
        Self {
            raft,
            token: Arc::from(token),
        }
    }

    /// Refuses `request` unless it comes from this node's cluster.
    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        admit(&self.token, request.metadata()).map_err(|refusal| {
            tracing::debug!(%refusal, "raft message from another cluster refused");
            Status::from(refusal)
        })
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

/// Replies that may wait for the peer to read them.
const REPLY_QUEUE: usize = 64;

impl RaftService {
    /// One call from the Exchange stream, answered as the unary call would be.
    async fn exchanged(&self, call: RaftCall) -> RaftReply {
        let started = std::time::Instant::now();
        let (rpc, answered) = match RaftRpc::try_from(call.rpc).unwrap_or(RaftRpc::Unspecified) {
            RaftRpc::AppendEntries => (
                Rpc::AppendEntries,
                match bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(&call.payload) {
                    Ok(request) => encode_payload(&self.raft.append_entries(request).await),
                    Err(error) => Err(malformed(&error)),
                },
            ),
            RaftRpc::Vote => (
                Rpc::Vote,
                match bincode::deserialize::<VoteRequest<NodeId>>(&call.payload) {
                    Ok(request) => encode_payload(&self.raft.vote(request).await),
                    Err(error) => Err(malformed(&error)),
                },
            ),
            RaftRpc::Unspecified => (
                Rpc::Vote,
                Err(Status::invalid_argument("unknown raft rpc on the exchange")),
            ),
        };
        LOG_METRICS
            .raft_rpc_seconds
            .with_label_values(&[rpc.name(), "handled"])
            .observe(started.elapsed().as_secs_f64());
        match answered {
            Ok(payload) => RaftReply {
                id: call.id,
                payload,
                ..Default::default()
            },
            Err(status) => RaftReply {
                id: call.id,
                payload: Vec::new(),
                code: status.code() as i32,
                message: status.message().to_owned(),
            },
        }
    }
}

fn malformed(error: &bincode::Error) -> Status {
    Status::invalid_argument(format!("malformed raft message: {error}"))
}

fn encode_payload<T: Serialize>(result: &T) -> Result<Vec<u8>, Status> {
    bincode::serialize(result)
        .map_err(|error| Status::internal(format!("cannot encode raft message: {error}")))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    type ExchangeStream = ReceiverStream<Result<RaftReply, Status>>;

    async fn exchange(
        &self,
        request: Request<Streaming<RaftCall>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        self.admit(&request)?;
        let (replies, out) = mpsc::channel(REPLY_QUEUE);
        let service = self.clone();
        let mut calls = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(call)) = calls.message().await {
                let service = service.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let reply = service.exchanged(call).await;
                    let _ = replies.send(Ok(reply)).await;
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.admit(&request)?;
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
        self.admit(&request)?;
        let rpc: VoteRequest<NodeId> = decode(request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.admit(&request)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogCommand;

    fn entry(index: u64, bytes: usize) -> openraft::Entry<TypeConfig> {
        openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(LogCommand::Commands(vec![vec![0; bytes]])),
        }
    }

    #[test]
    fn a_long_batch_is_cut_to_the_budget_but_never_to_nothing() {
        let mut entries: Vec<_> = (1..=5).map(|index| entry(index, 400)).collect();
        let last = keep_within(&mut entries, 1000);
        assert_eq!(entries.len(), 2);
        assert_eq!(last.map(|id| id.index), Some(2));

        let mut one_big = vec![entry(1, 5000), entry(2, 10)];
        assert_eq!(keep_within(&mut one_big, 1000).map(|id| id.index), Some(1));
        assert_eq!(one_big.len(), 1);

        let mut fits = vec![entry(1, 10), entry(2, 10)];
        assert_eq!(keep_within(&mut fits, 1000), None);
        assert_eq!(fits.len(), 2);
    }

    #[test]
    fn a_message_from_another_cluster_is_refused_naming_both_tokens() {
        let mut same = MetadataMap::new();
        metadata::set_cluster_token(&mut same, "cluster-a");
        assert!(admit("cluster-a", &same).is_ok());

        let mut other = MetadataMap::new();
        metadata::set_cluster_token(&mut other, "cluster-b");
        let status = Status::from(admit("cluster-a", &other).expect_err("another token"));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("`cluster-b`") && status.message().contains("`cluster-a`"),
            "{}",
            status.message()
        );

        let status = Status::from(admit("cluster-a", &MetadataMap::new()).expect_err("no token"));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("no cluster token"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_refusal_counts_as_one_and_another_failure_does_not() {
        let refusals = Refusals {
            addr: "127.0.0.1:1".into(),
            warned: Mutex::new(None),
        };
        assert!(refusals.note(&Status::failed_precondition("other cluster")));
        let first = *refusals.warned.lock();
        assert!(refusals.note(&Status::failed_precondition("other cluster")));
        assert_eq!(*refusals.warned.lock(), first, "warned again at once");
        assert!(!refusals.note(&Status::unavailable("down")));
    }
}
