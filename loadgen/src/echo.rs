//! The echo upstream: a fast, strict WebSocket echo server (`ringway-load echo`).
//!
//! Thread-per-core: every worker thread runs its own monoio runtime and accepts on its own
//! SO_REUSEPORT listener (TCP_NODELAY). A connection does the HTTP upgrade, then echoes text and
//! binary frames one by one with the same fragmentation, answers Ping with Pong and Close with
//! Close, and fails the connection with the close code of any RFC 6455 violation (1002, 1007,
//! 1009) found by `frame_simd::FrameDecoder`. All replies produced by one read go out in one write.
//!
//! The protocol part ([`EchoSession`]) is sans-IO so it is unit-tested without sockets; the I/O
//! part is [`run`] / [`start`]. Plain HTTP requests (no upgrade) get `200 ok` (health checks).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use frame_simd::{
    Decoded, DecoderConfig, FrameDecoder, FrameHeader, MAX_HEADER_LEN, OpCode, PayloadMode, Role,
    Rsv, encode_close_payload, parse_close_payload,
};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};

use crate::handshake::{self, ServerDecision};
use crate::net;

/// Read buffer capacity of a busy connection (a read filled the small buffer).
const READ_BUF: usize = 64 * 1024;
/// Read buffer capacity of a new or idle connection.
const SMALL_BUF: usize = 4 * 1024;
/// Uncommitted echo bytes of a binary frame flushed before the frame ends (text frames are held
/// until their UTF-8 is known valid, so a Close can still follow cleanly).
const FLUSH_PARTIAL: usize = 1 << 20;

/// How long a closing connection waits for the client's side of the close.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Echo server settings.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Listen address (port 0: the kernel picks one; it is printed on stdout).
    pub listen: SocketAddr,
    /// Worker threads.
    pub threads: usize,
    /// Subprotocol selected when the client offers it.
    pub subprotocol: Option<String>,
    /// Largest frame accepted (1009 above).
    pub max_frame_size: u64,
    /// Largest message accepted (1009 above).
    pub max_message_size: u64,
}

impl Default for EchoConfig {
    fn default() -> Self {
        let d = DecoderConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            threads: 1,
            subprotocol: None,
            max_frame_size: d.max_frame_size,
            max_message_size: d.max_message_size,
        }
    }
}

/// A running echo server (its worker threads live until the process exits).
#[derive(Debug)]
pub struct RunningEcho {
    /// The bound address.
    pub local_addr: SocketAddr,
    /// Worker threads.
    pub threads: Vec<std::thread::JoinHandle<io::Result<()>>>,
}

/// Binds the listeners and starts the worker threads.
pub fn start(cfg: EchoConfig) -> io::Result<RunningEcho> {
    let listeners = net::reuseport_listeners(cfg.listen, cfg.threads.max(1))?;
    let local_addr = listeners[0].local_addr()?;
    let cfg = std::sync::Arc::new(cfg);
    let mut threads = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let cfg = cfg.clone();
        let handle = std::thread::Builder::new()
            .name(format!("echo-{i}"))
            .spawn(move || net::block_on(accept_loop(listener, EchoConfig::clone(&cfg)))?)?;
        threads.push(handle);
    }
    Ok(RunningEcho {
        local_addr,
        threads,
    })
}

/// Runs the echo server until the process is killed. Prints `listening on ADDR` on stdout first.
pub fn run(cfg: EchoConfig) -> anyhow::Result<()> {
    net::raise_nofile_limit()?;
    let running = start(cfg)?;
    println!("listening on {}", running.local_addr);
    for t in running.threads {
        match t.join() {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("echo worker thread panicked"),
        }
    }
    Ok(())
}

async fn accept_loop(listener: std::net::TcpListener, cfg: EchoConfig) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let cfg = Rc::new(cfg);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors or similar: back off briefly instead of spinning.
            Err(_) => {
                monoio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        monoio::spawn(serve(stream, cfg.clone()));
    }
}

/// Serves one connection: upgrade, then echo until either side closes.
async fn serve(mut stream: TcpStream, cfg: Rc<EchoConfig>) {
    let mut input: Vec<u8> = Vec::with_capacity(SMALL_BUF);
    let mut out: Vec<u8> = Vec::with_capacity(512);
    // 1. The HTTP upgrade.
    let (head_len, accept, protocol) = loop {
        let (res, buf) = net::read_more(&mut stream, input).await;
        input = buf;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match handshake::parse_client_request(&input, cfg.subprotocol.as_deref()) {
            Ok(None) => {
                if input.len() == input.capacity() {
                    input.reserve(input.capacity());
                }
            }
            Ok(Some((n, ServerDecision::Upgrade { accept, protocol }))) => {
                break (n, accept, protocol);
            }
            Ok(Some((_, ServerDecision::Plain))) => {
                handshake::write_plain_response(&mut out, "200 OK", "ok\n");
                let _ = stream.write_all(out).await;
                let _ = stream.shutdown().await;
                return;
            }
            Ok(Some((_, ServerDecision::BadRequest(why)))) => {
                handshake::write_plain_response(&mut out, "400 Bad Request", why);
                let _ = stream.write_all(out).await;
                let _ = stream.shutdown().await;
                return;
            }
            Err(e) => {
                handshake::write_plain_response(&mut out, "400 Bad Request", &e.to_string());
                let _ = stream.write_all(out).await;
                let _ = stream.shutdown().await;
                return;
            }
        }
    };
    handshake::write_switching_protocols(&mut out, &accept, protocol.as_deref());
    input.drain(..head_len);
    let mut session = EchoSession::new(&cfg, out);
    // 2. Echo: a reader and a writer run side by side on the two halves of the socket, so a
    // client that sends a huge message (or many) before reading never deadlocks against us.
    // Everything one read produces goes out in one write (or fewer, when writes lag).
    let (mut rd, mut wr) = stream.into_split();
    let pipe = Pipe::default();
    let reader = async {
        let mut input = input;
        loop {
            let consumed = session.process(&mut input);
            input.drain(..consumed);
            session.move_ready_into(&mut pipe.pending.borrow_mut());
            pipe.writer.notify();
            if session.is_done() {
                break;
            }
            // Backpressure: a client that never reads cannot make us buffer without bound.
            pipe.reader
                .wait_until(|| pipe.pending.borrow().len() <= MAX_PENDING || pipe.failed.get())
                .await;
            if pipe.failed.get() {
                break;
            }
            let spare = input.capacity() - input.len();
            let (res, buf) = net::read_more(&mut rd, input).await;
            input = buf;
            match res {
                Ok(0) | Err(_) => break,
                // A read that filled the buffer: a busy connection gets the large one.
                Ok(n) if n == spare && input.capacity() < READ_BUF => {
                    input.reserve(READ_BUF - input.len());
                }
                Ok(_) => {}
            }
        }
        pipe.closed.set(true);
        pipe.writer.notify();
        if session.is_done() {
            // Our Close is going out: read and discard until the client closes too (bounded).
            // Dropping a socket with unread input makes the kernel send a RST, which can destroy
            // the Close frame before the client reads it.
            let deadline = monoio::time::Instant::now() + LINGER;
            loop {
                input.clear();
                match monoio::time::timeout_at(deadline, net::read_more(&mut rd, input)).await {
                    Ok((Ok(n), b)) if n > 0 => input = b,
                    _ => break,
                }
            }
        }
    };
    let writer = async {
        let mut spare: Vec<u8> = Vec::with_capacity(512);
        loop {
            pipe.writer
                .wait_until(|| !pipe.pending.borrow().is_empty() || pipe.closed.get())
                .await;
            if pipe.pending.borrow().is_empty() {
                break;
            }
            std::mem::swap(&mut spare, &mut *pipe.pending.borrow_mut());
            let (res, buf) = wr.write_all(spare).await;
            spare = buf;
            spare.clear();
            pipe.reader.notify();
            if res.is_err() {
                pipe.failed.set(true);
                return;
            }
        }
        // Everything (our Close included) is out: half-close.
        let _ = wr.shutdown().await;
    };
    monoio::join!(reader, writer);
}

/// Most echo bytes waiting for the writer before the reader stops reading.
const MAX_PENDING: usize = 64 << 20;

/// What the reader and the writer of one connection share (same thread, same task).
#[derive(Default)]
struct Pipe {
    /// Whole frames ready to be written.
    pending: std::cell::RefCell<Vec<u8>>,
    /// The reader has stopped (client gone, or our Close is in `pending`).
    closed: std::cell::Cell<bool>,
    /// A write failed: the client is gone.
    failed: std::cell::Cell<bool>,
    /// Wakes the writer (data or close).
    writer: Signal,
    /// Wakes the reader (pending drained).
    reader: Signal,
}

/// A single-waiter wake-up between two futures of the same task.
#[derive(Default)]
struct Signal(std::cell::Cell<Option<std::task::Waker>>);

impl Signal {
    fn notify(&self) {
        if let Some(waker) = self.0.take() {
            waker.wake();
        }
    }

    async fn wait_until(&self, ready: impl Fn() -> bool) {
        std::future::poll_fn(|cx| {
            if ready() {
                std::task::Poll::Ready(())
            } else {
                self.0.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await;
    }
}

/// The sans-IO echo state of one upgraded connection: feed it client bytes, take the bytes to
/// write back.
#[derive(Debug)]
pub struct EchoSession {
    decoder: FrameDecoder,
    /// Output: `out[..committed]` are whole frames (or flushable binary data), the rest is the
    /// echo of a frame still arriving.
    out: Vec<u8>,
    committed: usize,
    /// The current data frame's echo has been partly written already: a Close can no longer be
    /// framed cleanly after it.
    partial_flushed: bool,
    /// The current message is text.
    text: bool,
    done: bool,
}

impl EchoSession {
    /// A session that writes into `out` (which may already hold the 101 response).
    pub fn new(cfg: &EchoConfig, out: Vec<u8>) -> Self {
        let decoder = FrameDecoder::new(DecoderConfig {
            peer: Role::Client,
            max_frame_size: cfg.max_frame_size,
            max_message_size: cfg.max_message_size,
            allowed_rsv: Rsv::default(),
            validate_utf8: true,
            payload: PayloadMode::Unmask,
        });
        let committed = out.len();
        Self {
            decoder,
            out,
            committed,
            partial_flushed: false,
            text: false,
            done: false,
        }
    }

    /// Decodes as much of `input` as possible and appends the replies; returns the bytes consumed.
    pub fn process(&mut self, input: &mut [u8]) -> usize {
        let mut at = 0;
        while !self.done {
            match self.decoder.decode(&mut input[at..]) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::DataHeader { header, len }) => {
                    at += len;
                    if header.opcode != OpCode::Continuation {
                        self.text = header.opcode == OpCode::Text;
                    }
                    let echo = FrameHeader {
                        mask: None,
                        ..header
                    };
                    let mut head = [0u8; MAX_HEADER_LEN];
                    let n = echo.encode(&mut head);
                    self.out.extend_from_slice(&head[..n]);
                }
                Ok(Decoded::DataPayload { len, frame_end, .. }) => {
                    self.out.extend_from_slice(&input[at..at + len]);
                    at += len;
                    if frame_end {
                        self.committed = self.out.len();
                        self.partial_flushed = false;
                    } else if !self.text && self.out.len() - self.committed >= FLUSH_PARTIAL {
                        self.committed = self.out.len();
                        self.partial_flushed = true;
                    }
                }
                Ok(Decoded::Control { opcode, len }) => {
                    at += len;
                    match opcode {
                        OpCode::Ping => {
                            let payload = self.decoder.control_payload();
                            let head = FrameHeader::server(OpCode::Pong, payload.len() as u64);
                            let mut h = [0u8; MAX_HEADER_LEN];
                            let n = head.encode(&mut h);
                            self.out.extend_from_slice(&h[..n]);
                            self.out.extend_from_slice(payload);
                            self.committed = self.out.len();
                        }
                        OpCode::Close => {
                            // The decoder validated the payload; echo the code, drop the reason.
                            let code = match parse_close_payload(self.decoder.control_payload()) {
                                Ok(Some((code, _))) => Some(code),
                                _ => None,
                            };
                            self.close(code);
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    self.out.truncate(self.committed);
                    if !self.partial_flushed {
                        self.close(Some(e.close_code()));
                    }
                    self.done = true;
                }
            }
        }
        at
    }

    fn close(&mut self, code: Option<u16>) {
        let mut payload = [0u8; 125];
        let n = match code {
            Some(code) => encode_close_payload(code, "", &mut payload),
            None => 0,
        };
        let head = FrameHeader::server(OpCode::Close, n as u64);
        let mut h = [0u8; MAX_HEADER_LEN];
        let hn = head.encode(&mut h);
        self.out.extend_from_slice(&h[..hn]);
        self.out.extend_from_slice(&payload[..n]);
        self.committed = self.out.len();
        self.done = true;
    }

    /// Bytes ready to be written (whole frames).
    pub fn ready_len(&self) -> usize {
        self.committed
    }

    /// Whether the connection is finished (after writing the ready bytes, close it).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Moves the ready bytes to the end of `dst` (swapping buffers instead of copying when it
    /// can, so the steady state allocates nothing).
    pub fn move_ready_into(&mut self, dst: &mut Vec<u8>) {
        if self.committed == 0 {
            return;
        }
        if dst.is_empty() && self.committed == self.out.len() {
            std::mem::swap(dst, &mut self.out);
            self.out.clear();
        } else {
            dst.extend_from_slice(&self.out[..self.committed]);
            self.out.drain(..self.committed);
        }
        self.committed = 0;
    }

    /// Takes the output buffer for an owned-buffer write of `..ready_len()`.
    pub fn take_out(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Returns the output buffer after `written` bytes from its start went out.
    pub fn put_back(&mut self, mut out: Vec<u8>, written: usize) {
        out.drain(..written);
        self.committed -= written;
        self.out = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let key = [1, 2, 3, 4];
        let header = FrameHeader {
            fin,
            ..FrameHeader::client(opcode, payload.len() as u64, key)
        };
        let mut out = vec![0; payload.len() + MAX_HEADER_LEN];
        let n = frame_simd::encode_frame(&header, payload, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn run(input: &[u8]) -> (Vec<u8>, bool) {
        let mut s = EchoSession::new(&EchoConfig::default(), Vec::new());
        let mut buf = input.to_vec();
        let consumed = s.process(&mut buf);
        assert!(consumed <= buf.len());
        let n = s.ready_len();
        (s.take_out()[..n].to_vec(), s.is_done())
    }

    #[test]
    fn echoes_text_binary_and_fragments_frame_by_frame() {
        let mut input = masked(OpCode::Text, true, b"hello");
        input.extend(masked(OpCode::Binary, false, &[1, 2, 3]));
        input.extend(masked(OpCode::Ping, true, b"p"));
        input.extend(masked(OpCode::Continuation, true, &[4]));
        let (out, done) = run(&input);
        assert!(!done);
        let mut expect = b"\x81\x05hello".to_vec();
        expect.extend_from_slice(b"\x02\x03\x01\x02\x03");
        expect.extend_from_slice(b"\x8a\x01p");
        expect.extend_from_slice(b"\x80\x01\x04");
        assert_eq!(out, expect);
    }

    #[test]
    fn split_input_gives_the_same_echo() {
        let input = masked(OpCode::Binary, true, &[7u8; 300]);
        let mut s = EchoSession::new(&EchoConfig::default(), Vec::new());
        let mut pending = Vec::new();
        for byte in &input {
            pending.push(*byte);
            let used = s.process(&mut pending);
            pending.drain(..used);
        }
        let n = s.ready_len();
        let out = s.take_out();
        assert_eq!(&out[..4], b"\x82\x7e\x01\x2c");
        assert_eq!(&out[4..n], &[7u8; 300][..]);
    }

    #[test]
    fn close_is_answered_with_the_same_code() {
        let (out, done) = run(&masked(OpCode::Close, true, &[0x03, 0xe8, b'b', b'y']));
        assert!(done);
        assert_eq!(out, b"\x88\x02\x03\xe8");
    }

    #[test]
    fn invalid_utf8_closes_1007_without_echoing_the_frame() {
        let mut input = masked(OpCode::Text, true, b"ok");
        input.extend(masked(OpCode::Text, true, &[0xce, 0xba, 0xff]));
        let (out, done) = run(&input);
        assert!(done);
        assert_eq!(out, b"\x81\x02ok\x88\x02\x03\xef");
    }

    #[test]
    fn protocol_errors_close_1002() {
        // Unmasked client frame.
        let (out, done) = run(b"\x81\x02ok");
        assert!(done);
        assert_eq!(out, b"\x88\x02\x03\xea");
        // Reserved opcode.
        let (out, _) = run(&masked(OpCode::Binary, true, b"x")
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 0 { 0x83 } else { *b })
            .collect::<Vec<_>>());
        assert_eq!(out, b"\x88\x02\x03\xea");
    }

    #[test]
    fn control_frame_violations_close_1002() {
        let long_ping = masked(OpCode::Ping, true, &[0u8; 126]);
        let fragmented_ping = masked(OpCode::Ping, false, b"x");
        let lone_continuation = masked(OpCode::Continuation, true, b"x");
        let one_byte_close = masked(OpCode::Close, true, &[3]);
        let bad_code_close = masked(OpCode::Close, true, &[0x03, 0xed]); // 1005
        for input in [
            long_ping,
            fragmented_ping,
            lone_continuation,
            one_byte_close,
            bad_code_close,
        ] {
            let (out, done) = run(&input);
            assert!(done);
            assert_eq!(out, b"\x88\x02\x03\xea");
        }
    }

    #[test]
    fn invalid_utf8_in_a_later_fragment_keeps_earlier_frames() {
        let mut input = masked(OpCode::Text, false, b"ok ");
        input.extend(masked(OpCode::Continuation, true, &[0xc0, 0xaf]));
        let (out, done) = run(&input);
        assert!(done);
        assert_eq!(out, b"\x01\x03ok \x88\x02\x03\xef");
    }

    #[test]
    fn nothing_is_echoed_after_close() {
        let mut input = masked(OpCode::Close, true, &[]);
        input.extend(masked(OpCode::Text, true, b"late"));
        let (out, done) = run(&input);
        assert!(done);
        assert_eq!(out, b"\x88\x00");
    }

    #[test]
    fn oversized_frames_close_1009() {
        let cfg = EchoConfig {
            max_frame_size: 10,
            ..EchoConfig::default()
        };
        let mut s = EchoSession::new(&cfg, Vec::new());
        let mut input = masked(OpCode::Binary, true, &[1u8; 11]);
        s.process(&mut input);
        let n = s.ready_len();
        assert!(s.is_done());
        assert_eq!(&s.take_out()[..n], b"\x88\x02\x03\xf1");
    }

    #[test]
    fn large_binary_frames_stream_out_before_they_end() {
        let payload = vec![9u8; FLUSH_PARTIAL + 100];
        let frame = masked(OpCode::Binary, true, &payload);
        let mut s = EchoSession::new(&EchoConfig::default(), Vec::new());
        // Everything but the last 50 bytes: more than FLUSH_PARTIAL is ready before the frame ends.
        let mut head = frame[..frame.len() - 50].to_vec();
        let used = s.process(&mut head);
        assert_eq!(used, head.len());
        assert!(s.ready_len() >= FLUSH_PARTIAL);
        let mut tail = frame[frame.len() - 50..].to_vec();
        s.process(&mut tail);
        assert_eq!(s.ready_len(), payload.len() + 10);
    }
}
