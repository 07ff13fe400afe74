//! The sans-IO TLS handshake of one connection: rustls' unbuffered API driven with buffers the caller owns.
//!
//! Owns: the handshake's steps for one connection (server or client side), the alert a failed handshake sends,
//! plaintext that arrives with the last flight, and the hand-over to `super::records` once the handshake is done.
//! Does not own: sockets, timeouts or where buffers come from (`super::handshake` feeds bytes in and writes bytes
//! out), certificates or policy (`super::accept`, `super::connect`), records after the handshake.
//!
//! Why the unbuffered API: rustls' buffered connection keeps a receive buffer per connection; here ciphertext lives in
//! the caller's pooled buffer only while bytes are in flight.

use std::ops::DerefMut;

use rustls::ExtractedSecrets;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};

use super::secrets::{self, Captured, ServerSecrets};
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus};

use super::records::{PostHandshake, RecordLayer};

/// Either side of rustls' unbuffered connection.
pub(crate) trait Unbuffered:
    DerefMut<Target = rustls::unbuffered::UnbufferedConnectionCommon<Self::Data>>
{
    type Data;
    /// What is kept of the handshake once it is done (see `super::records`).
    type Kernel: PostHandshake;
    /// What the handshake collects on the side (the server's traffic secrets, `super::secrets`).
    type Captured: Default;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// Collects what the step that just ran left on the side.
    fn harvest(captured: &mut Self::Captured);
    fn into_kernel(
        self,
        captured: Self::Captured,
    ) -> Result<(ExtractedSecrets, Self::Kernel), TlsError>;
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    type Kernel = ServerSecrets;
    type Captured = Captured;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn harvest(captured: &mut Captured) {
        secrets::drain_into(captured);
    }
    fn into_kernel(self, captured: Captured) -> Result<(ExtractedSecrets, Self::Kernel), TlsError> {
        // rustls' kernel state is dropped here: the captured secrets answer key updates (`super::secrets`).
        let (extracted, kernel) = self.dangerous_into_kernel_connection()?;
        let kept = ServerSecrets::new(kernel.negotiated_cipher_suite(), captured, &extracted)?;
        Ok((extracted, kept))
    }
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    type Kernel = KernelConnection<ClientConnectionData>;
    type Captured = ();
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn harvest(_: &mut ()) {}
    fn into_kernel(self, _: ()) -> Result<(ExtractedSecrets, Self::Kernel), TlsError> {
        Ok(self.dangerous_into_kernel_connection()?)
    }
}

/// Why a TLS connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// rustls refused the peer's records (bad handshake, failed decryption, a certificate that does not verify...).
    #[error("{0}")]
    Protocol(#[from] rustls::Error),
    /// The peer ended the TLS session (close_notify) before the handshake finished.
    #[error("peer closed the connection during the TLS handshake")]
    ClosedInHandshake,
    /// The peer split a post-handshake message over several records, which this gateway does not reassemble
    /// (rustls needs those records kept in place while the other direction writes).
    #[error("peer fragmented a post-handshake message across records")]
    FragmentedPostHandshake,
    /// The peer made rustls queue more replies (key updates) than [`MAX_OWED`] bytes while nothing was written.
    #[error("peer made the gateway owe more than {MAX_OWED} bytes of TLS replies")]
    TooManyOwedRecords,
    /// A record did not authenticate (bad_record_mac).
    #[error("a TLS record failed authentication")]
    BadRecordMac,
    /// A record longer than TLS allows (record_overflow).
    #[error("a TLS record longer than TLS allows")]
    RecordOverflow,
    /// A record or message TLS does not allow at this point (unexpected_message).
    #[error("unexpected TLS message: {0}")]
    UnexpectedMessage(&'static str),
    /// The peer sent a fatal alert.
    #[error("the peer sent TLS alert {0}")]
    PeerAlert(u8),
    /// rustls asked for something this driver does not handle (early data, a state of a newer rustls).
    #[error("unexpected TLS state: {0}")]
    Unexpected(&'static str),
}

/// What the handshake needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeStep {
    /// More bytes from the peer, appended to `incoming`.
    Read,
    /// Send `out` to the peer, then step again.
    Write,
    /// The handshake is complete (`out` is empty).
    Done,
}

/// What [`TlsEngine::decrypt`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decrypted {
    /// Plaintext bytes written to the caller's buffer.
    pub(crate) written: usize,
    /// The peer sent close_notify: no more data will come.
    pub(crate) peer_closed: bool,
}

/// Where decrypted bytes go: the caller's read buffer.
pub(crate) trait PlainSink {
    /// Copies as much of `bytes` as fits and returns how much.
    fn put(&mut self, bytes: &[u8]) -> usize;
}

/// A `Vec` takes plaintext up to its capacity (tests, and callers that own a plain `Vec`).
impl PlainSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.capacity() - self.len());
        self.extend_from_slice(&bytes[..n]);
        n
    }
}

/// Most bytes of replies (alerts, key updates) the read side may queue for the writer.
pub(crate) const MAX_OWED: usize = 16 * 1024;

/// One TLS connection's state during its handshake.
pub(crate) struct TlsEngine<C: Unbuffered> {
    conn: C,
    /// Decrypted bytes that came with the handshake's last flight.
    plain: Vec<u8>,
    handshaking: bool,
    /// rustls failed once: it is never stepped again (after a fatal alert it asserts it sends no second one).
    failed: bool,
    captured: C::Captured,
}

impl<C: Unbuffered> TlsEngine<C> {
    pub(crate) fn new(conn: C) -> Self {
        Self {
            conn,
            plain: Vec::new(),
            handshaking: true,
            failed: false,
            captured: C::Captured::default(),
        }
    }

    /// The connection, for what the handshake decided (version, SNI, peer certificates).
    pub(crate) fn conn(&self) -> &C {
        &self.conn
    }

    /// Runs the handshake over `incoming` (bytes received and not yet consumed; consumed ones are removed) and
    /// appends what must be sent to `out`. Plaintext that arrives with the last handshake flight is kept for
    /// [`TlsEngine::take_plain`]. On an error, the alert for the peer (if any) is appended to `out`.
    pub(crate) fn handshake(
        &mut self,
        incoming: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<HandshakeStep, TlsError> {
        if self.failed {
            return Err(TlsError::Unexpected("the TLS session failed earlier"));
        }
        let mut start = 0;
        let result = loop {
            let status = self.conn.process(&mut incoming[start..]);
            let discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    start += discard;
                    C::harvest(&mut self.captured);
                    break Err(TlsError::Protocol(e));
                }
            };
            let step = match state {
                ConnectionState::EncodeTlsData(mut data) => {
                    encode_into(out, |buf| data.encode(buf));
                    None
                }
                ConnectionState::TransmitTlsData(data) => {
                    // The caller sends `out` before stepping again, which is all `done` promises.
                    data.done();
                    Some(Ok(HandshakeStep::Write))
                }
                ConnectionState::BlockedHandshake => Some(Ok(HandshakeStep::Read)),
                ConnectionState::WriteTraffic(_) => {
                    self.handshaking = false;
                    Some(Ok(HandshakeStep::Done))
                }
                ConnectionState::ReadTraffic(mut records) => {
                    let mut failed = None;
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(r) => self.plain.extend_from_slice(r.payload),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    failed.map(|e| Err(TlsError::Protocol(e)))
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    Some(Err(TlsError::ClosedInHandshake))
                }
                ConnectionState::ReadEarlyData(_) => Some(Err(TlsError::Unexpected(
                    "early data (0-RTT is not enabled)",
                ))),
                _ => Some(Err(TlsError::Unexpected("unknown connection state"))),
            };
            start += discard;
            C::harvest(&mut self.captured);
            if let Some(step) = step {
                break step;
            }
        };
        if result.is_err() {
            self.queue_alert(&mut incoming[start..], out);
            self.failed = true;
        }
        incoming.drain(..start.min(incoming.len()));
        result
    }

    /// After a failure, rustls has queued an alert for the peer: encodes it into `out`. rustls is stepped only while
    /// it has records queued, so it never looks at `incoming` again (doing so would fail the same way and try to
    /// send a second fatal alert, which rustls asserts against).
    fn queue_alert(&mut self, incoming: &mut [u8], out: &mut Vec<u8>) {
        for _ in 0..4 {
            if !self.conn.wants_write() {
                return;
            }
            let status = self.conn.process(incoming);
            let encoded = match status.state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode_into(out, |buf| data.encode(buf));
                    true
                }
                _ => false,
            };
            C::harvest(&mut self.captured);
            if !encoded {
                return;
            }
        }
    }

    /// After [`HandshakeStep::Done`]: hands the session over to the record layer, with plaintext that came with
    /// the handshake. rustls' connection state is dropped here (see `super::records` for why).
    pub(crate) fn into_records(self) -> Result<RecordLayer<C::Kernel>, TlsError> {
        if self.handshaking || self.failed {
            return Err(TlsError::Unexpected("the handshake did not complete"));
        }
        let (secrets, kernel) = self.conn.into_kernel(self.captured)?;
        RecordLayer::new(secrets, kernel, self.plain)
    }
}

/// Appends one record rustls hands out to `out`, growing it as rustls asks.
fn encode_into(out: &mut Vec<u8>, mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(_) => {
                out.truncate(start);
                return;
            }
        }
    }
}

/// An in-memory TLS peer for tests of the engine and the record layer: a rustls client (buffered) against the
/// engine's server side.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use rustls::crypto::CryptoProvider;
    use rustls::{
        ClientConfig, ClientConnection, RootCertStore, ServerConfig, SupportedCipherSuite,
    };

    use super::*;

    /// A client limited to `suite` (any of rustls' defaults when `None`) and TLS 1.2 or 1.3 as the suite says.
    pub(crate) fn pair_with(
        suite: Option<SupportedCipherSuite>,
    ) -> (ClientConnection, TlsEngine<UnbufferedServerConnection>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["engine.test".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key"),
            )
            .expect("server config");
        server.enable_secret_extraction = true;
        server.key_log = Arc::new(crate::tls::secrets::CaptureTrafficSecrets);
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let client_provider = match suite {
            Some(s) => Arc::new(CryptoProvider {
                cipher_suites: vec![s],
                ..rustls::crypto::aws_lc_rs::default_provider()
            }),
            None => provider,
        };
        let versions: &[&rustls::SupportedProtocolVersion] = match suite {
            Some(SupportedCipherSuite::Tls12(_)) => &[&rustls::version::TLS12],
            _ => &[&rustls::version::TLS13],
        };
        let client = ClientConfig::builder_with_provider(client_provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client =
            ClientConnection::new(Arc::new(client), "engine.test".try_into().expect("name"))
                .expect("client");
        let server = UnbufferedServerConnection::new(Arc::new(server)).expect("server");
        (client, TlsEngine::new(server))
    }

    /// Everything the client wants to send.
    pub(crate) fn from_client(client: &mut ClientConnection) -> Vec<u8> {
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    pub(crate) fn to_client(client: &mut ClientConnection, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            client.read_tls(&mut bytes).expect("read_tls");
            client.process_new_packets().expect("client accepts");
        }
    }

    /// Runs the handshake to completion; returns ciphertext left over for the record layer.
    pub(crate) fn handshake(
        client: &mut ClientConnection,
        engine: &mut TlsEngine<UnbufferedServerConnection>,
    ) -> Vec<u8> {
        let mut incoming = Vec::with_capacity(64 * 1024);
        let mut out = Vec::new();
        for _ in 0..20 {
            incoming.extend(from_client(client));
            match engine
                .handshake(&mut incoming, &mut out)
                .expect("handshake")
            {
                HandshakeStep::Write => {
                    to_client(client, &out);
                    out.clear();
                }
                HandshakeStep::Read => {}
                HandshakeStep::Done => {
                    to_client(client, &out);
                    return incoming;
                }
            }
        }
        panic!("the handshake did not finish");
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;

    #[test]
    fn garbage_in_place_of_a_client_hello_is_refused_with_an_alert_and_no_panic() {
        let (_, mut engine) = pair_with(None);
        let mut incoming = b"\x16\x03\x01\x00\x08\x02\x00\x00\x04\x03\x03\x00\x00".to_vec();
        let mut out = Vec::new();
        assert!(engine.handshake(&mut incoming, &mut out).is_err());
        assert_eq!(out.first(), Some(&0x15), "an alert record: {out:?}");
        // Stepping again after the failure stays an error (rustls asserted here before).
        assert!(engine.handshake(&mut incoming, &mut out).is_err());
    }

    #[test]
    fn the_record_layer_takes_over_only_after_a_complete_handshake() {
        let (_, engine) = pair_with(None);
        assert!(engine.into_records().is_err());
        let (mut client, mut engine) = pair_with(None);
        let _ = handshake(&mut client, &mut engine);
        assert!(engine.into_records().is_ok());
    }
}
