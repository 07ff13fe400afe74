//! The upstream side of the WebSocket opening handshake: the request the gateway sends and the checks on the answer.
//!
//! Owns: the WebSocket part of the upstream upgrade request (fresh key, the subprotocols and extensions to offer;
//! the rest of the head is `crate::http::rewrite`'s) and verifying the upstream's `101` (RFC 6455 §4.1: status, Upgrade,
//! Connection, `Sec-WebSocket-Accept`, a subprotocol and extensions it may choose). Sans-IO; `super::dial` does the
//! socket work.

use base64::Engine as _;

use super::accept::ClientUpgrade;
use crate::http::body::BodyKind;
use crate::http::head::{Headers, RequestHead, ResponseHead};
use crate::http::rewrite::{self, Destination, Forwarding, UpstreamHead};

/// The upstream's `101` was not acceptable; the client gets 502.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum UpstreamHandshakeError {
    #[error("upstream answered 101 without `Upgrade: websocket`")]
    NotWebSocket,
    #[error("upstream answered 101 without `Connection: upgrade`")]
    NoConnectionUpgrade,
    #[error("upstream Sec-WebSocket-Accept does not match the key sent")]
    BadAccept,
    #[error("upstream chose subprotocol `{0}`, which was not offered")]
    UnofferedSubprotocol(String),
    #[error("upstream chose extensions although the client offered none")]
    UnofferedExtension,
    #[error("upstream chose an extension the gateway cannot relay: `{0}`")]
    UnsupportedExtension(String),
}

/// What the upstream agreed to in its `101`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Negotiated {
    pub(crate) protocol: Option<String>,
    /// The upstream's `Sec-WebSocket-Extensions`, passed to the client as is.
    pub(crate) extensions: Option<String>,
    /// permessage-deflate is on: data frames may carry RSV1 and compressed text is not UTF-8-checked.
    pub(crate) deflate: bool,
}

/// A fresh random `Sec-WebSocket-Key` (16 random bytes, base64).
pub(crate) fn fresh_key() -> String {
    let mut raw = [0u8; 16];
    // getrandom only fails when the OS has no entropy source at all; a time-derived key still satisfies the
    // handshake (the key is a nonce against caching intermediaries, not a secret).
    if getrandom::fill(&mut raw).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        raw = t.to_le_bytes();
    }
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Client headers the upgrade path restates itself (the upstream gets the gateway's own key and version, and the
/// subprotocols and extensions the route allows).
const RESTATED: &[&str] = &[
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "sec-websocket-accept",
];

/// The upgrade request sent upstream for `head` going to `dest`, with `key` as its `Sec-WebSocket-Key`. Everything
/// but the WebSocket headers follows the same rules as plain HTTP ([`rewrite::upstream_head`]).
pub(crate) fn upstream_request(
    head: &RequestHead,
    dest: &Destination,
    upgrade: &ClientUpgrade,
    key: &str,
    fwd: Forwarding<'_>,
) -> Vec<u8> {
    let protocols = upgrade.subprotocols.join(", ");
    let mut add: Vec<(&str, &[u8])> = vec![
        ("Upgrade", b"websocket"),
        ("Connection", b"Upgrade"),
        ("Sec-WebSocket-Key", key.as_bytes()),
        ("Sec-WebSocket-Version", b"13"),
    ];
    if !protocols.is_empty() {
        add.push(("Sec-WebSocket-Protocol", protocols.as_bytes()));
    }
    for ext in &upgrade.extensions {
        add.push(("Sec-WebSocket-Extensions", ext.as_bytes()));
    }
    rewrite::upstream_head(
        head,
        dest,
        fwd,
        UpstreamHead {
            framing: BodyKind::None,
            drop: RESTATED,
            add: &add,
        },
    )
}

/// Checks a `101` answer against the key sent and what the client offered.
pub(crate) fn verify_switching(
    res: &ResponseHead,
    key: &str,
    upgrade: &ClientUpgrade,
) -> Result<Negotiated, UpstreamHandshakeError> {
    if !res.has_token("upgrade", "websocket") {
        return Err(UpstreamHandshakeError::NotWebSocket);
    }
    if !res.has_token("connection", "upgrade") {
        return Err(UpstreamHandshakeError::NoConnectionUpgrade);
    }
    let expected = frame_simd::handshake::accept_key(key.as_bytes());
    if res.header_str("sec-websocket-accept") != Some(expected.as_str()) {
        return Err(UpstreamHandshakeError::BadAccept);
    }
    let protocol = res
        .header_str("sec-websocket-protocol")
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    if let Some(p) = &protocol
        && !upgrade.subprotocols.iter().any(|o| o == p)
    {
        return Err(UpstreamHandshakeError::UnofferedSubprotocol(p.clone()));
    }
    let ext_values: Vec<&str> = res
        .headers_named("sec-websocket-extensions")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let mut deflate = false;
    if !ext_values.is_empty() {
        if upgrade.extensions.is_empty() {
            return Err(UpstreamHandshakeError::UnofferedExtension);
        }
        for ext in ext_values.iter().flat_map(|v| v.split(',')) {
            let name = ext.split(';').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("permessage-deflate") {
                deflate = true;
            } else {
                return Err(UpstreamHandshakeError::UnsupportedExtension(
                    name.to_owned(),
                ));
            }
        }
    }
    let extensions = (!ext_values.is_empty()).then(|| ext_values.join(", "));
    Ok(Negotiated {
        protocol,
        extensions,
        deflate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::testing;

    fn client_head() -> RequestHead {
        let raw = "GET /chat?room=1 HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade, X-Drop\r\nX-Drop: secret\r\nKeep-Alive: 5\r\nCookie: sid=abc\r\n\
                   Authorization: Bearer t\r\nX-Forwarded-For: 10.0.0.1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
        testing::request(raw.as_bytes())
    }

    fn offer(protocols: &[&str], extensions: &[&str]) -> ClientUpgrade {
        ClientUpgrade {
            key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
            subprotocols: protocols.iter().map(|s| s.to_string()).collect(),
            extensions: extensions.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn request_forwards_end_to_end_headers_and_drops_hop_by_hop() {
        let fwd = Forwarding {
            peer: "192.0.2.7".parse().unwrap(),
            client: "192.0.2.7".parse().unwrap(),
            proto: "http",
            trusted: true,
            client_cert: Default::default(),
            claims: Default::default(),
        };
        let key = fresh_key();
        let head = client_head();
        let dest = rewrite::destination(&head).unwrap();
        let raw = upstream_request(
            &head,
            &dest,
            &offer(&["chat"], &["permessage-deflate"]),
            &key,
            fwd,
        );
        let req = testing::request(&raw);
        assert_eq!(req.target, "/chat?room=1");
        assert_eq!(req.header_str("host"), Some("chat.example"));
        assert_eq!(req.header_str("cookie"), Some("sid=abc"));
        assert_eq!(req.header_str("authorization"), Some("Bearer t"));
        assert_eq!(req.header_str("sec-websocket-key"), Some(key.as_str()));
        assert_ne!(
            key, "dGhlIHNhbXBsZSBub25jZQ==",
            "a fresh key, not the client's"
        );
        assert_eq!(req.header_str("sec-websocket-protocol"), Some("chat"));
        assert_eq!(
            req.header_str("sec-websocket-extensions"),
            Some("permessage-deflate")
        );
        assert_eq!(
            req.header_str("x-forwarded-for"),
            Some("10.0.0.1, 192.0.2.7")
        );
        assert_eq!(req.header_str("x-forwarded-proto"), Some("http"));
        assert_eq!(req.header_str("x-forwarded-host"), Some("chat.example"));
        assert!(req.header("x-drop").is_none());
        assert!(req.header("keep-alive").is_none());
        assert_eq!(req.header_str("connection"), Some("Upgrade"));
    }

    fn answer(key: &str, extra: &str) -> ResponseHead {
        let raw = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
            frame_simd::handshake::accept_key(key.as_bytes())
        );
        testing::response(raw.as_bytes())
    }

    #[test]
    fn verifies_accept_protocol_and_deflate() {
        let key = fresh_key();
        let n = verify_switching(
            &answer(
                &key,
                "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
            ),
            &key,
            &offer(&["chat"], &["permessage-deflate"]),
        )
        .unwrap();
        assert_eq!(n.protocol.as_deref(), Some("chat"));
        assert!(n.deflate);
        assert_eq!(n.extensions.as_deref(), Some("permessage-deflate"));
    }

    #[test]
    fn rejects_bad_answers() {
        let key = fresh_key();
        let other = fresh_key();
        assert_eq!(
            verify_switching(&answer(&other, ""), &key, &offer(&[], &[])),
            Err(UpstreamHandshakeError::BadAccept)
        );
        assert!(matches!(
            verify_switching(
                &answer(&key, "Sec-WebSocket-Protocol: x\r\n"),
                &key,
                &offer(&["chat"], &[])
            ),
            Err(UpstreamHandshakeError::UnofferedSubprotocol(_))
        ));
        assert_eq!(
            verify_switching(
                &answer(&key, "Sec-WebSocket-Extensions: permessage-deflate\r\n"),
                &key,
                &offer(&[], &[])
            ),
            Err(UpstreamHandshakeError::UnofferedExtension)
        );
        assert!(matches!(
            verify_switching(
                &answer(&key, "Sec-WebSocket-Extensions: x-foo\r\n"),
                &key,
                &offer(&[], &["x-foo"])
            ),
            Err(UpstreamHandshakeError::UnsupportedExtension(_))
        ));
    }
}
