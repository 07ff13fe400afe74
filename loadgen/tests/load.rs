//! End-to-end tests: the real `ringway-load` binary against its own echo upstream and against
//! small misbehaving upstreams written here (stalling, corrupting). Every process and server a
//! test starts is stopped by a Drop guard.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringway_load::echo::{EchoConfig, EchoSession};
use ringway_load::handshake::{ServerDecision, parse_client_request, write_switching_protocols};

const BIN: &str = env!("CARGO_BIN_EXE_ringway-load");

/// The echo upstream as a child process, killed on drop.
struct EchoProcess {
    child: Child,
    addr: SocketAddr,
}

impl EchoProcess {
    fn start() -> Self {
        let mut child = Command::new(BIN)
            .args(["echo", "--listen", "127.0.0.1:0", "--threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .parse()
            .unwrap();
        Self { child, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the load generator to completion (it stops by itself; a watchdog kills it after 60 s).
fn load(args: &[&str]) -> (Output, Json) {
    let child = Command::new(BIN)
        .args(args)
        .args(["--json", "--quiet", "--threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(Some(child));
    let output = guard.wait_with_timeout(Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let json = Json(stdout.lines().last().unwrap_or_default().to_owned());
    (output, json)
}

struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn wait_with_timeout(mut self, limit: Duration) -> Output {
        let start = Instant::now();
        let mut child = self.0.take().unwrap();
        loop {
            if child.try_wait().unwrap().is_some() || start.elapsed() > limit {
                let _ = child.kill();
                return child.wait_with_output().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `--json` line, with a tiny number extractor (no JSON dependency needed).
struct Json(String);

impl Json {
    fn num(&self, field: &str) -> f64 {
        let key = format!("\"{field}\":");
        let at = self
            .0
            .find(&key)
            .unwrap_or_else(|| panic!("{field} missing in `{}`", self.0));
        let rest = &self.0[at + key.len()..];
        let end = rest.find([',', '}']).unwrap();
        rest[..end].parse().unwrap()
    }

    fn raw(&self, field: &str) -> &str {
        let key = format!("\"{field}\":");
        let at = self
            .0
            .find(&key)
            .unwrap_or_else(|| panic!("{field} missing in `{}`", self.0));
        &self.0[at + key.len()..]
    }

    fn text(&self, field: &str) -> String {
        let rest = self.raw(field);
        let rest = rest
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("{field} is not a string"));
        rest[..rest.find('"').unwrap()].to_owned()
    }

    fn flag(&self, field: &str) -> bool {
        self.raw(field).starts_with("true")
    }
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn exact_counts_against_the_echo_upstream() {
    let echo = EchoProcess::start();
    let url = echo.url();
    for mode in [
        &["--size", "20..2000"][..],
        &["--text", "--size", "40..300"][..],
    ] {
        let mut args = vec![url.as_str(), "--conns", "8", "--inflight", "4"];
        args.extend_from_slice(&["--messages-per-conn", "500"]);
        args.extend_from_slice(mode);
        let (output, json) = load(&args);
        assert!(output.status.success(), "{}", describe(&output));
        assert_eq!(json.num("messages"), 4000.0, "{}", describe(&output));
        assert_eq!(json.num("connected"), 8.0);
        assert_eq!(json.num("conns"), 8.0);
        for zero in [
            "errors",
            "mismatches",
            "unexpected_closes",
            "connect_failures",
        ] {
            assert_eq!(json.num(zero), 0.0, "{zero}: {}", describe(&output));
        }
        assert!(json.num("p50_us") > 0.0 && json.num("max_us") >= json.num("p99_us"));
    }
}

#[test]
fn timed_closed_loop_reports_throughput_and_writes_files() {
    let echo = EchoProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let hgrm = dir.path().join("lat.hgrm");
    let svg = dir.path().join("lat.svg");
    let (output, json) = load(&[
        &echo.url(),
        "--conns",
        "4",
        "--duration",
        "500ms",
        // Long enough for every connection to be up before the window even on a loaded machine
        // (a connection that comes up after the run counts as a connect failure).
        "--warmup",
        "1s",
        "--hgrm",
        hgrm.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let messages = json.num("messages");
    assert!(messages > 0.0);
    assert!((json.num("duration_s") - 0.5).abs() < 1e-6);
    assert!((json.num("msgs_per_sec") - messages / 0.5).abs() < 1.0);
    assert!((json.num("bytes_per_sec") - 64.0 * messages / 0.5).abs() < 64.0);
    let hgrm = std::fs::read_to_string(hgrm).unwrap();
    assert!(
        hgrm.contains("Percentile") && hgrm.contains(&format!("Total count    = {messages:>12}"))
    );
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<path d=\"M"));
    // The human report goes to stderr when --json is given.
    assert!(String::from_utf8_lossy(&output.stderr).contains("result        OK"));
}

#[test]
fn connect_only_holds_every_connection() {
    let echo = EchoProcess::start();
    let (output, json) = load(&[
        &echo.url(),
        "--connect-only",
        "--conns",
        "60",
        "--ramp",
        "600",
        "--duration",
        "300ms",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(json.num("connected"), 60.0);
    assert_eq!(json.num("connect_failures"), 0.0);
    // 60 upgrades paced at 600/s take about 0.1 s.
    let rate = json.num("upgrades_per_sec");
    assert!(rate > 100.0 && rate < 700.0, "{}", describe(&output));
}

#[test]
fn a_run_ended_by_close_frames_says_which_codes() {
    let upstream = FaultyUpstream::start(Fault::CloseWith { code: 1001 });
    let url = format!("ws://{}/", upstream.addr);
    let (output, json) = load(&[&url, "--conns", "3", "--messages-per-conn", "5"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(json.num("unexpected_closes"), 3.0);
    assert!(
        json.0.contains("\"close_codes\":{\"1001\":3}"),
        "{}",
        json.0
    );
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(report.contains("closed by     1001 x 3"), "{report}");
}

#[test]
fn refused_connections_are_counted_and_fail_the_run() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}/");
    let (output, json) = load(&[&url, "--conns", "3", "--messages-per-conn", "1"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(json.num("connect_failures"), 3.0);
    assert_eq!(json.num("connected"), 0.0);
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        report.contains("first error   connect to 127.0.0.1"),
        "{report}"
    );
    // The reason the kernel gave, not ENOTCONN from asking an unconnected socket for its peer.
    assert!(report.contains("Connection refused"), "{report}");
    assert!(!report.contains("os error 107"), "{report}");
    // The JSON line says what ran and whether it passed.
    assert_eq!(json.text("url"), url);
    assert_eq!(json.text("mode"), "exact");
    assert!(!json.flag("pass"));
}

/// What a test upstream does wrong.
#[derive(Clone, Copy)]
enum Fault {
    /// Send a Close with `code` right after the upgrade.
    CloseWith { code: u16 },
    /// Stop echoing for `stall` once, `after` the upgrade.
    StallOnce { after: Duration, stall: Duration },
    /// Flip the last byte of the `nth` write (a payload byte of the last echoed frame).
    FlipByte { nth: usize },
    /// Write every echo in `chunk`-byte pieces with a pause between them, so frames (headers
    /// included) arrive split across reads.
    Trickle { chunk: usize },
}

/// A small blocking upstream built from the crate's own handshake and echo session, with a fault.
struct FaultyUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FaultyUpstream {
    fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || serve_faulty(stream, fault));
                }
            }
        });
        Self {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve_faulty(mut stream: TcpStream, fault: Fault) {
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut input = Vec::new();
    let head_len = loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        input.extend_from_slice(&buf[..n]);
        match parse_client_request(&input, None) {
            Ok(None) => continue,
            Ok(Some((len, ServerDecision::Upgrade { accept, .. }))) => {
                let mut out = Vec::new();
                write_switching_protocols(&mut out, &accept, None);
                stream.write_all(&out).unwrap();
                break len;
            }
            _ => return,
        }
    };
    input.drain(..head_len);
    if let Fault::CloseWith { code } = fault {
        let payload = code.to_be_bytes();
        let _ = stream.write_all(&[0x88, 2, payload[0], payload[1]]);
        // As a server does after its Close: wait for the client's answer (or its hang-up), then close.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        return;
    }
    let upgraded = Instant::now();
    let mut session = EchoSession::new(&EchoConfig::default(), Vec::new());
    let (mut writes, mut stalled) = (0usize, false);
    loop {
        let used = session.process(&mut input);
        input.drain(..used);
        let n = session.ready_len();
        if n > 0 {
            let mut out = session.take_out();
            writes += 1;
            match fault {
                Fault::StallOnce { after, stall } if !stalled && upgraded.elapsed() >= after => {
                    stalled = true;
                    std::thread::sleep(stall);
                }
                Fault::FlipByte { nth } if writes == nth && !session.is_done() => {
                    out[n - 1] ^= 0x20
                }
                _ => {}
            }
            if let Fault::Trickle { chunk } = fault {
                for piece in out[..n].chunks(chunk) {
                    if stream.write_all(piece).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            } else if stream.write_all(&out[..n]).is_err() {
                return;
            }
            session.put_back(out, n);
        }
        if session.is_done() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn open_loop_latency_includes_an_upstream_stall() {
    let stall = Duration::from_millis(500);
    let upstream = FaultyUpstream::start(Fault::StallOnce {
        after: Duration::from_millis(300),
        stall,
    });
    let url = format!("ws://{}/", upstream.addr);
    let (output, json) = load(&[
        &url,
        "--rate",
        "200",
        "--conns",
        "2",
        "--duration",
        "1500ms",
        "--warmup",
        "0s",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let stall_us = stall.as_micros() as f64;
    // The message scheduled when the stall began waited for all of it (minus the send delay).
    assert!(
        json.num("max_us") >= 0.9 * stall_us,
        "{}",
        describe(&output)
    );
    // Coordinated omission corrected: every message scheduled during the stall is late, not just
    // the one in flight when it began, so far more than 1% of messages are slow…
    assert!(
        json.num("p99_us") >= 0.5 * stall_us,
        "{}",
        describe(&output)
    );
    // …while the typical message is fast.
    assert!(json.num("p50_us") < 0.2 * stall_us, "{}", describe(&output));
    // 200 msg/s for 1.5 s, less the connection setup time; none lost.
    let messages = json.num("messages");
    assert!((250.0..=300.0).contains(&messages), "{}", describe(&output));
    assert_eq!(json.num("lost"), 0.0);
}

#[test]
fn corrupted_echo_is_detected_and_fails_the_run() {
    let upstream = FaultyUpstream::start(Fault::FlipByte { nth: 5 });
    let url = format!("ws://{}/", upstream.addr);
    let (output, json) = load(&[&url, "--conns", "2", "--messages-per-conn", "50"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(json.num("mismatches"), 2.0, "{}", describe(&output));
    assert_eq!(json.num("messages"), 98.0);
    assert_eq!(json.num("errors"), 0.0);
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        report.contains("first error   mismatch in echo"),
        "{report}"
    );
}

#[test]
fn echoes_split_across_reads_are_reassembled() {
    let upstream = FaultyUpstream::start(Fault::Trickle { chunk: 3 });
    let url = format!("ws://{}/", upstream.addr);
    for kind in [
        &["--size", "20..300"][..],
        &["--text", "--size", "40..200"][..],
    ] {
        let mut args = vec![url.as_str(), "--conns", "2", "--messages-per-conn", "40"];
        args.extend_from_slice(&["--inflight", "3"]);
        args.extend_from_slice(kind);
        let (output, json) = load(&args);
        assert!(output.status.success(), "{}", describe(&output));
        assert_eq!(json.num("messages"), 80.0);
        assert_eq!(json.num("mismatches"), 0.0);
    }
}

#[test]
fn echo_keeps_reading_while_the_client_is_still_sending() {
    // Autobahn 9.2.6: a client that writes a 16 MiB message before reading anything. An echo that
    // blocks on writing its reply before reading more deadlocks with it.
    let echo = EchoProcess::start();
    let mut s = upgraded_client(echo.addr);
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let len = 16usize << 20;
    let mut frame = vec![0x82, 0xff];
    frame.extend_from_slice(&(len as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]); // mask key 0: payload as is
    frame.resize(frame.len() + len, 0x5a);
    s.write_all(&frame).unwrap();
    let mut head = [0u8; 10];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[..2], [0x82, 0x7f]);
    assert_eq!(
        u64::from_be_bytes(head[2..].try_into().unwrap()),
        len as u64
    );
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    assert!(payload.iter().all(|&b| b == 0x5a));
}

/// Frames a test client sends: masked, key 0 would be legal but a real key exercises unmasking.
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    assert!(payload.len() < 126);
    let mut f = vec![first_byte, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

fn upgraded_client(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    s
}

fn read_all_until_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn echo_binary_speaks_the_protocol() {
    let echo = EchoProcess::start();
    // Fragmented text echoed frame by frame, ping answered, close answered with the same code.
    let mut s = upgraded_client(echo.addr);
    let mut msg = client_frame(0x01, b"hel");
    msg.extend(client_frame(0x89, b"p"));
    msg.extend(client_frame(0x80, b"lo"));
    msg.extend(client_frame(0x88, &[0x0f, 0xa0]));
    s.write_all(&msg).unwrap();
    assert_eq!(
        read_all_until_eof(&mut s),
        b"\x01\x03hel\x8a\x01p\x80\x02lo\x88\x02\x0f\xa0"
    );
    // Invalid UTF-8 -> 1007.
    let mut s = upgraded_client(echo.addr);
    s.write_all(&client_frame(0x81, &[0xed, 0xa0, 0x80]))
        .unwrap();
    assert_eq!(read_all_until_eof(&mut s), b"\x88\x02\x03\xef");
    // Reserved bits without an extension -> 1002.
    let mut s = upgraded_client(echo.addr);
    s.write_all(&client_frame(0xc2, b"x")).unwrap();
    assert_eq!(read_all_until_eof(&mut s), b"\x88\x02\x03\xea");
    // Frames sent one byte at a time (Autobahn 2.6 / 5.5): a ping, then a fragmented text message.
    let mut s = upgraded_client(echo.addr);
    s.set_nodelay(true).unwrap();
    let mut msg = client_frame(0x89, &[0xfe; 125]);
    msg.extend(client_frame(0x01, b"fragment1"));
    msg.extend(client_frame(0x80, b"fragment2"));
    msg.extend(client_frame(0x88, &[0x03, 0xe8]));
    for byte in &msg {
        s.write_all(std::slice::from_ref(byte)).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    let mut expect = vec![0x8a, 125];
    expect.extend_from_slice(&[0xfe; 125]);
    expect.extend_from_slice(b"\x01\x09fragment1\x80\x09fragment2\x88\x02\x03\xe8");
    assert_eq!(read_all_until_eof(&mut s), expect);
    // A plain request (health check) gets 200.
    let mut s = TcpStream::connect(echo.addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let reply = String::from_utf8(read_all_until_eof(&mut s)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
}

/// A blocking TLS echo upstream (rustls server, the crate's echo session) using the test-only
/// certificate in `tests/fixtures` (CA `ca.pem`, leaf for `localhost` / 127.0.0.1, valid to 2126).
struct TlsEchoUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TlsEchoUpstream {
    fn start() -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let certs = CertificateDer::pem_file_iter(format!("{dir}/cert.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}/key.pem")).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let config = config.clone();
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    serve_blocking(&mut tls);
                });
            }
        });
        Self {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for TlsEchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Upgrade + echo over any blocking stream (used for TLS).
fn serve_blocking(stream: &mut (impl Read + Write)) {
    let mut buf = vec![0u8; 65536];
    let mut input = Vec::new();
    let head_len = loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        input.extend_from_slice(&buf[..n]);
        match parse_client_request(&input, None) {
            Ok(None) => continue,
            Ok(Some((len, ServerDecision::Upgrade { accept, .. }))) => {
                let mut out = Vec::new();
                write_switching_protocols(&mut out, &accept, None);
                if stream
                    .write_all(&out)
                    .and_then(|()| stream.flush())
                    .is_err()
                {
                    return;
                }
                break len;
            }
            _ => return,
        }
    };
    input.drain(..head_len);
    let mut session = EchoSession::new(&EchoConfig::default(), Vec::new());
    loop {
        let used = session.process(&mut input);
        input.drain(..used);
        let n = session.ready_len();
        if n > 0 {
            let out = session.take_out();
            if stream
                .write_all(&out[..n])
                .and_then(|()| stream.flush())
                .is_err()
            {
                return;
            }
            session.put_back(out, n);
        }
        if session.is_done() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn wss_with_a_ca_file_or_insecure() {
    let upstream = TlsEchoUpstream::start();
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ca.pem");
    let port = upstream.addr.port();
    // Verified against the CA, by name and by IP address.
    for url in [
        format!("wss://localhost:{port}/"),
        format!("wss://127.0.0.1:{port}/"),
    ] {
        let (output, json) = load(&[
            &url,
            "--ca",
            ca,
            "--conns",
            "3",
            "--messages-per-conn",
            "100",
        ]);
        assert!(output.status.success(), "{}", describe(&output));
        assert_eq!(json.num("messages"), 300.0);
        assert_eq!(json.num("mismatches"), 0.0);
    }
    // --insecure accepts the certificate without the CA.
    let url = format!("wss://127.0.0.1:{port}/");
    let (output, json) = load(&[
        &url,
        "--insecure",
        "--conns",
        "2",
        "--messages-per-conn",
        "10",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(json.num("messages"), 20.0);
    // Trusting only the leaf (not its issuer) fails verification: a connect failure, run fails.
    let wrong_ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cert.pem");
    let (output, json) = load(&[
        &url,
        "--ca",
        wrong_ca,
        "--conns",
        "1",
        "--messages-per-conn",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(json.num("connect_failures"), 1.0);
    assert!(String::from_utf8_lossy(&output.stderr).contains("TLS handshake"));
}
