//! Per-connection message and byte rates of a relayed pair, sans-IO: token buckets fed counts and `now`.
//!
//! Owns: the token bucket ([`TokenBucket`], integer math, one timestamp of state), one direction's pair of buckets
//! and its action ([`DirectionLimiter`]), and the boxed per-pair state the session holds ([`RateLimits`]; only
//! pairs whose route sets a rate pay for it).
//! Does not own: what a pause or a close means for the relay (`super::session` stops asking for reads, or closes
//! both sides with 1008), nor the timer that ends a pause (`super::io` and the worker's sweeper).
//!
//! Messages are admitted before they are forwarded: the session asks how many may start now
//! ([`DirectionLimiter::message_allowance`]) and stops decoding a batch in front of the first message over it (the
//! rest waits, unforwarded, for the pause to end), so the message rate and burst hold exactly. Bytes are charged
//! *after the fact*: payload streams through as it arrives, so [`TokenBucket::take`] always takes and may leave the
//! bucket in debt, and the sender is paused until the debt is paid. The long-run byte rate is exact; a byte burst can
//! exceed `byte_burst` by at most one read (one pooled buffer).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringway_config::{DirectionLimits, MessageLimits, OnExcess, Rate};

use super::session::SideId;

/// The longest a single take may push the bucket into debt (keeps `Instant` arithmetic far from overflow with
/// absurd settings such as 1 byte per second and a 16 KiB read).
const MAX_DEBT: Duration = Duration::from_secs(24 * 3600);

/// A token bucket of `burst` tokens refilled at `per_second`, in GCRA form: instead of a token count and a refill
/// time it keeps the moment the bucket will be full again (`full_at`), so a take is one addition and one comparison,
/// with no division by elapsed time and no drift. 32 bytes.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: u64,
    /// How far `full_at` may run ahead of now before the bucket is in debt: `burst` tokens' worth of time, in ns.
    burst_ns: u64,
    /// When the bucket is full again; `None`: full (never taken from).
    full_at: Option<Instant>,
}

/// The answer of [`TokenBucket::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Within the rate.
    Ok,
    /// Taken, but the bucket is in debt: the sender should wait this long before sending more.
    Wait(Duration),
}

impl TokenBucket {
    /// A full bucket. `per_second` and `burst` are at least 1 (the config guarantees it; 0 is treated as 1).
    pub(crate) fn new(per_second: u64, burst: u64) -> Self {
        let per_second = per_second.max(1);
        Self {
            per_second,
            burst_ns: nanos_for(burst.max(1), per_second),
            full_at: None,
        }
    }

    /// Takes `n` tokens at `now`, even if that leaves the bucket in debt.
    pub(crate) fn take(&mut self, n: u64, now: Instant) -> Take {
        let start = self.full_at.map_or(now, |t| t.max(now));
        let cost = Duration::from_nanos(nanos_for(n, self.per_second)).min(MAX_DEBT);
        let full_at = start + cost;
        self.full_at = Some(full_at);
        let ahead = full_at.saturating_duration_since(now);
        let burst = Duration::from_nanos(self.burst_ns);
        if ahead <= burst {
            Take::Ok
        } else {
            Take::Wait(ahead - burst)
        }
    }

    /// When `n` tokens are available (0: when the bucket is out of debt), if they are not at `now`.
    pub(crate) fn ready_at(&self, n: u64, now: Instant) -> Option<Instant> {
        let cost = Duration::from_nanos(nanos_for(n, self.per_second)).min(MAX_DEBT);
        let ready = (self.full_at? + cost).checked_sub(Duration::from_nanos(self.burst_ns))?;
        (ready > now).then_some(ready)
    }

    /// How many tokens can be taken at `now` without debt.
    pub(crate) fn available(&self, now: Instant) -> u64 {
        let ahead = self
            .full_at
            .map_or(0, |t| t.saturating_duration_since(now).as_nanos());
        let room = u128::from(self.burst_ns).saturating_sub(ahead);
        u64::try_from(room * u128::from(self.per_second) / 1_000_000_000).unwrap_or(u64::MAX)
    }
}

/// Nanoseconds `n` tokens take to refill at `per_second` (rounded up: the bucket never admits more than its rate).
fn nanos_for(n: u64, per_second: u64) -> u64 {
    let ns = (u128::from(n) * 1_000_000_000).div_ceil(u128::from(per_second));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// The limits of one direction of a pair (what one side sends).
#[derive(Debug, Clone)]
pub(crate) struct DirectionLimiter {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    /// `on_excess: close`.
    pub(crate) close: bool,
    /// Reads from this side are paused until both buckets are out of debt.
    pub(crate) paused: bool,
    /// How often this side went over its rate.
    pub(crate) excesses: u32,
}

/// Which limit a side went over, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Messages,
    Bytes,
}

impl Exceeded {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Exceeded::Messages => "messages_per_second",
            Exceeded::Bytes => "bytes_per_second",
        }
    }
}

impl DirectionLimiter {
    fn new(limits: &DirectionLimits) -> Option<Self> {
        let bucket = |r: Option<Rate>| r.map(|r| TokenBucket::new(r.per_second, r.burst));
        limits.any().then(|| Self {
            messages: bucket(limits.messages),
            bytes: bucket(limits.bytes),
            close: limits.on_excess == OnExcess::Close,
            paused: false,
            excesses: 0,
        })
    }

    /// How many data messages may start at `now` (`u64::MAX`: no message rate).
    #[inline]
    pub(crate) fn message_allowance(&self, now: Instant) -> u64 {
        self.messages
            .as_ref()
            .map_or(u64::MAX, |b| b.available(now))
    }

    /// Charges a batch of `messages` data messages started (at most the allowance) and `bytes` payload bytes;
    /// whether the bytes went over their rate.
    #[inline]
    pub(crate) fn charge(&mut self, messages: u64, bytes: u64, now: Instant) -> bool {
        if messages > 0
            && let Some(b) = &mut self.messages
        {
            b.take(messages, now);
        }
        bytes > 0
            && self
                .bytes
                .as_mut()
                .is_some_and(|b| b.take(bytes, now) != Take::Ok)
    }

    /// When this side may be read again (one more message may start and the bytes are out of debt), if not at
    /// `now`.
    pub(crate) fn resume_at(&self, now: Instant) -> Option<Instant> {
        let m = self.messages.as_ref().and_then(|b| b.ready_at(1, now));
        let b = self.bytes.as_ref().and_then(|b| b.ready_at(0, now));
        m.max(b)
    }
}

/// The rate limits of one relayed pair (the session holds them boxed, and only when its route sets a rate).
#[derive(Debug, Clone)]
pub(crate) struct RateLimits {
    /// The client's address, for the log lines.
    pub(crate) peer: SocketAddr,
    /// Indexed by the sending side: client→upstream, upstream→client.
    sides: [Option<DirectionLimiter>; 2],
}

impl RateLimits {
    /// The live limits for a pair with `limits`, or `None` if they set no rate.
    pub(crate) fn new(limits: &MessageLimits, peer: SocketAddr) -> Option<Box<Self>> {
        limits.any().then(|| {
            Box::new(Self {
                peer,
                sides: [
                    DirectionLimiter::new(&limits.from_client),
                    DirectionLimiter::new(&limits.from_upstream),
                ],
            })
        })
    }

    /// The limiter of what `src` sends, if that direction has one.
    #[inline]
    pub(crate) fn side_mut(&mut self, src: SideId) -> Option<&mut DirectionLimiter> {
        self.sides[usize::from(src == SideId::Upstream)].as_mut()
    }

    pub(crate) fn side(&self, src: SideId) -> Option<&DirectionLimiter> {
        self.sides[usize::from(src == SideId::Upstream)].as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_bucket_passes_its_burst_and_then_charges_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5);
        for _ in 0..5 {
            assert_eq!(b.take(1, t0), Take::Ok);
        }
        assert_eq!(b.take(1, t0), Take::Wait(100 * MS), "one token's worth");
        assert_eq!(b.ready_at(0, t0), Some(t0 + 100 * MS));
        assert_eq!(b.ready_at(0, t0 + 100 * MS), None);
        assert_eq!(b.ready_at(1, t0 + 100 * MS), Some(t0 + 200 * MS));
        assert_eq!(b.available(t0 + 200 * MS), 1);
        assert_eq!(
            b.available(t0 + 10 * 1000 * MS),
            5,
            "never more than the burst"
        );
        // Refilled at 10 per second: one more at 100 ms is within the rate again, two are not.
        assert_eq!(b.take(1, t0 + 200 * MS), Take::Ok);
        assert_eq!(b.take(1, t0 + 200 * MS), Take::Wait(100 * MS));
    }

    #[test]
    fn a_batch_larger_than_the_burst_is_taken_as_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100);
        assert_eq!(b.take(600, t0), Take::Wait(500 * MS));
        // After a quiet spell the bucket is full again, never fuller.
        assert_eq!(b.take(100, t0 + 10 * 1000 * MS), Take::Ok);
        assert_eq!(b.take(1, t0 + 10 * 1000 * MS), Take::Wait(MS));
    }

    #[test]
    fn the_long_run_rate_is_exact_with_rates_that_do_not_divide_a_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 1);
        let mut now = t0;
        for _ in 0..300 {
            if let Take::Wait(w) = b.take(1, now) {
                now += w;
            }
        }
        let took = now - t0;
        assert!(
            took >= Duration::from_millis(99_600) && took <= Duration::from_millis(100_000),
            "{took:?}"
        );
    }

    #[test]
    fn absurd_settings_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, u64::MAX);
        assert_eq!(b.take(u64::MAX, t0), Take::Ok);
        let mut b = TokenBucket::new(1, 1);
        assert_eq!(
            b.take(u64::MAX, t0),
            Take::Wait(MAX_DEBT - Duration::from_secs(1))
        );
    }

    #[test]
    fn state_stays_small() {
        assert_eq!(std::mem::size_of::<TokenBucket>(), 32);
        assert!(std::mem::size_of::<Option<Box<RateLimits>>>() <= 8);
        // Allocated only for pairs whose route sets a rate.
        assert!(std::mem::size_of::<RateLimits>() <= 176);
    }
}
