//! cairn-otlp-sink: receives OTLP/gRPC spans and answers the part of Jaeger's
//! query API that tests read (`/api/services`, `/api/traces`), so a machine
//! with no Jaeger image can still follow one request across every service.

mod http;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use crate::store::SpanStore;

/// Where to listen, with Jaeger all-in-one's ports as defaults so it can
/// stand in for Jaeger under the same name.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// OTLP/gRPC.
    #[arg(long, env = "CAIRN_SINK_OTLP_LISTEN", default_value = "0.0.0.0:4317")]
    otlp_listen: SocketAddr,
    /// Jaeger's query API over HTTP.
    #[arg(long, env = "CAIRN_SINK_QUERY_LISTEN", default_value = "0.0.0.0:16686")]
    query_listen: SocketAddr,
    /// Spans kept; the oldest leave first.
    #[arg(long, default_value_t = 200_000)]
    capacity: usize,
}

struct Receiver(Arc<SpanStore>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.add(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Resolves on SIGINT or SIGTERM (a container's stop).
async fn stopped() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = Arc::new(SpanStore::new(args.capacity));
    let query = tokio::net::TcpListener::bind(args.query_listen).await?;
    let otlp = tokio::net::TcpListener::bind(args.otlp_listen).await?;
    eprintln!(
        "cairn-otlp-sink: OTLP/gRPC on {}, query API on {}",
        args.otlp_listen, args.query_listen
    );
    let http = axum::serve(query, http::router(store.clone())).with_graceful_shutdown(stopped());
    let grpc = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver(store)))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(otlp),
            stopped(),
        );
    let (http, grpc) = tokio::join!(http, grpc);
    http?;
    grpc?;
    Ok(())
}
