//! The Log service: what other cairn services call.
//!
//! Writes go to the leader. A node that is not the leader forwards the request
//! to the leader it knows, a bounded number of times, so a stale view cannot
//! make requests bounce. Every request is bounded by the request timeout and
//! fails with UNAVAILABLE and a typed [`cairn_proto::contract::Failure`]
//! rather than hang.
//!
//! # Layout
//! - `route`: running a request on the leader, or forwarding it there.
//! - `propose`: packing proposals into entries; `read`: shared read indexes.
//! - `subscribe`: the committed entries, streamed.
//! - `consumers`, `membership`, `status`, `handover`: the rest of the API.

mod consumers;
mod handover;
mod membership;
mod propose;
mod read;
mod route;
mod status;
mod subscribe;

use std::sync::Arc;

use cairn_kit::share::Sharing;
use cairn_kit::shutdown::ShutdownWatch;
use cairn_proto::cairn::log::v1 as pb;
use parking_lot::{Mutex, RwLock};
use tonic::{Request, Response, Status};

use self::handover::Holds;
use self::propose::Pending;
use self::read::ReadWaiter;
use self::route::Forwarder;
use crate::store::{Bookkeeping, LogStore, Tail};
use crate::types::Raft;

/// The Log service of one node.
#[derive(Clone)]
pub(crate) struct LogApi {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    store: LogStore,
    /// The newest applied entries, which subscribers are fed from.
    tail: Arc<Tail>,
    bookkeeping: Arc<RwLock<Bookkeeping>>,
    advertise: String,
    request_timeout: std::time::Duration,
    /// A leader that has heard from no quorum for this long refuses writes
    /// and reads at once instead of letting them wait out their deadline.
    quorum_lost_after: std::time::Duration,
    max_command_bytes: usize,
    shutdown: ShutdownWatch,
    peers: Mutex<std::collections::HashMap<String, Forwarder>>,
    /// Proposals on their way to being packed into an entry.
    proposals: Arc<Sharing<Pending>>,
    /// Read-index requests waiting for the next leadership check.
    reads: Arc<Sharing<ReadWaiter>>,
    /// What this node holds back while leadership is handed over.
    holds: Arc<Holds>,
}

impl LogApi {
    pub(crate) fn new(
        raft: Raft,
        store: LogStore,
        tail: Arc<Tail>,
        bookkeeping: Arc<RwLock<Bookkeeping>>,
        advertise: String,
        settings: &crate::settings::RaftSettings,
        shutdown: ShutdownWatch,
    ) -> Self {
        Self {
            inner: Arc::new_cyclic(|inner: &std::sync::Weak<Inner>| Inner {
                raft,
                store,
                tail,
                bookkeeping,
                advertise,
                request_timeout: settings.request_timeout(),
                // Twice the longest election timeout: followers would have
                // stood for election by then, so the quorum is truly gone.
                quorum_lost_after: std::time::Duration::from_millis(
                    settings.election_timeout_max_ms.saturating_mul(2),
                ),
                max_command_bytes: settings.max_command_bytes,
                shutdown,
                peers: Mutex::new(std::collections::HashMap::new()),
                proposals: propose::sharing(inner.clone(), settings),
                reads: read::sharing(inner.clone()),
                holds: Arc::new(Holds::new()),
            }),
        }
    }

    fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
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

    type ProposalsStream = propose::PlacementStream;

    async fn proposals(
        &self,
        request: Request<tonic::Streaming<pb::TaggedProposal>>,
    ) -> Result<Response<Self::ProposalsStream>, Status> {
        Ok(Response::new(self.stream_proposals(request.into_inner())))
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        self.read_point(request).await
    }

    type SubscribeStream = subscribe::EntryStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.open_subscription(request.get_ref().from_index)
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        self.acknowledge(request).await
    }

    async fn unregister(
        &self,
        request: Request<pb::UnregisterRequest>,
    ) -> Result<Response<pb::UnregisterResponse>, Status> {
        self.forget_consumer(request).await
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.node_status().map(Response::new).map_err(Status::from)
    }

    async fn campaign(
        &self,
        _request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        self.stand_for_election()
            .await
            .map(Response::new)
            .map_err(Status::from)
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
        self.move_leadership(request).await
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.add_learner_node(request).await
    }

    async fn promote_voter(
        &self,
        request: Request<pb::PromoteVoterRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.promote(request).await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.remove(request).await
    }
}
