//! The rustls client configuration for `wss://` targets (aws-lc-rs provider). Trust comes from
//! `--ca FILE` (PEM certificates) or is switched off with `--insecure` (any certificate accepted,
//! handshake signatures still verified). No system roots: a load generator talks to a deployment
//! the operator controls.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Builds the client configuration: `ca` (PEM file) as the only trust anchors, or any
/// certificate with `insecure`.
pub fn client_config(insecure: bool, ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else {
        let Some(ca) = ca else {
            anyhow::bail!("wss:// needs --ca FILE (PEM) or --insecure");
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?
        {
            let cert = cert.map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            anyhow::bail!("--ca {}: no certificate found", ca.display());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The SNI / verification name for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|e| anyhow::anyhow!("host `{host}`: {e}"))
}

/// `--insecure`: accepts any certificate chain, but still checks that the server owns the key.
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_config_builds_and_secure_needs_a_ca() {
        assert!(client_config(true, None).is_ok());
        assert!(client_config(false, None).is_err());
        assert!(client_config(false, Some(Path::new("/nonexistent/ca.pem"))).is_err());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("example.test").is_ok());
    }
}
