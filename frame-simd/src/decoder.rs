//! The incremental stream decoder: a state machine fed with whatever bytes have arrived.
//!
//! Owns the rules that span frames: fragmentation (§5.4), the message size limit across fragments,
//! UTF-8 of text messages across frames and reads (§8.1), close payload validation, and "nothing after
//! Close". Single-header rules are in [`crate::header`]. It does no I/O and never allocates: the
//! caller owns the buffer, calls [`FrameDecoder::decode`] with the unconsumed bytes and advances by
//! the `len` of what comes back. [`Decoded::Incomplete`] consumes nothing.
//!
//! States are named after what the decoder expects next: `ExpectHeader`, `ExpectPayload`, `Closed`
//! (the peer's Close was decoded) and `Failed` (every later call repeats the error).

use crate::close::parse_close_payload;
use crate::error::FrameError;
use crate::header::{FrameHeader, HeaderRules, MAX_CONTROL_PAYLOAD, OpCode, Role, Rsv};
use crate::mask::apply_mask;
use crate::utf8::Utf8Validator;

/// What the decoder does with masked payload bytes in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadMode {
    /// Payload bytes are left unmasked in the caller's buffer (endpoints: echo server, load
    /// generator).
    Unmask,
    /// Bytes are left exactly as received (a proxy forwards them verbatim). The decoder unmasks only
    /// what it must inspect: text payloads are unmasked, validated and masked again in place;
    /// control payloads are unmasked into the decoder's own 125-byte buffer.
    Preserve,
}

/// Limits and negotiated options of one direction of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// The role of the peer whose frames are decoded. Default: `Client` (frames must be masked).
    pub peer: Role,
    /// Payload bytes per frame; larger -> [`FrameError::FrameTooLarge`] (1009). Default: 16 MiB.
    /// Guards against a header announcing a huge frame the application then waits for.
    pub max_frame_size: u64,
    /// Payload bytes per message across fragments; larger -> [`FrameError::MessageTooLarge`]
    /// (1009). Default: 64 MiB. Guards against endless fragmentation.
    pub max_message_size: u64,
    /// RSV bits the peer may set (rsv1 = permessage-deflate negotiated); others -> 1002.
    /// Default: none.
    pub allowed_rsv: Rsv,
    /// Validate text messages as UTF-8 (1007 on failure). Messages with RSV1 set (compressed) are
    /// never checked: their payload is not the text. Default: true.
    pub validate_utf8: bool,
    /// What happens to masked payload bytes. Default: [`PayloadMode::Unmask`].
    pub payload: PayloadMode,
}

impl DecoderConfig {
    /// The rules a single frame header is checked against.
    #[inline]
    pub fn header_rules(&self) -> HeaderRules {
        HeaderRules {
            peer: self.peer,
            allowed_rsv: self.allowed_rsv,
            max_frame_size: self.max_frame_size,
        }
    }
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            peer: Role::Client,
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            allowed_rsv: Rsv::default(),
            validate_utf8: true,
            payload: PayloadMode::Unmask,
        }
    }
}

/// One step of decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Need more bytes; nothing consumed.
    Incomplete,
    /// A Text/Binary/Continuation header of `len` bytes, consumed.
    DataHeader {
        /// The validated header.
        header: FrameHeader,
        /// Header length in bytes (2..=14).
        len: usize,
    },
    /// `len` payload bytes consumed (validated; unmasked in place under [`PayloadMode::Unmask`]).
    ///
    /// Every data frame yields exactly one `DataPayload` with `frame_end` set, even an empty frame
    /// (then with `len` 0, returned by the call right after its `DataHeader`).
    DataPayload {
        /// Payload bytes consumed.
        len: usize,
        /// The frame's last payload byte was consumed.
        frame_end: bool,
        /// `frame_end` of a frame with FIN: the message is complete (and, for text, valid UTF-8).
        message_end: bool,
    },
    /// A complete control frame (header and payload, `len` bytes), consumed atomically and
    /// validated; its unmasked payload is [`FrameDecoder::control_payload`].
    Control {
        /// Close, Ping or Pong.
        opcode: OpCode,
        /// Frame length in bytes, header included.
        len: usize,
    },
}

/// The incremental frame decoder; see the module docs.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    cfg: DecoderConfig,
    state: State,
    /// The data message in progress, if any.
    message: Option<Message>,
    utf8: Utf8Validator,
    control: [u8; MAX_CONTROL_PAYLOAD],
    control_len: usize,
}

#[derive(Debug, Clone)]
enum State {
    ExpectHeader,
    ExpectPayload {
        remaining: u64,
        position: u64,
        mask: Option<[u8; 4]>,
        fin: bool,
    },
    Closed,
    Failed(FrameError),
}

#[derive(Debug, Clone, Copy)]
struct Message {
    /// Text message whose UTF-8 is checked.
    check_utf8: bool,
    /// Payload bytes announced so far, across fragments.
    len: u64,
}

impl FrameDecoder {
    /// A decoder expecting the first frame of a connection.
    pub fn new(cfg: DecoderConfig) -> Self {
        Self {
            cfg,
            state: State::ExpectHeader,
            message: None,
            utf8: Utf8Validator::new(),
            control: [0; MAX_CONTROL_PAYLOAD],
            control_len: 0,
        }
    }

    /// Decodes the next step from `buf`, the unconsumed input; the caller advances by the returned
    /// `len`. After an error every later call returns the same error.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<Decoded, FrameError> {
        let result = match self.state {
            State::ExpectHeader => self.decode_header(buf),
            State::ExpectPayload {
                remaining,
                position,
                mask,
                fin,
            } => self.decode_payload(buf, remaining, position, mask, fin),
            State::Closed if buf.is_empty() => Ok(Decoded::Incomplete),
            State::Closed => Err(FrameError::FrameAfterClose),
            State::Failed(ref e) => return Err(e.clone()),
        };
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    /// The unmasked payload of the last [`Decoded::Control`] frame.
    pub fn control_payload(&self) -> &[u8] {
        &self.control[..self.control_len]
    }

    /// Whether a data message has started and not ended (fragmented, or its payload not yet all read).
    pub fn in_message(&self) -> bool {
        self.message.is_some()
    }

    /// Whether the peer's Close frame has been decoded (any further frame is an error).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Payload bytes of the current frame not yet returned (0 between frames).
    pub fn remaining_in_frame(&self) -> u64 {
        match self.state {
            State::ExpectPayload { remaining, .. } => remaining,
            _ => 0,
        }
    }

    /// The configuration this decoder was built with.
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    fn decode_header(&mut self, buf: &mut [u8]) -> Result<Decoded, FrameError> {
        let Some((header, header_len)) = FrameHeader::decode(buf, &self.cfg.header_rules())? else {
            return Ok(Decoded::Incomplete);
        };
        if header.opcode.is_control() {
            return self.decode_control(buf, header, header_len);
        }

        let message = match (header.opcode, self.message) {
            (OpCode::Continuation, None) => return Err(FrameError::UnexpectedContinuation),
            (OpCode::Continuation, Some(message)) => message,
            (_, Some(_)) => return Err(FrameError::ExpectedContinuation),
            (opcode, None) => {
                self.utf8.reset();
                Message {
                    check_utf8: opcode == OpCode::Text
                        && self.cfg.validate_utf8
                        && !header.rsv.rsv1,
                    len: 0,
                }
            }
        };
        let len = message.len.saturating_add(header.payload_len);
        if len > self.cfg.max_message_size {
            return Err(FrameError::MessageTooLarge {
                len,
                max: self.cfg.max_message_size,
            });
        }
        self.message = Some(Message { len, ..message });
        self.state = State::ExpectPayload {
            remaining: header.payload_len,
            position: 0,
            mask: header.mask,
            fin: header.fin,
        };
        Ok(Decoded::DataHeader {
            header,
            len: header_len,
        })
    }

    fn decode_control(
        &mut self,
        buf: &mut [u8],
        header: FrameHeader,
        header_len: usize,
    ) -> Result<Decoded, FrameError> {
        // FrameHeader::decode guarantees payload_len <= 125 for control frames.
        let payload_len = header.payload_len as usize;
        let total = header_len + payload_len;
        let Some(payload) = buf.get_mut(header_len..total) else {
            return Ok(Decoded::Incomplete);
        };
        self.control[..payload_len].copy_from_slice(payload);
        self.control_len = payload_len;
        if let Some(key) = header.mask {
            apply_mask(&mut self.control[..payload_len], key, 0);
            if self.cfg.payload == PayloadMode::Unmask {
                payload.copy_from_slice(&self.control[..payload_len]);
            }
        }
        if header.opcode == OpCode::Close {
            parse_close_payload(&self.control[..payload_len])?;
            self.state = State::Closed;
        }
        Ok(Decoded::Control {
            opcode: header.opcode,
            len: total,
        })
    }

    fn decode_payload(
        &mut self,
        buf: &mut [u8],
        remaining: u64,
        position: u64,
        mask: Option<[u8; 4]>,
        fin: bool,
    ) -> Result<Decoded, FrameError> {
        let len = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        if len == 0 && remaining > 0 {
            return Ok(Decoded::Incomplete);
        }
        let chunk = &mut buf[..len];
        let check_utf8 = self.message.is_some_and(|m| m.check_utf8);
        // Only `position % 4` matters for the key phase.
        let phase = (position & 3) as usize;
        match (mask, self.cfg.payload) {
            (Some(key), PayloadMode::Unmask) => {
                apply_mask(chunk, key, phase);
                if check_utf8 {
                    self.utf8.feed(chunk).map_err(|_| FrameError::InvalidUtf8)?;
                }
            }
            (Some(key), PayloadMode::Preserve) if check_utf8 => {
                apply_mask(chunk, key, phase);
                let valid = self.utf8.feed(chunk);
                apply_mask(chunk, key, phase);
                valid.map_err(|_| FrameError::InvalidUtf8)?;
            }
            _ if check_utf8 => self.utf8.feed(chunk).map_err(|_| FrameError::InvalidUtf8)?,
            _ => {}
        }

        let remaining = remaining - len as u64;
        let frame_end = remaining == 0;
        let message_end = frame_end && fin;
        if frame_end {
            self.state = State::ExpectHeader;
        } else {
            self.state = State::ExpectPayload {
                remaining,
                position: position + len as u64,
                mask,
                fin,
            };
        }
        if message_end {
            self.message = None;
            if check_utf8 {
                self.utf8.finish().map_err(|_| FrameError::InvalidUtf8)?;
            }
        }
        Ok(Decoded::DataPayload {
            len,
            frame_end,
            message_end,
        })
    }
}

#[cfg(test)]
mod tests;
