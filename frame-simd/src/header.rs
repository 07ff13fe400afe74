//! Frame header types (§5.2), header decoding with every RFC 6455 §5 rule, and header encoding into
//! caller buffers.
//!
//! Decoding is pure: [`FrameHeader::decode`] looks at a byte slice and either returns a complete,
//! validated header and its length, returns `None` (need more bytes, nothing consumed), or fails.
//! Rules that can be judged from the bytes already present fail at once, before the header is
//! complete. A header is judged against [`HeaderRules`] (peer role, allowed RSV bits, frame size
//! limit), the part of a connection's configuration that one header can break; the decoder derives
//! them from its own configuration, which this module does not know. Message-level rules
//! (fragmentation, message size, UTF-8) live in [`crate::decoder`].

use crate::error::FrameError;
use crate::mask::apply_mask;

/// The longest possible frame header: 2 bytes + 8 bytes of length + 4 bytes of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload of a control frame (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest control frame on the wire: a 6-byte header (masked, 7-bit length) plus 125 bytes.
pub const MAX_CONTROL_FRAME_LEN: usize = 6 + MAX_CONTROL_PAYLOAD;

/// The role of the peer whose frames are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Frames come from a client: they MUST be masked (§5.1).
    Client,
    /// Frames come from a server: they MUST NOT be masked (§5.1).
    Server,
}

/// A non-reserved frame opcode (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: first frame of a text message.
    Text,
    /// 0x2: first frame of a binary message.
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Parses a 4-bit wire value; reserved values fail.
    pub fn from_u8(value: u8) -> Result<Self, FrameError> {
        Ok(match value {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(FrameError::ReservedOpcode(other)),
        })
    }
}

/// The three reserved bits of a frame header. `Default` is all clear: no extension negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rsv {
    /// RSV1 (permessage-deflate's "compressed" bit).
    pub rsv1: bool,
    /// RSV2.
    pub rsv2: bool,
    /// RSV3.
    pub rsv3: bool,
}

impl Rsv {
    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        !(self.rsv1 || self.rsv2 || self.rsv3)
    }

    /// Whether every bit set in `self` is also set in `allowed`.
    pub fn is_subset_of(self, allowed: Rsv) -> bool {
        (!self.rsv1 || allowed.rsv1) && (!self.rsv2 || allowed.rsv2) && (!self.rsv3 || allowed.rsv3)
    }

    fn from_byte0(b0: u8) -> Self {
        Self {
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
        }
    }

    fn to_bits(self) -> u8 {
        (u8::from(self.rsv1) << 6) | (u8::from(self.rsv2) << 5) | (u8::from(self.rsv3) << 4)
    }

    fn violation(self) -> FrameError {
        FrameError::ReservedBits {
            rsv1: self.rsv1,
            rsv2: self.rsv2,
            rsv3: self.rsv3,
        }
    }
}

/// A decoded (validated) or to-be-encoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// Reserved bits.
    pub rsv: Rsv,
    /// Opcode.
    pub opcode: OpCode,
    /// Masking key, present on client-to-server frames.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes. Must be below 2^63 when encoding.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A final, unmasked frame as a server sends it.
    pub fn server(opcode: OpCode, payload_len: u64) -> Self {
        Self {
            fin: true,
            rsv: Rsv::default(),
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// A final frame masked with `key`, as a client sends it.
    pub fn client(opcode: OpCode, payload_len: u64, key: [u8; 4]) -> Self {
        Self {
            fin: true,
            rsv: Rsv::default(),
            opcode,
            mask: Some(key),
            payload_len,
        }
    }

    /// The number of bytes [`FrameHeader::encode`] writes (2..=14).
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Encodes into out, returns the header length (2..=14).
    ///
    /// The length is always written with the minimal number of bytes (§5.2).
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | self.rsv.to_bits() | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }

    /// Decodes and validates a header at the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a header that is valid so far, and
    /// `Ok(Some((header, header_len)))` when it is complete. Checks every §5 rule a single header can
    /// break: reserved opcodes, RSV bits beyond `cfg.allowed_rsv` (and RSV1 on control or
    /// continuation frames), control frames fragmented or longer than 125 bytes, non-minimal length
    /// encodings, the 64-bit length MSB, masking according to `cfg.peer`, and `cfg.max_frame_size`.
    pub fn decode(
        buf: &[u8],
        cfg: &HeaderRules,
    ) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = Rsv::from_byte0(b0);
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        if !rsv.is_subset_of(cfg.allowed_rsv) {
            return Err(rsv.violation());
        }
        // RFC 7692 §6.1: the "compressed" bit only appears on the first frame of a data message.
        if rsv.rsv1 && (opcode.is_control() || opcode == OpCode::Continuation) {
            return Err(rsv.violation());
        }
        if opcode.is_control() && !fin {
            return Err(FrameError::FragmentedControlFrame);
        }

        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        match (cfg.peer, masked) {
            (Role::Client, false) => return Err(FrameError::UnmaskedFrame),
            (Role::Server, true) => return Err(FrameError::MaskedFrame),
            _ => {}
        }
        let len7 = b1 & 0x7F;
        if opcode.is_control() && len7 > MAX_CONTROL_PAYLOAD as u8 {
            return Err(FrameError::ControlFrameTooLong(u64::from(len7)));
        }

        let (payload_len, mut at) = match len7 {
            126 => {
                let Some(bytes) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
                if len < 126 {
                    return Err(FrameError::NonMinimalLength(len));
                }
                (len, 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut raw = [0u8; 8];
                raw.copy_from_slice(bytes);
                let len = u64::from_be_bytes(raw);
                if len >> 63 != 0 {
                    return Err(FrameError::LengthMsbSet);
                }
                if len <= 0xFFFF {
                    return Err(FrameError::NonMinimalLength(len));
                }
                (len, 10)
            }
            len => (u64::from(len), 2),
        };
        if payload_len > cfg.max_frame_size {
            return Err(FrameError::FrameTooLarge {
                len: payload_len,
                max: cfg.max_frame_size,
            });
        }

        let mask = if masked {
            let Some(bytes) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            at,
        )))
    }
}

/// What a single frame header may say, for one direction of one connection: the part of the decoder's
/// configuration ([`crate::DecoderConfig::header_rules`]) that one header can be checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRules {
    /// The role of the peer whose frames are decoded: clients must mask, servers must not.
    pub peer: Role,
    /// RSV bits the peer may set (rsv1 = permessage-deflate negotiated).
    pub allowed_rsv: Rsv,
    /// Largest payload a frame may announce (1009 beyond it).
    pub max_frame_size: u64,
}

/// Writes a whole frame (header, then `payload` masked with `header.mask` if any) into `out`.
///
/// `header.payload_len` is taken from `payload.len()`. Returns the number of bytes written, or `None`
/// when `out` is too short (nothing meaningful is written then).
pub fn encode_frame(header: &FrameHeader, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let header = FrameHeader {
        payload_len: payload.len() as u64,
        ..*header
    };
    let header_len = header.encoded_len();
    let total = header_len.checked_add(payload.len())?;
    let out = out.get_mut(..total)?;
    let mut head = [0u8; MAX_HEADER_LEN];
    header.encode(&mut head);
    out[..header_len].copy_from_slice(&head[..header_len]);
    out[header_len..].copy_from_slice(payload);
    if let Some(key) = header.mask {
        apply_mask(&mut out[header_len..], key, 0);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of a server decoding a client's frames, with the decoder's default limits.
    fn client_cfg() -> HeaderRules {
        HeaderRules {
            peer: Role::Client,
            allowed_rsv: Rsv::default(),
            max_frame_size: 16 << 20,
        }
    }

    fn server_cfg() -> HeaderRules {
        HeaderRules {
            peer: Role::Server,
            ..client_cfg()
        }
    }

    fn decode(buf: &[u8], cfg: &HeaderRules) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        FrameHeader::decode(buf, cfg)
    }

    #[test]
    fn rfc_5_7_single_frame_unmasked_text() {
        let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, n) = decode(&frame, &server_cfg()).unwrap().unwrap();
        assert_eq!(n, 2);
        assert_eq!(h, FrameHeader::server(OpCode::Text, 5));
        assert_eq!(&frame[n..], b"Hello");
    }

    #[test]
    fn rfc_5_7_single_frame_masked_text() {
        let mut frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode(&frame, &client_cfg()).unwrap().unwrap();
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
        apply_mask(&mut frame[n..], [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&frame[n..], b"Hello");
    }

    #[test]
    fn rfc_5_7_fragmented_unmasked_text_headers() {
        let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let second = [0x80, 0x02, 0x6c, 0x6f];
        let (h1, _) = decode(&first, &server_cfg()).unwrap().unwrap();
        let (h2, _) = decode(&second, &server_cfg()).unwrap().unwrap();
        assert!(!h1.fin && h1.opcode == OpCode::Text && h1.payload_len == 3);
        assert!(h2.fin && h2.opcode == OpCode::Continuation && h2.payload_len == 2);
    }

    #[test]
    fn rfc_5_7_ping_and_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, _) = decode(&ping, &server_cfg()).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len), (OpCode::Ping, 5));
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode(&pong, &client_cfg()).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Pong, 5, 6));
    }

    #[test]
    fn rfc_5_7_binary_256_and_64k() {
        let h256 = [0x82, 0x7E, 0x01, 0x00];
        let (h, n) = decode(&h256, &server_cfg()).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Binary, 256, 4));
        let h64k = [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
        let (h, n) = decode(&h64k, &server_cfg()).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Binary, 65536, 10));
    }

    #[test]
    fn encode_round_trips_every_length_class() {
        for (len, key) in [
            (0u64, None),
            (125, Some([1, 2, 3, 4])),
            (126, None),
            (65535, None),
        ]
        .into_iter()
        .chain([(65536, Some([9, 9, 9, 9])), ((1 << 40) + 3, None)])
        {
            let h = FrameHeader {
                fin: len % 2 == 0,
                rsv: Rsv::default(),
                opcode: OpCode::Binary,
                mask: key,
                payload_len: len,
            };
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = h.encode(&mut out);
            assert_eq!(n, h.encoded_len());
            let cfg = HeaderRules {
                peer: if key.is_some() {
                    Role::Client
                } else {
                    Role::Server
                },
                max_frame_size: u64::MAX,
                ..client_cfg()
            };
            assert_eq!(decode(&out[..n], &cfg).unwrap(), Some((h, n)));
            // Every strict prefix is incomplete, never an error.
            for cut in 0..n {
                assert_eq!(
                    decode(&out[..cut], &cfg).unwrap(),
                    None,
                    "len {len} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn encode_frame_masks_the_payload_copy() {
        let mut out = [0u8; 32];
        let n = encode_frame(
            &FrameHeader::client(OpCode::Text, 0, [0x37, 0xfa, 0x21, 0x3d]),
            b"Hello",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            &out[..n],
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        let n = encode_frame(&FrameHeader::server(OpCode::Text, 0), b"Hello", &mut out).unwrap();
        assert_eq!(&out[..n], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(
            encode_frame(&FrameHeader::server(OpCode::Text, 0), &[0; 31], &mut out),
            None
        );
    }

    #[test]
    fn reserved_opcodes_fail_on_the_first_byte() {
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(
                decode(&[0x80 | op], &client_cfg()),
                Err(FrameError::ReservedOpcode(op))
            );
        }
        for op in [0x0, 0x1, 0x2, 0x8, 0x9, 0xA] {
            assert_eq!(OpCode::from_u8(op).unwrap().as_u8(), op);
        }
    }

    #[test]
    fn rsv_bits_need_negotiation() {
        for (bit, rsv) in [
            (
                0x40,
                Rsv {
                    rsv1: true,
                    ..Rsv::default()
                },
            ),
            (
                0x20,
                Rsv {
                    rsv2: true,
                    ..Rsv::default()
                },
            ),
            (
                0x10,
                Rsv {
                    rsv3: true,
                    ..Rsv::default()
                },
            ),
        ] {
            let frame = [0x82 | bit, 0x80, 0, 0, 0, 0];
            assert!(matches!(
                decode(&frame, &client_cfg()),
                Err(FrameError::ReservedBits { .. })
            ));
            let cfg = HeaderRules {
                allowed_rsv: rsv,
                ..client_cfg()
            };
            let (h, _) = decode(&frame, &cfg).unwrap().unwrap();
            assert_eq!(h.rsv, rsv);
        }
    }

    #[test]
    fn rsv1_is_refused_on_control_and_continuation_frames_even_when_negotiated() {
        let cfg = HeaderRules {
            allowed_rsv: Rsv {
                rsv1: true,
                ..Rsv::default()
            },
            ..client_cfg()
        };
        assert!(matches!(
            decode(&[0xC9, 0x80], &cfg),
            Err(FrameError::ReservedBits { .. })
        ));
        assert!(matches!(
            decode(&[0xC0, 0x80], &cfg),
            Err(FrameError::ReservedBits { .. })
        ));
    }

    #[test]
    fn control_frames_are_never_fragmented() {
        for op in [0x8, 0x9, 0xA] {
            assert_eq!(
                decode(&[op, 0x80], &client_cfg()),
                Err(FrameError::FragmentedControlFrame)
            );
            assert!(
                decode(&[0x80 | op, 0x80, 0, 0, 0, 0], &client_cfg())
                    .unwrap()
                    .is_some()
            );
        }
    }

    #[test]
    fn control_frames_carry_at_most_125_bytes() {
        assert!(
            decode(&[0x89, 0xFD, 0, 0, 0, 0], &client_cfg())
                .unwrap()
                .is_some()
        );
        assert_eq!(
            decode(&[0x89, 0xFE], &client_cfg()),
            Err(FrameError::ControlFrameTooLong(126))
        );
        assert_eq!(
            decode(&[0x89, 0xFF], &client_cfg()),
            Err(FrameError::ControlFrameTooLong(127))
        );
    }

    #[test]
    fn lengths_must_be_minimal() {
        assert_eq!(
            decode(&[0x82, 0x7E, 0x00, 0x7D], &server_cfg()),
            Err(FrameError::NonMinimalLength(125))
        );
        assert!(
            decode(&[0x82, 0x7E, 0x00, 0x7E], &server_cfg())
                .unwrap()
                .is_some()
        );
        let cfg = HeaderRules {
            max_frame_size: u64::MAX,
            ..server_cfg()
        };
        let mut frame = [0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF];
        assert_eq!(
            decode(&frame, &cfg),
            Err(FrameError::NonMinimalLength(0xFFFF))
        );
        frame[7] = 1;
        assert!(decode(&frame, &cfg).unwrap().is_some());
    }

    #[test]
    fn the_64_bit_length_msb_must_be_clear() {
        let cfg = HeaderRules {
            max_frame_size: u64::MAX,
            ..server_cfg()
        };
        let frame = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode(&frame, &cfg), Err(FrameError::LengthMsbSet));
        let frame = [0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            decode(&frame, &cfg).unwrap().unwrap().0.payload_len,
            i64::MAX as u64
        );
    }

    #[test]
    fn masking_depends_on_the_peer_role() {
        assert_eq!(
            decode(&[0x82, 0x00], &client_cfg()),
            Err(FrameError::UnmaskedFrame)
        );
        assert_eq!(
            decode(&[0x82, 0x80], &server_cfg()),
            Err(FrameError::MaskedFrame)
        );
        assert!(decode(&[0x82, 0x00], &server_cfg()).unwrap().is_some());
        assert!(
            decode(&[0x82, 0x80, 1, 2, 3, 4], &client_cfg())
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn max_frame_size_is_enforced_from_the_header() {
        let cfg = HeaderRules {
            max_frame_size: 200,
            ..server_cfg()
        };
        assert!(decode(&[0x82, 0x7E, 0x00, 0xC8], &cfg).unwrap().is_some());
        assert_eq!(
            decode(&[0x82, 0x7E, 0x00, 0xC9], &cfg),
            Err(FrameError::FrameTooLarge { len: 201, max: 200 })
        );
    }

    #[test]
    fn partial_headers_are_incomplete() {
        assert_eq!(decode(&[], &client_cfg()), Ok(None));
        assert_eq!(decode(&[0x82], &client_cfg()), Ok(None));
        assert_eq!(decode(&[0x82, 0x80, 1, 2, 3], &client_cfg()), Ok(None));
        assert_eq!(decode(&[0x82, 0xFF, 0, 0, 0], &client_cfg()), Ok(None));
    }
}
