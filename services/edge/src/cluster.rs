//! etcd's Cluster service over the log's membership. Each log node is a
//! member; every member's client URLs are the edge's advertised URLs, because
//! clients must only ever be sent to the edge.

use std::sync::Arc;

use cairn_proto::cairn::log::v1 as log;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use crate::backends::{require_root, Log};
use crate::pool::BackendPool;

/// The Cluster service of one edge.
pub(crate) struct ClusterApi {
    log: Arc<Log>,
    /// The replicas, which say whether a caller is root.
    mvcc: Arc<BackendPool>,
    client_urls: Vec<String>,
    cluster_id: u64,
}

impl ClusterApi {
    pub(crate) fn new(
        log: Arc<Log>,
        mvcc: Arc<BackendPool>,
        client_urls: Vec<String>,
        cluster_id: u64,
    ) -> Self {
        Self {
            log,
            mvcc,
            client_urls,
            cluster_id,
        }
    }

    fn header(&self, status: &log::StatusResponse) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: status.id,
            revision: 0,
            raft_term: status.term,
        })
    }

    fn member(&self, node: &log::Member) -> Member {
        Member {
            id: node.id,
            name: format!("log-{}", node.id),
            peer_ur_ls: vec![format!("http://{}", node.addr)],
            client_ur_ls: self.client_urls.clone(),
            is_learner: !node.voter,
        }
    }

    fn members(&self, nodes: &[log::Member]) -> Vec<Member> {
        nodes.iter().map(|node| self.member(node)).collect()
    }

    /// The member `id` in the log's current membership, or etcd's not-found.
    async fn existing(&self, id: u64) -> Result<(log::StatusResponse, log::Member), Status> {
        let status = self.log.status().await?;
        let member = status
            .members
            .iter()
            .find(|member| member.id == id)
            .cloned()
            .ok_or_else(|| Status::from(EtcdError::MemberNotFound))?;
        Ok((status, member))
    }
}

/// The `host:port` of a peer URL such as `http://10.0.0.4:7001`.
fn peer_addr(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let addr = rest.trim_end_matches('/');
    let (host, port) = addr.rsplit_once(':')?;
    if host.is_empty() || addr.contains('/') || port.parse::<u16>().is_err() {
        return None;
    }
    Some(addr.to_owned())
}

/// A new member's ID: like etcd's, from its peer URLs and the time, so that
/// re-adding the same URL later gives a different member. Never 0.
fn new_member_id(peer_urls: &[String]) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in peer_urls.join(",").bytes().chain(now.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        require_root(&self.mvcc, &request).await?;
        let request = request.into_inner();
        let addrs: Vec<String> = request
            .peer_ur_ls
            .iter()
            .map(|url| peer_addr(url))
            .collect::<Option<_>>()
            .ok_or_else(|| Status::from(EtcdError::InvalidPeerUrls))?;
        // A log node has one address.
        let [addr] = addrs.as_slice() else {
            return Err(EtcdError::InvalidPeerUrls.into());
        };
        let status = self.log.status().await?;
        if status.members.iter().any(|member| &member.addr == addr) {
            return Err(EtcdError::PeerUrlExists.into());
        }
        let id = new_member_id(&request.peer_ur_ls);
        let mut changed = self.log.add_learner(id, addr.clone()).await?;
        if !request.is_learner {
            changed = self.log.promote(id).await?;
        }
        let member = changed
            .members
            .iter()
            .find(|member| member.id == id)
            .map(|node| self.member(node));
        Ok(Response::new(MemberAddResponse {
            header: self.header(&status),
            member,
            members: self.members(&changed.members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        require_root(&self.mvcc, &request).await?;
        let (status, member) = self.existing(request.into_inner().id).await?;
        let changed = self.log.remove(member.id).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(&status),
            members: self.members(&changed.members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        require_root(&self.mvcc, &request).await?;
        self.existing(request.into_inner().id).await?;
        Err(Status::failed_precondition(
            "cairn: a log node's peer URL cannot change; add a node at the new URL and remove the old one",
        ))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let status = self.log.status().await?;
        Ok(Response::new(MemberListResponse {
            header: self.header(&status),
            members: self.members(&status.members),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        require_root(&self.mvcc, &request).await?;
        let (status, member) = self.existing(request.into_inner().id).await?;
        if member.voter {
            return Err(EtcdError::MemberNotLearner.into());
        }
        let changed = self.log.promote(member.id).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(&status),
            members: self.members(&changed.members),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_give_host_and_port_or_nothing() {
        assert_eq!(
            peer_addr("http://10.0.0.4:7001").as_deref(),
            Some("10.0.0.4:7001")
        );
        assert_eq!(
            peer_addr("http://log-4:7001/").as_deref(),
            Some("log-4:7001")
        );
        assert_eq!(peer_addr("10.0.0.4:7001"), None);
        assert_eq!(peer_addr("http://10.0.0.4"), None);
        assert_eq!(peer_addr("http://:7001"), None);
        assert_eq!(peer_addr("http://a:7001/path"), None);
    }

    #[test]
    fn member_ids_are_never_zero_and_differ_for_the_same_url_later() {
        let urls = vec!["http://10.0.0.4:7001".to_owned()];
        let first = new_member_id(&urls);
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_ne!(first, new_member_id(&urls));
        assert_ne!(first, 0);
    }
}
