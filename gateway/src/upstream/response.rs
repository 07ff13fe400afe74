//! Reading an upstream's response head off its connection, for plain HTTP exchanges and WebSocket handshakes alike.
//!
//! Owns: filling a buffer until it starts with a complete head, within a deadline and the head limits, and saying
//! whether anything at all arrived (a connection closed without a byte may be a stale keep-alive connection; one
//! closed mid-head is a broken response). Does not own: parsing (`crate::http::head`), interim responses or what a
//! status means (the callers).

use std::io;
use std::time::Instant;

use monoio::io::AsyncReadRent;

use crate::http::head::{HeadError, HeadLimits, ResponseHead, parse_response};
use crate::runtime::buffer_pool::GrowBuf;

/// Why no response head could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HeadReadError {
    /// The deadline passed first.
    #[error("upstream response head timed out")]
    TimedOut,
    /// The connection failed.
    #[error("upstream I/O: {0}")]
    Io(io::Error),
    /// The upstream closed the connection before a complete head.
    #[error("upstream closed the connection before a complete response head")]
    Closed,
    /// The head is malformed or over the limits.
    #[error("bad upstream response head: {0}")]
    Malformed(HeadError),
}

/// The outcome of [`read_response_head`]: whether any byte arrived, and the head with the buffer holding it and
/// whatever followed it, or the error (the buffer is dropped then).
#[derive(Debug)]
pub(crate) struct HeadRead<B> {
    pub(crate) received: bool,
    pub(crate) head: Result<(ResponseHead, B), HeadReadError>,
}

/// Reads from `stream`, appending to `buf`, until `buf` starts with a complete response head or `deadline` passes.
/// Bytes already in `buf` count as received and are parsed first.
pub(crate) async fn read_response_head<S: AsyncReadRent, B: GrowBuf>(
    stream: &mut S,
    mut buf: B,
    limits: HeadLimits,
    deadline: Instant,
) -> HeadRead<B> {
    let mut received = !buf.is_empty();
    let done = |received, head| HeadRead { received, head };
    loop {
        if !buf.is_empty() {
            match parse_response(&buf, limits) {
                Ok(Some(head)) => return done(received, Ok((head, buf))),
                Ok(None) => {}
                Err(e) => return done(received, Err(HeadReadError::Malformed(e))),
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(buf.capacity().max(4096));
        }
        let start = buf.len();
        let cap = buf.capacity();
        let wait = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(wait, stream.read(buf.slice_mut(start..cap))).await {
            Ok((Ok(0), _)) => return done(received, Err(HeadReadError::Closed)),
            Ok((Ok(_), slice)) => {
                buf = slice.into_inner();
                received = true;
            }
            Ok((Err(e), _)) => return done(received, Err(HeadReadError::Io(e))),
            // The buffer went with the cancelled read.
            Err(_) => return done(received, Err(HeadReadError::TimedOut)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::Duration;

    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_headers: 16,
    };

    fn run(
        script: &'static [&'static [u8]],
        pause: Duration,
        deadline: Duration,
    ) -> HeadRead<Vec<u8>> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            for part in script {
                s.write_all(part).expect("write");
                std::thread::sleep(pause);
            }
            std::thread::sleep(Duration::from_millis(300));
        });
        let out = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
            .block_on(async move {
                let mut s = monoio::net::TcpStream::connect_addr(addr)
                    .await
                    .expect("connect");
                read_response_head(&mut s, Vec::new(), LIMITS, Instant::now() + deadline).await
            });
        server.join().expect("server");
        out
    }

    #[test]
    fn a_head_split_over_reads_is_returned_with_what_follows() {
        let r = run(
            &[b"HTTP/1.1 200 OK\r\nContent-", b"Length: 2\r\n\r\nhi"],
            Duration::from_millis(20),
            Duration::from_secs(5),
        );
        let (head, buf) = r.head.expect("head");
        assert_eq!(head.status, 200);
        assert!(r.received);
        assert!(buf[head.head_len..].starts_with(b"hi") || buf.len() == head.head_len);
    }

    #[test]
    fn closed_malformed_and_slow_heads_are_told_apart() {
        let r = run(&[], Duration::ZERO, Duration::from_millis(100));
        assert!(matches!(r.head, Err(HeadReadError::TimedOut)) && !r.received);
        let r = run(
            &[b"HTTP/1.1 200"],
            Duration::ZERO,
            Duration::from_millis(100),
        );
        assert!(matches!(r.head, Err(HeadReadError::TimedOut)) && r.received);
        let r = run(
            &[b"HTTP/1.1 2x0 OK\r\n\r\n"],
            Duration::ZERO,
            Duration::from_secs(5),
        );
        assert!(matches!(r.head, Err(HeadReadError::Malformed(_))) && r.received);
    }
}
