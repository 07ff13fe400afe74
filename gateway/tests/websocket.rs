//! WebSocket proxying through the real `ringway` binary: statuses, relay, close paths, keepalive, limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn echo_through_the_gateway_both_drivers() {
    for driver in ["io_uring", "epoll"] {
        let upstream = ScriptedUpstream::echo();
        let gw = Gateway::start_with(
            &config_for(&[upstream.addr], ""),
            &["--driver", driver, "--workers", "1"],
        );
        let mut c = WsClient::connect(gw.addr, "/chat");
        c.send_text("hello");
        let f = c.recv().expect("echo");
        assert_eq!(
            (f.opcode, f.payload.as_slice()),
            (TEXT, b"hello".as_slice()),
            "driver {driver}"
        );
        let big = vec![0xABu8; 300_000];
        c.send(true, BINARY, &big);
        let f = c.recv().expect("big echo");
        assert_eq!(f.payload, big, "driver {driver}");
        c.send(true, CLOSE, &close_payload(1000, "bye"));
        let f = c.recv().expect("close answer");
        assert_eq!(f.close_code(), Some(1000), "driver {driver}");
        assert!(
            c.eof_within(Duration::from_secs(3)),
            "gateway closes TCP after the close handshake ({driver})"
        );
    }
}

/// Starts the gateway with one worker (passive health is per worker, so one worker keeps it deterministic).
fn gateway(yaml: &str) -> Gateway {
    Gateway::start_with(yaml, &["--workers", "1"])
}

/// An echo upstream and a gateway in front of it with the given `websocket:` block.
fn echo_gateway(ws: &str) -> (ScriptedUpstream, Gateway) {
    let upstream = ScriptedUpstream::echo();
    let gw = gateway(&config_for(&[upstream.addr], ws));
    (upstream, gw)
}

// ---- Statuses the gateway answers itself ----

#[test]
fn wrong_or_missing_version_is_426_with_version_13() {
    let (upstream, gw) = echo_gateway("");
    let host = gw.addr.to_string();
    for version in ["Sec-WebSocket-Version: 8\r\n", ""] {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {CLIENT_KEY}\r\n{version}\r\n"
        );
        let head = http_request(gw.addr, &req);
        assert_eq!(status_of(&head), 426, "{version:?}: {head}");
        assert_eq!(
            header_of(&head, "sec-websocket-version"),
            Some("13"),
            "{head}"
        );
    }
    assert!(
        upstream.received().is_empty(),
        "refused upgrades never reach the upstream"
    );
}

#[test]
fn bad_key_and_missing_connection_upgrade_are_400() {
    let (upstream, gw) = echo_gateway("");
    let host = gw.addr.to_string();
    let bad_key = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let head = http_request(gw.addr, &bad_key);
    assert_eq!(status_of(&head), 400, "{head}");
    let no_key = bad_key.replace("Sec-WebSocket-Key: c2hvcnQ=\r\n", "");
    assert_eq!(status_of(&http_request(gw.addr, &no_key)), 400);
    let no_conn =
        upgrade_request("/", &host, "").replace("Connection: Upgrade", "Connection: keep-alive");
    let head = http_request(gw.addr, &no_conn);
    assert_eq!(status_of(&head), 400, "{head}");
    assert!(upstream.received().is_empty());
    // The same request with the key and Connection in order is accepted (the statuses above are not a fluke).
    let ok = http_request(gw.addr, &upgrade_request("/", &host, ""));
    assert_eq!(status_of(&ok), 101, "{ok}");
}

#[test]
fn post_upgrade_is_405() {
    let (upstream, gw) = echo_gateway("");
    let req = upgrade_request("/", &gw.addr.to_string(), "Content-Length: 0\r\n")
        .replacen("GET", "POST", 1);
    let head = http_request(gw.addr, &req);
    assert_eq!(status_of(&head), 405, "{head}");
    assert!(upstream.received().is_empty());
}

#[test]
fn disallowed_origin_and_subprotocol_are_403() {
    let (upstream, gw) =
        echo_gateway("allowed_origins: [https://app.example]\nallowed_subprotocols: [chat.v1]");
    let r = WsClient::connect_with(gw.addr, "/", &[("Origin", "https://evil.example")]);
    let head = r.err().expect("evil origin refused");
    assert_eq!(status_of(&head), 403, "{head}");
    let r = WsClient::connect_with(
        gw.addr,
        "/",
        &[
            ("Origin", "https://app.example"),
            ("Sec-WebSocket-Protocol", "x, y"),
        ],
    );
    let head = r.err().expect("unlisted subprotocols refused");
    assert_eq!(status_of(&head), 403, "{head}");
    assert!(upstream.received().is_empty());
    // Allowed origin and subprotocol pass; the upstream is offered only the allowed subprotocol.
    let c = WsClient::connect_with(
        gw.addr,
        "/",
        &[
            ("Origin", "https://app.example"),
            ("Sec-WebSocket-Protocol", "x, chat.v1"),
        ],
    );
    assert!(c.is_ok(), "allowed origin and subprotocol: {:?}", c.err());
    let reqs = upstream.received();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        header_of(&reqs[0], "sec-websocket-protocol"),
        Some("chat.v1"),
        "{}",
        reqs[0]
    );
}

#[test]
fn no_matching_route_is_404() {
    let upstream = ScriptedUpstream::echo();
    let yaml = config_for(&[upstream.addr], "")
        .replace("  - path: /\n", "  - host: only.example\n    path: /ws\n");
    let gw = gateway(&yaml);
    let wrong_path = http_request(gw.addr, &upgrade_request("/other", "only.example", ""));
    assert_eq!(status_of(&wrong_path), 404, "{wrong_path}");
    let wrong_host = http_request(gw.addr, &upgrade_request("/ws", "elsewhere.example", ""));
    assert_eq!(status_of(&wrong_host), 404, "{wrong_host}");
    assert!(upstream.received().is_empty());
    let ok = http_request(
        gw.addr,
        &upgrade_request("/ws/room", "only.example:8080", ""),
    );
    assert_eq!(status_of(&ok), 101, "the route itself works: {ok}");
}

#[test]
fn oversized_heads_are_431() {
    let upstream = ScriptedUpstream::echo();
    let yaml = with_limits(
        &config_for(&[upstream.addr], ""),
        &["max_header_bytes: 1KiB", "max_headers: 12"],
    );
    let gw = gateway(&yaml);
    let host = gw.addr.to_string();
    let big = format!("X-Big: {}\r\n", "a".repeat(2000));
    let head = http_request(gw.addr, &upgrade_request("/", &host, &big));
    assert_eq!(status_of(&head), 431, "{head}");
    let many: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let head = http_request(gw.addr, &upgrade_request("/", &host, &many));
    assert_eq!(status_of(&head), 431, "{head}");
    assert!(upstream.received().is_empty());
    let few: String = (0..3).map(|i| format!("X-H{i}: v\r\n")).collect();
    let head = http_request(gw.addr, &upgrade_request("/", &host, &few));
    assert_eq!(
        status_of(&head),
        101,
        "a head within the limits passes: {head}"
    );
}

#[test]
fn slowloris_partial_head_is_dropped_after_handshake_timeout() {
    let upstream = ScriptedUpstream::echo();
    let yaml = with_limits(
        &config_for(&[upstream.addr], ""),
        &["handshake_timeout: 400ms"],
    );
    let gw = gateway(&yaml);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    let started = Instant::now();
    s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n",
            gw.addr
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let head = read_head(&mut s);
    let elapsed = started.elapsed();
    // Either a 408 answer or a plain close, but not before the timeout and not much after it.
    if let Some(head) = &head {
        assert_eq!(status_of(head), 408, "{head}");
    }
    assert!(
        stream_eof_within(&mut s, Duration::from_secs(1)),
        "connection closed after the 408"
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "dropped too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "slowloris kept for {elapsed:?}"
    );
    assert!(upstream.received().is_empty());
}

// ---- Statuses caused by the upstream ----

#[test]
fn upstream_down_is_502() {
    let gw = gateway(&config_for(&[closed_port()], ""));
    let head = WsClient::connect_with(gw.addr, "/", &[])
        .err()
        .expect("refused");
    assert_eq!(status_of(&head), 502, "{head}");
}

#[test]
fn a_lone_cooling_server_is_tried_again_not_503() {
    let dead = closed_port();
    let yaml = with_upstream(&config_for(&[dead], ""), &["fail_cooldown: 5s"]);
    let gw = gateway(&yaml);
    let first = WsClient::connect_with(gw.addr, "/", &[])
        .err()
        .expect("refused");
    assert_eq!(status_of(&first), 502, "the failing attempt: {first}");
    // Within fail_cooldown the only server is still tried (passive health never empties a pool).
    let second = WsClient::connect_with(gw.addr, "/", &[])
        .err()
        .expect("refused");
    assert_eq!(status_of(&second), 502, "{second}");
}

#[test]
fn upstream_that_never_answers_the_upgrade_is_504() {
    let upstream = ScriptedUpstream::silent();
    let yaml = with_upstream(
        &with_limits(
            &config_for(&[upstream.addr], ""),
            &["handshake_timeout: 500ms"],
        ),
        &["connect_timeout: 500ms"],
    );
    let gw = gateway(&yaml);
    let started = Instant::now();
    let head = WsClient::connect_with(gw.addr, "/", &[])
        .err()
        .expect("refused");
    assert_eq!(status_of(&head), 504, "{head}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        upstream.received().len(),
        1,
        "the upgrade request did reach the upstream"
    );
}

#[test]
fn upstream_refusal_is_relayed_as_is() {
    let body = "token expired, log in again";
    let raw = format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"chat\", error=\"invalid_token\"\r\n\
         X-Upstream: yes\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let upstream = ScriptedUpstream::refusing(raw.as_bytes());
    let gw = gateway(&config_for(&[upstream.addr], ""));
    let (head, got) = http_exchange(gw.addr, &upgrade_request("/", &gw.addr.to_string(), ""));
    assert_eq!(status_of(&head), 401, "{head}");
    assert_eq!(
        header_of(&head, "www-authenticate"),
        Some("Bearer realm=\"chat\", error=\"invalid_token\"")
    );
    assert_eq!(header_of(&head, "x-upstream"), Some("yes"));
    assert_eq!(String::from_utf8_lossy(&got), body);
}

#[test]
fn upstream_with_a_wrong_accept_key_is_502() {
    let raw = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {CLIENT_ACCEPT}\r\n\r\n"
    );
    let upstream = ScriptedUpstream::refusing(raw.as_bytes());
    let gw = gateway(&config_for(&[upstream.addr], ""));
    let head = WsClient::connect_with(gw.addr, "/", &[])
        .err()
        .expect("refused");
    assert_eq!(status_of(&head), 502, "{head}");
    let reqs = upstream.received();
    assert_eq!(reqs.len(), 1);
    assert_ne!(
        header_of(&reqs[0], "sec-websocket-key"),
        Some(CLIENT_KEY),
        "so the client's accept key is wrong upstream"
    );
}

// ---- What the upstream is sent, and what the client sees of its answer ----

#[test]
fn upstream_request_headers_are_rewritten() {
    let (upstream, rx) = ScriptedUpstream::handoff("");
    let gw = gateway(&config_for(&[upstream.addr], ""));
    let req = upgrade_request(
        "/chat?room=7",
        "chat.example:9000",
        "Connection: X-Drop\r\nX-Drop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
         TE: trailers\r\nProxy-Authorization: Basic eA==\r\nCookie: sid=abc; theme=dark\r\n\
         Authorization: Bearer tok123\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\
         X-Custom: kept\r\n",
    );
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let head = read_head(&mut s).unwrap();
    assert_eq!(status_of(&head), 101, "{head}");
    assert_eq!(
        header_of(&head, "sec-websocket-accept"),
        Some(CLIENT_ACCEPT),
        "{head}"
    );
    let conn = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("upstream connection");
    let up = &conn.request;
    assert!(up.starts_with("GET /chat?room=7 HTTP/1.1\r\n"), "{up}");
    let key = header_of(up, "sec-websocket-key").expect("a key");
    assert_ne!(key, CLIENT_KEY, "fresh key upstream: {up}");
    assert_eq!(key.len(), 24, "16 bytes in base64: {key}");
    assert_eq!(header_of(up, "sec-websocket-version"), Some("13"));
    assert_eq!(header_of(up, "host"), Some("chat.example:9000"));
    assert_eq!(
        header_of(up, "x-forwarded-for"),
        Some("127.0.0.1"),
        "an untrusted client's chain is replaced: {up}"
    );
    assert_eq!(
        header_of(up, "x-forwarded-proto"),
        Some("http"),
        "the client's own value is not trusted: {up}"
    );
    assert_eq!(header_of(up, "x-forwarded-host"), Some("chat.example:9000"));
    assert_eq!(header_of(up, "cookie"), Some("sid=abc; theme=dark"));
    assert_eq!(header_of(up, "authorization"), Some("Bearer tok123"));
    assert_eq!(header_of(up, "x-custom"), Some("kept"));
    assert_eq!(header_of(up, "upgrade"), Some("websocket"));
    assert!(
        header_of(up, "connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{up}"
    );
    for dropped in [
        "x-drop",
        "keep-alive",
        "proxy-connection",
        "te",
        "proxy-authorization",
    ] {
        assert_eq!(
            header_of(up, dropped),
            None,
            "{dropped} is hop-by-hop: {up}"
        );
    }
    // A second connection gets a different key.
    let _c2 = WsClient::connect(gw.addr, "/");
    let conn2 = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("second upstream connection");
    assert_ne!(header_of(&conn2.request, "sec-websocket-key"), Some(key));
}

#[test]
fn subprotocol_chosen_upstream_reaches_the_client() {
    let answer: Answer = Arc::new(|req: &str| {
        // Pick the last offered protocol, so the test sees the upstream's choice and not the client's first.
        let offered = header_of(req, "sec-websocket-protocol").unwrap_or("");
        let pick = offered
            .split(',')
            .map(str::trim)
            .next_back()
            .unwrap_or("")
            .to_owned();
        UpstreamAnswer::Accept(format!("Sec-WebSocket-Protocol: {pick}\r\n"))
    });
    let (upstream, rx) = ScriptedUpstream::handoff_with(answer);
    let gw = gateway(&config_for(&[upstream.addr], ""));
    let mut c = WsClient::connect_with(
        gw.addr,
        "/",
        &[("Sec-WebSocket-Protocol", "chat.v1, chat.v2")],
    )
    .unwrap();
    assert_eq!(
        header_of(&c.head, "sec-websocket-protocol"),
        Some("chat.v2"),
        "{}",
        c.head
    );
    let mut conn = rx.recv_timeout(Duration::from_secs(3)).unwrap();
    assert_eq!(
        header_of(&conn.request, "sec-websocket-protocol"),
        Some("chat.v1, chat.v2")
    );
    c.send_text("proto");
    assert_eq!(conn.recv().unwrap().payload, b"proto");
    // Without an offer the upstream sees no protocol header and the client none back.
    let c2 = WsClient::connect(gw.addr, "/");
    let conn2 = rx.recv_timeout(Duration::from_secs(3)).unwrap();
    assert_eq!(header_of(&conn2.request, "sec-websocket-protocol"), None);
    assert_eq!(
        header_of(&c2.head, "sec-websocket-protocol"),
        None,
        "{}",
        c2.head
    );
}

#[test]
fn permessage_deflate_is_negotiated_end_to_end_and_rsv1_passes() {
    let (upstream, rx) =
        ScriptedUpstream::handoff("Sec-WebSocket-Extensions: permessage-deflate\r\n");
    let gw = gateway(&config_for(&[upstream.addr], ""));
    let offer = "permessage-deflate; client_max_window_bits";
    let mut c =
        WsClient::connect_with(gw.addr, "/", &[("Sec-WebSocket-Extensions", offer)]).unwrap();
    assert_eq!(
        header_of(&c.head, "sec-websocket-extensions"),
        Some("permessage-deflate"),
        "{}",
        c.head
    );
    let mut conn = rx.recv_timeout(Duration::from_secs(3)).unwrap();
    assert_eq!(
        header_of(&conn.request, "sec-websocket-extensions"),
        Some(offer)
    );
    // "Hello" compressed (RFC 7692 §7.2.3.1): not valid UTF-8, so only an RSV1-aware relay passes it as text.
    let compressed = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    c.send_rsv1(true, TEXT, &compressed);
    let f = conn.recv().expect("compressed text upstream");
    assert_eq!(
        (f.rsv1, f.opcode, f.payload.as_slice()),
        (true, TEXT, compressed.as_slice())
    );
    conn.send_raw(&encode(true, true, BINARY, &compressed, None));
    let f = c.recv().expect("compressed binary to the client");
    assert_eq!(
        (f.rsv1, f.opcode, f.payload.as_slice()),
        (true, BINARY, compressed.as_slice())
    );
}

#[test]
fn rsv1_without_negotiation_is_1002() {
    let (upstream, rx) = ScriptedUpstream::handoff("");
    let gw = gateway(&config_for(&[upstream.addr], ""));
    let mut c = WsClient::connect(gw.addr, "/");
    assert_eq!(header_of(&c.head, "sec-websocket-extensions"), None);
    let mut conn = rx.recv_timeout(Duration::from_secs(3)).unwrap();
    c.send_rsv1(true, BINARY, b"abc");
    let f = c.recv().expect("close to the client");
    assert_eq!(f.close_code(), Some(1002), "{f:?}");
    let f = conn.recv().expect("close to the upstream");
    assert_eq!(f.close_code(), Some(1001), "{f:?}");
}

#[test]
fn http10_and_missing_host_upgrades_are_400() {
    let (upstream, gw) = echo_gateway("");
    let req = upgrade_request("/", "h.example", "").replacen("HTTP/1.1", "HTTP/1.0", 1);
    let head = http_request(gw.addr, &req);
    assert_eq!(status_of(&head), 400, "{head}");
    let req = upgrade_request("/", "h.example", "").replace("Host: h.example\r\n", "");
    let head = http_request(gw.addr, &req);
    assert_eq!(status_of(&head), 400, "{head}");
    assert!(upstream.received().is_empty());
}

#[test]
fn a_connection_that_never_sends_a_request_is_closed_after_handshake_timeout() {
    let upstream = ScriptedUpstream::echo();
    let yaml = with_limits(
        &config_for(&[upstream.addr], ""),
        &["handshake_timeout: 400ms"],
    );
    let gw = gateway(&yaml);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    let started = Instant::now();
    assert!(
        stream_eof_within(&mut s, Duration::from_secs(3)),
        "idle connection kept open"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
}

/// (what is wrong, extension the client offers, the upstream's answer for a given key).
type BadAnswer = (&'static str, &'static str, fn(&str) -> String);

#[test]
fn bad_upstream_101_answers_are_502() {
    let cases: [BadAnswer; 4] = [
        ("no Upgrade header", "", |key| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key)
            )
        }),
        ("unoffered subprotocol", "", |key| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: never-offered\r\n\r\n",
                accept_key(key)
            )
        }),
        ("extension without an offer", "", |key| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                accept_key(key)
            )
        }),
        ("unknown extension", "x-webkit-deflate-frame", |key| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\r\n",
                accept_key(key)
            )
        }),
    ];
    for (what, offer, answer) in cases {
        let upstream = ScriptedUpstream::start(
            Arc::new(move |req: &str| {
                let key = header_of(req, "sec-websocket-key").unwrap_or("");
                UpstreamAnswer::Raw(answer(key).into_bytes())
            }),
            Arc::new(|_| {}),
        );
        let gw = gateway(&config_for(&[upstream.addr], ""));
        let headers: &[(&str, &str)] = if offer.is_empty() {
            &[]
        } else {
            &[("Sec-WebSocket-Extensions", offer)]
        };
        let head = WsClient::connect_with(gw.addr, "/", headers)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(status_of(&head), 502, "{what}: {head}");
        assert_eq!(upstream.received().len(), 1, "{what}");
    }
}

#[test]
fn a_refusal_without_content_length_is_relayed_until_the_upstream_closes() {
    let raw = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nnot for you";
    let upstream = ScriptedUpstream::refusing(raw);
    let gw = gateway(&config_for(&[upstream.addr], ""));
    let (head, body) = http_exchange(gw.addr, &upgrade_request("/", "h.example", ""));
    assert_eq!(status_of(&head), 403, "{head}");
    assert_eq!(String::from_utf8_lossy(&body), "not for you");
}

#[test]
fn a_dead_or_broken_server_is_skipped_for_the_next_one() {
    let good = ScriptedUpstream::echo();
    // A dead first server: the connect fails and the second one is tried.
    let gw = gateway(&config_for(&[closed_port(), good.addr], ""));
    let mut c = WsClient::connect(gw.addr, "/");
    c.send_text("via the second server");
    assert_eq!(c.recv().unwrap().payload, b"via the second server");
    drop(gw);
    // A first server whose 101 is wrong: the handshake is retried on the second one.
    let bad = ScriptedUpstream::refusing(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {CLIENT_ACCEPT}\r\n\r\n"
        )
        .as_bytes(),
    );
    let good2 = ScriptedUpstream::echo();
    let yaml = config_for(&[bad.addr, good2.addr], "");
    let gw = gateway(&yaml);
    let mut c = WsClient::connect(gw.addr, "/");
    c.send_text("retried");
    assert_eq!(c.recv().unwrap().payload, b"retried");
    assert_eq!(bad.received().len(), 1, "the broken server was tried first");
    assert_eq!(good2.received().len(), 1);
}

#[test]
fn chunked_upstream_refusal_is_relayed_whole_and_the_client_closed_at_its_end() {
    // The upstream answers 403 with a chunked body and keeps its connection open: the gateway must stop at the
    // terminating chunk, not wait for the upstream to close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = read_head(&mut s);
        let answer = "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nnot you\r\n2\r\n!\n\r\n0\r\n\r\n";
        std::io::Write::write_all(&mut s, answer.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(2500));
    });
    let gw = gateway(&with_limits(
        &config_for(&[addr], ""),
        &["handshake_timeout: 10s"],
    ));
    let started = std::time::Instant::now();
    let (head, got) = http_exchange(gw.addr, &upgrade_request("/", &gw.addr.to_string(), ""));
    assert_eq!(status_of(&head), 403, "{head}");
    assert_eq!(header_of(&head, "transfer-encoding"), Some("chunked"));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "7\r\nnot you\r\n2\r\n!\n\r\n0\r\n\r\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed at the end of the body, took {:?}",
        started.elapsed()
    );
    upstream.join().unwrap();
}

/// A violation inside a data frame on the built-in echo: the echo of the frames before it, then a clean Close with
/// the violation's code (not a frame header whose payload turns out to be the Close).
#[test]
fn echo_closes_invalid_utf8_with_1007_after_the_valid_frames() {
    let gw = Gateway::start(
        "listeners:\n  - name: test\n    bind: 127.0.0.1:0\nroutes:\n  - path: /\n    echo: true\n",
    );
    let mut c = WsClient::connect(gw.addr, "/");
    let mut wire = encode(true, false, TEXT, b"fine", Some([1, 2, 3, 4]));
    wire.extend(encode(true, false, TEXT, b"ok\xff\xfe", Some([5, 6, 7, 8])));
    c.send_raw(&wire);
    let f = c.recv().expect("echo of the valid frame");
    assert_eq!((f.opcode, f.payload.as_slice()), (TEXT, &b"fine"[..]));
    let f = c.recv().expect("a close");
    assert_eq!(
        (f.opcode, f.close_code()),
        (CLOSE, Some(1007)),
        "a Close with 1007 right after the valid frame, got opcode {} payload {:?}",
        f.opcode,
        f.payload
    );
}

/// A violation inside a frame whose echo already began (its header went out with an earlier write): no Close can
/// follow a frame header that promised payload, so the echo cuts the connection.
#[test]
fn echo_cuts_a_connection_whose_violation_comes_inside_a_frame_already_echoed() {
    use std::io::Read;
    let gw = Gateway::start(
        "listeners:\n  - name: test\n    bind: 127.0.0.1:0\nroutes:\n  - path: /\n    echo: true\n",
    );
    let mut c = WsClient::connect(gw.addr, "/");
    let frame = encode(true, false, TEXT, b"abc\xff", Some([1, 2, 3, 4]));
    c.send_raw(&frame[..frame.len() - 1]);
    // The header and "abc" come back before the rest of the frame exists.
    let mut echoed = [0u8; 5];
    c.stream
        .read_exact(&mut echoed)
        .expect("the start of the echo");
    assert_eq!(&echoed, b"\x81\x04abc");
    c.send_raw(&frame[frame.len() - 1..]);
    let mut rest = Vec::new();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = c.stream.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "nothing may follow the cut frame: {rest:?}"
    );
}
