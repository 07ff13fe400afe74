//! The rules of one relayed WebSocket pair, sans-IO: fed decoded batches, socket events and `now`, it decides what
//! is forwarded, which control frames the gateway owes each side, and when the pair ends.
//!
//! Owns: each side's close handshake as a [`CloseState`], the control frames queued for each side (the gateway's
//! pings and Closes, and the Close held back from a side that broke the protocol until the other side answered),
//! keepalive (ping after silence, cut out the pong that answers it, give up on a peer that does not answer), the
//! idle and close deadlines, what a protocol violation or a dropped connection means for the other side, and the
//! counters and reason for the log line. Every time-dependent call takes `now`, so the rules are unit-tested on a
//! virtual clock.
//! Does not own: sockets, buffers, timers or wake-ups (`super::io` drives a session over two sockets and turns its
//! requests into I/O), nor frame validation (`frame_simd`'s decoder, which the batch decoding here feeds).

use std::io;
use std::time::{Duration, Instant};

use frame_simd::{Decoded, FrameDecoder, FrameError, OpCode};

use super::rate::{Exceeded, RateLimits};

/// How a relay is configured (from the route's `websocket:` settings and the negotiated extensions).
#[derive(Debug, Clone)]
pub(crate) struct RelaySettings {
    pub(crate) idle_timeout: Duration,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) pong_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) max_frame_size: u64,
    pub(crate) max_message_size: u64,
    pub(crate) validate_utf8: bool,
    /// permessage-deflate negotiated end to end: RSV1 allowed on data frames.
    pub(crate) deflate: bool,
    /// The client's token expires then (routes with `auth.jwt.enforce_expiry`): both sides get a 1008 Close.
    pub(crate) token_expires: Option<Instant>,
    /// Message and byte rates each way (the session takes them over; `None`: the route sets none).
    pub(crate) limits: Option<Box<RateLimits>>,
}

/// Which socket of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SideId {
    Client,
    Upstream,
}

impl SideId {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SideId::Client => "client",
            SideId::Upstream => "upstream",
        }
    }

    pub(crate) fn other(self) -> SideId {
        match self {
            SideId::Client => SideId::Upstream,
            SideId::Upstream => SideId::Client,
        }
    }

    fn index(self) -> usize {
        match self {
            SideId::Client => 0,
            SideId::Upstream => 1,
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

/// Where one side's close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseState {
    /// No Close either way.
    Open,
    /// A Close was written to this side (forwarded or the gateway's own); its answer is awaited.
    Sent,
    /// This side's Close was read (or the gateway stopped caring for it); a Close to it is still owed.
    Received,
    /// Both ways: this side is done.
    Closed,
    /// Dead or misbehaved: neither read nor written any more.
    Gone,
}

impl CloseState {
    fn sent(self) -> bool {
        matches!(self, CloseState::Sent | CloseState::Closed)
    }

    fn received(self) -> bool {
        matches!(self, CloseState::Received | CloseState::Closed)
    }

    fn after_send(self) -> Self {
        match self {
            CloseState::Open => CloseState::Sent,
            CloseState::Received => CloseState::Closed,
            other => other,
        }
    }

    fn after_receive(self) -> Self {
        match self {
            CloseState::Open => CloseState::Received,
            CloseState::Sent => CloseState::Closed,
            other => other,
        }
    }
}

/// A Close the gateway owes a side: its code and why (a byte, not the text: it sits in every pair's state).
pub(crate) type CloseFrame = (u16, CloseWhy);

/// Why the gateway closes a side; [`CloseWhy::text`] is the close frame's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseWhy {
    PeerDisconnected,
    PeerNotResponding,
    PeerProtocolError,
    IdleTimeout,
    /// The gateway is stopping (the text follows the code: 1001 or 1012).
    Draining,
    /// This side broke the protocol; the text follows the close code.
    Violation,
    /// The client's token expired (1008).
    TokenExpired,
    /// A side went over its message or byte rate with `on_excess: close` (1008 to both sides).
    RateLimit,
}

impl CloseWhy {
    /// The reason text sent in the close frame with `code`.
    pub(crate) fn text(self, code: u16) -> &'static str {
        match self {
            CloseWhy::PeerDisconnected => "peer disconnected",
            CloseWhy::PeerNotResponding => "peer not responding",
            CloseWhy::PeerProtocolError => "peer protocol error",
            CloseWhy::IdleTimeout => "idle timeout",
            CloseWhy::Draining if code == 1012 => "service restart",
            CloseWhy::Draining => "going away",
            CloseWhy::TokenExpired => "token expired",
            CloseWhy::RateLimit => "rate limit exceeded",
            CloseWhy::Violation => match code {
                1002 => "protocol error",
                1007 => "invalid payload data",
                1009 => "message too big",
                _ => "",
            },
        }
    }
}

/// Control frames to write to one side now, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transmit {
    pub(crate) ping: Option<[u8; 8]>,
    pub(crate) close: Option<CloseFrame>,
}

/// What decoding one batch of bytes from a side found.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Bytes `..forward_end` go to the other side (0: none).
    pub(crate) forward_end: usize,
    /// The forwarded bytes end inside a data frame.
    pub(crate) mid_frame: bool,
    /// Where decoding stopped: bytes from here on wait for the next read.
    pub(crate) pos: usize,
    /// The side's Close frame was among the bytes (and is the last thing forwarded).
    pub(crate) saw_close: bool,
    /// A protocol violation, and whether the destination had been left inside a frame by an earlier batch.
    pub(crate) failure: Option<(FrameError, bool)>,
}

/// What the leg reading a side does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The leg is finished.
    Done,
    /// A deadline passed at this time: act on it first ([`Session::on_deadline`]).
    Due(Instant),
    /// Read the side, until `deadline` at the latest.
    Read { now: Instant, deadline: Instant },
    /// The side went over its rate: do not read it before `until` (unless woken), then ask again.
    Paused { until: Instant },
}

/// How a relay ended, for the connection log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelayOutcome {
    /// Human description of what ended the relay first.
    pub(crate) reason: String,
    pub(crate) bytes_client_to_upstream: u64,
    pub(crate) bytes_upstream_to_client: u64,
    /// Messages relayed client→upstream and upstream→client.
    pub(crate) messages: [u64; 2],
    /// The code of the Close frame each side sent (1005: one without a code), if it sent one.
    pub(crate) close_from: [Option<u16>; 2],
    /// The codes of the gateway's own Close frames to each side.
    pub(crate) gateway_closes: [Option<u16>; 2],
    /// The code of a frame the gateway refused (1002, 1007, 1009).
    pub(crate) violation: Option<u16>,
    /// A side did not answer the gateway's ping.
    pub(crate) dead_peer: bool,
    /// How often each direction went over its rate (paused, or closed with 1008).
    pub(crate) rate_limited: [u64; 2],
}

/// Counts that grow while a relay runs, for metrics published as they go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) messages: [u64; 2],
    pub(crate) bytes: [u64; 2],
    pub(crate) pings_sent: u64,
    /// Times each direction went over its rate.
    pub(crate) rate_limited: [u64; 2],
}

/// One side's part of the session.
#[derive(Debug)]
struct SideState {
    close: CloseState,
    /// The byte stream written to this side is inside a forwarded frame: nothing may be injected now.
    tx_mid_frame: bool,
    pending_ping: Option<[u8; 8]>,
    pending_close: Option<CloseFrame>,
    /// This side broke the protocol: its Close (with this code) is sent once the other side has answered the
    /// gateway's Close, so whatever the other side still sends back (e.g. the echo of frames forwarded before the
    /// violation) reaches it first, as if it talked to the upstream directly.
    deferred_close: Option<CloseFrame>,
    last_rx: Instant,
    /// Payload of the gateway's last ping to this side; the pong carrying it is not forwarded.
    ping_payload: Option<[u8; 8]>,
    pong_deadline: Option<Instant>,
    /// A frame from this side is partly received: it cannot answer a ping before the frame ends.
    rx_mid_frame: bool,
}

impl SideState {
    fn new(now: Instant) -> Self {
        Self {
            close: CloseState::Open,
            tx_mid_frame: false,
            pending_ping: None,
            pending_close: None,
            deferred_close: None,
            last_rx: now,
            ping_payload: None,
            pong_deadline: None,
            rx_mid_frame: false,
        }
    }

    fn finished(&self) -> bool {
        matches!(self.close, CloseState::Gone | CloseState::Closed)
    }

    fn abandon(&mut self) {
        self.close = CloseState::Gone;
    }

    /// Queues a Close for this side unless one was already sent or it is gone.
    fn queue_close(&mut self, close: CloseFrame) {
        if !self.close.sent() && self.close != CloseState::Gone && self.pending_close.is_none() {
            self.pending_close = Some(close);
        }
    }

    /// Turns a deferred Close into a queued one (the other side answered, failed, or time is up).
    fn release_deferred_close(&mut self) {
        if let Some(close) = self.deferred_close.take() {
            self.queue_close(close);
        }
    }

    fn can_flush(&self) -> bool {
        !self.tx_mid_frame
            && !matches!(self.close, CloseState::Gone)
            && !self.close.sent()
            && (self.pending_close.is_some() || self.pending_ping.is_some())
    }
}

/// The state of one relayed pair.
#[derive(Debug)]
pub(crate) struct Session {
    settings: RelaySettings,
    sides: [SideState; 2],
    /// Last data frame in either direction (the idle timer); the gateway's own pings do not count.
    last_activity: Instant,
    /// Set when a close handshake starts: by then both sides must have finished.
    closing_deadline: Option<Instant>,
    stopped: bool,
    reason: Option<String>,
    /// Bytes and messages forwarded client→upstream and upstream→client, pings sent.
    progress: Progress,
    close_from: [Option<u16>; 2],
    gateway_closes: [Option<u16>; 2],
    violation: Option<u16>,
    dead_peer: bool,
    /// The gateway is draining: both sides get a Close with this code at this moment.
    drain: Option<(Instant, u16)>,
    ping_counter: u64,
    /// Sides whose reader must look at the session again (its pending read is to be cancelled).
    wake: [bool; 2],
    /// Message and byte rates (boxed: most pairs have none).
    limits: Option<Box<RateLimits>>,
}

impl Session {
    pub(crate) fn new(mut settings: RelaySettings, now: Instant) -> Self {
        let limits = settings.limits.take();
        Self {
            settings,
            sides: [SideState::new(now), SideState::new(now)],
            last_activity: now,
            closing_deadline: None,
            stopped: false,
            reason: None,
            progress: Progress::default(),
            close_from: [None, None],
            gateway_closes: [None, None],
            violation: None,
            dead_peer: false,
            drain: None,
            ping_counter: 0,
            wake: [false, false],
            limits,
        }
    }

    pub(crate) fn settings(&self) -> &RelaySettings {
        &self.settings
    }

    fn side(&self, id: SideId) -> &SideState {
        &self.sides[id.index()]
    }

    fn side_mut(&mut self, id: SideId) -> &mut SideState {
        &mut self.sides[id.index()]
    }

    /// Where `side`'s close handshake stands.
    #[cfg(test)]
    pub(crate) fn close_state(&self, side: SideId) -> CloseState {
        self.side(side).close
    }

    /// The pair is over: both legs stop, pending writes are abandoned.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// Takes the set of sides whose reader must be woken.
    pub(crate) fn take_wakes(&mut self) -> [bool; 2] {
        std::mem::take(&mut self.wake)
    }

    /// Whether anything was asked to be woken (cheap check before [`Session::take_wakes`]).
    pub(crate) fn wants_wake(&self) -> bool {
        self.wake[0] | self.wake[1] | self.stopped
    }

    /// The log summary.
    pub(crate) fn outcome(&mut self) -> RelayOutcome {
        RelayOutcome {
            reason: self.reason.take().unwrap_or_else(|| "closed".to_owned()),
            bytes_client_to_upstream: self.progress.bytes[0],
            bytes_upstream_to_client: self.progress.bytes[1],
            messages: self.progress.messages,
            close_from: self.close_from,
            gateway_closes: self.gateway_closes,
            violation: self.violation,
            dead_peer: self.dead_peer,
            rate_limited: self.progress.rate_limited,
        }
    }

    /// The counts so far.
    pub(crate) fn progress(&self) -> Progress {
        self.progress
    }

    /// Whether [`Session::schedule_drain`] was called.
    pub(crate) fn drain_scheduled(&self) -> bool {
        self.drain.is_some()
    }

    /// The gateway drains: both sides are sent a Close with `code` at `at` (once; a later call changes nothing).
    pub(crate) fn schedule_drain(&mut self, at: Instant, code: u16) {
        if self.drain.is_none() && !self.stopped {
            self.drain = Some((at, code));
            // The legs look at their deadlines again.
            self.wake = [true, true];
        }
    }

    fn note(&mut self, reason: impl FnOnce() -> String) {
        if self.reason.is_none() {
            self.reason = Some(reason());
        }
    }

    fn start_closing(&mut self, now: Instant) {
        if self.closing_deadline.is_none() {
            self.closing_deadline = Some(now + self.settings.close_timeout);
        }
    }

    fn wake(&mut self, side: SideId) {
        self.wake[side.index()] = true;
    }

    // ---- input from a side ----

    /// Bytes arrived from `src`: it is alive. Returns whether they are to be decoded (anything after the side's
    /// Close is ignored, RFC 6455 §5.5.1).
    pub(crate) fn on_input(&mut self, src: SideId, now: Instant) -> bool {
        let side = self.side_mut(src);
        side.last_rx = now;
        side.pong_deadline = None;
        !side.close.received()
    }

    /// Decodes the bytes in `buf` from `src` (a pong answering the gateway's own ping is cut out of it) and decides
    /// what may be forwarded to the other side.
    pub(crate) fn decode(
        &mut self,
        src: SideId,
        buf: &mut Vec<u8>,
        decoder: &mut FrameDecoder,
        in_frame: &mut bool,
        now: Instant,
    ) -> Batch {
        let dst_deferred = self.side(src.other()).deferred_close.is_some();
        let mut pos = 0;
        // Where the destination stream is between frames, within this batch (None: mid-frame since an earlier batch).
        let mut boundary = if *in_frame { None } else { Some(0) };
        let mut data_seen = false;
        let mut failure: Option<FrameError> = None;
        let mut saw_close = false;
        // Payload bytes of the batch, control frames included (what a byte rate counts).
        let mut payload = 0u64;
        // Data messages that may start in this batch (`u64::MAX`: no message rate, or closing), and did.
        let allowance = match &self.limits {
            Some(l) if self.closing_deadline.is_none() => {
                l.side(src).map_or(u64::MAX, |d| d.message_allowance(now))
            }
            _ => u64::MAX,
        };
        let mut started = 0u64;
        let mut stopped = false;
        while pos < buf.len() {
            // A text or binary frame header between frames starts a message (the first byte is never masked):
            // over the allowance, decoding stops in front of it and the rest waits for the next batch.
            let starts_message =
                allowance != u64::MAX && !*in_frame && matches!(buf[pos] & 0x0f, 1 | 2);
            if starts_message && started == allowance {
                stopped = true;
                break;
            }
            match decoder.decode(&mut buf[pos..]) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::DataHeader { len, .. }) => {
                    pos += len;
                    *in_frame = true;
                    data_seen = true;
                    // Counted once its header is decoded (a header split across reads is seen twice).
                    started += u64::from(starts_message);
                }
                Ok(Decoded::DataPayload {
                    len,
                    frame_end,
                    message_end,
                }) => {
                    pos += len;
                    data_seen = true;
                    payload += len as u64;
                    self.progress.messages[src.index()] += u64::from(message_end);
                    if frame_end {
                        *in_frame = false;
                        boundary = Some(pos);
                    }
                }
                Ok(Decoded::Control { opcode, len }) => {
                    if opcode == OpCode::Pong && self.is_own_pong(src, decoder.control_payload()) {
                        // The answer to the gateway's own ping: not forwarded.
                        buf.copy_within(pos + len.., pos);
                        buf.truncate(buf.len() - len);
                        boundary = Some(pos);
                        continue;
                    }
                    pos += len;
                    boundary = Some(pos);
                    payload += decoder.control_payload().len() as u64;
                    if opcode == OpCode::Close {
                        saw_close = true;
                        let code = match decoder.control_payload() {
                            [a, b, ..] => u16::from_be_bytes([*a, *b]),
                            _ => 1005,
                        };
                        self.close_from[src.index()].get_or_insert(code);
                        if dst_deferred {
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
            self.last_activity = now;
        }
        if let Some(limits) = &mut self.limits
            && let Some(limiter) = limits.side_mut(src)
        {
            let bytes_over = limiter.charge(started, payload, now);
            if stopped {
                self.on_rate_exceeded(src, Exceeded::Messages, now);
            } else if bytes_over {
                self.on_rate_exceeded(src, Exceeded::Bytes, now);
            }
        }
        self.side_mut(src).rx_mid_frame = *in_frame;
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

    fn is_own_pong(&mut self, src: SideId, payload: &[u8]) -> bool {
        let side = self.side_mut(src);
        match side.ping_payload {
            Some(own) if own.as_slice() == payload => {
                side.ping_payload = None;
                true
            }
            _ => false,
        }
    }

    /// `src` went over its message rate (the batch stops in front of the first message over it) or its byte rate
    /// (the batch is forwarded all the same: it was read). `pause`: its leg stops reading until the buckets allow
    /// more ([`Step::Paused`]). `close`: both sides get 1008 through the usual close handshake.
    #[cold]
    fn on_rate_exceeded(&mut self, src: SideId, over: Exceeded, now: Instant) {
        let Some(limits) = self.limits.as_deref_mut() else {
            return;
        };
        let peer = limits.peer;
        let Some(limiter) = limits.side_mut(src) else {
            return;
        };
        self.progress.rate_limited[src.index()] += 1;
        limiter.excesses = limiter.excesses.saturating_add(1);
        let first = limiter.excesses == 1;
        if !limiter.close {
            limiter.paused = true;
            // One line per connection and direction; the metric counts every pause.
            if first {
                tracing::info!(%peer, side = src.name(), limit = over.name(), "rate limit exceeded; pausing reads");
            }
            return;
        }
        if self.closing_deadline.is_some() {
            // Already closing: the close timeout bounds what is left.
            return;
        }
        tracing::warn!(%peer, side = src.name(), limit = over.name(), "rate limit exceeded; closing with 1008");
        self.note(|| format!("{} exceeded {} (1008)", src.name(), over.name()));
        self.side_mut(src).queue_close((1008, CloseWhy::RateLimit));
        self.close_other(src, 1008, CloseWhy::RateLimit, now);
    }

    /// While `src`'s reads are paused for its rate: until when. The pause ends early once a close handshake starts
    /// (its answers must get through within the close timeout). When the pause is over, the side's silence during it
    /// is forgiven: the keepalive and idle clocks restart.
    fn paused_until(&mut self, src: SideId, now: Instant) -> Option<Instant> {
        let closing = self.closing_deadline.is_some();
        let limiter = self.limits.as_deref_mut()?.side_mut(src)?;
        if !limiter.paused {
            return None;
        }
        if !closing && let Some(until) = limiter.resume_at(now) {
            return Some(until);
        }
        limiter.paused = false;
        self.last_activity = self.last_activity.max(now);
        let pong_timeout = self.settings.pong_timeout;
        let side = self.side_mut(src);
        side.last_rx = side.last_rx.max(now);
        if let Some(pong) = &mut side.pong_deadline {
            *pong = (*pong).max(now + pong_timeout);
        }
        None
    }

    /// Whether a side's reads are paused for its rate (idle and keepalive clocks stand still meanwhile).
    fn paused(&self, side: SideId) -> bool {
        self.limits
            .as_deref()
            .and_then(|l| l.side(side))
            .is_some_and(|l| l.paused)
    }

    /// Whether bytes from `src` may be written to the other side (it has not been sent a Close and is not gone).
    pub(crate) fn forwards_from(&self, src: SideId) -> bool {
        matches!(
            self.side(src.other()).close,
            CloseState::Open | CloseState::Received
        )
    }

    /// `len` bytes from `src` reached the other side, ending inside a data frame when `mid_frame`.
    pub(crate) fn on_forwarded(&mut self, src: SideId, len: usize, mid_frame: bool) {
        self.progress.bytes[src.index()] += len as u64;
        self.side_mut(src.other()).tx_mid_frame = mid_frame;
    }

    /// `src`'s Close was forwarded (or, when the destination broke the protocol, replaced by the gateway's own).
    pub(crate) fn on_close_received(&mut self, src: SideId, now: Instant) {
        let close = self.side(src).close.after_receive();
        self.side_mut(src).close = close;
        let dst = self.side_mut(src.other());
        if dst.deferred_close.is_some() {
            dst.release_deferred_close();
        } else {
            dst.close = dst.close.after_send();
        }
        self.start_closing(now);
        tracing::debug!(from = src.name(), "close frame relayed");
        self.wake(src.other());
    }

    /// A frame from `src` broke the rules: it is closed with the violation's code (once the other side answered
    /// the gateway's Close, unless the other side already has part of the offending frame), the other side with
    /// 1001 (client offended) or 1011 (upstream offended).
    pub(crate) fn on_violation(
        &mut self,
        src: SideId,
        e: &FrameError,
        dst_mid_frame: bool,
        now: Instant,
    ) {
        let code = e.close_code();
        self.violation.get_or_insert(code);
        tracing::warn!(side = src.name(), code, error = %e, "protocol violation; closing");
        self.note(|| format!("{} violated the protocol ({code}): {e}", src.name()));
        let side = self.side_mut(src);
        // Nothing more is read from it, and its answer to our Close is not awaited.
        side.close = side.close.after_receive();
        side.deferred_close = Some((code, CloseWhy::Violation));
        if dst_mid_frame {
            // The destination already has part of the offending frame: it can only be cut off, and the
            // offender's Close need not wait for it.
            self.side_mut(src.other()).abandon();
            self.side_mut(src).release_deferred_close();
        }
        self.close_other(
            src,
            src.failure_code_for_other(),
            CloseWhy::PeerProtocolError,
            now,
        );
    }

    /// `src` closed its TCP stream (`err` is `None`) or failed.
    pub(crate) fn on_source_closed(&mut self, src: SideId, err: Option<&io::Error>, now: Instant) {
        let side = self.side(src);
        if err.is_none() && side.close == CloseState::Received {
            // It sent its Close and then shut its sending direction (SHUT_WR), as many clients do: that ends only
            // what it sends. It still gets the other side's Close, as it would talking to that side directly; the
            // close timeout bounds the wait.
            self.side_mut(src.other()).release_deferred_close();
            self.wake(src.other());
            return;
        }
        if side.close != CloseState::Open {
            // A close handshake was under way; the TCP close is its normal end (or the peer's shortcut).
            self.side_mut(src).abandon();
            self.side_mut(src.other()).release_deferred_close();
            self.wake(src.other());
            return;
        }
        match err {
            Some(e) => tracing::info!(side = src.name(), error = %e, "connection failed"),
            None => tracing::info!(side = src.name(), "connection closed without a close frame"),
        }
        self.note(|| format!("{} disconnected without closing", src.name()));
        // The source's leg ends here; the other leg flushes the close when it can and then waits for the answer.
        self.lose(src, now);
    }

    /// Writing to `dst` failed or stalled past the idle timeout: it is given up and the other side is closed.
    pub(crate) fn on_destination_failed(&mut self, dst: SideId, what: &str, now: Instant) {
        tracing::info!(side = dst.name(), "{what}");
        self.note(|| format!("{} {what}", dst.name()));
        self.lose(dst, now);
    }

    /// `gone` can neither be read nor written any more: the other side is closed with the code for its loss.
    fn lose(&mut self, gone: SideId, now: Instant) {
        self.side_mut(gone).abandon();
        let other = self.side_mut(gone.other());
        other.release_deferred_close();
        other.queue_close((gone.failure_code_for_other(), CloseWhy::PeerDisconnected));
        self.start_closing(now);
        self.wake(gone);
        self.wake(gone.other());
    }

    /// Queues a Close for the side other than `side`.
    fn close_other(&mut self, side: SideId, code: u16, why: CloseWhy, now: Instant) {
        self.side_mut(side.other()).queue_close((code, why));
        self.start_closing(now);
        self.wake(side.other());
    }

    // ---- time ----

    /// What the leg reading `src` does next: stop, act on a passed deadline, or read until a deadline.
    #[inline]
    pub(crate) fn next_step(&mut self, src: SideId, now: Instant) -> Step {
        self.check_done();
        if self.stopped || self.side(src).finished() {
            return Step::Done;
        }
        // Before the deadline: a pause that just ended restarts the clocks the deadline is made of.
        let paused_until = match self.limits {
            Some(_) => self.paused_until(src, now),
            None => None,
        };
        let deadline = self.deadline(src, now);
        if deadline <= now {
            Step::Due(now)
        } else if let Some(until) = paused_until {
            Step::Paused {
                until: until.min(deadline),
            }
        } else {
            Step::Read { now, deadline }
        }
    }

    /// The earliest moment the leg reading `src` must act without input.
    fn deadline(&self, src: SideId, now: Instant) -> Instant {
        let s = &self.settings;
        let far = now + Duration::from_secs(3600);
        if let Some(closing) = self.closing_deadline {
            // Closing: only the close timeout matters now. (The idle deadline is usually already past here — it is
            // what started the close — and taking it into account would make the leg spin until the close timeout.)
            return closing.min(far);
        }
        let side = self.side(src);
        let paused = self.limits.is_some() && (self.paused(src) || self.paused(src.other()));
        // While a side is paused the pair is not idle (the pause ends first, and restarts the clock).
        let mut deadline = if paused {
            far
        } else {
            self.last_activity + s.idle_timeout
        };
        if let Some((at, _)) = self.drain {
            deadline = deadline.min(at);
        }
        if let Some(at) = s.token_expires {
            deadline = deadline.min(at);
        }
        // A paused side is not read, so it cannot be heard: no keepalive for it until the pause ends.
        if let Some(interval) = s.ping_interval
            && side.pending_ping.is_none()
            && !(paused && self.paused(src))
        {
            match side.pong_deadline {
                // A peer in the middle of sending a frame cannot answer before the frame ends; the idle
                // timeout still bounds a peer that stalls mid-frame.
                Some(_) if side.rx_mid_frame => {}
                Some(pong) => deadline = deadline.min(pong),
                None => deadline = deadline.min(side.last_rx + interval),
            }
        }
        deadline.min(far)
    }

    /// A deadline of the leg reading `src` passed: close handshake timeout, idle timeout, a missing pong, or time
    /// to ping.
    pub(crate) fn on_deadline(&mut self, src: SideId, now: Instant) {
        let idle_timeout = self.settings.idle_timeout;
        if let Some(closing) = self.closing_deadline {
            if now >= closing {
                self.note(|| "close handshake timed out".to_owned());
                self.side_mut(src).release_deferred_close();
                self.side_mut(src.other()).release_deferred_close();
                self.stop();
            }
            return;
        }
        if let Some((at, code)) = self.drain
            && now >= at
        {
            self.note(|| format!("gateway draining ({code})"));
            self.side_mut(src).queue_close((code, CloseWhy::Draining));
            self.side_mut(src.other())
                .queue_close((code, CloseWhy::Draining));
            self.start_closing(now);
            self.wake(src.other());
            return;
        }
        if let Some(at) = self.settings.token_expires
            && now >= at
        {
            tracing::info!("client token expired; closing with 1008");
            self.note(|| "client token expired (1008)".to_owned());
            self.side_mut(src)
                .queue_close((1008, CloseWhy::TokenExpired));
            self.side_mut(src.other())
                .queue_close((1008, CloseWhy::TokenExpired));
            self.start_closing(now);
            self.wake(src.other());
            return;
        }
        // While a side is paused the pair is not idle, and the paused side is not pinged (see `Session::deadline`).
        let paused = self.limits.is_some() && (self.paused(src) || self.paused(src.other()));
        if !paused && now >= self.last_activity + idle_timeout {
            self.note(|| format!("idle for {idle_timeout:?}"));
            self.side_mut(src)
                .queue_close((1001, CloseWhy::IdleTimeout));
            self.side_mut(src.other())
                .queue_close((1001, CloseWhy::IdleTimeout));
            self.start_closing(now);
            self.wake(src.other());
            return;
        }
        if paused && self.paused(src) {
            return;
        }
        let side = self.side(src);
        if let Some(pong) = side.pong_deadline {
            if now >= pong && !side.rx_mid_frame {
                tracing::info!(
                    side = src.name(),
                    "peer did not answer the gateway's ping; closing"
                );
                self.note(|| format!("{} did not answer ping", src.name()));
                self.dead_peer = true;
                self.side_mut(src).abandon();
                self.close_other(
                    src,
                    src.failure_code_for_other(),
                    CloseWhy::PeerNotResponding,
                    now,
                );
            }
            return;
        }
        if self.settings.ping_interval.is_some() && side.pending_ping.is_none() {
            self.ping_counter = self.ping_counter.wrapping_add(1);
            let payload = self.ping_counter.to_be_bytes();
            let side = self.side_mut(src);
            side.ping_payload = Some(payload);
            side.pending_ping = Some(payload);
        }
    }

    // ---- control frames the gateway writes ----

    /// Whether `side` has control frames queued and its stream is between frames, so they can be written now.
    #[inline]
    pub(crate) fn can_flush(&self, side: SideId) -> bool {
        self.side(side).can_flush()
    }

    /// Takes the control frames to write to `side` now (a Close supersedes a ping), if any.
    pub(crate) fn poll_transmit(&mut self, side: SideId) -> Option<Transmit> {
        let state = self.side_mut(side);
        if !state.can_flush() {
            return None;
        }
        let close = state.pending_close.take();
        let ping = state.pending_ping.take().filter(|_| close.is_none());
        if close.is_some() {
            state.close = state.close.after_send();
        }
        if let Some((code, _)) = close {
            self.gateway_closes[side.index()].get_or_insert(code);
        }
        self.progress.pings_sent += u64::from(ping.is_some());
        Some(Transmit { ping, close })
    }

    /// The control frames from [`Session::poll_transmit`] were written to `side` (or could not be).
    pub(crate) fn on_transmitted(&mut self, side: SideId, sent: Transmit, ok: bool, now: Instant) {
        if !ok {
            tracing::debug!(
                side = side.name(),
                "could not write a control frame; abandoning"
            );
            self.side_mut(side).abandon();
        } else if sent.close.is_none() {
            // The pong clock starts when the ping is on the wire, not when it was queued behind a long frame.
            self.side_mut(side).pong_deadline = Some(now + self.settings.pong_timeout);
            self.wake(side);
        }
    }

    // ---- the end ----

    /// Stops the pair once both sides are finished.
    pub(crate) fn check_done(&mut self) {
        if !self.stopped && self.sides[0].finished() && self.sides[1].finished() {
            self.stop();
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.wake = [true, true];
    }
}

#[cfg(test)]
mod tests {
    //! The relay's rules on a virtual clock: every close path, violation, ping/pong and deadline, without sockets or
    //! sleeps. Frames are fed as bytes, exactly as a leg would after a read.

    use frame_simd::{DecoderConfig, FrameHeader, PayloadMode, Role, Rsv};
    use ringway_config::{DirectionLimits, MessageLimits, OnExcess, Rate};

    use super::*;
    use crate::ws::relay::side::push_frame;

    const T: Duration = Duration::from_secs(1);
    const CLIENT: SideId = SideId::Client;
    const UPSTREAM: SideId = SideId::Upstream;

    fn settings() -> RelaySettings {
        RelaySettings {
            idle_timeout: 60 * T,
            ping_interval: Some(10 * T),
            pong_timeout: 5 * T,
            close_timeout: 2 * T,
            max_frame_size: 1 << 20,
            max_message_size: 1 << 22,
            validate_utf8: true,
            deflate: false,
            token_expires: None,
            limits: None,
        }
    }

    /// `settings()` with `client` as the client's limits (the upstream's unlimited).
    fn limited(client: DirectionLimits) -> RelaySettings {
        let mut s = settings();
        let limits = MessageLimits {
            from_client: client,
            from_upstream: DirectionLimits::default(),
        };
        s.limits = RateLimits::new(&limits, "192.0.2.1:4000".parse().expect("addr"));
        s
    }

    fn messages(per_second: u64, burst: u64, on_excess: OnExcess) -> DirectionLimits {
        DirectionLimits {
            messages: Some(Rate { per_second, burst }),
            bytes: None,
            on_excess,
        }
    }

    fn bytes(per_second: u64, burst: u64) -> DirectionLimits {
        DirectionLimits {
            messages: None,
            bytes: Some(Rate { per_second, burst }),
            on_excess: OnExcess::Pause,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    /// A session, both legs' decoders, and the virtual clock's origin.
    struct Pair {
        s: Session,
        t0: Instant,
        decoders: [FrameDecoder; 2],
        in_frame: [bool; 2],
    }

    impl Pair {
        fn new(settings: RelaySettings) -> Self {
            let decoder = |peer| {
                FrameDecoder::new(DecoderConfig {
                    peer,
                    max_frame_size: settings.max_frame_size,
                    max_message_size: settings.max_message_size,
                    allowed_rsv: Rsv::default(),
                    validate_utf8: settings.validate_utf8,
                    payload: PayloadMode::Preserve,
                })
            };
            let t0 = Instant::now();
            Self {
                decoders: [decoder(Role::Client), decoder(Role::Server)],
                s: Session::new(settings, t0),
                t0,
                in_frame: [false, false],
            }
        }

        fn at(&self, offset: Duration) -> Instant {
            self.t0 + offset
        }

        /// Bytes from `src` at `offset`, as a leg feeds them; returns the batch and the bytes left to forward.
        fn feed(
            &mut self,
            src: SideId,
            bytes: &[u8],
            offset: Duration,
        ) -> Option<(Batch, Vec<u8>)> {
            let now = self.at(offset);
            if !self.s.on_input(src, now) {
                return None;
            }
            let mut buf = bytes.to_vec();
            let i = src.index();
            let batch = self.s.decode(
                src,
                &mut buf,
                &mut self.decoders[i],
                &mut self.in_frame[i],
                now,
            );
            if batch.forward_end > 0 && self.s.forwards_from(src) {
                self.s.on_forwarded(src, batch.forward_end, batch.mid_frame);
            }
            Some((batch, buf))
        }

        /// Feeds a whole batch that carried a Close and does what the leg does after it.
        fn feed_close(&mut self, src: SideId, code: u16, offset: Duration) {
            let (batch, _) = self
                .feed(src, &close_frame(src, code), offset)
                .expect("decoded");
            assert!(batch.saw_close);
            self.s.on_close_received(src, self.at(offset));
        }

        fn transmit(&mut self, side: SideId, offset: Duration) -> Option<Transmit> {
            let frames = self.s.poll_transmit(side)?;
            self.s.on_transmitted(side, frames, true, self.at(offset));
            Some(frames)
        }

        /// Runs the leg reading `src` at `offset` the way the I/O loop does: act on a due deadline.
        fn tick(&mut self, src: SideId, offset: Duration) -> Step {
            let now = self.at(offset);
            let step = self.s.next_step(src, now);
            if let Step::Due(now) = step {
                self.s.on_deadline(src, now);
            }
            step
        }
    }

    /// A frame as `from` sends it (clients mask).
    fn frame(from: SideId, fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            fin,
            rsv: Rsv::default(),
            opcode,
            mask: (from == CLIENT).then_some([1, 2, 3, 4]),
            payload_len: payload.len() as u64,
        };
        let mut out = Vec::new();
        push_frame(&mut out, header, payload);
        out
    }

    fn close_frame(from: SideId, code: u16) -> Vec<u8> {
        frame(from, true, OpCode::Close, &code.to_be_bytes())
    }

    #[test]
    fn data_is_forwarded_verbatim_and_counted() {
        let mut p = Pair::new(settings());
        let text = frame(CLIENT, true, OpCode::Text, b"hello");
        let (batch, buf) = p.feed(CLIENT, &text, T).expect("decoded");
        assert_eq!(
            (batch.forward_end, batch.mid_frame, batch.failure.is_none()),
            (text.len(), false, true)
        );
        assert_eq!(buf, text, "masked bytes go out as received");
        let (batch, _) = p
            .feed(
                UPSTREAM,
                &frame(UPSTREAM, true, OpCode::Binary, &[7; 300]),
                T,
            )
            .expect("decoded");
        assert_eq!(batch.forward_end, 304);
        let out = p.s.outcome();
        assert_eq!(
            (out.bytes_client_to_upstream, out.bytes_upstream_to_client),
            (11, 304)
        );
    }

    #[test]
    fn a_close_is_bridged_and_the_answer_ends_the_pair() {
        let mut p = Pair::new(settings());
        p.feed_close(CLIENT, 1000, T);
        assert_eq!(p.s.close_state(CLIENT), CloseState::Received);
        assert_eq!(
            p.s.close_state(UPSTREAM),
            CloseState::Sent,
            "the client's Close was forwarded"
        );
        assert_eq!(
            p.s.take_wakes(),
            [false, true],
            "the upstream's leg looks again"
        );
        // Data after a side's Close is ignored.
        assert!(
            p.feed(CLIENT, &frame(CLIENT, true, OpCode::Text, b"late"), T)
                .is_none()
        );
        p.feed_close(UPSTREAM, 1000, 2 * T);
        assert_eq!(p.s.close_state(CLIENT), CloseState::Closed);
        assert_eq!(p.s.close_state(UPSTREAM), CloseState::Closed);
        assert_eq!(p.tick(CLIENT, 2 * T), Step::Done);
        assert!(p.s.stopped());
        assert_eq!(p.s.outcome().reason, "closed");
    }

    #[test]
    fn an_unanswered_close_times_out() {
        let mut p = Pair::new(settings());
        p.feed_close(CLIENT, 1000, T);
        match p.s.next_step(UPSTREAM, p.at(2 * T)) {
            Step::Read { deadline, .. } => {
                assert_eq!(deadline, p.at(3 * T), "only the close timeout counts")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.tick(UPSTREAM, 3 * T), Step::Due(p.at(3 * T)));
        assert!(p.s.stopped());
        assert_eq!(p.s.outcome().reason, "close handshake timed out");
    }

    #[test]
    fn a_silent_peer_is_pinged_and_its_pong_is_not_forwarded() {
        let mut p = Pair::new(settings());
        assert!(matches!(p.tick(UPSTREAM, 9 * T), Step::Read { .. }));
        assert_eq!(p.tick(UPSTREAM, 10 * T), Step::Due(p.at(10 * T)));
        assert!(p.s.can_flush(UPSTREAM));
        let sent = p.transmit(UPSTREAM, 10 * T).expect("a ping");
        let payload = sent.ping.expect("ping payload");
        assert_eq!(sent.close, None);
        // The pong carrying our payload is cut out; the data around it goes on.
        let mut bytes = frame(UPSTREAM, true, OpCode::Text, b"a");
        bytes.extend(frame(UPSTREAM, true, OpCode::Pong, &payload));
        bytes.extend(frame(UPSTREAM, true, OpCode::Text, b"b"));
        let (batch, buf) = p.feed(UPSTREAM, &bytes, 11 * T).expect("decoded");
        assert_eq!(
            buf,
            [
                frame(UPSTREAM, true, OpCode::Text, b"a"),
                frame(UPSTREAM, true, OpCode::Text, b"b")
            ]
            .concat()
        );
        assert_eq!(batch.forward_end, buf.len());
        // Any other pong (say the client's own keepalive) is forwarded.
        let other = frame(UPSTREAM, true, OpCode::Pong, b"theirs");
        let (batch, _) = p.feed(UPSTREAM, &other, 12 * T).expect("decoded");
        assert_eq!(batch.forward_end, other.len());
    }

    #[test]
    fn a_peer_that_does_not_answer_the_ping_is_dropped_and_the_other_side_closed() {
        for (dead, code) in [(UPSTREAM, 1011), (CLIENT, 1001)] {
            let mut p = Pair::new(settings());
            p.tick(dead, 10 * T);
            p.transmit(dead, 10 * T).expect("a ping");
            assert!(
                matches!(p.tick(dead, 14 * T), Step::Read { .. }),
                "pong timeout not yet over"
            );
            assert_eq!(p.tick(dead, 15 * T), Step::Due(p.at(15 * T)));
            assert_eq!(p.s.close_state(dead), CloseState::Gone);
            let to_other = p
                .transmit(dead.other(), 15 * T)
                .expect("a close for the other side");
            assert_eq!(to_other.close, Some((code, CloseWhy::PeerNotResponding)));
            assert!(p.s.outcome().reason.contains("did not answer ping"));
        }
    }

    #[test]
    fn a_peer_in_the_middle_of_a_frame_gets_time_to_finish_it_before_its_pong() {
        let mut p = Pair::new(settings());
        // The upstream starts a long frame, then goes quiet: pinged after 10 s of silence.
        let long = frame(UPSTREAM, true, OpCode::Binary, &[0; 1000]);
        let (batch, _) = p.feed(UPSTREAM, &long[..100], T).expect("decoded");
        assert!(batch.mid_frame);
        assert_eq!(p.tick(UPSTREAM, 11 * T), Step::Due(p.at(11 * T)));
        p.transmit(UPSTREAM, 11 * T).expect("a ping");
        // It cannot answer before its frame ends, so the pong timeout does not apply; the idle timeout does.
        match p.tick(UPSTREAM, 16 * T) {
            Step::Read { deadline, .. } => assert_eq!(deadline, p.at(61 * T)),
            other => panic!("{other:?}"),
        }
        assert_ne!(p.s.close_state(UPSTREAM), CloseState::Gone);
        // Any bytes count as a sign of life.
        p.feed(UPSTREAM, &long[100..], 20 * T);
        match p.tick(UPSTREAM, 21 * T) {
            Step::Read { deadline, .. } => {
                assert_eq!(deadline, p.at(30 * T), "next ping after 10 s")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn idle_pairs_get_1001_both_ways() {
        let mut s = settings();
        s.ping_interval = None;
        let mut p = Pair::new(s);
        p.feed(CLIENT, &frame(CLIENT, true, OpCode::Text, b"x"), 5 * T);
        assert!(
            matches!(p.tick(CLIENT, 64 * T), Step::Read { .. }),
            "activity moved the idle timer"
        );
        assert_eq!(p.tick(CLIENT, 65 * T), Step::Due(p.at(65 * T)));
        for side in [CLIENT, UPSTREAM] {
            let sent = p.transmit(side, 65 * T).expect("a close");
            assert_eq!(sent.close, Some((1001, CloseWhy::IdleTimeout)));
            assert_eq!(p.s.close_state(side), CloseState::Sent);
        }
    }

    #[test]
    fn an_expired_token_closes_both_sides_with_1008() {
        let mut s = settings();
        s.ping_interval = None;
        let mut p = Pair::new(s);
        p.s.settings.token_expires = Some(p.at(3 * T));
        p.feed(CLIENT, &frame(CLIENT, true, OpCode::Text, b"x"), T);
        assert_eq!(
            p.tick(UPSTREAM, 2 * T),
            Step::Read {
                now: p.at(2 * T),
                deadline: p.at(3 * T)
            },
            "the expiry is the next deadline"
        );
        assert_eq!(p.tick(UPSTREAM, 3 * T), Step::Due(p.at(3 * T)));
        for side in [CLIENT, UPSTREAM] {
            let sent = p.transmit(side, 3 * T).expect("a close");
            assert_eq!(sent.close, Some((1008, CloseWhy::TokenExpired)));
        }
        assert_eq!(CloseWhy::TokenExpired.text(1008), "token expired");
        assert!(p.s.outcome().reason.contains("token expired"));
    }

    #[test]
    fn a_client_violation_closes_it_with_its_code_after_the_upstream_answered() {
        let mut p = Pair::new(settings());
        let good = frame(CLIENT, true, OpCode::Text, b"ok");
        let mut bytes = good.clone();
        bytes.extend(frame(UPSTREAM, true, OpCode::Text, b"unmasked")); // a client must mask
        let (batch, _) = p.feed(CLIENT, &bytes, T).expect("decoded");
        assert_eq!(
            batch.forward_end,
            good.len(),
            "the whole frames before it are forwarded"
        );
        let (e, dst_mid_frame) = batch.failure.expect("a violation");
        assert_eq!(e.close_code(), 1002);
        p.s.on_violation(CLIENT, &e, dst_mid_frame, p.at(T));
        assert_eq!(
            p.s.poll_transmit(CLIENT),
            None,
            "held until the upstream answered"
        );
        assert_eq!(
            p.transmit(UPSTREAM, T).and_then(|t| t.close),
            Some((1001, CloseWhy::PeerProtocolError))
        );
        // The upstream's answer is not forwarded: the client gets the gateway's own Close instead.
        let (batch, _) = p
            .feed(UPSTREAM, &close_frame(UPSTREAM, 1001), 2 * T)
            .expect("decoded");
        assert!(batch.saw_close);
        assert_eq!(batch.forward_end, 0);
        p.s.on_close_received(UPSTREAM, p.at(2 * T));
        assert_eq!(
            p.transmit(CLIENT, 2 * T).and_then(|t| t.close),
            Some((1002, CloseWhy::Violation))
        );
        assert!(
            p.s.outcome()
                .reason
                .contains("client violated the protocol (1002)")
        );
    }

    #[test]
    fn an_upstream_violation_mid_frame_cuts_the_client_off_and_closes_the_upstream_at_once() {
        let mut p = Pair::new(settings());
        let mut payload = vec![b'a'; 100];
        payload.push(0xff); // invalid UTF-8, found after the first part was forwarded
        let text = frame(UPSTREAM, true, OpCode::Text, &payload);
        let (batch, _) = p.feed(UPSTREAM, &text[..50], T).expect("decoded");
        assert!(batch.mid_frame && batch.failure.is_none());
        let (batch, _) = p.feed(UPSTREAM, &text[50..], T).expect("decoded");
        let (e, dst_mid_frame) = batch.failure.expect("a violation");
        assert_eq!(
            (e.close_code(), dst_mid_frame, batch.forward_end),
            (1007, true, 0)
        );
        p.s.on_violation(UPSTREAM, &e, dst_mid_frame, p.at(T));
        assert_eq!(
            p.s.close_state(CLIENT),
            CloseState::Gone,
            "holds part of the frame: cut off"
        );
        assert_eq!(
            p.transmit(UPSTREAM, T).and_then(|t| t.close),
            Some((1007, CloseWhy::Violation)),
            "nothing to wait for"
        );
    }

    #[test]
    fn a_dropped_connection_closes_the_other_side_with_the_right_code() {
        for (gone, code) in [(UPSTREAM, 1011), (CLIENT, 1001)] {
            let mut p = Pair::new(settings());
            p.s.on_source_closed(gone, None, p.at(T));
            assert_eq!(p.s.close_state(gone), CloseState::Gone);
            assert_eq!(
                p.transmit(gone.other(), T).and_then(|t| t.close),
                Some((code, CloseWhy::PeerDisconnected))
            );
            assert!(
                p.s.outcome()
                    .reason
                    .contains("disconnected without closing")
            );
        }
        let mut p = Pair::new(settings());
        p.s.on_destination_failed(UPSTREAM, "write failed", p.at(T));
        assert_eq!(
            p.transmit(CLIENT, T).and_then(|t| t.close),
            Some((1011, CloseWhy::PeerDisconnected))
        );
    }

    #[test]
    fn control_frames_wait_for_a_frame_boundary() {
        let mut p = Pair::new(settings());
        let long = frame(UPSTREAM, true, OpCode::Binary, &[0; 200]);
        p.feed(UPSTREAM, &long[..50], 9 * T);
        // The client is due a ping, but its stream is inside a forwarded frame.
        assert_eq!(p.tick(CLIENT, 10 * T), Step::Due(p.at(10 * T)));
        assert!(!p.s.can_flush(CLIENT));
        assert_eq!(p.s.poll_transmit(CLIENT), None);
        p.feed(UPSTREAM, &long[50..], 10 * T);
        assert!(p.s.can_flush(CLIENT), "the frame ended");
        assert!(p.transmit(CLIENT, 10 * T).and_then(|t| t.ping).is_some());
    }

    #[test]
    fn a_half_close_after_a_close_still_gets_the_answer() {
        for side in [CLIENT, UPSTREAM] {
            let mut p = Pair::new(settings());
            p.feed_close(side, 1000, T);
            p.s.on_source_closed(side, None, p.at(T));
            assert_eq!(
                p.s.close_state(side),
                CloseState::Received,
                "still owed a Close"
            );
            // The other side's answer is forwarded to it, and that ends the pair.
            let (batch, _) = p
                .feed(side.other(), &close_frame(side.other(), 1000), 2 * T)
                .expect("decoded");
            assert_eq!(
                batch.forward_end,
                close_frame(side.other(), 1000).len(),
                "forwarded"
            );
            p.s.on_close_received(side.other(), p.at(2 * T));
            assert_eq!(p.s.close_state(side), CloseState::Closed);
            assert_eq!(p.tick(side.other(), 2 * T), Step::Done);
        }
        // A reset after the Close is not a half-close: nothing more can be written to it.
        let mut p = Pair::new(settings());
        p.feed_close(CLIENT, 1000, T);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        p.s.on_source_closed(CLIENT, Some(&reset), p.at(T));
        assert_eq!(p.s.close_state(CLIENT), CloseState::Gone);
    }

    #[test]
    fn a_failed_control_write_gives_the_side_up() {
        let mut p = Pair::new(settings());
        p.tick(UPSTREAM, 10 * T);
        let frames = p.s.poll_transmit(UPSTREAM).expect("a ping");
        p.s.on_transmitted(UPSTREAM, frames, false, p.at(10 * T));
        assert_eq!(p.s.close_state(UPSTREAM), CloseState::Gone);
    }

    #[test]
    fn close_reasons_say_why() {
        assert_eq!(CloseWhy::Violation.text(1002), "protocol error");
        assert_eq!(CloseWhy::Violation.text(1007), "invalid payload data");
        assert_eq!(CloseWhy::Violation.text(1009), "message too big");
        assert_eq!(CloseWhy::IdleTimeout.text(1001), "idle timeout");
        assert_eq!(CloseWhy::PeerDisconnected.text(1011), "peer disconnected");
    }

    #[test]
    fn failure_codes_follow_the_failing_side() {
        assert_eq!(SideId::Client.failure_code_for_other(), 1001);
        assert_eq!(SideId::Upstream.failure_code_for_other(), 1011);
    }

    fn texts(from: SideId, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|_| frame(from, true, OpCode::Text, b"hi"))
            .collect()
    }

    #[test]
    fn a_burst_passes_and_sustained_excess_pauses_until_the_bucket_refilled() {
        let mut p = Pair::new(limited(messages(10, 5, OnExcess::Pause)));
        for _ in 0..5 {
            p.feed(CLIENT, &texts(CLIENT, 1), T).expect("decoded");
            assert!(
                matches!(p.tick(CLIENT, T), Step::Read { .. }),
                "within the burst"
            );
        }
        // The sixth is held back, unforwarded and undecoded, until the bucket has a token again.
        let sixth = texts(CLIENT, 1);
        let (batch, _) = p.feed(CLIENT, &sixth, T).expect("decoded");
        assert_eq!((batch.forward_end, batch.pos), (0, 0));
        let until = p.at(T + 100 * MS);
        assert_eq!(p.tick(CLIENT, T), Step::Paused { until });
        assert_eq!(p.tick(CLIENT, T + 99 * MS), Step::Paused { until });
        assert!(matches!(p.tick(CLIENT, T + 100 * MS), Step::Read { .. }));
        let (batch, _) = p.feed(CLIENT, &sixth, T + 100 * MS).expect("decoded");
        assert_eq!(batch.forward_end, sixth.len());
        // A second later the bucket is full again (5, not 10): of a batch of 10, 5 pass and the rest waits.
        let ten = texts(CLIENT, 10);
        let (batch, _) = p.feed(CLIENT, &ten, 2 * T + 100 * MS).expect("decoded");
        assert_eq!(
            (batch.forward_end, batch.pos),
            (5 * sixth.len(), 5 * sixth.len())
        );
        assert!(!batch.mid_frame);
        assert_eq!(
            p.tick(CLIENT, 2 * T + 100 * MS),
            Step::Paused {
                until: p.at(2 * T + 200 * MS)
            }
        );
        assert_eq!(p.s.progress().rate_limited, [2, 0]);
        assert_eq!(p.s.progress().messages[0], 11);
    }

    #[test]
    fn a_header_split_across_reads_counts_once() {
        let mut p = Pair::new(limited(messages(10, 2, OnExcess::Pause)));
        let two = texts(CLIENT, 2);
        let (batch, _) = p.feed(CLIENT, &two[..1], T).expect("decoded");
        assert_eq!(batch.pos, 0, "an incomplete header waits");
        let (batch, _) = p.feed(CLIENT, &two, T).expect("decoded");
        assert_eq!(batch.forward_end, two.len(), "both are within the burst");
    }

    #[test]
    fn a_fragmented_message_counts_once_and_is_not_cut() {
        let mut p = Pair::new(limited(messages(10, 1, OnExcess::Pause)));
        let mut bytes_in = frame(CLIENT, false, OpCode::Text, b"a");
        bytes_in.extend(frame(CLIENT, false, OpCode::Continuation, b"b"));
        bytes_in.extend(frame(CLIENT, true, OpCode::Continuation, b"c"));
        let (batch, _) = p.feed(CLIENT, &bytes_in, T).expect("decoded");
        assert_eq!(batch.forward_end, bytes_in.len());
        assert!(matches!(p.tick(CLIENT, T), Step::Read { .. }));
    }

    #[test]
    fn close_mode_sends_1008_to_both_sides() {
        let mut p = Pair::new(limited(messages(10, 5, OnExcess::Close)));
        p.feed(CLIENT, &texts(CLIENT, 5), T).expect("decoded");
        assert_eq!(p.s.poll_transmit(CLIENT), None, "within the burst");
        p.feed(CLIENT, &texts(CLIENT, 1), T).expect("decoded");
        for side in [CLIENT, UPSTREAM] {
            let sent = p.transmit(side, T).expect("a close");
            assert_eq!(sent.close, Some((1008, CloseWhy::RateLimit)));
            assert_eq!(p.s.close_state(side), CloseState::Sent);
        }
        assert_eq!(CloseWhy::RateLimit.text(1008), "rate limit exceeded");
        assert!(
            matches!(p.tick(CLIENT, T), Step::Read { .. }),
            "the answers are read, not paused"
        );
        p.feed_close(CLIENT, 1008, T);
        p.feed_close(UPSTREAM, 1008, T);
        assert_eq!(p.tick(CLIENT, T), Step::Done);
        let out = p.s.outcome();
        assert_eq!(out.gateway_closes, [Some(1008), Some(1008)]);
        assert_eq!(out.rate_limited, [1, 0]);
        assert!(
            out.reason.contains("client exceeded messages_per_second"),
            "{}",
            out.reason
        );
    }

    #[test]
    fn control_frames_count_as_bytes_but_not_as_messages_and_a_close_lifts_the_pause() {
        let mut p = Pair::new(limited(messages(1, 1, OnExcess::Pause)));
        let mut bytes_in = texts(CLIENT, 1);
        for _ in 0..20 {
            bytes_in.extend(frame(CLIENT, true, OpCode::Ping, b"are you there"));
        }
        let (batch, _) = p.feed(CLIENT, &bytes_in, T).expect("decoded");
        assert_eq!(batch.forward_end, bytes_in.len(), "pings are forwarded");
        assert!(
            matches!(p.tick(CLIENT, T), Step::Read { .. }),
            "pings are not messages"
        );

        let mut p = Pair::new(limited(bytes(100, 100)));
        p.feed(CLIENT, &frame(CLIENT, true, OpCode::Binary, &[0; 100]), T);
        assert!(matches!(p.tick(CLIENT, T), Step::Read { .. }));
        let ping = frame(CLIENT, true, OpCode::Ping, &[1; 10]);
        let (batch, _) = p.feed(CLIENT, &ping, T).expect("decoded");
        assert_eq!(batch.forward_end, ping.len());
        assert_eq!(
            p.tick(CLIENT, T),
            Step::Paused {
                until: p.at(T + 100 * MS)
            }
        );
        // The upstream closes: the client's answer must get through, so its pause ends at once.
        p.feed_close(UPSTREAM, 1000, T + 10 * MS);
        assert!(matches!(p.tick(CLIENT, T + 10 * MS), Step::Read { .. }));
    }

    #[test]
    fn directions_are_independent() {
        let mut p = Pair::new(limited(messages(10, 5, OnExcess::Pause)));
        p.feed(UPSTREAM, &texts(UPSTREAM, 1000), T)
            .expect("decoded");
        assert!(
            matches!(p.tick(UPSTREAM, T), Step::Read { .. }),
            "the upstream is not limited"
        );
        assert!(matches!(p.tick(CLIENT, T), Step::Read { .. }));
        p.feed(CLIENT, &texts(CLIENT, 6), T);
        assert!(matches!(p.tick(CLIENT, T), Step::Paused { .. }));
        assert!(
            matches!(p.tick(UPSTREAM, T), Step::Read { .. }),
            "the other way keeps flowing"
        );
        p.feed(UPSTREAM, &texts(UPSTREAM, 1), T).expect("decoded");
    }

    #[test]
    fn a_paused_side_is_neither_pinged_nor_dead_nor_idle() {
        let mut p = Pair::new(limited(bytes(1, 1)));
        // A ping is due at 10 s; before it is written the client sends 101 bytes: paused for 100 s. The ping goes
        // out during the pause, but the pong cannot be read before it ends.
        assert_eq!(p.tick(CLIENT, 10 * T), Step::Due(p.at(10 * T)));
        p.feed(
            CLIENT,
            &frame(CLIENT, true, OpCode::Binary, &[0; 101]),
            11 * T,
        );
        p.transmit(CLIENT, 12 * T).expect("a ping");
        let until = p.at(111 * T);
        assert_eq!(p.tick(CLIENT, 20 * T), Step::Paused { until });
        assert_ne!(
            p.s.close_state(CLIENT),
            CloseState::Gone,
            "not dead: it could not be heard"
        );
        assert_eq!(
            p.tick(CLIENT, 80 * T),
            Step::Paused { until },
            "not idle either"
        );
        assert_eq!(p.s.close_state(UPSTREAM), CloseState::Open);
        // Once the pause is over, the pong gets its full timeout again.
        match p.tick(CLIENT, 111 * T) {
            Step::Read { deadline, .. } => assert_eq!(deadline, p.at(116 * T)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_other_side_keeps_its_keepalive_while_one_is_paused() {
        let mut p = Pair::new(limited(bytes(1, 1)));
        p.feed(CLIENT, &frame(CLIENT, true, OpCode::Binary, &[0; 101]), T);
        assert!(matches!(p.tick(CLIENT, T), Step::Paused { .. }));
        assert_eq!(p.tick(UPSTREAM, 10 * T), Step::Due(p.at(10 * T)));
        assert!(p.transmit(UPSTREAM, 10 * T).and_then(|t| t.ping).is_some());
        assert!(
            matches!(p.tick(UPSTREAM, 10 * T), Step::Read { .. }),
            "acted on, not due again"
        );
        assert_eq!(p.tick(UPSTREAM, 15 * T), Step::Due(p.at(15 * T)));
        assert_eq!(p.s.close_state(UPSTREAM), CloseState::Gone, "no pong: dead");
    }

    #[test]
    fn the_upstream_leg_does_not_time_the_pair_out_while_the_client_is_paused() {
        let mut s = limited(bytes(1, 1));
        s.ping_interval = None;
        let mut p = Pair::new(s);
        p.feed(CLIENT, &frame(CLIENT, true, OpCode::Binary, &[0; 101]), T);
        assert!(matches!(p.tick(CLIENT, T), Step::Paused { .. }));
        assert!(
            matches!(p.tick(UPSTREAM, 70 * T), Step::Read { .. }),
            "idle timeout is 60 s"
        );
        assert_eq!(p.s.close_state(CLIENT), CloseState::Open);
        // After the pause the idle clock starts over.
        assert!(matches!(p.tick(CLIENT, 101 * T), Step::Read { .. }));
        assert!(matches!(p.tick(UPSTREAM, 160 * T), Step::Read { .. }));
        assert_eq!(p.tick(UPSTREAM, 161 * T), Step::Due(p.at(161 * T)));
    }

    #[test]
    fn a_drain_ends_a_pause() {
        let mut p = Pair::new(limited(bytes(1, 1)));
        p.feed(CLIENT, &frame(CLIENT, true, OpCode::Binary, &[0; 101]), T);
        p.s.schedule_drain(p.at(5 * T), 1001);
        assert_eq!(p.tick(CLIENT, 2 * T), Step::Paused { until: p.at(5 * T) });
        assert_eq!(p.tick(CLIENT, 5 * T), Step::Due(p.at(5 * T)));
        assert!(
            matches!(p.tick(CLIENT, 5 * T), Step::Read { .. }),
            "closing: read the answer"
        );
    }

    #[test]
    fn limits_cost_a_pointer_when_off() {
        let p = Pair::new(settings());
        assert!(p.s.limits.is_none());
        assert_eq!(std::mem::size_of::<Option<Box<RateLimits>>>(), 8);
    }
}
