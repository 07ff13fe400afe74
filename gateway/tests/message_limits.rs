//! Per-connection message and byte rates (`websocket.limits:`) through the real `ringway` binary: a client over its
//! rate is slowed without loss (`pause`) or closed with 1008 both ways (`close`), and other connections do not
//! notice. The bucket and the pause/close rules are unit-tested on a virtual clock in `gateway/src/ws/relay/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;

both_drivers!(a_client_over_its_message_rate_is_slowed_and_nothing_is_lost);

/// The route's `websocket:` block limiting what each client sends.
fn client_limits(lines: &str) -> String {
    let body: String = lines.lines().map(|l| format!("    {l}\n")).collect();
    format!("limits:\n  from_client:\n{body}")
}

fn gateway(upstream: &ScriptedUpstream, ws: &str, driver: &str) -> Gateway {
    Gateway::start_with(
        &config_for(&[upstream.addr], ws),
        &["--workers", "1", "--driver", driver],
    )
}

/// Sends `n` numbered text messages at once, then reads the `n` echoes; returns how long until the last one.
fn send_and_echo(c: &mut WsClient, n: usize, prefix: &str) -> Duration {
    let start = Instant::now();
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(encode(
            true,
            false,
            TEXT,
            format!("{prefix}{i}").as_bytes(),
            Some([1, 2, 3, 4]),
        ));
    }
    c.send_raw(&burst);
    for i in 0..n {
        let f = c.recv_within(Duration::from_secs(15)).expect("an echo");
        assert_eq!(
            (f.opcode, String::from_utf8_lossy(&f.payload).into_owned()),
            (TEXT, format!("{prefix}{i}")),
            "in order, none lost"
        );
    }
    start.elapsed()
}

fn a_client_over_its_message_rate_is_slowed_and_nothing_is_lost(driver: &str) {
    let upstream = ScriptedUpstream::echo();
    let gw = gateway(
        &upstream,
        &client_limits("messages_per_second: 50\nmessage_burst: 10"),
        driver,
    );
    let mut c = WsClient::connect(gw.addr, "/");
    // 60 messages: 10 pass at once, the other 50 at 50 per second: at least 1 s.
    let took = send_and_echo(&mut c, 60, "m");
    assert!(took >= Duration::from_millis(850), "not slowed: {took:?}");
    assert!(took < Duration::from_secs(8), "slowed too much: {took:?}");
    // A burst within the bucket (refilled meanwhile) is not slowed.
    std::thread::sleep(Duration::from_millis(400));
    let took = send_and_echo(&mut c, 10, "b");
    assert!(took < Duration::from_millis(150), "{took:?}");
}

#[test]
fn close_mode_gives_the_client_1008_and_closes_the_upstream() {
    let (upstream, rx) = ScriptedUpstream::handoff("");
    let yaml = config_for(
        &[upstream.addr],
        &client_limits("messages_per_second: 5\nmessage_burst: 5\non_excess: close"),
    );
    let gw = Gateway::start_logged(&yaml, "info");
    let mut c = WsClient::connect(gw.addr, "/");
    let mut up = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("upstream leg");
    for i in 0..20 {
        c.send_text(&format!("m{i}"));
    }
    // The upstream gets what was read up to the excess, then the gateway's Close.
    let mut relayed = 0;
    let close = loop {
        let f = up.recv_within(Duration::from_secs(5)).expect("a frame");
        match f.opcode {
            TEXT => relayed += 1,
            CLOSE => break f,
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert_eq!(close.close_code(), Some(1008));
    assert!(
        (5..=6).contains(&relayed),
        "the burst passed, little more: {relayed}"
    );
    up.send(true, CLOSE, &close.payload);
    let close = loop {
        let f = c.recv_within(Duration::from_secs(5)).expect("a frame");
        if f.opcode == CLOSE {
            break f;
        }
    };
    assert_eq!(close.close_code(), Some(1008));
    assert_eq!(&close.payload[2..], b"rate limit exceeded");
    c.send(true, CLOSE, &close.payload);
    assert!(c.eof_within(Duration::from_secs(3)), "the gateway hangs up");
    let log = gw.stop();
    let line = log
        .lines()
        .find(|l| l.contains("rate limit exceeded"))
        .expect("a log line");
    assert!(
        line.contains("peer=127.0.0.1:") && line.contains("messages_per_second"),
        "{line}"
    );
}

#[test]
fn a_paused_client_does_not_slow_another_one() {
    let upstream = ScriptedUpstream::echo();
    let gw = gateway(
        &upstream,
        &client_limits("messages_per_second: 10\nmessage_burst: 5"),
        EPOLL,
    );
    let mut flooder = WsClient::connect(gw.addr, "/");
    let mut calm = WsClient::connect(gw.addr, "/");
    // 45 messages at 10 per second after a burst of 5: paused for about 4 s.
    let mut burst = Vec::new();
    for i in 0..45 {
        burst.extend(encode(
            true,
            false,
            TEXT,
            format!("f{i}").as_bytes(),
            Some([9, 9, 9, 9]),
        ));
    }
    flooder.send_raw(&burst);
    std::thread::sleep(Duration::from_millis(200));
    let took = send_and_echo(&mut calm, 5, "c");
    assert!(took < Duration::from_millis(300), "{took:?}");
    // The flooder's messages arrive, in order, at its rate.
    for i in 0..45 {
        let f = flooder
            .recv_within(Duration::from_secs(15))
            .expect("an echo");
        assert_eq!(f.payload, format!("f{i}").as_bytes());
    }
}
