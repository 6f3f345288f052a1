//! A key put and deleted by sibling nested txns, because that one revision
//! writes the key twice and watchers must see both events as etcd sends them.

use crate::harness::{op_delete, op_put, op_txn, txn, Kv};
use cairn_mvcc::tree_index::KeyRange;
use cairn_mvcc::validate::{self, Limits};
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::RevisionEvents;
use cairn_proto::mvccpb::event::EventType;

/// A put in one nested txn and a delete of the same key in a later sibling
/// nested txn pass etcd's duplicate-key check (and `check_txn`), so one
/// revision writes the key twice. etcd keeps both events in its history.
fn put_then_delete_in_sibling_txns(kv: &mut Kv) -> Vec<RevisionEvents> {
    let request = txn(
        vec![],
        vec![
            op_txn(txn(vec![], vec![op_put("k", "v")], vec![])),
            op_txn(txn(vec![], vec![op_delete("k", "")], vec![])),
        ],
        vec![],
    );
    let (result, revisions) = kv.run(Op::Txn(request.clone()));
    assert_eq!(validate::check_txn(&request, &Limits::default()), Ok(()));
    assert!(result.is_ok());
    assert_eq!(kv.get("k"), None);
    revisions
}

#[test]
fn history_keeps_both_events_of_a_key_put_then_deleted_in_one_txn() {
    let mut kv = Kv::new();
    let applied = put_then_delete_in_sibling_txns(&mut kv);
    let history = kv
        .store
        .events(&KeyRange::new(b"\0", b"\0"), 1, false, usize::MAX)
        .expect("history");
    let types = |revisions: &[RevisionEvents]| -> Vec<i32> {
        revisions
            .iter()
            .flat_map(|revision| revision.events.iter().map(|event| event.r#type))
            .collect()
    };
    let both = vec![EventType::Put as i32, EventType::Delete as i32];
    assert_eq!(types(&applied), both, "Applied::revisions has both");
    assert_eq!(types(&history), both, "so must the history");
}

#[test]
fn prev_kv_of_a_delete_is_the_key_before_the_txn() {
    // etcd's watch fills prev_kv from the key at mod_revision - 1: the key did
    // not exist before the txn, so the delete has none.
    let mut kv = Kv::new();
    let applied = put_then_delete_in_sibling_txns(&mut kv);
    let delete = applied[0]
        .events
        .iter()
        .find(|event| event.r#type == EventType::Delete as i32)
        .expect("a delete event");
    assert_eq!(delete.prev_kv, None);
}
