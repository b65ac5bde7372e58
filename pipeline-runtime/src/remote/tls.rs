//! TLS for the remote tier, when certificates are given (rustls with ring, through tonic):
//! a worker's certificate chain and key, a trainer's CA certificate. Without them both
//! sides speak plain HTTP/2.

use std::error::Error;
use std::sync::Arc;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A worker's side: its certificate chain and private key, PEM.
#[derive(Clone)]
pub(crate) struct ServerTls(ServerTlsConfig);

impl ServerTls {
    /// Parses `cert_chain_pem` and `key_pem` now, so that a bad file fails before the
    /// worker says it listens.
    pub(crate) fn new(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(cert_chain_pem, key_pem));
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|e| format!("the worker's TLS certificate or key: {}", chain(&e)))?;
        Ok(Self(config))
    }

    pub(crate) fn config(&self) -> ServerTlsConfig {
        self.0.clone()
    }
}

/// A trainer's side: the CA certificate that signed the workers' certificates (PEM), and
/// the name to check them against when it is not the host of the worker's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientTls {
    pub(crate) ca_pem: Arc<[u8]>,
    pub(crate) domain: Option<String>,
}

impl ClientTls {
    pub(crate) fn config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&*self.ca_pem));
        match &self.domain {
            Some(domain) => config.domain_name(domain.clone()),
            None => config,
        }
    }
}

/// An error with its causes: tonic's own text ("transport error") says nothing alone.
pub(crate) fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Whether a failed connection failed in its TLS handshake (rustls reports it as invalid
/// data): a certificate the trainer does not trust, or a worker that does not speak TLS.
/// Trying again cannot help.
pub(crate) fn handshake_failed(error: &(dyn Error + 'static)) -> bool {
    let mut causes = vec![error];
    while let Some(cause) = causes.pop() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::InvalidData {
                return true;
            }
            // An io::Error's `source` skips the error it wraps.
            if let Some(inner) = io.get_ref() {
                causes.push(inner);
            }
        }
        causes.extend(cause.source());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_certificate_or_key_is_refused_with_a_clear_error() {
        let why = ServerTls::new(b"not a certificate", b"not a key")
            .err()
            .expect("refused");
        assert!(why.contains("TLS certificate or key"), "{why}");
    }

    #[test]
    fn an_error_reads_with_its_causes() {
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad certificate");
        let outer = std::io::Error::other(inner);
        assert!(chain(&outer).contains("bad certificate"));
        assert!(handshake_failed(&outer));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!handshake_failed(&refused));
    }
}
