//! Plain HTTP proxying through the real `ringway` binary: bodies both ways (Content-Length, chunked, close-delimited),
//! keep-alive on both hops, head rewriting, smuggling defenses and the 502 / 503 / 504 paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support_http;

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Gateway;
use support_http::*;

fn gateway(servers: &[String], extra: &str) -> Gateway {
    Gateway::start_with(&config(servers, extra, "1s"), &["--workers", "1"])
}

fn one(upstream: &HttpUpstream) -> Vec<String> {
    vec![upstream.addr.to_string()]
}

#[test]
fn keep_alive_on_both_hops_with_forwarded_headers() {
    let up = HttpUpstream::start(Arc::new(|r: &Request| {
        Reply::Raw(ok_response(r.target().as_bytes()))
    }));
    let gw = gateway(&one(&up), "");
    let mut c = Client::connect(gw.addr);
    for i in 0..3 {
        let req = format!(
            "GET /item/{i} HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
        );
        let res = c.request(req.as_bytes());
        assert_eq!(res.status, 200);
        assert_eq!(res.body, format!("/item/{i}").as_bytes());
        assert_eq!(
            res.header("connection"),
            None,
            "HTTP/1.1 keep-alive needs no Connection header"
        );
    }
    let reqs = up.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter().all(|r| r.conn == 0),
        "the upstream connection is reused: {:?}",
        reqs.iter().map(|r| r.conn)
    );
    assert_eq!(up.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    let r = &reqs[0];
    assert_eq!(r.header("host"), Some("shop.example"));
    assert_eq!(
        r.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "an untrusted client's X-Forwarded-For is replaced"
    );
    assert_eq!(r.headers("x-forwarded-for").len(), 1);
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("x-forwarded-host"), Some("shop.example"));
    assert!(r.head.starts_with("GET /item/0 HTTP/1.1\r\n"), "{}", r.head);
}

#[test]
fn hop_by_hop_headers_are_stripped_both_ways() {
    let up = HttpUpstream::start(Arc::new(|_: &Request| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Upstream-Hop\r\nX-Upstream-Hop: 1\r\n\
              Keep-Alive: timeout=5\r\nX-End: yes\r\n\r\nok"
                .to_vec(),
        )
    }));
    let gw = gateway(&one(&up), "");
    let mut c = Client::connect(gw.addr);
    let res = c.request(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=9\r\n\
          Proxy-Authorization: Basic eA==\r\nTE: trailers\r\nX-Forwarded-Proto: https\r\nX-Kept: k\r\n\r\n",
    );
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"ok");
    let r = &up.requests()[0];
    for name in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "te",
    ] {
        assert_eq!(
            r.header(name),
            None,
            "{name} must not reach the upstream:\n{}",
            r.head
        );
    }
    assert_eq!(r.header("x-kept"), Some("k"));
    assert_eq!(
        r.headers("x-forwarded-proto"),
        vec!["http"],
        "the gateway states the protocol itself"
    );
    for name in ["x-upstream-hop", "keep-alive", "connection"] {
        assert_eq!(
            res.header(name),
            None,
            "{name} must not reach the client:\n{}",
            res.head
        );
    }
    assert_eq!(res.header("x-end"), Some("yes"));
}

#[test]
fn content_length_bodies_both_ways() {
    let up = HttpUpstream::echo();
    let gw = gateway(&one(&up), "");
    let mut c = Client::connect(gw.addr);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    // Head and the first part together, the rest in pieces.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut first = head.into_bytes();
    first.extend_from_slice(&body[..1000]);
    c.send(&first);
    for piece in body[1000..].chunks(70_000) {
        std::thread::sleep(Duration::from_millis(10));
        c.send(piece);
    }
    let res = c.response(false);
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len(), body.len());
    assert!(res.body == body, "echoed body differs");
    let r = &up.requests()[0];
    assert_eq!(r.header("content-length"), Some("300000"));
    // The connection still works afterwards.
    let res = c.request(b"POST /again HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(res.body, b"abc");
}

#[test]
fn chunked_bodies_both_ways_and_dechunked_for_http10() {
    let up = HttpUpstream::start(Arc::new(|r: &Request| {
        Reply::Raw(chunked_response(&r.body, 1000))
    }));
    let gw = gateway(&one(&up), "");
    let body: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut c = Client::connect(gw.addr);
    let mut req = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&body, 7_000));
    // Send in odd-sized pieces so chunk framing is split across reads.
    for piece in req.chunks(4_099) {
        c.send(piece);
    }
    let res = c.response(false);
    assert_eq!(res.status, 200);
    assert!(
        res.chunked,
        "HTTP/1.1 client gets the chunked body re-encoded:\n{}",
        res.head
    );
    assert!(res.body == body, "chunked response body differs");
    let r = &up.requests()[0];
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert!(r.body == body, "upstream got a different body");
    assert!(
        !String::from_utf8_lossy(&r.raw_body).contains("name=value"),
        "chunk extensions are dropped"
    );
    // Keep-alive still works after a chunked exchange.
    let mut req = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(b"second", 4));
    let res = c.request(&req);
    assert_eq!(res.body, b"second");

    // An HTTP/1.0 client cannot take chunked coding: it gets the data close-delimited.
    let mut c = Client::connect(gw.addr);
    let res = c.request(b"POST /c HTTP/1.0\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(res.status, 200);
    assert!(!res.chunked);
    assert_eq!(res.body, b"hello");
    assert_eq!(res.header("connection"), Some("close"));
}

#[test]
fn close_delimited_response_closes_the_client_connection() {
    let up = HttpUpstream::start(Arc::new(|_: &Request| {
        Reply::RawThenClose(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(),
        )
    }));
    let gw = gateway(&one(&up), "");
    let mut c = Client::connect(gw.addr);
    let res = c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(res.body, b"until the end");
}

#[test]
fn pipelined_requests_and_head_and_http10_keep_alive() {
    let up = HttpUpstream::start(Arc::new(|r: &Request| {
        Reply::Raw(ok_response(r.target().as_bytes()))
    }));
    let gw = gateway(&one(&up), "");
    let mut c = Client::connect(gw.addr);
    c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response(false).body, b"/a");
    let head = c.response(true);
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("2")),
        "HEAD keeps its Content-Length"
    );
    assert_eq!(c.response(false).body, b"/c");

    let mut c = Client::connect(gw.addr);
    let res = c.request(b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(res.header("connection"), Some("keep-alive"));
    let res = c.request(b"GET /ka2 HTTP/1.0\r\n\r\n");
    assert_eq!(res.body, b"/ka2");
    assert_eq!(res.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(3)));
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let up = HttpUpstream::echo();
    let gw = gateway(&one(&up), "");
    let mut c = Client::connect(gw.addr);
    c.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    let interim = c.response(false);
    assert_eq!(interim.status, 100);
    c.send(b"data");
    let res = c.response(false);
    assert_eq!((res.status, res.body.as_slice()), (200, b"data".as_slice()));
    assert_eq!(up.requests()[0].header("expect"), None);
}

/// Sends a raw request on a new connection; returns the response status and whether the gateway then closed.
fn status_and_close(gw: &Gateway, raw: &[u8]) -> (u16, bool) {
    let mut c = Client::connect(gw.addr);
    let res = c.request(raw);
    (res.status, c.closed_within(Duration::from_secs(3)))
}

#[test]
fn smuggling_attempts_get_400_and_never_reach_the_upstream_as_sent() {
    let up = HttpUpstream::echo();
    let gw = gateway(&one(&up), "");
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n",
    ];
    for raw in cases {
        let (status, closed) = status_and_close(&gw, raw);
        assert_eq!(status, 400, "for {:?}", String::from_utf8_lossy(raw));
        assert!(
            closed,
            "connection closed after 400 for {:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert!(up.requests().iter().all(|r| r.target() != "/smuggled"));
    assert_eq!(
        up.requests().len(),
        0,
        "framing errors known from the head or leftover bytes never reach the upstream"
    );

    // A bad chunk size later in a streamed body: 400 too.
    let mut c = Client::connect(gw.addr);
    c.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"fffffffffffffffff\r\n");
    assert_eq!(c.response(false).status, 400);
    assert!(c.closed_within(Duration::from_secs(3)));
}

#[test]
fn upstream_down_is_502_and_a_lone_cooling_server_is_still_tried() {
    let gw = gateway(
        &[dead_address().to_string()],
        "fail_cooldown: 30s\nconnect_timeout: 1s",
    );
    let (status, _) = status_and_close(&gw, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 502);
    let (status, _) = status_and_close(&gw, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 502, "tried again, not 503 for the whole cooldown");
}

#[test]
fn silent_upstream_is_504_after_the_response_timeout() {
    let up = HttpUpstream::start(Arc::new(|_: &Request| Reply::Silent));
    let gw = gateway(&one(&up), "");
    let start = Instant::now();
    let (status, _) = status_and_close(&gw, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 504);
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "waited for the 1 s response-head timeout"
    );
}

#[test]
fn connect_timeout_is_504() {
    // A listener with a full accept queue never completes handshakes: SYNs are dropped.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
        "the accept queue should be full (this kernel accepts beyond the backlog; cannot build a blackhole)"
    );
    let gw = gateway(&[addr.to_string()], "connect_timeout: 500ms");
    let start = Instant::now();
    let (status, _) = status_and_close(&gw, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 504);
    assert!(start.elapsed() >= Duration::from_millis(400));
    drop(fillers);
}

#[test]
fn stale_pooled_connection_is_retried_for_get() {
    // The upstream answers each connection once, then closes it after a short delay: the gateway's pooled
    // connection goes stale. The next GET must still succeed (one retry on a fresh connection).
    let up = HttpUpstream::start(Arc::new(|r: &Request| {
        Reply::RawThenClose(ok_response(r.target().as_bytes()))
    }));
    let gw = gateway(&one(&up), "");
    let mut c = Client::connect(gw.addr);
    for i in 0..3 {
        let res = c.request(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!((res.status, res.body), (200, format!("/{i}").into_bytes()));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(up.requests().len(), 3);
    assert_eq!(
        up.accepted.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "requests 2 and 3 found the pooled connection stale and were retried on fresh ones"
    );
}

#[test]
fn both_drivers_relay_bodies_and_reuse_connections() {
    for driver in ["io_uring", "epoll"] {
        let up = HttpUpstream::start(Arc::new(|r: &Request| {
            Reply::Raw(chunked_response(&r.body, 3000))
        }));
        let yaml = config(&one(&up), "", "1s");
        let gw = Gateway::start_with(&yaml, &["--workers", "1", "--driver", driver]);
        let mut c = Client::connect(gw.addr);
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 199) as u8).collect();
        for _ in 0..2 {
            let mut req = format!(
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(&body);
            let res = c.request(&req);
            assert_eq!(res.status, 200, "driver {driver}");
            assert!(res.body == body, "driver {driver}: body differs");
        }
        assert_eq!(
            up.accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "driver {driver}"
        );
    }
}

/// A 502 tells the client the gateway failed, never which internal address it tried or the OS error (those go to
/// the log): on the plain path and on the upgrade path.
#[test]
fn a_502_body_names_no_internal_address_or_os_error() {
    use std::io::{Read, Write};
    let dead = common::closed_port();
    let gw = common::Gateway::start_logged(
        &format!(
            "listeners:\n  - name: t\n    bind: 127.0.0.1:0\nupstreams:\n  up:\n    servers: [{dead}]\n\
             routes:\n  - path: /\n    upstream: up\n"
        ),
        "info",
    );
    for request in [
        "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_owned(),
        format!(
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            common::CLIENT_KEY
        ),
    ] {
        let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert_eq!(common::status_of(&answer), 502, "{answer}");
        let port = dead.port().to_string();
        assert!(
            !answer.contains(&port) && !answer.contains("os error") && !answer.contains("refused"),
            "{answer}"
        );
    }
    let log = gw.stop();
    assert!(
        log.contains(&dead.to_string()),
        "the log names the server: {log}"
    );
}
