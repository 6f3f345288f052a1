//! Wire facts of the etcd v3 protos that etcd clients depend on: field numbers
//! (checked against hand-computed protobuf bytes), oneof tags, enum values and
//! the gRPC method paths the generated clients and servers use.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use cairn_proto::etcdserverpb::{
    alarm_request, auth_server, cluster_client, cluster_server, compare, downgrade_request,
    kv_client, kv_server, lease_client, lease_server, maintenance_client, maintenance_server,
    range_request, request_op, response_op, watch_client, watch_create_request, watch_request,
    watch_server, AlarmMember, AlarmRequest, AlarmType, Compare, DeleteRangeRequest,
    DowngradeRequest, HashKvRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseTimeToLiveResponse, Member, MemberAddRequest, MemberListRequest, MoveLeaderRequest,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    SnapshotRequest, StatusRequest, StatusResponse, TxnRequest, TxnResponse, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use cairn_proto::{authpb, mvccpb};
use prost::Message;
use tonic::body::Body as BoxBody;
use tonic::codegen::{http, tokio_stream, Service};

fn decode<M: Message + Default>(bytes: &[u8]) -> M {
    M::decode(bytes).expect("hand-encoded bytes decode")
}

// ------------------------------------------------------------------ encodings

#[test]
fn range_request_field_numbers() {
    let req = RangeRequest {
        key: b"foo".to_vec(),
        range_end: b"fop".to_vec(),
        limit: 10,
        revision: 5,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: true,
        count_only: false,
        min_mod_revision: 7,
        max_mod_revision: 0,
        min_create_revision: 0,
        max_create_revision: 300,
    };
    let expected: &[u8] = &[
        0x0a, 3, b'f', b'o', b'o', // 1 key
        0x12, 3, b'f', b'o', b'p', // 2 range_end
        0x18, 10, // 3 limit
        0x20, 5, // 4 revision
        0x28, 2, // 5 sort_order = DESCEND
        0x30, 3, // 6 sort_target = MOD
        0x38, 1, // 7 serializable
        0x40, 1, // 8 keys_only
        0x50, 7, // 10 min_mod_revision
        0x68, 0xac, 0x02, // 13 max_create_revision = 300
    ];
    assert_eq!(req.encode_to_vec(), expected);
    assert_eq!(decode::<RangeRequest>(expected), req);

    let count = RangeRequest {
        count_only: true,
        max_mod_revision: 1,
        min_create_revision: 2,
        ..Default::default()
    };
    assert_eq!(count.encode_to_vec(), [0x48, 1, 0x58, 1, 0x60, 2]);
}

#[test]
fn put_and_delete_request_field_numbers() {
    let put = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 0x1234,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    assert_eq!(
        put.encode_to_vec(),
        [0x0a, 1, b'k', 0x12, 1, b'v', 0x18, 0xb4, 0x24, 0x20, 1, 0x28, 1, 0x30, 1]
    );

    let del = DeleteRangeRequest {
        key: b"a".to_vec(),
        range_end: vec![0],
        prev_kv: true,
    };
    assert_eq!(del.encode_to_vec(), [0x0a, 1, b'a', 0x12, 1, 0, 0x18, 1]);
}

#[test]
fn put_response_decodes() {
    let bytes: &[u8] = &[
        0x0a, 4, 0x08, 0x2a, 0x18, 2, // header { cluster_id: 42, revision: 2 }
        0x12, 14, // prev_kv
        0x0a, 1, b'k', // key
        0x10, 1, // create_revision
        0x18, 1, // mod_revision
        0x20, 1, // version
        0x2a, 1, b'v', // value
        0x30, 0x10, // lease
    ];
    let resp: PutResponse = decode(bytes);
    assert_eq!(
        resp,
        PutResponse {
            header: Some(ResponseHeader {
                cluster_id: 42,
                revision: 2,
                ..Default::default()
            }),
            prev_kv: Some(mvccpb::KeyValue {
                key: b"k".to_vec(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                value: b"v".to_vec(),
                lease: 16,
            }),
        }
    );
}

#[test]
fn response_header_and_range_response() {
    let header = ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision: 3,
        raft_term: 4,
    };
    assert_eq!(header.encode_to_vec(), [0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4]);

    let bytes: &[u8] = &[
        0x12, 3, 0x0a, 1, b'a', // kvs[0] { key: "a" }
        0x12, 3, 0x0a, 1, b'b', // kvs[1] { key: "b" }
        0x18, 1, // more
        0x20, 5, // count
    ];
    let resp: RangeResponse = decode(bytes);
    assert_eq!(resp.kvs.len(), 2);
    assert_eq!(resp.kvs[1].key, b"b");
    assert!(resp.more);
    assert_eq!(resp.count, 5);
}

#[test]
fn compare_oneof_and_range_end_tag_64() {
    // result = NOT_EQUAL, target = MOD, key = "k", mod_revision = 7, range_end = "l".
    let bytes: &[u8] = &[
        0x08, 3, 0x10, 2, 0x1a, 1, b'k', 0x30, 7, // field 6 in target_union
        0x82, 0x04, 1, b'l', // field 64, wire type 2
    ];
    let expected = Compare {
        result: compare::CompareResult::NotEqual as i32,
        target: compare::CompareTarget::Mod as i32,
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(7)),
    };
    let got: Compare = decode(bytes);
    assert_eq!(got, expected);
    assert_eq!(expected.encoded_len(), bytes.len());

    // Each member of target_union has its own tag.
    let tags = [
        (compare::TargetUnion::Version(1), 0x20),
        (compare::TargetUnion::CreateRevision(1), 0x28),
        (compare::TargetUnion::ModRevision(1), 0x30),
        (compare::TargetUnion::Lease(1), 0x40),
    ];
    for (member, tag) in tags {
        let cmp = Compare {
            target_union: Some(member),
            ..Default::default()
        };
        assert_eq!(cmp.encode_to_vec(), [tag, 1]);
    }
    let value = Compare {
        target_union: Some(compare::TargetUnion::Value(b"x".to_vec())),
        ..Default::default()
    };
    assert_eq!(value.encode_to_vec(), [0x3a, 1, b'x']);

    assert_eq!(compare::CompareTarget::Lease as i32, 4);
    assert_eq!(compare::CompareTarget::Value as i32, 3);
}

#[test]
fn txn_request_and_response_oneofs() {
    let txn = TxnRequest {
        compare: vec![Compare {
            key: b"k".to_vec(),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest::default())),
        }],
    };
    assert_eq!(
        txn.encode_to_vec(),
        [
            0x0a, 3, 0x1a, 1, b'k', // compare[0] { key }
            0x12, 5, 0x12, 3, 0x0a, 1, b'k', // success[0] { request_put { key } }
            0x1a, 2, 0x22, 0, // failure[0] { request_txn {} }
        ]
    );
    let range_op = RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest::default())),
    };
    assert_eq!(range_op.encode_to_vec(), [0x0a, 0]);
    let delete_op = RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest::default(),
        )),
    };
    assert_eq!(delete_op.encode_to_vec(), [0x1a, 0]);

    // succeeded, then responses: range, put, delete_range, txn.
    let bytes: &[u8] = &[
        0x10, 1, 0x1a, 2, 0x0a, 0, 0x1a, 2, 0x12, 0, 0x1a, 4, 0x1a, 2, 0x10, 3, 0x1a, 2, 0x22, 0,
    ];
    let resp: TxnResponse = decode(bytes);
    assert!(resp.succeeded);
    let kinds: Vec<_> = resp
        .responses
        .iter()
        .map(|op| match op.response.as_ref().expect("response set") {
            response_op::Response::ResponseRange(_) => "range",
            response_op::Response::ResponsePut(_) => "put",
            response_op::Response::ResponseDeleteRange(d) => {
                assert_eq!(d.deleted, 3);
                "delete"
            }
            response_op::Response::ResponseTxn(_) => "txn",
        })
        .collect();
    assert_eq!(kinds, ["range", "put", "delete", "txn"]);
}

#[test]
fn watch_request_oneof_and_create_fields() {
    let create = WatchCreateRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        start_revision: 3,
        progress_notify: true,
        filters: vec![
            watch_create_request::FilterType::Noput as i32,
            watch_create_request::FilterType::Nodelete as i32,
        ],
        prev_kv: true,
        watch_id: 5,
        fragment: true,
    };
    let create_bytes: &[u8] = &[
        0x0a, 1, b'a', // 1 key
        0x12, 1, b'b', // 2 range_end
        0x18, 3, // 3 start_revision
        0x20, 1, // 4 progress_notify
        0x2a, 2, 0, 1, // 5 filters, packed
        0x30, 1, // 6 prev_kv
        0x38, 5, // 7 watch_id
        0x40, 1, // 8 fragment
    ];
    assert_eq!(create.encode_to_vec(), create_bytes);
    // Older encoders may send the repeated enum unpacked; it must still decode.
    let unpacked: WatchCreateRequest = decode(&[0x28, 0, 0x28, 1]);
    assert_eq!(unpacked.filters, [0, 1]);

    let req = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    };
    let mut expected = vec![0x0a, create_bytes.len() as u8];
    expected.extend_from_slice(create_bytes);
    assert_eq!(req.encode_to_vec(), expected);

    let cancel = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(
            WatchCancelRequest { watch_id: 7 },
        )),
    };
    assert_eq!(cancel.encode_to_vec(), [0x12, 2, 0x08, 7]);

    let progress = WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(
            WatchProgressRequest {},
        )),
    };
    assert_eq!(progress.encode_to_vec(), [0x1a, 0]);
}

#[test]
fn watch_response_decodes() {
    let bytes: &[u8] = &[
        0x0a, 8, 0x08, 1, 0x10, 2, 0x18, 9, 0x20, 3, // header
        0x10, 4, // 2 watch_id
        0x18, 1, // 3 created
        0x20, 1, // 4 canceled
        0x28, 6, // 5 compact_revision
        0x32, 1, b'x', // 6 cancel_reason
        0x38, 1, // 7 fragment
        0x5a, 9, // 11 events[0]
        0x08, 1, // type = DELETE
        0x12, 5, 0x0a, 1, b'a', 0x18, 9, // kv { key: "a", mod_revision: 9 }
        0x5a, 7, // 11 events[1]
        0x1a, 5, 0x0a, 1, b'a', 0x20, 2, // prev_kv { key: "a", version: 2 }
    ];
    let resp: WatchResponse = decode(bytes);
    assert_eq!(
        resp.header,
        Some(ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 9,
            raft_term: 3,
        })
    );
    assert_eq!(resp.watch_id, 4);
    assert!(resp.created && resp.canceled && resp.fragment);
    assert_eq!(resp.compact_revision, 6);
    assert_eq!(resp.cancel_reason, "x");
    assert_eq!(resp.events.len(), 2);
    let delete = &resp.events[0];
    assert_eq!(delete.r#type(), mvccpb::event::EventType::Delete);
    let kv = delete.kv.as_ref().expect("kv set");
    assert_eq!((kv.key.as_slice(), kv.mod_revision), (b"a".as_slice(), 9));
    let put = &resp.events[1];
    assert_eq!(put.r#type(), mvccpb::event::EventType::Put);
    assert_eq!(put.prev_kv.as_ref().map(|kv| kv.version), Some(2));
}

#[test]
fn lease_messages_field_numbers() {
    assert_eq!(
        LeaseKeepAliveRequest { id: 300 }.encode_to_vec(),
        [0x08, 0xac, 0x02]
    );
    let keepalive: LeaseKeepAliveResponse = decode(&[0x10, 7, 0x18, 60]);
    assert_eq!((keepalive.id, keepalive.ttl), (7, 60));
    // TTL = -1 for a missing lease is a ten-byte varint.
    let ttl: LeaseTimeToLiveResponse = decode(&[
        0x10, 7, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x20, 30, 0x2a,
        1, b'k',
    ]);
    assert_eq!((ttl.id, ttl.ttl, ttl.granted_ttl), (7, -1, 30));
    assert_eq!(ttl.keys, [b"k".to_vec()]);
}

#[test]
fn maintenance_messages_field_numbers() {
    let status = StatusResponse {
        version: "3.5.0".to_string(),
        db_size: 1,
        leader: 2,
        raft_index: 3,
        raft_term: 4,
        raft_applied_index: 100,
        errors: vec!["e".to_string()],
        db_size_in_use: 5,
        is_learner: true,
        ..Default::default()
    };
    assert_eq!(
        status.encode_to_vec(),
        [
            0x12, 5, b'3', b'.', b'5', b'.', b'0', // 2 version
            0x18, 1, 0x20, 2, 0x28, 3, 0x30, 4, // 3..6
            0x38, 100, // 7 raftAppliedIndex
            0x42, 1, b'e', // 8 errors
            0x48, 5, // 9 dbSizeInUse
            0x50, 1, // 10 isLearner
        ]
    );

    let alarm = AlarmRequest {
        action: alarm_request::AlarmAction::Deactivate as i32,
        member_id: 9,
        alarm: AlarmType::Nospace as i32,
    };
    assert_eq!(alarm.encode_to_vec(), [0x08, 2, 0x10, 9, 0x18, 1]);
    let member: AlarmMember = decode(&[0x08, 9, 0x10, 2]);
    assert_eq!(member.alarm(), AlarmType::Corrupt);
    assert_eq!(AlarmType::Nospace.as_str_name(), "NOSPACE");
    assert_eq!(AlarmType::from_str_name("NONE"), Some(AlarmType::None));

    let downgrade = DowngradeRequest {
        action: downgrade_request::DowngradeAction::Cancel as i32,
        version: "3.4".to_string(),
    };
    assert_eq!(
        downgrade.encode_to_vec(),
        [0x08, 2, 0x12, 3, b'3', b'.', b'4']
    );
    assert_eq!(
        MoveLeaderRequest { target_id: 3 }.encode_to_vec(),
        [0x08, 3]
    );
}

#[test]
fn cluster_and_auth_messages_field_numbers() {
    let member: Member = decode(&[
        0x08, 1, 0x12, 1, b'n', 0x1a, 1, b'p', 0x22, 1, b'c', 0x28, 1,
    ]);
    assert_eq!(member.id, 1);
    assert_eq!(member.name, "n");
    assert_eq!(member.peer_ur_ls, ["p"]);
    assert_eq!(member.client_ur_ls, ["c"]);
    assert!(member.is_learner);
    let add = MemberAddRequest {
        peer_ur_ls: vec!["p".to_string()],
        is_learner: true,
    };
    assert_eq!(add.encode_to_vec(), [0x0a, 1, b'p', 0x10, 1]);
    assert_eq!(
        MemberListRequest { linearizable: true }.encode_to_vec(),
        [0x08, 1]
    );

    let perm = authpb::Permission {
        perm_type: authpb::permission::Type::Readwrite as i32,
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
    };
    assert_eq!(
        perm.encode_to_vec(),
        [0x08, 2, 0x12, 1, b'a', 0x1a, 1, b'b']
    );
    let opts = authpb::UserAddOptions { no_password: true };
    assert_eq!(opts.encode_to_vec(), [0x08, 1]);
}

// ------------------------------------------------------------------ service paths

#[test]
fn service_names() {
    assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
    assert_eq!(auth_server::SERVICE_NAME, "etcdserverpb.Auth");
}

/// A transport that records each request's path and answers every call with a
/// trailers-only UNIMPLEMENTED, so a generated client finishes without a network.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn paths(&self) -> Vec<String> {
        self.0.lock().expect("recorder lock").clone()
    }
}

impl Service<http::Request<BoxBody>> for Recorder {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<BoxBody>) -> Self::Future {
        self.0
            .lock()
            .expect("recorder lock")
            .push(req.uri().path().to_string());
        let mut resp = http::Response::new(tonic::body::Body::empty());
        let headers = resp.headers_mut();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", http::HeaderValue::from_static("12"));
        std::future::ready(Ok(resp))
    }
}

/// Runs a future that never waits on anything external.
fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("future did not complete");
}

fn assert_unimplemented<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    let status = result.expect_err("the recorder answers UNIMPLEMENTED");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[test]
fn client_method_paths() {
    let rec = Recorder::default();

    let mut kv = kv_client::KvClient::new(rec.clone());
    assert_unimplemented(run(kv.range(RangeRequest::default())));
    assert_unimplemented(run(kv.txn(TxnRequest::default())));

    let mut watch = watch_client::WatchClient::new(rec.clone());
    let requests = tokio_stream::iter(vec![WatchRequest::default()]);
    assert_unimplemented(run(watch.watch(requests)));

    let mut lease = lease_client::LeaseClient::new(rec.clone());
    let requests = tokio_stream::iter(vec![LeaseKeepAliveRequest { id: 1 }]);
    assert_unimplemented(run(lease.lease_keep_alive(requests)));

    let mut cluster = cluster_client::ClusterClient::new(rec.clone());
    assert_unimplemented(run(cluster.member_list(MemberListRequest::default())));

    let mut maintenance = maintenance_client::MaintenanceClient::new(rec.clone());
    assert_unimplemented(run(maintenance.status(StatusRequest {})));
    assert_unimplemented(run(maintenance.hash_kv(HashKvRequest::default())));
    assert_unimplemented(run(maintenance.snapshot(SnapshotRequest {})));
    assert_unimplemented(run(maintenance.move_leader(MoveLeaderRequest::default())));

    assert_eq!(
        rec.paths(),
        [
            "/etcdserverpb.KV/Range",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.Watch/Watch",
            "/etcdserverpb.Lease/LeaseKeepAlive",
            "/etcdserverpb.Cluster/MemberList",
            "/etcdserverpb.Maintenance/Status",
            "/etcdserverpb.Maintenance/HashKV",
            "/etcdserverpb.Maintenance/Snapshot",
            "/etcdserverpb.Maintenance/MoveLeader",
        ]
    );
}
