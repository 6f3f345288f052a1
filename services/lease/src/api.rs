//! etcd's Lease service. The active instance answers; a standby forwards each
//! call, keep-alive streams included, to the holder of the claim.

use std::pin::Pin;
use std::sync::Arc;

use cairn_kit::telemetry::TraceInterceptor;
use cairn_proto::cairn::mvcc::v1::apply_response::Result as ApplyResult;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::contract::metadata;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, ResponseHeader,
};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::active::Active;
use crate::error::LeaseError;
use crate::instance::Instance;
use crate::settings::MAX_LEASE_TTL;

/// How long a call waits for this instance to finish taking over a claim it won.
const ACTIVATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);
/// Keep-alive answers that may wait for a slow stream reader.
const KEEP_ALIVE_QUEUE: usize = 1024;

type Forwarder = LeaseClient<InterceptedService<Channel, TraceInterceptor>>;
type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// The Lease service of one instance.
pub(crate) struct LeaseApi {
    instance: Arc<Instance>,
    cluster_id: u64,
    member_id: u64,
    /// The client of the holder last forwarded to.
    forwarder: Mutex<Option<(String, Forwarder)>>,
}

enum Route {
    Here(Arc<Active>),
    There(Forwarder),
}

impl LeaseApi {
    pub(crate) fn new(instance: Arc<Instance>, cluster_id: u64) -> Self {
        let member_id = cairn_proto::contract::member_id(&instance.me);
        Self {
            instance,
            cluster_id,
            member_id,
            forwarder: Mutex::new(None),
        }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: self.instance.revision(),
            raft_term: self.instance.term(),
        })
    }

    /// Where a call goes: the active role here, or the claim's holder.
    async fn route(&self, incoming: &tonic::metadata::MetadataMap) -> Result<Route, LeaseError> {
        if let Some(active) = self.instance.active() {
            return Ok(Route::Here(active));
        }
        if metadata::forwards(incoming) > 0 {
            return Err(LeaseError::NoActive(
                "a forwarded call reached an instance that is not active".into(),
            ));
        }
        let mut claim = self.instance.claim();
        if claim.holder.is_empty() || claim.holder == self.instance.me {
            // This instance may not have looked since the claim changed.
            claim = self.instance.refresh_claim().await?;
        }
        if claim.holder == self.instance.me {
            // Its own claim won and it is taking the leases over: wait.
            let until = tokio::time::Instant::now() + ACTIVATION_PATIENCE;
            while tokio::time::Instant::now() < until {
                if let Some(active) = self.instance.active() {
                    return Ok(Route::Here(active));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        if claim.holder.is_empty() || claim.holder == self.instance.me {
            return Err(LeaseError::NoActive(
                "no instance holds the claim yet".into(),
            ));
        }
        let mut forwarder = self.forwarder.lock();
        if let Some((holder, client)) = forwarder.as_ref() {
            if *holder == claim.holder {
                return Ok(Route::There(client.clone()));
            }
        }
        let channel = cairn_kit::failover::lazy_channel(&claim.holder, "the claim's holder")
            .map_err(|error| LeaseError::NoActive(error.to_string()))?;
        let client = LeaseClient::with_interceptor(channel, TraceInterceptor);
        *forwarder = Some((claim.holder, client.clone()));
        Ok(Route::There(client))
    }
}

/// `message` marked as forwarded, so it is never forwarded twice.
/// Where a stream of requests failed, once it has.
type Failure = Arc<Mutex<Option<Status>>>;

/// The requests of a stream up to the first failure (a message that does not
/// decode), which is kept for [`then_failure`].
fn until_failure<T>(
    requests: impl Stream<Item = Result<T, Status>>,
) -> (impl Stream<Item = T>, Failure) {
    let failure = Failure::default();
    let seen = failure.clone();
    let requests = requests.scan((), move |(), request| {
        std::future::ready(match request {
            Ok(request) => Some(request),
            Err(status) => {
                *seen.lock() = Some(status);
                None
            }
        })
    });
    (requests, failure)
}

/// `answers`, then the requests' failure, if they failed.
fn then_failure<T>(
    answers: impl Stream<Item = Result<T, Status>>,
    failure: Failure,
) -> impl Stream<Item = Result<T, Status>> {
    let last = futures::stream::once(async move { failure.lock().take() });
    answers.chain(last.filter_map(|failed| std::future::ready(failed.map(Err))))
}

fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    metadata::set_forwards(request.metadata_mut(), 1);
    request
}

/// A fresh lease ID: positive, like etcd's.
fn new_lease_id() -> i64 {
    rand::random_range(1..i64::MAX)
}

#[tonic::async_trait]
impl Lease for LeaseApi {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let active = match self.route(request.metadata()).await? {
            Route::Here(active) => active,
            Route::There(mut holder) => {
                return holder.lease_grant(forwarded(request.into_inner())).await
            }
        };
        let grant = request.into_inner();
        if grant.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        let ttl = grant.ttl.max(self.instance.rules.min_ttl_secs);
        let id = if grant.id == 0 {
            new_lease_id()
        } else {
            grant.id
        };
        let applied = self
            .instance
            .replicas
            .apply_fenced(Op::LeaseGrant(LeaseGrantRequest { ttl, id }), active.epoch)
            .await?;
        self.instance.saw(applied.revision, applied.raft_term);
        active.granted(id, ttl);
        Ok(Response::new(LeaseGrantResponse {
            header: self.header(),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let active = match self.route(request.metadata()).await? {
            Route::Here(active) => active,
            Route::There(mut holder) => {
                // The holder checks the caller's permissions, as here.
                let mut onward = forwarded(LeaseRevokeRequest {
                    id: request.get_ref().id,
                });
                metadata::copy_caller(request.metadata(), onward.metadata_mut());
                return holder.lease_revoke(onward).await;
            }
        };
        let (caller, _, revoke) = request.into_parts();
        let id = revoke.id;
        // The replica needs WRITE on every key of the lease for the caller.
        let applied = self
            .instance
            .replicas
            .apply_fenced_for(
                Op::LeaseRevoke(LeaseRevokeRequest { id }),
                active.epoch,
                &caller,
            )
            .await?;
        self.instance.saw(applied.revision, applied.raft_term);
        if let Some(ApplyResult::LeaseRevoke(_)) = applied.result {
            active.revoked(id);
        }
        Ok(Response::new(LeaseRevokeResponse {
            header: self.header(),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        match self.route(request.metadata()).await? {
            Route::Here(active) => Ok(Response::new(Box::pin(
                self.keep_alive_here(active, request.into_inner()),
            ))),
            Route::There(mut holder) => {
                // Requests go on to the holder until the caller stops sending;
                // one that does not decode ends the answers with its status.
                let (requests, failure) = until_failure(request.into_inner());
                let answers = holder.lease_keep_alive(forwarded(requests)).await?;
                Ok(Response::new(Box::pin(then_failure(
                    answers.into_inner(),
                    failure,
                ))))
            }
        }
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let active = match self.route(request.metadata()).await? {
            Route::Here(active) => active,
            Route::There(mut holder) => {
                return holder
                    .lease_time_to_live(forwarded(request.into_inner()))
                    .await
            }
        };
        let asked = request.into_inner();
        let found = match self.instance.replicas.lease(asked.id, asked.keys).await {
            Ok(found) => found,
            Err(LeaseError::Replica(status)) if status.code() == Code::NotFound => {
                // etcd answers an unknown lease with TTL -1, not an error.
                return Ok(Response::new(LeaseTimeToLiveResponse {
                    header: self.header(),
                    id: asked.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                }));
            }
            Err(error) => return Err(error.into()),
        };
        self.instance.saw(found.revision, found.raft_term);
        let record = found.lease.unwrap_or_default();
        let remaining = active
            .table
            .lock()
            .remaining_secs(asked.id, std::time::Instant::now())
            .unwrap_or(record.ttl);
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.header(),
            id: asked.id,
            ttl: remaining,
            granted_ttl: record.ttl,
            keys: found.keys,
        }))
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        if let Route::There(mut holder) = self.route(request.metadata()).await? {
            return holder.lease_leases(forwarded(request.into_inner())).await;
        }
        let state = self.instance.replicas.leases().await?;
        self.instance.saw(state.revision, state.raft_term);
        Ok(Response::new(LeaseLeasesResponse {
            header: self.header(),
            leases: state
                .leases
                .iter()
                .map(|lease| LeaseStatus { id: lease.id })
                .collect(),
        }))
    }
}

impl LeaseApi {
    /// Answers each keep-alive of a stream once its renewal is recorded;
    /// answers may come in another order than the requests, each naming its ID.
    fn keep_alive_here(
        &self,
        active: Arc<Active>,
        mut requests: Streaming<LeaseKeepAliveRequest>,
    ) -> impl Stream<Item = Result<LeaseKeepAliveResponse, Status>> {
        let (answers, answered) = mpsc::channel(KEEP_ALIVE_QUEUE);
        let header = self.header();
        let instance = self.instance.clone();
        tokio::spawn(async move {
            loop {
                let request = match requests.message().await {
                    Ok(Some(request)) => request,
                    Ok(None) => break,
                    // A request that does not decode ends the stream with
                    // gRPC's status, as etcd's does, not with a silent OK.
                    Err(status) => {
                        let _ = answers.send(Err(status)).await;
                        break;
                    }
                };
                let active = active.clone();
                let answers = answers.clone();
                let mut header = header;
                if let Some(header) = header.as_mut() {
                    header.revision = instance.revision();
                }
                tokio::spawn(async move {
                    let answer = active
                        .keep_alive(request.id)
                        .await
                        .map(|ttl| LeaseKeepAliveResponse {
                            header,
                            id: request.id,
                            ttl,
                        })
                        .map_err(Status::from);
                    let _ = answers.send(answer).await;
                });
            }
        });
        ReceiverStream::new(answered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_forwarded_keep_alive_stream_whose_request_does_not_decode_ends_with_that_status() {
        let requests = futures::stream::iter([
            Ok(1),
            Err(Status::internal("failed to decode Protobuf message")),
            Ok(2),
        ]);
        let (passed, failure) = until_failure(requests);
        let passed: Vec<i64> = passed.collect().await;
        assert_eq!(passed, vec![1]);
        let answers = futures::stream::iter([Ok::<i64, Status>(10)]);
        let answered: Vec<Result<i64, Status>> = then_failure(answers, failure).collect().await;
        assert_eq!(answered.len(), 2);
        assert!(matches!(answered[0], Ok(10)));
        assert!(matches!(&answered[1], Err(status) if status.code() == Code::Internal));

        let (passed, failure) = until_failure(futures::stream::iter([Ok::<i64, Status>(1)]));
        assert_eq!(passed.collect::<Vec<_>>().await, vec![1]);
        let answers = futures::stream::iter([Ok::<i64, Status>(10)]);
        let answered: Vec<_> = then_failure(answers, failure).collect().await;
        assert_eq!(
            answered.len(),
            1,
            "a stream that only ends ends with no error"
        );
    }
}
