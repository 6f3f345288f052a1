//! etcd's checks on a request before it is proposed: what etcd refuses at its
//! API boundary is refused here with the same error, so nothing malformed ever
//! reaches the log.

use std::collections::BTreeSet;

use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::tree_index::KeyRange;

/// The limits etcd configures with `--max-txn-ops` and `--max-request-bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
        }
    }
}

/// A request whose encoding exceeds the limit is refused before anything else.
pub fn check_size(encoded_len: usize, limits: &Limits) -> Result<(), EtcdError> {
    if encoded_len > limits.max_request_bytes {
        return Err(EtcdError::RequestTooLarge);
    }
    Ok(())
}

/// etcd's checks on a Range.
pub fn check_range(request: &RangeRequest) -> Result<(), EtcdError> {
    if request.key.is_empty() {
        return Err(EtcdError::KeyNotProvided);
    }
    if SortOrder::try_from(request.sort_order).is_err()
        || SortTarget::try_from(request.sort_target).is_err()
    {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

/// etcd's checks on a Put.
pub fn check_put(request: &PutRequest) -> Result<(), EtcdError> {
    if request.key.is_empty() {
        return Err(EtcdError::KeyNotProvided);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// etcd's checks on a DeleteRange.
pub fn check_delete_range(request: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if request.key.is_empty() {
        return Err(EtcdError::KeyNotProvided);
    }
    Ok(())
}

/// A txn: its size, every compare and op (nested txns included), and the rule
/// that no key is written twice in one branch.
pub fn check_txn(request: &TxnRequest, limits: &Limits) -> Result<(), EtcdError> {
    check_txn_ops(request, limits)?;
    check_writes(&request.success)?;
    check_writes(&request.failure)?;
    Ok(())
}

fn check_txn_ops(request: &TxnRequest, limits: &Limits) -> Result<(), EtcdError> {
    let largest = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len());
    if largest > limits.max_txn_ops {
        return Err(EtcdError::TooManyOps);
    }
    if request.compare.iter().any(|compare| compare.key.is_empty()) {
        return Err(EtcdError::KeyNotProvided);
    }
    for op in request.success.iter().chain(&request.failure) {
        check_op(op, limits)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, limits: &Limits) -> Result<(), EtcdError> {
    match &op.request {
        None => Err(EtcdError::KeyNotFound),
        Some(Request::RequestRange(range)) => check_range(range),
        Some(Request::RequestPut(put)) => check_put(put),
        Some(Request::RequestDeleteRange(delete)) => check_delete_range(delete),
        Some(Request::RequestTxn(txn)) => check_txn_ops(txn, limits),
    }
}

/// Keys put and ranges deleted by one branch, nested txns included.
struct Writes {
    puts: BTreeSet<Vec<u8>>,
    deletes: Vec<KeyRange>,
}

impl Writes {
    fn deletes_cover(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|range| range.contains(key))
    }
}

/// etcd's duplicate-key rule for one branch: no key is put twice, and no key
/// is both put and covered by a delete. Deletes may overlap. The two branches
/// of a nested txn exclude each other, so they may put the same key.
fn check_writes(ops: &[RequestOp]) -> Result<Writes, EtcdError> {
    let mut writes = Writes {
        puts: BTreeSet::new(),
        deletes: ops
            .iter()
            .filter_map(|op| match &op.request {
                Some(Request::RequestDeleteRange(delete)) => {
                    Some(KeyRange::new(&delete.key, &delete.range_end))
                }
                _ => None,
            })
            .collect(),
    };
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let then = check_writes(&nested.success)?;
        let otherwise = check_writes(&nested.failure)?;
        for key in &then.puts {
            if writes.puts.contains(key) || writes.deletes_cover(key) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        for key in &otherwise.puts {
            let clashes = writes.puts.contains(key) && !then.puts.contains(key);
            if clashes || writes.deletes_cover(key) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        writes.puts.extend(then.puts);
        writes.puts.extend(otherwise.puts);
        writes.deletes.extend(then.deletes);
        writes.deletes.extend(otherwise.deletes);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if writes.puts.contains(&put.key) || writes.deletes_cover(&put.key) {
            return Err(EtcdError::DuplicateKey);
        }
        writes.puts.insert(put.key.clone());
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb::Compare;

    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })),
        }
    }

    fn delete(key: &str, range_end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                range_end: range_end.as_bytes().to_vec(),
                ..Default::default()
            })),
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(txn(success, failure))),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: Vec::new(),
            success,
            failure,
        }
    }

    fn check(request: &TxnRequest) -> Result<(), EtcdError> {
        check_txn(request, &Limits::default())
    }

    #[test]
    fn duplicate_key_rules() {
        let cases = [
            (
                "a key put twice in one branch",
                txn(vec![put("a"), put("a")], vec![]),
                Err(EtcdError::DuplicateKey),
            ),
            (
                "a put the branch also deletes",
                txn(vec![delete("a", "c"), put("b")], vec![]),
                Err(EtcdError::DuplicateKey),
            ),
            (
                "a put beside a delete that misses it",
                txn(vec![delete("a", "b"), put("b")], vec![]),
                Ok(()),
            ),
            (
                "overlapping deletes",
                txn(vec![delete("a", "c"), delete("b", "d")], vec![]),
                Ok(()),
            ),
            (
                "the same key in success and failure",
                txn(vec![put("a")], vec![put("a")]),
                Ok(()),
            ),
            (
                "both branches of a nested txn",
                txn(vec![nested(vec![put("a")], vec![put("a")])], vec![]),
                Ok(()),
            ),
            (
                "a nested put of an outer put",
                txn(vec![put("a"), nested(vec![put("a")], vec![])], vec![]),
                Err(EtcdError::DuplicateKey),
            ),
            (
                "a nested else-put of an outer put",
                txn(vec![put("a"), nested(vec![], vec![put("a")])], vec![]),
                Err(EtcdError::DuplicateKey),
            ),
            (
                "an outer put a nested delete covers",
                txn(
                    vec![put("b"), nested(vec![delete("a", "c")], vec![])],
                    vec![],
                ),
                Err(EtcdError::DuplicateKey),
            ),
            (
                "a nested put an outer delete covers",
                txn(
                    vec![delete("a", "\0"), nested(vec![put("x")], vec![])],
                    vec![],
                ),
                Err(EtcdError::DuplicateKey),
            ),
            (
                "a single-key delete and a put of another key",
                txn(vec![delete("a", ""), put("ab")], vec![]),
                Ok(()),
            ),
        ];
        for (rule, request, expected) in cases {
            assert_eq!(check(&request), expected, "{rule}");
        }
    }

    #[test]
    fn too_many_operations_counts_every_level() {
        let limits = Limits {
            max_txn_ops: 3,
            ..Default::default()
        };
        let ops = |count: usize| {
            (0..count)
                .map(|n| put(&format!("k{n}")))
                .collect::<Vec<_>>()
        };
        assert_eq!(check_txn(&txn(ops(3), ops(3)), &limits), Ok(()));
        assert_eq!(
            check_txn(&txn(ops(4), vec![]), &limits),
            Err(EtcdError::TooManyOps)
        );
        let deep = txn(vec![nested(ops(4), vec![])], vec![]);
        assert_eq!(check_txn(&deep, &limits), Err(EtcdError::TooManyOps));
        let compares = TxnRequest {
            compare: (0..4)
                .map(|_| Compare {
                    key: b"k".to_vec(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(check_txn(&compares, &limits), Err(EtcdError::TooManyOps));
    }

    #[test]
    fn empty_keys_and_empty_ops_are_refused() {
        let empty_compare = TxnRequest {
            compare: vec![Compare::default()],
            ..Default::default()
        };
        assert_eq!(check(&empty_compare), Err(EtcdError::KeyNotProvided));
        assert_eq!(
            check(&txn(vec![RequestOp { request: None }], vec![])),
            Err(EtcdError::KeyNotFound)
        );
        assert_eq!(
            check(&txn(vec![put("")], vec![])),
            Err(EtcdError::KeyNotProvided)
        );
        assert_eq!(
            check_range(&RangeRequest::default()),
            Err(EtcdError::KeyNotProvided)
        );
        assert_eq!(
            check_delete_range(&DeleteRangeRequest::default()),
            Err(EtcdError::KeyNotProvided)
        );
    }

    #[test]
    fn put_flags_refuse_what_they_ignore() {
        let base = PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        };
        let with_value = PutRequest {
            ignore_value: true,
            value: b"v".to_vec(),
            ..base.clone()
        };
        assert_eq!(check_put(&with_value), Err(EtcdError::ValueProvided));
        let with_lease = PutRequest {
            ignore_lease: true,
            lease: 7,
            ..base.clone()
        };
        assert_eq!(check_put(&with_lease), Err(EtcdError::LeaseProvided));
        let both_ignored = PutRequest {
            ignore_value: true,
            ignore_lease: true,
            ..base
        };
        assert_eq!(check_put(&both_ignored), Ok(()));
    }

    #[test]
    fn unknown_sort_options_are_refused() {
        let range = |order: i32, target: i32| RangeRequest {
            key: b"k".to_vec(),
            sort_order: order,
            sort_target: target,
            ..Default::default()
        };
        assert_eq!(check_range(&range(2, 4)), Ok(()));
        assert_eq!(check_range(&range(3, 0)), Err(EtcdError::InvalidSortOption));
        assert_eq!(check_range(&range(0, 5)), Err(EtcdError::InvalidSortOption));
    }

    #[test]
    fn requests_over_the_size_limit_are_refused() {
        let limits = Limits::default();
        assert_eq!(check_size(limits.max_request_bytes, &limits), Ok(()));
        assert_eq!(
            check_size(limits.max_request_bytes + 1, &limits),
            Err(EtcdError::RequestTooLarge)
        );
    }
}
