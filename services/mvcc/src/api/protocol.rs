//! How a request becomes an answer. A write registers its sequence,
//! proposes its command and waits for this replica's apply of it, which
//! carries the result. A linearizable read waits until this replica has
//! applied a read point the log confirmed after the read arrived.

use cairn_proto::cairn::mvcc::v1::apply_response::Result as ApplyResult;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{ApplyResponse, AuthChecked, Command};
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::ResponseHeader;
use prost::Message;

use super::MvccApi;
use crate::error::MvccError;
use crate::store::Reply;

/// The revision a response header carries.
pub(super) fn revision_of(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |header| header.revision)
}

/// An apply that answered with another kind of response than its command's.
pub(super) fn unexpected(what: &str) -> MvccError {
    MvccError::Corrupt(format!("the apply of a {what} answered with another kind"))
}

impl MvccApi {
    /// Waits until this replica has applied everything acknowledged before
    /// the call: the read-index path.
    pub(super) async fn linearize(&self) -> Result<(), MvccError> {
        if self.skip_read_index {
            return Ok(());
        }
        let read_point = self.read_points.read_point().await?;
        tokio::time::timeout(
            self.replica.log.timeout(),
            self.replica.wait_applied(read_point),
        )
        .await
        .map_err(|_| MvccError::Etcd(EtcdError::Timeout))?
    }

    /// Proposes `op` and waits for this replica's apply of it.
    pub(super) async fn write(&self, op: Op) -> Result<Reply, MvccError> {
        self.propose_and_wait(op, 0, None).await
    }

    /// Proposes a client's `op`, checked for the user and auth revision in
    /// `checked`, and waits for this replica's apply of it.
    pub(super) async fn write_checked(
        &self,
        op: Op,
        checked: Option<AuthChecked>,
    ) -> Result<Reply, MvccError> {
        self.propose_and_wait(op, 0, checked).await
    }

    /// Proposes `op`, void unless `fence_epoch` (when not 0) is the lease
    /// claim in force, and waits for this replica's apply of it.
    /// When the command is a client's, `checked` names the user and the
    /// auth revision it was checked against.
    pub(super) async fn write_fenced_checked(
        &self,
        op: Op,
        fence_epoch: u64,
        checked: Option<AuthChecked>,
    ) -> Result<Reply, MvccError> {
        self.propose_and_wait(op, fence_epoch, checked).await
    }

    async fn propose_and_wait(
        &self,
        op: Op,
        fence_epoch: u64,
        auth_checked: Option<AuthChecked>,
    ) -> Result<Reply, MvccError> {
        let (sequence, result) = self.replica.register();
        let mut trace_context = std::collections::HashMap::new();
        cairn_kit::telemetry::inject_into(&mut trace_context);
        let command = Command {
            origin: self.replica.origin,
            sequence,
            op: Some(op),
            trace_context,
            fence_epoch,
            auth_checked,
        }
        .encode_to_vec();
        if let Err(error) = self.proposals.propose(command).await {
            self.replica.forget(sequence);
            return Err(error);
        }
        match tokio::time::timeout(self.replica.log.timeout(), result).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self
                .replica
                .check_serving()
                .err()
                .unwrap_or(MvccError::Stopped)),
            Err(_) => {
                self.replica.forget(sequence);
                Err(MvccError::Etcd(EtcdError::Timeout))
            }
        }
    }

    /// A lease command's apply as Mvcc/Apply answers it, headers filled as
    /// the KV service fills them.
    pub(super) fn apply_response(&self, applied: Reply) -> Result<ApplyResponse, MvccError> {
        let (revision, result) = match applied {
            Reply::LeaseGrant(mut response) => {
                let revision = revision_of(&response.header);
                response.header = self.header(revision);
                (revision, ApplyResult::LeaseGrant(response))
            }
            Reply::LeaseRevoke(mut response) => {
                let revision = revision_of(&response.header);
                response.header = self.header(revision);
                (revision, ApplyResult::LeaseRevoke(response))
            }
            Reply::Fenced(fenced) => (fenced.revision, ApplyResult::Fenced(fenced.result)),
            Reply::Alarm(mut response) => {
                let revision = revision_of(&response.header);
                response.header = self.header(revision);
                (revision, ApplyResult::Alarm(response))
            }
            _ => return Err(unexpected("lease command")),
        };
        Ok(ApplyResponse {
            revision,
            raft_term: self.replica.applied().term,
            result: Some(result),
        })
    }
}
