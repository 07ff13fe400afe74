//! Test harness shared by the gateway's integration tests: start the real `ringway` binary from a YAML config,
//! plus a small blocking WebSocket client and scripted WebSocket upstreams over loopback. Everything a test starts
//! is stopped when its handle is dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running `ringway` process; killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    stderr: Option<JoinHandle<String>>,
}

impl Gateway {
    /// Starts the gateway with `yaml` (use `bind: 127.0.0.1:0`; the bound port is read from its stdout).
    pub fn start(yaml: &str) -> Gateway {
        Self::start_with(yaml, &[])
    }

    /// Like [`Gateway::start`] with extra command-line arguments (e.g. `["--driver", "epoll"]`).
    pub fn start_with(yaml: &str, args: &[&str]) -> Gateway {
        Self::start_wrapped(yaml, args, &[])
    }

    /// Like [`Gateway::start_with`], run through `wrapper` (e.g. `["prlimit", "--nofile=64:64", "--"]`).
    pub fn start_wrapped(yaml: &str, args: &[&str], wrapper: &[&str]) -> Gateway {
        let log = std::env::var("RINGWAY_TEST_LOG").unwrap_or_else(|_| "warn".into());
        Self::spawn(yaml, args, wrapper, &log)
    }

    /// Like [`Gateway::start`] with the log filter `log` (e.g. `info`, to check a refusal's log line).
    pub fn start_logged(yaml: &str, log: &str) -> Gateway {
        Self::spawn(yaml, &[], &[], log)
    }

    /// Like [`Gateway::start`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let log = std::env::var("RINGWAY_TEST_LOG").unwrap_or_else(|_| "info".into());
        Self::spawn_env(yaml, &[], &[], &log, env)
    }

    fn spawn(yaml: &str, args: &[&str], wrapper: &[&str], log: &str) -> Gateway {
        Self::spawn_env(yaml, args, wrapper, log, &[])
    }

    fn spawn_env(
        yaml: &str,
        args: &[&str],
        wrapper: &[&str],
        log: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringway.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_ringway"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_ringway")),
        };
        let mut child = command
            .arg("--config")
            .arg(&path)
            .args(args)
            .env("RUST_LOG", log)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringway");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("ringway listening on ") {
                        let addr = rest.split_whitespace().next().unwrap();
                        break addr.parse().unwrap();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let mut err = String::new();
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    panic!("ringway did not start: {err}");
                }
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        Gateway {
            child,
            addr,
            _dir: dir,
            stderr: Some(stderr),
        }
    }

    /// Stops the gateway and returns what it logged on stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Sends `signal` (`TERM`, `HUP`, `INT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The route file the gateway was started with (rewrite it, then send `HUP`).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("ringway.yaml")
    }

    /// Process id, for reading /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A decoded frame as seen by the test client or a scripted upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// Close code of a close frame, if present.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

pub const TEXT: u8 = 1;
pub const BINARY: u8 = 2;
pub const CLOSE: u8 = 8;
pub const PING: u8 = 9;
pub const PONG: u8 = 10;

/// Encodes a frame; masked with `mask` when given.
pub fn encode(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mbit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mbit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mbit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Close payload: code + reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// Reads one frame from a blocking stream (unmasking if masked). `None` on EOF/reset/timeout.
pub fn read_frame(stream: &mut impl Read) -> Option<Frame> {
    read_wire_frame(stream).map(|w| w.frame)
}

/// Reads an HTTP head (up to and including the blank line) byte by byte, so no frame bytes are consumed.
pub fn read_head(stream: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return if head.is_empty() {
                None
            } else {
                Some(String::from_utf8_lossy(&head).into_owned())
            };
        }
        head.push(byte[0]);
        if head.len() > 65536 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Status code of an HTTP response head.
pub fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Value of a header in an HTTP head (case-insensitive name).
pub fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const CLIENT_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A blocking WebSocket test client.
pub struct WsClient {
    pub stream: TcpStream,
    /// The gateway's 101 head.
    pub head: String,
}

impl WsClient {
    /// Opens a WebSocket through `addr` to `path`; panics unless the answer is 101 with the right accept key.
    pub fn connect(addr: SocketAddr, path: &str) -> WsClient {
        Self::connect_with(addr, path, &[]).unwrap_or_else(|head| panic!("upgrade refused: {head}"))
    }

    /// Opens a WebSocket with extra request headers; `Err(head)` if the answer is not 101.
    pub fn connect_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, String> {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        let head = read_head(&mut stream).unwrap_or_default();
        if status_of(&head) != 101 {
            return Err(head);
        }
        assert_eq!(
            header_of(&head, "sec-websocket-accept"),
            Some(CLIENT_ACCEPT),
            "{head}"
        );
        Ok(WsClient { stream, head })
    }

    /// Sends one masked frame.
    pub fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&encode(
            fin,
            false,
            opcode,
            payload,
            Some([0x37, 0xfa, 0x21, 0x3d]),
        ));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(true, TEXT, text.as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Next frame, or None on EOF / timeout.
    pub fn recv(&mut self) -> Option<Frame> {
        read_frame(&mut self.stream)
    }

    /// Next frame within `timeout`.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<Frame> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let f = read_frame(&mut self.stream);
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        f
    }

    /// Whether the gateway closed the TCP connection (EOF) within `timeout`.
    pub fn eof_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut b = [0u8; 1024];
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

/// Sends a raw HTTP request on a new connection and returns the response head (body not read).
pub fn http_request(addr: SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    read_head(&mut stream).unwrap_or_default()
}

/// How a scripted upstream connection behaves after its handshake.
pub type Script = Arc<dyn Fn(UpstreamConn) + Send + Sync>;

/// One accepted upstream-side WebSocket connection (after the 101), with the request head the gateway sent.
pub struct UpstreamConn {
    pub stream: TcpStream,
    pub request: String,
}

impl UpstreamConn {
    /// Next frame from the gateway (masked client frames, unmasked here).
    pub fn recv(&mut self) -> Option<Frame> {
        read_frame(&mut self.stream)
    }

    /// Sends one unmasked server frame.
    pub fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let _ = self
            .stream
            .write_all(&encode(fin, false, opcode, payload, None));
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Echoes data frames and answers pings until a close arrives (answered) or the connection ends.
    pub fn echo_until_close(&mut self) {
        while let Some(f) = self.recv() {
            match f.opcode {
                PING => self.send(true, PONG, &f.payload),
                PONG => {}
                CLOSE => {
                    self.send(true, CLOSE, &f.payload);
                    return;
                }
                op => self.send(f.fin, op, &f.payload),
            }
        }
    }
}

/// A scripted WebSocket upstream on a loopback port: accepts connections, answers the upgrade (or whatever
/// `answer` returns), then runs `script` on a thread per connection. Stopped on drop.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    pub requests: Arc<std::sync::Mutex<Vec<String>>>,
}

/// How the upstream answers an upgrade request: `None` = a correct 101 (choosing `protocol`/`extensions` headers
/// given by the closure as extra lines), `Some(raw)` = send these bytes instead and close.
pub type Answer = Arc<dyn Fn(&str) -> UpstreamAnswer + Send + Sync>;

pub enum UpstreamAnswer {
    /// 101 with these extra header lines (e.g. "Sec-WebSocket-Protocol: chat\r\n").
    Accept(String),
    /// Raw bytes (a refusal), then close.
    Raw(Vec<u8>),
    /// Accept the TCP connection and never answer.
    Silent,
}

impl ScriptedUpstream {
    /// An upstream that echoes everything.
    pub fn echo() -> ScriptedUpstream {
        Self::start(
            Arc::new(|_| UpstreamAnswer::Accept(String::new())),
            Arc::new(|mut c: UpstreamConn| c.echo_until_close()),
        )
    }

    pub fn start(answer: Answer, script: Script) -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_nodelay(true).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(20)))
                            .unwrap();
                        let (answer, script, requests, stop3) = (
                            answer.clone(),
                            script.clone(),
                            requests2.clone(),
                            stop2.clone(),
                        );
                        std::thread::spawn(move || {
                            let Some(request) = read_head(&mut stream) else {
                                return;
                            };
                            requests.lock().unwrap().push(request.clone());
                            let key = header_of(&request, "sec-websocket-key")
                                .unwrap_or("")
                                .to_owned();
                            match answer(&request) {
                                UpstreamAnswer::Accept(extra) => {
                                    let accept = accept_key(&key);
                                    let head = format!(
                                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                                         Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
                                    );
                                    if stream.write_all(head.as_bytes()).is_ok() {
                                        script(UpstreamConn { stream, request });
                                    }
                                }
                                UpstreamAnswer::Raw(bytes) => {
                                    let _ = stream.write_all(&bytes);
                                }
                                UpstreamAnswer::Silent => {
                                    while !stop3.load(Ordering::Relaxed) {
                                        std::thread::sleep(Duration::from_millis(20));
                                    }
                                }
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        ScriptedUpstream {
            addr,
            stop,
            accept: Some(accept),
            requests,
        }
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// RFC 6455 accept key (SHA-1 + base64), computed independently of the gateway's code via frame-simd's helper.
pub fn accept_key(key: &str) -> String {
    frame_simd::handshake::accept_key(key.as_bytes())
}

/// A YAML config with one listener on an ephemeral port, one upstream pool `up` with `servers`, and one route `/`
/// to it with the given `websocket:` block lines (indented by the caller-free helper).
pub fn config_for(servers: &[SocketAddr], websocket: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("      - {s}\n")).collect();
    let ws: String = websocket.lines().map(|l| format!("      {l}\n")).collect();
    let ws_block = if ws.is_empty() {
        String::new()
    } else {
        format!("    websocket:\n{ws}")
    };
    format!(
        "listeners:\n  - name: test\n    bind: 127.0.0.1:0\nlimits:\n  handshake_timeout: 2s\n  close_timeout: 1s\n\
         upstreams:\n  up:\n    servers:\n{}    connect_timeout: 1s\n    fail_cooldown: 2s\n\
         routes:\n  - path: /\n    upstream: up\n{ws_block}",
        servers.concat()
    )
}

// ---- Helpers appended for the WebSocket integration tests (tests/websocket*.rs). ----

/// A frame read off the wire with the masking key it carried (`None` = unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    pub frame: Frame,
    pub mask: Option<[u8; 4]>,
}

/// Reads one frame and reports whether it was masked (payload unmasked). `None` on EOF/reset/timeout.
pub fn read_wire_frame(stream: &mut impl Read) -> Option<WireFrame> {
    let mut h = [0u8; 2];
    stream.read_exact(&mut h).ok()?;
    let mut len = u64::from(h[1] & 0x7F);
    if len == 126 {
        let mut b = [0u8; 2];
        stream.read_exact(&mut b).ok()?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        stream.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    let mask = if h[1] & 0x80 != 0 {
        let mut k = [0u8; 4];
        stream.read_exact(&mut k).ok()?;
        Some(k)
    } else {
        None
    };
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    stream.read_exact(&mut payload).ok()?;
    if let Some(k) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    let frame = Frame {
        fin: h[0] & 0x80 != 0,
        rsv1: h[0] & 0x40 != 0,
        opcode: h[0] & 0x0F,
        payload,
    };
    Some(WireFrame { frame, mask })
}

/// Whether `stream` reaches EOF (or a reset) within `timeout`, discarding whatever arrives before it.
pub fn stream_eof_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut b = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return true;
            }
            Err(_) => return false,
        }
    }
}

impl UpstreamConn {
    /// Next frame within `timeout`.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<Frame> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let f = read_frame(&mut self.stream);
        self.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        f
    }

    /// Next frame with its masking key.
    pub fn recv_wire(&mut self) -> Option<WireFrame> {
        read_wire_frame(&mut self.stream)
    }

    /// Next frame that is not a ping, answering the gateway's pings on the way.
    pub fn recv_skipping_pings(&mut self) -> Option<Frame> {
        loop {
            let f = self.recv()?;
            if f.opcode == PING {
                self.send(true, PONG, &f.payload);
                continue;
            }
            return Some(f);
        }
    }

    /// Whether the gateway closed this connection within `timeout`.
    pub fn eof_within(&mut self, timeout: Duration) -> bool {
        stream_eof_within(&mut self.stream, timeout)
    }
}

impl WsClient {
    /// Next frame with its masking key (server frames must be unmasked).
    pub fn recv_wire(&mut self) -> Option<WireFrame> {
        read_wire_frame(&mut self.stream)
    }

    /// Sends one masked frame with RSV1 set.
    pub fn send_rsv1(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&encode(
            fin,
            true,
            opcode,
            payload,
            Some([0x11, 0x22, 0x33, 0x44]),
        ));
    }
}

impl ScriptedUpstream {
    /// An upstream that accepts every upgrade (101 plus `extra` header lines) and hands each connection to the
    /// test through the returned channel, so the test drives the upstream side itself.
    pub fn handoff(extra: &str) -> (ScriptedUpstream, std::sync::mpsc::Receiver<UpstreamConn>) {
        let extra = extra.to_owned();
        Self::handoff_with(Arc::new(move |_| UpstreamAnswer::Accept(extra.clone())))
    }

    /// Like [`ScriptedUpstream::handoff`] with a custom answer.
    pub fn handoff_with(
        answer: Answer,
    ) -> (ScriptedUpstream, std::sync::mpsc::Receiver<UpstreamConn>) {
        let (tx, rx) = std::sync::mpsc::channel::<UpstreamConn>();
        let tx = std::sync::Mutex::new(tx);
        let up = Self::start(
            answer,
            Arc::new(move |c: UpstreamConn| {
                let _ = tx.lock().unwrap().send(c);
            }),
        );
        (up, rx)
    }

    /// An upstream that answers every upgrade with `raw` bytes and closes.
    pub fn refusing(raw: &[u8]) -> ScriptedUpstream {
        let raw = raw.to_vec();
        Self::start(
            Arc::new(move |_| UpstreamAnswer::Raw(raw.clone())),
            Arc::new(|_| {}),
        )
    }

    /// An upstream that accepts TCP connections and never answers.
    pub fn silent() -> ScriptedUpstream {
        Self::start(Arc::new(|_| UpstreamAnswer::Silent), Arc::new(|_| {}))
    }

    /// The request heads received so far.
    pub fn received(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A loopback address nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Adds lines (e.g. `"max_headers: 8"`) to the `limits:` block of a [`config_for`] YAML, replacing a default line
/// for the same key.
pub fn with_limits(yaml: &str, lines: &[&str]) -> String {
    let mut yaml = yaml.to_owned();
    for l in lines {
        let key = l.split(':').next().unwrap_or("");
        let existing = yaml
            .lines()
            .find(|x| x.starts_with(&format!("  {key}:")))
            .map(str::to_owned);
        match existing {
            Some(old) => yaml = yaml.replacen(&old, &format!("  {l}"), 1),
            None => yaml = yaml.replacen("limits:\n", &format!("limits:\n  {l}\n"), 1),
        }
    }
    yaml
}

/// Adds lines to the upstream pool `up` of a [`config_for`] YAML (e.g. `"max_attempts: 1"`), replacing a default
/// line for the same key.
pub fn with_upstream(yaml: &str, lines: &[&str]) -> String {
    let mut yaml = yaml.to_owned();
    for l in lines {
        let key = l.split(':').next().unwrap_or("");
        let existing = yaml
            .lines()
            .find(|x| x.starts_with(&format!("    {key}:")))
            .map(str::to_owned);
        match existing {
            Some(old) => yaml = yaml.replacen(&old, &format!("    {l}"), 1),
            None => {
                yaml = yaml.replacen(
                    "    connect_timeout:",
                    &format!("    {l}\n    connect_timeout:"),
                    1,
                )
            }
        }
    }
    yaml
}

/// A raw HTTP exchange: sends `raw` on a new connection and returns the response head and body (by
/// Content-Length, else until EOF or 5 s).
pub fn http_exchange(addr: SocketAddr, raw: &str) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let head = read_head(&mut stream).unwrap_or_default();
    let mut body = Vec::new();
    match header_of(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => {
            body.resize(n, 0);
            let _ = stream.read_exact(&mut body);
        }
        None => {
            let _ = stream.read_to_end(&mut body);
        }
    }
    (head, body)
}

/// A WebSocket upgrade request head for `path` with `Host: host`, the standard test key, and `extra` header lines
/// (each ending in `\r\n`).
pub fn upgrade_request(path: &str, host: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The gateway's resident memory in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `--driver` values, for tests that run on both.
pub const EPOLL: &str = "epoll";
pub const URING: &str = "io_uring";

/// Generates `<name>_epoll` and `<name>_io_uring` tests that call `fn <name>(driver: &str)` (use with
/// `#[macro_use] mod common;` and `use common::*;`).
#[allow(unused_macros)]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod epoll {
            $(#[test] fn $name() { super::$name(super::EPOLL) })*
        }
        mod io_uring {
            $(#[test] fn $name() { super::$name(super::URING) })*
        }
    };
}
