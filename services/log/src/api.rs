//! The Log service: what other cairn services call.
//!
//! Writes go to the leader. A node that is not the leader forwards the request
//! once, to the leader it knows; a forwarded request is never forwarded again, so
//! a stale view cannot make requests bounce. Every request is bounded by the
//! request timeout and fails with UNAVAILABLE rather than hang.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use cairn_kit::shutdown::ShutdownWatch;
use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::log::v1 as pb;
use cairn_proto::cairn::log::v1::log_client::LogClient;
use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError,
};
use openraft::{BasicNode, ChangeMembers, EntryPayload, ServerState};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout_at;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use self::handover::Holds;
use crate::batch::{self, Answer, BatchLimits, Pending, Placed, ReadPoint, ReadWaiter, Routed};
use crate::error::LogError;
use crate::metrics::LOG_METRICS;
use crate::store::{Bookkeeping, LogStore};
use crate::types::{Entry, LogCommand, NodeId, Raft};

mod handover;

/// Metadata key counting the times a request was forwarded between nodes.
const FORWARDED: &str = "cairn-forwarded";
/// The most times a request is forwarded. More than once happens when the
/// leadership moves while a request is on its way (the node it was forwarded
/// to names the new leader); the bound keeps nodes with stale views from
/// passing a request around.
const MAX_FORWARDS: u32 = 3;
/// Entries per Subscribe message.
const SUBSCRIBE_BATCH: usize = 512;
/// Proposals that may wait to be packed before callers are slowed down.
const PROPOSAL_QUEUE: usize = 8192;
/// The most commands packed into one entry.
const MAX_BATCH_COMMANDS: usize = 4096;
/// The longest consumer name accepted.
const MAX_CONSUMER_NAME: usize = 256;
/// How long a refused attempt waits for a change of raft state before trying again.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

type Forwarder = LogClient<InterceptedService<Channel, TraceInterceptor>>;

/// The Log service of one node.
#[derive(Clone)]
pub struct LogApi {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    store: LogStore,
    bookkeeping: Arc<RwLock<Bookkeeping>>,
    advertise: String,
    request_timeout: std::time::Duration,
    max_command_bytes: usize,
    shutdown: ShutdownWatch,
    peers: Mutex<HashMap<String, Forwarder>>,
    /// Proposals on their way to being packed into an entry.
    proposals: mpsc::Sender<Pending>,
    /// Read-index requests waiting for the next leadership check.
    reads: mpsc::Sender<ReadWaiter>,
    /// What this node holds back while leadership is handed over.
    holds: Arc<Holds>,
}

/// The part of an openraft error that says "ask the leader".
trait LeaderHint {
    fn forward_to_leader(&self) -> Option<&ForwardToLeader<NodeId, BasicNode>>;
}

impl LeaderHint for ClientWriteError<NodeId, BasicNode> {
    fn forward_to_leader(&self) -> Option<&ForwardToLeader<NodeId, BasicNode>> {
        match self {
            ClientWriteError::ForwardToLeader(forward) => Some(forward),
            ClientWriteError::ChangeMembershipError(_) => None,
        }
    }
}

impl LeaderHint for CheckIsLeaderError<NodeId, BasicNode> {
    fn forward_to_leader(&self) -> Option<&ForwardToLeader<NodeId, BasicNode>> {
        match self {
            CheckIsLeaderError::ForwardToLeader(forward) => Some(forward),
            CheckIsLeaderError::QuorumNotEnough(_) => None,
        }
    }
}

/// What to do with an error that names no other leader.
enum Refusal {
    /// Answer the caller with this error now.
    Final(LogError),
    /// Try again until the deadline; then fail saying this.
    Transient(&'static str),
}

/// A leadership check that missed its quorum is tried again: on a busy machine a
/// heartbeat answered late fails one check, and a fresh check may pass.
fn no_quorum(_: &CheckIsLeaderError<NodeId, BasicNode>) -> Refusal {
    Refusal::Transient("the leader could not confirm a quorum within the request timeout")
}

/// A membership change refused for good, or retried while another is still in
/// progress (openraft commits a change as two entries; the next waits for both).
fn membership_refusal(error: &ClientWriteError<NodeId, BasicNode>) -> Refusal {
    match error {
        ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_)) => {
            Refusal::Transient(
                "another membership change stayed in progress for the whole request timeout",
            )
        }
        ClientWriteError::ChangeMembershipError(error) => Refusal::Final(
            LogError::FailedPrecondition(format!("membership change refused: {error}")),
        ),
        ClientWriteError::ForwardToLeader(_) => {
            Refusal::Final(LogError::Unavailable(error.to_string()))
        }
    }
}

fn shutting_down() -> Status {
    LogError::Unavailable("this log node is shutting down".into()).into()
}

fn write_refusal(error: &ClientWriteError<NodeId, BasicNode>) -> Refusal {
    Refusal::Final(LogError::Unavailable(error.to_string()))
}

impl LogApi {
    pub fn new(
        raft: Raft,
        store: LogStore,
        bookkeeping: Arc<RwLock<Bookkeeping>>,
        advertise: String,
        settings: &crate::settings::RaftSettings,
        shutdown: ShutdownWatch,
    ) -> Self {
        let (proposals, queued) = mpsc::channel(PROPOSAL_QUEUE);
        let (reads, queued_reads) = mpsc::channel(PROPOSAL_QUEUE);
        let api = Self {
            inner: Arc::new(Inner {
                raft,
                store,
                bookkeeping,
                advertise,
                request_timeout: settings.request_timeout(),
                max_command_bytes: settings.max_command_bytes,
                shutdown: shutdown.clone(),
                peers: Mutex::new(HashMap::new()),
                proposals,
                reads,
                holds: Arc::new(Holds::new()),
            }),
        };
        let limits = BatchLimits {
            max_bytes: settings.max_command_bytes,
            max_commands: MAX_BATCH_COMMANDS,
            in_flight: settings.max_batches_in_flight,
        };
        let packer = api.clone();
        batch::spawn(queued, limits, shutdown.clone(), move |batch| {
            let api = packer.clone();
            async move { api.commit_batch(batch).await }
        });
        // One leadership check at a time: a read that arrives during a check
        // must wait for the next, which begins after it arrived.
        let read_limits = BatchLimits {
            max_bytes: usize::MAX,
            max_commands: usize::MAX,
            in_flight: 1,
        };
        let checker = api.clone();
        batch::spawn(queued_reads, read_limits, shutdown, move |waiters| {
            let api = checker.clone();
            async move { api.confirm_reads(waiters).await }
        });
        api
    }

    /// One leadership check for every waiting reader.
    async fn confirm_reads(&self, waiters: Vec<ReadWaiter>) {
        let Some(deadline) = waiters.iter().map(|waiter| waiter.deadline).min() else {
            return;
        };
        let outcome = self
            .on_leader(
                deadline,
                || self.inner.raft.ensure_linearizable(),
                no_quorum,
            )
            .await
            .map(|routed| match routed {
                Routed::Here(read_log_id) => Routed::Here(ReadPoint {
                    index: read_log_id.map_or(0, |id| id.index),
                    term: read_log_id.map_or(0, |id| id.leader_id.term),
                }),
                Routed::There(leader) => Routed::There(leader),
            })
            .map_err(Status::from);
        LOG_METRICS.read_batch.observe(waiters.len() as f64);
        for waiter in waiters {
            let _ = waiter.reply.send(outcome.clone());
        }
    }

    /// Commits one packed entry and answers each of its proposals.
    async fn commit_batch(&self, batch: Vec<Pending>) {
        let Some(deadline) = batch.iter().map(|pending| pending.deadline).min() else {
            return;
        };
        let mut commands = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for pending in batch {
            replies.push((commands.len(), pending.reply));
            commands.extend(pending.commands);
        }
        LOG_METRICS.batch_commands.observe(commands.len() as f64);
        let entry = LogCommand::Commands(commands);
        self.inner.holds.writes_open(deadline).await;
        let outcome = self
            .on_leader(
                deadline,
                || self.inner.raft.client_write(entry.clone()),
                write_refusal,
            )
            .await
            .map_err(Status::from);
        for (offset, reply) in replies {
            let answer: Answer = match &outcome {
                Ok(Routed::Here(response)) => Ok(Routed::Here(Placed {
                    index: response.log_id.index,
                    term: response.log_id.leader_id.term,
                    offset: u32::try_from(offset).unwrap_or(u32::MAX),
                })),
                Ok(Routed::There(leader)) => Ok(Routed::There(leader.clone())),
                Err(status) => Err(status.clone()),
            };
            let _ = reply.send(answer);
        }
    }

    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.inner.request_timeout
    }

    /// Runs `attempt` on this node until it succeeds, names another leader, or
    /// the deadline passes. Without a known leader it waits for an election;
    /// an error `refused` calls transient is retried the same way.
    async fn on_leader<T, E, F, Fut>(
        &self,
        deadline: tokio::time::Instant,
        attempt: F,
        refused: impl Fn(&E) -> Refusal,
    ) -> Result<Routed<T>, LogError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RaftError<NodeId, E>>>,
        E: LeaderHint + std::error::Error,
    {
        let mut metrics = self.inner.raft.metrics();
        loop {
            let outcome = timeout_at(deadline, attempt()).await.map_err(|_| {
                LogError::Unavailable("request timed out waiting for the log to commit".into())
            })?;
            let error = match outcome {
                Ok(value) => return Ok(Routed::Here(value)),
                Err(RaftError::Fatal(fatal)) => {
                    return Err(LogError::Unavailable(format!(
                        "this log node has stopped: {fatal}"
                    )))
                }
                Err(RaftError::APIError(error)) => error,
            };
            let waiting_for = match error.forward_to_leader() {
                Some(ForwardToLeader {
                    leader_node: Some(node),
                    ..
                }) if node.addr != self.inner.advertise => {
                    return Ok(Routed::There(node.addr.clone()))
                }
                // No leader known yet, or this node is becoming leader.
                Some(_) => "no leader was elected within the request timeout",
                None => match refused(&error) {
                    Refusal::Final(refusal) => return Err(refusal),
                    Refusal::Transient(waiting_for) => waiting_for,
                },
            };
            // Try again at the next change of raft state, or after a pause: a
            // leadership check that missed its quorum (a heartbeat answered
            // late on a busy machine) changes no state, and a fresh check may pass.
            let changed = tokio::select! {
                changed = metrics.changed() => Some(changed),
                () = tokio::time::sleep(RETRY_PAUSE) => None,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(LogError::Unavailable(waiting_for.into()));
            }
            if let Some(changed) = changed {
                changed
                    .map_err(|_| LogError::Unavailable("this log node is shutting down".into()))?;
            }
        }
    }

    /// A client of the log node at `addr`, kept for the next call: the leader
    /// requests are forwarded to, or a voter in a leadership hand-over.
    fn peer_client(&self, addr: &str) -> Result<Forwarder, LogError> {
        let mut peers = self.inner.peers.lock();
        if let Some(client) = peers.get(addr) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|error| {
            LogError::Unavailable(format!("leader address {addr} is not usable: {error}"))
        })?;
        let channel = endpoint.tcp_nodelay(true).connect_lazy();
        let client = LogClient::with_interceptor(channel, TraceInterceptor)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        peers.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    /// Sends `request` on to the leader at `leader`, marked as forwarded and with
    /// what is left of the deadline, unless it was forwarded too often already.
    async fn forward<Req, Resp, Fut>(
        &self,
        request: Request<Req>,
        leader: &str,
        deadline: tokio::time::Instant,
        call: impl FnOnce(Forwarder, Request<Req>) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwards: u32 = request
            .metadata()
            .get(FORWARDED)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        if forwards >= MAX_FORWARDS {
            return Err(LogError::Unavailable(format!(
                "not the leader; the leader is at {leader} (the request was forwarded {forwards} times already)"
            ))
            .into());
        }
        let client = self.peer_client(leader)?;
        let mut onward = Request::new(request.into_inner());
        onward.metadata_mut().insert(
            FORWARDED,
            tonic::metadata::MetadataValue::from(forwards + 1),
        );
        onward.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
        cairn_kit::telemetry::inject_context(onward.metadata_mut());
        let mut response = call(client, onward).await?;
        // Saves the caller this hop next time.
        if let Ok(leader) = tonic::metadata::MetadataValue::try_from(leader) {
            response
                .metadata_mut()
                .insert(cairn_proto::cairn::log::LEADER_METADATA, leader);
        }
        Ok(response)
    }

    /// Answers from this node when it carried the request out, or forwards the
    /// request to the leader `routed` names.
    async fn answer<Req, Resp, T, Fut>(
        &self,
        routed: Routed<T>,
        here: impl FnOnce(T) -> Resp,
        request: Request<Req>,
        deadline: tokio::time::Instant,
        there: impl FnOnce(Forwarder, Request<Req>) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        match routed {
            Routed::Here(value) => Ok(Response::new(here(value))),
            Routed::There(leader) => self.forward(request, &leader, deadline, there).await,
        }
    }

    /// Propose and ProposeBatch alike: places `commands` here, or forwards
    /// `request` to the leader with `forward`, and counts the outcome.
    async fn proposal<Req, Fut>(
        &self,
        request: Request<Req>,
        commands: Vec<Vec<u8>>,
        forward: impl FnOnce(Forwarder, Request<Req>) -> Fut,
    ) -> Result<Response<pb::ProposeResponse>, Status>
    where
        Fut: Future<Output = Result<Response<pb::ProposeResponse>, Status>>,
    {
        let started = Instant::now();
        let deadline = self.deadline();
        let answer = async {
            let routed = self.place(commands, deadline).await?;
            self.answer(routed, proposed, request, deadline, forward)
                .await
        }
        .await;
        count_proposal(&answer, started);
        answer
    }

    /// Queues a proposal for packing and waits for where it landed.
    async fn place(&self, commands: Vec<Vec<u8>>, deadline: tokio::time::Instant) -> Answer {
        self.check_commands(&commands)?;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            commands,
            deadline,
            reply,
        };
        // The wait for a quorum to make the proposal durable, as its own span
        // under the Propose call; on a follower it only learns where the
        // leader is.
        let span = tracing::info_span!(
            "raft commit",
            otel.kind = "internal",
            raft.log.index = tracing::field::Empty,
            cairn.placed = tracing::field::Empty,
        );
        let placed = async {
            self.inner
                .proposals
                .send(pending)
                .await
                .map_err(|_| shutting_down())?;
            answer.await.map_err(|_| shutting_down())?
        }
        .instrument(span.clone())
        .await;
        match &placed {
            Ok(Routed::Here(placed)) => {
                span.record("raft.log.index", placed.index);
                span.record("cairn.placed", "here");
            }
            Ok(Routed::There(_)) => {
                span.record("cairn.placed", "forwarded to the leader");
            }
            Err(_) => {}
        }
        placed
    }

    fn check_commands(&self, commands: &[Vec<u8>]) -> Result<(), LogError> {
        if commands.is_empty() {
            return Err(LogError::InvalidArgument("no command to propose".into()));
        }
        for command in commands {
            self.check_command(command)?;
        }
        let total: usize = commands.iter().map(Vec::len).sum();
        if total > self.inner.max_command_bytes {
            return Err(LogError::InvalidArgument(format!(
                "commands of {total} bytes together exceed the limit of {} bytes",
                self.inner.max_command_bytes
            )));
        }
        Ok(())
    }

    fn check_command(&self, command: &[u8]) -> Result<(), LogError> {
        if command.is_empty() {
            return Err(LogError::InvalidArgument("command is empty".into()));
        }
        if command.len() > self.inner.max_command_bytes {
            return Err(LogError::InvalidArgument(format!(
                "command of {} bytes exceeds the limit of {} bytes",
                command.len(),
                self.inner.max_command_bytes
            )));
        }
        Ok(())
    }

    fn check_consumer(consumer: &str) -> Result<(), LogError> {
        if consumer.is_empty() || consumer.len() > MAX_CONSUMER_NAME {
            return Err(LogError::InvalidArgument(format!(
                "consumer name must be 1 to {MAX_CONSUMER_NAME} bytes"
            )));
        }
        Ok(())
    }

    /// Commits one of the log's own bookkeeping commands and returns its index.
    async fn commit_bookkeeping(
        &self,
        command: LogCommand,
        deadline: tokio::time::Instant,
    ) -> Result<Routed<u64>, LogError> {
        self.inner.holds.writes_open(deadline).await;
        self.on_leader(
            deadline,
            || self.inner.raft.client_write(command.clone()),
            write_refusal,
        )
        .await
        .map(|routed| match routed {
            Routed::Here(response) => Routed::Here(response.log_id.index),
            Routed::There(addr) => Routed::There(addr),
        })
    }

    fn members(&self) -> Vec<pb::Member> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| pb::Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    async fn change_membership(
        &self,
        changes: ChangeMembers<NodeId, BasicNode>,
        deadline: tokio::time::Instant,
    ) -> Result<Routed<u64>, LogError> {
        self.inner.holds.writes_open(deadline).await;
        self.on_leader(
            deadline,
            || self.inner.raft.change_membership(changes.clone(), false),
            membership_refusal,
        )
        .await
        .map(|routed| match routed {
            Routed::Here(response) => Routed::Here(response.log_id.index),
            Routed::There(addr) => Routed::There(addr),
        })
    }

    fn membership(&self, index: u64) -> pb::MembershipResponse {
        pb::MembershipResponse {
            index,
            members: self.members(),
        }
    }
}

fn to_wire(entry: Entry) -> pb::Entry {
    let (kind, commands) = match entry.payload {
        EntryPayload::Blank => (pb::EntryKind::Blank, Vec::new()),
        EntryPayload::Membership(_) => (pb::EntryKind::Membership, Vec::new()),
        EntryPayload::Normal(LogCommand::Commands(commands)) => (pb::EntryKind::Command, commands),
        EntryPayload::Normal(
            LogCommand::ConsumerAck { .. } | LogCommand::ConsumerRemove { .. },
        ) => (pb::EntryKind::Consumer, Vec::new()),
    };
    pb::Entry {
        index: entry.log_id.index,
        term: entry.log_id.leader_id.term,
        kind: kind as i32,
        commands,
    }
}

fn proposed(placed: Placed) -> pb::ProposeResponse {
    pb::ProposeResponse {
        index: placed.index,
        term: placed.term,
        offset: placed.offset,
    }
}

fn count_proposal(answer: &Result<Response<pb::ProposeResponse>, Status>, started: Instant) {
    let outcome = match answer {
        Ok(_) => "ok",
        Err(status) if status.code() == tonic::Code::InvalidArgument => "invalid",
        Err(_) => "unavailable",
    };
    LOG_METRICS.proposals.with_label_values(&[outcome]).inc();
    LOG_METRICS
        .propose_seconds
        .observe(started.elapsed().as_secs_f64());
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

#[tonic::async_trait]
impl pb::log_server::Log for LogApi {
    async fn propose(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let commands = vec![request.get_ref().command.clone()];
        self.proposal(request, commands, |mut leader, request| async move {
            leader.propose(request).await
        })
        .await
    }

    async fn propose_batch(
        &self,
        request: Request<pb::ProposeBatchRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let commands = request.get_ref().commands.clone();
        self.proposal(request, commands, |mut leader, request| async move {
            leader.propose_batch(request).await
        })
        .await
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let deadline = self.deadline();
        let (reply, answer) = oneshot::channel();
        self.inner
            .reads
            .send(ReadWaiter { deadline, reply })
            .await
            .map_err(|_| shutting_down())?;
        let routed = answer.await.map_err(|_| shutting_down())??;
        let here = |point: ReadPoint| pb::ReadIndexResponse {
            index: point.index,
            term: point.term,
        };
        self.answer(
            routed,
            here,
            request,
            deadline,
            |mut leader, request| async move { leader.read_index(request).await },
        )
        .await
    }

    type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let first = self.inner.store.first_index()?;
        let requested = request.get_ref().from_index;
        let from = if requested == 0 { first } else { requested };
        if from < first {
            return Err(LogError::Truncated {
                requested: from,
                first,
            }
            .into());
        }
        let (sender, receiver) = mpsc::channel(8);
        let api = self.clone();
        tokio::spawn(async move { api.feed(from, sender).await });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let deadline = self.deadline();
        Self::check_consumer(&request.get_ref().consumer)?;
        let command = LogCommand::ConsumerAck {
            consumer: request.get_ref().consumer.clone(),
            applied_index: request.get_ref().applied_index,
        };
        let routed = self.commit_bookkeeping(command, deadline).await?;
        let here = |index| pb::AckResponse { index };
        self.answer(
            routed,
            here,
            request,
            deadline,
            |mut leader, request| async move { leader.ack(request).await },
        )
        .await
    }

    async fn unregister(
        &self,
        request: Request<pb::UnregisterRequest>,
    ) -> Result<Response<pb::UnregisterResponse>, Status> {
        let deadline = self.deadline();
        Self::check_consumer(&request.get_ref().consumer)?;
        let command = LogCommand::ConsumerRemove {
            consumer: request.get_ref().consumer.clone(),
        };
        let routed = self.commit_bookkeeping(command, deadline).await?;
        let here = |index| pb::UnregisterResponse { index };
        self.answer(
            routed,
            here,
            request,
            deadline,
            |mut leader, request| async move { leader.unregister(request).await },
        )
        .await
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        let consumers = self
            .inner
            .bookkeeping
            .read()
            .consumers
            .iter()
            .map(|(name, applied_index)| pb::Consumer {
                name: name.clone(),
                applied_index: *applied_index,
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            id: metrics.id,
            leader: metrics.current_leader.unwrap_or(0),
            term: metrics.current_term,
            first_index: self.inner.store.first_index()?,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            commit_index: self.inner.store.committed_index().unwrap_or(0).max(applied),
            applied_index: applied,
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index),
            members: self.members(),
            consumers,
            role: role(metrics.state).to_owned(),
        }))
    }

    async fn campaign(
        &self,
        _request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let voter = {
            let metrics = self.inner.raft.metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == metrics.id)
        };
        if !voter {
            return Err(
                LogError::FailedPrecondition("only a voter can stand for election".into()).into(),
            );
        }
        self.inner.raft.trigger().elect().await.map_err(|fatal| {
            LogError::Unavailable(format!("this log node has stopped: {fatal}"))
        })?;
        let term = self.inner.raft.metrics().borrow().current_term;
        Ok(Response::new(pb::CampaignResponse { term }))
    }

    async fn hold_elections(
        &self,
        request: Request<pb::HoldElectionsRequest>,
    ) -> Result<Response<pb::HoldElectionsResponse>, Status> {
        let hold = std::time::Duration::from_millis(request.into_inner().millis);
        self.inner.holds.hold_elections(&self.inner.raft, hold);
        Ok(Response::new(pb::HoldElectionsResponse {}))
    }

    async fn transfer_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        let deadline = self.deadline();
        let target_id = request.get_ref().target_id;
        let members = self.members();
        let Some(target) = members
            .iter()
            .find(|member| member.id == target_id && member.voter)
        else {
            return Err(LogError::FailedPrecondition(format!(
                "{target_id} is not a voter of this log"
            ))
            .into());
        };
        let (me, leader) = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.id, metrics.current_leader)
        };
        match leader {
            Some(leader) if leader == target_id => {}
            Some(leader) if leader == me => self.hand_over(target, deadline).await?,
            Some(leader) => {
                let Some(addr) = members.iter().find(|member| member.id == leader) else {
                    return Err(LogError::Unavailable(format!(
                        "the leader {leader} is not a member this node knows"
                    ))
                    .into());
                };
                let addr = addr.addr.clone();
                return self
                    .forward(request, &addr, deadline, |mut leader, request| async move {
                        leader.transfer_leadership(request).await
                    })
                    .await;
            }
            None => {
                return Err(
                    LogError::Unavailable("no leader is known to hand over from".into()).into(),
                )
            }
        }
        Ok(Response::new(pb::TransferLeadershipResponse {
            leader: target_id,
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let deadline = self.deadline();
        let pb::AddLearnerRequest { id, addr } = request.get_ref().clone();
        if id == 0 {
            return Err(LogError::InvalidArgument("member id must not be 0".into()).into());
        }
        if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
            return Err(LogError::InvalidArgument(format!(
                "member address `{addr}` is not host:port"
            ))
            .into());
        }
        let changes = ChangeMembers::AddNodes(BTreeMap::from([(id, BasicNode::new(addr))]));
        let routed = self.change_membership(changes, deadline).await?;
        let here = |index| self.membership(index);
        self.answer(
            routed,
            here,
            request,
            deadline,
            |mut leader, request| async move { leader.add_learner(request).await },
        )
        .await
    }

    async fn promote_voter(
        &self,
        request: Request<pb::PromoteVoterRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let deadline = self.deadline();
        let changes = ChangeMembers::AddVoterIds(BTreeSet::from([request.get_ref().id]));
        let routed = self.change_membership(changes, deadline).await?;
        let here = |index| self.membership(index);
        self.answer(
            routed,
            here,
            request,
            deadline,
            |mut leader, request| async move { leader.promote_voter(request).await },
        )
        .await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let deadline = self.deadline();
        let id = request.get_ref().id;
        let is_voter = self
            .members()
            .iter()
            .any(|member| member.id == id && member.voter);
        let changes = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let routed = self.change_membership(changes, deadline).await?;
        let here = |index| self.membership(index);
        self.answer(
            routed,
            here,
            request,
            deadline,
            |mut leader, request| async move { leader.remove_member(request).await },
        )
        .await
    }
}

impl LogApi {
    /// Streams applied entries from `next` on until the subscriber leaves or the node stops.
    async fn feed(
        self,
        mut next: u64,
        sender: mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    ) {
        let mut metrics = self.inner.raft.metrics();
        let mut shutdown = self.inner.shutdown.clone();
        loop {
            let applied = metrics.borrow_and_update().last_applied.map(|id| id.index);
            if let Some(applied) = applied.filter(|applied| next <= *applied) {
                let batch = match self.inner.store.read(next, applied + 1, SUBSCRIBE_BATCH) {
                    Ok(batch) => batch,
                    Err(error) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
                // A snapshot install or purge took the entries away underneath.
                if batch.first().map(|entry| entry.log_id.index) != Some(next) {
                    let first = self.inner.store.first_index().unwrap_or(next);
                    let _ = sender
                        .send(Err(LogError::Truncated {
                            requested: next,
                            first,
                        }
                        .into()))
                        .await;
                    return;
                }
                next = batch.last().map_or(next, |entry| entry.log_id.index + 1);
                let entries = batch.into_iter().map(to_wire).collect();
                if sender
                    .send(Ok(pb::SubscribeResponse { entries }))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
                () = sender.closed() => return,
            }
        }
    }
}
