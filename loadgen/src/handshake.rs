//! The HTTP/1.1 WebSocket upgrade (RFC 6455 §4), both sides, as pure functions over byte buffers:
//! the client request and response check used by the load generator, and the request parse and
//! response used by the echo upstream. Sockets stay in the callers.

use base64::Engine as _;
use frame_simd::handshake::accept_key;

/// Most header lines a request or response may carry.
const MAX_HEADERS: usize = 64;
/// Largest request or response head accepted.
pub const MAX_HEAD_LEN: usize = 16 * 1024;

/// A failed upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The head is not valid HTTP/1.1.
    #[error("malformed HTTP head: {0}")]
    Malformed(String),
    /// The head is larger than [`MAX_HEAD_LEN`].
    #[error("HTTP head larger than {MAX_HEAD_LEN} bytes")]
    TooLarge,
    /// The server answered with another status than 101.
    #[error("server answered {0} instead of 101")]
    Status(u16),
    /// The server's `Sec-WebSocket-Accept` is missing or wrong.
    #[error("missing or wrong Sec-WebSocket-Accept")]
    BadAccept,
}

/// A fresh random `Sec-WebSocket-Key` (16 random bytes, base64).
pub fn random_key() -> String {
    let bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Appends the client's upgrade request to `out`.
pub fn write_client_request(
    out: &mut Vec<u8>,
    authority: &str,
    path: &str,
    key: &str,
    subprotocol: Option<&str>,
) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(
        b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
    );
    out.extend_from_slice(key.as_bytes());
    if let Some(proto) = subprotocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(proto.as_bytes());
    }
    out.extend_from_slice(b"\r\nUser-Agent: ringway-load\r\n\r\n");
}

/// Checks the server's response head at the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some(n))`: a valid 101 whose head is `n` bytes long (frames may follow).
pub fn check_server_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_LEN => {
            return Err(HandshakeError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(HandshakeError::Status(code));
    }
    let expected = accept_key(key.as_bytes());
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept.map(<[u8]>::trim_ascii) != Some(expected.as_bytes()) {
        return Err(HandshakeError::BadAccept);
    }
    Ok(Some(len))
}

/// What the echo upstream makes of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerDecision {
    /// A valid upgrade: send [`write_switching_protocols`] and speak WebSocket.
    Upgrade {
        /// `Sec-WebSocket-Accept` value.
        accept: String,
        /// The subprotocol to select, if the client offered the configured one.
        protocol: Option<String>,
    },
    /// A plain HTTP request (no upgrade): answer 200 (health checks), then close.
    Plain,
    /// A broken upgrade: answer 400 and close.
    BadRequest(&'static str),
}

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete. `Ok(Some((n, decision)))`:
/// the head is `n` bytes long.
pub fn parse_client_request(
    buf: &[u8],
    subprotocol: Option<&str>,
) -> Result<Option<(usize, ServerDecision)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_LEN => {
            return Err(HandshakeError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let headers: &[httparse::Header<'_>] = req.headers;
    let header = |name: &'static str| header_values(headers, name);
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if !has_token("upgrade", "websocket") {
        return Ok(Some((len, ServerDecision::Plain)));
    }
    if req.method != Some("GET") {
        return Ok(Some((len, ServerDecision::BadRequest("upgrade needs GET"))));
    }
    if !has_token("connection", "upgrade") {
        return Ok(Some((
            len,
            ServerDecision::BadRequest("Connection: upgrade missing"),
        )));
    }
    if !header("sec-websocket-version").any(|v| v.trim_ascii() == b"13") {
        return Ok(Some((
            len,
            ServerDecision::BadRequest("Sec-WebSocket-Version must be 13"),
        )));
    }
    let Some(key) = header("sec-websocket-key").next() else {
        return Ok(Some((
            len,
            ServerDecision::BadRequest("Sec-WebSocket-Key missing"),
        )));
    };
    let key = key.trim_ascii();
    let decoded_len = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map(|k| k.len());
    if decoded_len != Ok(16) {
        return Ok(Some((
            len,
            ServerDecision::BadRequest("Sec-WebSocket-Key is not 16 bytes"),
        )));
    }
    let protocol = subprotocol.filter(|want| has_token("sec-websocket-protocol", want));
    Ok(Some((
        len,
        ServerDecision::Upgrade {
            accept: accept_key(key),
            protocol: protocol.map(str::to_owned),
        },
    )))
}

fn header_values<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Appends the `101 Switching Protocols` response to `out`.
pub fn write_switching_protocols(out: &mut Vec<u8>, accept: &str, protocol: Option<&str>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    if let Some(p) = protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends a plain response with `status` and a short text body, closing the connection.
pub fn write_plain_response(out: &mut Vec<u8>, status: &str, body: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_is_accepted_by_the_server_parser() {
        let key = random_key();
        let mut req = Vec::new();
        write_client_request(&mut req, "127.0.0.1:1", "/x", &key, Some("chat, echo"));
        let (n, decision) = parse_client_request(&req, Some("echo")).unwrap().unwrap();
        assert_eq!(n, req.len());
        let ServerDecision::Upgrade { accept, protocol } = decision else {
            panic!("{decision:?}")
        };
        assert_eq!(protocol.as_deref(), Some("echo"));
        let mut resp = Vec::new();
        write_switching_protocols(&mut resp, &accept, None);
        resp.extend_from_slice(b"\x81\x00");
        assert_eq!(check_server_response(&resp, &key), Ok(Some(resp.len() - 2)));
        assert_eq!(
            check_server_response(&resp, &random_key()),
            Err(HandshakeError::BadAccept)
        );
        assert_eq!(check_server_response(&resp[..10], &key), Ok(None));
    }

    #[test]
    fn server_rejects_broken_upgrades_and_serves_plain_requests() {
        let plain = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_client_request(plain, None).unwrap().unwrap().1,
            ServerDecision::Plain
        );
        let no_key = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert!(matches!(
            parse_client_request(no_key, None).unwrap().unwrap().1,
            ServerDecision::BadRequest(_)
        ));
        let refused = b"HTTP/1.1 403 Forbidden\r\n\r\n";
        assert_eq!(
            check_server_response(refused, "k"),
            Err(HandshakeError::Status(403))
        );
    }
}
