//! Load balancing and passive health through the real `ringway` binary (one worker, so one balancer decides).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support_http;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Gateway;
use support_http::*;

fn gateway(servers: &[String], extra: &str) -> Gateway {
    Gateway::start_with(&config(servers, extra, "2s"), &["--workers", "1"])
}

/// Sends `n` GETs (each on its own connection, with `headers`) and counts the answering servers by body.
fn tally(gw: &Gateway, n: usize, headers: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let mut c = Client::connect(gw.addr);
        let res = c.request(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n{headers}\r\n").as_bytes());
        assert_eq!(res.status, 200, "{}", res.head);
        *counts
            .entry(String::from_utf8(res.body).unwrap())
            .or_insert(0) += 1;
    }
    counts
}

#[test]
fn weighted_round_robin() {
    let (a, b) = (HttpUpstream::named("a"), HttpUpstream::named("b"));
    let servers = [
        format!("{{address: {}, weight: 3}}", a.addr),
        b.addr.to_string(),
    ];
    let gw = gateway(&servers, "balance: round_robin");
    let counts = tally(&gw, 12, "");
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&9), Some(&3)),
        "{counts:?}"
    );
}

#[test]
fn round_robin_per_request_on_one_client_connection() {
    let (a, b) = (HttpUpstream::named("a"), HttpUpstream::named("b"));
    let gw = gateway(&[a.addr.to_string(), b.addr.to_string()], "");
    let mut c = Client::connect(gw.addr);
    let bodies: Vec<Vec<u8>> = (0..4)
        .map(|_| c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").body)
        .collect();
    assert_eq!(
        bodies.iter().filter(|b| b.as_slice() == b"a").count(),
        2,
        "{bodies:?}"
    );
    assert_eq!(
        bodies.iter().filter(|b| b.as_slice() == b"b").count(),
        2,
        "{bodies:?}"
    );
}

#[test]
fn least_conn_avoids_the_busy_server() {
    // Requests to /hold are held by whichever server gets them until released.
    let handler = |name: &'static str| {
        Arc::new(move |r: &Request| {
            if r.target() == "/hold" {
                Reply::Hold(ok_response(name.as_bytes()))
            } else {
                Reply::Raw(ok_response(name.as_bytes()))
            }
        })
    };
    let (a, b) = (
        HttpUpstream::start(handler("a")),
        HttpUpstream::start(handler("b")),
    );
    let gw = gateway(
        &[a.addr.to_string(), b.addr.to_string()],
        "balance: least_conn",
    );
    let addr = gw.addr;
    let held = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        String::from_utf8(c.request(b"GET /hold HTTP/1.1\r\nHost: h\r\n\r\n").body).unwrap()
    });
    // Wait until one server holds the request.
    let busy = loop {
        if !a.requests().is_empty() {
            break "a";
        }
        if !b.requests().is_empty() {
            break "b";
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let counts = tally(&gw, 6, "");
    let idle = if busy == "a" { "b" } else { "a" };
    assert_eq!(
        counts.get(idle),
        Some(&6),
        "all requests avoid the busy server {busy}: {counts:?}"
    );
    a.release();
    b.release();
    assert_eq!(held.join().unwrap(), busy);
}

#[test]
fn hash_by_header_is_sticky_and_spreads() {
    let (a, b) = (HttpUpstream::named("a"), HttpUpstream::named("b"));
    let gw = gateway(
        &[a.addr.to_string(), b.addr.to_string()],
        "balance: hash\nhash_key: header:X-User",
    );
    let mut seen = HashMap::new();
    for user in 0..20 {
        let header = format!("X-User: user-{user}\r\n");
        let counts = tally(&gw, 3, &header);
        assert_eq!(
            counts.len(),
            1,
            "user-{user} always lands on one server: {counts:?}"
        );
        let server = counts.into_keys().next().unwrap();
        *seen.entry(server).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "20 users use both servers: {seen:?}");
    // Without the header the pool falls back to round robin.
    let counts = tally(&gw, 4, "");
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&2), Some(&2)),
        "{counts:?}"
    );
}

#[test]
fn hash_by_cookie_and_client_ip() {
    let (a, b) = (HttpUpstream::named("a"), HttpUpstream::named("b"));
    let gw = gateway(
        &[a.addr.to_string(), b.addr.to_string()],
        "balance: hash\nhash_key: cookie:sid",
    );
    for sid in ["alpha", "beta", "gamma"] {
        let counts = tally(&gw, 4, &format!("Cookie: theme=dark; sid={sid}\r\n"));
        assert_eq!(counts.len(), 1, "sid={sid}: {counts:?}");
    }
    drop(gw);
    let gw = gateway(
        &[a.addr.to_string(), b.addr.to_string()],
        "balance: hash\nhash_key: client_ip",
    );
    let counts = tally(&gw, 6, "");
    assert_eq!(counts.len(), 1, "one client IP, one server: {counts:?}");
}

#[test]
fn dead_server_is_skipped_and_requests_still_succeed() {
    let live = HttpUpstream::named("live");
    let gw = gateway(
        &[dead_address().to_string(), live.addr.to_string()],
        "fail_cooldown: 30s\nconnect_timeout: 1s",
    );
    let counts = tally(&gw, 8, "");
    assert_eq!(counts.get("live"), Some(&8), "{counts:?}");
}

#[test]
fn failing_server_cools_down_then_is_tried_again() {
    // `bad` accepts and closes without answering: that request fails (502), and `bad` is then skipped for the
    // cooldown, so its accept count stays at 1 while every other request succeeds on `good`.
    let bad = HttpUpstream::start(Arc::new(|_: &Request| Reply::Close));
    let good = HttpUpstream::named("good");
    let gw = gateway(
        &[bad.addr.to_string(), good.addr.to_string()],
        "fail_cooldown: 1500ms",
    );
    let mut statuses = Vec::new();
    for i in 0..6 {
        let mut c = Client::connect(gw.addr);
        statuses.push(
            c.request(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
                .status,
        );
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        bad.accepted.load(Ordering::SeqCst),
        1,
        "skipped during cooldown"
    );
    std::thread::sleep(Duration::from_millis(1700));
    let _ = tally_statuses(&gw, 2);
    assert_eq!(
        bad.accepted.load(Ordering::SeqCst),
        2,
        "tried again after the cooldown"
    );
}

fn tally_statuses(gw: &Gateway, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| {
            Client::connect(gw.addr)
                .request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                .status
        })
        .collect()
}

/// A server going down is logged once at info (not once per request, not only at debug).
#[test]
fn a_server_marked_down_is_logged_once_at_info() {
    let dead = common::closed_port();
    let alive = common::ScriptedUpstream::echo();
    let gw = common::Gateway::start_logged(
        &format!(
            "workers: 1\nlisteners:\n  - name: t\n    bind: 127.0.0.1:0\nupstreams:\n  up:\n    servers: [{dead}, {}]\n\
             routes:\n  - path: /\n    upstream: up\n",
            alive.addr
        ),
        "info",
    );
    for _ in 0..4 {
        let _c = common::WsClient::connect(gw.addr, "/");
    }
    let log = gw.stop();
    let down: Vec<&str> = log.lines().filter(|l| l.contains("marked down")).collect();
    assert_eq!(down.len(), 1, "{log}");
    assert!(down[0].contains(&dead.to_string()), "{}", down[0]);
}
