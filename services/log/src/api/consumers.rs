//! The log's consumers (the mvcc replicas): each acknowledges the index it has
//! durably applied, and the log never purges what a registered consumer still
//! needs. Acknowledgements are log commands, so every node knows every position.

use cairn_proto::cairn::log::v1 as pb;
use tonic::{Request, Response, Status};

use super::route::{write_refusal, Effect, Routed};
use super::LogApi;
use crate::error::LogError;
use crate::types::LogCommand;

/// The longest consumer name accepted.
const MAX_CONSUMER_NAME: usize = 256;

fn check_consumer(consumer: &str) -> Result<(), LogError> {
    if consumer.is_empty() || consumer.len() > MAX_CONSUMER_NAME {
        return Err(LogError::InvalidArgument(format!(
            "consumer name must be 1 to {MAX_CONSUMER_NAME} bytes"
        )));
    }
    Ok(())
}

impl LogApi {
    /// Ack: records a consumer's durable position (registering it on first use).
    pub(super) async fn acknowledge(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let deadline = self.deadline();
        check_consumer(&request.get_ref().consumer)?;
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

    /// Unregister: forgets a consumer, so it no longer holds back purging.
    pub(super) async fn forget_consumer(
        &self,
        request: Request<pb::UnregisterRequest>,
    ) -> Result<Response<pb::UnregisterResponse>, Status> {
        let deadline = self.deadline();
        check_consumer(&request.get_ref().consumer)?;
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

    /// Commits one of the log's own bookkeeping commands and returns its index.
    async fn commit_bookkeeping(
        &self,
        command: LogCommand,
        deadline: tokio::time::Instant,
    ) -> Result<Routed<u64>, LogError> {
        self.inner.holds.writes_open(deadline).await;
        self.on_leader(
            deadline,
            Effect::Appends,
            || self.inner.raft.client_write(command.clone()),
            write_refusal,
        )
        .await
        .map(|routed| match routed {
            Routed::Here(response) => Routed::Here(response.log_id.index),
            Routed::There(addr) => Routed::There(addr),
        })
    }
}
