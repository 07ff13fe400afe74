//! The value cells metrics are made of: counters, gauges and fixed-bucket histograms that one worker writes and the
//! admin thread reads.
//!
//! Owns: the single-writer discipline. Each cell is written only by the worker that owns it, with a relaxed load
//! and a relaxed store (two plain `mov`s on x86-64 and aarch64: no lock prefix, no read-modify-write, no cache line
//! shared between workers), and read by the scrape with relaxed loads. A scrape may see one cell a moment older
//! than another; Prometheus counters tolerate that. Does not own: names, labels or the text format (`super::expose`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A monotonic count.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this (see the module docs).
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down (open connections), or is set (health).
#[derive(Debug, Default)]
pub(crate) struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `n` (may be negative). Only the owning worker may call this.
    #[inline]
    pub(crate) fn add(&self, n: i64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub(crate) fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    pub(crate) fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds (seconds) for latencies: handshakes, connects, HTTP exchanges.
pub(crate) const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds (seconds) for how long a WebSocket lived.
pub(crate) const DURATION_BOUNDS: &[f64] = &[
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    24.0 * 3600.0,
];

/// A histogram with fixed upper bounds; the last bucket is `+Inf`.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[Counter]>,
    sum_micros: Counter,
}

impl Histogram {
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum_micros: Counter::default(),
        }
    }

    /// Counts one observation. Only the owning worker may call this.
    #[inline]
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < secs);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.inc();
        }
        self.sum_micros
            .add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub(crate) fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Per-bucket counts (not cumulative), `+Inf` last.
    pub(crate) fn counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().map(Counter::get)
    }

    pub(crate) fn sum_micros(&self) -> u64 {
        self.sum_micros.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(10)); // on the bound: `le` is inclusive
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(3));
        assert_eq!(h.counts().collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(h.sum_micros(), 3_060_000);
    }

    #[test]
    fn counters_and_gauges_add() {
        let c = Counter::default();
        c.add(2);
        c.inc();
        assert_eq!(c.get(), 3);
        let g = Gauge::default();
        g.add(5);
        g.add(-2);
        assert_eq!(g.get(), 3);
        g.set(1);
        assert_eq!(g.get(), 1);
    }
}
