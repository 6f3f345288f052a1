//! Certificates made on the spot for TLS tests: a CA, a server certificate
//! for loopback, and client certificates whose Common Name is the user, as
//! etcd's `--client-cert-auth` reads it. Nothing is committed; each test
//! writes its own under its temporary directory.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority that signs server and client certificates.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA's own certificate, what peers trust.
    pub cert: PathBuf,
}

impl Authority {
    /// A new CA named `name`, its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let cert = dir.join(format!("{name}.pem"));
        std::fs::write(&cert, issuer.pem())?;
        Ok(Self {
            issuer,
            dir: dir.to_owned(),
            cert,
        })
    }

    /// A server certificate for `localhost` and 127.0.0.1, named `name`.
    pub fn server(&self, name: &str) -> Result<Pem> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(name, params)
    }

    /// A certificate for a cairn process on loopback, shown both as a
    /// server and as a client (internal TLS).
    pub fn peer(&self, name: &str) -> Result<Pem> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(name, params)
    }

    /// A client certificate whose Common Name is `user`.
    pub fn client(&self, user: &str) -> Result<Pem> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(user, params)
    }

    fn sign(&self, name: &str, params: CertificateParams) -> Result<Pem> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let pem = Pem {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&pem.cert, cert.pem())?;
        std::fs::write(&pem.key, key.serialize_pem())?;
        Ok(pem)
    }
}
