//! Blocking HTTP/1.1 pieces for the proxy integration tests: a scriptable upstream server on a loopback port
//! (a thread per connection, every request logged with the connection it came on) and a small client that reads
//! responses framed by Content-Length, chunked coding or connection close. Everything stops on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Sequence number of the TCP connection it arrived on (0, 1, ...).
    pub conn: usize,
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// The body bytes exactly as received (chunk framing included).
    pub raw_body: Vec<u8>,
}

impl Request {
    pub fn method(&self) -> &str {
        self.head.split_whitespace().next().unwrap_or("")
    }

    pub fn target(&self) -> &str {
        self.head.split_whitespace().nth(1).unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.head, name)
    }

    /// All values of header `name`, in order.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        headers_of(&self.head, name)
    }
}

/// What the upstream does with a request.
pub enum Reply {
    /// Write these bytes and keep the connection for further requests.
    Raw(Vec<u8>),
    /// Write these bytes and close the connection.
    RawThenClose(Vec<u8>),
    /// Wait until [`HttpUpstream::release`] is called, then write these bytes.
    Hold(Vec<u8>),
    /// Never answer (keep the connection open until the upstream stops).
    Silent,
    /// Close the connection without answering.
    Close,
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A scriptable HTTP/1.1 upstream.
pub struct HttpUpstream {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Request>>>,
    /// TCP connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    release: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl HttpUpstream {
    /// Answers every request with `200`, body `name`, keep-alive.
    pub fn named(name: &str) -> HttpUpstream {
        let name = name.to_owned();
        Self::start(Arc::new(move |_| Reply::Raw(ok_response(name.as_bytes()))))
    }

    /// Echoes the request body back with Content-Length.
    pub fn echo() -> HttpUpstream {
        Self::start(Arc::new(|r: &Request| Reply::Raw(ok_response(&r.body))))
    }

    pub fn start(handler: Handler) -> HttpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, accepted2, release2, stop2) =
            (log.clone(), accepted.clone(), release.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let conn = accepted2.fetch_add(1, Ordering::SeqCst);
                        let (handler, log, release, stop) = (
                            handler.clone(),
                            log2.clone(),
                            release2.clone(),
                            stop2.clone(),
                        );
                        std::thread::spawn(move || {
                            serve(stream, conn, &handler, &log, &release, &stop)
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        HttpUpstream {
            addr,
            log,
            accepted,
            release,
            stop,
            accept: Some(accept),
        }
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Lets held replies go out.
    pub fn release(&self) {
        self.release.store(true, Ordering::SeqCst);
    }

    /// Waits until `n` requests were logged (or panics after 10 s).
    pub fn wait_requests(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "upstream saw fewer than {n} requests"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    conn: usize,
    handler: &Handler,
    log: &Mutex<Vec<Request>>,
    release: &AtomicBool,
    stop: &AtomicBool,
) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let head = match read_head_polling(&mut reader, stop) {
            Some(h) => h,
            None => return,
        };
        let (body, raw_body) = match read_body(&mut reader, &head, stop) {
            Some(b) => b,
            None => return,
        };
        let request = Request {
            conn,
            head,
            body,
            raw_body,
        };
        let reply = handler(&request);
        log.lock().unwrap().push(request);
        match reply {
            Reply::Raw(bytes) => {
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::RawThenClose(bytes) => {
                let _ = writer.write_all(&bytes);
                return;
            }
            Reply::Hold(bytes) => {
                while !release.load(Ordering::SeqCst) && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::Silent => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
            Reply::Close => return,
        }
    }
}

/// Reads one line including CRLF, retrying on read timeouts until `stop`; None on EOF.
fn read_line_polling(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return None,
            Ok(_) if line.ends_with(b"\n") => return Some(line),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

fn read_head_polling(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<String> {
    let mut head = Vec::new();
    loop {
        let line = read_line_polling(reader, stop)?;
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
    }
}

fn read_exact_polling(
    reader: &mut BufReader<TcpStream>,
    n: usize,
    stop: &AtomicBool,
) -> Option<Vec<u8>> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match reader.read(&mut out[got..]) {
            Ok(0) => return None,
            Ok(k) => got += k,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    Some(out)
}

/// Reads a request body framed by the head: (decoded, raw).
fn read_body(
    reader: &mut BufReader<TcpStream>,
    head: &str,
    stop: &AtomicBool,
) -> Option<(Vec<u8>, Vec<u8>)> {
    if header_of(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let cell = std::cell::RefCell::new(reader);
        read_chunked(
            || read_line_polling(&mut cell.borrow_mut(), stop),
            |n| read_exact_polling(&mut cell.borrow_mut(), n, stop),
        )
    } else {
        let n: usize = header_of(head, "content-length").map_or(0, |v| v.parse().unwrap());
        let body = read_exact_polling(reader, n, stop)?;
        Some((body.clone(), body))
    }
}

/// Decodes a chunked body strictly; returns (data, raw bytes).
fn read_chunked(
    mut line: impl FnMut() -> Option<Vec<u8>>,
    mut exact: impl FnMut(usize) -> Option<Vec<u8>>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let (mut data, mut raw) = (Vec::new(), Vec::new());
    loop {
        let size_line = line()?;
        raw.extend_from_slice(&size_line);
        assert!(
            size_line.ends_with(b"\r\n"),
            "chunk size line must end in CRLF"
        );
        let text = String::from_utf8_lossy(&size_line[..size_line.len() - 2]).into_owned();
        let size = usize::from_str_radix(text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        if size == 0 {
            loop {
                let t = line()?;
                raw.extend_from_slice(&t);
                if t == b"\r\n" {
                    return Some((data, raw));
                }
            }
        }
        let chunk = exact(size + 2)?;
        assert!(chunk.ends_with(b"\r\n"), "chunk data must end in CRLF");
        data.extend_from_slice(&chunk[..size]);
        raw.extend_from_slice(&chunk);
    }
}

/// `200 OK` with `body` and Content-Length.
pub fn ok_response(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// A chunked `200 OK` carrying `body` in chunks of `chunk` bytes.
pub fn chunked_response(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    r.extend_from_slice(&chunked(body, chunk));
    r
}

/// `body` in chunked coding, `chunk` bytes per chunk (the first with an extension), terminated.
pub fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut r = Vec::new();
    for (i, c) in body.chunks(chunk).enumerate() {
        let ext = if i == 0 { ";name=value" } else { "" };
        r.extend_from_slice(format!("{:x}{ext}\r\n", c.len()).as_bytes());
        r.extend_from_slice(c);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

/// Value of a header in an HTTP head (case-insensitive name).
pub fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    headers_of(head, name).into_iter().next()
}

pub fn headers_of<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.lines()
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

/// A response as the client read it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    /// The response body came chunked.
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.head, name)
    }
}

/// A blocking client connection to the gateway.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Sends `raw` and reads one response (to a non-HEAD request).
    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.response(false)
    }

    /// Reads one response; `head_request`: the request was HEAD (no body follows).
    pub fn response(&mut self, head_request: bool) -> Response {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .expect("read response head");
            assert!(
                n > 0,
                "connection closed before a response head (got {:?})",
                String::from_utf8_lossy(&head)
            );
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let head = String::from_utf8(head).unwrap();
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        if (100..200).contains(&status) {
            return Response {
                status,
                head,
                body: Vec::new(),
                chunked: false,
            };
        }
        let chunked = header_of(&head, "transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let body = if head_request || status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            let reader = &mut self.reader;
            let cell = std::cell::RefCell::new(reader);
            read_chunked(
                || {
                    let mut l = Vec::new();
                    (cell.borrow_mut().read_until(b'\n', &mut l).ok()? > 0).then_some(l)
                },
                |n| {
                    let mut b = vec![0u8; n];
                    cell.borrow_mut().read_exact(&mut b).ok()?;
                    Some(b)
                },
            )
            .expect("complete chunked body")
            .0
        } else if let Some(n) = header_of(&head, "content-length") {
            let mut b = vec![0u8; n.parse().unwrap()];
            self.reader.read_exact(&mut b).expect("complete body");
            b
        } else {
            let mut b = Vec::new();
            self.reader
                .read_to_end(&mut b)
                .expect("close-delimited body");
            b
        };
        Response {
            status,
            head,
            body,
            chunked,
        }
    }

    /// Whether the gateway closed the connection (EOF or reset) within `timeout`, with no further bytes.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .unwrap();
        let mut b = [0u8; 64];
        match self.reader.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}

/// A YAML config: one listener on an ephemeral port, upstream `up` with `servers` (each line a YAML list item
/// body such as `127.0.0.1:9000` or `{address: 127.0.0.1:9000, weight: 3}`), extra upstream settings, route `/`.
pub fn config(servers: &[String], upstream_extra: &str, handshake_timeout: &str) -> String {
    let servers: String = servers.iter().map(|s| format!("      - {s}\n")).collect();
    let extra: String = upstream_extra
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    format!(
        "listeners:\n  - name: test\n    bind: 127.0.0.1:0\nlimits:\n  handshake_timeout: {handshake_timeout}\n\
         upstreams:\n  up:\n    servers:\n{servers}{extra}\
         routes:\n  - path: /\n    upstream: up\n"
    )
}

/// An address where nothing listens (bound, then freed).
pub fn dead_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
