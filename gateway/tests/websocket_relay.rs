//! The frame-aware relay through the real `ringway` binary: forwarding, protocol violations, close paths and the
//! gateway's keepalive, as only real sockets show them (the rules themselves are unit-tested on a virtual clock in
//! `gateway/src/ws/relay/session.rs`, the frame rules in frame-simd). Tests marked "both drivers" run once on epoll
//! and once on io_uring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;

both_drivers!(
    fragmented_messages_keep_their_fragmentation,
    client_pings_reach_the_upstream_and_pongs_come_back,
    client_frames_arrive_masked_and_server_frames_unmasked,
    unmasked_client_frame_is_1002_and_upstream_gets_1001,
    client_close_handshake_is_bridged,
    upstream_death_gives_the_client_1011,
    gateway_pings_a_silent_client_and_swallows_its_pong,
);

/// A handoff upstream and a gateway in front of it (one worker, the given driver, `ws` as the route's
/// `websocket:` block, `limits` added to `limits:`), plus a connected client and its upstream leg.
struct Setup {
    client: WsClient,
    up: UpstreamConn,
    /// Keeps the gateway and the upstream alive: bind it (`_keep`), never `..`, or they stop at once.
    _keep: (Gateway, Receiver<UpstreamConn>, ScriptedUpstream),
}

fn setup(driver: Option<&str>, ws: &str, limits: &[&str]) -> Setup {
    let (upstream, rx) = ScriptedUpstream::handoff("");
    let yaml = with_limits(&config_for(&[upstream.addr], ws), limits);
    let mut args = vec!["--workers", "1"];
    if let Some(d) = driver {
        args.extend(["--driver", d]);
    }
    let gw = Gateway::start_with(&yaml, &args);
    let client = WsClient::connect(gw.addr, "/ws");
    let up = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("upstream leg");
    Setup {
        client,
        up,
        _keep: (gw, rx, upstream),
    }
}

/// Reads frames until a close arrives; pings are answered; returns the close frame.
fn client_close(c: &mut WsClient, within: Duration) -> Option<Frame> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let f = c.recv_within(left)?;
        match f.opcode {
            CLOSE => return Some(f),
            PING => c.send(true, PONG, &f.payload),
            _ => {}
        }
    }
}

fn upstream_close(u: &mut UpstreamConn, within: Duration) -> Option<Frame> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let f = u.recv_within(left)?;
        match f.opcode {
            CLOSE => return Some(f),
            PING => u.send(true, PONG, &f.payload),
            _ => {}
        }
    }
}

const SECS2: Duration = Duration::from_secs(2);

// ---- Relay ----

fn fragmented_messages_keep_their_fragmentation(driver: &str) {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(Some(driver), "", &[]);
    client.send(false, TEXT, b"hel");
    client.send(false, 0, b"lo ");
    client.send(true, PING, b"mid"); // control frames may sit between fragments
    client.send(true, 0, b"world");
    let got: Vec<Frame> = (0..4).map(|_| up.recv().expect("frame upstream")).collect();
    let want = [
        (false, TEXT, &b"hel"[..]),
        (false, 0, b"lo "),
        (true, PING, b"mid"),
        (true, 0, b"world"),
    ];
    for (f, (fin, op, payload)) in got.iter().zip(want) {
        assert_eq!(
            (f.fin, f.opcode, f.payload.as_slice()),
            (fin, op, payload),
            "{driver}: {got:?}"
        );
    }
    up.send(false, BINARY, &[1, 2, 3]);
    up.send(false, 0, &[]);
    up.send(true, 0, &[4, 5]);
    let got: Vec<Frame> = (0..3)
        .map(|_| client.recv().expect("frame to client"))
        .collect();
    let shape: Vec<(bool, u8, Vec<u8>)> = got
        .into_iter()
        .map(|f| (f.fin, f.opcode, f.payload))
        .collect();
    assert_eq!(
        shape,
        vec![
            (false, BINARY, vec![1, 2, 3]),
            (false, 0, vec![]),
            (true, 0, vec![4, 5])
        ],
        "{driver}"
    );
}

fn client_pings_reach_the_upstream_and_pongs_come_back(driver: &str) {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(Some(driver), "", &[]);
    client.send(true, PING, b"are you there");
    let f = up.recv().expect("ping upstream");
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (PING, &b"are you there"[..]),
        "{driver}"
    );
    up.send(true, PONG, b"yes");
    let f = client.recv().expect("pong to the client");
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (PONG, &b"yes"[..]),
        "{driver}"
    );
    up.send(true, PING, b"server ping");
    let f = client.recv().expect("upstream ping to the client");
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (PING, &b"server ping"[..]),
        "{driver}"
    );
    client.send(true, PONG, b"server ping");
    let f = up.recv().expect("client pong upstream");
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (PONG, &b"server ping"[..]),
        "{driver}"
    );
}

fn client_frames_arrive_masked_and_server_frames_unmasked(driver: &str) {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(Some(driver), "", &[]);
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    client.send(true, BINARY, &payload);
    client.send_text("short one");
    let w = up.recv_wire().expect("binary upstream");
    assert!(
        w.mask.is_some(),
        "{driver}: frames to the upstream must be masked"
    );
    assert_eq!(
        (w.frame.opcode, w.frame.payload.len()),
        (BINARY, payload.len())
    );
    assert!(
        w.frame.payload == payload,
        "{driver}: payload changed on the way"
    );
    let w = up.recv_wire().expect("text upstream");
    assert!(w.mask.is_some());
    assert_eq!(w.frame.payload, b"short one");
    up.send(true, TEXT, "réponse".as_bytes());
    let w = client.recv_wire().expect("text to the client");
    assert_eq!(
        w.mask, None,
        "{driver}: frames to the client must not be masked"
    );
    assert_eq!(w.frame.payload, "réponse".as_bytes());
}

fn unmasked_client_frame_is_1002_and_upstream_gets_1001(driver: &str) {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(Some(driver), "", &[]);
    client.send_text("fine");
    assert_eq!(up.recv().unwrap().payload, b"fine");
    client.send_raw(&encode(true, false, TEXT, b"naked", None));
    let f = client_close(&mut client, SECS2).expect("close to the client");
    assert_eq!(f.close_code(), Some(1002), "{driver}: {f:?}");
    let f = upstream_close(&mut up, SECS2).expect("close to the upstream");
    assert_eq!(
        f.close_code(),
        Some(1001),
        "{driver}: the unmasked frame must not be forwarded: {f:?}"
    );
    up.send(true, CLOSE, &f.payload);
    assert!(
        client.eof_within(SECS2),
        "{driver}: client connection closed"
    );
    assert!(up.eof_within(SECS2), "{driver}: upstream connection closed");
}

#[test]
fn masked_frame_from_upstream_is_1002_there_and_1011_to_the_client() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, "", &[]);
    up.send_raw(&encode(
        true,
        false,
        TEXT,
        b"masked by server",
        Some([1, 2, 3, 4]),
    ));
    let f = upstream_close(&mut up, SECS2).expect("close to the upstream");
    assert_eq!(f.close_code(), Some(1002), "{f:?}");
    let f = client_close(&mut client, SECS2).expect("close to the client");
    assert_eq!(f.close_code(), Some(1011), "{f:?}");
    client.send(true, CLOSE, &close_payload(1011, ""));
    assert!(client.eof_within(SECS2));
}

#[test]
fn invalid_utf8_text_is_1007() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, "", &[]);
    client.send(true, TEXT, &[b'o', b'k', 0xff, 0xfe]);
    let f = client_close(&mut client, SECS2).expect("close to the client");
    assert_eq!(f.close_code(), Some(1007), "{f:?}");
    let f = upstream_close(&mut up, SECS2).expect("close to the upstream");
    assert_eq!(f.close_code(), Some(1001), "{f:?}");
}

#[test]
fn invalid_utf8_split_across_fragments_is_1007() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, "", &[]);
    // "é" is C3 A9: a lone C3 at the end of the message is truncated UTF-8.
    client.send(false, TEXT, b"caf");
    client.send(true, 0, &[0xC3]);
    let f = client_close(&mut client, SECS2).expect("close to the client");
    assert_eq!(f.close_code(), Some(1007), "{f:?}");
    let f = upstream_close(&mut up, SECS2).expect("close to the upstream");
    assert_eq!(f.close_code(), Some(1001), "{f:?}");
}

#[test]
fn frame_over_max_frame_size_is_1009() {
    let ws = "max_frame_size: 1KiB\nmax_message_size: 4KiB";
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, ws, &[]);
    client.send(true, TEXT, &[b'a'; 1024]);
    assert_eq!(
        up.recv().unwrap().payload.len(),
        1024,
        "a frame at the limit passes"
    );
    client.send(true, TEXT, &[b'a'; 1025]);
    let f = client_close(&mut client, SECS2).expect("close to the client");
    assert_eq!(f.close_code(), Some(1009), "{f:?}");
    let f = upstream_close(&mut up, SECS2).expect("close to the upstream");
    assert_eq!(f.close_code(), Some(1001), "{f:?}");
}

#[test]
fn message_over_max_message_size_across_fragments_is_1009() {
    let ws = "max_frame_size: 1KiB\nmax_message_size: 4KiB";
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, ws, &[]);
    client.send(false, BINARY, &[1; 1024]);
    for _ in 0..3 {
        client.send(false, 0, &[2; 1024]);
    }
    let mut forwarded = 0;
    for _ in 0..4 {
        forwarded += up.recv().expect("fragment within the limit").payload.len();
    }
    assert_eq!(forwarded, 4096);
    client.send(true, 0, &[3; 1]);
    let f = client_close(&mut client, SECS2).expect("close to the client");
    assert_eq!(f.close_code(), Some(1009), "{f:?}");
    let f = upstream_close(&mut up, SECS2).expect("close to the upstream");
    assert_eq!(f.close_code(), Some(1001), "{f:?}");
}

// ---- Close paths ----

fn client_close_handshake_is_bridged(driver: &str) {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(Some(driver), "", &[]);
    client.send(true, CLOSE, &close_payload(1000, "bye"));
    let f = up.recv().expect("close upstream");
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (CLOSE, close_payload(1000, "bye").as_slice()),
        "{driver}"
    );
    up.send(true, CLOSE, &close_payload(1000, "see you"));
    let f = client.recv().expect("the upstream's answer");
    assert_eq!(f.payload, close_payload(1000, "see you"), "{driver}");
    assert!(client.eof_within(SECS2), "{driver}: client TCP closed");
    assert!(up.eof_within(SECS2), "{driver}: upstream TCP closed");
}

#[test]
fn upstream_close_handshake_is_bridged() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, "", &[]);
    up.send(true, CLOSE, &close_payload(4000, "server leaving"));
    let f = client.recv().expect("close to the client");
    assert_eq!(f.payload, close_payload(4000, "server leaving"));
    client.send(true, CLOSE, &close_payload(4000, "ok"));
    let f = up.recv().expect("the client's answer upstream");
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (CLOSE, close_payload(4000, "ok").as_slice())
    );
    assert!(client.eof_within(SECS2), "client TCP closed");
    assert!(up.eof_within(SECS2), "upstream TCP closed");
}

fn upstream_death_gives_the_client_1011(driver: &str) {
    let Setup {
        mut client,
        up,
        _keep,
    } = setup(Some(driver), "", &[]);
    drop(up);
    let f = client.recv_within(SECS2).expect("close to the client");
    assert_eq!(f.close_code(), Some(1011), "{driver}: {f:?}");
    client.send(true, CLOSE, &f.payload);
    assert!(client.eof_within(SECS2), "{driver}: client TCP closed");
}

#[test]
fn client_death_gives_the_upstream_1001() {
    let Setup {
        client,
        mut up,
        _keep,
    } = setup(None, "", &[]);
    drop(client);
    let f = up.recv_within(SECS2).expect("close upstream");
    assert_eq!(f.close_code(), Some(1001), "{f:?}");
    up.send(true, CLOSE, &f.payload);
    assert!(up.eof_within(SECS2), "upstream TCP closed");
}

#[test]
fn close_handshake_times_out_when_the_upstream_never_answers() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, "", &["close_timeout: 500ms"]);
    client.send(true, CLOSE, &close_payload(1000, "bye"));
    let started = Instant::now();
    assert_eq!(up.recv().expect("close upstream").close_code(), Some(1000));
    // The upstream keeps its socket open and never answers.
    assert!(
        client.eof_within(Duration::from_secs(3)),
        "client not closed"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed before close_timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2000),
        "closed {elapsed:?} after the close, close_timeout is 500ms"
    );
    assert!(up.eof_within(SECS2), "upstream TCP closed too");
}

// ---- Keepalive and idle ----

const KEEPALIVE: &str = "ping_interval: 300ms\npong_timeout: 800ms\nidle_timeout: 1m";

fn gateway_pings_a_silent_client_and_swallows_its_pong(driver: &str) {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(Some(driver), KEEPALIVE, &[]);
    let started = Instant::now();
    let ping = client.recv_within(SECS2).expect("a ping from the gateway");
    assert_eq!(ping.opcode, PING, "{driver}: {ping:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{driver}: pinged after {:?}",
        started.elapsed()
    );
    client.send(true, PONG, &ping.payload);
    client.send_text("after the pong");
    let f = up.recv_skipping_pings().expect("data upstream");
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (TEXT, &b"after the pong"[..]),
        "{driver}: the pong leaked"
    );
    // The upstream is pinged too (masked); a thread answers its pings so both legs stay alive.
    let (tx, data) = std::sync::mpsc::channel();
    let upstream_side = std::thread::spawn(move || {
        let mut pings = 0;
        while let Some(w) = up.recv_wire() {
            if w.frame.opcode == PING {
                assert!(w.mask.is_some(), "gateway pings to the upstream are masked");
                pings += 1;
                up.send(true, PONG, &w.frame.payload);
            } else if tx.send(w.frame).is_err() {
                break;
            }
        }
        pings
    });
    let until = Instant::now() + Duration::from_millis(1000);
    let mut pings = 0;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Some(f) = client.recv_within(left) {
            assert_eq!(f.opcode, PING, "{driver}: only pings expected: {f:?}");
            pings += 1;
            client.send(true, PONG, &f.payload);
        }
    }
    assert!(
        pings >= 2,
        "{driver}: {pings} pings in 1s at a 300ms interval"
    );
    client.send_text("still here");
    let f = data.recv_timeout(SECS2).expect("still relaying");
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (TEXT, &b"still here"[..]),
        "{driver}: a pong leaked: {f:?}"
    );
    client.send(true, CLOSE, &close_payload(1000, ""));
    let f = data.recv_timeout(SECS2).expect("close upstream");
    assert_eq!(f.opcode, CLOSE, "{driver}: {f:?}");
    drop(data);
    let upstream_pings = upstream_side.join().expect("upstream thread");
    assert!(
        upstream_pings >= 2,
        "{driver}: upstream got {upstream_pings} pings"
    );
}

#[test]
fn client_that_never_answers_pings_is_dropped() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, KEEPALIVE, &[]);
    let started = Instant::now();
    let f = upstream_close(&mut up, Duration::from_secs(3)).expect("close upstream");
    assert_eq!(f.close_code(), Some(1001), "{f:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500),
        "closed after {elapsed:?}, before interval + timeout"
    );
    up.send(true, CLOSE, &f.payload);
    // The client only ever saw pings, then its connection went away.
    assert!(
        client.eof_within(SECS2),
        "the silent client is disconnected"
    );
}

#[test]
fn idle_timeout_closes_both_sides_with_1001() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(
        None,
        "ping_interval: off\nidle_timeout: 500ms",
        &["close_timeout: 10s"],
    );
    client.send_text("one message");
    assert_eq!(up.recv().unwrap().payload, b"one message");
    let started = Instant::now();
    let f = client.recv_within(SECS2).expect("close to the client");
    assert_eq!(f.close_code(), Some(1001), "{f:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "idle close after {elapsed:?}"
    );
    let g = up.recv_within(SECS2).expect("close to the upstream");
    assert_eq!(g.close_code(), Some(1001), "{g:?}");
    client.send(true, CLOSE, &f.payload);
    up.send(true, CLOSE, &g.payload);
    // Both answered: the relay ends now, not at the close timeout (10 s). A leg that kept looking at the already
    // expired idle deadline used to spin until then.
    assert!(client.eof_within(SECS2));
    assert!(up.eof_within(SECS2));
}

// ---- More relay edges ----

#[test]
fn frames_right_behind_either_handshake_are_relayed() {
    // The upstream sends a frame in the same write as its 101.
    let answer: Answer = std::sync::Arc::new(|req: &str| {
        let key = header_of(req, "sec-websocket-key").unwrap_or("");
        let mut raw = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key)
        )
        .into_bytes();
        raw.extend(encode(true, false, TEXT, b"welcome", None));
        UpstreamAnswer::Raw(raw)
    });
    // (`Raw` closes the upstream right after writing.)
    let upstream = ScriptedUpstream::start(answer, std::sync::Arc::new(|_| {}));
    let gw = Gateway::start_with(&config_for(&[upstream.addr], ""), &["--workers", "1"]);
    let mut c = WsClient::connect(gw.addr, "/");
    let f = c.recv_within(SECS2).expect("the upstream's early frame");
    assert_eq!((f.opcode, f.payload.as_slice()), (TEXT, &b"welcome"[..]));
    // Then the upstream's TCP close turns into a 1011 for the client.
    let f = client_close(&mut c, SECS2).expect("close after the upstream went away");
    assert_eq!(f.close_code(), Some(1011), "{f:?}");
    drop(gw);

    // The client sends a frame in the same write as its upgrade request.
    let (upstream, rx) = ScriptedUpstream::handoff("");
    let gw = Gateway::start_with(&config_for(&[upstream.addr], ""), &["--workers", "1"]);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(SECS2)).unwrap();
    let mut bytes = upgrade_request("/", "h.example", "").into_bytes();
    bytes.extend(encode(true, false, TEXT, b"eager", Some([9, 8, 7, 6])));
    std::io::Write::write_all(&mut s, &bytes).unwrap();
    let head = read_head(&mut s).expect("101");
    assert_eq!(status_of(&head), 101, "{head}");
    let mut up = rx.recv_timeout(SECS2).expect("upstream leg");
    let f = up.recv_within(SECS2).expect("the client's early frame");
    assert_eq!((f.opcode, f.payload.as_slice()), (TEXT, &b"eager"[..]));
}

#[test]
fn frame_over_max_frame_size_from_upstream_is_1009_there_and_1011_to_the_client() {
    let ws = "max_frame_size: 1KiB\nmax_message_size: 4KiB";
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, ws, &[]);
    up.send(true, BINARY, &[7; 2048]);
    let f = upstream_close(&mut up, SECS2).expect("close to the upstream");
    assert_eq!(f.close_code(), Some(1009), "{f:?}");
    let f = client_close(&mut client, SECS2).expect("close to the client");
    assert_eq!(f.close_code(), Some(1011), "{f:?}");
}

#[test]
fn bad_close_frames_are_protocol_errors() {
    // (payload, expected code for the client)
    let cases: [(&[u8], u16); 4] = [
        (&[0x03], 1002),                   // one-byte close payload
        (&[0x03, 0xED], 1002),             // 1005 may not be sent
        (&[0x03, 0xE7], 1002),             // 999 is not a valid code
        (&[0x03, 0xE8, 0xC3, 0x28], 1007), // invalid UTF-8 reason
    ];
    for (payload, code) in cases {
        let Setup {
            mut client,
            mut up,
            _keep,
        } = setup(None, "", &[]);
        client.send(true, CLOSE, payload);
        let f = client_close(&mut client, SECS2).expect("close to the client");
        assert_eq!(f.close_code(), Some(code), "payload {payload:?}: {f:?}");
        let f = upstream_close(&mut up, SECS2).expect("close to the upstream");
        assert_eq!(f.close_code(), Some(1001), "payload {payload:?}: {f:?}");
    }
}

#[test]
fn the_client_that_never_answers_the_upstreams_close_is_closed_after_close_timeout() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, "", &["close_timeout: 500ms"]);
    up.send(true, CLOSE, &close_payload(1000, "done"));
    let started = Instant::now();
    assert_eq!(
        client.recv().expect("close to the client").close_code(),
        Some(1000)
    );
    assert!(
        client.eof_within(Duration::from_secs(3)),
        "client not closed"
    );
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2000), "{elapsed:?}");
    assert!(up.eof_within(SECS2), "upstream closed too");
}

#[test]
fn bulk_traffic_both_ways_at_once_does_not_stall() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, "", &[]);
    let chunk: Vec<u8> = (0..65_536u32).map(|i| (i % 253) as u8).collect();
    const N: usize = 48; // 3 MiB each way
    let mut client_w = client.stream.try_clone().unwrap();
    let mut up_w = up.stream.try_clone().unwrap();
    let c2 = chunk.clone();
    let client_writer = std::thread::spawn(move || {
        for i in 0..N {
            let mut p = c2.clone();
            p[0] = i as u8;
            std::io::Write::write_all(
                &mut client_w,
                &encode(true, false, BINARY, &p, Some([1, 2, 3, 4])),
            )
            .unwrap();
        }
    });
    let c3 = chunk.clone();
    let up_writer = std::thread::spawn(move || {
        for i in 0..N {
            let mut p = c3.clone();
            p[0] = i as u8;
            std::io::Write::write_all(&mut up_w, &encode(true, false, BINARY, &p, None)).unwrap();
        }
    });
    let up_reader = std::thread::spawn(move || {
        (0..N)
            .map(|_| up.recv().expect("frame upstream").payload)
            .collect::<Vec<_>>()
    });
    let to_client: Vec<Vec<u8>> = (0..N)
        .map(|_| client.recv().expect("frame to client").payload)
        .collect();
    let to_upstream = up_reader.join().unwrap();
    client_writer.join().unwrap();
    up_writer.join().unwrap();
    for (i, (a, b)) in to_client.iter().zip(&to_upstream).enumerate() {
        assert_eq!(
            (a.len(), a[0], &a[1..]),
            (chunk.len(), i as u8, &chunk[1..]),
            "to client #{i}"
        );
        assert_eq!(
            (b.len(), b[0], &b[1..]),
            (chunk.len(), i as u8, &chunk[1..]),
            "to upstream #{i}"
        );
    }
}

#[test]
fn frames_trickling_in_byte_by_byte_are_reassembled() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, "", &[]);
    let mut bytes = encode(false, false, TEXT, "héllo ".as_bytes(), Some([5, 6, 7, 8]));
    bytes.extend(encode(true, false, PING, b"tick", Some([1, 1, 1, 1])));
    bytes.extend(encode(true, false, 0, &[b'w'; 300], Some([9, 9, 9, 9])));
    bytes.extend(encode(
        true,
        false,
        CLOSE,
        &close_payload(1000, "slow bye"),
        Some([3, 3, 3, 3]),
    ));
    for b in bytes {
        client.send_raw(&[b]);
        std::thread::sleep(Duration::from_micros(300));
    }
    let f = up.recv().unwrap();
    assert_eq!(
        (f.fin, f.opcode, f.payload.as_slice()),
        (false, TEXT, "héllo ".as_bytes())
    );
    let f = up.recv().unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (PING, &b"tick"[..]));
    let f = up.recv().unwrap();
    assert_eq!((f.fin, f.opcode, f.payload.len()), (true, 0, 300));
    let f = up.recv().unwrap();
    assert_eq!(f.payload, close_payload(1000, "slow bye"));
}

/// The upstream writes the first half of a frame, stalls for `stall`, then writes the rest; the client answers every
/// ping it gets. Returns the frames the client saw (until the data frame and one more ping, or a close/EOF).
fn stall_mid_frame(stall: Duration) -> Vec<Frame> {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, KEEPALIVE, &[]);
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
    let frame = encode(true, false, BINARY, &payload, None);
    let half = frame.len() / 2;
    let writer = std::thread::spawn(move || {
        up.send_raw(&frame[..half]);
        std::thread::sleep(stall);
        up.send_raw(&frame[half..]);
        // Keep answering the gateway's pings so the upstream leg stays healthy.
        let _ = up.recv_skipping_pings();
    });
    let mut seen = Vec::new();
    let mut got_data = false;
    while let Some(f) = client.recv_within(Duration::from_secs(3)) {
        match f.opcode {
            PING => {
                client.send(true, PONG, &f.payload);
                if got_data {
                    seen.push(f);
                    break;
                }
            }
            BINARY => {
                assert_eq!(f.payload, payload, "the data frame arrived intact");
                got_data = true;
            }
            CLOSE => {
                seen.push(f);
                break;
            }
            _ => {}
        }
        seen.push(f);
    }
    client.send(true, CLOSE, &close_payload(1000, ""));
    drop(client);
    let _ = writer.join();
    seen
}

#[test]
fn a_ping_due_mid_frame_waits_for_the_frame_boundary() {
    // The client's ping falls due (300ms) while the frame to it is half written; the rest comes at 400ms.
    let seen = stall_mid_frame(Duration::from_millis(400));
    let ops: Vec<u8> = seen.iter().map(|f| f.opcode).collect();
    assert!(ops.contains(&BINARY), "data frame delivered: {seen:?}");
    assert!(
        !ops.contains(&CLOSE),
        "a healthy client was closed: {seen:?}"
    );
}

#[test]
fn a_client_that_answers_every_ping_survives_a_long_mid_frame_stall() {
    // Here the frame to the client stalls past ping_interval + pong_timeout; the client cannot be pinged before the
    // frame ends, and answers the ping as soon as it gets it.
    let seen = stall_mid_frame(Duration::from_millis(900));
    let ops: Vec<u8> = seen.iter().map(|f| f.opcode).collect();
    assert!(
        !ops.contains(&CLOSE),
        "a client that answers every ping it receives was closed: {seen:?}"
    );
    assert!(ops.contains(&BINARY), "data frame delivered: {seen:?}");
}

#[test]
fn client_dying_mid_frame_closes_the_upstream_connection() {
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, "", &["close_timeout: 500ms"]);
    let frame = encode(true, false, BINARY, &[0x5A; 10_000], Some([1, 2, 3, 4]));
    client.send_raw(&frame[..5_000]);
    std::thread::sleep(Duration::from_millis(100));
    drop(client);
    // The upstream holds half a frame: no close frame can follow it, so its connection is cut.
    assert!(
        up.eof_within(Duration::from_secs(3)),
        "upstream connection left open"
    );
}

#[test]
fn a_violation_after_valid_frames_lets_their_echo_through_before_the_close() {
    // Autobahn 3.2-style: a valid message, then a frame with a reserved bit, in one write. The upstream echoes the
    // valid message and answers the gateway's 1001; the client must see the echo first, then its 1002.
    let Setup {
        mut client,
        mut up,
        _keep,
    } = setup(None, "", &[]);
    let mut wire = encode(true, false, TEXT, b"Hello", Some([1, 2, 3, 4]));
    wire.extend(encode(true, false, TEXT, b"bad", Some([1, 2, 3, 4])));
    let second = wire.len() - 3 - 4 - 2;
    wire[second] |= 0x20; // RSV2 on the second frame
    client.send_raw(&wire);
    let f = up.recv().expect("valid frame forwarded");
    assert_eq!(f.payload, b"Hello");
    let close = up.recv().expect("close to the upstream");
    assert_eq!(close.close_code(), Some(1001));
    up.send(true, TEXT, b"Hello");
    up.send(true, CLOSE, &close.payload);
    let echo = client.recv().expect("echo before the close");
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (TEXT, &b"Hello"[..])
    );
    let f = client.recv().expect("close to the client");
    assert_eq!(f.close_code(), Some(1002), "{f:?}");
    assert!(client.eof_within(Duration::from_secs(3)));
}
