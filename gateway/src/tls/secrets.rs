//! The TLS 1.3 application traffic secrets of a server-side connection, so the record layer can follow key updates
//! without keeping rustls' kernel state.
//!
//! Owns: capturing the two traffic secrets while rustls runs a server handshake, and the key-update ratchet over
//! them (RFC 8446 §7.2: `secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length)`, then the
//! record key and IV from the new secret, §7.3). The HKDF is the negotiated suite's own (rustls' provider, aws-lc-rs);
//! only the labels are built here. Does not own: record protection (`super::records`), the handshake
//! (`super::engine`), client-side connections (they keep rustls' kernel state: they also take session tickets).
//!
//! Why: what `dangerous_into_kernel_connection` leaves is 560 bytes inline plus its key schedule on the heap, kept
//! for the life of every connection only to answer a key update; the two secrets are under 100 bytes. rustls hands
//! the secrets to a [`KeyLog`] (the SSLKEYLOGFILE hook). [`CaptureTrafficSecrets`] keeps them in a thread-local slot
//! that the engine drains after every rustls step: handshakes on one worker interleave only between steps, so one
//! connection never takes another's secrets, and the record layer checks the captured secrets against the keys
//! rustls extracted before it trusts them.

use std::cell::RefCell;

use rustls::crypto::tls13::{HkdfExpander, OkmBlock};
use rustls::{
    ConnectionTrafficSecrets, ExtractedSecrets, KeyLog, ProtocolVersion, SupportedCipherSuite,
    Tls13CipherSuite,
};
use zeroize::Zeroize;

use super::engine::TlsError;
use super::records::{PostHandshake, TrafficKey};

const CLIENT_TRAFFIC_SECRET: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_TRAFFIC_SECRET: &str = "SERVER_TRAFFIC_SECRET_0";
/// SHA-384's output: the longest hash of a TLS 1.3 suite.
const MAX_SECRET: usize = 48;

/// One traffic secret (zeroed when dropped).
pub(crate) struct TrafficSecret {
    bytes: [u8; MAX_SECRET],
    len: u8,
}

impl TrafficSecret {
    fn new(secret: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; MAX_SECRET];
        bytes.get_mut(..secret.len())?.copy_from_slice(secret);
        Some(Self {
            bytes,
            len: secret.len() as u8,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Drop for TrafficSecret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// The secrets a handshake produced so far (its engine keeps them until the record layer takes over).
#[derive(Default)]
pub(crate) struct Captured {
    client: Option<TrafficSecret>,
    server: Option<TrafficSecret>,
}

thread_local! {
    static CAPTURED: RefCell<Captured> = RefCell::new(Captured::default());
}

/// Moves what rustls logged during the step that just ran on this thread into `slot`.
pub(crate) fn drain_into(slot: &mut Captured) {
    CAPTURED.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(s) = c.client.take() {
            slot.client = Some(s);
        }
        if let Some(s) = c.server.take() {
            slot.server = Some(s);
        }
    });
}

/// The [`KeyLog`] of the gateway's server configs: keeps the application traffic secrets for [`drain_into`], and
/// nothing else (handshake secrets, the exporter secret and TLS 1.2's master secret are declined).
#[derive(Debug)]
pub(crate) struct CaptureTrafficSecrets;

impl KeyLog for CaptureTrafficSecrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let Some(secret) = TrafficSecret::new(secret) else {
            return;
        };
        CAPTURED.with(|c| {
            let mut c = c.borrow_mut();
            match label {
                CLIENT_TRAFFIC_SECRET => c.client = Some(secret),
                SERVER_TRAFFIC_SECRET => c.server = Some(secret),
                _ => {}
            }
        });
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_TRAFFIC_SECRET || label == SERVER_TRAFFIC_SECRET
    }
}

/// What a server-side connection keeps of its handshake: the suite, and for TLS 1.3 the current secrets.
pub(crate) struct ServerSecrets {
    suite: SupportedCipherSuite,
    /// TLS 1.3 only (TLS 1.2 has no key update).
    ratchet: Option<Ratchet>,
}

struct Ratchet {
    suite: &'static Tls13CipherSuite,
    /// The client's secret: what we read with.
    rx: TrafficSecret,
    /// Ours: what we write with.
    tx: TrafficSecret,
}

impl ServerSecrets {
    /// Keeps `captured` for a TLS 1.3 session after checking it yields the keys rustls extracted.
    pub(crate) fn new(
        suite: SupportedCipherSuite,
        captured: Captured,
        extracted: &ExtractedSecrets,
    ) -> Result<Self, TlsError> {
        let SupportedCipherSuite::Tls13(tls13) = suite else {
            return Ok(Self {
                suite,
                ratchet: None,
            });
        };
        let (Some(rx), Some(tx)) = (captured.client, captured.server) else {
            return Err(TlsError::Unexpected(
                "rustls did not hand over the traffic secrets",
            ));
        };
        let ratchet = Ratchet {
            suite: tls13,
            rx,
            tx,
        };
        let matches = |secret: &TrafficSecret, theirs: &ConnectionTrafficSecrets| {
            traffic_key(tls13, secret).is_ok_and(|ours| ours.matches(theirs))
        };
        if !matches(&ratchet.rx, &extracted.rx.1) || !matches(&ratchet.tx, &extracted.tx.1) {
            return Err(TlsError::Unexpected(
                "captured traffic secrets do not match the session",
            ));
        }
        Ok(Self {
            suite,
            ratchet: Some(ratchet),
        })
    }
}

impl PostHandshake for ServerSecrets {
    fn new_session_ticket(&mut self, _: &[u8]) -> Result<(), TlsError> {
        Err(TlsError::UnexpectedMessage(
            "a session ticket sent by a client",
        ))
    }

    fn update_rx(&mut self) -> Result<TrafficKey, TlsError> {
        let r = self.ratchet.as_mut().ok_or(NO_KEY_UPDATE)?;
        next_key(r.suite, &mut r.rx)
    }

    fn update_tx(&mut self) -> Result<TrafficKey, TlsError> {
        let r = self.ratchet.as_mut().ok_or(NO_KEY_UPDATE)?;
        next_key(r.suite, &mut r.tx)
    }

    fn suite(&self) -> SupportedCipherSuite {
        self.suite
    }

    fn version(&self) -> ProtocolVersion {
        match self.suite {
            SupportedCipherSuite::Tls13(_) => ProtocolVersion::TLSv1_3,
            SupportedCipherSuite::Tls12(_) => ProtocolVersion::TLSv1_2,
        }
    }
}

const NO_KEY_UPDATE: TlsError = TlsError::Unexpected("a key update outside TLS 1.3");

/// Moves `secret` one step on (RFC 8446 §7.2) and returns the record key and IV of the new secret.
fn next_key(suite: &Tls13CipherSuite, secret: &mut TrafficSecret) -> Result<TrafficKey, TlsError> {
    let expander = suite
        .hkdf_provider
        .expander_for_okm(&OkmBlock::new(secret.as_bytes()));
    let mut next = [0u8; MAX_SECRET];
    let len = expander.hash_len();
    let out = next.get_mut(..len).ok_or(LENGTH)?;
    expand_label(&*expander, b"traffic upd", out)?;
    *secret = TrafficSecret::new(out).ok_or(LENGTH)?;
    next.zeroize();
    traffic_key(suite, secret)
}

/// The record key and IV of a traffic secret (RFC 8446 §7.3).
fn traffic_key(suite: &Tls13CipherSuite, secret: &TrafficSecret) -> Result<TrafficKey, TlsError> {
    let expander = suite
        .hkdf_provider
        .expander_for_okm(&OkmBlock::new(secret.as_bytes()));
    let mut key = TrafficKey::empty(suite.aead_alg.key_len()).ok_or(LENGTH)?;
    expand_label(&*expander, b"key", key.key_mut())?;
    expand_label(&*expander, b"iv", key.iv_mut())?;
    Ok(key)
}

const LENGTH: TlsError = TlsError::Unexpected("a traffic secret or key of an unexpected length");

/// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446 §7.1).
fn expand_label(expander: &dyn HkdfExpander, label: &[u8], out: &mut [u8]) -> Result<(), TlsError> {
    const PREFIX: &[u8] = b"tls13 ";
    let out_len = u16::try_from(out.len()).map_err(|_| LENGTH)?.to_be_bytes();
    let label_len = [u8::try_from(PREFIX.len() + label.len()).map_err(|_| LENGTH)?];
    let context_len = [0u8];
    expander
        .expand_slice(&[&out_len, &label_len, PREFIX, label, &context_len], out)
        .map_err(|_| LENGTH)
}

#[cfg(test)]
mod tests {
    use rustls::crypto::aws_lc_rs::cipher_suite;

    use super::*;

    fn tls13(suite: SupportedCipherSuite) -> &'static Tls13CipherSuite {
        match suite {
            SupportedCipherSuite::Tls13(s) => s,
            SupportedCipherSuite::Tls12(_) => unreachable!("a TLS 1.3 suite"),
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn traffic_keys_match_rfc_8448s_simple_1rtt_handshake() {
        // RFC 8448 §3: the server's application traffic secret and the key and IV derived from it.
        let secret = TrafficSecret::new(&hex(
            "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643",
        ))
        .expect("secret");
        let key = traffic_key(tls13(cipher_suite::TLS13_AES_128_GCM_SHA256), &secret).expect("key");
        assert_eq!(key.key().to_vec(), hex("9f02283b6c9c07efc26bb9f2ac92e356"));
        assert_eq!(key.iv().to_vec(), hex("cf782b88dd83549aadf1e984"));
    }

    #[test]
    fn the_ratchet_follows_rustls_own_key_update_in_every_tls13_suite() {
        // rustls' client updates its keys; the server side here follows with its own ratchet (records.rs tests
        // run the same through whole sessions).
        for suite in [
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let s = tls13(suite);
            let mut secret = TrafficSecret::new(&vec![7u8; s.common.hash_provider.output_len()])
                .expect("secret");
            let first = next_key(s, &mut secret).expect("update");
            let second = next_key(s, &mut secret).expect("update");
            assert_eq!(first.key().len(), s.aead_alg.key_len());
            assert_ne!(first.key().to_vec(), second.key().to_vec());
            assert_eq!(secret.as_bytes().len(), s.common.hash_provider.output_len());
        }
    }

    #[test]
    fn the_key_log_keeps_only_the_application_traffic_secrets_and_draining_empties_it() {
        let log = CaptureTrafficSecrets;
        assert!(!log.will_log("CLIENT_HANDSHAKE_TRAFFIC_SECRET"));
        assert!(!log.will_log("EXPORTER_SECRET"));
        assert!(!log.will_log("CLIENT_RANDOM"));
        log.log(CLIENT_TRAFFIC_SECRET, &[0; 32], &[1; 32]);
        log.log(SERVER_TRAFFIC_SECRET, &[0; 32], &[2; 32]);
        log.log(SERVER_TRAFFIC_SECRET, &[0; 32], &[3; 64]); // too long: ignored
        let mut slot = Captured::default();
        drain_into(&mut slot);
        assert_eq!(
            slot.client.as_ref().map(|s| s.as_bytes().to_vec()),
            Some(vec![1; 32])
        );
        assert_eq!(
            slot.server.as_ref().map(|s| s.as_bytes().to_vec()),
            Some(vec![2; 32])
        );
        let mut again = Captured::default();
        drain_into(&mut again);
        assert!(again.client.is_none() && again.server.is_none());
    }
}
