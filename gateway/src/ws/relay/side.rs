//! One socket of a relayed pair, as the I/O loop sees it: its write half (shared by both legs, so the leg that does
//! not forward to it can still inject control frames between frames), the handle that wakes the leg reading it, and
//! the clocks the worker's sweeper checks (a read to park, a deadline to act on, a write that stalled).
//!
//! Owns: the write slot and its waiters, abortable writes, writing the control frames a session asks for (encoded
//! with `frame_simd`'s header encoder; masked with a fresh key towards the upstream), and the per-side sweep.
//! Does not own: which control frames are due (`super::session`), reading (`super::io`).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use frame_simd::{FrameHeader, MAX_HEADER_LEN, OpCode, Rsv, apply_mask, encode_close_payload};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, Canceller};

use super::session::{SideId, Transmit};

/// A read that sees no data this long gives its buffer back and parks on a one-byte read.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(50);

/// One socket of the pair.
pub(crate) struct Side<W> {
    pub(crate) id: SideId,
    writer: RefCell<Option<W>>,
    writer_waiter: Cell<Option<Waker>>,
    /// Cancels this side's pending read (to park it, or to wake its leg when the other leg changes state).
    pub(crate) canceller: RefCell<Canceller>,
    /// Since when a read with a pooled buffer has been pending (the sweeper parks it after [`PARK_AFTER`]).
    pub(crate) read_since: Cell<Option<Instant>>,
    /// When the leg reading this side must act even without input (the sweeper wakes it).
    pub(crate) wake_at: Cell<Option<Instant>>,
    /// Since when a write to this side has been pending (aborted past the idle timeout).
    pub(crate) write_since: Cell<Option<Instant>>,
    /// The pending write to this side must give up (stalled, or the pair stopped).
    write_abort: Cell<bool>,
    /// Wakes the task whose write to this side is pending, so it sees `write_abort`.
    write_waker: Cell<Option<Waker>>,
    /// Wakes the leg reading this side while its reads are paused for its rate (no read to cancel then).
    pause_waker: Cell<Option<Waker>>,
}

impl<W> Side<W> {
    pub(crate) fn new(id: SideId, writer: W) -> Self {
        Self {
            id,
            writer: RefCell::new(Some(writer)),
            writer_waiter: Cell::new(None),
            canceller: RefCell::new(Canceller::new()),
            read_since: Cell::new(None),
            wake_at: Cell::new(None),
            write_since: Cell::new(None),
            write_abort: Cell::new(false),
            write_waker: Cell::new(None),
            pause_waker: Cell::new(None),
        }
    }

    /// One sweeper tick: wake the leg reading this side if it should park or act, cancel a stalled write.
    pub(crate) fn sweep(&self, now: Instant, write_stall: Duration) {
        let park = self
            .read_since
            .get()
            .is_some_and(|since| now >= since + PARK_AFTER);
        let due = self.wake_at.get().is_some_and(|at| now >= at);
        if park || due {
            self.read_since.set(None);
            self.wake_at.set(None);
            self.wake_reader();
        }
        if self
            .write_since
            .get()
            .is_some_and(|since| now >= since + write_stall)
        {
            self.write_since.set(None);
            self.cancel_write();
        }
    }

    /// Wakes the leg reading this side (its pending read returns `ECANCELED`, or its pause ends).
    pub(crate) fn wake_reader(&self) {
        if let Some(waker) = self.pause_waker.take() {
            waker.wake();
            return;
        }
        let mut slot = self.canceller.borrow_mut();
        let old = std::mem::take(&mut *slot);
        *slot = old.cancel();
    }

    /// Waits, without reading, until [`Side::wake_reader`] is called (by the sweeper at `wake_at`, or by the other
    /// leg).
    pub(crate) async fn paused(&self) {
        let mut armed = false;
        poll_fn(|cx| {
            let waker = self.pause_waker.take();
            if armed && waker.is_none() {
                return Poll::Ready(());
            }
            armed = true;
            self.pause_waker.set(Some(match waker {
                Some(w) if w.will_wake(cx.waker()) => w,
                _ => cx.waker().clone(),
            }));
            Poll::Pending
        })
        .await;
    }

    /// Aborts a pending write to this side (the side is given up; whatever the write still held is dropped).
    /// Without a pending write this does nothing.
    pub(crate) fn cancel_write(&self) {
        if self.write_since.get().is_some() {
            self.write_abort.set(true);
            if let Some(waker) = self.write_waker.take() {
                waker.wake();
            }
        }
    }

    /// Polls a write to this side unless [`Side::cancel_write`] aborted it (then `Ready(None)`).
    ///
    /// The write is a plain one, raced against the abort flag, rather than a monoio cancelable write: a cancel
    /// handle costs two SipHash set operations per write (README, "Measurements behind the design"). Dropping a pending
    /// io_uring write is safe for this purpose: the side is abandoned afterwards, so it does not matter how much of
    /// the buffer reached it.
    pub(crate) fn poll_write_abortable<F: Future>(
        &self,
        write: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<F::Output>> {
        if self.write_abort.get() {
            return Poll::Ready(None);
        }
        match write.poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending => {
                let stored = self.write_waker.take();
                self.write_waker.set(match stored {
                    Some(waker) if waker.will_wake(cx.waker()) => Some(waker),
                    _ => Some(cx.waker().clone()),
                });
                Poll::Pending
            }
        }
    }

    /// The pending write to this side ended (done, failed or aborted): back to idle. `cancel_write` sets the abort
    /// flag only while `write_since` says a write is pending.
    pub(crate) fn write_ended(&self) {
        self.write_since.set(None);
        self.write_abort.set(false);
    }

    /// The writer if no other leg holds it.
    #[inline]
    pub(crate) fn try_take_writer(&self) -> Option<W> {
        self.writer.borrow_mut().take()
    }

    pub(crate) async fn take_writer(&self) -> W {
        poll_fn(|cx| match self.try_take_writer() {
            Some(w) => Poll::Ready(w),
            None => {
                self.writer_waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    pub(crate) fn put_writer(&self, w: W) {
        *self.writer.borrow_mut() = Some(w);
        if let Some(waker) = self.writer_waiter.take() {
            waker.wake();
        }
    }

    /// Frames written to this side are masked (the gateway is the client towards the upstream).
    fn masks(&self) -> bool {
        self.id == SideId::Upstream
    }
}

impl<W: AsyncWriteRent> Side<W> {
    /// Writes `frames` to this side with `writer` within `timeout`; whether it worked.
    pub(crate) async fn write_control(
        &self,
        writer: &mut W,
        frames: Transmit,
        timeout: Duration,
    ) -> bool {
        let mut out = Vec::with_capacity(2 * (MAX_HEADER_LEN + 125));
        let mask = || match self.masks() {
            true => random_mask_key().map(Some),
            false => Some(None),
        };
        if let Some(ping) = frames.ping {
            let Some(mask) = mask() else {
                return false;
            };
            push_control_frame(&mut out, OpCode::Ping, &ping, mask);
        }
        if let Some((code, why)) = frames.close {
            let Some(mask) = mask() else {
                return false;
            };
            let mut payload = [0u8; 125];
            let n = encode_close_payload(code, why.text(code), &mut payload);
            push_control_frame(&mut out, OpCode::Close, &payload[..n], mask);
        }
        matches!(
            monoio::time::timeout(timeout, writer.write_all(out)).await,
            Ok((Ok(_), _))
        )
    }
}

/// Appends one control frame, masked with `mask` when given.
pub(crate) fn push_control_frame(
    out: &mut Vec<u8>,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let header = FrameHeader {
        fin: true,
        rsv: Rsv::default(),
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    push_frame(out, header, payload);
}

/// Appends `header` and then `payload` masked with the header's key, if any. The header's length is the caller's:
/// a streamed frame's header goes out first with an empty `payload`, its bytes behind it as they arrive.
pub(crate) fn push_frame(out: &mut Vec<u8>, header: FrameHeader, payload: &[u8]) {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = header.mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// A masking key from the OS's random source (RFC 6455 §5.3: unpredictable). `None` if the source fails (the
/// binary checks at start-up that it works): the frame is then not sent and the side is given up, rather than
/// masked with a guessable key.
pub(crate) fn random_mask_key() -> Option<[u8; 4]> {
    let mut key = [0u8; 4];
    getrandom::fill(&mut key).ok().map(|()| key)
}

#[cfg(test)]
mod tests {
    use frame_simd::{Decoded, DecoderConfig, FrameDecoder, Role};

    use super::*;

    #[test]
    fn control_frames_to_upstream_are_masked_and_decode_back() {
        let mut out = Vec::new();
        push_control_frame(&mut out, OpCode::Ping, b"12345678", random_mask_key());
        assert_eq!(out[1] & 0x80, 0x80, "mask bit set");
        let mut dec = FrameDecoder::new(DecoderConfig {
            peer: Role::Client,
            ..DecoderConfig::default()
        });
        match dec.decode(&mut out) {
            Ok(Decoded::Control {
                opcode: OpCode::Ping,
                len,
            }) => assert_eq!(len, out.len()),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(dec.control_payload(), b"12345678");
    }

    #[test]
    fn control_frames_to_clients_are_unmasked() {
        let mut out = Vec::new();
        let mut payload = [0u8; 125];
        let n = encode_close_payload(1001, "idle timeout", &mut payload);
        push_control_frame(&mut out, OpCode::Close, &payload[..n], None);
        assert_eq!(out[1] & 0x80, 0);
        let mut dec = FrameDecoder::new(DecoderConfig {
            peer: Role::Server,
            ..DecoderConfig::default()
        });
        assert!(matches!(
            dec.decode(&mut out),
            Ok(Decoded::Control {
                opcode: OpCode::Close,
                ..
            })
        ));
        assert_eq!(
            frame_simd::parse_close_payload(dec.control_payload()),
            Ok(Some((1001, "idle timeout")))
        );
    }
}
