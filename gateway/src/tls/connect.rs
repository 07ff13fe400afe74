//! TLS to upstream servers (`wss://` / `https://` servers, or a pool's `tls:` block).
//!
//! Owns: each TLS pool's client configuration (SNI, verification against the system roots or the pool's CA bundle,
//! ALPN `http/1.1`, session resumption per worker) and the client handshake after a TCP connect, with the reason
//! for a failure (a certificate that does not verify names why). Does not own: connecting, retries and passive
//! health (`crate::upstream::connect`), what is sent afterwards.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::net::TcpStream;
use ringway_config::{Upstream, UpstreamTls};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::engine::TlsEngine;
use super::handshake::{FirstBytes, HandshakeError, drive};
use super::stream::TlsStream;
use crate::runtime::buffer_pool::BufferPool;

/// A client-side TLS stream to an upstream server.
pub(crate) type ClientTls = TlsStream<KernelConnection<ClientConnectionData>>;

/// Why an upstream pool's TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamTlsError {
    #[error("upstreams.{pool}.tls.ca: cannot read {path}: {reason}")]
    Ca {
        pool: String,
        path: String,
        reason: String,
    },
    #[error("upstreams.{pool}: no trusted roots: {reason}")]
    Roots { pool: String, reason: String },
    #[error("upstreams.{pool}.tls: {0}", pool = .0)]
    Rustls(String, #[source] rustls::Error),
}

/// What a TLS upstream pool's clients are built from, loaded once at start: the roots it trusts (its bundle or
/// the system's) and the server name it sends.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTlsSetup {
    pool: String,
    roots: Arc<RootCertStore>,
    server_name: Option<ServerName<'static>>,
    insecure: bool,
}

impl UpstreamTlsSetup {
    pub(crate) fn load(upstream: &Upstream, tls: &UpstreamTls) -> Result<Self, UpstreamTlsError> {
        let mut roots = RootCertStore::empty();
        match &tls.ca {
            Some(path) => {
                let fail = |reason: String| UpstreamTlsError::Ca {
                    pool: upstream.name.clone(),
                    path: path.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| fail(e.to_string()))?;
                    roots.add(cert).map_err(|e| fail(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(fail("no PEM certificate in the file".into()));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // One unusable system certificate must not take the others with it.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() && !tls.insecure_skip_verify {
                    return Err(UpstreamTlsError::Roots {
                        pool: upstream.name.clone(),
                        reason: format!(
                            "no system CA certificates found ({} errors); set `tls.ca`",
                            found.errors.len()
                        ),
                    });
                }
            }
        }
        let server_name = match &tls.server_name {
            None => None,
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                UpstreamTlsError::Rustls(
                    upstream.name.clone(),
                    rustls::Error::General(format!("`{name}` is not a valid server name")),
                )
            })?),
        };
        if tls.insecure_skip_verify {
            tracing::warn!(upstream = %upstream.name, "insecure_skip_verify: upstream certificates are not verified");
        }
        Ok(Self {
            pool: upstream.name.clone(),
            roots: Arc::new(roots),
            server_name,
            insecure: tls.insecure_skip_verify,
        })
    }

    /// A client config for one worker (its own session cache, so resumption takes no lock another worker holds).
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamTlsError::Rustls(self.pool.clone(), e))?;
        let mut config = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(insecure::AcceptAnyCertificate(
                    provider,
                )))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // After the handshake `super::records` takes the keys and rustls' connection state is dropped.
        config.enable_secret_extraction = true;
        Ok(Arc::new(config))
    }

    /// The server name the pool's `tls.server_name` sets, if any.
    pub(crate) fn server_name(&self) -> Option<ServerName<'static>> {
        self.server_name.clone()
    }
}

/// One worker's TLS client for one upstream pool.
pub(crate) struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    pool: Rc<BufferPool>,
}

impl TlsConnector {
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        server_name: Option<ServerName<'static>>,
        pool: Rc<BufferPool>,
    ) -> Self {
        Self {
            config,
            server_name,
            pool,
        }
    }

    /// The client handshake on a fresh connection to a server written as `host`, before `deadline`.
    pub(crate) async fn handshake(
        &self,
        mut tcp: TcpStream,
        host: &str,
        deadline: Instant,
    ) -> Result<ClientTls, String> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_owned())
                .map_err(|_| format!("`{host}` is not a valid TLS server name"))?,
        };
        let conn = UnbufferedClientConnection::new(self.config.clone(), name)
            .map_err(|e| e.to_string())?;
        let mut engine = TlsEngine::new(conn);
        match drive(
            &mut tcp,
            &mut engine,
            &self.pool,
            &[],
            deadline,
            |_| FirstBytes::Continue,
            || None,
        )
        .await
        {
            Ok(incoming) => TlsStream::new(tcp, engine, incoming, self.pool.clone())
                .map_err(|e| format!("TLS session could not start: {e}")),
            Err(HandshakeError::Tls(e)) => Err(format!("TLS handshake failed: {e}")),
            Err(e) => Err(format!("TLS {e}")),
        }
    }
}

mod insecure {
    //! `insecure_skip_verify: true`: any certificate is accepted; signatures are still checked, so the session is
    //! encrypted, just not authenticated.
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    pub(super) struct AcceptAnyCertificate(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
