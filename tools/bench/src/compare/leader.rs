//! Which etcd member to measure: its leader. A put or a keep-alive sent to a
//! follower is forwarded to the leader first (keep-alives one HTTP request
//! at a time), so figures taken through a follower depend on which member
//! happened to win the election, and cairn's edge always reaches its log
//! leader directly.

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{Member, MemberListRequest, StatusRequest};

use crate::drive::connect;

/// The client address (host:port) of the leader of the etcd cluster that
/// `endpoint` belongs to.
pub(super) async fn etcd_leader(endpoint: &str) -> anyhow::Result<String> {
    let channel = connect(endpoint).await?;
    let status = MaintenanceClient::new(channel.clone())
        .status(StatusRequest {})
        .await?
        .into_inner();
    anyhow::ensure!(status.leader != 0, "{endpoint} knows no leader");
    let members = ClusterClient::new(channel)
        .member_list(MemberListRequest::default())
        .await?
        .into_inner()
        .members;
    address_of(&members, status.leader)
        .ok_or_else(|| anyhow::anyhow!("the leader {:x} has no client URL", status.leader))
}

/// The first client URL of member `id`, without its scheme.
fn address_of(members: &[Member], id: u64) -> Option<String> {
    let url = members
        .iter()
        .find(|member| member.id == id)?
        .client_ur_ls
        .first()?;
    let address = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    Some(address.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_is_found_by_id_and_its_url_loses_the_scheme() {
        let member = |id, url: &str| Member {
            id,
            client_ur_ls: vec![url.to_owned()],
            ..Default::default()
        };
        let members = [
            member(1, "http://127.0.0.1:23790"),
            member(2, "http://127.0.0.1:23791/"),
        ];
        assert_eq!(address_of(&members, 2), Some("127.0.0.1:23791".into()));
        assert_eq!(address_of(&members, 3), None);
    }
}
