//! Connecting to the cluster the way etcdctl does: a lazy connection (the
//! dial timeout bounds each connection attempt) and a command timeout around
//! every short request, which fails with "context deadline exceeded".

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::args::GlobalArgs;
use crate::error::CtlError;

/// etcdctl's gRPC keepalive settings (`--keepalive-time`, `--keepalive-timeout`).
const KEEPALIVE_TIME: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(6);

/// The endpoints and timeouts every command connects with.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub endpoints: Vec<String>,
    dial_timeout: Duration,
    command_timeout: Duration,
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// `--user name[:password]` and `--password`.
    user: Option<String>,
    password: Option<String>,
}

impl Session {
    /// From the global flags; blank entries in `--endpoints` are dropped.
    pub(crate) fn new(global: &GlobalArgs) -> Self {
        let endpoints = global
            .endpoints
            .iter()
            .map(|endpoint| endpoint.trim().to_owned())
            .filter(|endpoint| !endpoint.is_empty())
            .collect();
        Self {
            endpoints,
            dial_timeout: global.dial_timeout,
            command_timeout: global.command_timeout,
            cacert: global.cacert.clone(),
            cert: global.cert.clone(),
            key: global.key.clone(),
            user: global.user.clone(),
            password: global.password.clone(),
        }
    }

    /// The name and password to authenticate with, as etcdctl reads
    /// `--user` and `--password` (asking for a password neither gives).
    fn credentials(&self) -> Result<Option<(String, String)>, CtlError> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        match (user.split_once(':'), &self.password) {
            (Some(_), Some(_)) => Err(CtlError::bad_args(
                "--user option shouldn't include password when --password is specified",
            )),
            (Some((name, password)), None) => Ok(Some((name.to_owned(), password.to_owned()))),
            (None, Some(password)) => Ok(Some((user.clone(), password.clone()))),
            (None, None) => {
                let password = crate::commands::read_password("Password: ")?;
                Ok(Some((user.clone(), password)))
            }
        }
    }

    /// A client balancing over every `--endpoints` entry.
    pub(crate) async fn client(&self) -> Result<Client, CtlError> {
        self.client_for(&self.endpoints, false).await
    }

    /// A client for watches, which asks the server to end the stream when the
    /// cluster has no leader (etcdctl's `WithRequireLeader`).
    pub(crate) async fn watch_client(&self) -> Result<Client, CtlError> {
        self.client_for(&self.endpoints, true).await
    }

    /// A client for the given endpoints only.
    pub(crate) async fn client_for(
        &self,
        endpoints: &[String],
        require_leader: bool,
    ) -> Result<Client, CtlError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_keep_alive(KEEPALIVE_TIME, KEEPALIVE_TIMEOUT)
            .with_require_leader(require_leader);
        let options = match self.tls()? {
            Some(tls) => options.with_tls(tls),
            None => options,
        };
        let Some((name, password)) = self.credentials()? else {
            return Client::connect(endpoints, Some(options))
                .await
                .map_err(CtlError::from);
        };
        // The client authenticates as it connects; etcdctl fails that as a
        // bad connection (exit code 2).
        Client::connect(endpoints, Some(options.with_user(name, password)))
            .await
            .map_err(|error| {
                CtlError::new(
                    crate::error::Exit::BadConnection,
                    crate::error::client_error_text(&error),
                )
            })
    }

    /// TLS when any of `--cacert`, `--cert`, `--key` is given, as etcdctl
    /// turns it on; endpoints without a scheme are then dialled with TLS.
    pub(crate) fn tls(&self) -> Result<Option<TlsOptions>, CtlError> {
        if self.cacert.is_none() && self.cert.is_none() && self.key.is_none() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        if let Some(cacert) = &self.cacert {
            tls = tls.ca_certificate(Certificate::from_pem(read(cacert)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => return Err(CtlError::general("--cert and --key must be given together")),
        }
        Ok(Some(tls))
    }

    /// How long a connection may take to be made.
    pub(crate) fn dial_timeout(&self) -> Duration {
        self.dial_timeout
    }

    /// How long one short request may take.
    pub(crate) fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Runs one request under the command timeout, sent again while the
    /// failure is a connection that could not be made (which means the
    /// request never left), as clientv3's retry interceptor does. With
    /// several endpoints the next attempt may reach another one.
    pub(crate) async fn call<T, F, Fut>(&self, client: &Client, request: F) -> Result<T, CtlError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match self.call_raw(client, request).await {
            Some(result) => result.map_err(CtlError::from),
            None => Err(CtlError::deadline_exceeded()),
        }
    }

    /// [`Session::call`] with the client's own error; `None` when the
    /// command timeout ran out.
    pub(crate) async fn call_raw<T, F, Fut>(
        &self,
        client: &Client,
        request: F,
    ) -> Option<Result<T, etcd_client::Error>>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = async {
            let mut backoff = FIRST_BACKOFF;
            loop {
                match request(client.clone()).await {
                    Err(error) if is_unreachable(&error) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    result => return result,
                }
            }
        };
        tokio::time::timeout(self.command_timeout, attempts)
            .await
            .ok()
    }
}

/// Pauses between attempts to reach an endpoint.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A connection that could not be made, as opposed to an answer from a
/// server (etcd's own errors say `etcdserver: …`).
pub(crate) fn is_unreachable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable
                && !status.message().starts_with("etcdserver: ")
        }
        _ => false,
    }
}

/// A certificate or key file's bytes; the error reads like Go's.
fn read(path: &Path) -> Result<Vec<u8>, CtlError> {
    std::fs::read(path)
        .map_err(|error| CtlError::general(format!("open {}: {error}", path.display())))
}
