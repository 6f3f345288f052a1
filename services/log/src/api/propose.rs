//! Proposals, packed: every raft entry costs the leader an append, a sync and
//! a round of replication whatever its size, so proposals that arrive while
//! earlier entries are still being committed go together in the next entry
//! (`Entry.commands`; an answer says the entry's index and the command's
//! `offset` in it). A lone proposal goes out at once.

use std::sync::{Arc, Weak};
use std::time::Instant;

use cairn_kit::share::{ShareLimits, Sharing, Weighed};
use cairn_proto::cairn::log::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::route::{write_refusal, Effect, Forwarder, Routed};
use super::{Inner, LogApi};
use crate::error::LogError;
use crate::metrics::LOG_METRICS;
use crate::types::LogCommand;

/// The most commands packed into one entry.
const MAX_ENTRY_COMMANDS: usize = 4096;

/// Where a proposal landed: its entry and its place among the entry's commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Placed {
    pub index: u64,
    pub term: u64,
    pub offset: u32,
}

/// The answer to one proposal: placed here, to be sent to the leader at an
/// address, or refused.
type Answer = Result<Routed<Placed>, LogError>;

/// A proposal waiting to be packed: one or more commands that go into the
/// same entry, in order.
pub(super) struct Pending {
    commands: Vec<Vec<u8>>,
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Answer>,
}

impl Weighed for Pending {
    fn bytes(&self) -> usize {
        self.commands.iter().map(Vec::len).sum()
    }
}

/// The packing of one node's proposals into entries.
pub(super) fn sharing(
    inner: Weak<Inner>,
    settings: &crate::settings::RaftSettings,
) -> Arc<Sharing<Pending>> {
    let limits = ShareLimits {
        in_flight: settings.max_batches_in_flight,
        max_items: MAX_ENTRY_COMMANDS,
        max_bytes: settings.max_command_bytes,
    };
    Sharing::new(limits, move |batch: Vec<Pending>| {
        let inner = inner.upgrade();
        async move {
            match inner {
                Some(inner) => LogApi::from_inner(inner).commit_batch(batch).await,
                None => {
                    for pending in batch {
                        let _ = pending.reply.send(Err(LogError::Stopping));
                    }
                }
            }
        }
    })
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

/// What Proposals streams back.
pub(super) type PlacementStream = ReceiverStream<Result<pb::TaggedPlacement, Status>>;

/// Placements that may wait for the proposer to read them.
const PLACEMENT_QUEUE: usize = 1024;

impl LogApi {
    /// Proposals: every batch on the stream is placed as ProposeBatch would
    /// place it, and its placement sent back, with its id, once committed.
    pub(super) fn stream_proposals(
        &self,
        mut incoming: Streaming<pb::TaggedProposal>,
    ) -> PlacementStream {
        let (placements, out) = mpsc::channel(PLACEMENT_QUEUE);
        let api = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(proposal)) = incoming.message().await {
                let api = api.clone();
                let placements = placements.clone();
                let span = cairn_kit::telemetry::message_span(
                    &proposal.trace_context,
                    pb::log_server::SERVICE_NAME,
                    "Proposals",
                );
                tokio::spawn(
                    async move {
                        let placement = api.place_tagged(proposal).await;
                        let _ = placements.send(Ok(placement)).await;
                    }
                    .instrument(span),
                );
            }
        });
        ReceiverStream::new(out)
    }

    /// One batch from the Proposals stream, placed here; a node that does
    /// not lead names the leader instead of forwarding.
    async fn place_tagged(&self, proposal: pb::TaggedProposal) -> pb::TaggedPlacement {
        let started = Instant::now();
        let id = proposal.id;
        let placed = self.place(proposal.commands, self.deadline()).await;
        let (status, leader) = match placed {
            Ok(Routed::Here(placed)) => {
                let placement = pb::TaggedPlacement {
                    id,
                    placed: Some(proposed(placed)),
                    ..Default::default()
                };
                count_proposal(&Ok(Response::new(proposed(placed))), started);
                return placement;
            }
            Ok(Routed::There(leader)) => {
                let refusal = LogError::NotLeader(format!(
                    "not the leader; propose to the leader at {leader}"
                ));
                (Status::from(refusal), leader)
            }
            Err(error) => (Status::from(error), String::new()),
        };
        let placement = pb::TaggedPlacement {
            id,
            placed: None,
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: status.details().to_vec(),
            leader,
        };
        count_proposal(&Err(status), started);
        placement
    }

    /// Propose and ProposeBatch alike: places `commands` here, or forwards
    /// `request` to the leader with `forward`, and counts the outcome.
    pub(super) async fn proposal<Req, Fut>(
        &self,
        request: Request<Req>,
        commands: Vec<Vec<u8>>,
        forward: impl FnOnce(Forwarder, Request<Req>) -> Fut,
    ) -> Result<Response<pb::ProposeResponse>, Status>
    where
        Fut: std::future::Future<Output = Result<Response<pb::ProposeResponse>, Status>>,
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
        // The wait for a quorum to make the proposal durable, as its own span
        // under the Propose call; on a follower it only learns where the
        // leader is.
        let span = if cairn_kit::telemetry::exporting() {
            tracing::info_span!(
                "raft commit",
                otel.kind = "internal",
                raft.log.index = tracing::field::Empty,
                cairn.placed = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        self.inner.proposals.submit(Pending {
            commands,
            deadline,
            reply,
        });
        let placed = async { answer.await.map_err(|_| LogError::Stopping)? }
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
                Effect::Appends,
                || self.inner.raft.client_write(entry.clone()),
                write_refusal,
            )
            .await;
        for (offset, reply) in replies {
            let answer: Answer = match &outcome {
                Ok(Routed::Here(response)) => Ok(Routed::Here(Placed {
                    index: response.log_id.index,
                    term: response.log_id.leader_id.term,
                    offset: u32::try_from(offset).unwrap_or(u32::MAX),
                })),
                Ok(Routed::There(leader)) => Ok(Routed::There(leader.clone())),
                Err(error) => Err(error.copy()),
            };
            let _ = reply.send(answer);
        }
    }

    fn check_commands(&self, commands: &[Vec<u8>]) -> Result<(), LogError> {
        if commands.is_empty() {
            return Err(LogError::InvalidArgument("no command to propose".into()));
        }
        let limit = self.inner.max_command_bytes;
        if commands.iter().any(Vec::is_empty) {
            return Err(LogError::InvalidArgument("command is empty".into()));
        }
        if let Some(large) = commands.iter().find(|command| command.len() > limit) {
            return Err(LogError::InvalidArgument(format!(
                "command of {} bytes exceeds the limit of {limit} bytes",
                large.len()
            )));
        }
        let total: usize = commands.iter().map(Vec::len).sum();
        if total > limit {
            return Err(LogError::InvalidArgument(format!(
                "commands of {total} bytes together exceed the limit of {limit} bytes"
            )));
        }
        Ok(())
    }
}
