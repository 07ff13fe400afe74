//! `proxy_protocol: true` listeners against the real binary: v1 and v2 headers in front of a WebSocket upgrade, a
//! plain HTTP request and a TLS handshake (the upstream sees the header's source in `X-Forwarded-For`), a header
//! split across writes with the request in the same segment, LOCAL, malformed headers and connections without one
//! refused and logged, a silent connection timed out, and a proper client served after every refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support_http;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Gateway, ScriptedUpstream, TEXT, encode, header_of, read_frame, read_head, status_of,
    upgrade_request,
};
use ringway::proxy_protocol::encode as pp;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use support_http::{HttpUpstream, Reply, Request, ok_response};

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A v1 header from `client` to the gateway's 127.0.0.1:443.
fn v1_from(client: &str) -> Vec<u8> {
    pp::v1(Some((sa(client), sa("127.0.0.1:443"))))
}

/// A v2 header from `client`, with an AWS-style TLV after the addresses.
fn v2_from(client: &str) -> Vec<u8> {
    pp::v2(
        Some((sa(client), sa("[::1]:443"))),
        &[(0xEA, b"\x01vpce-0abc")],
    )
}

/// The gateway with one PROXY-protocol listener: `/ws` to a WebSocket upstream, `/http` to an HTTP one, `/` echo.
fn yaml(ws: SocketAddr, http: SocketAddr, listener_extra: &str) -> String {
    format!(
        "workers: 1\nlisteners:\n  - name: lb\n    bind: 127.0.0.1:0\n    proxy_protocol: true\n{listener_extra}\
         limits:\n  handshake_timeout: 2s\n  proxy_protocol_timeout: 1s\n\
         upstreams:\n  ws:\n    servers: [{ws}]\n  http:\n    servers: [{http}]\n\
         routes:\n  - path: /ws\n    upstream: ws\n  - path: /http\n    upstream: http\n  - path: /\n    echo: true\n"
    )
}

fn connect(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp
}

/// Upgrades to `path` on `stream` and checks one text message comes back.
fn upgrade_and_echo(stream: &mut (impl Read + Write), path: &str, first: &[u8]) {
    let mut out = first.to_vec();
    out.extend_from_slice(upgrade_request(path, "gw.test", "").as_bytes());
    stream.write_all(&out).unwrap();
    let head = read_head(stream).expect("an answer to the upgrade");
    assert_eq!(status_of(&head), 101, "{head}");
    stream
        .write_all(&encode(true, false, TEXT, b"hello", Some([9, 8, 7, 6])))
        .unwrap();
    let frame = read_frame(stream).expect("the echo");
    assert_eq!(frame.payload, b"hello");
}

/// A client with a good header still gets the built-in echo.
fn still_served(addr: SocketAddr) {
    upgrade_and_echo(&mut connect(addr), "/", &v1_from("192.0.2.200:1000"));
}

/// What the HTTP upstream's request said about the client.
fn forwarded_for(r: &Request) -> (String, String) {
    (
        r.header("x-forwarded-for").unwrap_or("").to_owned(),
        r.header("forwarded").unwrap_or("").to_owned(),
    )
}

fn http_upstream() -> HttpUpstream {
    HttpUpstream::start(Arc::new(|_: &Request| Reply::Raw(ok_response(b"ok"))))
}

#[test]
fn v1_and_v2_headers_name_the_client_for_websockets_and_plain_http() {
    let ws = ScriptedUpstream::echo();
    let http = http_upstream();
    let gw = Gateway::start(&yaml(ws.addr, http.addr, ""));
    let cases = [
        (
            v1_from("203.0.113.7:4711"),
            "203.0.113.7",
            "for=203.0.113.7",
        ),
        (
            v2_from("198.51.100.9:50000"),
            "198.51.100.9",
            "for=198.51.100.9",
        ),
        (
            v2_from("[2001:db8::7]:50000"),
            "2001:db8::7",
            "for=\"[2001:db8::7]\"",
        ),
        // LOCAL (the balancer's own health check) and UNKNOWN: the TCP peer stands.
        (pp::v2(None, &[]), "127.0.0.1", "for=127.0.0.1"),
        (pp::v1(None), "127.0.0.1", "for=127.0.0.1"),
    ];
    for (i, (header, xff, forwarded)) in cases.iter().enumerate() {
        // WebSocket: header and upgrade in one write.
        upgrade_and_echo(&mut connect(gw.addr), "/ws", header);
        let seen = ws.received();
        let head = seen.last().expect("the upstream saw the upgrade");
        assert_eq!(header_of(head, "x-forwarded-for"), Some(*xff), "{head}");
        assert_eq!(header_of(head, "x-real-ip"), Some(*xff), "{head}");

        // Plain HTTP: the header in a write of its own, then two requests on the connection.
        let mut c = support_http::Client::connect(gw.addr);
        c.send(header);
        for _ in 0..2 {
            let res = c.request(
                b"GET /http HTTP/1.1\r\nHost: gw.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
            );
            assert_eq!(res.status, 200);
        }
        let reqs = http.requests();
        assert_eq!(reqs.len(), 2 * (i + 1));
        let (got_xff, got_fwd) = forwarded_for(reqs.last().unwrap());
        assert_eq!(got_xff, *xff);
        assert!(got_fwd.starts_with(forwarded), "{got_fwd}");
    }
}

#[test]
fn a_header_split_across_writes_is_reassembled_and_the_bytes_behind_it_kept() {
    let ws = ScriptedUpstream::echo();
    let http = http_upstream();
    let gw = Gateway::start(&yaml(ws.addr, http.addr, ""));
    for header in [v1_from("203.0.113.8:1"), v2_from("[2001:db8::8]:2")] {
        let mut tcp = connect(gw.addr);
        let (a, rest) = header.split_at(3);
        let (b, c) = rest.split_at(rest.len() - 2);
        for piece in [a, b] {
            tcp.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(60));
        }
        // The header's last bytes, the upgrade and a first frame in one segment.
        let mut last = c.to_vec();
        last.extend_from_slice(upgrade_request("/ws", "gw.test", "").as_bytes());
        last.extend_from_slice(&encode(true, false, TEXT, b"early", Some([1, 2, 3, 4])));
        tcp.write_all(&last).unwrap();
        let head = read_head(&mut tcp).expect("101");
        assert_eq!(status_of(&head), 101, "{head}");
        assert_eq!(read_frame(&mut tcp).expect("echo").payload, b"early");
    }
    let xffs: Vec<String> = ws
        .received()
        .iter()
        .map(|h| header_of(h, "x-forwarded-for").unwrap_or("").to_owned())
        .collect();
    assert_eq!(xffs, ["203.0.113.8", "2001:db8::8"]);
}

#[test]
fn a_tls_listener_reads_a_v2_header_before_the_client_hello() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let ws = ScriptedUpstream::echo();
    let http = http_upstream();
    let tls = format!(
        "    tls:\n      certificates:\n        - cert: {}\n          key: {}\n",
        cert_path.display(),
        key_path.display()
    );
    let gw = Gateway::start(&yaml(ws.addr, http.addr, &tls));

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);

    for same_segment in [true, false] {
        let mut tcp = connect(gw.addr);
        let mut conn =
            ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap())
                .unwrap();
        let mut first = v2_from("[2001:db8::9]:443");
        if same_segment {
            // The ClientHello right behind the header: the gateway must hand it to the handshake.
            conn.write_tls(&mut first).unwrap();
        }
        tcp.write_all(&first).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("handshake");
        }
        upgrade_and_echo(&mut tls, "/ws", b"");
        let head = ws.received().pop().unwrap();
        assert_eq!(header_of(&head, "x-forwarded-for"), Some("2001:db8::9"));
        assert_eq!(header_of(&head, "x-forwarded-proto"), Some("https"));
    }
}

/// Sends `bytes`; the gateway must close without writing anything.
fn refused_silently(addr: SocketAddr, bytes: &[u8]) {
    let mut tcp = connect(addr);
    tcp.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "answered {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn malformed_headers_and_connections_without_one_are_refused_and_logged() {
    let ws = ScriptedUpstream::echo();
    let http = http_upstream();
    let gw = Gateway::start_logged(&yaml(ws.addr, http.addr, ""), "info");
    let mut too_long = ringway::proxy_protocol::V2_SIGNATURE.to_vec();
    too_long.extend_from_slice(&[0x21, 0x11, 0x20, 0x00]);
    too_long.extend_from_slice(&[0; 64]);
    let bad: [(&[u8], &str); 6] = [
        (
            b"GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n",
            "no PROXY protocol header",
        ),
        (b"\x16\x03\x01\x00\xa5\x01", "no PROXY protocol header"),
        (
            b"PROXY TCP4 203.0.113.7 127.0.0.1 4711 443\n",
            "PROXY v1 line does not end with CRLF",
        ),
        (
            b"PROXY TCP4 203.0.113.777 127.0.0.1 4711 443\r\n",
            "PROXY v1 address is invalid for its protocol",
        ),
        (&too_long, "PROXY v2 header longer than 4096 bytes"),
        (
            b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c",
            "PROXY v2 version is not 2",
        ),
    ];
    for (bytes, _) in &bad {
        refused_silently(gw.addr, bytes);
        still_served(gw.addr);
    }
    // 200 bytes of a v1 line without CRLF.
    let mut endless = b"PROXY UNKNOWN ".to_vec();
    endless.resize(200, b'a');
    refused_silently(gw.addr, &endless);
    still_served(gw.addr);
    assert!(ws.received().is_empty() && http.requests().is_empty());
    let log = gw.stop();
    for (_, reason) in &bad {
        assert!(
            log.contains(&format!("reason={reason}")),
            "no `{reason}` in:\n{log}"
        );
    }
    assert!(log.contains("PROXY v1 line longer than 107 bytes"), "{log}");
    let refusals = log
        .lines()
        .filter(|l| {
            l.contains("refused: bad PROXY protocol header") && l.contains("peer=127.0.0.1:")
        })
        .count();
    assert_eq!(refusals, bad.len() + 1, "{log}");
}

#[test]
fn a_connection_that_sends_no_header_in_time_is_closed() {
    let ws = ScriptedUpstream::echo();
    let http = http_upstream();
    let gw = Gateway::start_logged(&yaml(ws.addr, http.addr, ""), "info");
    for first in [&b""[..], b"PROXY TCP4 203.0.113.7"] {
        let mut tcp = connect(gw.addr);
        tcp.write_all(first).unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got);
        let closed_at = start.elapsed();
        assert!(
            got.is_empty(),
            "answered {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            closed_at >= Duration::from_millis(800) && closed_at < Duration::from_secs(3),
            "closed after {closed_at:?} (proxy_protocol_timeout is 1s)"
        );
        still_served(gw.addr);
    }
    let log = gw.stop();
    assert_eq!(
        log.matches("no complete PROXY protocol header within proxy_protocol_timeout")
            .count(),
        2,
        "{log}"
    );
}
