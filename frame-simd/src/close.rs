//! Close frame payloads (§5.5.1): an optional 2-byte status code followed by a UTF-8 reason.
//!
//! Owns which codes may appear on the wire (§7.4.1, §7.4.2 and the IANA "WebSocket Close Code
//! Number" registry) and the encoding of close payloads. It does not decide *when* to close.

use crate::error::FrameError;
use crate::header::MAX_CONTROL_PAYLOAD;

/// 1000: normal closure.
pub const NORMAL: u16 = 1000;
/// 1001: going away (server shutdown, page navigation).
pub const GOING_AWAY: u16 = 1001;
/// 1002: protocol error.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1003: unsupported data.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// 1007: invalid frame payload data.
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1008: policy violation.
pub const POLICY_VIOLATION: u16 = 1008;
/// 1009: message too big.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// 1011: internal error.
pub const INTERNAL_ERROR: u16 = 1011;
/// 1014: bad gateway (IANA).
pub const BAD_GATEWAY: u16 = 1014;

/// Whether `code` may be sent in a close frame: 1000-1003, 1007-1014 (RFC 6455 and IANA), and the
/// library/application ranges 3000-4999. 1004-1006 and 1015 are reserved for local use only.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parses and validates a close payload: `None` for an empty payload, else the code and the reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(FrameError::InvalidCloseCode(code));
            }
            let reason =
                core::str::from_utf8(reason).map_err(|_| FrameError::InvalidCloseReason)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Writes `code` and as much of `reason` as fits in a control frame (123 bytes), cut at a char
/// boundary. Returns the payload length.
pub fn encode_close_payload(code: u16, reason: &str, out: &mut [u8; 125]) -> usize {
    out[..2].copy_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    2 + end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_payload_has_no_code() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
    }

    #[test]
    fn one_byte_payload_is_refused() {
        assert_eq!(parse_close_payload(&[0x03]), Err(FrameError::CloseTooShort));
    }

    #[test]
    fn codes_follow_rfc_and_iana() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            let payload = code.to_be_bytes();
            assert_eq!(
                parse_close_payload(&payload).is_ok(),
                expected,
                "code {code}"
            );
        }
        for code in [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                parse_close_payload(&code.to_be_bytes()),
                Err(FrameError::InvalidCloseCode(code))
            );
        }
    }

    #[test]
    fn reason_must_be_utf8() {
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, b'o', b'k']),
            Ok(Some((1000, "ok")))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xCE, 0xBA]),
            Ok(Some((1000, "κ")))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xCE]),
            Err(FrameError::InvalidCloseReason)
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xFF]),
            Err(FrameError::InvalidCloseReason)
        );
    }

    #[test]
    fn encode_truncates_at_a_char_boundary() {
        let mut out = [0u8; 125];
        let n = encode_close_payload(1001, "bye", &mut out);
        assert_eq!(&out[..n], &[0x03, 0xE9, b'b', b'y', b'e']);
        // 62 two-byte chars = 124 bytes > 123: the last char is dropped, not cut in half.
        let long = "é".repeat(62);
        let n = encode_close_payload(1000, &long, &mut out);
        assert_eq!(n, 2 + 122);
        assert_eq!(
            parse_close_payload(&out[..n]),
            Ok(Some((1000, &long[..122])))
        );
        let ascii = "a".repeat(200);
        assert_eq!(encode_close_payload(1000, &ascii, &mut out), 125);
    }
}
