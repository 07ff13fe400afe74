//! Per-worker state: everything a worker thread owns and shares between its connections (never across threads).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use ringway_config::Config;

use crate::auth::AuthPolicy;
use crate::limits::SharedLimits;
use crate::limits::clients::ClientSlot;
use crate::metrics::WorkerMetrics;
use crate::runtime::buffer_pool::BufferPool;
use crate::runtime::process::Loaded;
use crate::runtime::sweeper::Sweeper;
use crate::tls::connect::TlsConnector;
use crate::tls::listener::WorkerTls;
use crate::upstream::health::HealthBoard;
use crate::upstream::{Balancer, UpstreamPool};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

/// Size of one pooled I/O buffer: a 16 KiB message plus its frame header fits one read.
pub(crate) const IO_BUFFER_SIZE: usize = 32 * 1024;

/// The state one worker thread owns.
pub(crate) struct WorkerCtx {
    pub(crate) id: usize,
    pub(crate) config: Arc<Config>,
    /// One balancer per upstream, indexed like `config.upstreams`.
    pub(crate) balancers: Vec<Rc<Balancer>>,
    /// Idle keep-alive connections to upstreams for plain HTTP requests.
    pub(crate) http_pool: UpstreamPool,
    pub(crate) buffers: Rc<BufferPool>,
    /// Per listener (indexed like `config.listeners`): its TLS setup, `None` for a plain listener. Listeners do
    /// not change on reload, so every generation shares these.
    pub(crate) tls: Rc<Vec<Option<Rc<WorkerTls>>>>,
    /// Per upstream (indexed like `config.upstreams`): the TLS client, `None` for a plain pool.
    pub(crate) upstream_tls: Vec<Option<TlsConnector>>,
    /// The coarse timer of this worker's relays.
    pub(crate) sweeper: Rc<Sweeper>,
    /// Open client connections on this worker (all config generations together).
    pub(crate) connections: Rc<Cell<usize>>,
    /// Worker threads in the process (for this worker's share of limits).
    workers: usize,
    /// This worker's share of `limits.max_connections`.
    pub(crate) max_connections: usize,
    /// What this worker counts (read by the admin endpoint's scrape).
    pub(crate) metrics: Arc<WorkerMetrics>,
    /// Active health of the pools' servers (all workers share it).
    pub(crate) health: Arc<HealthBoard>,
    /// Per route (indexed like `config.routes`): its JWT policy, `None` for a route without `auth:`. The keys
    /// were read when the config loaded; this is built per config generation.
    pub(crate) auth: Vec<Option<AuthPolicy>>,
    /// The per-client table and per-server counters (all workers share them).
    pub(crate) limits: Arc<SharedLimits>,
}

impl WorkerCtx {
    /// Builds the state for worker `id` of `workers`.
    pub(crate) fn new(
        id: usize,
        workers: usize,
        config: Arc<Config>,
        tls: Vec<Option<WorkerTls>>,
        upstream_tls: Vec<Option<(Arc<ClientConfig>, Option<ServerName<'static>>)>>,
        health: Arc<HealthBoard>,
        limits: Arc<SharedLimits>,
    ) -> Self {
        let buffers = Rc::new(BufferPool::new(IO_BUFFER_SIZE, 64));
        let upstream_tls = upstream_tls
            .into_iter()
            .map(|c| c.map(|(config, name)| TlsConnector::new(config, name, buffers.clone())))
            .collect();
        let metrics = Arc::new(WorkerMetrics::new(&config));
        let balancers = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                Rc::new(
                    Balancer::new(u)
                        .with_metrics(metrics.clone(), i)
                        .with_health(health.clone(), i)
                        .with_counts(limits.servers.pool(i)),
                )
            })
            .collect();
        Self {
            health,
            limits,
            id,
            balancers,
            http_pool: UpstreamPool::new(),
            buffers,
            tls: Rc::new(tls.into_iter().map(|t| t.map(Rc::new)).collect()),
            upstream_tls,
            sweeper: Sweeper::new(),
            connections: Rc::new(Cell::new(0)),
            max_connections: share(&config, workers),
            workers,
            metrics,
            auth: auth_policies(&config),
            config,
        }
    }
}

impl WorkerCtx {
    /// The state for connections accepted after a reload to `config`: new routes, pools and TLS clients; the same
    /// buffers, timer, listener TLS and connection count; the health of servers the new pools keep, and the metric
    /// cells of routes and pools whose labels did not change. Connections that started before keep the old state.
    pub(crate) fn next(
        &self,
        loaded: &Loaded,
        mut added: Vec<(ringway_config::Listener, Option<WorkerTls>)>,
    ) -> Result<WorkerCtx, String> {
        let config = loaded.config.clone();
        // Listeners the reload kept keep their TLS state (session cache); added ones bring theirs.
        let tls = config
            .listeners
            .iter()
            .map(|l| {
                if let Some(i) = self.config.listeners.iter().position(|old| old == l) {
                    return self.tls.get(i).cloned().flatten();
                }
                added
                    .iter()
                    .position(|(new, _)| new == l)
                    .and_then(|i| added.swap_remove(i).1)
                    .map(Rc::new)
            })
            .collect();
        let metrics = Arc::new(self.metrics.next(&config));
        let mut upstream_tls = Vec::with_capacity(config.upstreams.len());
        for setup in &loaded.upstream_tls {
            upstream_tls.push(match setup {
                None => None,
                Some(s) => Some(TlsConnector::new(
                    s.client_config().map_err(|e| e.to_string())?,
                    s.server_name(),
                    self.buffers.clone(),
                )),
            });
        }
        let balancers = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let balancer = Balancer::new(u)
                    .with_metrics(metrics.clone(), i)
                    .with_health(loaded.health.clone(), i)
                    .with_counts(loaded.limits.servers.pool(i));
                if let Some(old) = self.config.upstreams.iter().position(|o| o.name == u.name)
                    && let Some(old) = self.balancers.get(old)
                {
                    balancer.inherit_health(old);
                }
                Rc::new(balancer)
            })
            .collect();
        Ok(WorkerCtx {
            id: self.id,
            balancers,
            http_pool: UpstreamPool::new(),
            buffers: self.buffers.clone(),
            tls: Rc::new(tls),
            upstream_tls,
            sweeper: self.sweeper.clone(),
            connections: self.connections.clone(),
            max_connections: share(&config, self.workers),
            workers: self.workers,
            metrics,
            health: loaded.health.clone(),
            auth: auth_policies(&config),
            limits: loaded.limits.clone(),
            config,
        })
    }
}

/// The routes' JWT policies, indexed like `config.routes`.
fn auth_policies(config: &Config) -> Vec<Option<AuthPolicy>> {
    config
        .routes
        .iter()
        .map(|r| r.auth.clone().map(AuthPolicy::new))
        .collect()
}

/// This worker's share of `limits.max_connections`.
fn share(config: &Config, workers: usize) -> usize {
    config
        .limits
        .max_connections
        .div_ceil(workers.max(1))
        .max(1)
}

/// One client connection counted against the worker's share of `max_connections`, and against its client's
/// `limits.per_client` once [`ConnectionSlot::with_client`] counted it, until dropped. Both counts are released
/// together, exactly once, whichever path the connection ends on.
pub(crate) struct ConnectionSlot {
    ctx: Rc<WorkerCtx>,
    client: Option<ClientSlot>,
}

impl ConnectionSlot {
    /// Counts one more connection, or `None` when the worker is at its limit.
    pub(crate) fn claim(ctx: &Rc<WorkerCtx>) -> Option<Self> {
        if ctx.connections.get() >= ctx.max_connections {
            return None;
        }
        ctx.connections.set(ctx.connections.get() + 1);
        ctx.metrics.totals.connections_open.add(1);
        Some(Self {
            ctx: ctx.clone(),
            client: None,
        })
    }

    /// The slot also holds the connection's count in the per-client table.
    pub(crate) fn with_client(mut self, client: Option<ClientSlot>) -> Self {
        self.client = client;
        self
    }

    /// The connection's entry in the per-client table (`None`: exempt or not counted).
    pub(crate) fn client(&self) -> Option<&ClientSlot> {
        self.client.as_ref()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.ctx
            .connections
            .set(self.ctx.connections.get().saturating_sub(1));
        self.ctx.metrics.totals.connections_open.add(-1);
    }
}
