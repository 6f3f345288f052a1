//! The cells of one member or one endpoint, shared by the simple printer
//! (joined with ", ") and the table printer.

use crate::go_fmt;
use crate::model::{EndpointHealth, EndpointStatus, Member};

/// `member list -w table`'s column titles.
pub(crate) const MEMBER_HEADER: [&str; 6] = [
    "ID",
    "STATUS",
    "NAME",
    "PEER ADDRS",
    "CLIENT ADDRS",
    "IS LEARNER",
];

/// `endpoint status -w table`'s column titles.
pub(crate) const STATUS_HEADER: [&str; 10] = [
    "ENDPOINT",
    "ID",
    "VERSION",
    "DB SIZE",
    "IS LEADER",
    "IS LEARNER",
    "RAFT TERM",
    "RAFT INDEX",
    "RAFT APPLIED INDEX",
    "ERRORS",
];

/// `endpoint health -w table`'s column titles.
pub(crate) const HEALTH_HEADER: [&str; 4] = ["ENDPOINT", "HEALTH", "TOOK", "ERROR"];

/// A member: a member without a name has not started yet.
pub(crate) fn member(member: &Member) -> Vec<String> {
    let status = if member.name.is_empty() {
        "unstarted"
    } else {
        "started"
    };
    vec![
        format!("{:x}", member.id),
        status.to_owned(),
        member.name.clone(),
        member.peer_urls.join(","),
        member.client_urls.join(","),
        member.is_learner.to_string(),
    ]
}

/// An endpoint's status; the ID is the member that answered.
pub(crate) fn status(endpoint: &EndpointStatus) -> Vec<String> {
    let status = &endpoint.status;
    let member_id = status.header.as_ref().map_or(0, |header| header.member_id);
    vec![
        endpoint.endpoint.clone(),
        format!("{member_id:x}"),
        status.version.clone(),
        go_fmt::humanize_bytes(u64::try_from(status.db_size).unwrap_or(0)),
        (status.leader == member_id).to_string(),
        status.is_learner.to_string(),
        status.raft_term.to_string(),
        status.raft_index.to_string(),
        status.raft_applied_index.to_string(),
        status.errors.join(", "),
    ]
}

/// An endpoint's health check.
pub(crate) fn health(check: &EndpointHealth) -> Vec<String> {
    vec![
        check.endpoint.clone(),
        check.health.to_string(),
        check.took.clone(),
        check.error.clone(),
    ]
}
