//! From the client's request head to the upstream's, sans-IO: one set of rules for plain HTTP and for WebSocket
//! upgrades, so the two paths cannot drift.
//!
//! Owns: deciding where a request goes ([`destination`]: exactly one valid `Host` for HTTP/1.1, RFC 9112 §3.2; an
//! absolute-form target is routed *and* forwarded by its own authority, in origin form, §3.2.2; userinfo and other
//! target forms are refused; the path routed on is checked and normalized by `super::path`, the path forwarded is
//! the client's) and writing the upstream head ([`upstream_head`]): hop-by-hop headers dropped (`Host`
//! is restated, so `Connection: Host` cannot remove it), body framing stated by the caller, and the forwarding
//! headers (`X-Forwarded-For`, `-Proto`, `-Host`, `X-Real-IP`, `Forwarded`) replaced with what the gateway saw, or
//! extended when the peer is a trusted proxy; and who the client is behind trusted proxies ([`client_address`]:
//! the rightmost `X-Forwarded-For` entry not in `trusted_proxies`), for logs and hashing.
//! Does not own: parsing heads (`super::head`), body framing rules (`super::body`), the WebSocket handshake's own
//! headers (the upgrade path passes them in [`UpstreamHead::add`]).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::body::BodyKind;
use super::head::{Headers, RequestHead, is_hop_by_hop, write_header};
use super::path::{PathError, routing_path};

/// Where a request goes: the host it names and its target in origin form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// `host[:port]` from an absolute-form target, else from `Host`; `None` only for HTTP/1.0 without `Host`.
    pub(crate) host: Option<String>,
    /// The target as the upstream receives it: origin form (`/path?query`), or `*` for `OPTIONS *`.
    pub(crate) path: String,
    /// The path routes are matched against when it differs from `path`'s (see `super::path`).
    pub(crate) routing: Option<String>,
}

impl Destination {
    /// The path the request is routed on: `path` without its query, normalized by `super::path`.
    pub(crate) fn route_path(&self) -> &str {
        match &self.routing {
            Some(p) => p,
            None => self.path.split(['?', '#']).next().unwrap_or(&self.path),
        }
    }
}

/// Why a request head is refused (always 400: the request is malformed, RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TargetError {
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("invalid Host header")]
    InvalidHost,
    #[error("userinfo in the request target")]
    Userinfo,
    #[error("invalid authority in the request target")]
    InvalidAuthority,
    #[error("unsupported request target form")]
    UnsupportedTarget,
    #[error("ambiguous request path: {0}")]
    AmbiguousPath(#[from] PathError),
}

impl TargetError {
    /// The status for the client.
    pub(crate) fn status(self) -> u16 {
        400
    }
}

/// Checks a request's `Host` and target and says where it goes.
pub(crate) fn destination(head: &RequestHead) -> Result<Destination, TargetError> {
    let mut dest = target_destination(head)?;
    if dest.path != "*"
        && let Cow::Owned(p) = routing_path(&dest.path)?
    {
        dest.routing = Some(p);
    }
    Ok(dest)
}

/// [`destination`] before the path is checked.
fn target_destination(head: &RequestHead) -> Result<Destination, TargetError> {
    let mut hosts = head.headers_named("host");
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(TargetError::DuplicateHost);
    }
    let host_header = match host_header {
        Some(v) => {
            let v = std::str::from_utf8(v.trim_ascii()).map_err(|_| TargetError::InvalidHost)?;
            if !is_authority(v) {
                return Err(TargetError::InvalidHost);
            }
            Some(v)
        }
        None if head.minor_version >= 1 => return Err(TargetError::MissingHost),
        None => None,
    };
    let target = head.target.as_str();
    if target.starts_with('/') {
        return Ok(Destination {
            host: host_header.map(str::to_owned),
            path: target.to_owned(),
            routing: None,
        });
    }
    if target == "*" && head.method == "OPTIONS" {
        return Ok(Destination {
            host: host_header.map(str::to_owned),
            path: target.to_owned(),
            routing: None,
        });
    }
    let rest = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| {
            target
                .get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &target[scheme.len()..])
        })
        .ok_or(TargetError::UnsupportedTarget)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(TargetError::Userinfo);
    }
    if !is_authority(authority) {
        return Err(TargetError::InvalidAuthority);
    }
    let tail = tail.split('#').next().unwrap_or("");
    let path = if tail.starts_with('/') {
        tail.to_owned()
    } else {
        format!("/{tail}")
    };
    Ok(Destination {
        host: Some(authority.to_owned()),
        path,
        routing: None,
    })
}

/// `host[:port]`: a registered name, an IPv4 address or a bracketed IPv6 address, and an optional port from 0 to
/// 65535. Never empty; never userinfo, commas or spaces.
fn is_authority(text: &str) -> bool {
    let port_ok = |p: Option<&str>| {
        p.is_none_or(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        })
    };
    if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        return v6.parse::<std::net::Ipv6Addr>().is_ok() && port_ok(port);
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    };
    // reg-name: unreserved / pct-encoded / sub-delims (RFC 3986 §3.2.2), without `,` (it splits header lists).
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+;=".contains(&b));
    host_ok && port_ok(port)
}

/// The forwarding facts of one client connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarding<'a> {
    /// The address the gateway accepted the connection from (the PROXY header's source on such listeners).
    pub(crate) peer: IpAddr,
    /// The client as far as the gateway can tell ([`client_address`]): what logs and hashing by client address use.
    pub(crate) client: IpAddr,
    /// `http` or `https`: the scheme the client used to reach the gateway.
    pub(crate) proto: &'a str,
    /// The peer is in `trusted_proxies`: its forwarding headers are kept and extended, not replaced.
    pub(crate) trusted: bool,
    /// The route's client-certificate header and the verified identity to put in it (mTLS): the client's own lines
    /// of that name are always dropped.
    pub(crate) client_cert: ClientCertHeader<'a>,
    /// The route's JWT claim headers: the client's copies dropped, the verified values added.
    pub(crate) claims: ClaimHeaders<'a>,
}

/// A route's `forward_claims` headers for one request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClaimHeaders<'a> {
    /// Lowercased names: whatever the client sent under them is dropped.
    pub(crate) strip: &'a [String],
    /// `(name, value)` from the verified token.
    pub(crate) add: &'a [(String, String)],
}

/// A route's `client_cert_header` and what the TLS handshake verified.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientCertHeader<'a> {
    /// The header name (lowercase); `None`: the route forwards nothing.
    pub(crate) name: Option<&'a str>,
    /// The verified client certificate's subject and SANs; `None`: no certificate was verified.
    pub(crate) value: Option<&'a str>,
}

/// Whether `ip` is in one of `ranges` (an IPv4-mapped IPv6 peer counts as its IPv4 address).
pub(crate) fn is_trusted(ranges: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ranges.iter().any(|r| r.contains(&ip))
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy; otherwise the rightmost
/// `X-Forwarded-For` entry (all lines, in order) that is not trusted — entries left of it were written by the
/// client and cannot be believed. Walking stops at an entry that is not an address (`unknown`, an obfuscated
/// name, garbage), keeping the last trusted hop; `ip:port` and `[v6]:port` entries count as their address.
pub(crate) fn client_address(head: &RequestHead, peer: IpAddr, trusted: &[ipnet::IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(trusted, client) {
        return client;
    }
    let lines: Vec<&[u8]> = head.headers_named("x-forwarded-for").collect();
    for entry in lines
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
    {
        let Some(ip) = forwarded_ip(entry) else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(trusted, client) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry as an address: `ip`, `ip:port` or `[v6]:port`.
fn forwarded_ip(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// What one path adds to the common rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamHead<'a> {
    /// The body framing the gateway will send (only `Content-Length` or `Transfer-Encoding: chunked` is written).
    pub(crate) framing: BodyKind,
    /// Further client headers not to forward (the path restates them, or they end here, like `Expect`).
    pub(crate) drop: &'a [&'a str],
    /// Headers the path states itself (`Upgrade`, `Connection`, `Sec-WebSocket-*`).
    pub(crate) add: &'a [(&'a str, &'a [u8])],
}

/// Client headers the gateway always restates.
const RESTATED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

/// The request head sent upstream: HTTP/1.1, the destination's origin-form target and `Host`, end-to-end client
/// headers, the path's own headers, the framing, and the forwarding headers.
pub(crate) fn upstream_head(
    head: &RequestHead,
    dest: &Destination,
    fwd: Forwarding<'_>,
    spec: UpstreamHead<'_>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.head_len + 256);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(dest.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = &dest.host {
        write_header(&mut out, "Host", host.as_bytes());
    }
    for h in &head.headers {
        let name = h.name.as_str();
        let is = |list: &[&str]| list.iter().any(|n| n.eq_ignore_ascii_case(name));
        if is(RESTATED)
            || is(spec.drop)
            || is_hop_by_hop(head, name)
            || fwd
                .client_cert
                .name
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
            || fwd
                .claims
                .strip
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        write_header(&mut out, name, &h.value);
    }
    for (name, value) in spec.add {
        write_header(&mut out, name, value);
    }
    match spec.framing {
        BodyKind::Length(n) => write_header(&mut out, "Content-Length", n.to_string().as_bytes()),
        BodyKind::Chunked => write_header(&mut out, "Transfer-Encoding", b"chunked"),
        BodyKind::None | BodyKind::CloseDelimited => {}
    }
    if let (Some(name), Some(value)) = (fwd.client_cert.name, fwd.client_cert.value) {
        write_header(&mut out, name, value.as_bytes());
    }
    for (name, value) in fwd.claims.add {
        write_header(&mut out, name, value.as_bytes());
    }
    write_forwarding(&mut out, head, dest, fwd);
    out.extend_from_slice(b"\r\n");
    out
}

fn write_forwarding(
    out: &mut Vec<u8>,
    head: &RequestHead,
    dest: &Destination,
    fwd: Forwarding<'_>,
) {
    let peer = fwd.peer.to_canonical();
    let peer_text = peer.to_string();
    let prior = |name: &str| -> Option<Vec<u8>> {
        let mut joined = Vec::new();
        for v in head
            .headers_named(name)
            .map(<[u8]>::trim_ascii)
            .filter(|v| !v.is_empty())
        {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v);
        }
        (fwd.trusted && !joined.is_empty()).then_some(joined)
    };
    let first = |name: &str| -> Option<&[u8]> {
        head.header(name)
            .map(<[u8]>::trim_ascii)
            .filter(|v| fwd.trusted && !v.is_empty())
    };

    let mut xff = prior("x-forwarded-for").map_or_else(Vec::new, |mut v| {
        v.extend_from_slice(b", ");
        v
    });
    xff.extend_from_slice(peer_text.as_bytes());
    write_header(out, "X-Forwarded-For", &xff);
    write_header(
        out,
        "X-Real-IP",
        first("x-real-ip").unwrap_or(peer_text.as_bytes()),
    );
    let proto = first("x-forwarded-proto").unwrap_or(fwd.proto.as_bytes());
    write_header(out, "X-Forwarded-Proto", proto);
    if let Some(host) = first("x-forwarded-host").or(dest.host.as_deref().map(str::as_bytes)) {
        write_header(out, "X-Forwarded-Host", host);
    }

    // RFC 7239: `for=` an IPv6 node is quoted and bracketed; other values are quoted unless they are tokens.
    let mut element = String::with_capacity(64);
    let _ = match peer {
        IpAddr::V4(v4) => write!(element, "for={v4}"),
        IpAddr::V6(v6) => write!(element, "for=\"[{v6}]\""),
    };
    if let Some(host) = &dest.host {
        element.push_str(";host=");
        push_forwarded_value(&mut element, host);
    }
    element.push_str(";proto=");
    push_forwarded_value(&mut element, fwd.proto);
    let mut forwarded = prior("forwarded").map_or_else(Vec::new, |mut v| {
        v.extend_from_slice(b", ");
        v
    });
    forwarded.extend_from_slice(element.as_bytes());
    write_header(out, "Forwarded", &forwarded);
}

fn push_forwarded_value(out: &mut String, value: &str) {
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        out.push_str(value);
    } else {
        out.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::testing;

    fn head(raw: &str) -> RequestHead {
        testing::request(raw.as_bytes())
    }

    fn dest(raw: &str) -> Result<Destination, TargetError> {
        destination(&head(raw))
    }

    fn rewritten(raw: &str, fwd: Forwarding<'_>, spec: UpstreamHead<'_>) -> RequestHead {
        let h = head(raw);
        let d = destination(&h).expect("destination");
        let out = upstream_head(&h, &d, fwd, spec);
        let parsed = testing::request(&out);
        assert_eq!(parsed.head_len, out.len(), "exactly one head");
        parsed
    }

    const PLAIN: UpstreamHead<'static> = UpstreamHead {
        framing: BodyKind::None,
        drop: &[],
        add: &[],
    };

    fn untrusted() -> Forwarding<'static> {
        Forwarding {
            peer: "::ffff:192.0.2.9".parse().expect("ip"),
            client: "192.0.2.9".parse().expect("ip"),
            proto: "http",
            trusted: false,
            client_cert: ClientCertHeader::default(),
            claims: ClaimHeaders::default(),
        }
    }

    #[test]
    fn host_must_be_there_once_and_valid() {
        assert_eq!(
            dest("GET / HTTP/1.1\r\n\r\n"),
            Err(TargetError::MissingHost)
        );
        assert_eq!(
            dest("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            Err(TargetError::DuplicateHost)
        );
        for bad in [
            "", "a b", "a,b", "x@a", "a:", "a:99999", "a:8o", "[::1", "[zz]:1", "[::1]x",
        ] {
            assert_eq!(
                dest(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")),
                Err(TargetError::InvalidHost),
                "{bad:?}"
            );
        }
        for good in [
            "a.example",
            "a.example:8080",
            "127.0.0.1:1",
            "[::1]",
            "[2001:db8::1]:443",
        ] {
            let d = dest(&format!("GET /p HTTP/1.1\r\nHost: {good}\r\n\r\n")).expect(good);
            assert_eq!(d.host.as_deref(), Some(good));
            assert_eq!(d.path, "/p");
        }
        let d = dest("GET /p HTTP/1.0\r\n\r\n").expect("HTTP/1.0 may omit Host");
        assert_eq!(d.host, None);
    }

    #[test]
    fn absolute_form_names_the_host_and_becomes_origin_form() {
        let d = dest("GET http://B.example:81/x?y=1#frag HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .expect("ok");
        assert_eq!(
            (d.host.as_deref(), d.path.as_str()),
            (Some("B.example:81"), "/x?y=1")
        );
        let d = dest("GET WSS://b.example?q HTTP/1.1\r\nHost: a\r\n\r\n").expect("ok");
        assert_eq!(
            (d.host.as_deref(), d.path.as_str()),
            (Some("b.example"), "/?q")
        );
        assert_eq!(
            dest("GET http://x@internal.test/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(TargetError::Userinfo)
        );
        assert_eq!(
            dest("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(TargetError::InvalidAuthority)
        );
        assert_eq!(
            dest("GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(TargetError::UnsupportedTarget)
        );
        assert_eq!(
            dest("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
            Err(TargetError::UnsupportedTarget)
        );
        assert_eq!(
            dest("GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(TargetError::UnsupportedTarget)
        );
        assert_eq!(
            dest("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
                .expect("ok")
                .path,
            "*"
        );
    }

    #[test]
    fn the_upstream_sees_the_routed_host_once() {
        let h = rewritten(
            "GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\nConnection: Host, X-Hop\r\nX-Hop: 1\r\nAccept: */*\r\n\r\n",
            untrusted(),
            PLAIN,
        );
        assert_eq!(h.target, "/x");
        assert_eq!(h.headers_named("host").collect::<Vec<_>>(), [b"b.example"]);
        assert_eq!(h.header("x-hop"), None);
        assert_eq!(h.header("connection"), None);
        assert_eq!(h.header_str("accept"), Some("*/*"));
        assert_eq!(h.header_str("x-forwarded-host"), Some("b.example"));
    }

    #[test]
    fn forwarding_headers_of_an_untrusted_peer_are_replaced() {
        let h = rewritten(
            "GET / HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n\
             X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n",
            untrusted(),
            PLAIN,
        );
        for (name, value) in [
            ("x-forwarded-for", "192.0.2.9"),
            ("x-real-ip", "192.0.2.9"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "a.example"),
            ("forwarded", "for=192.0.2.9;host=a.example;proto=http"),
        ] {
            assert_eq!(h.headers_named(name).count(), 1, "{name}");
            assert_eq!(h.header_str(name), Some(value), "{name}");
        }
    }

    #[test]
    fn forwarding_headers_of_a_trusted_proxy_are_extended() {
        let fwd = Forwarding {
            peer: "2001:db8::7".parse().expect("ip"),
            client: "192.0.2.2".parse().expect("ip"),
            proto: "http",
            trusted: true,
            client_cert: ClientCertHeader::default(),
            claims: ClaimHeaders::default(),
        };
        let h = rewritten(
            "GET / HTTP/1.1\r\nHost: a.example:8443\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 192.0.2.2\r\n\
             X-Real-IP: 192.0.2.1\r\nForwarded: for=192.0.2.1\r\nX-Forwarded-Proto: https\r\n\r\n",
            fwd,
            PLAIN,
        );
        assert_eq!(
            h.header_str("x-forwarded-for"),
            Some("192.0.2.1, 192.0.2.2, 2001:db8::7")
        );
        assert_eq!(h.header_str("x-real-ip"), Some("192.0.2.1"));
        assert_eq!(h.header_str("x-forwarded-proto"), Some("https"));
        assert_eq!(h.header_str("x-forwarded-host"), Some("a.example:8443"));
        assert_eq!(
            h.header_str("forwarded"),
            Some("for=192.0.2.1, for=\"[2001:db8::7]\";host=\"a.example:8443\";proto=http")
        );
        let ranges: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        assert!(is_trusted(&ranges, "::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!is_trusted(&ranges, "11.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_forwarded_for_entry() {
        let trusted: Vec<ipnet::IpNet> = vec![
            "10.0.0.0/8".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ];
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let client = |xff: &[&str], peer: &str| {
            let mut raw = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
            for line in xff {
                raw.push_str(&format!("X-Forwarded-For: {line}\r\n"));
            }
            raw.push_str("\r\n");
            client_address(&head(&raw), ip(peer), &trusted)
        };
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(client(&["198.51.100.1"], "192.0.2.9"), ip("192.0.2.9"));
        assert_eq!(client(&[], "::ffff:192.0.2.9"), ip("192.0.2.9"));
        // Behind trusted hops: the rightmost entry that is not one of them; spoofed entries to its left are ignored.
        assert_eq!(
            client(&["6.6.6.6, 198.51.100.1, 10.0.0.2"], "10.0.0.1"),
            ip("198.51.100.1")
        );
        assert_eq!(
            client(&["6.6.6.6", "198.51.100.1:4711", "10.1.1.1"], "2001:db8::1"),
            ip("198.51.100.1")
        );
        assert_eq!(
            client(&["[2001:db9::5]:80,::ffff:10.0.0.3"], "10.0.0.1"),
            ip("2001:db9::5")
        );
        // Every entry trusted: the leftmost hop is as far as the chain goes; no header: the peer.
        assert_eq!(client(&["10.0.0.9, 10.0.0.8"], "10.0.0.1"), ip("10.0.0.9"));
        assert_eq!(client(&[], "10.0.0.1"), ip("10.0.0.1"));
        // Garbage stops the walk at the last trusted hop rather than believing what lies beyond it.
        assert_eq!(
            client(&["198.51.100.1, unknown, 10.0.0.2"], "10.0.0.1"),
            ip("10.0.0.2")
        );
        assert_eq!(client(&[" , "], "10.0.0.1"), ip("10.0.0.1"));
    }

    #[test]
    fn framing_is_stated_by_the_gateway_and_path_headers_are_added() {
        // `Connection: content-length` must not strip the framing the gateway relies on.
        let h = rewritten(
            "POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            untrusted(),
            UpstreamHead {
                framing: BodyKind::Length(5),
                drop: &["expect"],
                add: &[],
            },
        );
        assert_eq!(
            h.headers_named("content-length").collect::<Vec<_>>(),
            [b"5"]
        );
        assert_eq!(h.header("expect"), None);
        let h = rewritten(
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nSec-WebSocket-Key: client\r\n\r\n",
            untrusted(),
            UpstreamHead {
                framing: BodyKind::None,
                drop: &["sec-websocket-key"],
                add: &[("Sec-WebSocket-Key", b"fresh"), ("Upgrade", b"websocket")],
            },
        );
        assert_eq!(h.header("content-length"), None);
        assert_eq!(
            h.headers_named("sec-websocket-key").collect::<Vec<_>>(),
            [b"fresh"]
        );
        assert_eq!(h.header_str("upgrade"), Some("websocket"));
    }

    #[test]
    fn claim_headers_replace_the_clients_copies() {
        let strip = ["x-user-id".to_owned(), "x-roles".to_owned()];
        let add = [("x-user-id".to_owned(), "alice".to_owned())];
        let fwd = Forwarding {
            claims: ClaimHeaders {
                strip: &strip,
                add: &add,
            },
            ..untrusted()
        };
        let h = rewritten(
            "GET / HTTP/1.1\r\nHost: h\r\nX-User-Id: admin\r\nx-roles: root\r\nX-Other: 1\r\n\r\n",
            fwd,
            PLAIN,
        );
        assert_eq!(h.headers_named("x-user-id").collect::<Vec<_>>(), [b"alice"]);
        assert_eq!(h.header("x-roles"), None);
        assert_eq!(h.header_str("x-other"), Some("1"));
    }
}
