//! Driving a TLS handshake over a socket under a deadline, for either side.
//!
//! Owns: the read/step/write loop around [`TlsEngine::handshake`], the buffer the flights are read into (pooled,
//! returned or handed to the stream), and sending rustls' alert when the handshake fails. Does not own: what a
//! failure means for the connection and how it is logged (the callers: `super::accept`, `super::connect`).

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::engine::{HandshakeStep, TlsEngine, TlsError, Unbuffered};
use crate::runtime::buffer_pool::{BufferPool, PoolBuf};

/// How long a failed handshake's alert may take to send: the connection ends either way.
const ALERT_WRITE: Duration = Duration::from_secs(1);

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("handshake not completed in time")]
    TimedOut,
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("i/o error during the handshake: {0}")]
    Io(io::Error),
    #[error("handshake messages larger than the read buffer")]
    TooLarge,
    /// rustls refused the peer (its alert, if any, was sent).
    #[error("{0}")]
    Tls(TlsError),
    /// The caller's check of the first bytes refused them (already answered by the caller).
    #[error("refused on its first bytes")]
    Refused,
}

/// What the caller decides on the first bytes received (the server side tells plain HTTP from TLS there).
pub(crate) enum FirstBytes {
    Continue,
    Refuse,
}

/// Runs the handshake on `tcp` until it completes or `deadline` passes. On success returns the ciphertext read past
/// the handshake (a pooled buffer, possibly empty) for the stream. `early` is ciphertext already read from `tcp`
/// (the server's bytes after a PROXY header); it counts as the first read. `alert` may replace rustls' alert on
/// failure (the server's `unrecognized_name`).
pub(crate) async fn drive<C: Unbuffered>(
    tcp: &mut TcpStream,
    engine: &mut TlsEngine<C>,
    pool: &Rc<BufferPool>,
    early: &[u8],
    deadline: Instant,
    mut first_bytes: impl FnMut(&[u8]) -> FirstBytes,
    alert: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<PoolBuf, HandshakeError> {
    let mut incoming = pool.take();
    let mut out = Vec::new();
    let mut first_read = true;
    if !early.is_empty() {
        if early.len() > incoming.capacity() {
            return Err(HandshakeError::TooLarge);
        }
        incoming.extend_from_slice(early);
        first_read = false;
        if matches!(first_bytes(&incoming), FirstBytes::Refuse) {
            return Err(HandshakeError::Refused);
        }
    }
    loop {
        let step = match incoming.with_vec(|incoming| engine.handshake(incoming, &mut out)) {
            Ok(step) => step,
            Err(e) => {
                drop(incoming);
                let alert = alert().unwrap_or(out);
                if !alert.is_empty() {
                    let _ = monoio::time::timeout(ALERT_WRITE, tcp.write_all(alert)).await;
                }
                return Err(HandshakeError::Tls(e));
            }
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        match step {
            HandshakeStep::Done => return Ok(incoming),
            HandshakeStep::Write => {
                match monoio::time::timeout(wait, tcp.write_all(std::mem::take(&mut out))).await {
                    Ok((Ok(_), mut written)) => {
                        written.clear();
                        out = written;
                    }
                    Ok((Err(e), _)) => return Err(HandshakeError::Io(e)),
                    Err(_) => return Err(HandshakeError::TimedOut),
                }
            }
            HandshakeStep::Read => {
                let (len, cap) = (incoming.len(), incoming.capacity());
                if len == cap {
                    return Err(HandshakeError::TooLarge);
                }
                let read =
                    monoio::time::timeout(wait, tcp.read(incoming.slice_mut(len..cap))).await;
                incoming = match read {
                    Ok((Ok(0), _)) => return Err(HandshakeError::Closed),
                    Ok((Ok(_), slice)) => slice.into_inner(),
                    Ok((Err(e), _)) => return Err(HandshakeError::Io(e)),
                    // The buffer went with the cancelled read (back to the pool once the kernel lets go of it).
                    Err(_) => return Err(HandshakeError::TimedOut),
                };
                if std::mem::take(&mut first_read)
                    && matches!(first_bytes(&incoming), FirstBytes::Refuse)
                {
                    return Err(HandshakeError::Refused);
                }
            }
        }
    }
}
