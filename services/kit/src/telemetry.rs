//! Logs and traces. `tracing` writes logs to stderr; when an OTLP endpoint is
//! configured, spans are also exported over OTLP/gRPC (Jaeger reads OTLP). W3C
//! trace context crosses every gRPC hop, so one request is one trace across services.

use std::task::{Context as TaskContext, Poll};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{global, Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::KitError;

/// The `[telemetry]` section every service has.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// What to log, in `tracing_subscriber::EnvFilter` syntax.
    pub log_filter: String,
    /// `text` for people, `json` for log collectors.
    pub log_format: String,
    /// OTLP/gRPC endpoint such as `http://jaeger:4317`; empty exports no spans.
    pub otlp_endpoint: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_filter: "info".to_owned(),
            log_format: "text".to_owned(),
            otlp_endpoint: String::new(),
        }
    }
}

/// Flushes exported spans when the service exits.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("telemetry: flushing spans failed: {error}");
            }
        }
    }
}

/// Set once spans leave this process (an OTLP endpoint is configured).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans leave this process. Only then are per-request spans worth
/// their cost and trace context worth carrying: without an exporter they
/// would be built, timed and dropped on every call.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs logging and, when configured, span export for `service`. Call once,
/// inside the tokio runtime (the span exporter runs on it).
pub fn init(service: &str, settings: &TelemetrySettings) -> Result<TelemetryGuard, KitError> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(&settings.log_filter)
        .map_err(|error| KitError::Settings(format!("setting `telemetry.log_filter`: {error}")))?;
    let logs = match settings.log_format.as_str() {
        "text" => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        "json" => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        other => {
            return Err(KitError::Settings(format!(
                "setting `telemetry.log_format`: `{other}` is neither `text` nor `json`"
            )))
        }
    };
    let (spans, provider) = if settings.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.otlp_endpoint.clone())
            .build()
            .map_err(|error| KitError::Telemetry(format!("otlp exporter: {error}")))?;
        let batches = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_resource(
                Resource::builder()
                    .with_attribute(KeyValue::new("service.name", service.to_owned()))
                    .build(),
            )
            .build();
        let tracer = provider.tracer(service.to_owned());
        global::set_tracer_provider(provider.clone());
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        (
            Some(tracing_opentelemetry::layer().with_tracer(tracer)),
            Some(provider),
        )
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|error| KitError::Telemetry(format!("already initialised: {error}")))?;
    Ok(TelemetryGuard { provider })
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes the current span's trace context into outgoing gRPC metadata.
pub fn inject_context(metadata: &mut MetadataMap) {
    if !exporting() {
        return;
    }
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

/// Writes the current span's trace context into a plain map, for carriers
/// other than gRPC: log commands, NATS headers.
pub fn inject_into(carrier: &mut std::collections::HashMap<String, String>) {
    if !exporting() {
        return;
    }
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, carrier));
}

/// Reads a trace context written by [`inject_into`].
pub fn extract_from(carrier: &std::collections::HashMap<String, String>) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(carrier))
}

/// Whether `carrier` (headers of any kind, as a map) holds a trace context a
/// span can continue. An empty carrier, an untraced caller's, is answered
/// without asking the propagator.
pub fn carries_trace(carrier: &std::collections::HashMap<String, String>) -> bool {
    use opentelemetry::trace::TraceContextExt;
    !carrier.is_empty() && extract_from(carrier).span().span_context().is_valid()
}

/// Makes `span` a child of the trace in `carrier` (written by [`inject_into`]),
/// so work done later or elsewhere — applying a logged command, delivering a
/// published revision — joins the request's trace. An empty carrier leaves
/// `span` as it is.
pub fn continue_trace(span: &tracing::Span, carrier: &std::collections::HashMap<String, String>) {
    if !carrier.is_empty() {
        // A context that cannot be attached leaves the span a root of its own.
        let _ = span.set_parent(extract_from(carrier));
    }
}

/// The server span of one call that arrived as a message on a long-lived
/// stream rather than as its own gRPC call (which [`GrpcServerTraceLayer`]
/// would trace): a child of the caller's trace in `carrier`, or no span when
/// the caller was not traced.
pub fn message_span(
    carrier: &std::collections::HashMap<String, String>,
    service: &'static str,
    method: &str,
) -> tracing::Span {
    if !carries_trace(carrier) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
    );
    continue_trace(&span, carrier);
    span
}

/// Reads a caller's trace context from incoming headers.
pub fn extract_context(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// A tonic client interceptor that carries the current trace to the callee.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceInterceptor;

impl tonic::service::Interceptor for TraceInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_context(request.metadata_mut());
        Ok(request)
    }
}

/// A tower layer for tonic servers: one span per call, named `service/method`
/// with OpenTelemetry's RPC attributes, continuing the caller's trace.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcServerTraceLayer;

impl<S> tower::Layer<S> for GrpcServerTraceLayer {
    type Service = GrpcServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerTrace { inner }
    }
}

/// The service [`GrpcServerTraceLayer`] wraps around each tonic service.
#[derive(Clone, Debug)]
pub struct GrpcServerTrace<S> {
    inner: S,
}

/// Every service's calls by method: count and time to the response (for a
/// stream, to its start), so each service's `/metrics` shows its load the
/// same way.
static GRPC_SERVER_SECONDS: std::sync::LazyLock<Option<prometheus::HistogramVec>> =
    std::sync::LazyLock::new(|| {
        let histogram = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "cairn_grpc_server_seconds",
                "gRPC calls served, by method: time until the response starts",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["rpc_service", "rpc_method"],
        )
        .ok()?;
        let _ = prometheus::register(Box::new(histogram.clone()));
        Some(histogram)
    });

impl<S, B, R> tower::Service<http::Request<B>> for GrpcServerTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // A clone of the URI shares its bytes; the labels are chosen once the
        // answer says whether anything served the path.
        let uri = request.uri().clone();
        let started = std::time::Instant::now();
        let span = exporting().then(|| {
            let path = uri.path().trim_start_matches('/');
            let (service, method) = path.split_once('/').unwrap_or((path, ""));
            let span = tracing::info_span!(
                "grpc.server",
                otel.name = %path,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %method,
            );
            let _ = span.set_parent(extract_context(request.headers()));
            span
        });
        let call = self.inner.call(request);
        Box::pin(async move {
            let answer = match span {
                Some(span) => call.instrument(span).await,
                None => call.await,
            };
            if let (Some(histogram), Ok(response)) = (GRPC_SERVER_SECONDS.as_ref(), &answer) {
                let path = uri.path().trim_start_matches('/');
                let labels = if served(response) {
                    path.split_once('/').unwrap_or((path, ""))
                } else {
                    ("unknown", "unknown")
                };
                histogram
                    .with_label_values(&[labels.0, labels.1])
                    .observe(started.elapsed().as_secs_f64());
            }
            answer
        })
    }
}

/// Whether a path was served: neither an HTTP 404/405 nor gRPC's
/// UNIMPLEMENTED. Calls to paths nothing serves share one label, so a
/// client sending arbitrary paths cannot grow the metrics without bound.
fn served<R>(response: &http::Response<R>) -> bool {
    let status = response.status();
    let unimplemented = response
        .headers()
        .get("grpc-status")
        .is_some_and(|code| code == "12");
    status != http::StatusCode::NOT_FOUND
        && status != http::StatusCode::METHOD_NOT_ALLOWED
        && !unimplemented
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::wrappers::TcpListenerStream;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;

    #[test]
    fn paths_nothing_serves_are_told_apart_from_served_ones() {
        let answer = |status: u16, grpc_status: Option<&'static str>| {
            let mut response = http::Response::new(());
            *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
            if let Some(code) = grpc_status {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static(code));
            }
            response
        };
        assert!(served(&answer(200, None)));
        assert!(
            served(&answer(200, Some("5"))),
            "an etcd error is a served call"
        );
        assert!(
            served(&answer(400, None)),
            "a gateway error is a served call"
        );
        assert!(!served(&answer(200, Some("12"))));
        assert!(!served(&answer(404, None)));
        assert!(!served(&answer(405, None)));
    }

    #[test]
    fn trace_context_round_trips_through_metadata() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static(traceparent));
        let context = extract_context(&headers);
        let mut metadata = MetadataMap::new();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut MetadataInjector(&mut metadata));
        });
        let carried = metadata
            .get("traceparent")
            .and_then(|value| value.to_str().ok());
        assert_eq!(carried, Some(traceparent));
    }

    #[tokio::test]
    async fn a_traced_server_answers_a_traced_client() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (reporter, health) = crate::health::grpc_health();
        reporter
            .set_service_status("cairn.test", tonic_health::ServingStatus::Serving)
            .await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(GrpcServerTraceLayer)
                .add_service(health)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect");
        let mut client = HealthClient::with_interceptor(channel, TraceInterceptor);
        let answer = client
            .check(HealthCheckRequest {
                service: "cairn.test".into(),
            })
            .await
            .expect("health check");
        assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
        let _ = stop.send(());
        server.await.expect("server task").expect("server ran");
    }

    #[test]
    fn bad_log_settings_are_named() {
        let settings = TelemetrySettings {
            log_format: "xml".into(),
            ..Default::default()
        };
        let error = init("test", &settings).err().map(|error| error.to_string());
        assert!(error.is_some_and(|error| error.contains("telemetry.log_format")));
    }
}
