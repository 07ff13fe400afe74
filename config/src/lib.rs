//! Ringway's route file: the validated configuration model, its defaults, and loading it from
//! YAML with errors that name file, line, column and YAML path.
//!
//! Flow ("parse, don't validate"): the YAML text is deserialized into the raw types of
//! [`raw`] (shape only, unknown keys rejected), then converted once into the types below, whose
//! fields can only hold valid values (non-zero sizes, resolved upstream references, socket
//! addresses, a sorted [`RouteTable`]). Code that receives a [`Config`] never re-checks it.
//!
//! This crate does no network I/O except resolving host names in addresses at load time, and
//! depends on no async runtime. It does not watch files or reload; the gateway does.
//!
//! ```
//! let cfg = ringway_config::parse(
//!     "listeners: [{name: public, bind: 127.0.0.1:8080}]\nroutes: [{path: /echo, echo: true}]\n",
//!     "inline.yaml",
//! )?;
//! let route = cfg.routes.find(Some("localhost:8080"), "/echo", |_| None);
//! assert!(matches!(route.map(|r| &r.target), Some(ringway_config::Target::Echo)));
//! # Ok::<(), ringway_config::ConfigError>(())
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::MessageFormatter as _;

pub mod auth;
mod convert;
mod error;
pub mod raw;
mod route;
pub mod units;

pub use error::ConfigError;
pub use route::{HostMatch, RouteTable};

/// The validated configuration of one gateway process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker threads (one event loop each). `None`: one per CPU. Default `None`.
    pub workers: Option<NonZeroUsize>,
    /// I/O driver. Default [`Driver::Auto`].
    pub driver: Driver,
    /// Sockets to accept on; at least one, unique names and addresses.
    pub listeners: Vec<Listener>,
    /// Per-process protection limits.
    pub limits: Limits,
    /// Upstream pools in file order; [`UpstreamId`] indexes this.
    pub upstreams: Vec<Upstream>,
    /// Routes, most specific first; at least one.
    pub routes: RouteTable,
    /// Peers whose `X-Forwarded-For`, `X-Forwarded-Proto/-Host`, `X-Real-IP` and `Forwarded` headers are kept and
    /// extended. Everyone else's are replaced by what the gateway saw (a client cannot choose the address the
    /// upstream logs or rate-limits). Default: none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The operator's HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), on its own address. Default: none.
    pub admin: Option<Admin>,
    /// How a stopping gateway lets its connections go.
    pub drain: Drain,
    /// `log_format`: human text (default) or one JSON object per line for log shippers.
    pub log_format: LogFormat,
    /// `log_interval`: a line for every WebSocket still open each time this passes. Default: off.
    pub log_interval: Option<Duration>,
    /// `redact_query`: query parameters whose values are written as `REDACTED` in logs (tokens in URLs).
    /// Default: [`DEFAULT_REDACTED_QUERY`].
    pub redact_query: Vec<String>,
    /// `resolve_interval`: how often upstream servers written as host names are resolved again (the system resolver
    /// gives no TTL); a changed address is swapped in for new connections like a reload. Default 30s.
    pub resolve_interval: Duration,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Query parameters redacted in logs unless `redact_query` says otherwise (compared case-insensitively).
pub const DEFAULT_REDACTED_QUERY: &[&str] = &[
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "auth",
    "authorization",
    "jwt",
    "key",
    "api_key",
    "apikey",
    "password",
    "secret",
    "signature",
    "sig",
];

/// `admin:`: the operator's endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Where it listens, e.g. `127.0.0.1:9900`. Keep it off public addresses: it tells anyone who asks about the
    /// routes, upstreams and traffic.
    pub bind: SocketAddr,
}

/// `drain:`: what `SIGTERM`/`SIGINT` do to live connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// WebSockets are sent their Close at moments spread evenly over this, so clients do not reconnect in one
    /// storm. Default 30s.
    pub period: Duration,
    /// What is still open this long after the signal is cut. Default 60s; at least `period`.
    pub timeout: Duration,
    /// The close code both legs of a relayed WebSocket get: 1001 (Going Away, default) or 1012 (Service Restart:
    /// the clients are told to come back).
    pub close_code: u16,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            period: Duration::from_secs(30),
            timeout: Duration::from_secs(60),
            close_code: 1001,
        }
    }
}

/// Which kernel interface the event loops use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when the kernel allows it, epoll otherwise (`auto`).
    Auto,
    /// io_uring only; fail to start without it (`io_uring`).
    IoUring,
    /// epoll only (`epoll`).
    Epoll,
}

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Name used in logs and metrics.
    pub name: String,
    /// Address to bind. Port 0 asks the kernel for a free port (useful in tests).
    pub bind: SocketAddr,
    /// TLS termination (`wss://`, `https://`); `None`: plain TCP.
    pub tls: Option<ListenerTls>,
    /// Plain listeners only: answer every request (WebSocket upgrades too) with `308` to the same host and target
    /// on `https://` at this port (443 is left out of the URL). `None`: serve normally.
    pub redirect_https: Option<u16>,
    /// Every connection must start with a PROXY protocol header (v1 or v2) from the load balancer in front; its
    /// source address is then the client's. A connection without one is closed. Only for listeners that nothing
    /// but that load balancer can reach. Default false.
    pub proxy_protocol: bool,
}

/// TLS settings of a listener. Certificate files are read by the gateway (at start, on `ringway check`, and on
/// reload), not by this crate: paths are only resolved against the route file's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Certificate/key pairs; the names each serves come from its certificate's SANs. At least one.
    pub certificates: Vec<CertificateFiles>,
    /// Index into `certificates` of the pair served without SNI (and for unknown names when
    /// [`UnknownSni::Default`]): the one marked `default: true`, else the first.
    pub default_certificate: usize,
    /// What a client asking for a name no certificate serves gets. Default [`UnknownSni::Default`].
    pub unknown_sni: UnknownSni,
    /// Lowest TLS version accepted. Default [`TlsVersion::V1_2`].
    pub min_version: TlsVersion,
    /// Resumption by session tickets (keys made at start, rotated every 6 hours, never written to disk).
    /// Default true.
    pub session_tickets: bool,
    /// Sessions each worker remembers for resumption by session ID; 0 turns the cache off. Default 1024.
    pub session_cache: usize,
    /// Client certificates (mTLS); `None`: not asked for.
    pub client_auth: Option<ClientAuth>,
}

/// One `cert`/`key` pair of PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// YAML path of this entry (`listeners[0].tls.certificates[1]`), so errors about the files point at the key.
    pub yaml_path: String,
}

/// What a TLS client asking (by SNI) for a name no certificate serves gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    /// The default certificate (`default`); the client decides whether to trust it.
    Default,
    /// The `unrecognized_name` alert (`refuse`).
    Refuse,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 (`"1.2"`).
    V1_2,
    /// TLS 1.3 (`"1.3"`).
    V1_3,
}

/// Client-certificate authentication of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM bundle of the CAs client certificates must chain to.
    pub ca: PathBuf,
    /// `required`: no verified certificate, no connection. `optional`: a certificate that is sent must verify.
    pub required: bool,
}

/// Limits that guard the gateway against slow, large or numerous clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The whole HTTP request head must arrive within this (slowloris). Default 10s.
    pub handshake_timeout: Duration,
    /// Largest accepted request head in bytes (memory per pending handshake). Default 16KiB.
    pub max_header_bytes: usize,
    /// Most header lines in a request head (parser work per request). Default 64.
    pub max_headers: usize,
    /// Open client connections per process; the gateway splits it across workers
    /// (file descriptors and memory). Default 10000.
    pub max_connections: usize,
    /// How long to wait for the peer's Close reply before dropping the socket. Default 5s.
    pub close_timeout: Duration,
    /// A request body must arrive within this plus one second per [`Limits::body_min_rate`] bytes received
    /// (a client trickling a body holds a connection and an upstream request). Default 20s.
    pub body_timeout: Duration,
    /// Bytes per second a request body must average after [`Limits::body_timeout`]; 0 = no extension per byte.
    /// Default 500 (Apache's `mod_reqtimeout` defaults: `body=20,MinRate=500`).
    pub body_min_rate: u64,
    /// On `proxy_protocol` listeners, the PROXY header must arrive within this after the connection is accepted
    /// (a silent connection otherwise holds a slot). Default 5s.
    pub proxy_protocol_timeout: Duration,
    /// `per_client:`: what one client address may hold and open.
    pub per_client: PerClientLimits,
    /// Message and byte rates of every relayed WebSocket (`limits.messages:`), the default of each route's
    /// `websocket.limits:`. Default: no limits.
    pub messages: MessageLimits,
}

/// `limits.per_client:`: limits per client address (one address, or the network it is masked to), counted across
/// all workers. A client over them gets `429 Too Many Requests` with `Retry-After` before any upstream is contacted.
///
/// The defaults suit a small public site: 256 connections let a few hundred users share one NAT or carrier-grade
/// NAT address, while one address cannot take more than a sliver of the default 10,000 connections; 20 upgrades a
/// second with a burst of 50 let a NAT's users reconnect after a deploy (within a couple of drain periods) but stop
/// one address from cycling handshakes at the gateway's full speed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerClientLimits {
    /// Open connections per client (`0`: no limit). Default 256.
    pub max_connections: u32,
    /// New WebSocket upgrades per client (`upgrades_per_second: 0`: no limit); routes may set their own.
    /// Default 20 per second, burst 50.
    pub upgrades: Option<UpgradeRate>,
    /// IPv4 clients are counted per network of this prefix length (1-32). Default 32: one address.
    pub ipv4_prefix: u8,
    /// IPv6 clients are counted per network of this prefix length (1-128). Default 64: one customer's subnet
    /// (a host picks new addresses inside its /64 at will). IPv4-mapped IPv6 addresses count as IPv4.
    pub ipv6_prefix: u8,
    /// Client entries in the process-wide table (rounded up to a power of two, 16 bytes each). Memory stays at this
    /// size whatever number of addresses connect; keep it well above the connections the gateway holds.
    /// Default 65536 (1 MiB).
    pub table_size: usize,
    /// Peers never limited per client: they speak for many clients (a local reverse proxy, a load balancer).
    /// Peers in `trusted_proxies` are exempt too. Default `127.0.0.0/8` and `::1`.
    pub exempt: Vec<ipnet::IpNet>,
}

impl Default for PerClientLimits {
    fn default() -> Self {
        PerClientLimits {
            max_connections: 256,
            upgrades: Some(UpgradeRate::DEFAULT),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            table_size: 65536,
            exempt: vec![
                ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
                    std::net::Ipv4Addr::new(127, 0, 0, 0),
                    8,
                )),
                ipnet::IpNet::V6(ipnet::Ipv6Net::new_assert(
                    std::net::Ipv6Addr::LOCALHOST,
                    128,
                )),
            ],
        }
    }
}

/// A rate of WebSocket upgrades: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeRate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl UpgradeRate {
    /// 20 per second, burst 50.
    pub const DEFAULT: UpgradeRate = UpgradeRate {
        per_second: NonZeroU32::new(20).expect("non-zero"),
        burst: NonZeroU32::new(50).expect("non-zero"),
    };
}

/// Per-connection message and byte rates of a relayed WebSocket, each way (one client flooding the upstream, or an
/// upstream flooding one client). Each rate is a token bucket: `burst` units at once, refilled at `per_second`.
/// Default: no limits (what a legitimate client may send depends on the application; see the README).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageLimits {
    /// What one client may send (client→upstream).
    pub from_client: DirectionLimits,
    /// What the upstream may send one client (upstream→client).
    pub from_upstream: DirectionLimits,
}

impl MessageLimits {
    /// Whether any rate is set.
    pub fn any(&self) -> bool {
        self.from_client.any() || self.from_upstream.any()
    }
}

/// The rates of one direction and what happens when the sender exceeds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionLimits {
    /// Data messages (counted when their last frame arrives); `None`: unlimited.
    pub messages: Option<Rate>,
    /// Payload bytes of all frames, control frames included; `None`: unlimited.
    pub bytes: Option<Rate>,
    /// Default [`OnExcess::Pause`].
    pub on_excess: OnExcess,
}

impl DirectionLimits {
    /// Whether a rate is set.
    pub fn any(&self) -> bool {
        self.messages.is_some() || self.bytes.is_some()
    }
}

/// A token bucket's refill rate and size (both at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units per second. Configured as `messages_per_second` / `bytes_per_second`.
    pub per_second: u64,
    /// Units that may arrive at once after a quiet spell. Configured as `message_burst` / `byte_burst`; default
    /// one second's worth (`per_second`).
    pub burst: u64,
}

/// What the gateway does with a sender over its rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnExcess {
    /// Stop reading from the sender until its bucket has refilled (TCP backpressure; nothing is lost). The gentle
    /// default: a legitimate client that bursts is slowed, not cut off.
    #[default]
    Pause,
    /// Close both sides with 1008 (policy violation, "rate limit exceeded"): for senders that are abusive by
    /// definition when they exceed the rate.
    Close,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_connections: 10_000,
            close_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(20),
            body_min_rate: 500,
            proxy_protocol_timeout: Duration::from_secs(5),
            per_client: PerClientLimits::default(),
            messages: MessageLimits::default(),
        }
    }
}

/// A pool of backend servers behind one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The name routes refer to.
    pub name: String,
    /// At least one server, unique addresses.
    pub servers: Vec<Server>,
    /// How a server is chosen for a new connection. Default round robin.
    pub balance: Balance,
    /// TCP connect deadline per attempt. Default 3s.
    pub connect_timeout: Duration,
    /// Passive health: a server that failed is skipped this long (0 = never skipped).
    /// Default 10s.
    pub fail_cooldown: Duration,
    /// Servers tried per client connection before giving up (>= 1). Default: number of servers.
    pub max_attempts: usize,
    /// TLS to the servers (`tls:`, or servers written `wss://` / `https://`); `None`: plain TCP.
    pub tls: Option<UpstreamTls>,
    /// Active health checks (`health:`); `None`: passive health only.
    pub health: Option<HealthCheck>,
}

/// Active health checks of a pool's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: HealthKind,
    /// Time between checks of one server. Default 5s.
    pub interval: Duration,
    /// A check that takes longer fails. Default 2s (at most `interval`).
    pub timeout: Duration,
    /// Consecutive successes that bring a server marked down back. Default 2.
    pub healthy_after: u32,
    /// Consecutive failures that mark a server down. Default 3.
    pub unhealthy_after: u32,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// `GET path`; a 2xx or 3xx answer passes (`type: http`, the default when `path` is given).
    Http { path: String },
    /// A WebSocket upgrade of `path`; `101` passes (`type: websocket`).
    WebSocket { path: String },
    /// The TCP connect (and TLS handshake for a TLS pool) passes (`type: tcp`, the default without `path`).
    Tcp,
}

/// How the gateway speaks TLS to an upstream pool's servers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// Name sent as SNI and verified against the servers' certificates. Default: each server's host as written.
    pub server_name: Option<String>,
    /// PEM bundle of the CAs the servers' certificates must chain to. Default: the system's roots.
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (testing only; logged at start). Default false.
    pub insecure_skip_verify: bool,
}

/// One backend server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Resolved address.
    pub address: SocketAddr,
    /// The host as written (`api.internal`, `10.0.0.7`), the TLS server name unless the pool sets one.
    pub host: String,
    /// Share of new connections relative to the pool's other servers. Default 1.
    pub weight: NonZeroU32,
    /// Connections the gateway uses on this server at once, counted across workers (WebSockets and HTTP requests
    /// in flight; idle keep-alive connections are bounded by the pool). A full server is skipped; when every
    /// server is full the client gets 503. `None` (default): no cap.
    pub max_connections: Option<NonZeroU32>,
}

/// Load-balancing policy of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Weighted round robin (`round_robin`).
    RoundRobin,
    /// Fewest open connections, weighted (`least_conn`).
    LeastConn,
    /// Consistent choice by a key of the request (`hash` with `hash_key`).
    Hash(HashKey),
}

/// What a `hash` balance hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address (`client_ip`).
    ClientIp,
    /// A request header, name lowercased (`header:X-User`).
    Header(String),
    /// A cookie by name (`cookie:sid`).
    Cookie(String),
}

/// Index of an upstream in [`Config::upstreams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamId(pub usize);

/// Where a route sends matching requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Proxy to an upstream pool.
    Upstream(UpstreamId),
    /// The built-in echo endpoint: WebSocket echo; plain HTTP gets a 200 text answer.
    Echo,
}

/// One route: conditions on the request and what serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Host condition; `None` matches any host.
    pub host: Option<HostMatch>,
    /// Path prefix (plain byte prefix), starts with `/`. Default `/`.
    pub path_prefix: String,
    /// Optional exact header condition.
    pub header: Option<HeaderMatch>,
    /// Upstream or built-in echo.
    pub target: Target,
    /// Frame-level settings for connections on this route.
    pub websocket: WebSocketSettings,
    /// Request header that carries the verified client certificate's subject and SANs to the upstream (mTLS
    /// listeners). Whatever the client sends under this name is always removed. `None`: nothing forwarded.
    pub client_cert_header: Option<String>,
    /// JWT validation for every request on this route (`auth:`); `None`: no authentication.
    pub auth: Option<std::sync::Arc<auth::JwtAuth>>,
    /// New upgrades per client on this route: `limits.per_client` of the route where it sets them, the global
    /// `limits.per_client` otherwise; `None`: not limited.
    pub upgrade_rate: Option<UpgradeRate>,
}

/// A route's header condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name, lowercased.
    pub name: String,
    /// Exact value (case-sensitive).
    pub value: String,
}

/// Per-route WebSocket settings; the gateway enforces them on every frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketSettings {
    /// No frame in either direction for this long: close with 1001 (idle sockets). Default 5m.
    pub idle_timeout: Duration,
    /// Send the gateway's own Ping after this much silence from a peer; `None` (`off`)
    /// disables pings (dead peers). Default 30s.
    pub ping_interval: Option<Duration>,
    /// No Pong within this after a Ping: the peer is dead. Default 10s.
    pub pong_timeout: Duration,
    /// Largest frame payload accepted (memory per frame). Default 1MiB.
    pub max_frame_size: u64,
    /// Largest reassembled message; never below `max_frame_size`. Default 4MiB.
    pub max_message_size: u64,
    /// Accepted `Origin` values, lowercased (cross-site WebSocket hijacking); `None`: any
    /// origin. `*` allows any. Default `None`.
    pub allowed_origins: Option<Vec<String>>,
    /// Subprotocols the client may ask for; `None`: forward what the client asks.
    /// Default `None`.
    pub allowed_subprotocols: Option<Vec<String>>,
    /// Check that text messages are valid UTF-8 (close 1007 otherwise). Default true.
    pub validate_utf8: bool,
    /// Message and byte rates (`websocket.limits:`), key by key over `limits.messages:`. Default: those.
    pub limits: MessageLimits,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketSettings {
            idle_timeout: Duration::from_secs(300),
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            max_frame_size: 1 << 20,
            max_message_size: 4 << 20,
            allowed_origins: None,
            allowed_subprotocols: None,
            validate_utf8: true,
            limits: MessageLimits::default(),
        }
    }
}

/// Parse a route file's text. `file_name` is only used in error messages.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
    parse_in(text, file_name, Path::new(""))
}

/// [`parse`], reading the files the config names (JWT keys) relative to `dir`.
fn parse_in(text: &str, file_name: &str, dir: &Path) -> Result<Config, ConfigError> {
    let index =
        error::PathIndex::build(text).map_err(|((line, column), message)| ConfigError::Syntax {
            file: file_name.to_owned(),
            line,
            column,
            message,
        })?;
    let mut raw: raw::RawConfig = serde_saphyr::from_str(text).map_err(|e| {
        let e = e.without_snippet();
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let path = index.path_at((line, column));
        let mut message = error::reword(&serde_saphyr::DefaultMessageFormatter.format_message(e));
        if path == "upstreams" && message.starts_with("duplicate key") {
            message = message
                .replace("duplicate key", "duplicate upstream name")
                .replace("each key may appear once", "names must be unique");
        }
        ConfigError::Invalid {
            file: file_name.to_owned(),
            line,
            column,
            path,
            message,
        }
    })?;
    auth::set_key_dir(&mut raw, dir);
    convert::config(raw).map_err(|p| {
        let (line, column) = index.pos_of(&p.path);
        ConfigError::Invalid {
            file: file_name.to_owned(),
            line,
            column,
            path: p.path,
            message: p.message,
        }
    })
}

/// [`parse`] without DNS: a server or address written as a name other than `localhost` is an error. For the fuzz
/// target, which must neither send queries nor wait for them.
#[doc(hidden)]
pub fn parse_offline(text: &str, file_name: &str) -> Result<Config, ConfigError> {
    convert::OFFLINE.set(true);
    let parsed = parse(text, file_name);
    convert::OFFLINE.set(false);
    parsed
}

/// Read and parse a route file. Errors name the file as given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: file.clone(),
        source,
    })?;
    let mut config = parse_in(&text, &file, path.parent().unwrap_or(Path::new("")))?;
    if let Some(dir) = path.parent() {
        config.resolve_files(dir);
    }
    Ok(config)
}

/// The 1-based line and column of the node at `yaml_path` (`listeners[0].tls.certificates[1].cert`) in `text`,
/// or of its closest existing ancestor: how the gateway points at a key whose *file* is broken (a certificate that
/// does not load), in the same `FILE:LINE:COLUMN: PATH: MESSAGE` form as [`ConfigError`].
pub fn position_of(text: &str, yaml_path: &str) -> (u64, u64) {
    error::PathIndex::build(text).map_or((1, 1), |index| index.pos_of(yaml_path))
}

impl Config {
    /// Makes relative file names (certificates, keys, CA bundles) relative to `dir`, the route file's folder, so
    /// a file works the same whatever the working directory (systemd starts in `/`).
    pub fn resolve_files(&mut self, dir: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        for tls in self.listeners.iter_mut().filter_map(|l| l.tls.as_mut()) {
            for c in &mut tls.certificates {
                resolve(&mut c.cert);
                resolve(&mut c.key);
            }
            if let Some(auth) = &mut tls.client_auth {
                resolve(&mut auth.ca);
            }
        }
        for ca in self
            .upstreams
            .iter_mut()
            .filter_map(|u| u.tls.as_mut().and_then(|t| t.ca.as_mut()))
        {
            resolve(ca);
        }
    }

    /// A human, multi-line description for `ringway check`: listeners, upstreams with their
    /// servers and policy, and routes in match order with target and WebSocket settings.
    pub fn summary(&self) -> String {
        use units::{format_duration as d, format_size as s};
        let mut out = String::new();
        let workers = self
            .workers
            .map_or_else(|| "one per CPU".to_owned(), |w| w.to_string());
        let driver = match self.driver {
            Driver::Auto => "auto (io_uring, falling back to epoll)",
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        };
        let l = &self.limits;
        let _ = writeln!(out, "workers: {workers}");
        let _ = writeln!(out, "driver: {driver}");
        let _ = writeln!(
            out,
            "limits: handshake {}, request head <= {} / {} headers, {} connections, close wait {}, \
             request body {} + 1s per {}",
            d(l.handshake_timeout),
            s(l.max_header_bytes as u64),
            l.max_headers,
            l.max_connections,
            d(l.close_timeout),
            d(l.body_timeout),
            s(l.body_min_rate),
        );
        if !self.trusted_proxies.is_empty() {
            let list: Vec<String> = self.trusted_proxies.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(out, "trusted proxies: {}", list.join(", "));
        }
        let _ = writeln!(out, "listeners ({}):", self.listeners.len());
        for li in &self.listeners {
            match (&li.tls, li.redirect_https) {
                (Some(tls), _) => {
                    let min = match tls.min_version {
                        TlsVersion::V1_2 => "1.2",
                        TlsVersion::V1_3 => "1.3",
                    };
                    let _ = writeln!(
                        out,
                        "  {} on {} (TLS {min}+, {} certificate(s), unknown SNI: {}, tickets {}, \
                         session cache {}{})",
                        li.name,
                        li.bind,
                        tls.certificates.len(),
                        match tls.unknown_sni {
                            UnknownSni::Default => "default certificate",
                            UnknownSni::Refuse => "refused",
                        },
                        if tls.session_tickets { "on" } else { "off" },
                        tls.session_cache,
                        match &tls.client_auth {
                            None => "",
                            Some(a) if a.required => ", client certificate required",
                            Some(_) => ", client certificate optional",
                        },
                    );
                }
                (None, Some(port)) => {
                    let _ = writeln!(
                        out,
                        "  {} on {} (plain; redirects to https port {port})",
                        li.name, li.bind
                    );
                }
                (None, None) => {
                    let _ = writeln!(out, "  {} on {}", li.name, li.bind);
                }
            }
            if li.proxy_protocol {
                let _ = writeln!(
                    out,
                    "    PROXY protocol header (v1/v2) required within {}",
                    d(l.proxy_protocol_timeout)
                );
            }
        }
        let _ = writeln!(out, "upstreams ({}):", self.upstreams.len());
        for u in &self.upstreams {
            let balance = match &u.balance {
                Balance::RoundRobin => "round_robin".to_owned(),
                Balance::LeastConn => "least_conn".to_owned(),
                Balance::Hash(HashKey::ClientIp) => "hash by client_ip".to_owned(),
                Balance::Hash(HashKey::Header(h)) => format!("hash by header {h}"),
                Balance::Hash(HashKey::Cookie(c)) => format!("hash by cookie {c}"),
            };
            let _ = writeln!(
                out,
                "  {}: {balance}, connect timeout {}, fail cooldown {}, max attempts {}",
                u.name,
                d(u.connect_timeout),
                d(u.fail_cooldown),
                u.max_attempts,
            );
            for srv in &u.servers {
                let _ = writeln!(out, "    {} weight {}", srv.address, srv.weight);
            }
        }
        let names: Vec<&str> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
        let _ = writeln!(out, "routes ({}, in match order):", self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            let host = r
                .host
                .as_ref()
                .map_or_else(|| "any host".to_owned(), |h| format!("host {h}"));
            let header = r
                .header
                .as_ref()
                .map(|h| format!(" if {}: {}", h.name, h.value))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}. {host}, path {}{header} -> {}",
                i + 1,
                r.path_prefix,
                route::describe_target(&r.target, &names),
            );
            let _ = writeln!(out, "     websocket: {}", route::describe_ws(&r.websocket));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listeners: [{name: public, bind: 127.0.0.1:8080}]\n";

    fn cfg(rest: &str) -> Config {
        match parse(&format!("{BASE}{rest}"), "t.yaml") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_apply_when_keys_are_absent() {
        let c = cfg(
            "upstreams:\n  u:\n    servers: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3]\nroutes:\n  - upstream: u\n",
        );
        assert_eq!(c.workers, None);
        assert_eq!(c.driver, Driver::Auto);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.max_header_bytes, 16 * 1024);
        let u = &c.upstreams[0];
        assert_eq!(u.balance, Balance::RoundRobin);
        assert_eq!(u.connect_timeout, Duration::from_secs(3));
        assert_eq!(u.fail_cooldown, Duration::from_secs(10));
        assert_eq!(u.max_attempts, 3);
        assert!(u.servers.iter().all(|s| s.weight.get() == 1));
        let r = c.routes.iter().next().unwrap();
        assert_eq!(r.path_prefix, "/");
        assert_eq!(r.host, None);
        assert_eq!(r.target, Target::Upstream(UpstreamId(0)));
        assert_eq!(r.websocket, WebSocketSettings::default());
        assert_eq!(r.websocket.max_frame_size, 1 << 20);
        assert_eq!(r.websocket.ping_interval, Some(Duration::from_secs(30)));
        assert!(r.websocket.validate_utf8);
    }

    #[test]
    fn admin_and_drain_are_read_and_checked() {
        let c = cfg("routes: [{echo: true}]\n");
        assert_eq!(c.admin, None);
        assert_eq!(c.drain, Drain::default());
        let c = cfg(
            "admin: {bind: 127.0.0.1:9900}\ndrain: {period: 5s, timeout: 10s, close_code: service_restart}\nroutes: [{echo: true}]\n",
        );
        assert_eq!(c.admin.map(|a| a.bind.port()), Some(9900));
        assert_eq!(c.drain.period, Duration::from_secs(5));
        assert_eq!(c.drain.close_code, 1012);
        // A period longer than the default timeout stretches the timeout with it.
        let c = cfg("drain: {period: 90s}\nroutes: [{echo: true}]\n");
        assert_eq!(c.drain.timeout, Duration::from_secs(90));
        for (bad, path) in [
            ("drain: {period: 10s, timeout: 5s}", "drain.timeout"),
            ("drain: {close_code: 1000}", "drain.close_code"),
            ("admin: {bind: 127.0.0.1:8080}", "admin.bind"),
            ("admin: {}", "admin.bind"),
        ] {
            let err = parse(
                &format!("{BASE}{bad}\nroutes: [{{echo: true}}]\n"),
                "t.yaml",
            )
            .expect_err(bad)
            .to_string();
            assert!(err.contains(path), "{bad}: {err}");
        }
    }

    #[test]
    fn health_checks_are_read_and_checked() {
        let c = cfg(
            "upstreams:\n  u:\n    servers: [127.0.0.1:1]\n    health: {path: /h, interval: 1s}\nroutes: [{upstream: u}]\n",
        );
        let h = c.upstreams[0].health.clone().expect("health");
        assert_eq!(h.kind, HealthKind::Http { path: "/h".into() });
        assert_eq!(
            (h.interval, h.timeout),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
        assert_eq!((h.healthy_after, h.unhealthy_after), (2, 3));
        let c = cfg(
            "upstreams:\n  u:\n    servers: [127.0.0.1:1]\n    health: {}\nroutes: [{upstream: u}]\n",
        );
        assert_eq!(
            c.upstreams[0].health.as_ref().map(|h| h.kind.clone()),
            Some(HealthKind::Tcp)
        );
        for bad in [
            "{type: tcp, path: /x}",
            "{path: x}",
            "{type: ping}",
            "{unhealthy_after: 0}",
        ] {
            let text = format!(
                "{BASE}upstreams:\n  u:\n    servers: [127.0.0.1:1]\n    health: {bad}\nroutes: [{{upstream: u}}]\n"
            );
            let err = parse(&text, "t.yaml").expect_err(bad).to_string();
            assert!(err.contains("upstreams.u.health"), "{bad}: {err}");
        }
    }

    #[test]
    fn null_sections_mean_defaults() {
        let c = cfg("workers:\nlimits:\nupstreams:\nroutes:\n  - echo: true\n    websocket:\n");
        assert_eq!(c.limits, Limits::default());
        assert!(c.upstreams.is_empty());
        assert_eq!(c.routes.len(), 1);
    }

    #[test]
    fn explicit_values_are_parsed() {
        let c = cfg(concat!(
            "workers: 3\ndriver: io_uring\n",
            "limits: {handshake_timeout: 500ms, max_header_bytes: 8KB, max_headers: 10, ",
            "max_connections: 7, close_timeout: 1m, body_timeout: 3s, body_min_rate: 2KiB}\n",
            "trusted_proxies: [10.0.0.0/8, '2001:db8::/32', 192.0.2.7]\n",
            "upstreams:\n  a:\n    servers: [{address: '[::1]:9', weight: 5}, localhost:10]\n",
            "    balance: hash\n    hash_key: header:X-User\n    fail_cooldown: 0s\n",
            "    max_attempts: 1\n",
            "  b: {servers: [127.0.0.1:11], balance: least_conn}\n",
            "routes:\n  - {host: Chat.Example.com, path: /ws, upstream: b, ",
            "header: {name: X-Env, value: Beta}, websocket: {ping_interval: off, ",
            "max_frame_size: 16KiB, max_message_size: 16KiB, validate_utf8: false, ",
            "allowed_origins: ['HTTPS://App.example.com', '*'], allowed_subprotocols: [v1]}}\n",
        ));
        assert_eq!(c.workers.map(NonZeroUsize::get), Some(3));
        assert_eq!(c.driver, Driver::IoUring);
        assert_eq!(c.limits.handshake_timeout, Duration::from_millis(500));
        assert_eq!(c.limits.max_header_bytes, 8000);
        assert_eq!(c.limits.max_headers, 10);
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.limits.body_timeout, Duration::from_secs(3));
        assert_eq!(c.limits.body_min_rate, 2048);
        let trusted: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(trusted, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        assert_eq!(c.limits.close_timeout, Duration::from_secs(60));
        let a = &c.upstreams[0];
        assert_eq!(a.balance, Balance::Hash(HashKey::Header("x-user".into())));
        assert_eq!(a.servers[0].address, "[::1]:9".parse().unwrap());
        assert_eq!(a.servers[0].weight.get(), 5);
        assert_eq!(a.servers[1].address, "127.0.0.1:10".parse().unwrap());
        assert_eq!(a.fail_cooldown, Duration::ZERO);
        assert_eq!(a.max_attempts, 1);
        assert_eq!(c.upstreams[1].balance, Balance::LeastConn);
        let r = c.routes.iter().next().unwrap();
        assert_eq!(r.host, Some(HostMatch::Exact("chat.example.com".into())));
        assert_eq!(r.target, Target::Upstream(UpstreamId(1)));
        assert_eq!(
            r.header,
            Some(HeaderMatch {
                name: "x-env".into(),
                value: "Beta".into()
            })
        );
        let ws = &r.websocket;
        assert_eq!(ws.ping_interval, None);
        assert_eq!(ws.max_frame_size, 16 * 1024);
        assert!(!ws.validate_utf8);
        assert_eq!(
            ws.allowed_origins,
            Some(vec!["https://app.example.com".to_owned(), "*".to_owned()])
        );
        assert_eq!(ws.allowed_subprotocols, Some(vec!["v1".to_owned()]));
    }

    #[test]
    fn default_message_size_follows_a_larger_frame_size() {
        let c = cfg("routes: [{echo: true, websocket: {max_frame_size: 8MiB}}]\n");
        let ws = &c.routes.iter().next().unwrap().websocket;
        assert_eq!(ws.max_message_size, 8 << 20);
    }

    #[test]
    fn parsed_routes_are_in_match_order() {
        let c = cfg(concat!(
            "upstreams: {u: {servers: [127.0.0.1:1]}}\n",
            "routes:\n",
            "  - {path: /, echo: true}\n",
            "  - {path: /ws, upstream: u}\n",
            "  - {host: '*.example.com', path: /, echo: true}\n",
            "  - {host: a.example.com, path: /, upstream: u}\n",
        ));
        let order: Vec<(Option<String>, &str)> = c
            .routes
            .iter()
            .map(|r| {
                (
                    r.host.as_ref().map(ToString::to_string),
                    r.path_prefix.as_str(),
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![
                (Some("a.example.com".to_owned()), "/"),
                (Some("*.example.com".to_owned()), "/"),
                (None, "/ws"),
                (None, "/"),
            ]
        );
        let found = c.routes.find(Some("b.example.com:443"), "/ws", |_| None);
        assert_eq!(found.map(|r| r.target), Some(Target::Echo));
        let found = c.routes.find(Some("other.org"), "/ws/x", |_| None);
        assert_eq!(
            found.map(|r| r.target),
            Some(Target::Upstream(UpstreamId(0)))
        );
    }

    #[test]
    fn summary_lists_everything() {
        let c = cfg(
            "upstreams: {chat: {servers: [127.0.0.1:9001]}}\nroutes: [{path: /c, upstream: chat}, {path: /e, echo: true}]\n",
        );
        let s = c.summary();
        for needle in [
            "public on 127.0.0.1:8080",
            "chat: round_robin",
            "127.0.0.1:9001 weight 1",
            "path /c -> upstream chat",
            "path /e -> echo (built-in)",
            "ping 30s",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
        }
    }

    #[test]
    fn errors_point_at_the_offending_value() {
        let text = format!("{BASE}routes:\n  - path: /\n    upstream: nope\n");
        let err = parse(&text, "x.yaml").unwrap_err();
        assert_eq!(err.position(), Some((4, 15)));
        assert_eq!(err.path(), Some("routes[0].upstream"));
        assert_eq!(
            err.to_string(),
            "x.yaml:4:15: routes[0].upstream: unknown upstream `nope` (no upstreams are defined)"
        );
    }

    #[test]
    fn per_client_limits_default_and_routes_inherit_or_override_the_upgrade_rate() {
        let c = cfg("routes:\n  - echo: true\n");
        assert_eq!(c.limits.per_client, PerClientLimits::default());
        assert_eq!(c.limits.per_client.max_connections, 256);
        let only = c.routes.iter().next().unwrap();
        assert_eq!(only.upgrade_rate, Some(UpgradeRate::DEFAULT));
        let c = cfg(concat!(
            "limits: {per_client: {upgrades_per_second: 5, upgrade_burst: 7, exempt: []}}\n",
            "routes:\n",
            "  - {path: /a, echo: true, limits: {per_client: {upgrade_burst: 2}}}\n",
            "  - {path: /b, echo: true, limits: {per_client: {upgrades_per_second: 0}}}\n",
            "  - {path: /c, echo: true}\n",
        ));
        assert!(c.limits.per_client.exempt.is_empty());
        let rate = |p: &str| {
            c.routes
                .iter()
                .find(|r| r.path_prefix == p)
                .unwrap()
                .upgrade_rate
        };
        let r = |n, b| {
            Some(UpgradeRate {
                per_second: NonZeroU32::new(n).unwrap(),
                burst: NonZeroU32::new(b).unwrap(),
            })
        };
        assert_eq!(rate("/a"), r(5, 2));
        assert_eq!(rate("/b"), None);
        assert_eq!(rate("/c"), r(5, 7));
        let c = cfg(
            "limits: {per_client: {upgrades_per_second: 0}}\nroutes:\n  - {echo: true, limits: {per_client: {upgrades_per_second: 3}}}\n",
        );
        assert_eq!(c.routes.iter().next().unwrap().upgrade_rate, r(3, 50));
    }
}
