//! etcd's Election service: candidates are keys under the election's name
//! (see `candidacy`); the oldest leads, proclaims values by rewriting its key,
//! and observers follow the leader key's values.

use std::pin::Pin;

use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::PutRequest;
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::candidacy::{self, Cleanup, CleanupStep, Watching};
use crate::error::EdgeError;
use crate::local::Local;

/// Serves `v3electionpb.Election` over the edge's own KV, Lease and Watch.
pub(crate) struct ElectionApi {
    local: Local,
}

impl ElectionApi {
    pub(crate) fn new(local: Local) -> Self {
        Self { local }
    }
}

type LeaderStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionApi {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let local = &self.local.as_caller(&request);
        let CampaignRequest { name, lease, value } = request.into_inner();
        let lease = candidacy::session_lease(local, lease).await?;
        let prefix = candidacy::prefix_of(&name);
        let key = candidacy::candidate_key(&prefix, lease);
        let entered = candidacy::enter(local, &prefix, &key, lease, &value).await?;
        let rev = entered.rev;
        if entered
            .earlier_value
            .as_ref()
            .is_some_and(|earlier| *earlier != value)
        {
            // A candidate campaigning again with a new value publishes it.
            if let Err(status) = proclaim(local, &key, rev, lease, value).await {
                let _ = candidacy::resign(local, &key, rev).await;
                return Err(status);
            }
        }
        if !entered.oldest {
            // A caller that goes away resigns; a failed wait leaves the
            // candidate in place, as etcd does.
            let cleanup = Cleanup::new(local, CleanupStep::Resign(key.clone(), rev));
            let waited = candidacy::wait_deletes(local, &prefix, rev - 1).await;
            cleanup.disarm();
            waited?;
        }
        Ok(Response::new(CampaignResponse {
            header: entered.header,
            leader: Some(LeaderKey {
                name,
                key,
                rev,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let local = self.local.as_caller(&request);
        let ProclaimRequest { leader, value } = request.into_inner();
        let leader = leader.ok_or(EdgeError::MissingLeaderKey)?;
        let lease = candidacy::session_lease(&local, leader.lease).await?;
        let header = proclaim(&local, &leader.key, leader.rev, lease, value).await?;
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let local = self.local.as_caller(&request);
        let prefix = candidacy::prefix_of(&request.into_inner().name);
        let current = local
            .kv()
            .range(candidacy::oldest(&prefix))
            .await?
            .into_inner();
        let kv = current
            .kvs
            .into_iter()
            .next()
            .ok_or(EdgeError::ElectionNoLeader)?;
        Ok(Response::new(LeaderResponse {
            header: current.header,
            kv: Some(kv),
        }))
    }

    type ObserveStream = LeaderStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let local = self.local.as_caller(&request);
        let prefix = candidacy::prefix_of(&request.into_inner().name);
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            // Any failure ends the stream, as etcd's observer does; so does
            // the observer leaving, even while no leader changes.
            tokio::select! {
                _ = observe(&local, &prefix, &sender) => {}
                () = sender.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let local = self.local.as_caller(&request);
        let leader = request
            .into_inner()
            .leader
            .ok_or(EdgeError::MissingLeaderKey)?;
        let header = candidacy::resign(&local, &leader.key, leader.rev).await?;
        Ok(Response::new(ResignResponse { header }))
    }
}

/// Rewrites the leader key with `value`, if it is still the key created at
/// `rev`; otherwise the caller no longer leads.
async fn proclaim(
    local: &Local,
    key: &[u8],
    rev: i64,
    lease: i64,
    value: Vec<u8>,
) -> Result<Option<cairn_proto::etcdserverpb::ResponseHeader>, Status> {
    let put = Op::RequestPut(PutRequest {
        key: key.to_vec(),
        value,
        lease,
        ..Default::default()
    });
    let answer = candidacy::if_still_candidate(local, key, rev, put).await?;
    if !answer.succeeded {
        return Err(EdgeError::ElectionNotLeader.into());
    }
    Ok(answer.header)
}

/// Sends the current leader's key, then each value it proclaims; when it
/// goes, waits for the next leader and goes on. Ends when the receiver does
/// or a call fails.
async fn observe(
    local: &Local,
    prefix: &[u8],
    sender: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Status> {
    loop {
        let current = local
            .kv()
            .range(candidacy::oldest(prefix))
            .await?
            .into_inner();
        let (mut header, kv) = match current.kvs.into_iter().next() {
            Some(kv) => (current.header, kv),
            None => {
                let from = current.header.as_ref().map_or(0, |header| header.revision);
                let range_end = candidacy::oldest(prefix).range_end;
                let mut first = Watching::start(local, prefix, range_end, from).await?;
                loop {
                    let Some(answer) = first.next().await? else {
                        return Ok(());
                    };
                    let put = answer
                        .events
                        .into_iter()
                        .find(|event| event.r#type == EventType::Put as i32)
                        .and_then(|event| event.kv);
                    if let Some(kv) = put {
                        let mut header = answer.header.unwrap_or_default();
                        header.revision = kv.mod_revision;
                        break (Some(header), kv);
                    }
                }
            }
        };
        let after = header.as_mut().map_or(0, |header| header.revision) + 1;
        let key = kv.key.clone();
        let leader = LeaderResponse {
            header,
            kv: Some(kv),
        };
        if sender.send(Ok(leader)).await.is_err() {
            return Ok(());
        }
        let mut following = Watching::start(local, &key, Vec::new(), after).await?;
        'leader: loop {
            let Some(answer) = following.next().await? else {
                return Ok(());
            };
            for event in answer.events {
                if event.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                let proclaimed = LeaderResponse {
                    header: answer.header,
                    kv: event.kv,
                };
                if sender.send(Ok(proclaimed)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
