//! Plain copies of the server's replies, shaped for printing.
//!
//! etcd-client's response types cannot be built outside that crate, so the
//! printers work on these instead, which tests can build freely. Field names,
//! order and omitted zero values follow what etcdctl's JSON output shows:
//! Go's `encoding/json` over etcd's generated structs (`omitempty` on proto
//! fields) and over clientv3's own wrappers (no `omitempty`).

use cairn_proto::etcd_error::EtcdError;
use serde::Serialize;

use crate::output::json::{base64_bytes, base64_list};

fn is_zero_i64(value: &i64) -> bool {
    *value == 0
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// `etcdserverpb.ResponseHeader`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Header {
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub cluster_id: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub member_id: u64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub revision: i64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub raft_term: u64,
}

impl From<&etcd_client::ResponseHeader> for Header {
    fn from(header: &etcd_client::ResponseHeader) -> Self {
        Self {
            cluster_id: header.cluster_id(),
            member_id: header.member_id(),
            revision: header.revision(),
            raft_term: header.raft_term(),
        }
    }
}

fn header_of(header: Option<&etcd_client::ResponseHeader>) -> Option<Header> {
    header.map(Header::from)
}

/// `mvccpb.KeyValue`; keys and values are bytes, base64 in JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct KeyValue {
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "base64_bytes")]
    pub key: Vec<u8>,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub create_revision: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub mod_revision: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub version: i64,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "base64_bytes")]
    pub value: Vec<u8>,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub lease: i64,
}

impl From<&etcd_client::KeyValue> for KeyValue {
    fn from(kv: &etcd_client::KeyValue) -> Self {
        Self {
            key: kv.key().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            value: kv.value().to_vec(),
            lease: kv.lease(),
        }
    }
}

fn kvs_of(kvs: &[etcd_client::KeyValue]) -> Vec<KeyValue> {
    kvs.iter().map(KeyValue::from).collect()
}

/// `RangeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct RangeResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kvs: Vec<KeyValue>,
    #[serde(skip_serializing_if = "is_false")]
    pub more: bool,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub count: i64,
}

impl From<&etcd_client::GetResponse> for RangeResult {
    fn from(response: &etcd_client::GetResponse) -> Self {
        Self {
            header: header_of(response.header()),
            kvs: kvs_of(response.kvs()),
            more: response.more(),
            count: response.count(),
        }
    }
}

/// `PutResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct PutResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<KeyValue>,
}

impl From<&etcd_client::PutResponse> for PutResult {
    fn from(response: &etcd_client::PutResponse) -> Self {
        Self {
            header: header_of(response.header()),
            prev_kv: response.prev_key().map(KeyValue::from),
        }
    }
}

/// `DeleteRangeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct DeleteResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub deleted: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prev_kvs: Vec<KeyValue>,
}

impl From<&etcd_client::DeleteResponse> for DeleteResult {
    fn from(response: &etcd_client::DeleteResponse) -> Self {
        Self {
            header: header_of(response.header()),
            deleted: response.deleted(),
            prev_kvs: kvs_of(response.prev_kvs()),
        }
    }
}

/// `TxnResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct TxnResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    #[serde(skip_serializing_if = "is_false")]
    pub succeeded: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub responses: Vec<TxnOpResult>,
}

/// One `ResponseOp`. Go's JSON shows the oneof through its wrapper types:
/// `{"Response":{"ResponsePut":{…}}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TxnOpResult {
    #[serde(rename = "Response")]
    pub response: TxnOpKind,
}

/// The member of the `ResponseOp` oneof that is set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) enum TxnOpKind {
    #[serde(rename = "ResponseRange")]
    Range(RangeResult),
    #[serde(rename = "ResponsePut")]
    Put(PutResult),
    #[serde(rename = "ResponseDeleteRange")]
    DeleteRange(DeleteResult),
    #[serde(rename = "ResponseTxn")]
    Txn(Box<TxnResult>),
}

impl From<&etcd_client::TxnResponse> for TxnResult {
    fn from(response: &etcd_client::TxnResponse) -> Self {
        let responses = response
            .op_responses()
            .iter()
            .map(|op| {
                let response = match op {
                    etcd_client::TxnOpResponse::Get(get) => TxnOpKind::Range(get.into()),
                    etcd_client::TxnOpResponse::Put(put) => TxnOpKind::Put(put.into()),
                    etcd_client::TxnOpResponse::Delete(delete) => {
                        TxnOpKind::DeleteRange(delete.into())
                    }
                    etcd_client::TxnOpResponse::Txn(txn) => TxnOpKind::Txn(Box::new(txn.into())),
                };
                TxnOpResult { response }
            })
            .collect();
        Self {
            header: header_of(response.header()),
            succeeded: response.succeeded(),
            responses,
        }
    }
}

/// `mvccpb.Event`; `type` is 0 for PUT (omitted) and 1 for DELETE.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Event {
    #[serde(rename = "type", skip_serializing_if = "is_zero_i64")]
    pub kind: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv: Option<KeyValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<KeyValue>,
}

/// The DELETE value of `Event.type`.
pub(crate) const EVENT_DELETE: i64 = 1;

impl From<&etcd_client::Event> for Event {
    fn from(event: &etcd_client::Event) -> Self {
        let kind = match event.event_type() {
            etcd_client::EventType::Put => 0,
            etcd_client::EventType::Delete => EVENT_DELETE,
        };
        Self {
            kind,
            kv: event.kv().map(KeyValue::from),
            prev_kv: event.prev_kv().map(KeyValue::from),
        }
    }
}

/// clientv3's `WatchResponse` as etcdctl prints it in JSON: capitalised Go
/// field names, nothing omitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WatchResult {
    pub header: Header,
    pub events: Vec<Event>,
    pub compact_revision: i64,
    pub canceled: bool,
    pub created: bool,
    #[serde(skip)]
    pub cancel_reason: String,
}

impl From<&etcd_client::WatchResponse> for WatchResult {
    fn from(response: &etcd_client::WatchResponse) -> Self {
        Self {
            header: response.header().map(Header::from).unwrap_or_default(),
            events: response.events().iter().map(Event::from).collect(),
            compact_revision: response.compact_revision(),
            canceled: response.canceled(),
            created: response.created(),
            cancel_reason: response.cancel_reason().to_owned(),
        }
    }
}

impl WatchResult {
    /// clientv3's `IsProgressNotify`: an answer that only carries a revision.
    pub(crate) fn is_progress_notify(&self) -> bool {
        self.events.is_empty()
            && !self.canceled
            && !self.created
            && self.compact_revision == 0
            && self.header.revision != 0
    }

    /// clientv3's `WatchResponse.Err`, printed when a watch is cancelled.
    pub(crate) fn cancel_error(&self) -> String {
        if self.compact_revision != 0 {
            EtcdError::Compacted.message().to_owned()
        } else if self.canceled && !self.cancel_reason.is_empty() {
            self.cancel_reason.clone()
        } else {
            "<nil>".to_owned()
        }
    }
}

/// clientv3's `LeaseGrantResponse`: the header's fields inline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LeaseGrantResult {
    #[serde(flatten)]
    pub header: Option<Header>,
    #[serde(rename = "ID")]
    pub id: i64,
    #[serde(rename = "TTL")]
    pub ttl: i64,
    #[serde(rename = "Error")]
    pub error: String,
}

impl From<&etcd_client::LeaseGrantResponse> for LeaseGrantResult {
    fn from(response: &etcd_client::LeaseGrantResponse) -> Self {
        Self {
            header: header_of(response.header()),
            id: response.id(),
            ttl: response.ttl(),
            error: response.error().to_owned(),
        }
    }
}

/// `LeaseRevokeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LeaseRevokeResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
}

impl From<&etcd_client::LeaseRevokeResponse> for LeaseRevokeResult {
    fn from(response: &etcd_client::LeaseRevokeResponse) -> Self {
        Self {
            header: header_of(response.header()),
        }
    }
}

/// clientv3's `LeaseKeepAliveResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LeaseKeepAliveResult {
    #[serde(flatten)]
    pub header: Option<Header>,
    #[serde(rename = "ID")]
    pub id: i64,
    #[serde(rename = "TTL")]
    pub ttl: i64,
}

impl From<&etcd_client::LeaseKeepAliveResponse> for LeaseKeepAliveResult {
    fn from(response: &etcd_client::LeaseKeepAliveResponse) -> Self {
        Self {
            header: header_of(response.header()),
            id: response.id(),
            ttl: response.ttl(),
        }
    }
}

/// clientv3's `LeaseTimeToLiveResponse`; `keys` is null when there are none.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LeaseTimeToLiveResult {
    #[serde(flatten)]
    pub header: Option<Header>,
    pub id: i64,
    pub ttl: i64,
    #[serde(rename = "granted-ttl")]
    pub granted_ttl: i64,
    #[serde(serialize_with = "base64_list")]
    pub keys: Vec<Vec<u8>>,
}

impl From<&etcd_client::LeaseTimeToLiveResponse> for LeaseTimeToLiveResult {
    fn from(response: &etcd_client::LeaseTimeToLiveResponse) -> Self {
        Self {
            header: header_of(response.header()),
            id: response.id(),
            ttl: response.ttl(),
            granted_ttl: response.granted_ttl(),
            keys: response.keys().to_vec(),
        }
    }
}

/// clientv3's `LeaseLeasesResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LeaseListResult {
    #[serde(flatten)]
    pub header: Option<Header>,
    pub leases: Vec<LeaseId>,
}

/// One entry of a lease list.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LeaseId {
    pub id: i64,
}

impl From<&etcd_client::LeaseLeasesResponse> for LeaseListResult {
    fn from(response: &etcd_client::LeaseLeasesResponse) -> Self {
        Self {
            header: header_of(response.header()),
            leases: response
                .leases()
                .iter()
                .map(|lease| LeaseId { id: lease.id() })
                .collect(),
        }
    }
}

/// `etcdserverpb.Member`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Member {
    #[serde(rename = "ID", skip_serializing_if = "is_zero_u64")]
    pub id: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "peerURLs", skip_serializing_if = "Vec::is_empty")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", skip_serializing_if = "is_false")]
    pub is_learner: bool,
}

impl From<&etcd_client::Member> for Member {
    fn from(member: &etcd_client::Member) -> Self {
        Self {
            id: member.id(),
            name: member.name().to_owned(),
            peer_urls: member.peer_urls().to_vec(),
            client_urls: member.client_urls().to_vec(),
            is_learner: member.is_learner(),
        }
    }
}

fn members_of(members: &[etcd_client::Member]) -> Vec<Member> {
    members.iter().map(Member::from).collect()
}

/// The list, remove, update and promote responses of the Cluster service.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct MembersResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
}

impl MembersResult {
    /// From the parts every Cluster response but MemberAdd shares.
    pub(crate) fn new(
        header: Option<&etcd_client::ResponseHeader>,
        members: &[etcd_client::Member],
    ) -> Self {
        Self {
            header: header_of(header),
            members: members_of(members),
        }
    }
}

/// `MemberAddResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct MemberAddResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<Member>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
}

impl From<&etcd_client::MemberAddResponse> for MemberAddResult {
    fn from(response: &etcd_client::MemberAddResponse) -> Self {
        Self {
            header: header_of(response.header()),
            member: response.member().map(Member::from),
            members: members_of(response.member_list()),
        }
    }
}

/// One endpoint's `StatusResponse`, as `endpoint status` prints it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct EndpointStatus {
    #[serde(rename = "Endpoint")]
    pub endpoint: String,
    #[serde(rename = "Status")]
    pub status: Status,
}

/// `StatusResponse` (the fields etcd 3.4 has).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Status {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub db_size: i64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub leader: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub raft_index: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub raft_term: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub raft_applied_index: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub db_size_in_use: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub is_learner: bool,
}

impl From<&etcd_client::StatusResponse> for Status {
    fn from(response: &etcd_client::StatusResponse) -> Self {
        Self {
            header: header_of(response.header()),
            version: response.version().to_owned(),
            db_size: response.db_size(),
            leader: response.leader(),
            raft_index: response.raft_index(),
            raft_term: response.raft_term(),
            raft_applied_index: response.raft_applied_index(),
            errors: response.errors().to_vec(),
            db_size_in_use: response.raft_used_db_size(),
            is_learner: response.is_learner(),
        }
    }
}

/// One endpoint's health check, as `endpoint health` prints it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct EndpointHealth {
    pub endpoint: String,
    pub health: bool,
    pub took: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}
