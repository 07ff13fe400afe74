//! The sans-IO core of one TLS connection: rustls' unbuffered API driven with buffers the caller owns.
//!
//! Owns: turning ciphertext into plaintext and back for one connection (server or client side), the handshake's
//! steps, the records rustls wants sent outside the data flow (alerts, tickets, key updates), and the plaintext a
//! caller's buffer had no room for. Does not own: sockets, timeouts or where buffers come from
//! (`super::stream` feeds bytes in and writes bytes out), certificates or policy (`super::server`).
//!
//! Why the unbuffered API: rustls' buffered connection keeps a receive buffer per connection for its whole life; here
//! ciphertext lives in the caller's pooled buffer only while bytes are in flight, so an idle connection pins none.
//! Nothing here allocates per connection beyond rustls' own state, except while plaintext or owed records are
//! pending.

use std::ops::DerefMut;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};

/// Either side of rustls' unbuffered connection.
pub(crate) trait Unbuffered:
    DerefMut<Target = rustls::unbuffered::UnbufferedConnectionCommon<Self::Data>>
{
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
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

/// Bytes of record overhead budgeted per 16 KiB of plaintext (header, nonce, tag, content type).
const RECORD_OVERHEAD: usize = 64;
/// Most bytes of replies (alerts, key updates) the read side may queue for the writer.
const MAX_OWED: usize = 16 * 1024;
/// Largest plaintext of one TLS record.
const MAX_FRAGMENT: usize = 16 * 1024;

/// One TLS connection's state apart from its socket.
pub(crate) struct TlsEngine<C> {
    conn: C,
    /// Decrypted bytes the caller's buffer had no room for, from `plain_pos` on.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Records produced while reading (alerts, key updates, tickets) that go out before the next write.
    owed: Vec<u8>,
    peer_closed: bool,
    handshaking: bool,
    /// rustls failed once: it is never stepped again (after a fatal alert it asserts it sends no second one).
    failed: bool,
}

impl<C: Unbuffered> TlsEngine<C> {
    pub(crate) fn new(conn: C) -> Self {
        Self {
            conn,
            plain: Vec::new(),
            plain_pos: 0,
            owed: Vec::new(),
            peer_closed: false,
            handshaking: true,
            failed: false,
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
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode_into(out, |buf| data.encode(buf));
                }
                _ => return,
            }
        }
    }

    /// Decrypted bytes waiting for the caller (a record larger than its last buffer, or data that came with the
    /// handshake).
    pub(crate) fn has_plain(&self) -> bool {
        self.plain_pos < self.plain.len()
    }

    /// Moves waiting plaintext into `dst`; returns how many bytes. Frees the holding buffer once drained.
    pub(crate) fn take_plain(&mut self, dst: &mut impl PlainSink) -> usize {
        if !self.has_plain() {
            return 0;
        }
        let n = dst.put(&self.plain[self.plain_pos..]);
        self.plain_pos += n;
        if self.plain_pos == self.plain.len() {
            self.plain = Vec::new();
            self.plain_pos = 0;
        }
        n
    }

    /// The peer sent close_notify.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Decrypts the whole records in `incoming` (consumed bytes are removed; a partial record stays) into `dst`;
    /// what does not fit is kept for [`TlsEngine::take_plain`]. Records rustls wants sent in reply are kept for the
    /// next [`TlsEngine::encrypt`].
    pub(crate) fn decrypt(
        &mut self,
        incoming: &mut Vec<u8>,
        dst: &mut impl PlainSink,
    ) -> Result<Decrypted, TlsError> {
        if self.failed {
            return Err(TlsError::Unexpected("the TLS session failed earlier"));
        }
        let mut written = self.take_plain(dst);
        let mut start = 0;
        let result = loop {
            let status = self.conn.process(&mut incoming[start..]);
            let discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    start += discard;
                    break Err(TlsError::Protocol(e));
                }
            };
            let end = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    let mut failed = None;
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(r) => {
                                let n = if self.plain_pos < self.plain.len() {
                                    0
                                } else {
                                    dst.put(r.payload)
                                };
                                written += n;
                                self.plain.extend_from_slice(&r.payload[n..]);
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    failed.map(|e| Err(TlsError::Protocol(e)))
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    encode_into(&mut self.owed, |buf| data.encode(buf));
                    // A peer that keeps asking for replies (key updates) while we never write would grow this
                    // without end.
                    (self.owed.len() > MAX_OWED).then_some(Err(TlsError::TooManyOwedRecords))
                }
                ConnectionState::TransmitTlsData(data) => {
                    // Sent by the writer before its next record (`owed`), in order.
                    data.done();
                    None
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::WriteTraffic(_)
                | ConnectionState::BlockedHandshake
                | ConnectionState::Closed => Some(Ok(())),
                ConnectionState::ReadEarlyData(_) => {
                    Some(Err(TlsError::Unexpected("early data after the handshake")))
                }
                _ => Some(Err(TlsError::Unexpected("unknown connection state"))),
            };
            start += discard;
            if let Some(end) = end {
                break end;
            }
        };
        let rest = incoming.len() - start.min(incoming.len());
        incoming.drain(..incoming.len() - rest);
        if result.is_err() {
            self.failed = true;
        }
        result?;
        if self.peer_closed {
            // "Any data received after a closure alert has been received MUST be ignored" (RFC 8446 §6.1).
            incoming.clear();
        } else if holds_whole_record(incoming) {
            // rustls keeps a partial handshake message as positions into these bytes; the writer, which passes no
            // bytes, would then hand it a shorter buffer.
            return Err(TlsError::FragmentedPostHandshake);
        }
        Ok(Decrypted {
            written,
            peer_closed: self.peer_closed,
        })
    }

    /// Encrypts up to about `out`'s spare capacity worth of `plain` into `out` (records owed from reading go
    /// first) and returns how many plaintext bytes were taken. `out` should have room for at least one small
    /// record.
    pub(crate) fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, TlsError> {
        self.flush_owed(out);
        let spare = out.capacity() - out.len();
        let records = spare / (MAX_FRAGMENT + RECORD_OVERHEAD) + 1;
        let take = match plain
            .len()
            .min(spare.saturating_sub(records * RECORD_OVERHEAD))
        {
            0 => plain.len().min(MAX_FRAGMENT),
            n => n,
        };
        let plain = &plain[..take];
        self.with_write_traffic(out, |traffic, out| {
            let start = out.len();
            let mut room = take + take.div_ceil(MAX_FRAGMENT).max(1) * RECORD_OVERHEAD;
            loop {
                out.resize(start + room, 0);
                match traffic.encrypt(plain, &mut out[start..]) {
                    Ok(n) => {
                        out.truncate(start + n);
                        return Ok(take);
                    }
                    Err(EncryptError::InsufficientSize(InsufficientSizeError {
                        required_size,
                    })) if required_size > room => {
                        room = required_size;
                    }
                    Err(e) => {
                        out.truncate(start);
                        return Err(TlsError::Protocol(rustls::Error::General(e.to_string())));
                    }
                }
            }
        })
    }

    /// Appends close_notify (after any owed records) to `out`.
    pub(crate) fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        self.flush_owed(out);
        self.with_write_traffic(out, |traffic, out| {
            let start = out.len();
            out.resize(start + 64, 0);
            match traffic.queue_close_notify(&mut out[start..]) {
                Ok(n) => {
                    out.truncate(start + n);
                    Ok(())
                }
                Err(e) => {
                    out.truncate(start);
                    Err(TlsError::Protocol(rustls::Error::General(e.to_string())))
                }
            }
        })
    }

    /// Records owed from reading, to be sent before anything else; `out` takes them.
    fn flush_owed(&mut self, out: &mut Vec<u8>) {
        if !self.owed.is_empty() {
            out.extend_from_slice(&self.owed);
            self.owed = Vec::new();
        }
    }

    /// Steps rustls (with no new input) to its write state, encoding whatever it still wants sent into `out`, then
    /// runs `f` with the write handle.
    fn with_write_traffic<T>(
        &mut self,
        out: &mut Vec<u8>,
        f: impl FnOnce(
            &mut rustls::unbuffered::WriteTraffic<'_, C::Data>,
            &mut Vec<u8>,
        ) -> Result<T, TlsError>,
    ) -> Result<T, TlsError> {
        if self.handshaking || self.failed {
            return Err(TlsError::Unexpected(
                "write before the handshake finished or after the session failed",
            ));
        }
        // Each turn either encodes a queued record or ends; rustls queues a handful at most.
        for _ in 0..16 {
            let status = self.conn.process(&mut []);
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    self.failed = true;
                    return Err(TlsError::Protocol(e));
                }
            };
            match state {
                ConnectionState::EncodeTlsData(mut data) => {
                    encode_into(out, |buf| data.encode(buf));
                }
                ConnectionState::TransmitTlsData(mut data) => {
                    if let Some(mut traffic) = data.may_encrypt_app_data() {
                        let r = f(&mut traffic, out);
                        data.done();
                        return r;
                    }
                    data.done();
                }
                ConnectionState::WriteTraffic(mut traffic) => return f(&mut traffic, out),
                ConnectionState::Closed => {
                    return Err(TlsError::Unexpected("write after close_notify"));
                }
                // Reading is the other half's job; nothing else should appear without input.
                _ => return Err(TlsError::Unexpected("not ready to write")),
            }
        }
        Err(TlsError::Unexpected("rustls kept queueing records"))
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

/// Whether `bytes` starts with at least one whole TLS record (5-byte header plus its length).
fn holds_whole_record(bytes: &[u8]) -> bool {
    bytes.len() >= 5 && bytes.len() >= 5 + usize::from(u16::from_be_bytes([bytes[3], bytes[4]]))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

    use super::*;

    /// A rustls client (buffered) and the engine (unbuffered server) over in-memory buffers.
    fn pair() -> (ClientConnection, TlsEngine<UnbufferedServerConnection>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["engine.test".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key"),
            )
            .expect("server config");
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
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
    fn from_client(client: &mut ClientConnection) -> Vec<u8> {
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    fn to_client(client: &mut ClientConnection, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            client.read_tls(&mut bytes).expect("read_tls");
        }
        client.process_new_packets().expect("client accepts");
    }

    /// Runs the handshake to completion; returns ciphertext left over for the stream.
    fn handshake(
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

    fn read_all(
        engine: &mut TlsEngine<UnbufferedServerConnection>,
        incoming: &mut Vec<u8>,
    ) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            let mut dst = Vec::with_capacity(7);
            let d = engine.decrypt(incoming, &mut dst).expect("decrypt");
            got.extend_from_slice(&dst);
            if d.written == 0 && !engine.has_plain() {
                return got;
            }
        }
    }

    #[test]
    fn data_both_ways_through_small_buffers_and_a_key_update() {
        use std::io::{Read, Write};
        let (mut client, mut engine) = pair();
        let mut incoming = handshake(&mut client, &mut engine);
        client
            .writer()
            .write_all(b"hello over tls, in small reads")
            .expect("write");
        incoming.extend(from_client(&mut client));
        // The caller's buffer holds 7 bytes: the rest waits in the engine, nothing is lost.
        assert_eq!(
            read_all(&mut engine, &mut incoming),
            b"hello over tls, in small reads"
        );

        let mut out = Vec::with_capacity(1024);
        let n = engine.encrypt(b"and back", &mut out).expect("encrypt");
        assert_eq!(n, 8);
        to_client(&mut client, &out);
        let mut back = [0u8; 8];
        client.reader().read_exact(&mut back).expect("client reads");
        assert_eq!(&back, b"and back");

        // The client updates its keys and asks us to do the same: our key update goes out before our next data.
        client.refresh_traffic_keys().expect("key update");
        client.writer().write_all(b"new keys").expect("write");
        incoming.extend(from_client(&mut client));
        assert_eq!(read_all(&mut engine, &mut incoming), b"new keys");
        let mut out = Vec::with_capacity(1024);
        engine.encrypt(b"after", &mut out).expect("encrypt");
        to_client(&mut client, &out);
        let mut after = [0u8; 5];
        client
            .reader()
            .read_exact(&mut after)
            .expect("client reads");
        assert_eq!(&after, b"after");
    }

    #[test]
    fn close_notify_ends_reading_and_later_bytes_are_ignored() {
        let (mut client, mut engine) = pair();
        let mut incoming = handshake(&mut client, &mut engine);
        client.send_close_notify();
        incoming.extend(from_client(&mut client));
        // A whole record of garbage after the alert must not turn a clean end into an error.
        incoming.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x02, 0xde, 0xad]);
        let mut dst = Vec::with_capacity(64);
        let d = engine
            .decrypt(&mut incoming, &mut dst)
            .expect("a clean end");
        assert!(d.peer_closed && d.written == 0);
        assert!(incoming.is_empty());
        let mut out = Vec::with_capacity(256);
        engine.close_notify(&mut out).expect("our close_notify");
        assert!(!out.is_empty());
    }

    #[test]
    fn garbage_in_place_of_a_client_hello_is_refused_with_an_alert_and_no_panic() {
        let (_, mut engine) = pair();
        let mut incoming = b"\x16\x03\x01\x00\x08\x02\x00\x00\x04\x03\x03\x00\x00".to_vec();
        let mut out = Vec::new();
        assert!(engine.handshake(&mut incoming, &mut out).is_err());
        assert_eq!(out.first(), Some(&0x15), "an alert record: {out:?}");
        // Stepping again after the failure stays an error (rustls asserted here before).
        assert!(engine.handshake(&mut incoming, &mut out).is_err());
    }
}
