//! What the cases are made of: plans that become requests against the
//! model's current state, and the strategies that draw them.

use cairn_mvcc::validate::{self, Limits};
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::etcdserverpb::compare::{CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use proptest::prelude::*;

use crate::etcd::Model;

const KEYS: [&[u8]; 5] = [b"a", b"ab", b"b", b"c", b"d"];
const RANGE_ENDS: [&[u8]; 4] = [b"ab", b"b", b"c", b"e"];
const VALUES: [&[u8]; 4] = [b"", b"x", b"y", b"z"];

/// Where a read looks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum At {
    Latest,
    /// `n` revisions before the current one (the latest if that is below 1).
    Back(i64),
    /// One past the current revision.
    Ahead,
}

#[derive(Clone, Debug)]
pub(crate) struct RangePlan {
    key: Vec<u8>,
    range_end: Vec<u8>,
    limit: i64,
    sort_order: i32,
    sort_target: i32,
    keys_only: bool,
    count_only: bool,
    /// min mod, max mod, min create, max create: revisions back from the current.
    filters: [Option<i64>; 4],
    at: At,
}

#[derive(Clone, Debug)]
pub(crate) struct PutPlan {
    key: Vec<u8>,
    value: Vec<u8>,
    lease: i64,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct ComparePlan {
    key: Vec<u8>,
    range_end: Vec<u8>,
    target: i32,
    result: i32,
    value: Vec<u8>,
    number: i64,
    /// For CREATE and MOD: revisions back from the current instead of `number`.
    back: Option<i64>,
}

#[derive(Clone, Debug)]
pub(crate) enum OpPlan {
    Range(RangePlan),
    Put(PutPlan),
    Delete(Vec<u8>, Vec<u8>, bool),
    Txn(TxnPlan),
}

#[derive(Clone, Debug)]
pub(crate) struct TxnPlan {
    compares: Vec<ComparePlan>,
    success: Vec<OpPlan>,
    failure: Vec<OpPlan>,
}

#[derive(Clone, Debug)]
pub(crate) enum CommandPlan {
    Put(PutPlan),
    Delete(Vec<u8>, Vec<u8>, bool),
    Txn(TxnPlan),
    /// Compact at `current + 1 - n`.
    Compact(i64),
    Grant(i64, i64),
    Revoke(i64),
}

#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// One call to `apply`: its log entries, each with its commands.
    Apply(Vec<Vec<CommandPlan>>),
    Read(RangePlan),
    /// The last applied entry delivered again: it must be skipped.
    Replay(PutPlan),
}

impl Model {
    fn back(&self, n: i64) -> i64 {
        (self.current() - n).max(1)
    }

    pub(crate) fn range_request(&self, plan: &RangePlan) -> RangeRequest {
        let bound = |filter: Option<i64>| filter.map_or(0, |n| self.back(n));
        RangeRequest {
            key: plan.key.clone(),
            range_end: plan.range_end.clone(),
            limit: plan.limit,
            revision: match plan.at {
                At::Latest => 0,
                At::Back(n) => (self.current() - n).max(0),
                At::Ahead => self.current() + 1,
            },
            sort_order: plan.sort_order,
            sort_target: plan.sort_target,
            serializable: false,
            keys_only: plan.keys_only,
            count_only: plan.count_only,
            min_mod_revision: bound(plan.filters[0]),
            max_mod_revision: bound(plan.filters[1]),
            min_create_revision: bound(plan.filters[2]),
            max_create_revision: bound(plan.filters[3]),
        }
    }

    /// A put that passes the checks before proposing: an ignored value or
    /// lease is not given.
    pub(crate) fn put_request(plan: &PutPlan) -> PutRequest {
        PutRequest {
            key: plan.key.clone(),
            value: if plan.ignore_value {
                Vec::new()
            } else {
                plan.value.clone()
            },
            lease: if plan.ignore_lease { 0 } else { plan.lease },
            prev_kv: plan.prev_kv,
            ignore_value: plan.ignore_value,
            ignore_lease: plan.ignore_lease,
        }
    }

    fn compare(&self, plan: &ComparePlan) -> Compare {
        let target = CompareTarget::try_from(plan.target).unwrap_or(CompareTarget::Version);
        let revision = plan.back.map_or(plan.number, |n| self.back(n));
        let union = match target {
            CompareTarget::Value => TargetUnion::Value(plan.value.clone()),
            CompareTarget::Version => TargetUnion::Version(plan.number),
            CompareTarget::Create => TargetUnion::CreateRevision(revision),
            CompareTarget::Mod => TargetUnion::ModRevision(revision),
            CompareTarget::Lease => TargetUnion::Lease(plan.number),
        };
        Compare {
            result: plan.result,
            target: plan.target,
            key: plan.key.clone(),
            range_end: plan.range_end.clone(),
            target_union: Some(union),
        }
    }

    fn op_request(&self, plan: &OpPlan) -> Request {
        match plan {
            OpPlan::Range(range) => Request::RequestRange(self.range_request(range)),
            OpPlan::Put(put) => Request::RequestPut(Self::put_request(put)),
            OpPlan::Delete(key, range_end, prev_kv) => {
                Request::RequestDeleteRange(DeleteRangeRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    prev_kv: *prev_kv,
                })
            }
            OpPlan::Txn(txn) => Request::RequestTxn(self.txn_request(txn)),
        }
    }

    /// The ops of a branch, less any that would break etcd's rule against
    /// writing a key twice in one txn (refused before proposing).
    fn branch(&self, plans: &[OpPlan]) -> Vec<RequestOp> {
        let mut kept: Vec<RequestOp> = Vec::new();
        for plan in plans {
            kept.push(RequestOp {
                request: Some(self.op_request(plan)),
            });
            let candidate = TxnRequest {
                compare: Vec::new(),
                success: kept.clone(),
                failure: Vec::new(),
            };
            if validate::check_txn(&candidate, &Limits::default()).is_err() {
                kept.pop();
            }
        }
        kept
    }

    fn txn_request(&self, plan: &TxnPlan) -> TxnRequest {
        TxnRequest {
            compare: plan.compares.iter().map(|c| self.compare(c)).collect(),
            success: self.branch(&plan.success),
            failure: self.branch(&plan.failure),
        }
    }

    pub(crate) fn command(&self, plan: &CommandPlan) -> Op {
        match plan {
            CommandPlan::Put(put) => Op::Put(Self::put_request(put)),
            CommandPlan::Delete(key, range_end, prev_kv) => Op::DeleteRange(DeleteRangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                prev_kv: *prev_kv,
            }),
            CommandPlan::Txn(txn) => Op::Txn(self.txn_request(txn)),
            CommandPlan::Compact(n) => Op::Compaction(CompactionRequest {
                revision: (self.current() + 1 - n).max(0),
                physical: false,
            }),
            CommandPlan::Grant(id, ttl) => Op::LeaseGrant(LeaseGrantRequest { ttl: *ttl, id: *id }),
            CommandPlan::Revoke(id) => Op::LeaseRevoke(LeaseRevokeRequest { id: *id }),
        }
    }
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS.to_vec()).prop_map(<[u8]>::to_vec)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(VALUES.to_vec()).prop_map(<[u8]>::to_vec)
}

/// A key and range end: one key, an interval (possibly empty), from a key
/// on, or every key.
fn key_range() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        4 => key().prop_map(|key| (key, Vec::new())),
        2 => (key(), prop::sample::select(RANGE_ENDS.to_vec()))
            .prop_map(|(key, end)| (key, end.to_vec())),
        1 => key().prop_map(|key| (key, vec![0])),
        1 => Just((vec![0], vec![0])),
    ]
}

fn at() -> impl Strategy<Value = At> {
    prop_oneof![
        5 => Just(At::Latest),
        2 => (0i64..=4).prop_map(At::Back),
        1 => Just(At::Ahead),
    ]
}

fn filter() -> impl Strategy<Value = Option<i64>> {
    prop::option::weighted(0.15, 0i64..=4)
}

fn range_plan() -> impl Strategy<Value = RangePlan> {
    (
        key_range(),
        prop_oneof![3 => Just(0i64), 2 => 1i64..=3],
        0i32..=2,
        0i32..=4,
        any::<bool>(),
        prop::bool::weighted(0.15),
        [filter(), filter(), filter(), filter()],
        at(),
    )
        .prop_map(
            |(
                (key, range_end),
                limit,
                sort_order,
                sort_target,
                keys_only,
                count_only,
                filters,
                at,
            )| {
                RangePlan {
                    key,
                    range_end,
                    limit,
                    sort_order,
                    sort_target,
                    keys_only,
                    count_only,
                    filters,
                    at,
                }
            },
        )
}

fn put_plan() -> impl Strategy<Value = PutPlan> {
    (
        key(),
        value(),
        // Lease 3 is never granted.
        prop::sample::select(vec![0i64, 0, 0, 0, 0, 1, 1, 2, 3]),
        any::<bool>(),
        prop::bool::weighted(0.08),
        prop::bool::weighted(0.08),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutPlan {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn compare_plan() -> impl Strategy<Value = ComparePlan> {
    (
        prop_oneof![4 => key().prop_map(|key| (key, Vec::new())), 1 => key_range()],
        0i32..=4,
        0i32..=3,
        value(),
        0i64..=3,
        prop::option::weighted(0.5, 0i64..=3),
    )
        .prop_map(
            |((key, range_end), target, result, value, number, back)| ComparePlan {
                key,
                range_end,
                target,
                result,
                value,
                number,
                back,
            },
        )
}

fn op_plan(depth: u32) -> BoxedStrategy<OpPlan> {
    let leaf = prop_oneof![
        2 => range_plan().prop_map(OpPlan::Range),
        3 => put_plan().prop_map(OpPlan::Put),
        2 => (key_range(), any::<bool>())
            .prop_map(|((key, range_end), prev_kv)| OpPlan::Delete(key, range_end, prev_kv)),
    ];
    if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![6 => leaf, 1 => txn_plan(depth - 1).prop_map(OpPlan::Txn)].boxed()
    }
}

fn txn_plan(depth: u32) -> BoxedStrategy<TxnPlan> {
    (
        prop::collection::vec(compare_plan(), 0..=2),
        prop::collection::vec(op_plan(depth), 1..=3),
        prop::collection::vec(op_plan(depth), 0..=2),
    )
        .prop_map(|(compares, success, failure)| TxnPlan {
            compares,
            success,
            failure,
        })
        .boxed()
}

fn command_plan() -> impl Strategy<Value = CommandPlan> {
    prop_oneof![
        6 => put_plan().prop_map(CommandPlan::Put),
        2 => (key_range(), any::<bool>())
            .prop_map(|((key, range_end), prev_kv)| CommandPlan::Delete(key, range_end, prev_kv)),
        4 => txn_plan(1).prop_map(CommandPlan::Txn),
        1 => (0i64..=4).prop_map(CommandPlan::Compact),
        1 => (1i64..=2, 1i64..=60).prop_map(|(id, ttl)| CommandPlan::Grant(id, ttl)),
        1 => (1i64..=3).prop_map(CommandPlan::Revoke),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let commands = prop_oneof![
        4 => prop::collection::vec(command_plan(), 1..=1),
        1 => prop::collection::vec(command_plan(), 2..=3),
    ];
    let entries = prop_oneof![
        4 => prop::collection::vec(commands.clone(), 1..=1),
        1 => prop::collection::vec(commands, 2..=2),
    ];
    prop_oneof![
        8 => entries.prop_map(Step::Apply),
        2 => range_plan().prop_map(Step::Read),
        1 => put_plan().prop_map(Step::Replay),
    ]
}

/// The steps, and the step before which the store restarts (== len: at the end).
pub(crate) fn scenario() -> impl Strategy<Value = (Vec<Step>, usize)> {
    (
        prop::collection::vec(step(), 1..40),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(steps, restart)| {
            let restart = restart.index(steps.len() + 1);
            (steps, restart)
        })
}
