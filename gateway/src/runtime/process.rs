//! What the whole process shares across threads: readiness, the drain flag, the config generation, and every
//! worker's metric cells. Written rarely (start, signals, reloads), read by the admin endpoint and, once per control
//! tick, by each worker; never touched per connection or per message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ringway_config::Config;

use crate::metrics::Registry;
use crate::tls::connect::UpstreamTlsSetup;

/// A listener a reload added, bound on the main thread for one worker.
pub(crate) struct NewListener {
    pub(crate) listener: ringway_config::Listener,
    pub(crate) socket: std::net::TcpListener,
    pub(crate) tls: Option<crate::tls::listener::WorkerTls>,
}

impl std::fmt::Debug for NewListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewListener")
            .field("listener", &self.listener.name)
            .field("bind", &self.listener.bind)
            .finish()
    }
}

/// A loaded route file with what was read for it on the main thread (upstream CA bundles).
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) config: Arc<Config>,
    /// Per upstream (indexed like `config.upstreams`): its TLS setup, `None` for a plain pool.
    pub(crate) upstream_tls: Vec<Option<UpstreamTlsSetup>>,
    /// Active health of every pool's servers (shared by all workers; written by the checking worker).
    pub(crate) health: Arc<crate::upstream::health::HealthBoard>,
    /// Per-client table and per-server connection counters (shared by all workers, carried over by reloads).
    pub(crate) limits: Arc<crate::limits::SharedLimits>,
}

#[derive(Debug)]
pub(crate) struct ProcessState {
    pub(crate) metrics: Registry,
    /// The config new connections get; workers pick it up when `config_generation` moves.
    loaded: Mutex<Arc<Loaded>>,
    /// Per worker: listeners a reload added, waiting for the worker to start accepting on them.
    new_listeners: Mutex<Vec<Vec<NewListener>>>,
    ready: AtomicBool,
    draining: AtomicBool,
    config_generation: AtomicU64,
    last_reload_ok: AtomicBool,
}

impl ProcessState {
    pub(crate) fn new(loaded: Loaded) -> Self {
        Self {
            metrics: Registry::default(),
            loaded: Mutex::new(Arc::new(loaded)),
            new_listeners: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            config_generation: AtomicU64::new(1),
            last_reload_ok: AtomicBool::new(true),
        }
    }
}

impl ProcessState {
    /// The config new connections get.
    pub(crate) fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Publishes a new config for new connections (the workers swap it in on their next control tick).
    pub(crate) fn publish(&self, loaded: Loaded) {
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(loaded);
        // Under the lock, so `publish_if_current` sees the generation and the config change together.
        self.config_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Publishes `loaded` only if no other config was published since generation `expected` (the resolver thread
    /// must not undo a reload that landed while it looked names up).
    pub(crate) fn publish_if_current(&self, expected: u64, loaded: Loaded) -> bool {
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if self.config_generation.load(Ordering::Acquire) != expected {
            return false;
        }
        *slot = Arc::new(loaded);
        self.config_generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Hands listeners a reload bound to the workers (`per_worker[i]` for worker `i`); call before publishing.
    pub(crate) fn add_listeners(&self, per_worker: Vec<Vec<NewListener>>) {
        let mut pending = self.new_listeners.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() < per_worker.len() {
            pending.resize_with(per_worker.len(), Vec::new);
        }
        for (slot, new) in pending.iter_mut().zip(per_worker) {
            slot.extend(new);
        }
    }

    /// The listeners waiting for worker `id`.
    pub(crate) fn take_listeners(&self, id: usize) -> Vec<NewListener> {
        let mut pending = self.new_listeners.lock().unwrap_or_else(|p| p.into_inner());
        pending.get_mut(id).map(std::mem::take).unwrap_or_default()
    }

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

    /// A reload finished: `ok`, or not (what failed kept its running state).
    pub(crate) fn reloaded(&self, ok: bool) {
        self.last_reload_ok.store(ok, Ordering::Release);
    }

    pub(crate) fn config_generation(&self) -> u64 {
        self.config_generation.load(Ordering::Acquire)
    }

    pub(crate) fn last_reload_ok(&self) -> bool {
        self.last_reload_ok.load(Ordering::Acquire)
    }
}
