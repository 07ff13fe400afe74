//! HTTP/1.1 message heads: parsing request and response heads with size limits (httparse underneath) into owned,
//! easy-to-inspect values, and writing heads back out.
//!
//! Owns: the request line / status line and header list, `Connection` token handling, hop-by-hop header rules.
//! Does not own: bodies (see `body`), routing, or the WebSocket upgrade rules (see `crate::ws::accept`).

use std::fmt::Write as _;

/// Limits applied while a head is read (from `limits:` in the route file).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The whole head (request line + headers + blank line) may not exceed this many bytes.
    pub max_bytes: usize,
    /// At most this many header fields.
    pub max_headers: usize,
}

/// Why a head could not be parsed. Each maps to one HTTP status via [`HeadError::status`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// More header bytes than `max_header_bytes` without the head ending.
    #[error("request head exceeds {0} bytes")]
    TooLarge(usize),
    /// More header fields than `max_headers`.
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// Malformed syntax (bad request line, bad header name or value, obs-fold, bare CR ...).
    #[error("malformed message head: {0}")]
    Malformed(&'static str),
    /// HTTP version other than 1.0 / 1.1.
    #[error("unsupported HTTP version")]
    Version,
}

impl HeadError {
    /// The status a client gets for this error (431 for size limits, 400 otherwise, 505 for versions).
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge(_) | HeadError::TooManyHeaders(_) => 431,
            HeadError::Malformed(_) => 400,
            HeadError::Version => 505,
        }
    }
}

/// One header field; the name keeps its original case, comparisons are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (origin form `/path?query`, or absolute form).
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<Header>,
    /// Length of the head in the input buffer, blank line included.
    pub head_len: usize,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub minor_version: u8,
    pub headers: Vec<Header>,
    pub head_len: usize,
}

/// Parses a request head from the start of `buf`. `Ok(None)` means more bytes are needed (nothing consumed); an
/// error is returned as soon as the head is known to be bad or exceeds the limits.
///
/// Lines must end in CRLF: httparse accepts a bare LF, which RFC 9112 §2.2 lets a recipient accept, but a proxy that
/// normalises it forwards a head other parsers may split differently, so it is refused.
pub fn parse_request(buf: &[u8], limits: HeadLimits) -> Result<Option<RequestHead>, HeadError> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers.max(1)];
    let mut req = httparse::Request::new(&mut storage);
    let scan = &buf[..buf.len().min(limits.max_bytes)];
    match req.parse(scan) {
        Ok(httparse::Status::Complete(head_len)) => {
            if has_bare_lf(&scan[..head_len]) {
                return Err(HeadError::Malformed("line ending without CR"));
            }
            let minor_version = req.version.ok_or(HeadError::Malformed("missing version"))?;
            Ok(Some(RequestHead {
                method: req
                    .method
                    .ok_or(HeadError::Malformed("missing method"))?
                    .to_owned(),
                target: req
                    .path
                    .ok_or(HeadError::Malformed("missing target"))?
                    .to_owned(),
                minor_version,
                headers: own_headers(req.headers),
                head_len,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => {
            Err(HeadError::TooLarge(limits.max_bytes))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(map_parse_error(e, limits)),
    }
}

/// Parses a response head from the start of `buf`; same conventions as [`parse_request`].
pub fn parse_response(buf: &[u8], limits: HeadLimits) -> Result<Option<ResponseHead>, HeadError> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers.max(1)];
    let mut res = httparse::Response::new(&mut storage);
    let scan = &buf[..buf.len().min(limits.max_bytes)];
    match res.parse(scan) {
        Ok(httparse::Status::Complete(head_len)) => Ok(Some(ResponseHead {
            status: res.code.ok_or(HeadError::Malformed("missing status"))?,
            reason: res.reason.unwrap_or("").to_owned(),
            minor_version: res.version.ok_or(HeadError::Malformed("missing version"))?,
            headers: own_headers(res.headers),
            head_len,
        })),
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => {
            Err(HeadError::TooLarge(limits.max_bytes))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(map_parse_error(e, limits)),
    }
}

/// Whether any LF in `head` is not preceded by CR.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

fn own_headers(headers: &[httparse::Header<'_>]) -> Vec<Header> {
    headers
        .iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        })
        .collect()
}

fn map_parse_error(e: httparse::Error, limits: HeadLimits) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders(limits.max_headers),
        httparse::Error::Version => HeadError::Version,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status"),
        httparse::Error::Token => HeadError::Malformed("invalid token"),
    }
}

/// Header lookups shared by request and response heads.
pub trait Headers {
    fn header_list(&self) -> &[Header];

    /// The first value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.header_list()
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// The first value of `name` as trimmed UTF-8 text, if it is text.
    fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// All values of `name`, in order.
    fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.header_list()
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Whether the comma-separated token list in any `name` header contains `token` (case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name)
            .any(|v| token_list_contains(v, token))
    }
}

impl Headers for RequestHead {
    fn header_list(&self) -> &[Header] {
        &self.headers
    }
}

impl Headers for ResponseHead {
    fn header_list(&self) -> &[Header] {
        &self.headers
    }
}

/// Whether a comma-separated header value contains `token`, ignoring case and optional whitespace.
pub fn token_list_contains(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Headers that apply to one hop only (RFC 9110 §7.6.1) and are never forwarded.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` is hop-by-hop: in [`HOP_BY_HOP`] or named by a `Connection` header of `head`.
pub fn is_hop_by_hop(head: &impl Headers, name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) || head.has_token("connection", name)
}

/// Appends `name: value\r\n` to `out`.
pub fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The standard reason phrase for the statuses the gateway produces itself.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A complete small response generated by the gateway itself (errors, echo answers), with `Connection: close` when
/// `close` is set. `extra` headers are written as given.
pub fn simple_response(status: u16, extra: &[(&str, &str)], body: &str, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    let mut line = String::with_capacity(64);
    let _ = write!(line, "HTTP/1.1 {} {}\r\n", status, reason_phrase(status));
    out.extend_from_slice(line.as_bytes());
    for (name, value) in extra {
        write_header(&mut out, name, value.as_bytes());
    }
    write_header(&mut out, "content-type", b"text/plain; charset=utf-8");
    write_header(
        &mut out,
        "content-length",
        body.len().to_string().as_bytes(),
    );
    if close {
        write_header(&mut out, "connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// Heads from text for the crate's unit tests; anything but a complete, valid head panics.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 8192,
        max_headers: 64,
    };

    pub(crate) fn request(raw: impl AsRef<[u8]>) -> RequestHead {
        parse_request(raw.as_ref(), LIMITS)
            .expect("a valid request head")
            .expect("a complete request head")
    }

    pub(crate) fn response(raw: impl AsRef<[u8]>) -> ResponseHead {
        parse_response(raw.as_ref(), LIMITS)
            .expect("a valid response head")
            .expect("a complete response head")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_headers: 8,
    };

    #[test]
    fn parses_a_complete_request_and_reports_its_length() {
        let raw = b"GET /chat?x=1 HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, Upgrade\r\n\r\nrest";
        let head = parse_request(raw, LIMITS).unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/chat?x=1");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.head_len, raw.len() - 4);
        assert_eq!(head.header_str("HOST"), Some("a.example"));
        assert!(head.has_token("connection", "upgrade"));
        assert!(!head.has_token("connection", "close"));
    }

    #[test]
    fn partial_head_needs_more() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a", LIMITS),
            Ok(None)
        );
    }

    #[test]
    fn oversized_head_is_431() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.resize(2000, b'a');
        let err = parse_request(&raw, LIMITS).unwrap_err();
        assert_eq!(err, HeadError::TooLarge(1024));
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..9 {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&raw, LIMITS).unwrap_err().status(), 431);
    }

    #[test]
    fn obs_fold_is_rejected() {
        let raw = b"GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n";
        assert_eq!(parse_request(raw, LIMITS).unwrap_err().status(), 400);
    }

    #[test]
    fn bare_lf_is_rejected_anywhere_in_a_request_head() {
        for raw in [
            &b"GET / HTTP/1.1\nHost: h\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n\n",
        ] {
            assert_eq!(
                parse_request(raw, LIMITS),
                Err(HeadError::Malformed("line ending without CR")),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let ok = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nbody\nwith LF";
        assert!(
            parse_request(ok, LIMITS).is_ok_and(|h| h.is_some()),
            "the body is not the head's business"
        );
    }

    #[test]
    fn parses_a_response_head() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let head = parse_response(raw, LIMITS).unwrap().unwrap();
        assert_eq!(head.status, 101);
        assert_eq!(head.header_str("upgrade"), Some("websocket"));
    }

    #[test]
    fn hop_by_hop_includes_connection_named_headers() {
        let raw = b"GET / HTTP/1.1\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\r\n";
        let head = parse_request(raw, LIMITS).unwrap().unwrap();
        assert!(is_hop_by_hop(&head, "x-secret"));
        assert!(is_hop_by_hop(&head, "Transfer-Encoding"));
        assert!(!is_hop_by_hop(&head, "cookie"));
    }

    #[test]
    fn simple_response_is_well_formed() {
        let out = simple_response(404, &[], "no route\n", true);
        let head = parse_response(&out, LIMITS).unwrap().unwrap();
        assert_eq!(head.status, 404);
        assert_eq!(head.header_str("content-length"), Some("9"));
        assert_eq!(&out[head.head_len..], b"no route\n");
    }
}
