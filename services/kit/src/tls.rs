//! TLS on a listener, with etcd's settings: a server certificate and key,
//! and optionally client certificates checked against a CA
//! (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`).
//!
//! Handshakes run off the accept loop, each bounded in time, so a client that
//! connects and says nothing holds up no one else.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore};

/// What a TLS listener is configured with, built by [`TlsSettings::server_config`].
pub use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::shutdown::ShutdownWatch;
use crate::KitError;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 256;

/// A listener's TLS: off unless `cert_file` is set. An empty path is unset
/// (settings hold no `None`: every key has a default that can be written).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM.
    pub cert_file: String,
    /// The server certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// CA certificates, PEM, that client certificates are checked against.
    /// Without `client_cert_auth` a client may still come without one.
    pub trusted_ca_file: String,
    /// Refuse clients without a certificate signed by `trusted_ca_file`.
    pub client_cert_auth: bool,
}

/// A path setting, `None` when empty.
fn path(setting: &str) -> Option<&Path> {
    (!setting.is_empty()).then(|| Path::new(setting))
}

impl TlsSettings {
    /// Whether the listener speaks TLS.
    pub fn enabled(&self) -> bool {
        path(&self.cert_file).is_some()
    }

    /// Checks that the settings make sense together, before any file is read.
    pub fn validate(&self, section: &str) -> Result<(), KitError> {
        let bad = |why: &str| Err(KitError::Settings(format!("{section}: {why}")));
        let trusted_ca = path(&self.trusted_ca_file);
        match (path(&self.cert_file), path(&self.key_file)) {
            (Some(_), None) => return bad("cert_file is set but key_file is not"),
            (None, Some(_)) => return bad("key_file is set but cert_file is not"),
            (None, None) if trusted_ca.is_some() || self.client_cert_auth => {
                return bad("client certificates need TLS: set cert_file and key_file")
            }
            _ => {}
        }
        if self.client_cert_auth && trusted_ca.is_none() {
            return bad("client_cert_auth needs trusted_ca_file");
        }
        Ok(())
    }

    /// The server configuration, offering `alpn` (most preferred first), or
    /// `None` when TLS is off. Every file is read and checked here, so a
    /// missing file or a key that is not the certificate's fails at start.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Option<Arc<ServerConfig>>, KitError> {
        let (Some(cert_file), Some(key_file)) = (path(&self.cert_file), path(&self.key_file))
        else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| KitError::Tls(error.to_string()))?;
        let builder = match path(&self.trusted_ca_file) {
            None => builder.with_no_client_auth(),
            Some(ca_file) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca_file)? {
                    roots.add(cert).map_err(|error| {
                        KitError::Tls(format!("{}: {error}", ca_file.display()))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if self.client_cert_auth {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|error| KitError::Tls(error.to_string()))?,
                )
            }
        };
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|error| KitError::Tls(format!("{}: {error}", key_file.display())))?;
        let mut config = builder
            .with_single_cert(read_certs(cert_file)?, key)
            .map_err(|error| {
                KitError::Tls(format!(
                    "{} with {}: {error}",
                    cert_file.display(),
                    key_file.display()
                ))
            })?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Some(Arc::new(config)))
    }
}

/// TLS among cairn's own services: every process presents one certificate,
/// as a server to its callers and as a client to the services it calls, and
/// takes only peers whose certificate chains to `ca_file`. Off unless all
/// three are set. Servers' names are checked as usual: a certificate names
/// the host names (or addresses) its process is reached by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InternalTlsSettings {
    /// This process's certificate chain, PEM.
    pub cert_file: String,
    /// Its private key, PEM.
    pub key_file: String,
    /// The CA certificates, PEM, every peer's certificate chains to.
    pub ca_file: String,
}

impl InternalTlsSettings {
    /// Whether traffic among the services is TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }

    /// All three files or none.
    pub fn validate(&self, section: &str) -> Result<(), KitError> {
        let set = [&self.cert_file, &self.key_file, &self.ca_file]
            .iter()
            .filter(|file| !file.is_empty())
            .count();
        if set == 0 || set == 3 {
            return Ok(());
        }
        Err(KitError::Settings(format!(
            "{section}: cert_file, key_file and ca_file are set together or not at all"
        )))
    }

    /// Reads and checks the files: `None` when off.
    fn load(&self) -> Result<Option<InternalTls>, KitError> {
        if !self.enabled() {
            return Ok(None);
        }
        self.validate("internal_tls")?;
        let as_server = TlsSettings {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.ca_file.clone(),
            client_cert_auth: true,
        };
        let server = as_server
            .server_config(&[b"h2"])?
            .ok_or_else(|| KitError::Tls("internal_tls: no certificate".into()))?;
        let client = client_config(
            Path::new(&self.ca_file),
            Some((Path::new(&self.cert_file), Path::new(&self.key_file))),
        )?;
        Ok(Some(InternalTls { server, client }))
    }
}

/// The loaded internal TLS: how this process serves and calls its peers.
#[derive(Clone)]
struct InternalTls {
    server: Arc<ServerConfig>,
    client: ClientTlsConfig,
}

/// The process's internal TLS, set once at start by [`init_internal`]: one
/// process has one identity among its peers, and every server and client it
/// makes, wherever in the code, uses it.
static INTERNAL: OnceLock<(InternalTlsSettings, Option<InternalTls>)> = OnceLock::new();

/// Loads the internal TLS files (a missing one, or a key that is not the
/// certificate's, fails here, at start). Every service's `serve` calls it
/// first; a second call must bring the same settings.
pub fn init_internal(settings: &InternalTlsSettings) -> Result<(), KitError> {
    if let Some((current, _)) = INTERNAL.get() {
        return if current == settings {
            Ok(())
        } else {
            Err(KitError::Settings(
                "internal_tls: a process has one internal identity; it was set already".into(),
            ))
        };
    }
    let loaded = settings.load()?;
    let _ = INTERNAL.set((settings.clone(), loaded));
    Ok(())
}

fn internal() -> Option<&'static InternalTls> {
    INTERNAL.get().and_then(|(_, loaded)| loaded.as_ref())
}

/// The server configuration for this process's gRPC port when internal TLS
/// is on.
pub fn internal_server() -> Option<Arc<ServerConfig>> {
    internal().map(|tls| tls.server.clone())
}

/// An endpoint for a peer service at `address` (`host:port`): `https` with
/// this process's certificate when internal TLS is on, `http` otherwise.
/// `server_name` is the name the peer's certificate must carry when the
/// address is one that a name resolved to (otherwise the address's host).
pub fn peer_endpoint(address: &str, server_name: Option<&str>) -> Result<Endpoint, KitError> {
    let bad = |error: &dyn std::fmt::Display| KitError::Settings(format!("{address}: {error}"));
    match internal() {
        None => Endpoint::from_shared(format!("http://{address}")).map_err(|error| bad(&error)),
        Some(tls) => {
            let config = match server_name {
                Some(name) => tls.client.clone().domain_name(name),
                None => tls.client.clone(),
            };
            Endpoint::from_shared(format!("https://{address}"))
                .and_then(|endpoint| endpoint.tls_config(config))
                .map_err(|error| bad(&error))
        }
    }
}

/// A TLS client configuration trusting the CA certificates in `ca` (PEM)
/// and, with `identity`, showing that certificate and key (PEM): what every
/// client of a TLS cairn port is made with.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientTlsConfig, KitError> {
    let read = |file: &Path| {
        std::fs::read(file).map_err(|error| KitError::Tls(format!("{}: {error}", file.display())))
    };
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    Ok(match identity {
        Some((cert, key)) => config.identity(Identity::from_pem(read(cert)?, read(key)?)),
        None => config,
    })
}

/// Every certificate in a PEM file; none is an error.
fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, KitError> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| KitError::Tls(format!("{}: {error}", file.display())))?;
    if certs.is_empty() {
        return Err(KitError::Tls(format!(
            "{}: no certificate in the file",
            file.display()
        )));
    }
    Ok(certs)
}

/// The connections `listener` accepts, each once its handshake is done:
/// TCP_NODELAY set, handshakes in tasks of their own (a failed or slow one
/// is dropped, logged at debug), until `shutdown`.
pub fn accept(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: ShutdownWatch,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (accepted, stream) = mpsc::channel(ACCEPTED_QUEUE);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        let mut stop = shutdown;
        loop {
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => return,
                next = listener.accept() => match next {
                    Ok(next) => next,
                    Err(error) => {
                        // Out of file descriptors and the like: pass, and try again.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(handshake(acceptor.clone(), tcp, peer, accepted.clone()));
        }
    });
    ReceiverStream::new(stream)
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let _ = accepted.send(Ok(stream)).await;
        }
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_without_a_certificate_is_refused_before_anything_is_read() {
        let settings = TlsSettings {
            key_file: "key.pem".to_owned(),
            ..TlsSettings::default()
        };
        let error = settings
            .validate("tls")
            .expect_err("a key alone is not TLS");
        assert!(error
            .to_string()
            .contains("key_file is set but cert_file is not"));
    }

    #[test]
    fn client_certificate_auth_needs_a_ca_to_check_against() {
        let settings = TlsSettings {
            cert_file: "cert.pem".to_owned(),
            key_file: "key.pem".to_owned(),
            client_cert_auth: true,
            ..TlsSettings::default()
        };
        let error = settings
            .validate("tls")
            .expect_err("nothing to verify with");
        assert!(error.to_string().contains("needs trusted_ca_file"));
    }

    #[test]
    fn tls_off_gives_no_server_config() {
        let config = TlsSettings::default()
            .server_config(&[b"h2"])
            .expect("nothing to read");
        assert!(config.is_none());
    }

    #[test]
    fn a_missing_certificate_file_is_named_in_the_error() {
        let settings = TlsSettings {
            cert_file: "/nonexistent/cert.pem".to_owned(),
            key_file: "/nonexistent/key.pem".to_owned(),
            ..TlsSettings::default()
        };
        let error = settings.server_config(&[b"h2"]).expect_err("no such file");
        assert!(error.to_string().contains("/nonexistent/"), "{error}");
    }
}
