//! The TLS-facing entry as the fuzz target drives it: bytes a client sends before and during the handshake, fed to
//! the same `TlsEngine` the listener uses (rustls' unbuffered server, the gateway's record handling), with no
//! socket. Public only for `gateway/fuzz`.

use std::sync::{Arc, OnceLock};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;

use super::engine::{HandshakeStep, TlsEngine};

/// What feeding the bytes came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsEntryOutcome {
    /// More bytes were needed.
    WantsMore,
    /// The handshake failed; `answer_bytes` is what would be sent (records not yet sent, then the alert).
    Refused { answer_bytes: usize },
    /// The handshake completed (only with a real client's flights).
    Completed,
}

fn config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .expect("a fuzzing key");
            let cert = rcgen::CertificateParams::new(vec!["fuzz.test".to_owned()])
                .expect("params")
                .self_signed(&key)
                .expect("a fuzzing certificate");
            let key_der =
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("a key");
            let mut config = ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .expect("a server config");
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

/// Feeds `chunks` in order as a client's bytes would arrive, stepping the handshake after each (what the listener
/// does per read). Must never panic, whatever the bytes.
pub fn feed_client_bytes<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> TlsEntryOutcome {
    let Ok(conn) = UnbufferedServerConnection::new(config()) else {
        return TlsEntryOutcome::WantsMore;
    };
    let mut engine = TlsEngine::new(conn);
    let mut incoming = Vec::new();
    let mut out = Vec::new();
    let mut fed = 0usize;
    for chunk in chunks {
        incoming.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            match engine.handshake(&mut incoming, &mut out) {
                Ok(HandshakeStep::Write) => out.clear(),
                Ok(HandshakeStep::Read) => break,
                Ok(HandshakeStep::Done) => return TlsEntryOutcome::Completed,
                Err(_) => {
                    assert!(
                        incoming.len() <= fed,
                        "the engine kept more than it was given"
                    );
                    return TlsEntryOutcome::Refused {
                        answer_bytes: out.len(),
                    };
                }
            }
        }
        assert!(
            incoming.len() <= fed,
            "the engine kept more than it was given"
        );
    }
    TlsEntryOutcome::WantsMore
}
