//! Reading the PROXY header off an accepted socket, before anything else is read from it (before TLS).
//!
//! Owns: the small bounded reads (256 bytes first, grown only for a longer v2 header, never past
//! [`V2_MAX_LEN`](super::V2_MAX_LEN)), the deadline, and handing back the bytes read past the header (a ClientHello
//! or request head that came in the same segment). Does not own: what a refusal means (the caller logs and closes).

use std::io;
use std::time::Instant;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

use super::{Parsed, ProxyHeader, ProxyHeaderError, V2_MAX_LEN, parse};

/// First read: room for any v1 line and the usual v2 header (addresses plus a few TLVs).
const FIRST_READ: usize = 256;

/// Why no header was read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Invalid(ProxyHeaderError),
    #[error("no complete PROXY protocol header within proxy_protocol_timeout")]
    TimedOut,
    /// The peer closed after `sent` bytes (0: a bare TCP connect, as some health checks do).
    #[error("connection closed inside the PROXY protocol header")]
    Closed { sent: usize },
    #[error("read failed before the PROXY protocol header: {0}")]
    Io(io::Error),
}

/// Reads until the bytes form a whole header; returns it and the bytes read after it.
pub(crate) async fn read_header<S: AsyncReadRent>(
    stream: &mut S,
    deadline: Instant,
) -> Result<(ProxyHeader, Vec<u8>), ReadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST_READ);
    loop {
        if buf.len() == buf.capacity() {
            // `parse` decides within V2_MAX_LEN bytes, so this only grows for a long v2 header.
            let room = (buf.capacity() * 2).min(V2_MAX_LEN) - buf.len();
            if room == 0 {
                return Err(ReadError::Invalid(ProxyHeaderError::V2TooLong));
            }
            buf.reserve_exact(room);
        }
        let (start, cap) = (buf.len(), buf.capacity());
        let wait = deadline.saturating_duration_since(Instant::now());
        let read = monoio::time::timeout(
            wait,
            stream.read(std::mem::take(&mut buf).slice_mut(start..cap)),
        )
        .await;
        match read {
            Ok((Ok(0), _)) => return Err(ReadError::Closed { sent: start }),
            Ok((Ok(_), slice)) => buf = slice.into_inner(),
            Ok((Err(e), _)) => return Err(ReadError::Io(e)),
            Err(_) => return Err(ReadError::TimedOut),
        }
        match parse(&buf) {
            Ok(Parsed::Partial) => {}
            Ok(Parsed::Complete(header)) => {
                buf.drain(..header.header_len);
                return Ok((header, buf));
            }
            Err(e) => return Err(ReadError::Invalid(e)),
        }
    }
}
