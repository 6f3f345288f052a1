//! What Lock and Election share. A candidate is the key `<name>/<lease in
//! hex>`, held on a lease; the candidate with the lowest create revision holds
//! the lock or leads the election, and each of the others waits until every
//! older candidate's key is deleted — by its owner, or with its lease.

use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpAnswer;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::KeyValue;
use tonic::{Status, Streaming};

use crate::error::EdgeError;
use crate::local::Local;

/// The TTL, in seconds, of the lease a candidate gets when it names none; the
/// lease is not kept alive, so an abandoned lock frees itself.
pub(crate) const SESSION_TTL: i64 = 60;

/// The lease a candidate holds its key on: the one it named, or a new one.
pub(crate) async fn session_lease(local: &Local, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let granted = local
        .lease()
        .lease_grant(LeaseGrantRequest {
            ttl: SESSION_TTL,
            id: 0,
        })
        .await?
        .into_inner();
    Ok(granted.id)
}

/// The prefix every candidate of `name` shares.
pub(crate) fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// The key of the candidate holding `lease`.
pub(crate) fn candidate_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// The end of the range of keys starting with `prefix`, as etcd computes it.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The oldest candidate under `prefix`: who holds the lock or leads.
pub(crate) fn oldest(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

/// A candidate after entering: its create revision, the value its key held
/// if it existed already, and whether it is the oldest.
pub(crate) struct Entered {
    pub(crate) header: Option<ResponseHeader>,
    pub(crate) rev: i64,
    pub(crate) earlier_value: Option<Vec<u8>>,
    pub(crate) oldest: bool,
}

/// Puts the candidate key on `lease` unless it exists, and reads the oldest
/// candidate in the same transaction, so an uncontended candidate needs one
/// call.
pub(crate) async fn enter(
    local: &Local,
    prefix: &[u8],
    key: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<Entered, Status> {
    let read = |request: RangeRequest| RequestOp {
        request: Some(Op::RequestRange(request)),
    };
    let answer = local
        .kv()
        .txn(TxnRequest {
            compare: vec![create_revision_is(key, 0)],
            success: vec![
                RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: key.to_vec(),
                        value: value.to_vec(),
                        lease,
                        ..Default::default()
                    })),
                },
                read(oldest(prefix)),
            ],
            failure: vec![
                read(RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                }),
                read(oldest(prefix)),
            ],
        })
        .await?
        .into_inner();
    let revision = answer.header.as_ref().map_or(0, |header| header.revision);
    let (rev, earlier_value) = if answer.succeeded {
        (revision, None)
    } else {
        let own = first_kv(&answer, 0).ok_or(EdgeError::SessionExpired)?;
        (own.create_revision, Some(own.value.clone()))
    };
    let oldest = first_kv(&answer, 1).is_none_or(|owner| owner.create_revision == rev);
    Ok(Entered {
        header: answer.header,
        rev,
        earlier_value,
        oldest,
    })
}

fn first_kv(answer: &TxnResponse, op: usize) -> Option<&KeyValue> {
    match answer.responses.get(op)?.response.as_ref()? {
        OpAnswer::ResponseRange(range) => range.kvs.first(),
        _ => None,
    }
}

/// The comparison "`key` was created at `revision`" (0: does not exist).
pub(crate) fn create_revision_is(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        ..Default::default()
    }
}

/// Waits until no key under `prefix` created at or before `max_create_revision`
/// is left: the newest such key first, then again, so each wait is on one key.
pub(crate) async fn wait_deletes(
    local: &Local,
    prefix: &[u8],
    max_create_revision: i64,
) -> Result<(), Status> {
    loop {
        let newest_older: RangeResponse = local
            .kv()
            .range(RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                limit: 1,
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Create as i32,
                max_create_revision,
                ..Default::default()
            })
            .await?
            .into_inner();
        let Some(last) = newest_older.kvs.first() else {
            return Ok(());
        };
        let revision = newest_older.header.map_or(0, |header| header.revision);
        let mut watching = Watching::start(local, &last.key, Vec::new(), revision).await?;
        loop {
            let Some(answer) = watching.next().await? else {
                return Err(EdgeError::LostWatcher.into());
            };
            let deleted = answer
                .events
                .iter()
                .any(|event| event.r#type == EventType::Delete as i32);
            if deleted {
                break;
            }
        }
    }
}

/// Deletes `key` unconditionally: a lock's release.
pub(crate) async fn delete(local: &Local, key: &[u8]) -> Result<Option<ResponseHeader>, Status> {
    let answer = local
        .kv()
        .delete_range(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(answer.header)
}

/// One watch through the edge's Watch service; only responses that carry
/// events come out. The stream's request side ends after the create, which
/// leaves the watch running, as with etcd.
pub(crate) struct Watching {
    responses: Streaming<WatchResponse>,
}

impl Watching {
    /// Watches `[key, range_end)` (one key when `range_end` is empty) from
    /// `start_revision`.
    pub(crate) async fn start(
        local: &Local,
        key: &[u8],
        range_end: Vec<u8>,
        start_revision: i64,
    ) -> Result<Self, Status> {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.to_vec(),
                range_end,
                start_revision,
                ..Default::default()
            })),
        };
        let responses = local
            .watch()
            .watch(tokio_stream::once(create))
            .await?
            .into_inner();
        Ok(Self { responses })
    }

    /// The next response with events; `None` when the stream ended. A
    /// compacted or cancelled watch is an error, as for etcd's client.
    pub(crate) async fn next(&mut self) -> Result<Option<WatchResponse>, Status> {
        while let Some(answer) = self.responses.message().await? {
            if answer.compact_revision != 0 {
                return Err(Status::from(EtcdError::Compacted));
            }
            if answer.canceled {
                let reason = if answer.cancel_reason.is_empty() {
                    EtcdError::FutureRevision.message().to_owned()
                } else {
                    answer.cancel_reason
                };
                return Err(Status::unknown(reason));
            }
            if !answer.events.is_empty() {
                return Ok(Some(answer));
            }
        }
        Ok(None)
    }
}

/// Runs a clean-up call when dropped before [`Cleanup::disarm`]: a waiting
/// candidate whose caller went away leaves no key behind.
pub(crate) struct Cleanup {
    local: Local,
    step: Option<CleanupStep>,
}

/// What a [`Cleanup`] undoes.
pub(crate) enum CleanupStep {
    /// Delete the key (a lock waiter).
    Delete(Vec<u8>),
    /// Delete the key if it is still the one created at that revision (a
    /// campaign: resigning).
    Resign(Vec<u8>, i64),
}

impl Cleanup {
    pub(crate) fn new(local: &Local, step: CleanupStep) -> Self {
        Self {
            local: local.clone(),
            step: Some(step),
        }
    }

    pub(crate) fn disarm(mut self) {
        self.step = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(step) = self.step.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let local = self.local.clone();
        runtime.spawn(async move {
            let outcome = match step {
                CleanupStep::Delete(key) => delete(&local, &key).await.map(drop),
                CleanupStep::Resign(key, rev) => resign(&local, &key, rev).await.map(drop),
            };
            if let Err(status) = outcome {
                tracing::warn!(%status, "could not remove an abandoned candidate; its lease will");
            }
        });
    }
}

/// Runs `op` if `key` is still the candidate created at `rev`: a leader's
/// proclaim and resign. Answers the transaction.
pub(crate) async fn if_still_candidate(
    local: &Local,
    key: &[u8],
    rev: i64,
    op: Op,
) -> Result<TxnResponse, Status> {
    let answer = local
        .kv()
        .txn(TxnRequest {
            compare: vec![create_revision_is(key, rev)],
            success: vec![RequestOp { request: Some(op) }],
            failure: Vec::new(),
        })
        .await?
        .into_inner();
    Ok(answer)
}

/// Deletes `key` if it is still the candidate created at `rev`.
pub(crate) async fn resign(
    local: &Local,
    key: &[u8],
    rev: i64,
) -> Result<Option<ResponseHeader>, Status> {
    let delete = Op::RequestDeleteRange(DeleteRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    });
    Ok(if_still_candidate(local, key, rev, delete).await?.header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_key_is_the_name_a_slash_and_the_lease_in_lower_hex() {
        let prefix = prefix_of(b"jobs");
        assert_eq!(
            candidate_key(&prefix, 0x694d_a24d_2386_880a),
            b"jobs/694da24d2386880a"
        );
    }

    #[test]
    fn the_prefix_end_carries_past_trailing_ff_bytes() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0]);
    }
}
