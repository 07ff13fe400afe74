//! The drain schedule: when each WebSocket of a stopping gateway is sent its Close.
//!
//! Owns: spreading the closes over `drain.period` so the clients do not all reconnect at once (each connection's
//! moment is drawn uniformly from the period, from a per-connection seed), and the code they are sent. Sans-IO:
//! the worker feeds it the start time; relays ask it for their moment. Does not own: signals (`crate::server`),
//! sending the Close (the relay's session), or exiting.

use std::time::{Duration, Instant};

/// A drain under way on one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DrainPlan {
    pub(crate) start: Instant,
    pub(crate) period: Duration,
    /// Sent to both legs: 1001 Going Away or 1012 Service Restart.
    pub(crate) close_code: u16,
}

impl DrainPlan {
    /// The moment the connection with `seed` is closed: uniform over `[start, start + period)`.
    pub(crate) fn close_at(&self, seed: u64) -> Instant {
        // splitmix64: neighbouring seeds (addresses, counters) land far apart.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let fraction = (z >> 11) as f64 / (1u64 << 53) as f64;
        self.start + self.period.mul_f64(fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_spread_over_the_whole_period_and_stay_inside_it() {
        let start = Instant::now();
        let plan = DrainPlan {
            start,
            period: Duration::from_secs(30),
            close_code: 1001,
        };
        let mut per_tenth = [0usize; 10];
        for seed in 0..10_000u64 {
            let at = plan.close_at(seed);
            assert!(at >= start && at < start + plan.period);
            let tenth = ((at - start).as_secs_f64() / 3.0) as usize;
            per_tenth[tenth.min(9)] += 1;
        }
        // Uniform: each tenth of the period gets about a tenth of the connections (no storm at the start).
        for n in per_tenth {
            assert!((800..1200).contains(&n), "{per_tenth:?}");
        }
    }

    #[test]
    fn a_zero_period_closes_everything_at_once() {
        let start = Instant::now();
        let plan = DrainPlan {
            start,
            period: Duration::ZERO,
            close_code: 1012,
        };
        assert_eq!(plan.close_at(42), start);
    }
}
