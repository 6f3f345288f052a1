//! What every cairn service shares, written once: layered settings, telemetry
//! (logs, OTLP spans, W3C trace context across gRPC), graceful shutdown, gRPC
//! health and Prometheus metrics.

pub mod cli;
mod error;
pub mod failover;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod multiplex;
pub mod settings;
pub mod share;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// What the shared start-up, settings and serving can fail with.
pub use error::KitError;
