//! A token bucket in integer nanoseconds (GCRA, the "virtual scheduling" form of a token bucket), sans-IO.
//!
//! Owns: the rate arithmetic ([`Rate`]), applied to a bucket kept in one `AtomicU64` ([`Rate::try_take_shared`]),
//! which the per-client table uses across workers. A connection's own message and byte rates are
//! `crate::ws::relay::rate` (single owner, `Instant`s, and a charge that may run into debt: bytes already read cannot
//! be refused).
//! Does not own: clocks. Every call takes `now` in nanoseconds since an epoch the caller picks (one epoch per
//! bucket; [`super::now_nanos`] is the process's).
//!
//! The whole state is one number, the *theoretical arrival time* (TAT): the instant at which the bucket would be
//! full again. Taking `n` tokens moves it `n` intervals later; a take is refused when that would put it more than
//! `burst` intervals ahead of `now`. Integers only: nothing drifts, and the interval is rounded up, so a bucket never
//! grants more than `burst + rate * t` tokens in any window of `t` seconds (a property test checks it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Nanoseconds since the caller's epoch.
pub(crate) type Nanos = u64;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A rate: `per_second` tokens a second on average, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Nanoseconds per token, rounded up.
    interval: u64,
    /// `burst * interval`: how far ahead of `now` the TAT may run.
    tolerance: u64,
}

/// A refused take: the caller may try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryAfter(pub(crate) Duration);

impl RetryAfter {
    /// Whole seconds, rounded up and at least 1: what a `Retry-After` header says.
    pub(crate) fn header_secs(self) -> u64 {
        self.0.as_nanos().div_ceil(u128::from(NANOS_PER_SEC)).max(1) as u64
    }
}

impl Rate {
    /// `per_second` tokens a second, `burst` at once. Both are at least 1 (callers pass `NonZeroU32`s).
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let interval = NANOS_PER_SEC.div_ceil(u64::from(per_second.max(1)));
        Self {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1))),
        }
    }

    /// The TAT after taking `n` tokens at `now` from a bucket at `tat`, or how long until that would be allowed.
    /// `n` larger than the burst is never allowed.
    pub(crate) fn decide(&self, tat: Nanos, now: Nanos, n: u32) -> Result<Nanos, RetryAfter> {
        let next = tat
            .max(now)
            .saturating_add(self.interval.saturating_mul(u64::from(n)));
        let ahead = next - now;
        if ahead <= self.tolerance {
            Ok(next)
        } else {
            Err(RetryAfter(Duration::from_nanos(ahead - self.tolerance)))
        }
    }

    /// Takes one token from a bucket whose TAT lives in `tat` (shared between threads; lock-free).
    pub(crate) fn try_take_shared(&self, tat: &AtomicU64, now: Nanos) -> Result<(), RetryAfter> {
        let mut current = tat.load(Ordering::Relaxed);
        loop {
            let next = self.decide(current, now, 1)?;
            match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A single-owner bucket over [`Rate::decide`]: the model the shared form is checked against.
    struct TokenBucket {
        rate: Rate,
        tat: Nanos,
    }

    impl TokenBucket {
        fn new(rate: Rate) -> Self {
            Self { rate, tat: 0 }
        }

        fn try_take(&mut self, now: Nanos) -> Result<(), RetryAfter> {
            self.try_take_n(now, 1)
        }

        fn try_take_n(&mut self, now: Nanos, n: u32) -> Result<(), RetryAfter> {
            self.tat = self.rate.decide(self.tat, now, n)?;
            Ok(())
        }
    }

    #[test]
    fn a_full_bucket_grants_its_burst_then_one_per_interval() {
        let mut b = TokenBucket::new(Rate::new(10, 3));
        let t0 = 5 * NANOS_PER_SEC;
        for _ in 0..3 {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).unwrap_err();
        assert_eq!(wait.0, Duration::from_millis(100));
        assert_eq!(wait.header_secs(), 1);
        assert!(b.try_take(t0 + 99_999_999).is_err());
        assert!(b.try_take(t0 + 100_000_000).is_ok());
        // Idle for long: full again, not more.
        let later = t0 + 60 * NANOS_PER_SEC;
        for _ in 0..3 {
            assert!(b.try_take(later).is_ok());
        }
        assert!(b.try_take(later).is_err());
    }

    #[test]
    fn retry_after_is_when_a_token_is_back() {
        let mut b = TokenBucket::new(Rate::new(1, 1));
        assert!(b.try_take(1).is_ok());
        let wait = b.try_take(1).unwrap_err();
        assert_eq!(wait.0, Duration::from_secs(1));
        assert!(b.try_take(1 + wait.0.as_nanos() as u64).is_ok());
        assert!(
            b.try_take_n(10 * NANOS_PER_SEC, 2).is_err(),
            "more than the burst"
        );
    }

    #[test]
    fn the_shared_form_agrees_with_the_owned_one() {
        let rate = Rate::new(7, 4);
        let shared = AtomicU64::new(0);
        let mut owned = TokenBucket::new(rate);
        for i in 0..200u64 {
            let now = i * 37_000_000;
            assert_eq!(
                rate.try_take_shared(&shared, now),
                owned.try_take(now),
                "at {now}"
            );
        }
    }

    proptest! {
        /// Over any window the bucket grants at most `burst + rate * t`, and a steady client is never refused
        /// more than needed (every grant the rate allows after a full refill goes through).
        #[test]
        fn never_more_than_burst_plus_rate_times_t(
            per_second in 1u32..2000,
            burst in 1u32..100,
            gaps in proptest::collection::vec(0u64..50_000_000, 1..400),
        ) {
            let rate = Rate::new(per_second, burst);
            let mut b = TokenBucket::new(rate);
            let mut now = NANOS_PER_SEC;
            let mut granted: Vec<u64> = Vec::new();
            for gap in gaps {
                now += gap;
                if b.try_take(now).is_ok() {
                    granted.push(now);
                }
            }
            // Every window [granted[i], granted[j]] holds j - i + 1 grants.
            for i in 0..granted.len() {
                for j in i..granted.len() {
                    let t = (granted[j] - granted[i]) as u128;
                    let allowed = u128::from(burst) * u128::from(NANOS_PER_SEC)
                        + u128::from(per_second) * t;
                    prop_assert!(((j - i + 1) as u128) * u128::from(NANOS_PER_SEC) <= allowed,
                        "{} grants in {t} ns", j - i + 1);
                }
            }
            // A bucket idle for burst intervals is full again.
            let idle = now + u64::from(burst) * rate.interval;
            for _ in 0..burst {
                prop_assert!(b.try_take(idle).is_ok());
            }
        }
    }
}
