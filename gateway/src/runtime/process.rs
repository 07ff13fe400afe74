//! What the whole process shares across threads: readiness, the drain flag, the config generation, and every
//! worker's metric cells. Written rarely (start, signals, reloads), read by the admin endpoint and, once per control
//! tick, by each worker; never touched per connection or per message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::metrics::Registry;

#[derive(Debug)]
pub(crate) struct ProcessState {
    pub(crate) metrics: Registry,
    ready: AtomicBool,
    draining: AtomicBool,
    config_generation: AtomicU64,
    last_reload_ok: AtomicBool,
}

impl Default for ProcessState {
    fn default() -> Self {
        Self {
            metrics: Registry::default(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            config_generation: AtomicU64::new(1),
            last_reload_ok: AtomicBool::new(true),
        }
    }
}

impl ProcessState {
    /// Every listener is bound and the workers run.
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining()
    }

    /// Starts the drain; `false` if it had started already.
    pub(crate) fn start_drain(&self) -> bool {
        !self.draining.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// A reload finished: `ok` or not (the running config stays then).
    pub(crate) fn reloaded(&self, ok: bool) {
        if ok {
            self.config_generation.fetch_add(1, Ordering::AcqRel);
        }
        self.last_reload_ok.store(ok, Ordering::Release);
    }

    pub(crate) fn config_generation(&self) -> u64 {
        self.config_generation.load(Ordering::Acquire)
    }

    pub(crate) fn last_reload_ok(&self) -> bool {
        self.last_reload_ok.load(Ordering::Acquire)
    }
}
