//! Who a client is, as the edge alone can tell: the Common Name of the
//! client certificate its TLS connection was verified with. With etcd's
//! `--client-cert-auth`, that name is the user of a call that carries no
//! token. The edge passes it on to the replicas; a name a client puts in a
//! header itself is never believed.

use cairn_proto::cairn::mvcc::v1::Caller;
use cairn_proto::contract::metadata::TOKEN;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The certificate user of a call the edge makes in process for a client
/// (Lock, Election): an extension, which never crosses the network, so no
/// client can set it.
#[derive(Clone, Debug, Default)]
pub(crate) struct CertificateUser(pub(crate) String);

/// Who makes a call, as the edge names it to the services behind: the
/// client's token, or when it sent none the user of its verified
/// certificate (a token wins wherever both are seen, so the certificate is
/// only read when there is none).
pub(crate) fn caller(headers: &http::HeaderMap, extensions: &http::Extensions) -> Caller {
    let token = headers
        .get(TOKEN)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let certificate_user = if token.is_empty() {
        certificate_user(extensions)
    } else {
        String::new()
    };
    Caller {
        token,
        certificate_user,
    }
}

/// The certificate user of a call, from its extensions: the one the edge
/// set for an in-process call, else the Common Name of the verified client
/// certificate of its connection, else none (empty).
pub(crate) fn certificate_user(extensions: &http::Extensions) -> String {
    if let Some(CertificateUser(user)) = extensions.get::<CertificateUser>() {
        return user.clone();
    }
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|certificates| common_name(certificates.first()?.as_ref()))
        .unwrap_or_default()
}

/// The first Common Name of a DER certificate's subject.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = certificate.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_of_a_certificate_is_its_user() {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("parameters without names");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().expect("a key pair");
        let certificate = params.self_signed(&key).expect("a certificate");
        assert_eq!(common_name(certificate.der()), Some("alice".to_owned()));
        assert_eq!(common_name(b"not a certificate"), None);
    }

    #[test]
    fn an_in_process_call_carries_the_user_the_edge_gave_it() {
        let mut extensions = http::Extensions::new();
        assert_eq!(certificate_user(&extensions), "");
        extensions.insert(CertificateUser("bob".into()));
        assert_eq!(certificate_user(&extensions), "bob");
    }
}
