//! The opening handshake's one computation: `Sec-WebSocket-Accept` from `Sec-WebSocket-Key`
//! (§4.2.2). Header parsing and HTTP belong to the gateway, not here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// The GUID appended to the key before hashing (§1.3).
pub const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `base64(SHA-1(key ++ GUID))`: the value of `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
///
/// `sec_websocket_key` is used as received (the caller trims surrounding whitespace).
pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(sec_websocket_key);
    sha.update(WEBSOCKET_GUID);
    STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_1_3_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn different_keys_give_different_answers() {
        assert_ne!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            accept_key(b"AQIDBAUGBwgJCgsMDQ4PEC==")
        );
    }
}
