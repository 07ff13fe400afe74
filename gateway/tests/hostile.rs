//! Hostile input against the real binary (issue 14): request smuggling, header injection, route-prefix bypass by
//! absolute form or encoded paths, slowloris on the head and on the TLS handshake, a client that never reads while
//! its upstream floods, a flood of one-byte frames, 10,000-header requests, and running out of descriptors. The
//! upstreams record what reached them, so each case asserts what the upstream saw (exactly one request, or none),
//! and every case ends with a normal client getting its echo through the same gateway.
//!
//! Related cases elsewhere, kept there: the single-connection smuggling list and chunked bodies in
//! `http_proxy.rs`, bare LF and the trickled body in `probe.rs` (defects of issue 11), EMFILE on the upstream connect
//! in `probe.rs`, the RSS bound of a non-reading client in `limits.rs`, the trickled ClientHello in `tls.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support_http;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    BINARY, Gateway, ScriptedUpstream, TEXT, WsClient, encode, read_frame, read_head, rss_kib,
    status_of,
};
use support_http::{HttpUpstream, Reply, Request, ok_response};

/// The route every case ends on: a WebSocket echo through the relay.
const ECHO_PATH: &str = "/ws";

/// A gateway (one worker, so every client of a test shares it) with the echo route `/ws`, `routes` (path prefix,
/// upstream address; a pool each) before the catch-all `/` to `fallback`, and extra `limits:` lines.
struct Rig {
    gw: Gateway,
    echo: ScriptedUpstream,
}

fn rig(fallback: SocketAddr, routes: &[(&str, SocketAddr)], limits: &[&str]) -> Rig {
    rig_wrapped(fallback, routes, limits, &[])
}

fn rig_wrapped(
    fallback: SocketAddr,
    routes: &[(&str, SocketAddr)],
    limits: &[&str],
    wrapper: &[&str],
) -> Rig {
    let echo = ScriptedUpstream::echo();
    let mut y = String::from("listeners:\n  - name: test\n    bind: 127.0.0.1:0\nlimits:\n");
    if !limits.iter().any(|l| l.starts_with("handshake_timeout")) {
        y.push_str("  handshake_timeout: 1s\n");
    }
    for l in limits {
        y.push_str(&format!("  {l}\n"));
    }
    y.push_str("upstreams:\n");
    let mut pools: Vec<(String, SocketAddr)> = vec![("echo".into(), echo.addr)];
    pools.extend(
        routes
            .iter()
            .enumerate()
            .map(|(i, (_, a))| (format!("p{i}"), *a)),
    );
    pools.push(("fallback".into(), fallback));
    for (name, addr) in &pools {
        y.push_str(&format!(
            "  {name}:\n    connect_timeout: 1s\n    fail_cooldown: 1s\n    servers: [{addr}]\n"
        ));
    }
    y.push_str(&format!(
        "routes:\n  - path: {ECHO_PATH}\n    upstream: echo\n"
    ));
    for (i, (path, _)) in routes.iter().enumerate() {
        y.push_str(&format!("  - path: {path}\n    upstream: p{i}\n"));
    }
    y.push_str("  - path: /\n    upstream: fallback\n");
    let gw = Gateway::start_wrapped(&y, &["--workers", "1"], wrapper);
    Rig { gw, echo }
}

/// A normal client still gets its echo, within `within`; returns the round trip.
fn assert_echo_within(gw: &Gateway, within: Duration) -> Duration {
    let start = Instant::now();
    let mut c = WsClient::connect(gw.addr, ECHO_PATH);
    let msg = format!("still here {:?}", start);
    c.send_text(&msg);
    let f = c.recv_within(within).expect("an echo");
    assert_eq!((f.opcode, f.payload.as_slice()), (TEXT, msg.as_bytes()));
    let took = start.elapsed();
    assert!(took < within, "echo took {took:?}");
    took
}

fn assert_echo(gw: &Gateway) {
    assert_echo_within(gw, Duration::from_secs(5));
}

/// Sends `raw` on a new connection; the status of the answer (0: closed without one) and whether the gateway then
/// closed the connection.
fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A refusal may come (and the socket close) before everything is written.
    let _ = s.write_all(raw);
    let status = read_head(&mut s).map_or(0, |h| status_of(&h));
    (
        status,
        common::stream_eof_within(&mut s, Duration::from_secs(3)),
    )
}

fn show(raw: &[u8]) -> String {
    String::from_utf8_lossy(&raw[..raw.len().min(160)]).into_owned()
}

// ---- Request smuggling ----

#[test]
fn smuggling_variants_get_400_and_the_upstream_sees_no_request() {
    let up = HttpUpstream::echo();
    let r = rig(up.addr, &[], &[]);
    let cases: &[&[u8]] = &[
        // CL.TE and TE.CL, with a smuggled request behind.
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        // Duplicate or malformed Content-Length.
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        // Transfer-Encoding variants other than exactly one `chunked`.
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // obs-fold, hiding Transfer-Encoding in a folded line.
        b"POST / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n\tb\r\n\r\n",
        // Bare LF and bare CR line endings.
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\n",
        b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",
        // Chunk sizes: overflowing, not hex, signed, bare LF.
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
    ];
    for raw in cases {
        let (status, closed) = exchange(r.gw.addr, raw);
        assert_eq!(status, 400, "for {:?}", show(raw));
        assert!(closed, "closed after the 400 for {:?}", show(raw));
    }
    std::thread::sleep(Duration::from_millis(200));
    let seen = up.requests();
    assert!(
        seen.is_empty(),
        "the upstream saw {} requests: {:?}",
        seen.len(),
        seen.iter().map(|r| &r.head).collect::<Vec<_>>()
    );

    // What is allowed is forwarded as exactly one request with the gateway's own framing.
    let mut c = support_http::Client::connect(r.gw.addr);
    let res = c.request(
        b"POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(
        (res.status, res.body.as_slice()),
        (200, b"hello".as_slice())
    );
    let res = c.request(
        b"POST /two HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n\
          GET /three HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_eq!(
        (res.status, res.body.as_slice()),
        (200, b"hello".as_slice())
    );
    assert_eq!(c.response(false).status, 200, "the pipelined request");
    let seen = up.requests();
    let summary: Vec<(String, Vec<String>, Vec<u8>)> = seen
        .iter()
        .map(|r: &Request| {
            let framing = ["content-length", "transfer-encoding"]
                .iter()
                .flat_map(|n| r.headers(n).into_iter().map(move |v| format!("{n}: {v}")))
                .collect();
            (r.target().to_owned(), framing, r.body.clone())
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "/one".into(),
                vec!["content-length: 5".to_owned()],
                b"hello".to_vec()
            ),
            (
                "/two".into(),
                vec!["transfer-encoding: chunked".to_owned()],
                b"hello".to_vec()
            ),
            ("/three".into(), vec![], vec![]),
        ]
    );
    assert!(
        seen.iter().all(|r| r.header("x-trailer").is_none()),
        "trailers are not turned into headers"
    );
    drop(c);

    // A huge chunk size that fits 64 bits is streamed, never buffered, and never completes a request.
    let mut s = TcpStream::connect(r.gw.addr).unwrap();
    s.write_all(
        b"POST /huge HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
    )
    .unwrap();
    s.write_all(&[b'x'; 4096]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        up.requests().len(),
        3,
        "no complete request from the huge chunk"
    );
    assert_echo(&r.gw);
}

// ---- Header injection ----

#[test]
fn control_characters_in_header_names_or_values_are_400_and_nothing_is_injected() {
    let up = HttpUpstream::echo();
    let r = rig(up.addr, &[], &[]);
    let injections: &[&[u8]] = &[
        b"X-A: a\rX-Injected: 1\r\n",
        b"X-A: a\nX-Injected: 1\r\n",
        b"X-A: a\r\r\nX-Injected: 1\r\n",
        b"X-A: a\0X-Injected: 1\r\n",
        b"X-A: a\x7fb\r\nX-Injected: 1\r\n",
        b"X\0A: a\r\nX-Injected: 1\r\n",
        b"X\rA: a\r\nX-Injected: 1\r\n",
        b"X A: a\r\nX-Injected: 1\r\n",
        b"X-A : a\r\nX-Injected: 1\r\n",
        b": a\r\nX-Injected: 1\r\n",
        b"X-A\r\nX-Injected: 1\r\n",
        b"X-Injected\xc3\xa9: 1\r\n",
    ];
    let ws_upgrade = |extra: &[u8]| {
        let mut raw = format!(
            "GET {ECHO_PATH} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
            common::CLIENT_KEY
        )
        .into_bytes();
        raw.extend_from_slice(extra);
        raw.extend_from_slice(b"\r\n");
        raw
    };
    for extra in injections {
        let mut plain = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        plain.extend_from_slice(extra);
        plain.extend_from_slice(b"\r\n");
        for raw in [plain, ws_upgrade(extra)] {
            let (status, closed) = exchange(r.gw.addr, &raw);
            assert_eq!(status, 400, "for {:?}", show(&raw));
            assert!(closed, "for {:?}", show(&raw));
        }
    }
    // Encoded CR LF in the target is not decoded into the head the upstream gets: refused.
    let (status, _) = exchange(
        r.gw.addr,
        b"GET /a%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_eq!(status, 400);
    std::thread::sleep(Duration::from_millis(200));
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    assert!(
        r.echo.received().is_empty(),
        "the WebSocket upstream saw {:?}",
        r.echo.received()
    );
    // Characters a value may hold (tab, obs-text) pass as they are, and inject nothing.
    let (status, _) = exchange(
        r.gw.addr,
        b"GET /ok HTTP/1.1\r\nHost: h\r\nX-A: a\tb \xe9\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen.iter().all(|r| r.header("x-injected").is_none()));
    assert_echo(&r.gw);
}

// ---- Route prefixes: absolute form and encoded paths ----

fn named(name: &'static str) -> HttpUpstream {
    HttpUpstream::start(Arc::new(move |r: &Request| {
        let mut body = name.as_bytes().to_vec();
        body.push(b' ');
        body.extend_from_slice(r.target().as_bytes());
        Reply::Raw(ok_response(&body))
    }))
}

/// Regression (issue 14): routes matched the raw target, so `/public/../admin`, `/%61dmin` or `//admin` reached
/// the catch-all route's upstream, which resolves them to `/admin`.
#[test]
fn absolute_form_and_encoded_paths_do_not_bypass_route_prefixes() {
    let public = named("public");
    let admin = named("admin");
    let r = rig(public.addr, &[("/admin", admin.addr)], &[]);
    let answer = |target: &str| {
        let mut c = TcpStream::connect(r.gw.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            c,
            "GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        let status = status_of(&out);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    };
    // Routed on the path any server reads, forwarded as the client wrote it.
    for (target, body) in [
        ("/admin/x", "admin /admin/x"),
        ("http://other/admin", "admin /admin"),
        ("HTTP://other/admin/x?y=1", "admin /admin/x?y=1"),
        ("/%61dmin", "admin /%61dmin"),
        ("/%41dmin", "public /%41dmin"),
        ("//admin", "admin //admin"),
        ("///admin/x", "admin ///admin/x"),
        ("http://other//%61dmin", "admin //%61dmin"),
        (
            "/public/x?next=/../admin",
            "public /public/x?next=/../admin",
        ),
    ] {
        assert_eq!(answer(target), (200, body.to_owned()), "for {target}");
    }
    // Spellings servers resolve differently are refused.
    for target in [
        "/public/../admin",
        "/./admin",
        "/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2e/admin",
        "/public/..;/admin",
        "/public%2F..%2Fadmin",
        "/public%2fadmin",
        "/public%5c..%5cadmin",
        "/public\\..\\admin",
        "/admin%00",
        "/a%zz",
        "http://other/public/../admin",
        "\\admin",
    ] {
        let (status, _) = answer(target);
        assert_eq!(status, 400, "for {target}");
    }
    // The WebSocket path routes the same way.
    let up = common::upgrade_request("/public/%2e%2e/ws", "h", "");
    assert_eq!(exchange(r.gw.addr, up.as_bytes()).0, 400);
    let up = common::upgrade_request("/%77s", "h", "");
    assert_eq!(exchange(r.gw.addr, up.as_bytes()).0, 101);
    let seen: Vec<String> = public
        .requests()
        .iter()
        .map(|r| r.target().to_owned())
        .collect();
    assert_eq!(
        seen,
        ["/%41dmin", "/public/x?next=/../admin"],
        "what reached the catch-all route's upstream"
    );
    assert_echo(&r.gw);
}

// ---- Slowloris ----

/// Trickles `prefix` then one byte every `every` on a new connection; when the gateway closed it (or gave up
/// waiting at `limit`).
fn trickle(addr: SocketAddr, prefix: &[u8], every: Duration, limit: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(every)).unwrap();
    let start = Instant::now();
    if s.write_all(prefix).is_err() {
        return Some(start.elapsed());
    }
    while start.elapsed() < limit {
        if s.write_all(b"a").is_err() {
            return Some(start.elapsed());
        }
        let mut b = [0u8; 512];
        match s.read(&mut b) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {} // the 408; the close follows
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn slowloris_heads_are_cut_at_the_handshake_timeout_while_others_are_served() {
    let up = HttpUpstream::echo();
    let r = rig(up.addr, &[], &["handshake_timeout: 1s"]);
    let addr = r.gw.addr;
    let prefixes: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ",
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nX-",
        b"G",
    ];
    let lorises: Vec<_> = (0..30)
        .map(|i| {
            let prefix = prefixes[i % prefixes.len()];
            std::thread::spawn(move || {
                trickle(
                    addr,
                    prefix,
                    Duration::from_millis(100),
                    Duration::from_secs(6),
                )
            })
        })
        .collect();
    // Meanwhile the worker answers others promptly.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        slowest = slowest.max(assert_echo_within(&r.gw, Duration::from_secs(2)));
        std::thread::sleep(Duration::from_millis(100));
    }
    for l in lorises {
        let closed = l.join().unwrap().expect("a trickling head was never cut");
        assert!(
            closed >= Duration::from_millis(900) && closed < Duration::from_secs(3),
            "cut after {closed:?} (handshake_timeout 1s: the deadline is for the whole head, not per byte)"
        );
    }
    assert!(up.requests().is_empty());
    assert!(slowest < Duration::from_secs(2), "echo took {slowest:?}");
    assert_echo(&r.gw);
}

mod tls {
    use std::sync::Arc;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    /// A CA and a `localhost` leaf made for one test: (leaf cert PEM, leaf key PEM, client config trusting the CA).
    pub fn localhost() -> (String, String, Arc<ClientConfig>) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "hostile CA");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let ca = p.self_signed(&ca_key).unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = p.signed_by(&key, &ca, &ca_key).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut c = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        (leaf.pem(), key.serialize_pem(), Arc::new(c))
    }

    pub fn client(config: &Arc<ClientConfig>) -> ClientConnection {
        ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap()
    }
}

#[test]
fn slowloris_on_the_tls_handshake_is_cut_at_the_handshake_timeout_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, client_config) = tls::localhost();
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let echo = ScriptedUpstream::echo();
    let gw = Gateway::start_with(
        &format!(
            "listeners:\n  - name: tls\n    bind: 127.0.0.1:0\n    tls:\n      certificates:\n\
             \x20       - cert: {}\n          key: {}\nlimits:\n  handshake_timeout: 2s\n\
             upstreams:\n  echo:\n    servers: [{}]\nroutes:\n  - path: /\n    upstream: echo\n",
            cert_path.display(),
            key_path.display(),
            echo.addr
        ),
        &["--workers", "1"],
    );
    let mut hello = Vec::new();
    tls::client(&client_config).write_tls(&mut hello).unwrap();
    // Half a ClientHello, then nothing, on several connections.
    let stalled: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr).unwrap();
            s.write_all(&hello[..hello.len() / 2]).unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    // A full client meanwhile: handshake, upgrade, echo.
    let wss_echo = || {
        let began = Instant::now();
        let tcp = TcpStream::connect(gw.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tls = rustls::StreamOwned::new(tls::client(&client_config), tcp);
        tls.write_all(common::upgrade_request("/", "localhost", "").as_bytes())
            .unwrap();
        let head = read_head(&mut tls).expect("a 101 over TLS");
        assert_eq!(status_of(&head), 101, "{head}");
        tls.write_all(&encode(true, false, TEXT, b"tls echo", Some([9, 8, 7, 6])))
            .unwrap();
        let f = read_frame(&mut tls).expect("an echo over TLS");
        assert_eq!(f.payload, b"tls echo");
        began.elapsed()
    };
    let took = wss_echo();
    assert!(took < Duration::from_secs(2), "wss echo took {took:?}");
    for mut s in stalled {
        let left = Duration::from_secs(4).saturating_sub(start.elapsed());
        assert!(
            common::stream_eof_within(&mut s, left),
            "a stalled ClientHello was still open after {:?}",
            start.elapsed()
        );
    }
    let closed = start.elapsed();
    assert!(
        closed >= Duration::from_millis(1800),
        "closed after {closed:?}, before the 2s handshake_timeout"
    );
    wss_echo();
    drop(gw);
}

// ---- Clients that never read ----

#[test]
fn a_client_that_never_reads_while_the_upstream_floods_bounds_memory_and_others_are_served() {
    // HTTP: the upstream answers with 128 MiB; WebSocket: the upstream pushes 1 MiB frames without end.
    let big = Arc::new(ok_response(&vec![b'z'; 128 << 20]));
    let http = HttpUpstream::start(Arc::new(move |_: &Request| Reply::Raw(big.to_vec())));
    let (flood, rx) = ScriptedUpstream::handoff("");
    let r = rig(http.addr, &[("/flood", flood.addr)], &[]);
    let before = rss_kib(r.gw.pid());

    let mut http_client = TcpStream::connect(r.gw.addr).unwrap();
    http_client
        .write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let _ws_client = WsClient::connect(r.gw.addr, "/flood");
    let mut up = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("upstream leg");
    let pushed = Arc::new(AtomicU64::new(0));
    let pushed2 = pushed.clone();
    let pusher = std::thread::spawn(move || {
        up.stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let frame = encode(true, false, BINARY, &vec![7u8; 1 << 20], None);
        for _ in 0..256 {
            if up.stream.write_all(&frame).is_err() {
                break;
            }
            pushed2.fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
    });
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        slowest = slowest.max(assert_echo_within(&r.gw, Duration::from_secs(2)));
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = rss_kib(r.gw.pid());
    let pushed = pushed.load(Ordering::Relaxed);
    assert!(
        pushed < 64 << 20,
        "the WebSocket upstream pushed {pushed} bytes: nothing held it back"
    );
    assert!(
        after < before + 16 * 1024,
        "gateway RSS grew from {before} KiB to {after} KiB"
    );
    assert!(slowest < Duration::from_secs(2), "echo took {slowest:?}");
    assert_echo(&r.gw);
    drop(http_client);
    drop(r);
    pusher.join().unwrap();
}

// ---- A flood of tiny frames ----

/// Frames `k * BURST ..` of a flood: one byte each, the frame's number mod 256.
const BURST: usize = 10_000;

fn burst(k: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
    (k * BURST..(k + 1) * BURST)
        .flat_map(|n| encode(true, false, BINARY, &[n as u8], mask))
        .collect()
}

/// Reads up to `n` one-byte frames of a flood: how many arrived, and how many were not the next in order.
fn count_in_order(mut reader: impl std::io::BufRead, n: usize) -> (usize, usize) {
    let (mut got, mut bad) = (0usize, 0usize);
    while got < n {
        let Some(f) = read_frame(&mut reader) else {
            break;
        };
        if f.payload != [got as u8] {
            bad += 1;
        }
        got += 1;
    }
    (got, bad)
}

#[test]
fn a_million_one_byte_frames_each_way_do_not_starve_other_clients() {
    const N: usize = 1_000_000;
    let (up, rx) = ScriptedUpstream::handoff("");
    let fallback = HttpUpstream::echo();
    let r = rig(fallback.addr, &[("/flood", up.addr)], &[]);
    let client = WsClient::connect(r.gw.addr, "/flood");
    let upstream = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("upstream leg");
    let done = Arc::new(AtomicBool::new(false));

    // Upstream: reads the client's frames and pushes its own, both as fast as it can.
    let mut up_write = upstream.stream.try_clone().unwrap();
    let up_push = std::thread::spawn(move || {
        for k in 0..N / BURST {
            up_write.write_all(&burst(k, None)).unwrap();
        }
    });
    let up_read = std::thread::spawn(move || {
        count_in_order(BufReader::with_capacity(1 << 16, upstream.stream), N)
    });
    let mut client_write = client.stream.try_clone().unwrap();
    let client_push = std::thread::spawn(move || {
        for k in 0..N / BURST {
            client_write
                .write_all(&burst(k, Some([1, 2, 3, 4])))
                .unwrap();
        }
    });
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let client_stream = client.stream.try_clone().unwrap();
    let client_read = std::thread::spawn(move || {
        count_in_order(BufReader::with_capacity(1 << 16, client_stream), N)
    });
    let started = Instant::now();
    let watcher_done = done.clone();
    let gw_addr = r.gw.addr;
    // Echo round trips for another client while the flood runs.
    let prober = std::thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        let mut probes = 0;
        while !watcher_done.load(Ordering::Relaxed) {
            let start = Instant::now();
            let mut c = WsClient::connect(gw_addr, ECHO_PATH);
            c.send_text("probe");
            let f = c
                .recv_within(Duration::from_secs(5))
                .expect("an echo during the flood");
            assert_eq!(f.payload, b"probe");
            slowest = slowest.max(start.elapsed());
            probes += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        (probes, slowest)
    });
    let (to_upstream, bad_up) = up_read.join().unwrap();
    let (to_client, bad_client) = client_read.join().unwrap();
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    up_push.join().unwrap();
    client_push.join().unwrap();
    let (probes, slowest) = prober.join().unwrap();
    assert_eq!((to_upstream, bad_up), (N, 0), "client to upstream");
    assert_eq!((to_client, bad_client), (N, 0), "upstream to client");
    assert!(took < Duration::from_secs(60), "the flood took {took:?}");
    assert!(probes >= 1);
    assert!(
        slowest < Duration::from_secs(2),
        "{probes} echoes during the flood ({took:?}); the slowest took {slowest:?}"
    );
    assert_echo(&r.gw);
}

// ---- 10,000 headers ----

#[test]
fn ten_thousand_header_requests_are_431_at_once_on_both_paths() {
    let up = HttpUpstream::echo();
    let r = rig(up.addr, &[], &[]);
    let header_lines = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    let headers = header_lines(10_000);
    let tiny: String = (0..10_000).map(|_| "a:b\r\n").collect();
    for raw in [
        format!("GET / HTTP/1.1\r\nHost: h\r\n{headers}\r\n"),
        common::upgrade_request(ECHO_PATH, "h", &headers),
        format!("GET / HTTP/1.1\r\nHost: h\r\n{tiny}\r\n"),
    ] {
        let start = Instant::now();
        let (status, closed) = exchange(r.gw.addr, raw.as_bytes());
        assert_eq!(status, 431, "{}", show(raw.as_bytes()));
        assert!(closed);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    // 10,000 lines within the limits the operator raised (the most allowed): served.
    drop(r);
    let r = rig(
        up.addr,
        &[],
        &["max_headers: 10000", "max_header_bytes: 256KiB"],
    );
    let start = Instant::now();
    let headers = header_lines(9_998);
    let (status, _) = exchange(
        r.gw.addr,
        format!("GET /many HTTP/1.1\r\nHost: h\r\nConnection: close\r\n{headers}\r\n").as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "only the request within the limits");
    assert_eq!(seen[0].head.matches("X-H").count(), 9_998);
    assert_echo(&r.gw);
}

// ---- Out of descriptors ----

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// utime + stime of the whole process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat; the list here starts at field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_the_worker_backs_off_logs_rarely_and_serves_again() {
    const LIMIT: usize = 64;
    let up = HttpUpstream::echo();
    let r = rig_wrapped(
        up.addr,
        &[],
        &["handshake_timeout: 60s"],
        &["prlimit", &format!("--nofile={LIMIT}:{LIMIT}"), "--"],
    );
    let pid = r.gw.pid();
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) < LIMIT {
        assert!(
            Instant::now() < deadline,
            "could not fill the descriptor table"
        );
        held.push(TcpStream::connect(r.gw.addr).unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
    // These wait in the backlog while accept fails with EMFILE.
    let mut waiting: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(r.gw.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu_ticks(pid) - t0;
    assert!(
        ticks <= 5,
        "the gateway used {ticks} ticks of CPU in 1 s while out of descriptors (a busy loop?)"
    );
    std::thread::sleep(Duration::from_millis(1500));
    // Descriptors free up: the waiting clients are served, and new ones too.
    // (They upgrade once the held descriptors are closed: one sent earlier could be accepted by the first free
    // descriptor and find none left for its upstream connect, a 503.)
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds(pid) > LIMIT / 2 {
        assert!(Instant::now() < deadline, "descriptors not released");
        std::thread::sleep(Duration::from_millis(10));
    }
    for s in &mut waiting {
        s.write_all(common::upgrade_request(ECHO_PATH, "h", "").as_bytes())
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = read_head(s).unwrap_or_default();
        assert_eq!(status_of(&head), 101, "a client from the backlog: {head:?}");
        s.write_all(&encode(
            true,
            false,
            TEXT,
            b"from the backlog",
            Some([1, 2, 3, 4]),
        ))
        .unwrap();
        assert_eq!(read_frame(s).expect("echo").payload, b"from the backlog");
    }
    assert_echo(&r.gw);
    drop(waiting);
    let log = r.gw.stop();
    let lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(
        (1..=2).contains(&lines),
        "about 4 s out of descriptors: logged once (then once per 10 s), not per attempt: {lines} lines\n{log}"
    );
    assert!(log.contains("Too many open files"), "{log}");
}
