//! The kit's one error type.

/// Why a shared piece could not start.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A setting is unknown, malformed or out of range; the message names it.
    #[error("{0}")]
    Settings(String),
    #[error("telemetry: {0}")]
    Telemetry(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// A TLS file is missing, unreadable, or does not fit the others.
    #[error("tls: {0}")]
    Tls(String),
    #[error("grpc: {0}")]
    Grpc(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
