//! What crosses a process between cairn's services, defined once: metadata
//! keys, NATS headers, typed failure details and member ids. Every service
//! reads and writes these through the functions here, so a renamed key or a
//! new failure kind is a compile error everywhere it matters rather than a
//! silent mismatch between two string literals.

use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// The kinds of failure, by a shorter name.
pub use crate::cairn::v1::failure::Kind as FailureKind;
/// A typed failure, carried in a gRPC status's details.
pub use crate::cairn::v1::Failure;
use crate::cairn::v1::RpcStatus;

/// gRPC metadata between cairn's services.
pub mod metadata {
    use super::{MetadataMap, MetadataValue};

    /// Response metadata: the address of the log leader a node forwarded the
    /// call to, so the caller may go there directly next time.
    pub const LEADER: &str = "cairn-leader";
    /// Request metadata: how many times the call was already forwarded
    /// between nodes of one service.
    pub const FORWARDED: &str = "cairn-forwarded";
    /// Request metadata on raft traffic between log nodes: the sender's
    /// cluster token, so a node never takes a message from another cluster
    /// (a leftover process of an earlier run on the same address).
    pub const CLUSTER_TOKEN: &str = "cairn-cluster-token";

    /// The leader a node named in its answer, if it named one.
    pub fn leader(map: &MetadataMap) -> Option<&str> {
        map.get(LEADER).and_then(|value| value.to_str().ok())
    }

    /// Names `leader` in an answer.
    pub fn set_leader(map: &mut MetadataMap, leader: &str) {
        if let Ok(value) = MetadataValue::try_from(leader) {
            map.insert(LEADER, value);
        }
    }

    /// The cluster token a raft message was sent with, if it carries one.
    pub fn cluster_token(map: &MetadataMap) -> Option<&str> {
        map.get(CLUSTER_TOKEN).and_then(|value| value.to_str().ok())
    }

    /// Marks a raft message as coming from the cluster `token` names. A
    /// token that is not a valid header value is left out, and refused by
    /// the receiver as missing.
    pub fn set_cluster_token(map: &mut MetadataMap, token: &str) {
        if let Ok(value) = MetadataValue::try_from(token) {
            map.insert(CLUSTER_TOKEN, value);
        }
    }

    /// How many times a request was forwarded already (0 when never).
    pub fn forwards(map: &MetadataMap) -> u32 {
        map.get(FORWARDED)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }

    /// Marks a request as forwarded `count` times.
    pub fn set_forwards(map: &mut MetadataMap, count: u32) {
        map.insert(FORWARDED, MetadataValue::from(count));
    }

    /// Request metadata: etcd's auth token, as etcd's clients send it.
    pub const TOKEN: &str = "token";
    /// Request metadata the edge sets (and never passes on from a client):
    /// the Common Name of the client certificate it verified, which is the
    /// user when the call carries no token, as with etcd's
    /// `--client-cert-auth`.
    pub const CERTIFICATE_USER: &str = "cairn-certificate-user";

    /// Who makes a call: its token and certificate user, as metadata says.
    pub fn caller(map: &MetadataMap) -> crate::cairn::mvcc::v1::Caller {
        let text = |key| {
            map.get(key)
                .and_then(|value: &MetadataValue<_>| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        crate::cairn::mvcc::v1::Caller {
            token: text(TOKEN),
            certificate_user: text(CERTIFICATE_USER),
        }
    }

    /// Carries the caller's identity (token, certificate user) from a call
    /// onto the call a service makes for it.
    pub fn copy_caller(from: &MetadataMap, to: &mut MetadataMap) {
        for key in [TOKEN, CERTIFICATE_USER] {
            if let Some(value) = from.get(key) {
                to.insert(key, value.clone());
            }
        }
    }

    /// Names the verified certificate's user on a call going on from the
    /// edge, replacing whatever the client put there; none when `user` is
    /// empty.
    pub fn set_certificate_user(map: &mut MetadataMap, user: &str) {
        map.remove(CERTIFICATE_USER);
        if user.is_empty() {
            return;
        }
        if let Ok(value) = MetadataValue::try_from(user) {
            map.insert(CERTIFICATE_USER, value);
        }
    }
}

/// The JetStream revision stream's message headers.
pub mod revision_stream {
    /// JetStream's optimistic-concurrency header: the publish is refused
    /// unless the stream's last sequence is this, which keeps the stream's
    /// sequence equal to the revision with no gap and no duplicate.
    pub const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
    /// The revision, for readers that want it without decoding the body.
    pub const REVISION: &str = "Cairn-Revision";
    /// On a placeholder for a revision compaction removed before it reached
    /// the stream: the compact revision. Readers treat it as compacted.
    pub const COMPACTED: &str = "Cairn-Compacted";
    /// On a revision too large for one message: its size. The body is empty
    /// and readers take the revision from a replica's history.
    pub const OVERSIZED: &str = "Cairn-Oversized";

    /// What a message's headers say about its body.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Body {
        /// The revision's events, encoded.
        Events,
        /// A placeholder: the revision was compacted at this revision.
        Compacted(i64),
        /// Too large for the stream: read it from history.
        Oversized,
    }

    /// Reads the marks of a message through `header`, which looks a header
    /// up by name (so this works with any NATS client's header map).
    pub fn body<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Body {
        if header(OVERSIZED).is_some() {
            return Body::Oversized;
        }
        match header(COMPACTED) {
            Some(value) => Body::Compacted(value.parse().unwrap_or(0)),
            None => Body::Events,
        }
    }

    /// The headers to publish revision `revision` with, besides the trace
    /// context: (name, value) pairs.
    pub fn headers(revision: i64, body: Body, size: usize) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (EXPECTED_LAST_SEQUENCE, (revision - 1).to_string()),
            (REVISION, revision.to_string()),
        ];
        match body {
            Body::Events => {}
            Body::Compacted(at) => headers.push((COMPACTED, at.to_string())),
            Body::Oversized => headers.push((OVERSIZED, size.to_string())),
        }
        headers
    }
}

/// Prometheus metrics other programs read (the benchmark reads these off
/// cairn-lease's `/metrics`).
pub mod metrics {
    /// 1 while a lease instance holds the claim.
    pub const LEASE_ACTIVE: &str = "cairn_lease_active";
    /// Checkpoint commands a lease instance wrote to the log.
    pub const LEASE_CHECKPOINT_COMMANDS: &str = "cairn_lease_checkpoint_commands_total";
    /// Keep-alives a lease instance answered.
    pub const LEASE_KEEP_ALIVES: &str = "cairn_lease_keep_alives_total";
}

/// The type URL a [`Failure`] is packed under in a status's details.
const FAILURE_TYPE_URL: &str = "type.googleapis.com/cairn.v1.Failure";

impl Failure {
    /// A failure of `kind` with no other detail.
    pub fn of(kind: FailureKind) -> Self {
        Self {
            kind: kind as i32,
            ..Self::default()
        }
    }

    /// A status with `code` and `message` that carries this failure in its
    /// details, shaped as `google.rpc.Status` so every gRPC client can parse it.
    pub fn into_status(self, code: Code, message: impl Into<String>) -> Status {
        let message = message.into();
        let details = RpcStatus {
            code: code as i32,
            message: message.clone(),
            details: vec![prost_types::Any {
                type_url: FAILURE_TYPE_URL.to_owned(),
                value: self.encode_to_vec(),
            }],
        }
        .encode_to_vec();
        Status::with_details(code, message, details.into())
    }

    /// The failure a status carries, if a cairn service put one there.
    pub fn from_status(status: &Status) -> Option<Self> {
        Self::from_details(status.details())
    }

    /// The failure in a status's encoded details, if any.
    pub fn from_details(details: &[u8]) -> Option<Self> {
        if details.is_empty() {
            return None;
        }
        let status = RpcStatus::decode(details).ok()?;
        status
            .details
            .iter()
            .find(|any| any.type_url == FAILURE_TYPE_URL)
            .and_then(|any| Self::decode(any.value.as_slice()).ok())
    }
}

/// The kind of failure `status` carries, `Unspecified` when it carries none.
pub fn failure_kind(status: &Status) -> FailureKind {
    Failure::from_status(status).map_or(FailureKind::Unspecified, |failure| failure.kind())
}

/// etcd's `member_id` for a cairn process known by `identity` (a name or an
/// address): stable across restarts, never 0, and the same function for
/// every service, so a response header always says which process answered.
pub fn member_id(identity: &str) -> u64 {
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in identity.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_survives_a_status_and_reads_as_google_rpc_status() {
        let failure = Failure {
            first_index: 42,
            ..Failure::of(FailureKind::Purged)
        };
        let status = failure.into_status(Code::OutOfRange, "purged");
        assert_eq!(Failure::from_status(&status), Some(failure));
        let parsed = RpcStatus::decode(status.details()).expect("google.rpc.Status");
        assert_eq!(parsed.code, Code::OutOfRange as i32);
        assert_eq!(parsed.message, "purged");
        assert_eq!(
            failure_kind(&Status::unavailable("plain")),
            FailureKind::Unspecified
        );
    }

    #[test]
    fn forwards_and_leader_round_trip_through_metadata() {
        let mut map = MetadataMap::new();
        assert_eq!(metadata::forwards(&map), 0);
        metadata::set_forwards(&mut map, 2);
        metadata::set_leader(&mut map, "127.0.0.1:7001");
        assert_eq!(metadata::forwards(&map), 2);
        assert_eq!(metadata::leader(&map), Some("127.0.0.1:7001"));
    }

    #[test]
    fn a_cluster_token_round_trips_through_metadata() {
        let mut map = MetadataMap::new();
        assert_eq!(metadata::cluster_token(&map), None);
        metadata::set_cluster_token(&mut map, "cairn-test-1");
        assert_eq!(metadata::cluster_token(&map), Some("cairn-test-1"));
    }

    #[test]
    fn revision_marks_round_trip_through_headers() {
        for body in [
            revision_stream::Body::Events,
            revision_stream::Body::Compacted(7),
            revision_stream::Body::Oversized,
        ] {
            let headers = revision_stream::headers(9, body, 123);
            let find = |name: &str| {
                headers
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.as_str())
            };
            assert_eq!(revision_stream::body(find), body);
            assert_eq!(find(revision_stream::EXPECTED_LAST_SEQUENCE), Some("8"));
        }
    }

    #[test]
    fn member_ids_are_stable_and_never_zero() {
        assert_eq!(member_id("mvcc-1"), member_id("mvcc-1"));
        assert_ne!(member_id("mvcc-1"), member_id("mvcc-2"));
        assert_ne!(member_id(""), 0);
    }
}
