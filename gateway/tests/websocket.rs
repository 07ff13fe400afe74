//! WebSocket proxying through the real `ringway` binary: statuses, relay, close paths, keepalive, limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

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
