//! etcd's HTTP/JSON gateway as a load: the puts and reads of `kv`, sent as
//! curl sends them (a JSON POST over HTTP/1.1 keep-alive connections), so the
//! gateway's cost per call compares with gRPC's on the same server.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::Status;

use crate::drive::Outcome;
use crate::keys::{key, space};
use crate::kv::{client_key_number, KvOperation, READ_KEYS};

/// HTTP/1.1 connections, pooled: one per request in flight, kept alive.
#[derive(Clone)]
pub(crate) struct Gateway {
    client: Client<HttpConnector, Full<Bytes>>,
    base: Arc<str>,
    /// The value every put writes, already in base64.
    value: Arc<str>,
}

impl Gateway {
    pub(crate) fn new(endpoint: &str, size: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: format!("http://{endpoint}").into(),
            value: STANDARD.encode(vec![b'x'; size]).into(),
        }
    }

    async fn post(&self, path: &str, body: String) -> Result<(), Status> {
        let request = http::Request::post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| Status::internal(error.to_string()))?;
        let answer = self
            .client
            .request(request)
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let status = answer.status();
        // The whole answer is read, as a client must to reuse the connection.
        let body = answer
            .into_body()
            .collect()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(Status::unknown(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(())
    }
}

/// Whether `op` has an HTTP form here.
pub(crate) fn supports(op: KvOperation) -> bool {
    matches!(
        op,
        KvOperation::Put
            | KvOperation::PutHotKey
            | KvOperation::Range
            | KvOperation::RangeSerializable
    )
}

/// One request of `op` by client `number`, its `sequence`th, as `kv::call`
/// sends it over gRPC.
pub(crate) async fn call(
    op: KvOperation,
    gateway: Gateway,
    number: usize,
    sequence: u64,
) -> Result<Outcome, Status> {
    let own = client_key_number(number, sequence);
    let put = |key: Vec<u8>| {
        format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            STANDARD.encode(key),
            gateway.value
        )
    };
    match op {
        KvOperation::Put => {
            gateway
                .post("/v3/kv/put", put(key(space::PUT, own)))
                .await?
        }
        KvOperation::PutHotKey => gateway.post("/v3/kv/put", put(key(space::HOT, 0))).await?,
        KvOperation::Range | KvOperation::RangeSerializable => {
            let body = format!(
                r#"{{"key":"{}","serializable":{}}}"#,
                STANDARD.encode(key(space::READ, own % READ_KEYS)),
                op == KvOperation::RangeSerializable
            );
            gateway.post("/v3/kv/range", body).await?
        }
        other => {
            return Err(Status::unimplemented(format!(
                "{other:?} has no HTTP form in the benchmark"
            )))
        }
    }
    Ok(Outcome::Done)
}
