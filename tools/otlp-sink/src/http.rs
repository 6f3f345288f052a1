//! The query side: the routes of Jaeger's HTTP API that a test reads.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use crate::store::SpanStore;

/// `/` (liveness), `/api/services`, `/api/traces?service=&operation=&limit=`
/// and `/api/traces/{id}`.
pub(crate) fn router(store: Arc<SpanStore>) -> Router {
    Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route("/api/services", get(services))
        .route("/api/traces", get(search))
        .route("/api/traces/{id}", get(trace))
        .with_state(store)
}

fn json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn services(State(store): State<Arc<SpanStore>>) -> Response {
    json(StatusCode::OK, &store.services())
}

async fn search(State(store): State<Arc<SpanStore>>, RawQuery(query): RawQuery) -> Response {
    let mut service = None;
    let mut operation = None;
    let mut limit = 20;
    for pair in query.as_deref().unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "service" => service = Some(value),
            "operation" => operation = Some(value),
            "limit" => limit = value.parse().unwrap_or(limit),
            _ => {}
        }
    }
    let Some(service) = service else {
        let error = serde_json::json!({ "errors": [{ "code": 400, "msg": "parameter 'service' is required" }] });
        return json(StatusCode::BAD_REQUEST, &error);
    };
    json(
        StatusCode::OK,
        &store.search(&service, operation.as_deref(), limit),
    )
}

async fn trace(State(store): State<Arc<SpanStore>>, Path(id): Path<String>) -> Response {
    match store.trace(&id) {
        Some(found) => json(StatusCode::OK, &found),
        None => {
            let error =
                serde_json::json!({ "errors": [{ "code": 404, "msg": "trace not found" }] });
            json(StatusCode::NOT_FOUND, &error)
        }
    }
}

/// Decodes `%XX` escapes and `+` in a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' if at + 2 < bytes.len() => {
                let escaped = std::str::from_utf8(&bytes[at + 1..at + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match escaped {
                    Some(byte) => {
                        decoded.push(byte);
                        at += 3;
                        continue;
                    }
                    None => decoded.push(b'%'),
                }
            }
            b'+' => decoded.push(b' '),
            byte => decoded.push(byte),
        }
        at += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_unescaped() {
        assert_eq!(
            percent_decode("etcdserverpb.KV%2FPut"),
            "etcdserverpb.KV/Put"
        );
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    async fn get_status(path: &str) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("a request");
        let response = router(Arc::new(SpanStore::new(8)))
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_trace_is_looked_up_by_the_id_in_its_path() {
        let (status, body) = get_status("/api/traces/0123abcd").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("trace not found"), "{body}");
        let (status, _) = get_status("/api/services").await;
        assert_eq!(status, StatusCode::OK);
    }
}
