//! The NOSPACE alarm, because a full member must still let clients free
//! space and must keep refusing new data across a restart until disarmed.

use crate::harness::Kv;
use cairn_mvcc::store::Reply;
use cairn_mvcc::MvccError;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, PutRequest};

#[test]
fn nospace_refuses_what_adds_data_until_disarmed_and_survives_a_restart() {
    use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
    use cairn_proto::etcdserverpb::{AlarmRequest, AlarmType, DeleteRangeRequest};
    let alarm = |action: AlarmAction, member_id: u64| {
        Op::Alarm(AlarmRequest {
            action: action as i32,
            member_id,
            alarm: AlarmType::Nospace as i32,
        })
    };
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.grant(5);
    let (raised, _) = kv.run(alarm(AlarmAction::Activate, 42));
    assert!(matches!(raised, Ok(Reply::Alarm(ref response)) if response.alarms.len() == 1));
    let no_space = |result: &Result<Reply, MvccError>| matches!(result, Err(error) if error.etcd() == Some(EtcdError::NoSpace));
    let (put, _) = kv.run(Op::Put(PutRequest {
        key: b"b".to_vec(),
        value: b"2".to_vec(),
        ..Default::default()
    }));
    assert!(no_space(&put), "a put under NOSPACE: {put:?}");
    let (grant, _) = kv.run(Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 6 }));
    assert!(no_space(&grant), "a grant under NOSPACE: {grant:?}");

    // Deletes and revokes still free space; the alarm outlives a restart.
    let (deleted, revisions) = kv.run(Op::DeleteRange(DeleteRangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    }));
    assert!(deleted.is_ok() && revisions.len() == 1, "{deleted:?}");
    assert!(kv.revoke(5).0.is_ok());
    kv = kv.reopen();
    assert_eq!(kv.store.alarms().len(), 1);

    let (disarmed, _) = kv.run(alarm(AlarmAction::Deactivate, 42));
    assert!(matches!(disarmed, Ok(Reply::Alarm(ref response)) if response.alarms.len() == 1));
    assert!(kv.store.alarms().is_empty());
    let (put, _) = kv.run(Op::Put(PutRequest {
        key: b"b".to_vec(),
        value: b"2".to_vec(),
        ..Default::default()
    }));
    assert!(put.is_ok(), "a put after the disarm: {put:?}");
}
