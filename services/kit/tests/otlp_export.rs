//! Spans leave the process over OTLP and continue the caller's trace.
//!
//! Its own test binary: telemetry is initialised once per process.

use std::time::Duration;

use cairn_kit::telemetry::{self, GrpcServerTraceLayer, TelemetrySettings};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// A collector that hands every export to the test.
struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let _ = self.0.send(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn string_attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|value| match &value.value {
            Some(Value::StringValue(text)) => Some(text.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_span_is_exported_under_the_callers_trace() {
    let (exports, mut exported) = mpsc::unbounded_channel();
    let collector_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let collector_addr = collector_listener.local_addr().expect("collector addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(exports)))
            .serve_with_incoming(TcpListenerStream::new(collector_listener)),
    );

    let settings = TelemetrySettings {
        otlp_endpoint: format!("http://{collector_addr}"),
        log_filter: "info".into(),
        ..Default::default()
    };
    let guard = telemetry::init("cairn-test", &settings).expect("telemetry starts");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind service");
    let addr = listener.local_addr().expect("service addr");
    let (_reporter, health) = cairn_kit::health::grpc_health();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(GrpcServerTraceLayer)
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut request = Request::new(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-b7ad6b7169203331-01")
            .parse()
            .expect("metadata value"),
    );
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(request)
        .await
        .expect("health check");

    // Dropping the guard flushes the batch exporter.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .expect("flush");
    let export = tokio::time::timeout(Duration::from_secs(10), exported.recv())
        .await
        .expect("an export within 10 s")
        .expect("collector running");

    let resource = export.resource_spans.first().expect("resource spans");
    let attributes = resource
        .resource
        .as_ref()
        .map(|resource| resource.attributes.clone())
        .unwrap_or_default();
    assert_eq!(
        string_attribute(&attributes, "service.name").as_deref(),
        Some("cairn-test")
    );
    let spans: Vec<_> = resource
        .scope_spans
        .iter()
        .flat_map(|scope| scope.spans.iter())
        .collect();
    let span = spans
        .iter()
        .find(|span| span.name == "grpc.health.v1.Health/Check")
        .unwrap_or_else(|| panic!("no server span among {spans:?}"));
    let hex: String = span
        .trace_id
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(hex, trace_id, "the span continues the caller's trace");
    assert_eq!(
        string_attribute(&span.attributes, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        string_attribute(&span.attributes, "rpc.method").as_deref(),
        Some("Check")
    );
}
