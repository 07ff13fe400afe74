//! The I/O loop that drives a [`Session`] over two sockets: one future per proxied connection, joining two legs
//! (client→upstream and upstream→client).
//!
//! Owns: reading into pooled buffers, parking an idle leg on a one-byte read, forwarding bytes verbatim with
//! abortable writes, writing the control frames the session asks for, and turning the session's wake and stop
//! requests into cancelled reads and aborted writes.
//! Does not own: any rule about frames, closes or deadlines (all in `super::session`), nor a socket's write slot
//! (`super::side`).
//!
//! A leg reads its source, runs the bytes through its [`FrameDecoder`] in `Preserve` mode (bytes stay as received,
//! so frames are forwarded verbatim, masked client frames included) via [`Session::decode`], and writes them to the
//! other side. Memory: a leg holds a pooled buffer only while bytes are in flight; a read that sees no data for
//! [`PARK_AFTER`](super::side::PARK_AFTER) is cancelled, its buffer returned, and the leg parks on a one-byte read, so an idle connection pins
//! no buffer. Backpressure: a leg does not read while its write is pending, so each leg holds at most one buffer.
//! Buffers live only in the boxed hot loop's state, never in the leg's own future, which every idle connection
//! keeps (a [`PoolBuf`] is a `Vec` and its pool handle).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use frame_simd::{DecoderConfig, FrameDecoder, PayloadMode, Role, Rsv};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncWriteRent, CancelableAsyncReadRent, Splitable};

use super::session::{Batch, Progress, RelayOutcome, RelaySettings, Session, SideId, Step};
use super::side::Side;
use crate::metrics::WorkerMetrics;
use crate::metrics::worker::RouteMetrics;
use crate::runtime::buffer_pool::{BufferPool, PoolBuf};
use crate::runtime::clock;
use crate::runtime::drain::DrainPlan;
use crate::runtime::sweeper::{Sweep, Sweeper};

/// Relays frames between `client` and `upstream` until both are closed. `client_early` / `upstream_early` are bytes
/// already read past each side's handshake head (frames sent right behind it).
///
/// The streams are split and the shared state is built now, before the returned future is polled: the future then
/// holds only the read halves, the early bytes and the shared state, not the whole streams or the settings (a
/// future keeps its arguments for its whole life, and an idle WebSocket's memory is mostly its relay task).
pub(crate) fn relay<C, U>(
    client: C,
    upstream: U,
    client_early: Vec<u8>,
    upstream_early: Vec<u8>,
    settings: RelaySettings,
    (pool, sweeper): (Rc<BufferPool>, &Rc<Sweeper>),
    metrics: RelayMetrics,
) -> impl Future<Output = RelayOutcome> + use<C, U>
where
    C: Splitable<OwnedRead: CancelableAsyncReadRent, OwnedWrite: AsyncWriteRent + 'static>,
    U: Splitable<OwnedRead: CancelableAsyncReadRent, OwnedWrite: AsyncWriteRent + 'static>,
{
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let write_stall = settings.idle_timeout;
    let shared = Rc::new(Shared {
        session: RefCell::new(Session::new(settings, clock::now())),
        client: Side::new(SideId::Client, client_write),
        upstream: Side::new(SideId::Upstream, upstream_write),
        write_stall,
        metrics,
        published: Cell::new(Progress::default()),
    });
    let weak: Weak<dyn Sweep> = Rc::downgrade(&shared) as Weak<dyn Sweep>;
    let registration = sweeper.register(weak);
    async move {
        let c2u = Leg {
            session: &shared.session,
            src: &shared.client,
            dst: &shared.upstream,
            pool: &pool,
        }
        .run(client_read, client_early);
        let u2c = Leg {
            session: &shared.session,
            src: &shared.upstream,
            dst: &shared.client,
            pool: &pool,
        }
        .run(upstream_read, upstream_early);
        monoio::join!(c2u, u2c);
        drop(registration);
        shared.publish();
        shared.session.borrow_mut().outcome()
    }
}

/// Where a relay counts its traffic: its route's cells on its worker, and its periodic log line (`log_interval`).
pub(crate) struct RelayMetrics {
    pub(crate) worker: Arc<WorkerMetrics>,
    pub(crate) route: usize,
    pub(crate) periodic: Option<Box<PeriodicLog>>,
}

/// A line for a WebSocket that is still open, every `every`.
pub(crate) struct PeriodicLog {
    pub(crate) every: Duration,
    pub(crate) peer: std::net::SocketAddr,
    pub(crate) started: Instant,
    pub(crate) next: Cell<Instant>,
}

impl RelayMetrics {
    pub(crate) fn route(&self) -> Option<&RouteMetrics> {
        self.worker.routes.get(self.route).map(|r| &**r)
    }
}

/// Everything both legs of one proxied connection share; the worker's sweeper looks at it on every tick.
struct Shared<CW, UW> {
    session: RefCell<Session>,
    client: Side<CW>,
    upstream: Side<UW>,
    /// A write pending this long is aborted (the route's idle timeout).
    write_stall: Duration,
    metrics: RelayMetrics,
    /// The counts already added to the worker's metrics.
    published: Cell<Progress>,
}

impl<CW, UW> Shared<CW, UW> {
    /// Adds what the session counted since the last call to the route's metrics (every sweeper tick, so long-lived
    /// WebSockets show up as they go, and once at the end).
    fn publish(&self) {
        let now = self.session.borrow().progress();
        let before = self.published.replace(now);
        if now == before {
            return;
        }
        if let Some(route) = self.metrics.route() {
            for d in 0..2 {
                route.messages[d].add(now.messages[d] - before.messages[d]);
                route.bytes[d].add(now.bytes[d] - before.bytes[d]);
            }
            route.pings_sent.add(now.pings_sent - before.pings_sent);
            for d in 0..2 {
                route.rate_limited[d].add(now.rate_limited[d] - before.rate_limited[d]);
            }
        }
    }
}

impl<CW, UW> Sweep for Shared<CW, UW> {
    fn sweep(&self, now: Instant, drain: Option<&DrainPlan>) {
        if let Some(plan) = drain {
            let mut session = self.session.borrow_mut();
            if !session.drain_scheduled() {
                // Any per-connection number will do as the seed: the plan mixes it.
                let seed = std::ptr::from_ref(self) as usize as u64;
                session.schedule_drain(plan.close_at(seed), plan.close_code);
                session.take_wakes();
                drop(session);
                // The legs look at their deadlines again, now with the drain's moment among them.
                self.client.wake_reader();
                self.upstream.wake_reader();
            }
        }
        self.client.sweep(now, self.write_stall);
        self.upstream.sweep(now, self.write_stall);
        self.publish();
        if let Some(log) = &self.metrics.periodic
            && now >= log.next.get()
        {
            log.next.set(now + log.every);
            let p = self.session.borrow().progress();
            tracing::info!(
                peer = %log.peer,
                open_s = now.saturating_duration_since(log.started).as_secs(),
                messages_in = p.messages[0],
                messages_out = p.messages[1],
                bytes_in = p.bytes[0],
                bytes_out = p.bytes[1],
                "websocket open"
            );
        }
    }
}

/// One direction of the relay: reads `src`, writes to `dst`.
struct Leg<'p, S, D> {
    session: &'p RefCell<Session>,
    pool: &'p Rc<BufferPool>,
    src: &'p Side<S>,
    dst: &'p Side<D>,
}

/// What a leg reading its source keeps between reads. (Unprocessed bytes are held by [`Leg::run_hot`] only: a leg
/// parks with none.)
struct Inbound {
    decoder: FrameDecoder,
    /// The source is inside a data frame (its bytes so far were forwarded).
    in_frame: bool,
}

/// Why [`Leg::run_hot`] returned.
enum HotExit {
    /// The source went quiet: park on a one-byte read.
    Park,
    /// The leg is finished.
    Done,
}

/// What one read produced.
enum ReadResult {
    Data(PoolBuf),
    /// The peer closed its sending side (TCP FIN) or reset the connection.
    Closed(Option<io::Error>),
    /// No data before the deadline, or woken by the other leg.
    Nothing,
}

impl<S: AsyncWriteRent, D: AsyncWriteRent> Leg<'_, S, D> {
    async fn run<R: CancelableAsyncReadRent>(self, mut reader: R, early: Vec<u8>) {
        let decoder = {
            let session = self.session.borrow();
            let settings = session.settings();
            FrameDecoder::new(DecoderConfig {
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
            })
        };
        let mut inbound = Inbound {
            decoder,
            in_frame: false,
        };
        // Bytes that came right behind the handshake are relayed first, as if just read. The buffer goes straight
        // into the boxed hot loop: kept in a local of this future it would take room in every idle connection.
        let mut done = false;
        if !early.is_empty() {
            let mut buf = self.pool.take();
            buf.extend_from_slice(&early);
            drop(early);
            done = matches!(
                Box::pin(self.run_hot(&mut reader, &mut inbound, buf)).await,
                HotExit::Done
            );
        }
        // A new connection starts parked: most WebSockets are idle most of the time, and a burst of new connections
        // must not take (and touch) a pooled buffer each before any of them has sent a byte. While parked, this loop
        // holds only a boxed one-byte read; once bytes arrive, one boxed `run_hot` future relays until the source
        // has been quiet for [`PARK_AFTER`](super::side::PARK_AFTER). (Boxing per batch instead cost an allocation and a memcpy of the
        // future per read and per write.)
        while !done {
            let deadline = match self.next_step() {
                Step::Done => break,
                Step::Due(now) => {
                    Box::pin(self.on_deadline(now)).await;
                    continue;
                }
                Step::Paused { until } => {
                    // Over its rate with nothing held (the hot loop parked first): wait without a read.
                    let held = Box::pin(self.pause(None, until)).await;
                    debug_assert!(held.is_none());
                    continue;
                }
                Step::Read { deadline, .. } => deadline,
            };
            let first = match Box::pin(self.read_parked(&mut reader, deadline)).await {
                ReadResult::Data(buf) => buf,
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
            };
            done = matches!(
                Box::pin(self.run_hot(&mut reader, &mut inbound, first)).await,
                HotExit::Done
            );
        }
        self.flush_both().await;
        self.session.borrow_mut().check_done();
        self.apply_wakes();
    }

    /// Relays while the source keeps sending: reads into pooled buffers, decodes, forwards, and returns
    /// [`HotExit::Park`] once a read found nothing for [`PARK_AFTER`](super::side::PARK_AFTER) (or was woken) and no partial frame is held.
    /// `first` holds the bytes that woke the leg.
    ///
    /// Every frame passes through here, so it is one flat loop: the read, the forward and the write are awaited in
    /// this body, not in nested async fns, and the rare paths (close, violation, control frames the gateway queued)
    /// are boxed. Each nested future kept its own copy of its arguments and locals, all of it state that is loaded
    /// per frame and is cold when messages arrive far apart (`bench/cachesim.sh`).
    async fn run_hot<R: CancelableAsyncReadRent>(
        &self,
        reader: &mut R,
        inbound: &mut Inbound,
        first: PoolBuf,
    ) -> HotExit {
        let mut arrived = Some(first);
        // Unprocessed bytes carried to the next read (a partial header or control frame).
        let mut hold: Option<PoolBuf> = None;
        loop {
            if let Some(mut buf) = arrived.take() {
                let now = clock::now();
                let decoded = {
                    let mut session = self.session.borrow_mut();
                    session.on_input(self.src.id, now).then(|| {
                        let batch = buf.with_vec(|buf| {
                            session.decode(
                                self.src.id,
                                buf,
                                &mut inbound.decoder,
                                &mut inbound.in_frame,
                                now,
                            )
                        });
                        let forward = batch.forward_end > 0 && session.forwards_from(self.src.id);
                        (batch, forward)
                    })
                };
                match decoded {
                    // Anything after the peer's Close is ignored (RFC 6455 §5.5.1).
                    None => drop(buf),
                    Some((batch, forward)) => {
                        let kept = if forward {
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
                                // went with the write (back to the pool once the kernel lets go of it).
                                let Some((res, slice)) = step else {
                                    break None;
                                };
                                buf = slice.into_inner();
                                match res {
                                    Ok(0) => {
                                        break Some((Err(io::ErrorKind::WriteZero.into()), buf));
                                    }
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
                        // On a failed forward the buffer is gone and nothing is held (`hold` was taken to make
                        // `buf`).
                        if let Some(buf) = kept {
                            hold = if batch.saw_close || batch.failure.is_some() {
                                Box::pin(self.after_close_or_violation(buf, batch)).await
                            } else {
                                self.keep_unprocessed(buf, batch.pos)
                            };
                        }
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
                // Over its rate: wait without a read; what is held is decoded again after the pause (it may be
                // whole frames the rate stopped).
                Step::Paused { until } => {
                    arrived = Box::pin(self.pause(hold.take(), until)).await;
                    continue;
                }
                Step::Read { now, deadline } => (now, deadline),
            };
            // A read into a pooled buffer; the sweeper cancels it after [`PARK_AFTER`](super::side::PARK_AFTER) without data.
            let buf = hold.take().unwrap_or_else(|| self.pool.take());
            if buf.len() == buf.capacity() {
                // Whole frames the message rate held back fill the buffer (and its pause is already over): decode
                // them first, there is no room to read into.
                arrived = Some(buf);
                continue;
            }
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
                    drop(buf);
                    return self.source_closed_while_hot(None).await;
                }
                Ok(_) => arrived = Some(buf),
                Err(e) if is_cancelled(&e) => {
                    let park = buf.is_empty();
                    tracing::trace!(side = self.src.id.name(), park, "read found nothing");
                    if park {
                        drop(buf);
                        self.flush_both().await;
                        return HotExit::Park;
                    }
                    // A partial frame is held: keep reading into the same buffer.
                    hold = Some(buf);
                }
                Err(e) => {
                    drop(buf);
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
        written: Option<(io::Result<()>, PoolBuf)>,
        end: usize,
        mid_frame: bool,
    ) -> Option<PoolBuf> {
        match written {
            Some((Ok(()), buf)) => {
                self.session
                    .borrow_mut()
                    .on_forwarded(self.src.id, end, mid_frame);
                Some(buf)
            }
            Some((Err(e), buf)) => {
                drop(buf);
                self.on_destination_failed(&format!("write failed: {e}"));
                None
            }
            None => {
                self.on_destination_failed("write stalled past the idle timeout");
                None
            }
        }
    }

    /// What the leg does next (see [`Session::next_step`]); a finished pair wakes the other leg.
    #[inline]
    fn next_step(&self) -> Step {
        let step = self
            .session
            .borrow_mut()
            .next_step(self.src.id, clock::now());
        if step == Step::Done {
            self.apply_wakes();
        }
        step
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

    /// After a batch that carried the source's Close or broke the protocol (rare; boxed by the caller): the
    /// session's bookkeeping, then the control frames it queued. Returns what [`Leg::keep_unprocessed`] returns.
    async fn after_close_or_violation(&self, buf: PoolBuf, batch: Batch) -> Option<PoolBuf> {
        if batch.saw_close {
            self.session
                .borrow_mut()
                .on_close_received(self.src.id, clock::now());
            self.flush(self.dst).await;
            self.apply_wakes();
        }
        if let Some((e, dst_mid_frame)) = batch.failure {
            self.session
                .borrow_mut()
                .on_violation(self.src.id, &e, dst_mid_frame, clock::now());
            self.flush(self.src).await;
            self.flush(self.dst).await;
            self.apply_wakes();
            drop(buf);
            return None;
        }
        self.keep_unprocessed(buf, batch.pos)
    }

    /// Keeps the bytes from `pos` on for the next read (a partial header or control frame) and returns the buffer,
    /// or gives it back to the pool if nothing is left.
    fn keep_unprocessed(&self, mut buf: PoolBuf, pos: usize) -> Option<PoolBuf> {
        if pos < buf.len() {
            buf.copy_within(pos.., 0);
            let kept = buf.len() - pos;
            buf.truncate(kept);
            Some(buf)
        } else {
            None
        }
    }

    /// Waits until `until` (or a wake) without reading the source: it went over its rate, and the unread bytes
    /// pile up in its socket (TCP backpressure). Bytes held meanwhile leave their pooled buffer (a paused connection
    /// pins no pool buffer) and come back in one when the pause ends.
    async fn pause(&self, hold: Option<PoolBuf>, until: Instant) -> Option<PoolBuf> {
        let held: Option<Vec<u8>> = hold.filter(|h| !h.is_empty()).map(|h| h.to_vec());
        tracing::trace!(side = self.src.id.name(), "reads paused for the rate limit");
        self.src.wake_at.set(Some(until));
        self.src.paused().await;
        // Woken early: the other leg may have queued frames.
        self.flush_both().await;
        held.map(|bytes| {
            let mut buf = self.pool.take();
            buf.extend_from_slice(&bytes);
            buf
        })
    }

    async fn on_deadline(&self, now: Instant) {
        self.session.borrow_mut().on_deadline(self.src.id, now);
        self.flush(self.src).await;
        self.flush(self.dst).await;
        self.apply_wakes();
    }

    /// Either side has control frames that [`Leg::flush_both`] would write now (checked without creating its future).
    #[inline]
    fn has_queued_frames(&self) -> bool {
        let session = self.session.borrow();
        session.can_flush(self.dst.id) || session.can_flush(self.src.id)
    }

    /// Writes what either side still has queued (each only if its stream is between frames).
    async fn flush_both(&self) {
        self.flush(self.dst).await;
        self.flush(self.src).await;
    }

    /// Writes the control frames queued for `side` if its writer is free and its stream is between frames.
    /// Otherwise the leg that holds the writer flushes them when it reaches a frame boundary.
    async fn flush<W: AsyncWriteRent>(&self, side: &Side<W>) {
        if !self.session.borrow().can_flush(side.id) {
            return;
        }
        // Rare: boxed so the legs' futures (held by every idle connection) stay small.
        Box::pin(self.write_pending(side)).await;
    }

    async fn write_pending<W: AsyncWriteRent>(&self, side: &Side<W>) {
        let Some(mut w) = side.try_take_writer() else {
            return;
        };
        let Some(frames) = self.session.borrow_mut().poll_transmit(side.id) else {
            side.put_writer(w);
            return;
        };
        let close_timeout = self.session.borrow().settings().close_timeout;
        let ok = side.write_control(&mut w, frames, close_timeout).await;
        side.put_writer(w);
        self.session
            .borrow_mut()
            .on_transmitted(side.id, frames, ok, clock::now());
        self.apply_wakes();
    }

    /// The source closed its TCP stream or failed.
    fn on_source_closed(&self, err: Option<io::Error>) {
        self.session
            .borrow_mut()
            .on_source_closed(self.src.id, err.as_ref(), clock::now());
        self.apply_wakes();
    }

    fn on_destination_failed(&self, what: &str) {
        self.session
            .borrow_mut()
            .on_destination_failed(self.dst.id, what, clock::now());
        self.apply_wakes();
    }

    /// Turns the session's requests into I/O: cancel the reads it wants woken, abort pending writes once the pair
    /// stopped.
    fn apply_wakes(&self) {
        let (wakes, stopped) = {
            let mut session = self.session.borrow_mut();
            if !session.wants_wake() {
                return;
            }
            (session.take_wakes(), session.stopped())
        };
        let (src, dst) = match self.src.id {
            SideId::Client => (wakes[0], wakes[1]),
            SideId::Upstream => (wakes[1], wakes[0]),
        };
        if src {
            self.src.wake_reader();
        }
        if dst {
            self.dst.wake_reader();
        }
        if stopped {
            self.src.cancel_write();
            self.dst.cancel_write();
        }
    }
}

fn is_cancelled(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED)
}
