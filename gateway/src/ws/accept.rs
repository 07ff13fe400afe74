//! The client side of the WebSocket opening handshake (RFC 6455 §4.2.1/§4.2.2), sans-IO.
//!
//! Owns: deciding whether a request is an upgrade attempt, checking it against the RFC and the route's policy (origin
//! allowlist, subprotocol allowlist), the checked request the rest of the path carries ([`UpgradeRequest`]), and
//! writing the gateway's `101` answer. Does not own: the upstream handshake
//! (`super::handshake`) or any socket.

use std::net::SocketAddr;

use base64::Engine as _;
use ringway_config::WebSocketSettings;

use crate::http::body::{BodyKind, request_body_kind};
use crate::http::head::{Headers, RequestHead, write_header};
use crate::http::rewrite::{Destination, Forwarding};

/// An upgrade request that passed the head checks: who sent it, its head, where it goes, and the bytes the client
/// sent behind it (frames may follow the head in the same read).
pub(crate) struct UpgradeRequest<'a> {
    pub(crate) peer: SocketAddr,
    pub(crate) head: RequestHead,
    pub(crate) dest: Destination,
    pub(crate) fwd: Forwarding<'a>,
    pub(crate) early: Vec<u8>,
    /// Unix time the route's token expires (`exp` + leeway) when the route closes expired WebSockets.
    pub(crate) expires_at: Option<u64>,
}

/// A checked upgrade request: what the gateway needs to open the upstream leg and answer the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientUpgrade {
    /// The client's `Sec-WebSocket-Key`, trimmed.
    pub(crate) key: String,
    /// Subprotocols to offer upstream: the client's list, filtered by the route's allowlist, in client order.
    pub(crate) subprotocols: Vec<String>,
    /// The client's `Sec-WebSocket-Extensions` values, forwarded as is (end-to-end negotiation).
    pub(crate) extensions: Vec<String>,
}

/// Why an upgrade request is refused; `status` is the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub(crate) struct UpgradeRejection {
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
}

impl UpgradeRejection {
    fn new(status: u16, reason: &'static str) -> Self {
        Self { status, reason }
    }

    /// Extra headers the refusal carries (`Sec-WebSocket-Version: 13` on 426, as §4.4 asks).
    pub(crate) fn headers(&self) -> &'static [(&'static str, &'static str)] {
        if self.status == 426 {
            &[("sec-websocket-version", "13")]
        } else {
            &[]
        }
    }
}

/// Whether the request asks for a WebSocket upgrade at all (an `Upgrade` header naming `websocket`). Such requests
/// are checked strictly by [`check`]; everything else is plain HTTP.
pub(crate) fn is_websocket_request(head: &RequestHead) -> bool {
    head.has_token("upgrade", "websocket")
}

/// Checks an upgrade request per RFC 6455 §4.2.1 and the route's policy.
///
/// Statuses: 405 for a method other than GET, 400 for a malformed handshake (HTTP/1.0, no Host, no `Connection:
/// upgrade`, a bad or repeated key or version, a body: the upgrade request has none, and its framing headers would
/// leave the upstream waiting for one), 426 with `Sec-WebSocket-Version: 13` for a missing or other version, 403 for a refused
/// origin or when none of the offered subprotocols is allowed.
pub(crate) fn check(
    head: &RequestHead,
    ws: &WebSocketSettings,
) -> Result<ClientUpgrade, UpgradeRejection> {
    if head.method != "GET" {
        return Err(UpgradeRejection::new(405, "WebSocket upgrade requires GET"));
    }
    if head.minor_version < 1 {
        return Err(UpgradeRejection::new(
            400,
            "WebSocket upgrade requires HTTP/1.1",
        ));
    }
    if head
        .header("host")
        .is_none_or(|h| h.trim_ascii().is_empty())
    {
        return Err(UpgradeRejection::new(400, "missing Host header"));
    }
    if !head.has_token("connection", "upgrade") {
        return Err(UpgradeRejection::new(
            400,
            "Connection header must contain `upgrade`",
        ));
    }
    if !matches!(
        request_body_kind(head),
        Ok(BodyKind::None | BodyKind::Length(0))
    ) {
        return Err(UpgradeRejection::new(
            400,
            "a WebSocket upgrade request cannot carry a body",
        ));
    }
    for (name, reason) in [
        (
            "sec-websocket-key",
            "more than one Sec-WebSocket-Key header",
        ),
        (
            "sec-websocket-version",
            "more than one Sec-WebSocket-Version header",
        ),
    ] {
        if head.headers_named(name).nth(1).is_some() {
            return Err(UpgradeRejection::new(400, reason));
        }
    }
    match head.header_str("sec-websocket-version") {
        Some("13") => {}
        _ => {
            return Err(UpgradeRejection::new(
                426,
                "unsupported Sec-WebSocket-Version (want 13)",
            ));
        }
    }
    let key = head.header_str("sec-websocket-key").unwrap_or("");
    if !is_valid_key(key) {
        return Err(UpgradeRejection::new(
            400,
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    if let (Some(allowed), Some(origin)) = (&ws.allowed_origins, head.header_str("origin")) {
        let ok = allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin));
        if !ok {
            return Err(UpgradeRejection::new(403, "origin not allowed"));
        }
    }
    let offered: Vec<String> = head
        .headers_named("sec-websocket-protocol")
        .flat_map(|v| v.split(|&b| b == b','))
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let subprotocols = match &ws.allowed_subprotocols {
        None => offered,
        Some(allowed) => {
            let kept: Vec<String> = offered
                .iter()
                .filter(|p| allowed.iter().any(|a| a == *p))
                .cloned()
                .collect();
            if kept.is_empty() && !offered.is_empty() {
                return Err(UpgradeRejection::new(
                    403,
                    "none of the offered subprotocols is allowed",
                ));
            }
            kept
        }
    };
    let extensions = head
        .headers_named("sec-websocket-extensions")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    Ok(ClientUpgrade {
        key: key.to_owned(),
        subprotocols,
        extensions,
    })
}

/// Whether `key` is base64 of exactly 16 bytes.
pub(crate) fn is_valid_key(key: &str) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|raw| raw.len() == 16)
}

/// The gateway's `101 Switching Protocols` answer to the client: its own accept key, and the subprotocol and
/// extensions the upstream chose.
pub(crate) fn switching_protocols(
    client_key: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    write_header(&mut out, "Upgrade", b"websocket");
    write_header(&mut out, "Connection", b"Upgrade");
    let accept = frame_simd::handshake::accept_key(client_key.as_bytes());
    write_header(&mut out, "Sec-WebSocket-Accept", accept.as_bytes());
    if let Some(p) = protocol {
        write_header(&mut out, "Sec-WebSocket-Protocol", p.as_bytes());
    }
    if let Some(e) = extensions {
        write_header(&mut out, "Sec-WebSocket-Extensions", e.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::testing;

    fn settings() -> WebSocketSettings {
        ringway_config::WebSocketSettings::default()
    }

    fn head(extra: &str) -> RequestHead {
        let raw = format!(
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        );
        testing::request(raw)
    }

    #[test]
    fn accepts_the_rfc_example() {
        let up = check(&head("Sec-WebSocket-Version: 13\r\n"), &settings()).unwrap();
        assert_eq!(up.key, "dGhlIHNhbXBsZSBub25jZQ==");
        let answer = String::from_utf8(switching_protocols(&up.key, None, None)).unwrap();
        assert!(
            answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{answer}"
        );
    }

    #[test]
    fn wrong_or_missing_version_is_426_with_version_header() {
        for extra in ["", "Sec-WebSocket-Version: 8\r\n"] {
            let err = check(&head(extra), &settings()).unwrap_err();
            assert_eq!(err.status, 426);
            assert_eq!(err.headers(), &[("sec-websocket-version", "13")]);
        }
    }

    #[test]
    fn malformed_keys_are_400() {
        for key in [
            "",
            "short",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ==",
        ] {
            let raw = format!(
                "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}x\r\n\r\n"
            );
            let h = testing::request(raw.as_bytes());
            assert_eq!(
                check(&h, &settings()).unwrap_err().status,
                400,
                "key {key}x"
            );
        }
    }

    #[test]
    fn method_host_and_connection_are_checked() {
        let mut h = head("Sec-WebSocket-Version: 13\r\n");
        h.method = "POST".into();
        assert_eq!(check(&h, &settings()).unwrap_err().status, 405);
        let mut h = head("Sec-WebSocket-Version: 13\r\n");
        h.headers.retain(|x| !x.name.eq_ignore_ascii_case("host"));
        assert_eq!(check(&h, &settings()).unwrap_err().status, 400);
        let mut h = head("Sec-WebSocket-Version: 13\r\n");
        h.headers
            .retain(|x| !x.name.eq_ignore_ascii_case("connection"));
        assert_eq!(check(&h, &settings()).unwrap_err().status, 400);
        let mut h = head("Sec-WebSocket-Version: 13\r\n");
        h.minor_version = 0;
        assert_eq!(check(&h, &settings()).unwrap_err().status, 400);
    }

    #[test]
    fn bodies_and_repeated_key_or_version_are_400() {
        for extra in [
            "Sec-WebSocket-Version: 13\r\nContent-Length: 5\r\n",
            "Sec-WebSocket-Version: 13\r\nTransfer-Encoding: chunked\r\n",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n",
        ] {
            assert_eq!(
                check(&head(extra), &settings()).unwrap_err().status,
                400,
                "{extra}"
            );
        }
        assert!(
            check(
                &head("Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n"),
                &settings()
            )
            .is_ok()
        );
    }

    #[test]
    fn origin_allowlist() {
        let mut ws = settings();
        ws.allowed_origins = Some(vec!["https://app.example".into()]);
        let ok = head("Sec-WebSocket-Version: 13\r\nOrigin: https://APP.example\r\n");
        assert!(check(&ok, &ws).is_ok());
        let bad = head("Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n");
        assert_eq!(check(&bad, &ws).unwrap_err().status, 403);
    }

    #[test]
    fn subprotocols_are_filtered_by_the_allowlist() {
        let mut ws = settings();
        let h = head(
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\nSec-WebSocket-Protocol: c\r\n",
        );
        assert_eq!(check(&h, &ws).unwrap().subprotocols, ["a", "b", "c"]);
        ws.allowed_subprotocols = Some(vec!["c".into(), "b".into()]);
        assert_eq!(check(&h, &ws).unwrap().subprotocols, ["b", "c"]);
        ws.allowed_subprotocols = Some(vec!["z".into()]);
        assert_eq!(check(&h, &ws).unwrap_err().status, 403);
    }

    #[test]
    fn extensions_are_forwarded_verbatim() {
        let h = head(
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        );
        assert_eq!(
            check(&h, &settings()).unwrap().extensions,
            ["permessage-deflate; client_max_window_bits"]
        );
    }

    #[test]
    fn plain_requests_are_not_upgrades() {
        let h = testing::request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(!is_websocket_request(&h));
        assert!(is_websocket_request(&head("")));
    }
}
