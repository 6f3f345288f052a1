//! etcd's Txn: compares evaluated on the state before the txn, the branch
//! they choose checked whole, then its ops run in order as one revision.

use super::*;

impl Change<'_> {
    /// etcd's Txn: every compare on the path is evaluated against the state
    /// before the txn, the chosen ops are checked, then they run in order.
    pub(super) fn txn(&mut self, txn: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let mut path = Vec::new();
        self.choose(txn, &mut path)?;
        let mut cursor = path.iter().copied();
        self.check_branch(txn, &mut cursor)?;
        let mut cursor = path.iter().copied();
        self.run_txn(txn, &mut cursor)
    }

    /// The outcome of every compare on the path the txn will take, depth first.
    pub(super) fn choose(&self, txn: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
        let mut succeeded = true;
        for compare in &txn.compare {
            if !self.compare(compare)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in branch {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                self.choose(nested, path)?;
            }
        }
        Ok(())
    }

    pub(super) fn check_branch(
        &self,
        txn: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<(), MvccError> {
        let succeeded = path.next().unwrap_or(false);
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in branch {
            match &op.request {
                None => return Err(EtcdError::KeyNotFound.into()),
                Some(Request::RequestPut(put)) => self.check_put(put)?,
                Some(Request::RequestRange(range)) => {
                    self.bounds().resolve(range.revision)?;
                }
                Some(Request::RequestDeleteRange(_)) => {}
                Some(Request::RequestTxn(nested)) => self.check_branch(nested, path)?,
            }
        }
        Ok(())
    }

    pub(super) fn run_txn(
        &mut self,
        txn: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<TxnResponse, MvccError> {
        let succeeded = path.next().unwrap_or(false);
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match &op.request {
                None => return Err(EtcdError::KeyNotFound.into()),
                Some(Request::RequestRange(request)) => {
                    let bounds = self.bounds();
                    let response = range::range(&*self, request, bounds, bounds.latest)?;
                    OpResponse::ResponseRange(response)
                }
                Some(Request::RequestPut(put)) => OpResponse::ResponsePut(self.put(put)?),
                Some(Request::RequestDeleteRange(delete)) => {
                    OpResponse::ResponseDeleteRange(self.delete_range(delete)?)
                }
                Some(Request::RequestTxn(nested)) => {
                    OpResponse::ResponseTxn(self.run_txn(nested, path)?)
                }
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    /// etcd's compare: every key of the range must satisfy it; no key at all
    /// compares as a zero KeyValue, except that a VALUE compare is then false.
    pub(super) fn compare(&self, compare: &Compare) -> Result<bool, MvccError> {
        let at = self.read_at();
        let range = KeyRange::new(&compare.key, &compare.range_end);
        let found: Vec<Revision> = self
            .state
            .tree
            .range(&range, at)
            .map(|(_, key_at)| key_at.modified)
            .collect();
        let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
        if found.is_empty() {
            if target == CompareTarget::Value {
                return Ok(false);
            }
            return Ok(compare_kv(compare, target, &KeyValue::default()));
        }
        for revision in found {
            let kv = self.record(revision)?.kv;
            if !compare_kv(compare, target, &kv) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

pub(super) fn compare_kv(compare: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let union = compare.target_union.as_ref();
    let ordering = match target {
        CompareTarget::Value => {
            let wanted: &[u8] = match union {
                Some(TargetUnion::Value(value)) => value,
                _ => &[],
            };
            kv.value.as_slice().cmp(wanted)
        }
        CompareTarget::Version => kv.version.cmp(&number(union, target)),
        CompareTarget::Create => kv.create_revision.cmp(&number(union, target)),
        CompareTarget::Mod => kv.mod_revision.cmp(&number(union, target)),
        CompareTarget::Lease => kv.lease.cmp(&number(union, target)),
    };
    match CompareResult::try_from(compare.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

/// The number a compare targets; a union of another kind reads as 0, as in etcd.
pub(super) fn number(union: Option<&TargetUnion>, target: CompareTarget) -> i64 {
    match (union, target) {
        (Some(TargetUnion::Version(value)), CompareTarget::Version)
        | (Some(TargetUnion::CreateRevision(value)), CompareTarget::Create)
        | (Some(TargetUnion::ModRevision(value)), CompareTarget::Mod)
        | (Some(TargetUnion::Lease(value)), CompareTarget::Lease) => *value,
        _ => 0,
    }
}

pub(super) fn txn_puts(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_puts(nested),
            _ => false,
        })
}
