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

/// Every worker's cells, for the scrape. Workers register once at start (the lock is never taken on a hot path).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    workers: Mutex<Vec<Arc<WorkerMetrics>>>,
}

impl Registry {
    pub(crate) fn add(&self, worker: Arc<WorkerMetrics>) {
        if let Ok(mut w) = self.workers.lock() {
            w.push(worker);
        }
    }

    pub(crate) fn workers(&self) -> Vec<Arc<WorkerMetrics>> {
        self.workers.lock().map(|w| w.clone()).unwrap_or_default()
    }
}
