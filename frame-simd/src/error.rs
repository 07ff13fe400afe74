//! The one error type of the codec: one variant per RFC 6455 violation, each mapped to the close code
//! the endpoint must send (1002 protocol error, 1007 invalid payload data, 1009 message too big).
//!
//! The `Display` text is for logs only; match on the variant, never on the message.

/// Close code 1002: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code 1007: invalid frame payload data (bad UTF-8).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code 1009: message too big.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// A violation of RFC 6455 found while decoding frames or close payloads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Opcode 0x3-0x7 or 0xB-0xF (§5.2: reserved, "MUST _Fail the WebSocket Connection_").
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// An RSV bit set that no negotiated extension defines (§5.2), or RSV1 (permessage-deflate) on a
    /// control frame or a continuation frame (RFC 7692 §6.1).
    #[error(
        "reserved bits set without a negotiated extension (rsv1={rsv1}, rsv2={rsv2}, rsv3={rsv3})"
    )]
    ReservedBits {
        /// RSV1 as received.
        rsv1: bool,
        /// RSV2 as received.
        rsv2: bool,
        /// RSV3 as received.
        rsv3: bool,
    },
    /// A control frame with a payload longer than 125 bytes (§5.5).
    #[error("control frame payload of {0} bytes (max 125)")]
    ControlFrameTooLong(u64),
    /// A control frame with FIN clear (§5.5: "control frames MUST NOT be fragmented").
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A payload length not written with the minimal number of bytes (§5.2).
    #[error("payload length {0} not minimally encoded")]
    NonMinimalLength(u64),
    /// A 64-bit payload length with its most significant bit set (§5.2).
    #[error("64-bit payload length with the most significant bit set")]
    LengthMsbSet,
    /// A frame from a client without a mask (§5.1).
    #[error("unmasked frame from a client")]
    UnmaskedFrame,
    /// A frame from a server with a mask (§5.1).
    #[error("masked frame from a server")]
    MaskedFrame,
    /// A frame whose payload exceeds the configured maximum frame size.
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Payload length announced by the header.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// A message whose fragments together exceed the configured maximum message size.
    #[error("message of at least {len} bytes exceeds the maximum of {max}")]
    MessageTooLarge {
        /// Message length including the frame that crossed the limit.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// A continuation frame with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is still in progress (§5.4).
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A text message that is not valid UTF-8 (§8.1), detected at the first byte that cannot be valid.
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// A close frame with a 1-byte payload (§5.5.1: the code is 2 bytes).
    #[error("close payload of 1 byte")]
    CloseTooShort,
    /// A close code that may not appear on the wire (§7.4.1, §7.4.2, IANA registry).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close reason that is not valid UTF-8 (§5.5.1).
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    /// A frame after the peer's close frame (§5.5.1: the close frame is the last one).
    #[error("frame after a close frame")]
    FrameAfterClose,
}

impl FrameError {
    /// The close code to send when failing the connection for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CLOSE_MESSAGE_TOO_BIG,
            Self::InvalidUtf8 | Self::InvalidCloseReason => CLOSE_INVALID_PAYLOAD,
            Self::ReservedOpcode(_)
            | Self::ReservedBits { .. }
            | Self::ControlFrameTooLong(_)
            | Self::FragmentedControlFrame
            | Self::NonMinimalLength(_)
            | Self::LengthMsbSet
            | Self::UnmaskedFrame
            | Self::MaskedFrame
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation
            | Self::CloseTooShort
            | Self::InvalidCloseCode(_)
            | Self::FrameAfterClose => CLOSE_PROTOCOL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_the_rfc_categories() {
        assert_eq!(FrameError::ReservedOpcode(3).close_code(), 1002);
        assert_eq!(FrameError::InvalidUtf8.close_code(), 1007);
        assert_eq!(FrameError::InvalidCloseReason.close_code(), 1007);
        assert_eq!(
            FrameError::FrameTooLarge { len: 2, max: 1 }.close_code(),
            1009
        );
        assert_eq!(
            FrameError::MessageTooLarge { len: 2, max: 1 }.close_code(),
            1009
        );
        assert_eq!(FrameError::NonMinimalLength(5).close_code(), 1002);
    }
}
