//! Per-client limits (`limits.per_client`) and per-server caps (`servers[].max_connections`) against the real
//! binary. Clients come from distinct loopback addresses (127.0.0.2, 127.0.0.3, ...: the whole 127/8 is loopback on
//! Linux), bound before connecting; loopback is exempt by default, so every config here sets `exempt: []`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// Opens a TCP connection to `to` from `from` (port chosen by the kernel).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::V4(SocketAddrV4::new(from, 0)).into())
        .unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// A WebSocket upgrade from `from`: `Ok` with the open stream on 101, `Err(head)` otherwise.
fn ws_from(from: Ipv4Addr, to: SocketAddr) -> Result<TcpStream, String> {
    let mut stream = connect_from(from, to);
    let _ = stream.write_all(upgrade_request("/", &to.to_string(), "").as_bytes());
    let head = read_head(&mut stream).unwrap_or_default();
    if status_of(&head) == 101 {
        Ok(stream)
    } else {
        Err(head)
    }
}

fn echo_once(stream: TcpStream, text: &str) {
    let mut client = WsClient {
        stream,
        head: String::new(),
    };
    client.send_text(text);
    let frame = client.recv().expect("echo");
    assert_eq!(frame.payload, text.as_bytes());
}

/// Retries `f` until it returns `Some` or 5 s pass (a close reaches the gateway asynchronously).
fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "condition not met within 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

#[test]
fn a_client_at_its_cap_gets_429_and_others_are_served_and_a_close_frees_its_place() {
    let upstream = ScriptedUpstream::echo();
    let yaml = with_limits(
        &config_for(&[upstream.addr], ""),
        &["per_client: {max_connections: 2, upgrades_per_second: 0, exempt: []}"],
    );
    let gw = Gateway::start_logged(&yaml, "info");
    let first = ws_from(A, gw.addr).unwrap();
    let _second = ws_from(A, gw.addr).unwrap();
    let head = ws_from(A, gw.addr).unwrap_err();
    assert_eq!(status_of(&head), 429, "{head}");
    assert_eq!(header_of(&head, "retry-after"), Some("1"), "{head}");
    assert_eq!(header_of(&head, "connection"), Some("close"), "{head}");
    // Another address is not affected.
    let other = ws_from(B, gw.addr).unwrap();
    echo_once(other, "hello from b");
    // Closing one of A's connections frees its place.
    drop(first);
    let again = eventually(|| ws_from(A, gw.addr).ok());
    echo_once(again, "hello again");
    let log = gw.stop();
    assert!(
        log.contains("per-client connection limit reached") && log.contains("127.0.0.2"),
        "{log}"
    );
}

#[test]
fn upgrades_over_the_rate_get_429_until_retry_after_has_passed() {
    let upstream = ScriptedUpstream::echo();
    let yaml = with_limits(
        &config_for(&[upstream.addr], ""),
        &["per_client: {upgrades_per_second: 1, upgrade_burst: 2, exempt: []}"],
    );
    let gw = Gateway::start(&yaml);
    drop(ws_from(A, gw.addr).unwrap());
    drop(ws_from(A, gw.addr).unwrap());
    let head = ws_from(A, gw.addr).unwrap_err();
    assert_eq!(status_of(&head), 429, "{head}");
    let wait: u64 = header_of(&head, "retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{head}");
    // Another address has its own bucket.
    drop(ws_from(B, gw.addr).unwrap());
    std::thread::sleep(Duration::from_secs(wait));
    echo_once(ws_from(A, gw.addr).unwrap(), "after the wait");
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_has_the_upgrade_rate() {
    // The proxy's own connections are exempt (it speaks for many clients); the client its X-Forwarded-For names is
    // held to the rate, and another forwarded client has its own bucket.
    let upstream = ScriptedUpstream::echo();
    let yaml = with_limits(
        &config_for(&[upstream.addr], ""),
        &["per_client: {upgrades_per_second: 1, upgrade_burst: 2, exempt: []}"],
    );
    let yaml = format!("trusted_proxies: [127.0.0.9/32]\n{yaml}");
    let gw = Gateway::start(&yaml);
    let proxy = Ipv4Addr::new(127, 0, 0, 9);
    let via = |client: &str| {
        let mut stream = connect_from(proxy, gw.addr);
        let request = upgrade_request("/", &gw.addr.to_string(), "").replacen(
            "\r\n",
            &format!("\r\nX-Forwarded-For: {client}\r\n"),
            1,
        );
        stream.write_all(request.as_bytes()).unwrap();
        read_head(&mut stream).unwrap_or_default()
    };
    assert_eq!(status_of(&via("203.0.113.7")), 101);
    assert_eq!(status_of(&via("203.0.113.7")), 101);
    let refused = via("203.0.113.7");
    assert_eq!(status_of(&refused), 429, "{refused}");
    assert!(header_of(&refused, "retry-after").is_some(), "{refused}");
    assert_eq!(status_of(&via("198.51.100.1")), 101);
    // The proxy itself, with no forwarded client, is not limited.
    for _ in 0..4 {
        drop(ws_from(proxy, gw.addr).unwrap());
    }
}

#[test]
fn a_route_can_set_its_own_upgrade_rate() {
    let upstream = ScriptedUpstream::echo();
    let yaml = with_limits(
        &config_for(&[upstream.addr], ""),
        &["per_client: {upgrades_per_second: 1, upgrade_burst: 1, exempt: []}"],
    );
    let yaml = yaml.replace(
        "    upstream: up\n",
        "    upstream: up\n    limits:\n      per_client:\n        upgrades_per_second: 0\n",
    );
    let gw = Gateway::start(&yaml);
    for _ in 0..5 {
        drop(ws_from(A, gw.addr).unwrap());
    }
}

#[test]
fn the_cap_holds_across_workers() {
    let upstream = ScriptedUpstream::echo();
    let yaml = with_limits(
        &config_for(&[upstream.addr], ""),
        &["per_client: {max_connections: 3, upgrades_per_second: 0, exempt: []}"],
    );
    let gw = Gateway::start_with(&yaml, &["--workers", "2"]);
    // SO_REUSEPORT spreads connections by their 4-tuple: 40 attempts from one address reach both workers, and the
    // client still holds exactly 3 (counted per worker, it would hold up to 6).
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match ws_from(A, gw.addr) {
            Ok(s) => held.push(s),
            Err(head) => {
                assert_eq!(status_of(&head), 429, "{head}");
                refused += 1;
            }
        }
    }
    assert_eq!(held.len(), 3);
    assert_eq!(refused, 37);
    for s in held {
        echo_once(s, "still relayed");
    }
}

#[test]
fn a_full_upstream_server_gets_503_with_retry_after() {
    let upstream = ScriptedUpstream::echo();
    let yaml = config_for(&[upstream.addr], "").replace(
        &format!("      - {}\n", upstream.addr),
        &format!(
            "      - {{ address: {}, max_connections: 1 }}\n",
            upstream.addr
        ),
    );
    let gw = Gateway::start_with(&yaml, &["--workers", "2"]);
    let first = WsClient::connect(gw.addr, "/");
    for _ in 0..4 {
        let head = WsClient::connect_with(gw.addr, "/", &[]).err().unwrap();
        assert_eq!(status_of(&head), 503, "{head}");
        assert_eq!(header_of(&head, "retry-after"), Some("1"), "{head}");
    }
    // Plain HTTP to the full server is refused the same way.
    let (head, _) = http_exchange(
        gw.addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            gw.addr
        ),
    );
    assert_eq!(status_of(&head), 503, "{head}");
    drop(first);
    let mut again = eventually(|| WsClient::connect_with(gw.addr, "/", &[]).ok());
    again.send_text("room again");
    assert_eq!(again.recv().unwrap().payload, b"room again");
}

#[test]
fn a_client_cycling_addresses_neither_grows_memory_nor_pushes_out_a_busy_client() {
    let upstream = ScriptedUpstream::echo();
    let yaml = with_limits(
        &config_for(&[upstream.addr], ""),
        &["per_client: {max_connections: 2, table_size: 64, exempt: []}"],
    );
    let gw = Gateway::start_with(&yaml, &["--workers", "1"]);
    let busy: Vec<TcpStream> = (0..2).map(|_| ws_from(A, gw.addr).unwrap()).collect();
    let cycle = |count: u32| {
        for i in 0..count {
            // 127.0.1.0 onwards: a new address every time.
            let from = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 1, 0)) + i);
            let mut s = connect_from(from, gw.addr);
            let _ = s.write_all(upgrade_request("/", "h", "").as_bytes());
            let head = read_head(&mut s).unwrap_or_default();
            assert_eq!(status_of(&head), 101, "{from}: {head}");
        }
    };
    // Warm up (allocator arenas, buffer pool), then measure over many more addresses than the table holds.
    cycle(300);
    let before = rss_kib(gw.pid());
    cycle(3000);
    let after = rss_kib(gw.pid());
    assert!(
        after < before + 4096,
        "RSS grew from {before} KiB to {after} KiB over 3,000 addresses"
    );
    // The busy client's count survived: it is still at its cap.
    let head = ws_from(A, gw.addr).unwrap_err();
    assert_eq!(status_of(&head), 429, "{head}");
    drop(busy);
}
