//! gRPC health checking (grpc.health.v1), which orchestrators and load balancers probe.

use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

/// The health service and the handle a service uses to report itself serving.
pub fn grpc_health() -> (HealthReporter, HealthServer<impl Health>) {
    tonic_health::server::health_reporter()
}
