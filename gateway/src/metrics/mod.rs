//! Metrics: what each worker counts, and the Prometheus text the admin endpoint serves.
//!
//! Owns: per-worker cells written without shared atomics on the hot path (`cells`), the metric families laid out
//! from the config (`worker`), and the exposition that sums the workers on every scrape (`expose`). Does not own:
//! serving the scrape (`crate::admin`) or the places events happen (each caller counts its own).

pub(crate) mod cells;
pub(crate) mod expose;
pub(crate) mod worker;

use std::sync::{Arc, Mutex};

pub(crate) use worker::WorkerMetrics;

/// Every worker's current cells, for the scrape. Workers set theirs at start and after a reload (the lock is never
/// taken on a hot path).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    workers: Mutex<Vec<Option<Arc<WorkerMetrics>>>>,
}

impl Registry {
    /// Worker `id`'s cells from now on.
    pub(crate) fn set(&self, id: usize, worker: Arc<WorkerMetrics>) {
        let mut w = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() <= id {
            w.resize(id + 1, None);
        }
        w[id] = Some(worker);
    }

    pub(crate) fn workers(&self) -> Vec<Arc<WorkerMetrics>> {
        let w = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        w.iter().flatten().cloned().collect()
    }
}
