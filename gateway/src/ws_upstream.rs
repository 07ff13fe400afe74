//! The upstream side of the WebSocket opening handshake: the request the gateway sends and the checks on the answer.
//!
//! Owns: building the upstream upgrade request (fresh key, forwarded subprotocols/extensions/cookies/auth,
//! `X-Forwarded-*`, hop-by-hop headers dropped) and verifying the upstream's `101` (RFC 6455 §4.1: status, Upgrade,
//! Connection, `Sec-WebSocket-Accept`, a subprotocol and extensions it may choose). Sans-IO; `crate::conn` does the
//! socket work.

use std::net::IpAddr;

use base64::Engine as _;

use crate::http::head::{Headers, RequestHead, ResponseHead, is_hop_by_hop, write_header};
use crate::upgrade::ClientUpgrade;

/// The upstream's `101` was not acceptable; the client gets 502.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamHandshakeError {
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
pub struct Negotiated {
    pub protocol: Option<String>,
    /// The upstream's `Sec-WebSocket-Extensions`, passed to the client as is.
    pub extensions: Option<String>,
    /// permessage-deflate is on: data frames may carry RSV1 and compressed text is not UTF-8-checked.
    pub deflate: bool,
}

/// A fresh random `Sec-WebSocket-Key` (16 random bytes, base64).
pub fn fresh_key() -> String {
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

/// Context for the `X-Forwarded-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct ForwardedFor<'a> {
    pub client_ip: IpAddr,
    /// `http` or `https`.
    pub proto: &'a str,
}

/// The upgrade request sent upstream for `head`, with `key` as its `Sec-WebSocket-Key`.
pub fn upstream_request(
    head: &RequestHead,
    upgrade: &ClientUpgrade,
    key: &str,
    fwd: ForwardedFor<'_>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut prior_xff: Option<&[u8]> = None;
    for h in &head.headers {
        let name = h.name.as_str();
        if is_hop_by_hop(head, name)
            || name.eq_ignore_ascii_case("sec-websocket-key")
            || name.eq_ignore_ascii_case("sec-websocket-version")
            || name.eq_ignore_ascii_case("sec-websocket-protocol")
            || name.eq_ignore_ascii_case("sec-websocket-extensions")
            || name.eq_ignore_ascii_case("sec-websocket-accept")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
        {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            prior_xff = Some(&h.value);
            continue;
        }
        write_header(&mut out, name, &h.value);
    }
    write_header(&mut out, "Upgrade", b"websocket");
    write_header(&mut out, "Connection", b"Upgrade");
    write_header(&mut out, "Sec-WebSocket-Key", key.as_bytes());
    write_header(&mut out, "Sec-WebSocket-Version", b"13");
    if !upgrade.subprotocols.is_empty() {
        write_header(
            &mut out,
            "Sec-WebSocket-Protocol",
            upgrade.subprotocols.join(", ").as_bytes(),
        );
    }
    for ext in &upgrade.extensions {
        write_header(&mut out, "Sec-WebSocket-Extensions", ext.as_bytes());
    }
    let ip = fwd.client_ip.to_string();
    match prior_xff {
        Some(prior) => {
            let mut v = prior.to_vec();
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip.as_bytes());
            write_header(&mut out, "X-Forwarded-For", &v);
        }
        None => write_header(&mut out, "X-Forwarded-For", ip.as_bytes()),
    }
    write_header(&mut out, "X-Forwarded-Proto", fwd.proto.as_bytes());
    if let Some(host) = head.header("host") {
        write_header(&mut out, "X-Forwarded-Host", host);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Checks a `101` answer against the key sent and what the client offered.
pub fn verify_switching(
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
    use crate::http::head::{HeadLimits, parse_request, parse_response};

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 8192,
        max_headers: 64,
    };

    fn client_head() -> RequestHead {
        let raw = "GET /chat?room=1 HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade, X-Drop\r\nX-Drop: secret\r\nKeep-Alive: 5\r\nCookie: sid=abc\r\n\
                   Authorization: Bearer t\r\nX-Forwarded-For: 10.0.0.1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
        parse_request(raw.as_bytes(), LIMITS).unwrap().unwrap()
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
        let fwd = ForwardedFor {
            client_ip: "192.0.2.7".parse().unwrap(),
            proto: "http",
        };
        let key = fresh_key();
        let raw = upstream_request(
            &client_head(),
            &offer(&["chat"], &["permessage-deflate"]),
            &key,
            fwd,
        );
        let req = parse_request(&raw, LIMITS).unwrap().unwrap();
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
        parse_response(raw.as_bytes(), LIMITS).unwrap().unwrap()
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
