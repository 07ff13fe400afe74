//! The TLS record layer after the handshake: application data, alerts and post-handshake messages for one
//! connection, sans-IO, with keys rustls hands over once the handshake is done.
//!
//! Owns: record framing, AEAD protection of records (TLS 1.3 and TLS 1.2 AEAD suites, via aws-lc-rs), sequence
//! numbers, key updates (new keys come from [`PostHandshake`]: `super::secrets` on server-side connections, rustls'
//! [`KernelConnection`] on client-side ones, the same path kTLS takes), session tickets a server sends to our client
//! side (handed to rustls' session store), alerts, and plaintext a caller's buffer had no room for. Does not own: the
//! handshake (`super::engine`), sockets or buffers (`super::stream`).
//!
//! Why not keep rustls' connection after the handshake: its state is about 2.3 KB of Rust memory and two AEAD
//! contexts (about 1.2 KB more) for the whole life of a connection, most of which is idle for a realtime service.
//! Here the live state is the traffic keys' bytes (under 200 bytes) plus the traffic secrets; the AEAD
//! contexts are built when records flow and dropped by [`RecordLayer::release_keys`] when the connection parks.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce as AeadNonce, UnboundKey};
use rustls::client::ClientConnectionData;
use rustls::crypto::cipher::{Iv, Nonce};
use rustls::kernel::KernelConnection;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};
use zeroize::Zeroize;

use super::engine::{Decrypted, PlainSink, TlsError};

const HEADER: usize = 5;
const TAG: usize = 16;
/// TLS 1.2 AES-GCM records carry the last 8 bytes of their nonce.
const EXPLICIT_NONCE: usize = 8;
/// Largest plaintext of one record (RFC 8446 §5.1, RFC 5246 §6.2.1).
const MAX_FRAGMENT: usize = 16 * 1024;
/// Most bytes of replies (key updates) the read side may queue for the writer.
const MAX_OWED: usize = 16 * 1024;

const CONTENT_CHANGE_CIPHER_SPEC: u8 = 20;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;

const ALERT_WARNING: u8 = 1;
const ALERT_CLOSE_NOTIFY: u8 = 0;
const ALERT_USER_CANCELED: u8 = 90;

const HANDSHAKE_HELLO_REQUEST: u8 = 0;
const HANDSHAKE_NEW_SESSION_TICKET: u8 = 4;
const HANDSHAKE_KEY_UPDATE: u8 = 24;

/// What a connection's side does with post-handshake messages only one side receives.
pub(crate) trait PostHandshake {
    /// A TLS 1.3 NewSessionTicket (its body): clients keep it for resumption; servers never receive one.
    fn new_session_ticket(&mut self, body: &[u8]) -> Result<(), TlsError>;
    /// The peer changed its key: the next one.
    fn update_rx(&mut self) -> Result<TrafficKey, TlsError>;
    /// We change ours: the next one.
    fn update_tx(&mut self) -> Result<TrafficKey, TlsError>;
    fn suite(&self) -> SupportedCipherSuite;
    fn version(&self) -> ProtocolVersion;
}

macro_rules! kernel_common {
    () => {
        fn update_rx(&mut self) -> Result<TrafficKey, TlsError> {
            Ok(TrafficKey::from_rustls(self.update_rx_secret()?.1)?.1)
        }
        fn update_tx(&mut self) -> Result<TrafficKey, TlsError> {
            Ok(TrafficKey::from_rustls(self.update_tx_secret()?.1)?.1)
        }
        fn suite(&self) -> SupportedCipherSuite {
            self.negotiated_cipher_suite()
        }
        fn version(&self) -> ProtocolVersion {
            self.protocol_version()
        }
    };
}

impl PostHandshake for KernelConnection<ClientConnectionData> {
    fn new_session_ticket(&mut self, body: &[u8]) -> Result<(), TlsError> {
        Ok(self.handle_new_session_ticket(body)?)
    }
    kernel_common!();
}

/// Record protection as TLS 1.2 or TLS 1.3 does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protection {
    /// RFC 8446 §5.2: inner content type, padding, header as additional data.
    Tls13,
    /// RFC 5288: AES-GCM with an explicit 8-byte nonce per record.
    Tls12Gcm,
    /// RFC 7905: ChaCha20-Poly1305 with the sequence number as nonce.
    Tls12Chacha,
}

/// The AEAD of a traffic key (a byte: it sits in every connection's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// A record key and IV, as a key update yields them (zeroed when dropped).
pub(crate) struct TrafficKey {
    key: [u8; 32],
    key_len: u8,
    iv: [u8; 12],
}

impl TrafficKey {
    /// Zeros for a key of `key_len` bytes, to be filled in (`None` past 32 bytes).
    pub(crate) fn empty(key_len: usize) -> Option<Self> {
        Some(Self {
            key: [0; 32],
            key_len: u8::try_from(key_len).ok().filter(|&n| n <= 32)?,
            iv: [0; 12],
        })
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.key_len)]
    }

    pub(crate) fn key_mut(&mut self) -> &mut [u8] {
        &mut self.key[..usize::from(self.key_len)]
    }

    pub(crate) fn iv(&self) -> &[u8] {
        &self.iv
    }

    pub(crate) fn iv_mut(&mut self) -> &mut [u8] {
        &mut self.iv
    }

    /// Whether rustls' `secrets` are this key and IV.
    pub(crate) fn matches(&self, secrets: &ConnectionTrafficSecrets) -> bool {
        let (key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv }
            | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
            | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
            _ => return false,
        };
        key.as_ref() == self.key() && iv.as_ref() == self.iv()
    }

    fn from_rustls(secrets: ConnectionTrafficSecrets) -> Result<(Cipher, Self), TlsError> {
        let (cipher, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Cipher::Chacha20Poly1305, key, iv)
            }
            _ => return Err(TlsError::Unexpected("a cipher suite without an AEAD key")),
        };
        let bytes = key.as_ref();
        if bytes.len() != cipher.algorithm().key_len() {
            return Err(TlsError::Unexpected("a traffic key of the wrong length"));
        }
        let mut own = Self::empty(bytes.len())
            .ok_or(TlsError::Unexpected("a traffic key of the wrong length"))?;
        own.key_mut().copy_from_slice(bytes);
        own.iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| TlsError::Unexpected("a traffic IV of the wrong length"))?;
        Ok((cipher, own))
    }
}

impl Drop for TrafficKey {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// One direction's traffic key: its bytes always, its AEAD context only while records flow.
struct DirectionKeys {
    key: [u8; 32],
    iv: [u8; 12],
    cipher: Cipher,
    seq: u64,
    /// Boxed: 8 bytes in every connection's state instead of 24, for a context that exists only while records flow.
    live: Option<Box<LessSafeKey>>,
}

impl DirectionKeys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Self, TlsError> {
        let (cipher, key) = TrafficKey::from_rustls(secrets)?;
        Ok(Self {
            key: key.key,
            iv: key.iv,
            cipher,
            seq,
            live: None,
        })
    }

    /// Replaces the key after a key update (the sequence restarts at 0).
    fn replace(&mut self, next: TrafficKey) -> Result<(), TlsError> {
        if next.key().len() != self.cipher.algorithm().key_len() {
            return Err(TlsError::Unexpected("a traffic key of the wrong length"));
        }
        self.key = next.key;
        self.iv = next.iv;
        self.seq = 0;
        self.live = None;
        Ok(())
    }

    fn aead(&mut self) -> Result<&LessSafeKey, TlsError> {
        if self.live.is_none() {
            let algorithm = self.cipher.algorithm();
            let key = UnboundKey::new(algorithm, &self.key[..algorithm.key_len()])
                .map_err(|_| TlsError::Unexpected("aws-lc refused a traffic key"))?;
            self.live = Some(Box::new(LessSafeKey::new(key)));
        }
        self.live
            .as_deref()
            .ok_or(TlsError::Unexpected("no AEAD context"))
    }

    /// The per-record nonce: the IV XOR the sequence number (RFC 8446 §5.3; RFC 5288 and 7905 as rustls does).
    fn nonce(&self) -> [u8; 12] {
        Nonce::new(&Iv::new(self.iv), self.seq).0
    }

    fn advance(&mut self) -> Result<(), TlsError> {
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(TlsError::Unexpected("TLS sequence number exhausted"))?;
        Ok(())
    }
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// Plaintext waiting for the caller, from `pos` on.
struct Backlog {
    bytes: Vec<u8>,
    pos: usize,
}

/// One TLS connection's state after its handshake. A server-side connection's (`K` = `super::secrets::ServerSecrets`)
/// fits with the stream's pending ciphertext and pool handle in mimalloc's 384-byte class; a client-side one keeps
/// rustls' kernel state (560 bytes of it) and fits the 768-byte class.
pub(crate) struct RecordLayer<K> {
    kernel: K,
    protection: Protection,
    rx: DirectionKeys,
    tx: DirectionKeys,
    /// Records sent under one key before it must change (the suite's confidentiality limit; above 2^32 for
    /// ChaCha20-Poly1305, where this cap is merely conservative).
    tx_limit: u32,
    /// Decrypted bytes the caller's buffer had no room for (rare: boxed so the common case costs a pointer).
    plain: Option<Box<Backlog>>,
    /// Records produced while reading (key updates) that go out before the next write.
    #[allow(clippy::box_collection)]
    // 8 bytes in every connection instead of 24 for a rarely used buffer
    owed: Option<Box<Vec<u8>>>,
    peer_closed: bool,
    failed: bool,
    /// Our close_notify went out: it is sent once.
    close_sent: bool,
}

impl<K: PostHandshake> RecordLayer<K> {
    /// Takes over from rustls: the keys it extracted and its kernel state, plus plaintext that came with the
    /// handshake.
    pub(crate) fn new(
        secrets: ExtractedSecrets,
        kernel: K,
        plain: Vec<u8>,
    ) -> Result<Self, TlsError> {
        let suite = kernel.suite();
        let protection = match (kernel.version(), &secrets.tx.1) {
            (ProtocolVersion::TLSv1_3, _) => Protection::Tls13,
            (ProtocolVersion::TLSv1_2, ConnectionTrafficSecrets::Chacha20Poly1305 { .. }) => {
                Protection::Tls12Chacha
            }
            (ProtocolVersion::TLSv1_2, _) => Protection::Tls12Gcm,
            _ => return Err(TlsError::Unexpected("a TLS version before 1.2")),
        };
        let tx_limit = match suite {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        let tx_limit = u32::try_from(tx_limit).unwrap_or(u32::MAX);
        Ok(Self {
            kernel,
            protection,
            rx: DirectionKeys::new(secrets.rx)?,
            tx: DirectionKeys::new(secrets.tx)?,
            tx_limit,
            plain: (!plain.is_empty()).then(|| {
                Box::new(Backlog {
                    bytes: plain,
                    pos: 0,
                })
            }),
            owed: None,
            peer_closed: false,
            failed: false,
            close_sent: false,
        })
    }

    /// Drops both AEAD contexts (the connection is parked with nothing in flight); the next record rebuilds them.
    pub(crate) fn release_keys(&mut self) {
        self.rx.live = None;
        self.tx.live = None;
    }

    /// Decrypted bytes waiting for the caller.
    pub(crate) fn has_plain(&self) -> bool {
        self.plain.is_some()
    }

    /// Moves waiting plaintext into `dst`; returns how many bytes. Frees the holding buffer once drained.
    pub(crate) fn take_plain(&mut self, dst: &mut impl PlainSink) -> usize {
        let Some(backlog) = self.plain.as_mut() else {
            return 0;
        };
        let n = dst.put(&backlog.bytes[backlog.pos..]);
        backlog.pos += n;
        if backlog.pos == backlog.bytes.len() {
            self.plain = None;
        }
        n
    }

    /// The peer sent close_notify.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Decrypts the whole records in `incoming` (consumed bytes are removed; a partial record stays) into `dst`;
    /// what does not fit is kept for [`RecordLayer::take_plain`]. Replies the records call for (key updates) are
    /// kept for the next [`RecordLayer::encrypt`].
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
        let mut result = Ok(());
        while !self.peer_closed {
            let len = match whole_record(&incoming[start..]) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let record = &mut incoming[start..start + len];
            start += len;
            match self.open(record) {
                Ok((CONTENT_APPLICATION_DATA, range)) => {
                    let payload = &record[range];
                    let n = if self.has_plain() {
                        0
                    } else {
                        dst.put(payload)
                    };
                    written += n;
                    if n < payload.len() {
                        self.plain
                            .get_or_insert_with(|| {
                                Box::new(Backlog {
                                    bytes: Vec::new(),
                                    pos: 0,
                                })
                            })
                            .bytes
                            .extend_from_slice(&payload[n..]);
                    }
                }
                Ok((CONTENT_ALERT, range)) => {
                    if let Err(e) = self.on_alert(&record[range]) {
                        result = Err(e);
                        break;
                    }
                }
                Ok((CONTENT_HANDSHAKE, range)) => {
                    if let Err(e) = self.on_handshake(&record[range]) {
                        result = Err(e);
                        break;
                    }
                }
                Ok(_) => {
                    result = Err(TlsError::UnexpectedMessage(
                        "a record of an unexpected content type",
                    ));
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if self.peer_closed {
            // "Any data received after a closure alert has been received MUST be ignored" (RFC 8446 §6.1).
            incoming.clear();
        } else {
            incoming.drain(..start);
        }
        if let Err(e) = result {
            self.failed = true;
            return Err(e);
        }
        Ok(Decrypted {
            written,
            peer_closed: self.peer_closed,
        })
    }

    /// Authenticates and decrypts one whole record in place; returns its content type and where its plaintext is.
    fn open(&mut self, record: &mut [u8]) -> Result<(u8, std::ops::Range<usize>), TlsError> {
        let header: [u8; HEADER] = [record[0], record[1], record[2], record[3], record[4]];
        let outer_type = header[0];
        if record[1] != 3 {
            return Err(TlsError::UnexpectedMessage(
                "a record of an unknown TLS version",
            ));
        }
        if outer_type == CONTENT_CHANGE_CIPHER_SPEC {
            // Only legal before the peer's Finished (RFC 8446 §5; RFC 5246 §7.1 once keys changed).
            return Err(TlsError::UnexpectedMessage(
                "change_cipher_spec after the handshake",
            ));
        }
        let seq = self.rx.seq;
        let protection = self.protection;
        let mut nonce = self.rx.nonce();
        let body = &mut record[HEADER..];
        let (opened, offset) = match protection {
            Protection::Tls13 => {
                if outer_type != CONTENT_APPLICATION_DATA {
                    return Err(TlsError::UnexpectedMessage(
                        "an unprotected record after the handshake",
                    ));
                }
                let key = self.rx.aead()?;
                let plain = key
                    .open_in_place(
                        AeadNonce::assume_unique_for_key(nonce),
                        Aad::from(header),
                        body,
                    )
                    .map_err(|_| TlsError::BadRecordMac)?;
                (plain.len(), 0)
            }
            Protection::Tls12Gcm | Protection::Tls12Chacha => {
                let explicit = if protection == Protection::Tls12Gcm {
                    EXPLICIT_NONCE
                } else {
                    0
                };
                if body.len() < explicit + TAG {
                    return Err(TlsError::BadRecordMac);
                }
                if explicit > 0 {
                    nonce[4..].copy_from_slice(&body[..EXPLICIT_NONCE]);
                }
                let plain_len = body.len() - explicit - TAG;
                let aad = tls12_aad(seq, outer_type, [header[1], header[2]], plain_len);
                let key = self.rx.aead()?;
                let plain = key
                    .open_in_place(
                        AeadNonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut body[explicit..],
                    )
                    .map_err(|_| TlsError::BadRecordMac)?;
                (plain.len(), explicit)
            }
        };
        self.rx.advance()?;
        let start = HEADER + offset;
        match protection {
            Protection::Tls13 => {
                // TLSInnerPlaintext: content, the real content type, zero padding.
                let inner = &record[start..start + opened];
                let Some(type_at) = inner.iter().rposition(|&b| b != 0) else {
                    return Err(TlsError::UnexpectedMessage("a record with no content type"));
                };
                if type_at > MAX_FRAGMENT {
                    return Err(TlsError::RecordOverflow);
                }
                Ok((inner[type_at], start..start + type_at))
            }
            _ => {
                if opened > MAX_FRAGMENT {
                    return Err(TlsError::RecordOverflow);
                }
                Ok((outer_type, start..start + opened))
            }
        }
    }

    fn on_alert(&mut self, alert: &[u8]) -> Result<(), TlsError> {
        let [level, description] = alert else {
            return Err(TlsError::UnexpectedMessage("a malformed alert"));
        };
        match *description {
            ALERT_CLOSE_NOTIFY => {
                self.peer_closed = true;
                Ok(())
            }
            ALERT_USER_CANCELED => Ok(()),
            // TLS 1.2 warnings do not end the session; in TLS 1.3 every other alert is fatal.
            _ if *level == ALERT_WARNING && self.protection != Protection::Tls13 => Ok(()),
            d => Err(TlsError::PeerAlert(d)),
        }
    }

    /// Post-handshake messages: key updates (TLS 1.3), session tickets (to our client side). A message split over
    /// records is refused, as is anything that would renegotiate.
    fn on_handshake(&mut self, mut messages: &[u8]) -> Result<(), TlsError> {
        if messages.is_empty() {
            return Err(TlsError::UnexpectedMessage("an empty handshake record"));
        }
        while !messages.is_empty() {
            let [kind, a, b, c, rest @ ..] = messages else {
                return Err(TlsError::FragmentedPostHandshake);
            };
            let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
            if rest.len() < len {
                return Err(TlsError::FragmentedPostHandshake);
            }
            let (body, after) = rest.split_at(len);
            messages = after;
            match (*kind, self.protection) {
                (HANDSHAKE_KEY_UPDATE, Protection::Tls13) => {
                    if !messages.is_empty() {
                        // RFC 8446 §5.1: a key change must fall on a record boundary.
                        return Err(TlsError::UnexpectedMessage(
                            "data after a KeyUpdate in its record",
                        ));
                    }
                    let requested = match body {
                        [0] => false,
                        [1] => true,
                        _ => return Err(TlsError::UnexpectedMessage("a malformed KeyUpdate")),
                    };
                    let next = self.kernel.update_rx()?;
                    self.rx.replace(next)?;
                    if requested {
                        self.update_tx_keys()?;
                    }
                }
                (HANDSHAKE_NEW_SESSION_TICKET, Protection::Tls13) => {
                    self.kernel.new_session_ticket(body)?;
                }
                // A TLS 1.2 server asking to renegotiate: a client may ignore it (RFC 5246 §7.4.1.1).
                (HANDSHAKE_HELLO_REQUEST, Protection::Tls12Gcm | Protection::Tls12Chacha)
                    if body.is_empty() => {}
                _ => {
                    return Err(TlsError::UnexpectedMessage(
                        "a handshake message after the handshake",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Queues KeyUpdate(update_not_requested) under the current key for the writer, then moves to the next key.
    fn update_tx_keys(&mut self) -> Result<(), TlsError> {
        let mut owed = self.owed.take().unwrap_or_default();
        if owed.len() > MAX_OWED {
            // A peer that keeps asking for key updates while we never write would grow this without end.
            return Err(TlsError::TooManyOwedRecords);
        }
        let sent = self.send_key_update(&mut owed);
        self.owed = Some(owed);
        sent
    }

    /// Appends KeyUpdate(update_not_requested) under the current key to `out`, then moves to the next key
    /// (TLS 1.3 only): every record after it uses the new key.
    fn send_key_update(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        self.seal_record(CONTENT_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0], out)?;
        let next = self.kernel.update_tx()?;
        self.tx.replace(next)
    }

    /// Protects one record of `content` (at most [`MAX_FRAGMENT`] bytes) of `content_type`, appending it to `out`;
    /// changes key first when the current one reached its limit.
    fn seal(
        &mut self,
        content_type: u8,
        content: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        match self.protection {
            // One record is kept back under each key for the KeyUpdate that retires it: crossing the limit under
            // one key weakens it, so TLS 1.3 changes key instead (RFC 8446 §5.5).
            Protection::Tls13 if self.tx.seq.saturating_add(1) >= u64::from(self.tx_limit) => {
                self.send_key_update(out)?;
            }
            Protection::Tls12Gcm | Protection::Tls12Chacha
                if self.tx.seq >= u64::from(self.tx_limit) =>
            {
                self.failed = true;
                return Err(TlsError::Unexpected(
                    "the cipher's record limit was reached",
                ));
            }
            _ => {}
        }
        self.seal_record(content_type, content, out)
    }

    fn seal_record(
        &mut self,
        content_type: u8,
        content: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        if self.failed {
            return Err(TlsError::Unexpected("write after the session failed"));
        }
        let start = out.len();
        let seq = self.tx.seq;
        let nonce = self.tx.nonce();
        let result = match self.protection {
            Protection::Tls13 => {
                let len = content.len() + 1 + TAG;
                let header = record_header(CONTENT_APPLICATION_DATA, len);
                out.extend_from_slice(&header);
                out.extend_from_slice(content);
                out.push(content_type);
                let key = self.tx.aead()?;
                key.seal_in_place_separate_tag(
                    AeadNonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    &mut out[start + HEADER..],
                )
            }
            protection => {
                let explicit = if protection == Protection::Tls12Gcm {
                    EXPLICIT_NONCE
                } else {
                    0
                };
                let header = record_header(content_type, explicit + content.len() + TAG);
                out.extend_from_slice(&header);
                out.extend_from_slice(&nonce[12 - explicit..]);
                out.extend_from_slice(content);
                let aad = tls12_aad(seq, content_type, [3, 3], content.len());
                let key = self.tx.aead()?;
                key.seal_in_place_separate_tag(
                    AeadNonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut out[start + HEADER + explicit..],
                )
            }
        };
        match result {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                self.tx.advance()
            }
            Err(_) => {
                out.truncate(start);
                self.failed = true;
                Err(TlsError::Unexpected("aws-lc could not seal a record"))
            }
        }
    }

    /// Encrypts as much of `plain` as fits `out`'s spare capacity (at least one record) into `out`, after any
    /// owed records; returns how many plaintext bytes were taken.
    pub(crate) fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, TlsError> {
        self.flush_owed(out);
        let per_record = HEADER + EXPLICIT_NONCE + 1 + TAG;
        let mut taken = 0;
        while taken < plain.len() {
            let spare = out.capacity() - out.len();
            let room = spare.saturating_sub(per_record).min(MAX_FRAGMENT);
            let chunk = (plain.len() - taken).min(room);
            if chunk == 0 {
                if taken > 0 {
                    break;
                }
                // No room at all: one record anyway (the buffer grows).
                let chunk = plain.len().min(MAX_FRAGMENT);
                self.seal(CONTENT_APPLICATION_DATA, &plain[..chunk], out)?;
                return Ok(chunk);
            }
            self.seal(CONTENT_APPLICATION_DATA, &plain[taken..taken + chunk], out)?;
            taken += chunk;
        }
        Ok(taken)
    }

    /// Appends close_notify (after any owed records) to `out`; nothing the second time.
    pub(crate) fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        if std::mem::replace(&mut self.close_sent, true) {
            return Ok(());
        }
        self.flush_owed(out);
        self.seal(CONTENT_ALERT, &[ALERT_WARNING, ALERT_CLOSE_NOTIFY], out)
    }

    fn flush_owed(&mut self, out: &mut Vec<u8>) {
        if let Some(owed) = self.owed.take() {
            out.extend_from_slice(&owed);
        }
    }
}

/// The length of the whole record at the start of `bytes`, if all of it has arrived; an error as soon as its
/// header announces more than any record may hold (RFC 5246 §6.2.3: 2^14 + 2048).
fn whole_record(bytes: &[u8]) -> Result<Option<usize>, TlsError> {
    if bytes.len() < HEADER {
        return Ok(None);
    }
    let len = HEADER + usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    if len > HEADER + MAX_FRAGMENT + 2048 {
        return Err(TlsError::RecordOverflow);
    }
    Ok((bytes.len() >= len).then_some(len))
}

fn record_header(content_type: u8, len: usize) -> [u8; HEADER] {
    let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    [content_type, 3, 3, len[0], len[1]]
}

/// TLS 1.2 additional data: sequence number, content type, version, plaintext length (RFC 5246 §6.2.3.3).
fn tls12_aad(seq: u64, content_type: u8, version: [u8; 2], plain_len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = content_type;
    aad[9..11].copy_from_slice(&version);
    aad[11..].copy_from_slice(&u16::try_from(plain_len).unwrap_or(u16::MAX).to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use rustls::ClientConnection;
    use rustls::crypto::aws_lc_rs::cipher_suite;

    use super::*;
    use crate::tls::engine::testing::{from_client, handshake, pair_with, to_client};
    use crate::tls::secrets::ServerSecrets;

    type ServerRecords = RecordLayer<ServerSecrets>;

    fn connected(
        suite: Option<SupportedCipherSuite>,
    ) -> (ClientConnection, ServerRecords, Vec<u8>) {
        let (mut client, mut engine) = pair_with(suite);
        let incoming = handshake(&mut client, &mut engine);
        let records = engine.into_records().expect("the record layer takes over");
        (client, records, incoming)
    }

    fn read_all(records: &mut ServerRecords, incoming: &mut Vec<u8>) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            let mut dst = Vec::with_capacity(7);
            let d = records.decrypt(incoming, &mut dst).expect("decrypt");
            got.extend_from_slice(&dst);
            if d.written == 0 && !records.has_plain() {
                return got;
            }
        }
    }

    fn client_reads(client: &mut ClientConnection, n: usize) -> Vec<u8> {
        let mut back = vec![0u8; n];
        client.reader().read_exact(&mut back).expect("client reads");
        back
    }

    /// Every suite and version the gateway offers, against rustls' own client.
    fn all_suites() -> Vec<SupportedCipherSuite> {
        vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
    }

    #[test]
    fn data_both_ways_in_every_suite_through_small_buffers_and_parked_keys() {
        for suite in all_suites() {
            let (mut client, mut records, mut incoming) = connected(Some(suite));
            client
                .writer()
                .write_all(b"hello over tls, in small reads")
                .expect("write");
            incoming.extend(from_client(&mut client));
            // The caller's buffer holds 7 bytes: the rest waits, nothing is lost.
            assert_eq!(
                read_all(&mut records, &mut incoming),
                b"hello over tls, in small reads",
                "{suite:?}"
            );
            // A large write spans records; parking drops the AEAD contexts between writes.
            let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
            let (mut sent, mut back) = (0, Vec::new());
            while sent < big.len() {
                let mut out = Vec::with_capacity(20_000);
                let n = records.encrypt(&big[sent..], &mut out).expect("encrypt");
                to_client(&mut client, &out);
                back.extend(client_reads(&mut client, n));
                sent += n;
                records.release_keys();
            }
            assert_eq!(back, big, "{suite:?}");
            client.writer().write_all(b"after parking").expect("write");
            incoming.extend(from_client(&mut client));
            assert_eq!(read_all(&mut records, &mut incoming), b"after parking");
        }
    }

    #[test]
    fn a_key_update_the_peer_requests_is_answered_before_our_next_data() {
        let (mut client, mut records, mut incoming) = connected(None);
        client.refresh_traffic_keys().expect("key update");
        client.writer().write_all(b"new keys").expect("write");
        incoming.extend(from_client(&mut client));
        assert_eq!(read_all(&mut records, &mut incoming), b"new keys");
        let mut out = Vec::with_capacity(1024);
        records.encrypt(b"after", &mut out).expect("encrypt");
        to_client(&mut client, &out);
        assert_eq!(client_reads(&mut client, 5), b"after");
        // And again: the second update works from the first's keys.
        client.refresh_traffic_keys().expect("key update");
        client.writer().write_all(b"twice").expect("write");
        incoming.extend(from_client(&mut client));
        assert_eq!(read_all(&mut records, &mut incoming), b"twice");
        let mut out = Vec::with_capacity(1024);
        records.encrypt(b"still", &mut out).expect("encrypt");
        to_client(&mut client, &out);
        assert_eq!(client_reads(&mut client, 5), b"still");
    }

    #[test]
    fn handshakes_interleaved_on_one_thread_each_keep_their_own_traffic_secrets() {
        // `super::secrets` captures secrets in a thread-local slot: two handshakes stepped in turn (as two
        // connections on one worker are) must each end with their own, and key updates must work on both.
        let (mut ca, mut ea) = pair_with(None);
        let (mut cb, mut eb) = pair_with(None);
        let (mut ia, mut ib) = (Vec::with_capacity(64 * 1024), Vec::with_capacity(64 * 1024));
        let (mut done_a, mut done_b) = (false, false);
        for _ in 0..20 {
            for (client, engine, incoming, done) in [
                (&mut ca, &mut ea, &mut ia, &mut done_a),
                (&mut cb, &mut eb, &mut ib, &mut done_b),
            ] {
                if *done {
                    continue;
                }
                incoming.extend(from_client(client));
                let mut out = Vec::new();
                let step = engine.handshake(incoming, &mut out).expect("handshake");
                to_client(client, &out);
                *done = step == crate::tls::engine::HandshakeStep::Done;
            }
        }
        assert!(done_a && done_b);
        for (client, engine, mut incoming) in [(ca, ea, ia), (cb, eb, ib)] {
            let mut client = client;
            let mut records: ServerRecords = engine.into_records().expect("own secrets");
            client.refresh_traffic_keys().expect("key update");
            client.writer().write_all(b"mine").expect("write");
            incoming.extend(from_client(&mut client));
            assert_eq!(read_all(&mut records, &mut incoming), b"mine");
        }
    }

    #[test]
    fn keys_change_before_the_cipher_limit_and_the_peer_follows() {
        let (mut client, mut records, _) = connected(None);
        records.tx_limit = 3;
        for i in 0..10u8 {
            let mut out = Vec::with_capacity(256);
            records.encrypt(&[i; 10], &mut out).expect("encrypt");
            to_client(&mut client, &out);
            assert_eq!(client_reads(&mut client, 10), [i; 10]);
            assert!(
                records.tx.seq < 3,
                "record {i} used sequence {}",
                records.tx.seq
            );
        }
    }

    #[test]
    fn the_state_of_a_connection_leaves_room_for_the_stream_in_its_allocation_class() {
        // `super::stream` keeps this with its pending ciphertext and pool handle (32 bytes) in one `Rc<RefCell<_>>`
        // (24 bytes): server-side within mimalloc's 384-byte class (an idle wss connection's memory is mostly this;
        // README, idle figures), client-side (upstream TLS, with rustls' kernel state) within the 768-byte class.
        let server = std::mem::size_of::<ServerRecords>();
        assert!(server <= 384 - 56, "{server} bytes");
        assert!(std::mem::size_of::<RecordLayer<KernelConnection<ClientConnectionData>>>() <= 712);
    }

    #[test]
    fn tls12_refuses_to_pass_the_cipher_limit() {
        let (_, mut records, _) =
            connected(Some(cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256));
        records.tx_limit = u32::try_from(records.tx.seq + 1).expect("a small sequence number");
        let mut out = Vec::with_capacity(256);
        records.encrypt(b"one", &mut out).expect("first record");
        assert!(records.encrypt(b"two", &mut out).is_err());
    }

    #[test]
    fn a_tampered_record_fails_authentication() {
        for suite in all_suites() {
            let (mut client, mut records, mut incoming) = connected(Some(suite));
            client.writer().write_all(b"payload").expect("write");
            incoming.extend(from_client(&mut client));
            let last = incoming.len() - 1;
            incoming[last] ^= 1;
            let mut dst = Vec::with_capacity(64);
            assert!(
                matches!(
                    records.decrypt(&mut incoming, &mut dst),
                    Err(TlsError::BadRecordMac)
                ),
                "{suite:?}"
            );
            // A failed session stays failed.
            assert!(records.decrypt(&mut incoming, &mut dst).is_err());
        }
    }

    #[test]
    fn an_oversized_record_is_refused_from_its_header() {
        let (_, mut records, _) = connected(None);
        let mut incoming = vec![23, 3, 3, 0xff, 0xff, 0];
        let mut dst = Vec::with_capacity(64);
        assert!(matches!(
            records.decrypt(&mut incoming, &mut dst),
            Err(TlsError::RecordOverflow)
        ));
    }

    #[test]
    fn an_unprotected_record_after_the_handshake_is_refused() {
        for record in [
            vec![20, 3, 3, 0, 1, 1],
            vec![22, 3, 3, 0, 1, 0],
            vec![21, 3, 3, 0, 2, 1, 0],
        ] {
            let mut incoming = record.clone();
            let mut dst = Vec::with_capacity(64);
            let (_, mut fresh, _) = connected(None);
            assert!(
                matches!(
                    fresh.decrypt(&mut incoming, &mut dst),
                    Err(TlsError::UnexpectedMessage(_))
                ),
                "{record:?}"
            );
        }
    }

    #[test]
    fn close_notify_ends_reading_and_later_bytes_are_ignored() {
        let (mut client, mut records, mut incoming) = connected(None);
        client.send_close_notify();
        incoming.extend(from_client(&mut client));
        // A whole record of garbage after the alert must not turn a clean end into an error.
        incoming.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x02, 0xde, 0xad]);
        let mut dst = Vec::with_capacity(64);
        let d = records
            .decrypt(&mut incoming, &mut dst)
            .expect("a clean end");
        assert!(d.peer_closed && d.written == 0);
        assert!(incoming.is_empty());
        let mut out = Vec::with_capacity(256);
        records.close_notify(&mut out).expect("our close_notify");
        to_client(&mut client, &out);
        let mut rest = Vec::new();
        assert_eq!(
            client.reader().read_to_end(&mut rest).expect("clean eof"),
            0
        );
    }

    #[test]
    fn a_peer_that_keeps_requesting_key_updates_while_we_never_write_is_cut_off() {
        let (mut client, mut records, mut incoming) = connected(None);
        let mut result = Ok(Decrypted {
            written: 0,
            peer_closed: false,
        });
        for _ in 0..2000 {
            client.refresh_traffic_keys().expect("key update");
            client.writer().write_all(b"x").expect("write");
            incoming.extend(from_client(&mut client));
            let mut dst = Vec::with_capacity(64);
            result = records.decrypt(&mut incoming, &mut dst);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(result, Err(TlsError::TooManyOwedRecords)),
            "{result:?}"
        );
        assert!(records.owed.as_ref().map_or(0, |o| o.len()) <= MAX_OWED + 64);
    }
}
