//! The frame-aware relay between a client and an upstream WebSocket after both handshakes succeeded.
//!
//! Owns: moving frames both ways, validating every frame with `frame_simd` (masking, control and fragmentation
//! rules, UTF-8, size limits), the gateway's own keepalive (ping after silence, drop the pongs that answer it, close a
//! peer that does not answer), bridging the close handshake with a timeout, and tearing both legs down together.
//! Does not own: handshakes, routing, or TLS (it is generic over the stream type).
//!
//! Shape: one future per proxied connection, joining two legs (client→upstream and upstream→client). A leg reads its
//! source, runs the bytes through its [`FrameDecoder`] in `Preserve` mode (bytes stay as received, so frames are
//! forwarded verbatim, masked client frames included), and writes them to the other side. Each socket's write half
//! lives in a `Side` slot so the other leg can inject control frames (pings, closes) between frames.
//!
//! Memory: a leg holds a pooled buffer only while bytes are in flight. A read that sees no data for [`PARK_AFTER`]
//! is cancelled, its buffer returned, and the leg parks on a one-byte read, so an idle connection pins no buffer.
//! Backpressure: a leg does not read while its write is pending, so each leg holds at most one buffer.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use frame_simd::{
    Decoded, DecoderConfig, FrameDecoder, FrameError, FrameHeader, MAX_HEADER_LEN, OpCode,
    PayloadMode, Role, Rsv, apply_mask, encode_close_payload,
};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller, Split,
    Splitable,
};

use crate::buffer_pool::BufferPool;
use crate::clock;
use crate::sweeper::{Sweep, Sweeper};

/// A read that sees no data this long gives its buffer back and parks on a one-byte read.
pub const PARK_AFTER: Duration = Duration::from_millis(50);

/// How a relay is configured (from the route's `websocket:` settings and the negotiated extensions).
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub idle_timeout: Duration,
    pub ping_interval: Option<Duration>,
    pub pong_timeout: Duration,
    pub close_timeout: Duration,
    pub max_frame_size: u64,
    pub max_message_size: u64,
    pub validate_utf8: bool,
    /// permessage-deflate negotiated end to end: RSV1 allowed on data frames.
    pub deflate: bool,
}

/// Which socket of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideId {
    Client,
    Upstream,
}

impl SideId {
    fn name(self) -> &'static str {
        match self {
            SideId::Client => "client",
            SideId::Upstream => "upstream",
        }
    }

    /// The close code the *other* side gets when this side fails: an upstream failure is an unexpected condition
    /// for the client (1011); a client failure means the client went away (1001).
    fn failure_code_for_other(self) -> u16 {
        match self {
            SideId::Client => 1001,
            SideId::Upstream => 1011,
        }
    }
}

/// How a relay ended, for the connection log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOutcome {
    /// Human description of what ended the relay first.
    pub reason: String,
    pub bytes_client_to_upstream: u64,
    pub bytes_upstream_to_client: u64,
}

/// Relays frames between `client` and `upstream` until both are closed. `client_early` / `upstream_early` are bytes
/// already read past each side's handshake head (frames sent right behind it).
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    client_early: Vec<u8>,
    upstream_early: Vec<u8>,
    settings: &RelaySettings,
    pool: &BufferPool,
    sweeper: &Rc<Sweeper>,
) -> RelayOutcome
where
    C: Split + AsyncReadRent + AsyncWriteRent + CancelableAsyncReadRent + 'static,
    U: Split + AsyncReadRent + AsyncWriteRent + CancelableAsyncReadRent + 'static,
{
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let now = clock::now();
    let pair = Pair {
        settings: settings.clone(),
        last_activity: Cell::new(now),
        closing_deadline: Cell::new(None),
        stop: Cell::new(false),
        reason: RefCell::new(None),
        bytes: [Cell::new(0), Cell::new(0)],
        ping_counter: Cell::new(0),
    };
    let shared = Rc::new(Shared {
        pair,
        client: Side::new(SideId::Client, client_write, now),
        upstream: Side::new(SideId::Upstream, upstream_write, now),
    });
    let weak: Weak<dyn Sweep> = Rc::downgrade(&shared) as Weak<dyn Sweep>;
    let registration = sweeper.register(weak);
    let c2u = Leg {
        pair: &shared.pair,
        src: &shared.client,
        dst: &shared.upstream,
        pool,
    }
    .run(client_read, client_early);
    let u2c = Leg {
        pair: &shared.pair,
        src: &shared.upstream,
        dst: &shared.client,
        pool,
    }
    .run(upstream_read, upstream_early);
    monoio::join!(c2u, u2c);
    drop(registration);
    let pair = &shared.pair;
    let reason = pair
        .reason
        .borrow_mut()
        .take()
        .unwrap_or_else(|| "closed".to_owned());
    RelayOutcome {
        reason,
        bytes_client_to_upstream: pair.bytes[0].get(),
        bytes_upstream_to_client: pair.bytes[1].get(),
    }
}

/// Everything both legs of one proxied connection share; the worker's sweeper looks at it on every tick.
struct Shared<CW, UW> {
    pair: Pair,
    client: Side<CW>,
    upstream: Side<UW>,
}

impl<CW, UW> Sweep for Shared<CW, UW> {
    fn sweep(&self, now: Instant) {
        self.client.sweep(now, &self.pair.settings);
        self.upstream.sweep(now, &self.pair.settings);
    }
}

/// State shared by both legs of one proxied connection.
struct Pair {
    settings: RelaySettings,
    /// Last data frame in either direction (the idle timer); the gateway's own pings do not count.
    last_activity: Cell<Instant>,
    /// Set when a close handshake starts: by then both sides must have finished.
    closing_deadline: Cell<Option<Instant>>,
    stop: Cell<bool>,
    reason: RefCell<Option<String>>,
    /// Bytes forwarded client→upstream and upstream→client.
    bytes: [Cell<u64>; 2],
    ping_counter: Cell<u64>,
}

impl Pair {
    fn note(&self, reason: impl FnOnce() -> String) {
        let mut slot = self.reason.borrow_mut();
        if slot.is_none() {
            *slot = Some(reason());
        }
    }

    fn start_closing(&self, now: Instant) {
        if self.closing_deadline.get().is_none() {
            self.closing_deadline
                .set(Some(now + self.settings.close_timeout));
        }
    }
}

/// One socket of the pair: its write half (shared by both legs), what the gateway still has to send it, and the
/// state of its close handshake and keepalive.
struct Side<W> {
    id: SideId,
    writer: RefCell<Option<W>>,
    writer_waiter: Cell<Option<Waker>>,
    /// The byte stream written to this side is inside a forwarded frame: nothing may be injected now.
    mid_frame: Cell<bool>,
    pending_ping: Cell<Option<[u8; 8]>>,
    pending_close: Cell<Option<(u16, &'static str)>>,
    /// This side broke the protocol: its Close (with this code) is sent once the other side has answered the
    /// gateway's Close, so whatever the other side still sends back (e.g. the echo of frames forwarded before the
    /// violation) reaches it first, as if it talked to the upstream directly.
    deferred_close: Cell<Option<(u16, &'static str)>>,
    /// A Close was written to this side (forwarded or the gateway's own).
    close_sent: Cell<bool>,
    /// This side's Close was read (or the gateway stopped caring for its answer).
    close_received: Cell<bool>,
    /// This side is dead or misbehaved: neither read nor written any more.
    abandoned: Cell<bool>,
    last_rx: Cell<Instant>,
    /// Payload of the gateway's last ping to this side; the pong carrying it is not forwarded.
    ping_payload: Cell<Option<[u8; 8]>>,
    pong_deadline: Cell<Option<Instant>>,
    /// A frame from this side is partly received: it cannot answer a ping before the frame ends.
    rx_mid_frame: Cell<bool>,
    /// Cancels this side's pending read (to park it, or to wake its leg when the other leg changes state).
    canceller: RefCell<Canceller>,
    /// Since when a read with a pooled buffer has been pending (the sweeper parks it after [`PARK_AFTER`]).
    read_since: Cell<Option<Instant>>,
    /// When the leg reading this side must act even without input (the sweeper wakes it).
    wake_at: Cell<Option<Instant>>,
    /// Since when a write to this side has been pending (aborted past the idle timeout).
    write_since: Cell<Option<Instant>>,
    /// The pending write to this side must give up (stalled, or the pair stopped).
    write_abort: Cell<bool>,
    /// Wakes the task whose write to this side is pending, so it sees `write_abort`.
    write_waker: Cell<Option<Waker>>,
}

impl<W> Side<W> {
    /// One sweeper tick: wake the leg reading this side if it should park or act, cancel a stalled write.
    fn sweep(&self, now: Instant, settings: &RelaySettings) {
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
            .is_some_and(|since| now >= since + settings.idle_timeout)
        {
            self.write_since.set(None);
            self.cancel_write();
        }
    }

    /// Wakes the leg reading this side (its pending read returns `ECANCELED`).
    fn wake_reader(&self) {
        let mut slot = self.canceller.borrow_mut();
        let old = std::mem::take(&mut *slot);
        *slot = old.cancel();
    }

    /// Aborts a pending write to this side (the side is given up; whatever the write still held is dropped).
    /// Without a pending write this does nothing.
    fn cancel_write(&self) {
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
    /// handle costs two SipHash set operations per write, ~8% of the relay's user-space instructions at 64 B
    /// messages (callgrind). Dropping a pending io_uring write is safe for this purpose: the side is abandoned
    /// afterwards, so it does not matter how much of the buffer reached it.
    fn poll_write_abortable<F: Future>(
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
    fn write_ended(&self) {
        self.write_since.set(None);
        self.write_abort.set(false);
    }
}

impl<W: AsyncWriteRent> Side<W> {
    fn new(id: SideId, writer: W, now: Instant) -> Self {
        Self {
            id,
            writer: RefCell::new(Some(writer)),
            writer_waiter: Cell::new(None),
            mid_frame: Cell::new(false),
            pending_ping: Cell::new(None),
            pending_close: Cell::new(None),
            deferred_close: Cell::new(None),
            close_sent: Cell::new(false),
            close_received: Cell::new(false),
            abandoned: Cell::new(false),
            last_rx: Cell::new(now),
            ping_payload: Cell::new(None),
            pong_deadline: Cell::new(None),
            rx_mid_frame: Cell::new(false),
            canceller: RefCell::new(Canceller::new()),
            read_since: Cell::new(None),
            wake_at: Cell::new(None),
            write_since: Cell::new(None),
            write_abort: Cell::new(false),
            write_waker: Cell::new(None),
        }
    }

    /// Finished: nothing more will be read from or written to this side.
    fn finished(&self) -> bool {
        self.abandoned.get() || (self.close_sent.get() && self.close_received.get())
    }

    /// Frames written to this side are masked (the gateway is the client towards the upstream).
    fn masks(&self) -> bool {
        self.id == SideId::Upstream
    }

    /// The writer if no other leg holds it.
    fn try_take_writer(&self) -> Option<W> {
        self.writer.borrow_mut().take()
    }

    async fn take_writer(&self) -> W {
        poll_fn(|cx| match self.try_take_writer() {
            Some(w) => Poll::Ready(w),
            None => {
                self.writer_waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    fn put_writer(&self, w: W) {
        *self.writer.borrow_mut() = Some(w);
        if let Some(waker) = self.writer_waiter.take() {
            waker.wake();
        }
    }

    /// Turns a deferred Close into a queued one (the other side answered, failed, or time is up).
    fn release_deferred_close(&self) {
        if let Some((code, reason)) = self.deferred_close.take() {
            self.queue_close(code, reason);
        }
    }

    /// Queues a Close for this side unless one was already sent or it is gone.
    fn queue_close(&self, code: u16, reason: &'static str) {
        if !self.close_sent.get() && !self.abandoned.get() && self.pending_close.get().is_none() {
            self.pending_close.set(Some((code, reason)));
        }
    }

    /// Control frames are queued for this side and its stream is between frames, so they can be written now.
    fn can_flush(&self) -> bool {
        !self.mid_frame.get()
            && !self.abandoned.get()
            && !self.close_sent.get()
            && (self.pending_close.get().is_some() || self.pending_ping.get().is_some())
    }

    /// Writes queued control frames if the writer is free and the stream is between frames. Otherwise the leg
    /// that holds the writer flushes them when it reaches a frame boundary.
    async fn flush_pending(&self, settings: &RelaySettings) {
        if !self.can_flush() {
            return;
        }
        // Rare: boxed so the legs' futures (held by every idle connection) stay small.
        Box::pin(self.write_pending(settings)).await;
    }

    async fn write_pending(&self, settings: &RelaySettings) {
        let Some(mut w) = self.try_take_writer() else {
            return;
        };
        let mut frames = Vec::with_capacity(2 * (MAX_HEADER_LEN + 125));
        let close = self.pending_close.take();
        if let Some(ping) = self.pending_ping.take()
            && close.is_none()
        {
            push_control_frame(&mut frames, OpCode::Ping, &ping, self.masks());
        }
        if let Some((code, reason)) = close {
            let mut payload = [0u8; 125];
            let n = encode_close_payload(code, reason, &mut payload);
            push_control_frame(&mut frames, OpCode::Close, &payload[..n], self.masks());
            self.close_sent.set(true);
        }
        let sent_ping = close.is_none();
        let written = monoio::time::timeout(settings.close_timeout, w.write_all(frames)).await;
        self.put_writer(w);
        if !matches!(written, Ok((Ok(_), _))) {
            tracing::debug!(
                side = self.id.name(),
                "could not write a control frame; abandoning"
            );
            self.abandoned.set(true);
        } else if sent_ping {
            // The pong clock starts when the ping is on the wire, not when it was queued behind a long frame.
            self.pong_deadline
                .set(Some(clock::now() + settings.pong_timeout));
            self.wake_reader();
        }
    }
}

/// One direction of the relay: reads `src`, writes to `dst`.
struct Leg<'p, S, D> {
    pair: &'p Pair,
    pool: &'p BufferPool,
    src: &'p Side<S>,
    dst: &'p Side<D>,
}

/// What a leg reading its source keeps between reads.
struct Inbound {
    decoder: FrameDecoder,
    /// The source is inside a data frame (its bytes so far were forwarded).
    in_frame: bool,
    /// Unprocessed bytes carried to the next read (a partial header or control frame).
    hold: Option<Vec<u8>>,
}

/// What [`Leg::decode_batch`] found in one batch of bytes from the source.
struct Batch {
    /// Bytes `..forward_end` go to the destination (0: none).
    forward_end: usize,
    /// The forwarded bytes end inside a data frame.
    mid_frame: bool,
    /// Where decoding stopped: bytes from here on wait for the next read.
    pos: usize,
    /// The source's Close frame was among the bytes (and is the last thing forwarded).
    saw_close: bool,
    /// A protocol violation, and whether the destination had been left inside a frame by an earlier batch.
    failure: Option<(FrameError, bool)>,
}

/// Why [`Leg::run_hot`] returned.
enum HotExit {
    /// The source went quiet: park on a one-byte read.
    Park,
    /// The leg is finished.
    Done,
}

/// What a leg does next ([`Leg::next_step`]).
enum Step {
    /// The leg is finished.
    Done,
    /// A deadline passed at this time: act on it first.
    Due(Instant),
    /// Read the source, until `deadline` at the latest.
    Read { now: Instant, deadline: Instant },
}

/// What one read produced.
enum ReadResult {
    Data(Vec<u8>),
    /// The peer closed its sending side (TCP FIN) or reset the connection.
    Closed(Option<io::Error>),
    /// No data before the deadline, or woken by the other leg.
    Nothing,
}

impl<S: AsyncWriteRent, D: AsyncWriteRent> Leg<'_, S, D> {
    async fn run<R: CancelableAsyncReadRent>(self, mut reader: R, early: Vec<u8>) {
        let settings = &self.pair.settings;
        let decoder = FrameDecoder::new(DecoderConfig {
            peer: match self.src.id {
                SideId::Client => Role::Client,
                SideId::Upstream => Role::Server,
            },
            max_frame_size: settings.max_frame_size,
            max_message_size: settings.max_message_size,
            allowed_rsv: Rsv {
                rsv1: settings.deflate,
                rsv2: false,
                rsv3: false,
            },
            validate_utf8: settings.validate_utf8,
            payload: PayloadMode::Preserve,
        });
        let mut inbound = Inbound {
            decoder,
            in_frame: false,
            hold: None,
        };
        // Bytes that came right behind the handshake are relayed first, as if just read.
        let mut arrived = (!early.is_empty()).then(|| {
            let mut buf = self.pool.take();
            buf.extend_from_slice(&early);
            buf
        });
        drop(early);
        // A new connection starts parked: most WebSockets are idle most of the time, and a burst of new connections
        // must not take (and touch) a pooled buffer each before any of them has sent a byte. While parked, this loop
        // holds only a boxed one-byte read; once bytes arrive, one boxed `run_hot` future relays until the source
        // has been quiet for [`PARK_AFTER`]. (Boxing per batch instead cost an allocation and a memcpy of the
        // future per read and per write: ~8% of the relay's user-space instructions at 64 B messages.)
        loop {
            if arrived.is_none() && inbound.hold.is_none() {
                let deadline = match self.next_step() {
                    Step::Done => break,
                    Step::Due(now) => {
                        Box::pin(self.on_deadline(now)).await;
                        continue;
                    }
                    Step::Read { deadline, .. } => deadline,
                };
                match Box::pin(self.read_parked(&mut reader, deadline)).await {
                    ReadResult::Data(buf) => arrived = Some(buf),
                    ReadResult::Nothing => {
                        // Woken: the other leg may have queued frames, or a deadline is due.
                        self.flush_both().await;
                        continue;
                    }
                    ReadResult::Closed(err) => {
                        self.on_source_closed(err);
                        self.flush_both().await;
                        break;
                    }
                }
            }
            match Box::pin(self.run_hot(&mut reader, &mut inbound, arrived.take())).await {
                HotExit::Park => {}
                HotExit::Done => break,
            }
        }
        if let Some(buf) = inbound.hold.take() {
            self.pool.give(buf);
        }
        self.flush_both().await;
        self.check_done();
    }

    /// Relays while the source keeps sending: reads into pooled buffers, decodes, forwards, and returns
    /// [`HotExit::Park`] once a read found nothing for [`PARK_AFTER`] (or was woken) and no partial frame is held.
    ///
    /// Every frame passes through here, so it is one flat loop: the read, the forward and the write are awaited in
    /// this body, not in nested async fns, and the rare paths (close, violation, control frames the gateway queued)
    /// are boxed. Each nested future kept its own copy of its arguments and locals, all of it state that is loaded
    /// per frame and is cold when messages arrive far apart; flattening cut the simulated cold lines per message
    /// (`bench/cachesim.sh`).
    async fn run_hot<R: CancelableAsyncReadRent>(
        &self,
        reader: &mut R,
        inbound: &mut Inbound,
        first: Option<Vec<u8>>,
    ) -> HotExit {
        let mut arrived = first;
        loop {
            if let Some(mut buf) = arrived.take() {
                self.src.last_rx.set(clock::now());
                self.src.pong_deadline.set(None);
                if self.src.close_received.get() {
                    // Anything after the peer's Close is ignored (RFC 6455 §5.5.1).
                    self.pool.give(buf);
                } else {
                    let batch =
                        self.decode_batch(&mut buf, &mut inbound.decoder, &mut inbound.in_frame);
                    let kept = if batch.forward_end > 0
                        && !self.dst.close_sent.get()
                        && !self.dst.abandoned.get()
                    {
                        // Forward: the writer is usually free, so take it without awaiting (the other leg holds
                        // it only while it writes), then write `buf[..end]` in full unless the write is aborted.
                        let mut w = match self.dst.try_take_writer() {
                            Some(w) => w,
                            None => self.dst.take_writer().await,
                        };
                        let end = batch.forward_end;
                        self.dst.write_since.set(Some(clock::now()));
                        let mut start = 0;
                        let written = loop {
                            let mut write = std::pin::pin!(w.write(buf.slice(start..end)));
                            let step =
                                poll_fn(|cx| self.dst.poll_write_abortable(write.as_mut(), cx))
                                    .await;
                            // None: aborted (stalled past the idle timeout, or the pair stopped); the buffer
                            // went with the write.
                            let Some((res, slice)) = step else {
                                break None;
                            };
                            buf = slice.into_inner();
                            match res {
                                Ok(0) => break Some((Err(io::ErrorKind::WriteZero.into()), buf)),
                                Ok(n) if start + n < end => start += n,
                                Ok(_) => break Some((Ok(()), buf)),
                                Err(e) => break Some((Err(e), buf)),
                            }
                        };
                        self.dst.write_ended();
                        self.dst.put_writer(w);
                        self.after_forward(written, end, batch.mid_frame)
                    } else {
                        Some(buf)
                    };
                    // On a failed forward the buffer is gone and nothing is held (`hold` was taken to make `buf`).
                    if let Some(buf) = kept {
                        inbound.hold = if batch.saw_close || batch.failure.is_some() {
                            Box::pin(self.after_close_or_violation(buf, batch)).await
                        } else {
                            self.keep_unprocessed(buf, batch.pos)
                        };
                    }
                }
            }
            // The other leg may have queued frames while we waited.
            if self.has_queued_frames() {
                self.flush_both().await;
            }
            let (now, deadline) = match self.next_step() {
                Step::Done => return HotExit::Done,
                Step::Due(now) => {
                    Box::pin(self.on_deadline(now)).await;
                    continue;
                }
                Step::Read { now, deadline } => (now, deadline),
            };
            // A read into a pooled buffer; the sweeper cancels it after [`PARK_AFTER`] without data.
            let buf = inbound.hold.take().unwrap_or_else(|| self.pool.take());
            let start = buf.len();
            let cap = buf.capacity();
            let handle = self.src.canceller.borrow().handle();
            self.src.wake_at.set(Some(deadline));
            self.src.read_since.set(Some(now));
            let (res, slice) = reader
                .cancelable_read(buf.slice_mut(start..cap), handle)
                .await;
            self.src.read_since.set(None);
            let buf = slice.into_inner();
            match res {
                Ok(0) => {
                    self.pool.give(buf);
                    return self.source_closed_while_hot(None).await;
                }
                Ok(_) => arrived = Some(buf),
                Err(e) if is_cancelled(&e) => {
                    let park = buf.is_empty();
                    tracing::trace!(side = self.src.id.name(), park, "read found nothing");
                    if park {
                        self.pool.give(buf);
                        self.flush_both().await;
                        return HotExit::Park;
                    }
                    // A partial frame is held: keep reading into the same buffer.
                    inbound.hold = Some(buf);
                }
                Err(e) => {
                    self.pool.give(buf);
                    return self.source_closed_while_hot(Some(e)).await;
                }
            }
        }
    }

    /// The source closed or failed while the leg was relaying (rare; its flush is boxed).
    async fn source_closed_while_hot(&self, err: Option<io::Error>) -> HotExit {
        self.on_source_closed(err);
        Box::pin(self.flush_both()).await;
        HotExit::Done
    }

    /// The bookkeeping after a forward: counts the bytes and returns the buffer, or, if the destination failed,
    /// returns the buffer to the pool, closes the pair and returns None. `written` is `None` if the write was
    /// aborted (the buffer went with it).
    fn after_forward(
        &self,
        written: Option<(io::Result<()>, Vec<u8>)>,
        end: usize,
        mid_frame: bool,
    ) -> Option<Vec<u8>> {
        match written {
            Some((Ok(()), buf)) => {
                let index = usize::from(self.src.id == SideId::Upstream);
                self.pair.bytes[index].set(self.pair.bytes[index].get() + end as u64);
                self.dst.mid_frame.set(mid_frame);
                Some(buf)
            }
            Some((Err(e), buf)) => {
                self.pool.give(buf);
                self.on_destination_failed(&format!("write failed: {e}"));
                None
            }
            None => {
                self.on_destination_failed("write stalled past the idle timeout");
                None
            }
        }
    }

    /// What the leg does next: stop, act on a passed deadline, or read until `deadline`.
    #[inline]
    fn next_step(&self) -> Step {
        self.check_done();
        if self.pair.stop.get() || self.src.finished() {
            return Step::Done;
        }
        let now = clock::now();
        let deadline = self.deadline(now);
        if deadline <= now {
            Step::Due(now)
        } else {
            Step::Read { now, deadline }
        }
    }

    /// A one-byte read while idle: no pooled buffer is pinned until the peer sends something.
    async fn read_parked<R: CancelableAsyncReadRent>(
        &self,
        reader: &mut R,
        deadline: Instant,
    ) -> ReadResult {
        let handle = self.src.canceller.borrow().handle();
        self.src.wake_at.set(Some(deadline));
        let (res, byte) = reader.cancelable_read(Box::new([0u8; 1]), handle).await;
        match res {
            Ok(0) => ReadResult::Closed(None),
            Ok(_) => {
                let mut buf = self.pool.take();
                buf.push(byte[0]);
                ReadResult::Data(buf)
            }
            Err(e) if is_cancelled(&e) => ReadResult::Nothing,
            Err(e) => ReadResult::Closed(Some(e)),
        }
    }

    /// Decodes the bytes in `buf` (a pong answering the gateway's own ping is cut out of it) and decides what may be
    /// forwarded. No I/O: [`Leg::run_hot`] does the forwarding.
    fn decode_batch(
        &self,
        buf: &mut Vec<u8>,
        decoder: &mut FrameDecoder,
        in_frame: &mut bool,
    ) -> Batch {
        let mut pos = 0;
        // Where the destination stream is between frames, within this batch (None: mid-frame since an earlier batch).
        let mut boundary = if *in_frame { None } else { Some(0) };
        let mut data_seen = false;
        let mut failure: Option<FrameError> = None;
        let mut saw_close = false;
        while pos < buf.len() {
            match decoder.decode(&mut buf[pos..]) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::DataHeader { len, .. }) => {
                    pos += len;
                    *in_frame = true;
                    data_seen = true;
                }
                Ok(Decoded::DataPayload { len, frame_end, .. }) => {
                    pos += len;
                    data_seen = true;
                    if frame_end {
                        *in_frame = false;
                        boundary = Some(pos);
                    }
                }
                Ok(Decoded::Control { opcode, len }) => {
                    let payload = decoder.control_payload();
                    if opcode == OpCode::Pong && self.is_own_pong(payload) {
                        // The answer to the gateway's own ping: not forwarded.
                        buf.copy_within(pos + len.., pos);
                        buf.truncate(buf.len() - len);
                        boundary = Some(pos);
                        continue;
                    }
                    pos += len;
                    boundary = Some(pos);
                    if opcode == OpCode::Close {
                        saw_close = true;
                        if self.dst.deferred_close.get().is_some() {
                            // The destination broke the protocol; it gets the gateway's own Close instead.
                            pos -= len;
                            boundary = Some(pos);
                        }
                        buf.truncate(pos);
                        break;
                    }
                    data_seen |= opcode == OpCode::Ping;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if data_seen {
            self.pair.last_activity.set(clock::now());
        }
        self.src.rx_mid_frame.set(*in_frame);
        // On a violation only whole frames are forwarded, so the destination can still be closed cleanly.
        let forward_end = if failure.is_some() {
            boundary.unwrap_or(0)
        } else {
            pos
        };
        Batch {
            forward_end,
            mid_frame: failure.is_none() && *in_frame,
            pos,
            saw_close,
            failure: failure.map(|e| (e, boundary.is_none())),
        }
    }

    /// After a batch that carried the source's Close or broke the protocol (rare; boxed by the caller): the close
    /// handshake's bookkeeping, or closing both sides. Returns what [`Leg::keep_unprocessed`] returns.
    async fn after_close_or_violation(&self, buf: Vec<u8>, batch: Batch) -> Option<Vec<u8>> {
        if batch.saw_close {
            self.src.close_received.set(true);
            if self.dst.deferred_close.get().is_some() {
                self.dst.release_deferred_close();
                self.dst.flush_pending(&self.pair.settings).await;
            } else {
                self.dst.close_sent.set(true);
            }
            self.pair.start_closing(clock::now());
            tracing::debug!(from = self.src.id.name(), "close frame relayed");
            self.wake_other();
        }
        if let Some((e, dst_mid_frame)) = batch.failure {
            self.on_violation(e, dst_mid_frame).await;
            self.pool.give(buf);
            return None;
        }
        self.keep_unprocessed(buf, batch.pos)
    }

    /// Keeps the bytes from `pos` on for the next read (a partial header or control frame) and returns the buffer,
    /// or gives it back to the pool if nothing is left.
    fn keep_unprocessed(&self, mut buf: Vec<u8>, pos: usize) -> Option<Vec<u8>> {
        if pos < buf.len() {
            buf.copy_within(pos.., 0);
            buf.truncate(buf.len() - pos);
            Some(buf)
        } else {
            self.pool.give(buf);
            None
        }
    }

    fn is_own_pong(&self, payload: &[u8]) -> bool {
        match self.src.ping_payload.get() {
            Some(own) if own.as_slice() == payload => {
                self.src.ping_payload.set(None);
                true
            }
            _ => false,
        }
    }

    /// The earliest moment this leg must act without input.
    fn deadline(&self, now: Instant) -> Instant {
        let s = &self.pair.settings;
        let far = now + Duration::from_secs(3600);
        if let Some(closing) = self.pair.closing_deadline.get() {
            // Closing: only the close timeout matters now. (The idle deadline is usually already past here — it is
            // what started the close — and taking it into account would make the leg spin until the close timeout.)
            return closing.min(far);
        }
        let mut deadline = self.pair.last_activity.get() + s.idle_timeout;
        if let Some(interval) = s.ping_interval
            && self.src.pending_ping.get().is_none()
        {
            match self.src.pong_deadline.get() {
                // A peer in the middle of sending a frame cannot answer before the frame ends; the idle
                // timeout still bounds a peer that stalls mid-frame.
                Some(_) if self.src.rx_mid_frame.get() => {}
                Some(pong) => deadline = deadline.min(pong),
                None => deadline = deadline.min(self.src.last_rx.get() + interval),
            }
        }
        deadline.min(far)
    }

    async fn on_deadline(&self, now: Instant) {
        let s = &self.pair.settings;
        if let Some(closing) = self.pair.closing_deadline.get() {
            if now >= closing {
                self.pair.note(|| "close handshake timed out".to_owned());
                self.src.release_deferred_close();
                self.dst.release_deferred_close();
                self.flush_both().await;
                self.stop_pair();
            }
            return;
        }
        if now >= self.pair.last_activity.get() + s.idle_timeout {
            self.pair.note(|| format!("idle for {:?}", s.idle_timeout));
            self.begin_shutdown(1001, "idle timeout", 1001, "idle timeout")
                .await;
            return;
        }
        if let Some(pong) = self.src.pong_deadline.get() {
            if now >= pong && !self.src.rx_mid_frame.get() {
                tracing::info!(
                    side = self.src.id.name(),
                    "peer did not answer the gateway's ping; closing"
                );
                self.pair
                    .note(|| format!("{} did not answer ping", self.src.id.name()));
                self.src.abandoned.set(true);
                self.close_other(self.src.id.failure_code_for_other(), "peer not responding")
                    .await;
            }
            return;
        }
        if s.ping_interval.is_some() && self.src.pending_ping.get().is_none() {
            let n = self.pair.ping_counter.get().wrapping_add(1);
            self.pair.ping_counter.set(n);
            let payload = n.to_be_bytes();
            self.src.ping_payload.set(Some(payload));
            self.src.pending_ping.set(Some(payload));
            self.src.flush_pending(s).await;
        }
    }

    /// A frame from the source broke the rules: close it with the violation's code, the other side with 1001/1011.
    async fn on_violation(&self, e: FrameError, dst_mid_frame: bool) {
        let code = e.close_code();
        tracing::warn!(side = self.src.id.name(), code, error = %e, "protocol violation; closing");
        self.pair
            .note(|| format!("{} violated the protocol ({code}): {e}", self.src.id.name()));
        // Nothing more is read from it, and its answer to our Close is not awaited.
        self.src.close_received.set(true);
        self.src
            .deferred_close
            .set(Some((code, close_reason(code))));
        if dst_mid_frame {
            // The destination already has part of the offending frame: it can only be cut off, and the
            // offender's Close need not wait for it.
            self.dst.abandoned.set(true);
            self.src.release_deferred_close();
        }
        self.src.flush_pending(&self.pair.settings).await;
        self.close_other(self.src.id.failure_code_for_other(), "peer protocol error")
            .await;
    }

    /// Either side has control frames that [`Leg::flush_both`] would write now (checked without creating its future).
    fn has_queued_frames(&self) -> bool {
        self.dst.can_flush() || self.src.can_flush()
    }

    /// Writes what either side still has queued (each only if its stream is between frames).
    async fn flush_both(&self) {
        self.dst.flush_pending(&self.pair.settings).await;
        self.src.flush_pending(&self.pair.settings).await;
    }

    /// The source closed its TCP stream or failed.
    fn on_source_closed(&self, err: Option<io::Error>) {
        let src = self.src;
        if src.close_received.get() || src.close_sent.get() {
            // A close handshake was under way; the TCP close is its normal end (or the peer's shortcut).
            src.abandoned.set(true);
            self.dst.release_deferred_close();
            self.wake_other();
            return;
        }
        match &err {
            Some(e) => tracing::info!(side = src.id.name(), error = %e, "connection failed"),
            None => tracing::info!(
                side = src.id.name(),
                "connection closed without a close frame"
            ),
        }
        self.pair
            .note(|| format!("{} disconnected without closing", src.id.name()));
        src.abandoned.set(true);
        let code = src.id.failure_code_for_other();
        self.dst.release_deferred_close();
        self.dst.queue_close(code, "peer disconnected");
        self.pair.start_closing(clock::now());
        // Our own leg ends here; the other leg flushes the close when it can and then waits for the answer.
        self.dst.wake_reader();
        self.src.wake_reader();
    }

    fn on_destination_failed(&self, what: &str) {
        tracing::info!(side = self.dst.id.name(), "{what}");
        self.pair.note(|| format!("{} {what}", self.dst.id.name()));
        self.dst.abandoned.set(true);
        self.src.release_deferred_close();
        self.src
            .queue_close(self.dst.id.failure_code_for_other(), "peer disconnected");
        self.pair.start_closing(clock::now());
        self.dst.wake_reader();
        self.src.wake_reader();
    }

    /// Queues a close for the other side (the destination) and writes it if possible.
    async fn close_other(&self, code: u16, reason: &'static str) {
        self.dst.queue_close(code, reason);
        self.pair.start_closing(clock::now());
        self.dst.flush_pending(&self.pair.settings).await;
        self.wake_other();
    }

    /// Closes both sides (idle timeout or similar gateway decision).
    async fn begin_shutdown(
        &self,
        src_code: u16,
        src_reason: &'static str,
        dst_code: u16,
        dst_reason: &'static str,
    ) {
        self.src.queue_close(src_code, src_reason);
        self.dst.queue_close(dst_code, dst_reason);
        self.pair.start_closing(clock::now());
        self.src.flush_pending(&self.pair.settings).await;
        self.dst.flush_pending(&self.pair.settings).await;
        self.wake_other();
    }

    fn wake_other(&self) {
        self.dst.wake_reader();
    }

    fn check_done(&self) {
        if !self.pair.stop.get() && self.src.finished() && self.dst.finished() {
            self.stop_pair();
        }
    }

    fn stop_pair(&self) {
        self.pair.stop.set(true);
        self.src.wake_reader();
        self.dst.wake_reader();
        self.src.cancel_write();
        self.dst.cancel_write();
    }
}

fn is_cancelled(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED)
}

fn close_reason(code: u16) -> &'static str {
    match code {
        1002 => "protocol error",
        1007 => "invalid payload data",
        1009 => "message too big",
        _ => "",
    }
}

/// Appends one control frame; masked with a fresh random key when `masked`.
fn push_control_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], masked: bool) {
    let mask = masked.then(random_mask_key);
    let header = FrameHeader {
        fin: true,
        rsv: Rsv::default(),
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// A masking key from the OS's random source (RFC 6455 §5.3: unpredictable).
pub fn random_mask_key() -> [u8; 4] {
    let mut key = [0u8; 4];
    if getrandom::fill(&mut key).is_err() {
        let nanos = Instant::now().elapsed().subsec_nanos() ^ std::process::id();
        key = nanos.to_le_bytes();
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_to_upstream_are_masked_and_decode_back() {
        let mut out = Vec::new();
        push_control_frame(&mut out, OpCode::Ping, b"12345678", true);
        assert_eq!(out[1] & 0x80, 0x80, "mask bit set");
        let mut dec = FrameDecoder::new(DecoderConfig {
            peer: Role::Client,
            ..DecoderConfig::default()
        });
        match dec.decode(&mut out).unwrap() {
            Decoded::Control {
                opcode: OpCode::Ping,
                len,
            } => assert_eq!(len, out.len()),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(dec.control_payload(), b"12345678");
    }

    #[test]
    fn control_frames_to_clients_are_unmasked() {
        let mut out = Vec::new();
        let mut payload = [0u8; 125];
        let n = encode_close_payload(1001, "idle timeout", &mut payload);
        push_control_frame(&mut out, OpCode::Close, &payload[..n], false);
        assert_eq!(out[1] & 0x80, 0);
        let mut dec = FrameDecoder::new(DecoderConfig {
            peer: Role::Server,
            ..DecoderConfig::default()
        });
        assert!(matches!(
            dec.decode(&mut out).unwrap(),
            Decoded::Control {
                opcode: OpCode::Close,
                ..
            }
        ));
        assert_eq!(
            frame_simd::parse_close_payload(dec.control_payload()).unwrap(),
            Some((1001, "idle timeout"))
        );
    }

    #[test]
    fn failure_codes_follow_the_failing_side() {
        assert_eq!(SideId::Client.failure_code_for_other(), 1001);
        assert_eq!(SideId::Upstream.failure_code_for_other(), 1011);
    }
}
