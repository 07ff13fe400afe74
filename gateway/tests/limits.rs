//! Resource bounds through the real binary: the connection limit, and memory under backpressure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn connections_over_max_connections_get_503_and_a_freed_slot_is_reused() {
    let upstream = ScriptedUpstream::echo();
    let yaml = with_limits(&config_for(&[upstream.addr], ""), &["max_connections: 2"]);
    let gw = Gateway::start_with(&yaml, &["--workers", "1"]);
    let mut a = WsClient::connect(gw.addr, "/");
    let _b = WsClient::connect(gw.addr, "/");
    let refused = WsClient::connect_with(gw.addr, "/", &[])
        .err()
        .expect("third connection refused");
    assert_eq!(status_of(&refused), 503, "{refused}");
    a.send(true, CLOSE, &close_payload(1000, ""));
    assert_eq!(a.recv().expect("close answer").close_code(), Some(1000));
    assert!(a.eof_within(Duration::from_secs(3)));
    // The slot is released when the relay ends.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match WsClient::connect_with(gw.addr, "/", &[]) {
            Ok(mut c) => {
                c.send_text("again");
                assert_eq!(c.recv().expect("echo").payload, b"again");
                break;
            }
            Err(head) => {
                assert_eq!(status_of(&head), 503, "{head}");
                assert!(Instant::now() < deadline, "slot never released");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn a_client_that_does_not_read_bounds_the_gateway_memory() {
    // The upstream tries to push 256 MiB to a client that never reads. The gateway must stop reading the upstream
    // (backpressure) instead of buffering: its resident memory stays within a few MiB.
    let sent = Arc::new(AtomicU64::new(0));
    let sent_by_upstream = sent.clone();
    let (upstream, rx) = ScriptedUpstream::handoff("");
    let gw = Gateway::start_with(
        &config_for(&[upstream.addr], "max_frame_size: 1MiB"),
        &["--workers", "1"],
    );
    let _client = WsClient::connect(gw.addr, "/");
    let mut up = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("upstream leg");
    let before = rss_kib(gw.pid());
    let frame = encode(true, false, BINARY, &vec![7u8; 1 << 20], None);
    let pusher = std::thread::spawn(move || {
        up.stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for _ in 0..256 {
            if std::io::Write::write_all(&mut up.stream, &frame).is_err() {
                break;
            }
            sent_by_upstream.fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_kib(gw.pid());
    let pushed = sent.load(Ordering::Relaxed);
    assert!(
        pushed < 64 << 20,
        "the upstream could push {pushed} bytes: nothing held it back"
    );
    assert!(
        after < before + 8 * 1024,
        "gateway RSS grew from {before} KiB to {after} KiB"
    );
    drop(gw);
    pusher.join().unwrap();
}
