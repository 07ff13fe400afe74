//! Starting the workers: one thread per worker, each with its own monoio runtime (io_uring, or epoll when io_uring is
//! unavailable or not wanted) and its own SO_REUSEPORT listener socket per configured listener.
//!
//! Owns: binding (all sockets are bound up front on the main thread so that port 0 resolves to one port shared by
//! every worker), choosing the runtime driver, and the accept loops. Does not own: what happens on a connection.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_config::{Config, Driver};
use socket2::{Domain, Protocol, Socket, Type};

use crate::runtime::drain::DrainPlan;
use crate::runtime::isolate::isolated;
use crate::runtime::notify;
use crate::runtime::process::{Loaded, ProcessState};
use crate::tls::connect::UpstreamTlsSetup;
use crate::tls::listener::{SharedTls, WorkerTls};
use crate::upstream::health::HealthBoard;
use crate::worker::WorkerCtx;

/// Errors while starting the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot listen on {addr} (listener `{name}`): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr} (listener `{name}`): another process is already listening there (a second ringway? \
         pass --takeover to share the port on purpose, during a binary upgrade)"
    )]
    PortTaken { name: String, addr: SocketAddr },
    #[error(
        "io_uring is not available on this kernel (driver: io_uring was requested; use `auto` or `epoll`)"
    )]
    NoIoUring,
    #[error("listener `{listener}`: {message}")]
    Tls { listener: String, message: String },
    #[error("{0}")]
    UpstreamTls(String),
    #[error("cannot start worker {worker}: {source}")]
    Runtime {
        worker: usize,
        source: std::io::Error,
    },
}

/// What the gateway was started with, after overrides.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub workers: usize,
    pub driver: Driver,
    /// Share listening ports another process already listens on (SO_REUSEPORT), for a binary upgrade where the new
    /// `ringway` starts before the old one drains. Without it such a port is refused: a second instance started by
    /// mistake would otherwise silently take half of the first one's connections.
    pub takeover: bool,
    /// The route file, re-read on `SIGHUP` (`None`: the config cannot be reloaded, e.g. in tests that build one).
    pub config_path: Option<std::path::PathBuf>,
}

/// The addresses actually bound, per listener name (port 0 resolved).
#[derive(Debug, Clone)]
pub struct Bound {
    pub name: String,
    pub addr: SocketAddr,
}

/// Binds every listener for every worker, starts the worker threads and blocks until they end (they end only on a
/// fatal error). `on_ready` is called with the bound addresses once all sockets are listening.
pub fn run(
    config: Config,
    options: StartOptions,
    on_ready: impl FnOnce(&[Bound]),
) -> Result<(), StartError> {
    if options.driver == Driver::IoUring && !monoio::utils::detect_uring() {
        return Err(StartError::NoIoUring);
    }
    let workers = options.workers.max(1);
    let shared_tls = shared_tls(&config)?;
    let upstream_setups =
        upstream_tls_setups(&config).map_err(|e| StartError::UpstreamTls(e.to_string()))?;
    let mut worker_tls = Vec::with_capacity(workers);
    let mut worker_upstream_tls = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut clients = Vec::with_capacity(upstream_setups.len());
        for setup in &upstream_setups {
            clients.push(match setup {
                None => None,
                Some(s) => Some((
                    s.client_config()
                        .map_err(|e| StartError::UpstreamTls(e.to_string()))?,
                    s.server_name(),
                )),
            });
        }
        worker_upstream_tls.push(clients);
        let mut per_listener = Vec::with_capacity(shared_tls.len());
        for (shared, listener) in shared_tls.iter().zip(&config.listeners) {
            per_listener.push(match shared {
                None => None,
                Some(s) => Some(WorkerTls::new(s.clone()).map_err(|e| StartError::Tls {
                    listener: listener.name.clone(),
                    message: e.to_string(),
                })?),
            });
        }
        worker_tls.push(per_listener);
    }
    let (bound, per_worker) = bind_all(&config, workers, options.takeover)?;
    if options.takeover
        && std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
            .is_ok_and(|v| v.trim() != "1")
    {
        tracing::warn!(
            "--takeover: net.ipv4.tcp_migrate_req is 0, so connections still queued on the old process's sockets \
             when it stops are reset; set it to 1 for an upgrade without refused connections"
        );
    }
    let admin = match &config.admin {
        None => None,
        Some(a) => {
            Some(
                std::net::TcpListener::bind(a.bind).map_err(|source| StartError::Bind {
                    name: "admin".to_owned(),
                    addr: a.bind,
                    source,
                })?,
            )
        }
    };
    let config = Arc::new(config);
    let process = Arc::new(ProcessState::new(Loaded {
        health: Arc::new(HealthBoard::new(&config, None)),
        limits: Arc::new(crate::limits::SharedLimits::new(&config, None)),
        config: config.clone(),
        upstream_tls: upstream_setups,
    }));
    handle_signals(
        config
            .listeners
            .iter()
            .cloned()
            .zip(shared_tls)
            .filter_map(|(l, t)| t.map(|t| (l, t)))
            .collect(),
        process.clone(),
        options.config_path.clone(),
        workers,
    );
    crate::upstream::resolve::spawn(process.clone());
    if let Some(listener) = admin {
        let addr = listener.local_addr().ok();
        crate::admin::spawn(listener, process.clone())
            .map_err(|source| StartError::Runtime { worker: 0, source })?;
        if let Some(addr) = addr {
            tracing::info!(%addr, "admin endpoint: /metrics, /healthz, /readyz");
        }
    }
    on_ready(&bound);
    let mut threads = Vec::with_capacity(workers);
    for (((id, listeners), tls), upstream_tls) in per_worker
        .into_iter()
        .enumerate()
        .zip(worker_tls)
        .zip(worker_upstream_tls)
    {
        let config = config.clone();
        let driver = options.driver;
        let process = process.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ringway-worker-{id}"))
            .spawn(move || {
                run_worker(
                    id,
                    workers,
                    config,
                    WorkerSetup {
                        listeners,
                        tls,
                        upstream_tls,
                        process,
                    },
                    driver,
                )
            })
            .map_err(|source| StartError::Runtime { worker: id, source })?;
        threads.push(thread);
    }
    process.set_ready();
    notify::notify("READY=1");
    if let Some(every) = notify::watchdog_interval() {
        let _ = std::thread::Builder::new()
            .name("ringway-watchdog".into())
            .spawn(move || {
                loop {
                    notify::notify("WATCHDOG=1");
                    std::thread::sleep(every);
                }
            });
    }
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => tracing::error!("a worker thread panicked"),
        }
    }
    tracing::info!("ringway stopped");
    Ok(())
}

/// One finding of [`check_tls`]: about the route-file key `yaml_key` (`listeners[0].tls.certificates[1].cert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFinding {
    pub yaml_key: String,
    /// An error keeps the gateway from serving this listener as configured; otherwise it is a warning.
    pub error: bool,
    pub message: String,
}

/// Loads and checks every certificate, key and CA bundle the TLS listeners name, as at start and on reload:
/// unreadable or non-PEM files, a key that does not match its certificate, a certificate without usable names, one
/// expired or not yet valid at `now` (errors), and one expiring within 14 days (a warning).
pub fn check_tls(config: &Config, now: std::time::SystemTime) -> Vec<TlsFinding> {
    use crate::tls::certs::{self, Validity};
    let now = match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(_) => 0,
    };
    let mut findings = Vec::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        let Some(tls) = &listener.tls else { continue };
        let mut pairs_ok = true;
        for files in &tls.certificates {
            let at = |field: &str| format!("{}.{field}", files.yaml_path);
            match certs::load(&files.cert, &files.key) {
                Err(e) => {
                    pairs_ok = false;
                    let field = match e.file() {
                        certs::PairFile::Cert => "cert",
                        certs::PairFile::Key => "key",
                    };
                    findings.push(TlsFinding {
                        yaml_key: at(field),
                        error: true,
                        message: e.to_string(),
                    });
                }
                Ok(pair) => {
                    let cert = files.cert.display();
                    let (error, message) = match pair.validity(now) {
                        Validity::Valid => continue,
                        Validity::Expired { days_ago } => (
                            true,
                            format!("{cert}: the certificate expired {days_ago} day(s) ago"),
                        ),
                        Validity::NotYetValid { days } => (
                            true,
                            format!(
                                "{cert}: the certificate is not valid for another {days} day(s)"
                            ),
                        ),
                        Validity::ExpiresSoon { days } => (
                            false,
                            format!("{cert}: the certificate expires in {days} day(s)"),
                        ),
                    };
                    findings.push(TlsFinding {
                        yaml_key: at("cert"),
                        error,
                        message,
                    });
                }
            }
        }
        if pairs_ok && let Err(e) = SharedTls::new(tls, &format!("listeners[{i}]")) {
            findings.push(TlsFinding {
                yaml_key: e
                    .yaml_key()
                    .unwrap_or_else(|| format!("listeners[{i}].tls")),
                error: true,
                message: e.reason(),
            });
        }
    }
    findings
}

/// Loads every TLS listener's certificates (the gateway does not start with a pair it cannot serve).
fn shared_tls(config: &Config) -> Result<Vec<Option<Arc<SharedTls>>>, StartError> {
    config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.tls
                .as_ref()
                .map(|tls| {
                    SharedTls::new(tls, &format!("listeners[{i}]"))
                        .map(Arc::new)
                        .map_err(|e| StartError::Tls {
                            listener: l.name.clone(),
                            message: e.to_string(),
                        })
                })
                .transpose()
        })
        .collect()
}

/// The signal thread. `SIGHUP` re-reads the route file ([`reload_route_file`]) and every TLS listener's certificate
/// files: new handshakes get the new pairs, live connections keep theirs, and a pair that fails to load leaves the
/// old one serving (logged with the reason). `SIGTERM`/`SIGINT` start the drain (see [`control_worker`]); a second
/// one ends the process at once.
fn handle_signals(
    mut listeners: Vec<(ringway_config::Listener, Arc<SharedTls>)>,
    process: Arc<ProcessState>,
    config_path: Option<std::path::PathBuf>,
    workers: usize,
) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle signals; reload and drain are not available");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("ringway-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    notify::notify("RELOADING=1");
                    tracing::info!("SIGHUP: reloading");
                    let mut ok = match &config_path {
                        Some(path) => match reload_route_file(path, &process, workers, &mut listeners) {
                            Ok(summary) => {
                                tracing::info!(
                                    file = %path.display(),
                                    generation = process.config_generation(),
                                    "route file reloaded: {summary}"
                                );
                                true
                            }
                            Err(e) => {
                                tracing::error!(
                                    "route file reload failed, the running config stays: {e}"
                                );
                                false
                            }
                        },
                        None => true,
                    };

                    for (_, tls) in &listeners {
                        match tls.reload() {
                            Ok(pairs) => tracing::info!(
                                listener = tls.listener_path(),
                                pairs,
                                "certificates reloaded"
                            ),
                            Err(e) => {
                                ok = false;
                                tracing::error!(
                                    listener = tls.listener_path(),
                                    "certificate reload failed, the previous certificates keep serving: {e}"
                                );
                            }
                        }
                    }
                    process.reloaded(ok);
                    notify::notify("READY=1");
                } else if process.start_drain() {
                    let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                    tracing::info!("{name}: draining (a second signal stops at once)");
                    notify::notify("STOPPING=1");
                } else {
                    tracing::warn!("second stop signal: exiting now, open connections are cut");
                    std::process::exit(1);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the signal thread; reload and drain are not available");
    }
}

/// Loads `path` as the config for new connections. Refused (the running config stays): a file that does not load,
/// whose certificates do not, or whose new listeners cannot be bound. Listeners the file adds are bound here (one
/// socket per worker, as at start) and handed to the workers; listeners it removes (or changes) stop accepting
/// and close, while their connections finish on the config they started with. `tls` (the listeners' certificate
/// sets, for SIGHUP) follows the new file. Keys read only at start (`workers`, `driver`, `admin`) are logged when
/// they change and otherwise ignored.
fn reload_route_file(
    path: &std::path::Path,
    process: &ProcessState,
    workers: usize,
    tls: &mut Vec<(ringway_config::Listener, Arc<SharedTls>)>,
) -> Result<String, String> {
    let config = ringway_config::load(path).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let errors: Vec<String> = check_tls(&config, std::time::SystemTime::now())
        .into_iter()
        .filter(|f| f.error)
        .map(|f| {
            let (line, column) = ringway_config::position_of(&text, &f.yaml_key);
            format!(
                "{}:{line}:{column}: {}: {}",
                path.display(),
                f.yaml_key,
                f.message
            )
        })
        .collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let current = process.loaded();
    let added = bind_added_listeners(&config, &current.config, workers)?;
    if config.workers != current.config.workers
        || config.driver != current.config.driver
        || config.admin != current.config.admin
    {
        tracing::warn!(
            "`workers`, `driver` and `admin` take effect at the next start, not on reload"
        );
    }
    let upstream_tls = upstream_tls_setups(&config).map_err(|e| e.to_string())?;
    let summary = format!(
        "{} routes, {} upstream pools, {} listeners",
        config.routes.len(),
        config.upstreams.len(),
        config.listeners.len()
    );
    for l in &current.config.listeners {
        if !config.listeners.contains(l) {
            tracing::info!(listener = %l.name, bind = %l.bind, "listener removed or changed by the reload: it stops accepting, its connections finish");
        }
    }
    tls.retain(|(l, _)| config.listeners.contains(l));
    tls.extend(added.shared);
    process.add_listeners(added.per_worker);
    process.publish(Loaded {
        health: Arc::new(HealthBoard::new(&config, Some(&current.health))),
        limits: Arc::new(crate::limits::SharedLimits::new(
            &config,
            Some(&current.limits),
        )),
        config: Arc::new(config),
        upstream_tls,
    });
    Ok(summary)
}

/// Each pool's TLS client setup (CA bundles read now, on the main thread), `None` for a plain pool.
fn upstream_tls_setups(
    config: &Config,
) -> Result<Vec<Option<UpstreamTlsSetup>>, crate::tls::connect::UpstreamTlsError> {
    config
        .upstreams
        .iter()
        .map(|u| {
            u.tls
                .as_ref()
                .map(|t| UpstreamTlsSetup::load(u, t))
                .transpose()
        })
        .collect()
}

/// What a reload binds: per worker, the new listeners' sockets and TLS; and the new TLS listeners' certificate sets.
struct AddedListeners {
    per_worker: Vec<Vec<crate::runtime::process::NewListener>>,
    shared: Vec<(ringway_config::Listener, Arc<SharedTls>)>,
}

/// Binds the listeners `next` has and `current` has not (an address `current` already listens on joins its
/// SO_REUSEPORT group: the listener that changes there stops accepting once the workers swap).
fn bind_added_listeners(
    next: &Config,
    current: &Config,
    workers: usize,
) -> Result<AddedListeners, String> {
    let mut added = AddedListeners {
        per_worker: (0..workers).map(|_| Vec::new()).collect(),
        shared: Vec::new(),
    };
    for (i, l) in next.listeners.iter().enumerate() {
        if current.listeners.contains(l) {
            continue;
        }
        let mut addr = l.bind;
        let ours = current.listeners.iter().any(|c| c.bind == l.bind);
        if !ours && addr.port() != 0 && port_taken(addr) {
            return Err(format!(
                "listeners[{i}] ({}): {addr} is in use by another process",
                l.name
            ));
        }
        let shared = l
            .tls
            .as_ref()
            .map(|t| SharedTls::new(t, &format!("listeners[{i}]")).map(Arc::new))
            .transpose()
            .map_err(|e| format!("listeners[{i}] ({}): {e}", l.name))?;
        for per_worker in &mut added.per_worker {
            let socket = bind_one(addr).map_err(|e| {
                format!("listeners[{i}] ({}): cannot listen on {addr}: {e}", l.name)
            })?;
            if addr.port() == 0 {
                addr = socket.local_addr().map_err(|e| e.to_string())?;
            }
            let worker_tls = shared
                .as_ref()
                .map(|s| WorkerTls::new(s.clone()))
                .transpose()
                .map_err(|e| format!("listeners[{i}] ({}): {e}", l.name))?;
            per_worker.push(crate::runtime::process::NewListener {
                listener: l.clone(),
                socket,
                tls: worker_tls,
            });
        }
        if let Some(s) = shared {
            added.shared.push((l.clone(), s));
        }
        tracing::info!(listener = %l.name, %addr, "listener added by the reload");
    }
    Ok(added)
}

/// Binds `workers` SO_REUSEPORT sockets per listener. The first bind of a port-0 listener picks the port for all.
fn bind_all(
    config: &Config,
    workers: usize,
    takeover: bool,
) -> Result<(Vec<Bound>, Vec<Vec<std::net::TcpListener>>), StartError> {
    let mut bound = Vec::new();
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    for listener in &config.listeners {
        let mut addr = listener.bind;
        if !takeover && addr.port() != 0 && port_taken(addr) {
            return Err(StartError::PortTaken {
                name: listener.name.clone(),
                addr,
            });
        }
        for sockets in per_worker.iter_mut() {
            let socket = bind_one(addr).map_err(|source| StartError::Bind {
                name: listener.name.clone(),
                addr,
                source,
            })?;
            if addr.port() == 0 {
                addr = socket.local_addr().map_err(|source| StartError::Bind {
                    name: listener.name.clone(),
                    addr,
                    source,
                })?;
            }
            sockets.push(socket);
        }
        bound.push(Bound {
            name: listener.name.clone(),
            addr,
        });
    }
    Ok((bound, per_worker))
}

/// Whether another socket already holds `addr`: a bind without SO_REUSEPORT fails only then (SO_REUSEADDR keeps
/// connections in TIME_WAIT from counting).
fn port_taken(addr: SocketAddr) -> bool {
    let probe = || -> std::io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())
    };
    matches!(probe(), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    // Required by the epoll driver, harmless under io_uring (it arms a poll on EAGAIN).
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What the main thread prepares for one worker: its listener sockets and TLS setups.
struct WorkerSetup {
    process: Arc<ProcessState>,
    listeners: Vec<std::net::TcpListener>,
    tls: Vec<Option<WorkerTls>>,
    upstream_tls: Vec<
        Option<(
            Arc<rustls::ClientConfig>,
            Option<rustls::pki_types::ServerName<'static>>,
        )>,
    >,
}

fn run_worker(
    id: usize,
    workers: usize,
    config: Arc<Config>,
    setup: WorkerSetup,
    driver: Driver,
) -> Result<(), StartError> {
    let work = worker_main(id, workers, config, setup);
    let runtime_error = |source| StartError::Runtime { worker: id, source };
    // Builds the runtime for one driver type: the best ring setup first; a kernel without a setup flag refuses it,
    // then the next one (the epoll driver ignores the ring setup). `Auto` falls back to epoll inside monoio.
    macro_rules! run_on {
        ($driver:ty) => {{
            let build = |setup| {
                monoio::RuntimeBuilder::<$driver>::new()
                    .uring_builder(uring_setup(setup))
                    .with_entries(4096)
                    .enable_timer()
                    .build()
            };
            let mut rt = build(RingSetup::DeferTaskrun)
                .or_else(|_| build(RingSetup::CoopTaskrun))
                .or_else(|_| build(RingSetup::Plain))
                .map_err(runtime_error)?;
            rt.block_on(work);
        }};
    }
    match driver {
        Driver::Auto => run_on!(monoio::FusionDriver),
        Driver::IoUring => run_on!(monoio::IoUringDriver),
        Driver::Epoll => run_on!(monoio::LegacyDriver),
    }
    Ok(())
}

/// How a worker's io_uring delivers completions, best first. Each needs a newer kernel than the next.
#[derive(Debug, Clone, Copy)]
enum RingSetup {
    /// IORING_SETUP_DEFER_TASKRUN + SINGLE_ISSUER (Linux 6.1+): completion work (e.g. the receive that follows a
    /// socket's readiness) runs only when the worker waits on the ring, batched, and never interrupts it. The ring
    /// is used by its own thread only, as monoio's thread-per-core runtime does. Completions then appear only when
    /// the worker's run queue is empty and it waits; no gateway task wakes itself in a loop, so the queue always
    /// drains (a task that did would hold back all I/O of its worker). Cheaper per message than COOP_TASKRUN at
    /// every rate measured (README, "Measurements behind the design").
    DeferTaskrun,
    /// IORING_SETUP_COOP_TASKRUN (Linux 5.19+): the kernel no longer interrupts the running worker with an IPI for
    /// every completed receive; the worker picks completions up on its next ring entry (measured against a plain
    /// ring: README, "Measurements behind the design").
    CoopTaskrun,
    /// Neither (kernels before 5.19): every completion interrupts the worker.
    Plain,
}

/// The io_uring setup for a worker's ring.
fn uring_setup(setup: RingSetup) -> io_uring::Builder {
    let mut builder = io_uring::IoUring::builder();
    match setup {
        RingSetup::DeferTaskrun => {
            builder.setup_single_issuer().setup_defer_taskrun();
        }
        RingSetup::CoopTaskrun => {
            builder.setup_coop_taskrun();
        }
        RingSetup::Plain => {}
    }
    builder
}

async fn worker_main(id: usize, workers: usize, config: Arc<Config>, setup: WorkerSetup) {
    let WorkerSetup {
        listeners,
        tls,
        upstream_tls,
        process,
    } = setup;
    let loaded = process.loaded();
    let ctx = Rc::new(WorkerCtx::new(
        id,
        workers,
        config,
        tls,
        upstream_tls,
        loaded.health.clone(),
        loaded.limits.clone(),
    ));
    process.metrics.set(id, ctx.metrics.clone());
    let generation = process.config_generation();
    let slot: CtxSlot = Rc::new(RefCell::new(ctx.clone()));
    monoio::spawn(ctx.sweeper.clone().run());
    let mut accepting = AcceptLoops::default();
    for (l, std_listener) in ctx.config.listeners.iter().zip(listeners) {
        accepting.start(l.clone(), std_listener, &slot);
    }
    drop(ctx);
    monoio::spawn(run_health_checks(slot.clone(), workers));
    control_worker(&slot, &process, generation, &mut accepting).await;
    for handle in accepting.handles {
        handle.await;
    }
}

/// A worker's accept loops, one per listener, each stoppable on its own (a reload removed its listener) or all
/// together (drain).
#[derive(Default)]
struct AcceptLoops {
    running: Vec<(ringway_config::Listener, monoio::io::Canceller)>,
    handles: Vec<monoio::task::JoinHandle<()>>,
}

impl AcceptLoops {
    fn start(
        &mut self,
        listener: ringway_config::Listener,
        socket: std::net::TcpListener,
        slot: &CtxSlot,
    ) {
        let socket = match monoio::net::TcpListener::from_std(socket) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(listener = %listener.name, error = %e, "cannot register listener");
                return;
            }
        };
        let canceller = monoio::io::Canceller::new();
        self.handles.push(monoio::spawn(accept_loop(
            socket,
            listener.clone(),
            slot.clone(),
            canceller.handle(),
        )));
        self.running.push((listener, canceller));
    }

    /// Stops the loops whose listener `config` no longer has (their sockets close; their connections go on).
    fn retire(&mut self, config: &Config) {
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|(l, _)| config.listeners.contains(l));
        self.running = keep;
        for (_, canceller) in gone {
            canceller.cancel();
        }
    }

    fn stop_all(&mut self) {
        for (_, canceller) in std::mem::take(&mut self.running) {
            canceller.cancel();
        }
    }
}

/// Runs the active health checks this worker owns (one worker per server), on the current config, until a drain.
async fn run_health_checks(slot: CtxSlot, workers: usize) {
    use crate::upstream::health::{CHECK_TICK, Checks, check};
    let checks = Rc::new(RefCell::new(Checks::default()));
    loop {
        monoio::time::sleep(CHECK_TICK).await;
        let ctx = slot.borrow().clone();
        if ctx.sweeper.drain().is_some() {
            return;
        }
        let due = checks
            .borrow_mut()
            .due(&ctx.config, ctx.id, workers, Instant::now());
        for (pool, server) in due {
            let (ctx, checks) = (ctx.clone(), checks.clone());
            monoio::spawn(async move {
                let Some(u) = ctx.config.upstreams.get(pool) else {
                    return;
                };
                let (Some(spec), Some(s)) = (u.health.as_ref(), u.servers.get(server)) else {
                    return;
                };
                let tls = ctx.upstream_tls.get(pool).and_then(Option::as_ref);
                let result = check(s.address, &s.host, spec, tls).await;
                checks
                    .borrow_mut()
                    .record(&ctx.config, &ctx.health, (pool, server), result);
            });
        }
    }
}

/// How often a worker looks at the process state (drain) and publishes its gauges.
const CONTROL_TICK: Duration = Duration::from_millis(50);

/// The worker's control loop: publishes its gauges, and once the process drains, stops accepting, has the relays
/// close on the drain schedule, and returns when the worker's connections are gone (or at `drain.timeout`; what is
/// left is cut when the runtime ends). Idle HTTP keep-alive connections are cut once the period is over and no
/// WebSocket is left.
async fn control_worker(
    slot: &CtxSlot,
    process: &ProcessState,
    mut generation: u64,
    accepting: &mut AcceptLoops,
) {
    let mut started: Option<Instant> = None;
    loop {
        monoio::time::sleep(CONTROL_TICK).await;
        let latest = process.config_generation();
        if latest != generation && started.is_none() {
            generation = latest;
            let current = slot.borrow().clone();
            let mut sockets = Vec::new();
            let mut new_tls = Vec::new();
            for n in process.take_listeners(current.id) {
                sockets.push((n.listener.clone(), n.socket));
                new_tls.push((n.listener, n.tls));
            }
            match current.next(&process.loaded(), new_tls) {
                Ok(next) => {
                    let next = Rc::new(next);
                    process.metrics.set(next.id, next.metrics.clone());
                    *slot.borrow_mut() = next.clone();
                    accepting.retire(&next.config);
                    for (listener, socket) in sockets {
                        if next.config.listeners.contains(&listener) {
                            accepting.start(listener, socket, slot);
                        }
                    }
                    tracing::debug!(
                        worker = current.id,
                        generation,
                        "new connections use the reloaded config"
                    );
                }
                Err(e) => tracing::error!(
                    worker = current.id,
                    "cannot apply the reloaded config, new connections keep the previous one: {e}"
                ),
            }
        }
        let ctx = slot.borrow().clone();
        let drain = &ctx.config.drain;
        let totals = &ctx.metrics.totals;
        totals
            .buffers_cached
            .set(i64::try_from(ctx.buffers.cached()).unwrap_or(i64::MAX));
        totals
            .buffers_in_use_bytes
            .set(i64::try_from(ctx.buffers.in_use_bytes()).unwrap_or(i64::MAX));
        let now = Instant::now();
        match started {
            None if process.draining() => {
                started = Some(now);
                accepting.stop_all();
                ctx.sweeper.start_drain(DrainPlan {
                    start: now,
                    period: drain.period,
                    close_code: drain.close_code,
                });
                tracing::info!(
                    worker = ctx.id,
                    websockets = ctx.sweeper.live(),
                    connections = ctx.connections.get(),
                    period_ms = drain.period.as_millis() as u64,
                    close_code = drain.close_code,
                    "draining"
                );
            }
            None => {}
            Some(start) => {
                let open = ctx.connections.get();
                let relays = ctx.sweeper.live();
                if open == 0 {
                    tracing::info!(worker = ctx.id, "drained");
                    return;
                }
                if relays == 0 && now >= start + drain.period {
                    tracing::info!(
                        worker = ctx.id,
                        connections = open,
                        "drained; closing idle HTTP connections"
                    );
                    return;
                }
                if now >= start + drain.timeout {
                    tracing::warn!(
                        worker = ctx.id,
                        connections = open,
                        websockets = relays,
                        "drain timeout: cutting what is left"
                    );
                    return;
                }
            }
        }
    }
}

/// The state new connections of a worker get: replaced by a reload, kept by the connections that started with it.
type CtxSlot = Rc<RefCell<Rc<WorkerCtx>>>;

async fn accept_loop(
    socket: monoio::net::TcpListener,
    listener: ringway_config::Listener,
    slot: CtxSlot,
    stop: monoio::io::CancelHandle,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        if slot.borrow().sweeper.drain().is_some() {
            return;
        }
        let accepted = socket.cancelable_accept(stop.clone()).await;
        let ctx = slot.borrow().clone();
        // The connection is served by the config of now, where this listener may sit at another index.
        let Some(index) = ctx.config.listeners.iter().position(|l| *l == listener) else {
            tracing::info!(worker = ctx.id, listener = %listener.name, "listener removed by a reload; no longer accepting");
            return;
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Some(failures) = backoff.on_success() {
                    tracing::info!(worker = ctx.id, failures, "accepting connections again");
                }
                let _ = stream.set_nodelay(true);
                let fut = isolated(crate::conn::serve(stream, peer, index, ctx.clone()));
                tracing::trace!(
                    future_bytes = std::mem::size_of_val(&fut),
                    "connection task"
                );
                monoio::spawn(fut);
            }
            Err(_) if ctx.sweeper.drain().is_some() => return,
            Err(e) => {
                // EMFILE and friends: the pending connection stays in the backlog, so retrying at once would spin.
                let (wait, log) = backoff.on_error(Instant::now());
                if let Some(suppressed) = log {
                    tracing::warn!(worker = ctx.id, error = %e, suppressed, retry_in_ms = wait.as_millis() as u64, "accept failed");
                }
                monoio::time::sleep(wait).await;
            }
        }
    }
}

/// How the accept loop waits and logs while accepts fail (out of descriptors, typically): the wait doubles from
/// [`AcceptBackoff::FIRST`] to [`AcceptBackoff::MAX`], and one log line is written for the first failure and then at
/// most every [`AcceptBackoff::LOG_EVERY`], counting the failures it did not log.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u64,
    wait: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_millis(500);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    /// A failed accept at `now`: how long to wait, and whether to log (with the failures not logged since).
    fn on_error(&mut self, now: Instant) -> (Duration, Option<u64>) {
        self.failures += 1;
        self.wait = if self.wait.is_zero() {
            Self::FIRST
        } else {
            (self.wait * 2).min(Self::MAX)
        };
        let log = match self.last_log {
            Some(at) if now.saturating_duration_since(at) < Self::LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_log = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        };
        (self.wait, log)
    }

    /// A successful accept: the number of failures before it, if there were any.
    fn on_success(&mut self) -> Option<u64> {
        if self.failures == 0 {
            return None;
        }
        let failures = std::mem::take(&mut self.failures);
        *self = Self::default();
        Some(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_and_log_rarely() {
        let mut b = AcceptBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.on_success(), None);
        assert_eq!(b.on_error(t0), (Duration::from_millis(10), Some(0)));
        assert_eq!(b.on_error(t0), (Duration::from_millis(20), None));
        let mut last = Duration::ZERO;
        for i in 0..20 {
            let (wait, log) = b.on_error(t0 + Duration::from_millis(100 * i));
            assert_eq!(log, None, "within 10 s of the first line");
            last = wait;
        }
        assert_eq!(last, AcceptBackoff::MAX);
        let (_, log) = b.on_error(t0 + Duration::from_secs(10));
        assert_eq!(log, Some(21), "the next line counts what was not logged");
        assert_eq!(b.on_success(), Some(23));
        assert_eq!(
            b.on_error(t0),
            (Duration::from_millis(10), Some(0)),
            "reset after a success"
        );
    }
}
