//! Operating the gateway: the admin endpoint's metrics and probes, drain on SIGTERM (close codes, jitter, exit),
//! a second signal, and systemd notifications, against the real binary over loopback.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const CLOSE: u8 = 0x8;

fn free_port() -> SocketAddr {
    // Outside the ephemeral range (the port-0 binds of other tests cannot take it before the gateway binds it), and a
    // different one per call (tests of this file run in parallel).
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 5_000) as u16;
    loop {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let addr = SocketAddr::from(([127, 0, 0, 1], base + step % 7_000));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// A config with an admin endpoint, the echo upstream on `/` and the built-in echo on `/plain`.
fn config(upstream: SocketAddr, admin: SocketAddr, drain: &str) -> String {
    format!(
        "listeners:\n  - name: test\n    bind: 127.0.0.1:0\nlimits:\n  handshake_timeout: 2s\n  close_timeout: 1s\n\
         admin:\n  bind: {admin}\n{drain}\
         upstreams:\n  up:\n    servers: [{upstream}]\n    connect_timeout: 1s\n\
         routes:\n  - path: /plain\n    echo: true\n  - path: /\n    upstream: up\n"
    )
}

/// One GET to the admin endpoint (it closes after each answer): status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes())
        .expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    let status = status_of(&answer);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `series` (exact text up to the value) in a scrape.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Scrapes until `series` has `want` (metrics of live relays are published on the gateway's 20 ms tick).
fn wait_for(admin: SocketAddr, series: &str, want: f64) -> String {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, scrape) = get(admin, "/metrics");
        if value(&scrape, series) == Some(want) || Instant::now() > end {
            assert_eq!(value(&scrape, series), Some(want), "{series} in\n{scrape}");
            return scrape;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_follow_the_traffic_and_the_probes_answer() {
    let upstream = ScriptedUpstream::echo();
    let admin = free_port();
    let gw = Gateway::start(&config(upstream.addr, admin, ""));
    assert_eq!(get(admin, "/healthz").0, 200);
    // Ready once every worker has its listeners: that can trail the first listening line by a moment.
    let ready_by = Instant::now() + Duration::from_secs(3);
    while get(admin, "/readyz").0 != 200 {
        assert!(Instant::now() < ready_by, "/readyz never answered 200");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(admin, "/nothing").0, 404);

    let mut ws = WsClient::connect(gw.addr, "/chat");
    for i in 0..3 {
        ws.send_text(&format!("message {i}"));
        assert_eq!(
            ws.recv().expect("echo").payload,
            format!("message {i}").into_bytes()
        );
    }
    let route = "route=\"*/\"";
    wait_for(
        admin,
        &format!("ringway_websocket_messages_total{{{route},direction=\"client_to_upstream\"}}"),
        3.0,
    );
    let scrape = wait_for(
        admin,
        &format!("ringway_websocket_messages_total{{{route},direction=\"upstream_to_client\"}}"),
        3.0,
    );
    assert_eq!(
        value(
            &scrape,
            &format!("ringway_websocket_connections_open{{{route}}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            &format!("ringway_websocket_upgrades_total{{{route},status=\"101\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            &format!("ringway_websocket_handshake_seconds_count{{{route}}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            "ringway_upstream_connect_seconds_count{upstream=\"up\"}"
        ),
        Some(1.0)
    );
    let bytes = value(
        &scrape,
        &format!("ringway_websocket_bytes_total{{{route},direction=\"client_to_upstream\"}}"),
    );
    // Three masked frames of 9 bytes: 2 header + 4 mask + 9 payload each.
    assert_eq!(bytes, Some(45.0));

    ws.send(true, CLOSE, &close_payload(1000, "bye"));
    assert_eq!(ws.recv().expect("close answer").close_code(), Some(1000));
    let scrape = wait_for(
        admin,
        &format!("ringway_websocket_connections_open{{{route}}}"),
        0.0,
    );
    let scrape = if value(
        &scrape,
        &format!("ringway_websocket_closes_total{{{route},from=\"client\",code=\"1000\"}}"),
    )
    .is_some()
    {
        scrape
    } else {
        wait_for(
            admin,
            &format!("ringway_websocket_closes_total{{{route},from=\"client\",code=\"1000\"}}"),
            1.0,
        )
    };
    assert_eq!(
        value(
            &scrape,
            &format!("ringway_websocket_closes_total{{{route},from=\"upstream\",code=\"1000\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            &format!("ringway_websocket_duration_seconds_count{{{route}}}")
        ),
        Some(1.0)
    );

    // A refused upgrade and a plain HTTP exchange are counted too.
    let refused = http_request(
        gw.addr,
        "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    assert_eq!(status_of(&refused), 426);
    let plain = http_request(
        gw.addr,
        "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&plain), 200);
    wait_for(
        admin,
        &format!("ringway_websocket_upgrades_total{{{route},status=\"426\"}}"),
        1.0,
    );
    // Counted when the exchange ends, which the client's read of the answer can precede.
    wait_for(
        admin,
        "ringway_http_requests_total{route=\"*/plain\",class=\"2xx\"}",
        1.0,
    );
    drop(gw);
}

/// The relay's I/O buffers (`IO_BUFFER_SIZE` in the gateway).
const IO_BUFFER: f64 = 32.0 * 1024.0;

/// An upstream that floods `/flood` with binary frames until the connection fails, and echoes anything else.
fn flooding_upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(
        Arc::new(|_| UpstreamAnswer::Accept(String::new())),
        Arc::new(|mut c: UpstreamConn| {
            if c.request.starts_with("GET /flood ") {
                let frame = encode(true, false, 0x2, &[0x5a; 60_000], None);
                while std::io::Write::write_all(&mut c.stream, &frame).is_ok() {}
            } else {
                c.echo_until_close();
            }
        }),
    )
}

/// The in-use figure counts exactly what is in flight: the buffer holding a client's half-sent frame, and the one
/// a relay cannot write on to a client that does not read an upstream's flood; and it is back to 0 once the clients
/// are gone, though one of those buffers went with a write that failed (io_uring: a write the kernel still owned).
/// A cached-only figure has no such series; one that lost buffers on error paths would not come back to 0.
fn buffers_in_use_are_counted_exactly(driver: &str) {
    let upstream = flooding_upstream();
    let admin = free_port();
    let gw = Gateway::start_with(
        &config(upstream.addr, admin, ""),
        &["--workers", "1", "--driver", driver],
    );
    let in_use = "ringway_buffer_pool_in_use_bytes";
    wait_for(admin, in_use, 0.0);

    // Half a frame header: the relay holds it in a pooled buffer until the rest comes.
    let mut half = WsClient::connect(gw.addr, "/chat");
    half.send_raw(&[0x82]);
    wait_for(admin, in_use, IO_BUFFER);

    // A flood the client does not read: the relay's write to it stays pending with its buffer.
    let flooded = WsClient::connect(gw.addr, "/flood");
    wait_for(admin, in_use, 2.0 * IO_BUFFER);
    // Still held a moment later (not a buffer caught between two reads).
    std::thread::sleep(Duration::from_millis(300));
    wait_for(admin, in_use, 2.0 * IO_BUFFER);

    drop(half);
    drop(flooded);
    let scrape = wait_for(admin, in_use, 0.0);
    let open = value(&scrape, "ringway_connections_open");
    let cached = value(&scrape, "ringway_buffer_pool_cached_bytes").unwrap_or(0.0);
    assert!(
        cached >= 2.0 * IO_BUFFER,
        "the buffers came back for reuse: {cached} (connections open: {open:?})"
    );
    drop(gw);
}

#[test]
fn buffers_in_use_are_counted_exactly_epoll() {
    buffers_in_use_are_counted_exactly("epoll");
}

#[test]
fn buffers_in_use_are_counted_exactly_io_uring() {
    buffers_in_use_are_counted_exactly("io_uring");
}

/// An upstream that echoes and records the close code it was sent.
fn recording_upstream(codes: Arc<Mutex<Vec<u16>>>) -> ScriptedUpstream {
    ScriptedUpstream::start(
        Arc::new(|_| UpstreamAnswer::Accept(String::new())),
        Arc::new(move |mut c: UpstreamConn| {
            while let Some(f) = c.recv() {
                if f.opcode == CLOSE {
                    codes
                        .lock()
                        .expect("codes")
                        .push(f.close_code().unwrap_or(0));
                    c.send(true, CLOSE, &f.payload);
                    return;
                }
                c.send(f.fin, f.opcode, &f.payload);
            }
        }),
    )
}

fn drain_test(close_code: &str, expected: u16) {
    let codes = Arc::new(Mutex::new(Vec::new()));
    let upstream = recording_upstream(codes.clone());
    let admin = free_port();
    let drain = format!("drain:\n  period: 2s\n  timeout: 6s\n  close_code: {close_code}\n");
    let mut gw = Gateway::start(&config(upstream.addr, admin, &drain));
    let mut clients: Vec<WsClient> = (0..12).map(|_| WsClient::connect(gw.addr, "/")).collect();
    for c in &mut clients {
        c.send_text("hi");
        assert_eq!(c.recv().expect("echo").payload, b"hi");
    }
    let signalled = Instant::now();
    gw.signal("TERM");
    // Not ready any more, still alive; no new connections are taken.
    let end = Instant::now() + Duration::from_secs(1);
    while get(admin, "/readyz").0 != 503 {
        assert!(Instant::now() < end, "readyz did not turn 503");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(get(admin, "/healthz").0, 200);
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        TcpStream::connect(gw.addr)
            .map(|mut s| {
                // A connect may still complete in the kernel's backlog of a closing socket; it must not be served.
                s.set_read_timeout(Some(Duration::from_secs(1))).ok();
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
                let mut buf = [0u8; 64];
                !matches!(s.read(&mut buf), Ok(n) if n > 0)
            })
            .unwrap_or(true),
        "a new connection was served while draining"
    );

    // Each client waits for its own Close on a thread of its own, so every arrival time is its own (read one after
    // the other, later arrivals would be stamped when the earlier wait ended).
    let waits: Vec<_> = clients
        .drain(..)
        .map(|mut c| {
            std::thread::spawn(move || {
                let close = c
                    .recv_within(Duration::from_secs(5))
                    .expect("a close frame while draining");
                let arrived = signalled.elapsed();
                assert_eq!(close.opcode, CLOSE);
                assert_eq!(close.close_code(), Some(expected));
                c.send(true, CLOSE, &close_payload(expected, ""));
                arrived
            })
        })
        .collect();
    let at: Vec<Duration> = waits
        .into_iter()
        .map(|w| w.join().expect("a client saw its close"))
        .collect();
    let first = at.iter().min().copied().unwrap_or_default();
    let last = at.iter().max().copied().unwrap_or_default();
    assert!(
        last < Duration::from_millis(2600),
        "closes must fall inside the 2 s period: {at:?}"
    );
    assert!(
        last - first > Duration::from_millis(300),
        "closes must be spread, not sent at once: {at:?}"
    );
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("the gateway exits after the drain");
    assert!(status.success(), "{status:?}");
    let codes = codes.lock().expect("codes").clone();
    assert_eq!(
        codes.len(),
        12,
        "every upstream leg is closed too: {codes:?}"
    );
    assert!(codes.iter().all(|c| *c == expected), "{codes:?}");
}

#[test]
fn sigterm_drains_with_1001_spread_over_the_period_and_exits() {
    drain_test("going_away", 1001);
}

#[test]
fn a_restart_drain_sends_1012() {
    drain_test("1012", 1012);
}

#[test]
fn a_second_signal_stops_at_once() {
    let upstream = ScriptedUpstream::echo();
    let admin = free_port();
    let drain = "drain:\n  period: 30s\n  timeout: 60s\n";
    let mut gw = Gateway::start(&config(upstream.addr, admin, drain));
    let mut ws = WsClient::connect(gw.addr, "/");
    ws.send_text("x");
    assert!(ws.recv().is_some());
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        gw.wait_exit(Duration::from_millis(100)).is_none(),
        "still draining"
    );
    gw.signal("INT");
    let status = gw.wait_exit(Duration::from_secs(2)).expect("exits at once");
    assert!(!status.success());
}

#[test]
fn systemd_is_told_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let upstream = ScriptedUpstream::echo();
    let admin = free_port();
    let yaml = config(
        upstream.addr,
        admin,
        "drain:\n  period: 0s\n  timeout: 2s\n",
    );
    let path_text = path.to_string_lossy().into_owned();
    let mut gw = Gateway::start_env(&yaml, &[("NOTIFY_SOCKET", &path_text)]);
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    gw.signal("HUP");
    assert_eq!(next(), "RELOADING=1");
    assert_eq!(next(), "READY=1");
    gw.signal("TERM");
    assert_eq!(next(), "STOPPING=1");
    assert!(
        gw.wait_exit(Duration::from_secs(3))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn an_admin_port_in_use_stops_the_start_with_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("r.yaml");
    std::fs::write(
        &file,
        format!("listeners: [{{name: a, bind: '127.0.0.1:0'}}]\nadmin: {{bind: '{addr}'}}\nroutes: [{{path: /, echo: true}}]\n"),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin") && err.contains(&addr.to_string()),
        "{err}"
    );
}

#[test]
fn json_logs_redact_tokens_and_tell_the_life_of_a_websocket() {
    let upstream = ScriptedUpstream::echo();
    let admin = free_port();
    let yaml = config(upstream.addr, admin, "log_format: json\nlog_interval: 1s\n");
    let gw = Gateway::start_logged(&yaml, "info");
    let plain = http_request(
        gw.addr,
        "GET /plain?room=1&token=abc123 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&plain), 200);
    let mut ws = WsClient::connect(gw.addr, "/chat?access_token=xyz789&room=2");
    ws.send_text("hello");
    assert!(ws.recv().is_some());
    // Long enough for one periodic line (log_interval 1s, published on the 20 ms tick).
    std::thread::sleep(Duration::from_millis(1300));
    ws.send(true, CLOSE, &close_payload(1000, ""));
    assert_eq!(ws.recv().expect("close answer").close_code(), Some(1000));
    std::thread::sleep(Duration::from_millis(300));
    let log = gw.stop();
    assert!(
        !log.contains("abc123") && !log.contains("xyz789"),
        "a token reached the log:\n{log}"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no `{message}` line in\n{log}"))
            .clone()
    };
    let access = find("access");
    assert_eq!(access["target"], "access");
    assert_eq!(access["fields"]["target"], "/plain?room=1&token=REDACTED");
    assert_eq!(access["fields"]["status"], 200);
    let opened = find("websocket opened");
    assert_eq!(
        opened["fields"]["target"],
        "/chat?access_token=REDACTED&room=2"
    );
    assert_eq!(opened["fields"]["upstream"], "up");
    let open = find("websocket open");
    assert_eq!(open["fields"]["messages_in"], 1);
    let closed = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("websocket closed"))
        })
        .unwrap_or_else(|| panic!("no close line in\n{log}"));
    assert_eq!(closed["fields"]["client_close"], "1000");
    assert_eq!(closed["fields"]["messages_in"], 1);
    assert_eq!(closed["fields"]["messages_out"], 1);
}

/// A server that answers every request with 200 while `healthy`, else 503, and closes.
struct HealthServer {
    addr: SocketAddr,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl HealthServer {
    fn start() -> HealthServer {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let healthy = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (healthy.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut buf = [0u8; 2048];
                        let _ = c.read(&mut buf);
                        let answer: &[u8] = if h.load(Ordering::Relaxed) {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        } else {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        };
                        let _ = c.write_all(answer);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HealthServer {
            addr,
            healthy,
            stop,
        }
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn health_checks_take_a_failing_server_out_and_bring_it_back() {
    use std::sync::atomic::Ordering;
    // An echo server that also passes the HTTP check.
    let echo = ScriptedUpstream::start(
        Arc::new(|request: &str| {
            if request.to_ascii_lowercase().contains("upgrade: websocket") {
                UpstreamAnswer::Accept(String::new())
            } else {
                UpstreamAnswer::Raw(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec())
            }
        }),
        Arc::new(|mut c: UpstreamConn| c.echo_until_close()),
    );
    let flaky = HealthServer::start();
    let admin = free_port();
    // `flaky` answers checks but not WebSocket upgrades: while it is in the pool, half the upgrades fail.
    let yaml = format!(
        "listeners:\n  - name: test\n    bind: 127.0.0.1:0\nadmin:\n  bind: {admin}\n\
         upstreams:\n  up:\n    servers: [{}, {}]\n    max_attempts: 1\n\
         \x20   health: {{path: /healthz, interval: 100ms, timeout: 500ms, healthy_after: 2, unhealthy_after: 2}}\n\
         routes:\n  - path: /\n    upstream: up\n",
        flaky.addr, echo.addr
    );
    let gw = Gateway::start_logged(&yaml, "info");
    let series = format!(
        "ringway_upstream_server_up{{upstream=\"up\",server=\"{}\"}}",
        flaky.addr
    );
    wait_for(admin, &series, 1.0);
    flaky.healthy.store(false, Ordering::Relaxed);
    wait_for(admin, &series, 0.0);
    // Out of the pool: every upgrade lands on the echo server.
    for i in 0..10 {
        let mut ws = WsClient::connect(gw.addr, "/");
        ws.send_text(&format!("m{i}"));
        assert_eq!(
            ws.recv().expect("echo").payload,
            format!("m{i}").into_bytes()
        );
    }
    flaky.healthy.store(true, Ordering::Relaxed);
    wait_for(admin, &series, 1.0);
    let log = gw.stop();
    assert!(
        log.contains("marked down (health check)") && log.contains("503"),
        "{log}"
    );
    assert!(log.contains("back up (health check)"), "{log}");
}

/// Sets `net.ipv4.tcp_migrate_req` (connections queued on a closing SO_REUSEPORT listener move to another one of
/// its group instead of being reset) for the test's duration; `None` when it cannot be enabled (not root).
struct MigrateReq(Option<String>);

impl MigrateReq {
    const PATH: &'static str = "/proc/sys/net/ipv4/tcp_migrate_req";

    fn enable() -> Option<MigrateReq> {
        let before = std::fs::read_to_string(Self::PATH).ok()?;
        if before.trim() == "1" {
            return Some(MigrateReq(None));
        }
        std::fs::write(Self::PATH, "1").ok()?;
        Some(MigrateReq(Some(before)))
    }
}

impl Drop for MigrateReq {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = std::fs::write(Self::PATH, before.trim());
        }
    }
}

#[test]
fn a_binary_upgrade_with_takeover_refuses_no_connection() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let Some(_migrate) = MigrateReq::enable() else {
        eprintln!("skipped: needs net.ipv4.tcp_migrate_req=1 (root), see README, Operations");
        return;
    };
    let port = free_port();
    let yaml = format!(
        "listeners:\n  - name: test\n    bind: {port}\ndrain:\n  period: 1s\n  timeout: 3s\nroutes:\n  - path: /\n    echo: true\n"
    );
    let mut old = Gateway::start(&yaml);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, served, failures) = (stop.clone(), served.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let attempt = (|| -> std::io::Result<String> {
                        let mut s = TcpStream::connect(port)?;
                        s.set_read_timeout(Some(Duration::from_secs(3)))?;
                        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                        let mut answer = String::new();
                        s.read_to_string(&mut answer)?;
                        Ok(answer)
                    })();
                    match attempt {
                        Ok(a) if a.starts_with("HTTP/1.1 200") => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(a) => failures
                            .lock()
                            .expect("failures")
                            .push(format!("answer: {a:.60}")),
                        Err(e) => failures.lock().expect("failures").push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let new = Gateway::start_with(&yaml, &["--takeover"]);
    std::thread::sleep(Duration::from_millis(300));
    old.signal("TERM");
    let status = old
        .wait_exit(Duration::from_secs(5))
        .expect("the old gateway exits");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let failures = failures.lock().expect("failures").clone();
    assert!(
        failures.is_empty(),
        "{} failed during the switch: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        served.load(Ordering::Relaxed) > 100,
        "too few requests to mean anything"
    );
    assert_eq!(
        status_of(&http_request(new.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
        200
    );
}
