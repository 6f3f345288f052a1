//! etcd's KV service, as clients see it through the edge: etcd's checks
//! first (nothing malformed reaches the log), then the write or read
//! protocol, then etcd's headers.

use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::Caller;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::auth::caller_of;
use super::protocol::{revision_of, unexpected};
use super::{answer, MvccApi};
use crate::auth::rules::{self, Needs};
use crate::error::MvccError;
use crate::store::Reply;
use crate::validate;

/// etcd gives every response inside a txn a header with the revision alone;
/// only the txn's own header names the cluster, member and term.
fn fill_headers(response: &mut TxnResponse, revision: i64) {
    use cairn_proto::etcdserverpb::response_op::Response as Inner;
    let header = Some(ResponseHeader {
        revision,
        ..Default::default()
    });
    let header = &header;
    for op in &mut response.responses {
        match &mut op.response {
            Some(Inner::ResponseRange(inner)) => inner.header = *header,
            Some(Inner::ResponsePut(inner)) => inner.header = *header,
            Some(Inner::ResponseDeleteRange(inner)) => inner.header = *header,
            Some(Inner::ResponseTxn(inner)) => {
                inner.header = *header;
                fill_headers(inner, revision);
            }
            None => {}
        }
    }
}

impl MvccApi {
    pub(super) async fn range_of(
        &self,
        request: RangeRequest,
        caller: &Caller,
    ) -> Result<RangeResponse, MvccError> {
        validate::check_range(&request)?;
        self.checked(caller, &rules::range_needs(&request))?;
        if !request.serializable {
            self.linearize().await?;
        }
        let mut response = self.replica.store.range(request).await?;
        response.header = self.header(revision_of(&response.header));
        Ok(response)
    }

    pub(super) async fn put_of(
        &self,
        request: PutRequest,
        caller: &Caller,
    ) -> Result<PutResponse, MvccError> {
        validate::check_size(request.encoded_len(), &self.limits)?;
        validate::check_put(&request)?;
        let checked = self.checked(caller, &rules::put_needs(&request))?;
        match self.write_checked(Op::Put(request), Some(checked)).await? {
            Reply::Put(mut response) => {
                response.header = self.header(revision_of(&response.header));
                Ok(response)
            }
            _ => Err(unexpected("put")),
        }
    }

    pub(super) async fn delete_of(
        &self,
        request: DeleteRangeRequest,
        caller: &Caller,
    ) -> Result<DeleteRangeResponse, MvccError> {
        validate::check_size(request.encoded_len(), &self.limits)?;
        validate::check_delete_range(&request)?;
        let checked = self.checked(caller, &rules::delete_needs(&request))?;
        match self
            .write_checked(Op::DeleteRange(request), Some(checked))
            .await?
        {
            Reply::DeleteRange(mut response) => {
                response.header = self.header(revision_of(&response.header));
                Ok(response)
            }
            _ => Err(unexpected("delete")),
        }
    }

    pub(super) async fn txn_of(
        &self,
        request: TxnRequest,
        caller: &Caller,
    ) -> Result<TxnResponse, MvccError> {
        validate::check_size(request.encoded_len(), &self.limits)?;
        validate::check_txn(&request, &self.limits)?;
        let checked = self.checked(caller, &rules::txn_needs(&request))?;
        match self.write_checked(Op::Txn(request), Some(checked)).await? {
            Reply::Txn(mut response) => {
                let revision = revision_of(&response.header);
                response.header = self.header(revision);
                fill_headers(&mut response, revision);
                Ok(response)
            }
            _ => Err(unexpected("txn")),
        }
    }

    pub(super) async fn compact_of(
        &self,
        request: CompactionRequest,
        caller: &Caller,
    ) -> Result<CompactionResponse, MvccError> {
        let checked = self.checked(caller, &Needs::Root)?;
        // Refuse what cannot succeed without spending a log entry on it.
        let status = self.replica.store.status();
        if request.revision <= status.compacted {
            return Err(MvccError::Compacted {
                compact_revision: status.compacted,
            });
        }
        match self
            .write_checked(Op::Compaction(request), Some(checked))
            .await?
        {
            Reply::Compaction(mut response) => {
                response.header = self.header(revision_of(&response.header));
                Ok(response)
            }
            _ => Err(unexpected("compaction")),
        }
    }
}

#[tonic::async_trait]
impl Kv for MvccApi {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let caller = caller_of(&request);
        answer(self, "Range", self.range_of(request.into_inner(), &caller)).await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let caller = caller_of(&request);
        answer(self, "Put", self.put_of(request.into_inner(), &caller)).await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let caller = caller_of(&request);
        answer(
            self,
            "DeleteRange",
            self.delete_of(request.into_inner(), &caller),
        )
        .await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let caller = caller_of(&request);
        answer(self, "Txn", self.txn_of(request.into_inner(), &caller)).await
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let caller = caller_of(&request);
        answer(
            self,
            "Compact",
            self.compact_of(request.into_inner(), &caller),
        )
        .await
    }
}
