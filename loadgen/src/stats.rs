//! Measurement state: the run's clock, per-thread counters and latency histograms, their periodic
//! publication to the main thread (for the live progress line) and the merged [`Summary`].
//!
//! Hot-path recording touches only thread-local cells; a ticker task on each worker thread
//! publishes into that thread's slot of [`Shared`] a few times per second.

use std::cell::{Cell, RefCell};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, from 1 ns to one hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds that satisfy every constructor precondition (low >= 1, high >= 2 * low,
    // sigfig <= 5), so creation cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("constant histogram bounds are valid")
}

/// The run's monotonic clock: nanoseconds since the run's epoch (the same on every thread).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The monoio instant of `ns` since the epoch (for timers).
    pub fn instant(&self, ns: u64) -> monoio::time::Instant {
        monoio::time::Instant::from_std(self.epoch + Duration::from_nanos(ns))
    }
}

/// Event counters of one thread (or, summed, of the run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Verified echoes received inside the measurement window.
    pub messages: u64,
    /// Payload bytes of those echoes.
    pub bytes: u64,
    /// I/O errors, protocol errors from the server, lost (never answered) messages.
    pub errors: u64,
    /// Echoes that differ from what was sent (bytes, length, order, opcode).
    pub mismatches: u64,
    /// Connections the server closed (Close frame or EOF) before the client was done.
    pub unexpected_closes: u64,
    /// TCP connects, TLS handshakes or upgrades that failed.
    pub connect_failures: u64,
    /// Messages sent but never answered before the drain deadline (also counted in `errors`).
    pub lost: u64,
    /// The unexpected closes by code: index `c - 1000` for 1000..=1015 (1005: a Close without a code, 1006: the
    /// connection ended without a Close), the last slot for any other code.
    pub close_codes: [u64; 17],
}

impl Counters {
    /// Counts an unexpected close with `code`.
    pub fn unexpected_close(&mut self, code: u16) {
        self.unexpected_closes += 1;
        let slot = match code {
            1000..=1015 => usize::from(code - 1000),
            _ => 16,
        };
        self.close_codes[slot] += 1;
    }

    /// `1001 x 3, 1006 x 1` for the codes seen (`other` for codes outside 1000..=1015).
    pub fn close_codes_text(&self) -> String {
        self.close_code_counts()
            .map(|(code, n)| format!("{code} x {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(code, count)` for every code seen, `other` last.
    pub fn close_code_counts(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.close_codes
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| {
                let code = if i < 16 {
                    (1000 + i).to_string()
                } else {
                    "other".to_owned()
                };
                (code, *n)
            })
    }
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Self) {
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.mismatches += o.mismatches;
        self.unexpected_closes += o.unexpected_closes;
        self.connect_failures += o.connect_failures;
        self.lost += o.lost;
        for (mine, theirs) in self.close_codes.iter_mut().zip(o.close_codes) {
            *mine += theirs;
        }
    }
}

/// Thread-local measurement state, shared by the connection tasks of one worker thread.
#[derive(Debug)]
pub struct Local {
    /// Latencies recorded since the last publication.
    pub hist: RefCell<Histogram<u64>>,
    /// Service times (from the actual send) recorded since the last publication; open loop only (in closed loop a
    /// message is written when it is due, so its service time is its latency).
    pub service: RefCell<Histogram<u64>>,
    /// Cumulative counters.
    pub counters: Cell<Counters>,
    /// Connections currently upgraded and open.
    pub up: Cell<u64>,
    /// Connections that were still up when their sending (or holding) ended.
    pub up_at_end: Cell<u64>,
    /// Connections upgraded so far, and when the last upgrade completed (ns since epoch).
    pub upgrades: Cell<(u64, u64)>,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            hist: RefCell::new(new_histogram()),
            service: RefCell::new(new_histogram()),
            counters: Cell::default(),
            up: Cell::new(0),
            up_at_end: Cell::new(0),
            upgrades: Cell::new((0, 0)),
        }
    }
}

impl Local {
    /// Applies `f` to the counters.
    #[inline]
    pub fn count(&self, f: impl FnOnce(&mut Counters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// Records one verified echo of `bytes` payload bytes: `latency_ns` from its intended send time and, in open
    /// loop, `service_ns` from when it was actually written.
    #[inline]
    pub fn record(&self, latency_ns: u64, service_ns: Option<u64>, bytes: usize) {
        self.hist.borrow_mut().saturating_record(latency_ns.max(1));
        if let Some(service_ns) = service_ns {
            self.service
                .borrow_mut()
                .saturating_record(service_ns.max(1));
        }
        self.count(|c| {
            c.messages += 1;
            c.bytes += bytes as u64;
        });
    }
}

/// What one worker thread has published so far.
#[derive(Debug)]
pub struct Published {
    /// All latencies recorded by the thread so far.
    pub hist: Histogram<u64>,
    /// All service times recorded by the thread so far.
    pub service: Histogram<u64>,
    /// Cumulative counters.
    pub counters: Counters,
    /// Connections up at the last publication.
    pub up: u64,
    /// Connections that were still up when their sending (or holding) ended.
    pub up_at_end: u64,
    /// Upgrades completed and when the last one did (ns since epoch).
    pub upgrades: (u64, u64),
    /// The thread has finished.
    pub done: bool,
    /// When the thread's last connection finished (ns since epoch).
    pub finished_ns: u64,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            hist: new_histogram(),
            service: new_histogram(),
            counters: Counters::default(),
            up: 0,
            up_at_end: 0,
            upgrades: (0, 0),
            done: false,
            finished_ns: 0,
        }
    }
}

/// One [`Published`] slot per worker thread, and the first error seen (for the report).
#[derive(Debug)]
pub struct Shared {
    /// Per-thread slots.
    pub threads: Vec<Mutex<Published>>,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    /// Slots for `n` threads.
    pub fn new(n: usize) -> Self {
        Self {
            threads: (0..n).map(|_| Mutex::new(Published::default())).collect(),
            first_error: Mutex::new(None),
        }
    }

    /// Remembers `what` if it is the first error of the run (errors are counted elsewhere; this
    /// only keeps one description so the report can say what went wrong).
    pub fn note_error(&self, what: impl FnOnce() -> String) {
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(what());
        }
    }

    /// The first error noted, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|f| f.clone())
    }

    /// Moves thread-local state into slot `idx`.
    pub fn publish(&self, idx: usize, local: &Local) {
        let Some(slot) = self.threads.get(idx) else {
            return;
        };
        let mut p = match slot.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut h = local.hist.borrow_mut();
        // Same bounds on both sides: adding cannot fail.
        let _ = p.hist.add(&*h);
        h.reset();
        let mut h = local.service.borrow_mut();
        let _ = p.service.add(&*h);
        h.reset();
        p.counters = local.counters.get();
        p.up = local.up.get();
        p.up_at_end = local.up_at_end.get();
        p.upgrades = local.upgrades.get();
    }

    /// Sums every slot: histogram, counters, connections up, and whether all threads are done.
    pub fn merge(&self) -> Merged {
        let mut hist = new_histogram();
        let mut service = new_histogram();
        let mut counters = Counters::default();
        let (mut up, mut up_at_end, mut done) = (0, 0, true);
        let mut upgrades = (0, 0);
        for slot in &self.threads {
            let p = match slot.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            let _ = hist.add(&p.hist);
            let _ = service.add(&p.service);
            counters += p.counters;
            up += p.up;
            up_at_end += p.up_at_end;
            upgrades = (upgrades.0 + p.upgrades.0, upgrades.1.max(p.upgrades.1));
            done &= p.done;
        }
        Merged {
            hist,
            service,
            counters,
            up,
            up_at_end,
            upgrades,
            done,
        }
    }

    /// Marks thread `idx` finished at `finished_ns`.
    pub fn finish(&self, idx: usize, finished_ns: u64) {
        if let Some(slot) = self.threads.get(idx) {
            let mut p = match slot.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            p.done = true;
            p.finished_ns = finished_ns;
        }
    }

    /// The latest thread finish time (ns since epoch).
    pub fn finished_ns(&self) -> u64 {
        self.threads
            .iter()
            .map(|slot| match slot.lock() {
                Ok(p) => p.finished_ns,
                Err(poisoned) => poisoned.into_inner().finished_ns,
            })
            .max()
            .unwrap_or(0)
    }
}

/// All threads' publications summed.
#[derive(Debug)]
pub struct Merged {
    /// Latencies (ns).
    pub hist: Histogram<u64>,
    /// Service times (ns).
    pub service: Histogram<u64>,
    /// Counters.
    pub counters: Counters,
    /// Connections up now.
    pub up: u64,
    /// Connections up when their sending or holding ended.
    pub up_at_end: u64,
    /// Upgrades completed and when the last one did (ns since epoch).
    pub upgrades: (u64, u64),
    /// Every thread has finished.
    pub done: bool,
}

/// The value at `q` (0..=1) of a histogram of nanoseconds, in microseconds; 0 without samples.
fn quantile_us_of(hist: &Histogram<u64>, q: f64) -> f64 {
    if hist.is_empty() {
        return 0.0;
    }
    hist.value_at_quantile(q) as f64 / 1000.0
}

/// The merged result of a run.
#[derive(Debug)]
pub struct Summary {
    /// Connections requested.
    pub conns: usize,
    /// Length of the measurement window in seconds.
    pub duration_s: f64,
    /// Latency histogram (ns), from each message's intended send time.
    pub hist: Histogram<u64>,
    /// Service-time histogram (ns), from when each message was actually written: without the sender's own
    /// lateness (timer slack, a busy load generator), so it resolves what the target adds more finely. Empty in
    /// closed loop, where service times are the latencies.
    pub service: Histogram<u64>,
    /// Counters.
    pub counters: Counters,
    /// Connections up at the end of the window.
    pub connected: u64,
    /// Description of the first error, if any.
    pub first_error: Option<String>,
    /// CPU seconds the load generator itself used during the run (all threads).
    pub client_cpu_s: f64,
    /// Upgrades completed.
    pub upgrades: u64,
    /// Seconds from the start until the last upgrade completed.
    pub connect_time_s: f64,
}

impl Summary {
    /// Messages per second over the window.
    pub fn msgs_per_sec(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.counters.messages as f64 / self.duration_s
        } else {
            0.0
        }
    }

    /// Echoed payload bytes per second over the window.
    pub fn bytes_per_sec(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.counters.bytes as f64 / self.duration_s
        } else {
            0.0
        }
    }

    /// Latency at `q` (0..=1) in microseconds; 0 without samples.
    pub fn quantile_us(&self, q: f64) -> f64 {
        quantile_us_of(&self.hist, q)
    }

    /// Service time at `q` (0..=1) in microseconds; the latency in closed loop; 0 without samples.
    pub fn service_quantile_us(&self, q: f64) -> f64 {
        if self.service.is_empty() {
            self.quantile_us(q)
        } else {
            quantile_us_of(&self.service, q)
        }
    }

    /// Largest latency in microseconds.
    pub fn max_us(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.max() as f64 / 1000.0
        }
    }

    /// Upgrades per second while connecting (start to last upgrade).
    pub fn upgrades_per_sec(&self) -> f64 {
        if self.connect_time_s > 0.0 {
            self.upgrades as f64 / self.connect_time_s
        } else {
            0.0
        }
    }

    /// Whether the run counted no error of any kind.
    pub fn is_clean(&self) -> bool {
        let c = &self.counters;
        c.errors == 0 && c.mismatches == 0 && c.unexpected_closes == 0 && c.connect_failures == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_loop_service_times_are_the_latencies() {
        let local = Local::default();
        local.record(3_000, None, 64);
        assert!(local.service.borrow().is_empty(), "nothing recorded twice");
        let counters = local.counters.get();
        let s = Summary {
            conns: 1,
            duration_s: 1.0,
            hist: local.hist.into_inner(),
            service: local.service.into_inner(),
            counters,
            connected: 1,
            first_error: None,
            client_cpu_s: 0.0,
            upgrades: 1,
            connect_time_s: 0.0,
        };
        assert!((s.service_quantile_us(0.5) - 3.0).abs() < 0.01);
        assert_eq!(s.service_quantile_us(0.99), s.quantile_us(0.99));
    }

    #[test]
    fn publish_and_merge_sum_threads() {
        let shared = Shared::new(2);
        for idx in 0..2 {
            let local = Local::default();
            local.record(1_000 * (idx as u64 + 1), Some(1_000 * (idx as u64 + 1)), 64);
            local.record(5_000, Some(2_000), 64);
            local.count(|c| c.errors += 1);
            local.up.set(3);
            local.up_at_end.set(3);
            shared.publish(idx, &local);
            assert!(
                local.hist.borrow().is_empty(),
                "publish moves the histogram"
            );
        }
        let m = shared.merge();
        assert_eq!(m.hist.len(), 4);
        assert_eq!(m.service.len(), 4);
        assert!(
            m.service.max() < 2_100 && m.hist.max() >= 4_990,
            "service times are kept apart from latencies"
        );
        assert_eq!(m.counters.messages, 4);
        assert_eq!(m.counters.bytes, 256);
        assert_eq!(m.counters.errors, 2);
        assert_eq!((m.up, m.up_at_end, m.done), (6, 6, false));
        shared.finish(0, 10);
        shared.finish(1, 20);
        assert!(shared.merge().done);
        assert_eq!(shared.finished_ns(), 20);
        let s = Summary {
            conns: 2,
            duration_s: 2.0,
            hist: m.hist,
            service: m.service,
            counters: m.counters,
            connected: m.up_at_end,
            first_error: None,
            client_cpu_s: 0.5,
            upgrades: 2,
            connect_time_s: 0.5,
        };
        assert_eq!(s.upgrades_per_sec(), 4.0);
        assert_eq!(s.msgs_per_sec(), 2.0);
        assert!(!s.is_clean());
        assert!((s.max_us() - 5.0).abs() < 0.01);
    }
}
