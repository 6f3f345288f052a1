//! What a failed command tells its caller: etcdctl's exit codes and its
//! `Error: …` line, so scripts written against etcdctl behave the same.

use std::fmt;

/// etcdctl's exit codes (`ctlv3/command/error.go` defines the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// A request failed, or anything not covered below.
    Error = 1,
    /// A lease keep-alive stream could not be used.
    BadConnection = 2,
    /// Text read from stdin (txn, interactive watch) did not parse.
    InvalidInput = 3,
    /// An output format or option value this command cannot use.
    BadFeature = 4,
    /// A watch ended by the server, or a snapshot that did not finish.
    Interrupted = 5,
    /// Writing the output failed.
    Io = 6,
    /// Missing or malformed positional arguments.
    BadArgs = 128,
}

/// A failed command: the exit code and the message printed after `Error: `.
/// A `quiet` error has already explained itself on stderr and only sets the
/// exit code, as `endpoint status` does when one endpoint fails.
#[derive(Debug, thiserror::Error)]
pub(crate) struct CtlError {
    pub exit: Exit,
    pub message: String,
    pub quiet: bool,
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl CtlError {
    /// A failure with an explicit exit code.
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            quiet: false,
        }
    }

    /// Exit code 1 with a message, the most common failure.
    pub(crate) fn general(message: impl Into<String>) -> Self {
        Self::new(Exit::Error, message)
    }

    /// Wrong positional arguments (exit code 128).
    pub(crate) fn bad_args(message: impl Into<String>) -> Self {
        Self::new(Exit::BadArgs, message)
    }

    /// Only an exit code; the details are already on stderr.
    pub(crate) fn quiet(exit: Exit) -> Self {
        Self {
            exit,
            message: String::new(),
            quiet: true,
        }
    }

    /// What etcdctl says when the command timeout runs out.
    pub(crate) fn deadline_exceeded() -> Self {
        Self::general("context deadline exceeded")
    }

    /// The `-w` value names a format this command has no printer for.
    pub(crate) fn format_unsupported(format: &str) -> Self {
        Self::new(
            Exit::BadFeature,
            format!("{format} not supported as output format"),
        )
    }

    /// The same error with another exit code.
    pub(crate) fn with_exit(mut self, exit: Exit) -> Self {
        self.exit = exit;
        self
    }
}

impl From<etcd_client::Error> for CtlError {
    fn from(error: etcd_client::Error) -> Self {
        Self::general(client_error_text(&error))
    }
}

/// The text etcdctl prints for a client error. Errors the server names with
/// an `etcdserver: …` description are printed as that description alone, the
/// way clientv3 turns them back into typed errors; any other status keeps
/// grpc-go's `rpc error: code = … desc = …` form.
pub(crate) fn client_error_text(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => status_text(status),
        etcd_client::Error::TransportError(transport) => {
            let mut text = transport.to_string();
            let mut source = std::error::Error::source(transport);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
        other => other.to_string(),
    }
}

fn status_text(status: &tonic::Status) -> String {
    let message = status.message();
    if message.starts_with("etcdserver: ") {
        return message.to_owned();
    }
    if status.code() == tonic::Code::DeadlineExceeded && message.is_empty() {
        return "context deadline exceeded".to_owned();
    }
    format!(
        "rpc error: code = {} desc = {message}",
        go_code_name(status.code())
    )
}

/// grpc-go's names for status codes, as its errors print them.
fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcd_error::EtcdError;

    use super::*;

    #[test]
    fn etcd_errors_print_their_description_only() {
        let status = tonic::Status::out_of_range(EtcdError::Compacted.message());
        let error = CtlError::from(etcd_client::Error::GRpcStatus(status));
        assert_eq!(error.exit, Exit::Error);
        assert_eq!(error.to_string(), EtcdError::Compacted.message());
    }

    #[test]
    fn other_statuses_print_like_grpc_go() {
        let status = tonic::Status::unavailable("connection reset");
        assert_eq!(
            client_error_text(&etcd_client::Error::GRpcStatus(status)),
            "rpc error: code = Unavailable desc = connection reset"
        );
    }
}
