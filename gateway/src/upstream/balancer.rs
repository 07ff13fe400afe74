//! Server selection for one upstream pool on one worker: weighted round robin, least connections and consistent
//! hashing, plus passive health (a server that failed is skipped for the pool's `fail_cooldown`, unless every
//! server is cooling: then they are all tried, so passive health never turns a pool into 503s for everyone).
//!
//! Owns: the per-server counters and cooldown deadlines, the smooth weighted round-robin state and the hash ring.
//! Does not own: sockets or connecting (see `super::connect`), nor clocks — every time-dependent call takes `now`,
//! so the policy is deterministic and unit-tested without sleeping. One `Balancer` per upstream per worker, so state
//! lives in `Cell`/`RefCell` (`!Sync` by design); workers balance independently. The one exception is each server's
//! open-connection counter for `servers[].max_connections` (`crate::limits::servers`): shared by all workers, so the
//! cap holds for the process; a server at its cap is never picked, not even as a last resort.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ringway_config::{Balance, HashKey, Upstream};

use crate::http::head::{Headers, RequestHead};

/// Virtual nodes on the hash ring per unit of weight.
const VNODES_PER_WEIGHT: u64 = 100;
/// Upper bound of virtual nodes for one server (keeps the ring small with huge weights; weights above
/// `MAX_VNODES / VNODES_PER_WEIGHT` all get the same share of the ring).
const MAX_VNODES: u64 = 10_000;

/// Chooses servers of one upstream pool.
pub(crate) struct Balancer {
    /// The pool's name, for the log lines of health changes.
    name: String,
    servers: Vec<ServerState>,
    policy: Policy,
    fail_cooldown: Duration,
    /// Smooth weighted round robin: the running "current weight" of each server (nginx's algorithm).
    current: RefCell<Vec<i64>>,
    /// Hash ring of `(point, server)`, sorted by point; empty unless the policy is hashing.
    ring: Vec<(u64, usize)>,
    /// This pool's metric cells on the worker (connect latency, health), when counted.
    metrics: Option<(std::sync::Arc<crate::metrics::WorkerMetrics>, usize)>,
    /// Active health checks' verdicts (this pool's index there), when the pool is checked.
    health: Option<(std::sync::Arc<super::health::HealthBoard>, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    RoundRobin,
    LeastConn,
    Hash,
}

struct ServerState {
    address: SocketAddr,
    weight: u32,
    /// Open connections / in-flight requests, maintained by [`ActiveGuard`].
    active: Cell<usize>,
    /// Skipped until this instant after a failure.
    cooling_until: Cell<Option<Instant>>,
    /// `max_connections` of the server (`u32::MAX`: none).
    cap: u32,
    /// Open connections of every worker on this server (see `crate::limits::servers`).
    open: Arc<AtomicU32>,
}

impl Balancer {
    /// A balancer for `upstream`'s servers and policy.
    pub(crate) fn new(upstream: &Upstream) -> Self {
        let servers: Vec<ServerState> = upstream
            .servers
            .iter()
            .map(|s| ServerState {
                address: s.address,
                weight: s.weight.get(),
                active: Cell::new(0),
                cooling_until: Cell::new(None),
                cap: s.max_connections.map_or(u32::MAX, |c| c.get()),
                open: Arc::default(),
            })
            .collect();
        let policy = match upstream.balance {
            Balance::RoundRobin => Policy::RoundRobin,
            Balance::LeastConn => Policy::LeastConn,
            Balance::Hash(_) => Policy::Hash,
        };
        let ring = if policy == Policy::Hash {
            build_ring(&servers)
        } else {
            Vec::new()
        };
        Self {
            name: upstream.name.clone(),
            metrics: None,
            health: None,
            current: RefCell::new(vec![0; servers.len()]),
            servers,
            policy,
            fail_cooldown: upstream.fail_cooldown,
            ring,
        }
    }

    /// Chooses a server that is not in `tried`, preferring those not cooling down at `now`; `None` when every
    /// server was tried.
    ///
    /// When every untried server is cooling, one of them is chosen all the same (Envoy's panic routing; nginx never
    /// ejects a lone server): a cooldown steers traffic to healthy servers, it must not answer 503 for a whole pool
    /// because of one refused connect.
    ///
    /// `key` is the request's hash input (see [`hash_input`]); it is used only by hash pools, which fall back to
    /// round robin when it is `None`.
    pub(crate) fn pick(&self, key: Option<u64>, tried: &[usize], now: Instant) -> Option<usize> {
        self.pick_among(key, |i| {
            !tried.contains(&i)
                && !self.is_full(i)
                && !self.is_cooling(i, now)
                && self.passes_checks(i)
        })
        .or_else(|| self.pick_among(key, |i| !tried.contains(&i) && !self.is_full(i)))
    }

    /// Counts connections in the process-wide counters `counts` (indexed like the servers) instead of this
    /// balancer's own, so `max_connections` holds across workers and config generations.
    pub(crate) fn with_counts(mut self, counts: Vec<Arc<AtomicU32>>) -> Self {
        for (s, c) in self.servers.iter_mut().zip(counts) {
            s.open = c;
        }
        self
    }

    /// Whether `server` holds its `max_connections`.
    fn is_full(&self, server: usize) -> bool {
        self.servers
            .get(server)
            .is_some_and(|s| s.open.load(Ordering::Relaxed) >= s.cap)
    }

    /// Whether a server not in `tried` was left out because it is full (so "no server" means 503, come back).
    pub(crate) fn has_full(&self, tried: &[usize]) -> bool {
        (0..self.servers.len()).any(|i| !tried.contains(&i) && self.is_full(i))
    }

    /// A request or upgrade got 503 because every server was full.
    pub(crate) fn count_full(&self) {
        if let Some(m) = self.upstream_metrics() {
            m.full.inc();
        }
    }

    /// Whether `server` passes its active health checks (always, for a pool without them).
    fn passes_checks(&self, server: usize) -> bool {
        self.health
            .as_ref()
            .is_none_or(|(board, pool)| board.is_up(*pool, server))
    }

    /// Reads active health verdicts from `board` (this pool's index there is `pool`).
    pub(crate) fn with_health(
        mut self,
        board: std::sync::Arc<super::health::HealthBoard>,
        pool: usize,
    ) -> Self {
        self.health = Some((board, pool));
        self
    }

    fn pick_among(&self, key: Option<u64>, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        match (self.policy, key) {
            (Policy::Hash, Some(key)) => self.pick_hash(key, eligible),
            (Policy::LeastConn, _) => self.pick_least_conn(eligible),
            _ => self.pick_round_robin(eligible),
        }
    }

    /// Counts this pool's connects and health in `metrics` (the pool's index there is `index`).
    pub(crate) fn with_metrics(
        mut self,
        metrics: std::sync::Arc<crate::metrics::WorkerMetrics>,
        index: usize,
    ) -> Self {
        self.metrics = Some((metrics, index));
        self
    }

    fn upstream_metrics(&self) -> Option<&crate::metrics::worker::UpstreamMetrics> {
        self.metrics
            .as_ref()
            .and_then(|(m, i)| m.upstreams.get(*i))
            .map(|m| &**m)
    }

    /// A connect (TCP, and TLS for a TLS pool) to a server took `took`, or failed (`None`).
    pub(crate) fn count_connect(&self, took: Option<Duration>) {
        if let Some(m) = self.upstream_metrics() {
            match took {
                Some(d) => m.connect.observe(d),
                None => m.connect_failures.inc(),
            }
        }
    }

    fn set_healthy(&self, server: usize, healthy: bool) {
        if let Some(g) = self.upstream_metrics().and_then(|m| m.healthy.get(server)) {
            g.set(i64::from(healthy));
        }
    }

    /// After a reload: servers `old` also had (same address) keep their passive health state.
    pub(crate) fn inherit_health(&self, old: &Balancer) {
        for (i, s) in self.servers.iter().enumerate() {
            if let Some(o) = old.servers.iter().find(|o| o.address == s.address) {
                s.cooling_until.set(o.cooling_until.get());
                self.set_healthy(i, o.cooling_until.get().is_none());
            }
        }
    }

    /// Passive health: `server` failed at `now` and is skipped until `now + fail_cooldown`.
    /// A change of state (healthy to cooling down) is logged at info, once per worker.
    pub(crate) fn mark_failed(&self, server: usize, now: Instant) {
        if let Some(s) = self.servers.get(server)
            && !self.fail_cooldown.is_zero()
        {
            if s.cooling_until.get().is_none_or(|until| until <= now) {
                tracing::info!(
                    upstream = %self.name,
                    server = %s.address,
                    cooldown_ms = self.fail_cooldown.as_millis() as u64,
                    "upstream server marked down (passive health)"
                );
                self.set_healthy(server, false);
            }
            s.cooling_until.set(Some(now + self.fail_cooldown));
        }
    }

    /// `server` worked: any cooldown ends now.
    /// A server that was marked down is logged back up at info.
    pub(crate) fn mark_ok(&self, server: usize) {
        if let Some(s) = self.servers.get(server)
            && s.cooling_until.take().is_some()
        {
            tracing::info!(upstream = %self.name, server = %s.address, "upstream server back up");
            self.set_healthy(server, true);
        }
    }

    /// Counts one active connection (or request) on `server` until the guard is dropped (used by least_conn and
    /// `max_connections`); `None` when the server holds its `max_connections` (taken since it was picked).
    pub(crate) fn acquire(self: &Rc<Self>, server: usize) -> Option<ActiveGuard> {
        let s = self.servers.get(server)?;
        s.open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < s.cap).then_some(n + 1)
            })
            .ok()?;
        s.active.set(s.active.get() + 1);
        Some(ActiveGuard {
            balancer: Rc::clone(self),
            server,
        })
    }

    /// The address of `server`.
    ///
    /// # Panics
    /// If `server` is not an index returned by [`Balancer::pick`] (`server >= len()`).
    pub(crate) fn address(&self, server: usize) -> SocketAddr {
        self.servers[server].address
    }

    /// Number of servers in the pool.
    pub(crate) fn server_count(&self) -> usize {
        self.servers.len()
    }

    #[cfg(test)]
    /// Active connections currently counted on `server`.
    pub(crate) fn active(&self, server: usize) -> usize {
        self.servers.get(server).map_or(0, |s| s.active.get())
    }

    fn is_cooling(&self, server: usize, now: Instant) -> bool {
        match self.servers[server].cooling_until.get() {
            Some(until) if now < until => true,
            Some(_) => {
                self.servers[server].cooling_until.set(None);
                false
            }
            None => false,
        }
    }

    /// Smooth weighted round robin (nginx): every eligible server gains its weight, the largest current weight
    /// wins and pays back the total. Over any window of `sum(weights)` picks each server is chosen `weight` times,
    /// interleaved rather than in bursts.
    fn pick_round_robin(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        self.smooth_wrr(eligible)
    }

    /// Fewest active connections relative to weight; ties go through smooth weighted round robin so equal loads
    /// still rotate in proportion to weight.
    fn pick_least_conn(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        // Find the smallest active/weight ratio among eligible servers (compared by cross-multiplication).
        let mut best: Option<usize> = None;
        for i in (0..self.servers.len()).filter(|&i| eligible(i)) {
            match best {
                Some(b) if !self.load_less(i, b) => {}
                _ => best = Some(i),
            }
        }
        let best = best?;
        self.smooth_wrr(|i| eligible(i) && !self.load_less(best, i))
    }

    /// Whether server `a` is strictly less loaded than `b` (active / weight).
    fn load_less(&self, a: usize, b: usize) -> bool {
        let (sa, sb) = (&self.servers[a], &self.servers[b]);
        (sa.active.get() as u128) * u128::from(sb.weight)
            < (sb.active.get() as u128) * u128::from(sa.weight)
    }

    fn smooth_wrr(&self, candidate: impl Fn(usize) -> bool) -> Option<usize> {
        let mut current = self.current.borrow_mut();
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (i, s) in self.servers.iter().enumerate() {
            if !candidate(i) {
                continue;
            }
            let w = i64::from(s.weight);
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    /// Walks the ring clockwise from `key` to the first eligible server. Removing (or cooling) a server only moves
    /// the keys that landed on its virtual nodes.
    fn pick_hash(&self, key: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let start = self.ring.partition_point(|&(point, _)| point < key);
        let mut seen = vec![false; self.servers.len()];
        let mut unseen = self.servers.len();
        for step in 0..self.ring.len() {
            let (_, server) = self.ring[(start + step) % self.ring.len()];
            if seen[server] {
                continue;
            }
            if eligible(server) {
                return Some(server);
            }
            seen[server] = true;
            unseen -= 1;
            if unseen == 0 {
                break;
            }
        }
        None
    }
}

/// Keeps one connection counted as active on a server; dropping it decrements the count.
pub(crate) struct ActiveGuard {
    balancer: Rc<Balancer>,
    server: usize,
}

impl std::fmt::Debug for ActiveGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveGuard")
            .field("server", &self.server)
            .finish()
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if let Some(s) = self.balancer.servers.get(self.server) {
            s.active.set(s.active.get().saturating_sub(1));
            s.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The hash input of a request for a `hash` pool: the client IP, a header's value or a cookie's value, hashed to
/// 64 bits with a fixed (process- and worker-independent) function. `None` when the header or cookie is absent;
/// the caller then falls back to round robin.
pub(crate) fn hash_input(key: &HashKey, client_ip: IpAddr, head: &RequestHead) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(match client_ip {
            IpAddr::V4(v4) => stable_hash(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => stable_hash(&v4.octets()),
                None => stable_hash(&v6.octets()),
            },
        }),
        HashKey::Header(name) => head.header(name).map(stable_hash),
        HashKey::Cookie(name) => cookie_value(head, name).map(stable_hash),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (cookie names are case-sensitive).
fn cookie_value<'a>(head: &'a RequestHead, name: &str) -> Option<&'a [u8]> {
    head.headers_named("cookie")
        .flat_map(|v| v.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (n, v) = (&pair[..eq], &pair[eq + 1..]);
            (n.trim_ascii() == name.as_bytes()).then(|| {
                let v = v.trim_ascii();
                v.strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v)
            })
        })
}

fn build_ring(servers: &[ServerState]) -> Vec<(u64, usize)> {
    let mut ring = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let vnodes = (u64::from(s.weight) * VNODES_PER_WEIGHT).clamp(1, MAX_VNODES);
        // Points derive from the address, not the index, so reordering the server list moves no keys.
        let addr = s.address.to_string();
        for v in 0..vnodes {
            let mut input = Vec::with_capacity(addr.len() + 9);
            input.extend_from_slice(addr.as_bytes());
            input.push(b'#');
            input.extend_from_slice(&v.to_le_bytes());
            ring.push((stable_hash(&input), i));
        }
    }
    ring.sort_unstable();
    ring
}

/// FNV-1a followed by the splitmix64 finalizer: stable across processes and workers, well spread.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use ringway_config::Server;

    use super::*;
    use crate::http::head::{HeadLimits, parse_request};

    fn upstream(weights: &[u32], balance: Balance) -> Upstream {
        Upstream {
            name: "u".into(),
            servers: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Server {
                    address: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                    host: "127.0.0.1".into(),
                    weight: NonZeroU32::new(w).unwrap(),
                    max_connections: None,
                })
                .collect(),
            balance,
            connect_timeout: Duration::from_secs(1),
            fail_cooldown: Duration::from_secs(10),
            max_attempts: weights.len(),
            tls: None,
            health: None,
        }
    }

    fn counts(b: &Balancer, n: usize, now: Instant) -> Vec<usize> {
        let mut c = vec![0; b.server_count()];
        for _ in 0..n {
            c[b.pick(None, &[], now).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn full_servers_are_skipped_even_as_a_last_resort_and_the_cap_is_shared_by_workers() {
        let mut up = upstream(&[1, 1], Balance::RoundRobin);
        up.servers[0].max_connections = NonZeroU32::new(1);
        up.servers[1].max_connections = NonZeroU32::new(2);
        let counts: Vec<Arc<AtomicU32>> = vec![Arc::default(), Arc::default()];
        // Two workers' balancers over the same counters.
        let w1 = Rc::new(Balancer::new(&up).with_counts(counts.clone()));
        let w2 = Rc::new(Balancer::new(&up).with_counts(counts.clone()));
        let now = Instant::now();
        let a = w1.acquire(0).unwrap();
        assert!(w2.acquire(0).is_none(), "server 0 is full for every worker");
        for _ in 0..4 {
            assert_eq!(w2.pick(None, &[], now), Some(1));
        }
        let b = w2.acquire(1).unwrap();
        let _c = w1.acquire(1).unwrap();
        // Everything is full: no pick, not even the cooling-down fallback, and the caller can tell why.
        w1.mark_failed(1, now);
        assert_eq!(w1.pick(None, &[], now), None);
        assert!(w1.has_full(&[]));
        drop(a);
        assert_eq!(w1.pick(None, &[], now), Some(0));
        drop(b);
        assert_eq!(counts[1].load(Ordering::Relaxed), 1);
        assert!(!w1.has_full(&[]));
    }

    #[test]
    fn round_robin_follows_weights_exactly_and_interleaves() {
        let b = Balancer::new(&upstream(&[5, 1, 1], Balance::RoundRobin));
        let now = Instant::now();
        let seq: Vec<usize> = (0..7).map(|_| b.pick(None, &[], now).unwrap()).collect();
        // nginx's smooth WRR sequence for weights {5,1,1}: a a b a c a a
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&b, 700, now), vec![500, 100, 100]);
    }

    #[test]
    fn equal_weights_rotate() {
        let b = Balancer::new(&upstream(&[1, 1, 1], Balance::RoundRobin));
        let now = Instant::now();
        let seq: Vec<usize> = (0..6).map(|_| b.pick(None, &[], now).unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn tried_servers_are_skipped_and_exhaustion_is_none() {
        let b = Balancer::new(&upstream(&[1, 1], Balance::RoundRobin));
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(b.pick(None, &[0], now), Some(1));
        }
        assert_eq!(b.pick(None, &[0, 1], now), None);
    }

    #[test]
    fn cooldown_skips_a_failed_server_until_it_expires() {
        let b = Balancer::new(&upstream(&[1, 1], Balance::RoundRobin));
        let t0 = Instant::now();
        b.mark_failed(0, t0);
        assert_eq!(counts(&b, 10, t0 + Duration::from_secs(9)), vec![0, 10]);
        b.mark_failed(1, t0);
        assert_eq!(
            counts(&b, 10, t0 + Duration::from_secs(9)),
            vec![5, 5],
            "all cooling: all are tried rather than none"
        );
        assert_eq!(b.pick(None, &[0], t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(b.pick(None, &[0, 1], t0 + Duration::from_secs(9)), None);
        assert_eq!(
            counts(&b, 10, t0 + Duration::from_secs(10)),
            vec![5, 5],
            "cooldown over"
        );
    }

    #[test]
    fn mark_ok_ends_a_cooldown_and_zero_cooldown_never_skips() {
        let b = Balancer::new(&upstream(&[1, 1], Balance::RoundRobin));
        let now = Instant::now();
        b.mark_failed(0, now);
        b.mark_ok(0);
        assert_eq!(counts(&b, 4, now), vec![2, 2]);

        let mut u = upstream(&[1, 1], Balance::RoundRobin);
        u.fail_cooldown = Duration::ZERO;
        let b = Balancer::new(&u);
        b.mark_failed(0, now);
        assert_eq!(counts(&b, 4, now), vec![2, 2]);
    }

    #[test]
    fn least_conn_prefers_the_least_loaded_server() {
        let b = Rc::new(Balancer::new(&upstream(&[1, 1, 1], Balance::LeastConn)));
        let now = Instant::now();
        let _g0 = b.acquire(0).unwrap();
        let _g0b = b.acquire(0).unwrap();
        let _g1 = b.acquire(1).unwrap();
        assert_eq!(b.pick(None, &[], now), Some(2));
        let g2 = b.acquire(2).unwrap();
        let _g2b = b.acquire(2).unwrap();
        assert_eq!(b.pick(None, &[], now), Some(1));
        drop(g2);
        assert_eq!(b.active(2), 1);
        // 1 and 2 tie at one connection each; both get picked in turn.
        let picks: Vec<usize> = (0..4).map(|_| b.pick(None, &[], now).unwrap()).collect();
        assert!(
            picks.contains(&1) && picks.contains(&2) && !picks.contains(&0),
            "{picks:?}"
        );
    }

    #[test]
    fn least_conn_weighs_load_and_breaks_ties_by_weight() {
        let b = Rc::new(Balancer::new(&upstream(&[3, 1], Balance::LeastConn)));
        let now = Instant::now();
        // All idle: ties rotate in proportion to weight.
        assert_eq!(counts(&b, 400, now), vec![300, 100]);
        // Two connections on a weight-3 server are less load than one on a weight-1 server.
        let _a = b.acquire(0).unwrap();
        let _b = b.acquire(0).unwrap();
        let _c = b.acquire(1).unwrap();
        assert_eq!(b.pick(None, &[], now), Some(0));
        assert_eq!(
            b.pick(None, &[0], now),
            Some(1),
            "tried skipped even when least loaded"
        );
    }

    #[test]
    fn guards_count_active_connections() {
        let b = Rc::new(Balancer::new(&upstream(&[1], Balance::LeastConn)));
        let g = b.acquire(0).unwrap();
        let h = b.acquire(0).unwrap();
        assert_eq!(b.active(0), 2);
        drop(g);
        drop(h);
        assert_eq!(b.active(0), 0);
    }

    #[test]
    fn hash_is_sticky_and_spreads_by_weight() {
        let b = Balancer::new(&upstream(&[1, 1, 2], Balance::Hash(HashKey::ClientIp)));
        let now = Instant::now();
        let mut c = [0usize; 3];
        for k in 0..20_000u64 {
            let key = stable_hash(&k.to_le_bytes());
            let s = b.pick(Some(key), &[], now).unwrap();
            assert_eq!(
                b.pick(Some(key), &[], now),
                Some(s),
                "same key, same server"
            );
            c[s] += 1;
        }
        // Expected shares 25% / 25% / 50%; allow generous slack for ring variance.
        assert!((3_500..6_500).contains(&c[0]), "{c:?}");
        assert!((3_500..6_500).contains(&c[1]), "{c:?}");
        assert!((8_000..12_000).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn hash_moves_only_the_failed_servers_keys() {
        let b = Balancer::new(&upstream(&[1, 1, 1, 1], Balance::Hash(HashKey::ClientIp)));
        let t0 = Instant::now();
        let keys: Vec<u64> = (0..5_000u64)
            .map(|k| stable_hash(&k.to_be_bytes()))
            .collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|&k| b.pick(Some(k), &[], t0).unwrap())
            .collect();
        b.mark_failed(2, t0);
        let during: Vec<usize> = keys
            .iter()
            .map(|&k| b.pick(Some(k), &[], t0).unwrap())
            .collect();
        let mut moved = 0;
        for (x, y) in before.iter().zip(&during) {
            if *x == 2 {
                assert_ne!(*y, 2);
                moved += 1;
            } else {
                assert_eq!(x, y, "keys of healthy servers stay put");
            }
        }
        assert!(moved > 0);
        // The same holds for `tried` (a retry within one request).
        for (&k, &x) in keys.iter().zip(&before) {
            let retry = b.pick(Some(k), &[x], t0).unwrap();
            assert_ne!(retry, x);
        }
        let after: Vec<usize> = keys
            .iter()
            .map(|&k| b.pick(Some(k), &[], t0 + Duration::from_secs(11)).unwrap())
            .collect();
        assert_eq!(before, after, "keys return after the cooldown");
    }

    #[test]
    fn hash_without_key_falls_back_to_round_robin() {
        let b = Balancer::new(&upstream(
            &[1, 1],
            Balance::Hash(HashKey::Header("x-user".into())),
        ));
        assert_eq!(counts(&b, 4, Instant::now()), vec![2, 2]);
    }

    #[test]
    fn ring_is_independent_of_server_order() {
        let u = upstream(&[1, 1, 1], Balance::Hash(HashKey::ClientIp));
        let mut rev = u.clone();
        rev.servers.reverse();
        let (a, b) = (Balancer::new(&u), Balancer::new(&rev));
        let now = Instant::now();
        for k in 0..1000u64 {
            let key = stable_hash(&k.to_le_bytes());
            let sa = a.address(a.pick(Some(key), &[], now).unwrap());
            let sb = b.address(b.pick(Some(key), &[], now).unwrap());
            assert_eq!(sa, sb);
        }
    }

    fn request(raw: &[u8]) -> RequestHead {
        parse_request(
            raw,
            HeadLimits {
                max_bytes: 4096,
                max_headers: 16,
            },
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn hash_input_reads_ip_header_and_cookie() {
        let head = request(
            b"GET / HTTP/1.1\r\nX-User: alice\r\nCookie: a=1; sid=\"xyz\"\r\nCookie: b=2\r\n\r\n",
        );
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            hash_input(&HashKey::ClientIp, ip, &head),
            hash_input(&HashKey::ClientIp, ip, &head)
        );
        assert_ne!(
            hash_input(&HashKey::ClientIp, ip, &head),
            hash_input(&HashKey::ClientIp, ip2, &head)
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            hash_input(&HashKey::ClientIp, mapped, &head),
            hash_input(&HashKey::ClientIp, ip, &head)
        );

        let user = hash_input(&HashKey::Header("x-user".into()), ip, &head);
        assert_eq!(user, Some(stable_hash(b"alice")));
        assert_eq!(
            hash_input(&HashKey::Header("x-none".into()), ip, &head),
            None
        );

        assert_eq!(
            hash_input(&HashKey::Cookie("sid".into()), ip, &head),
            Some(stable_hash(b"xyz"))
        );
        assert_eq!(
            hash_input(&HashKey::Cookie("b".into()), ip, &head),
            Some(stable_hash(b"2"))
        );
        assert_eq!(
            hash_input(&HashKey::Cookie("SID".into()), ip, &head),
            None,
            "cookie names are case-sensitive"
        );
        assert_eq!(hash_input(&HashKey::Cookie("si".into()), ip, &head), None);
    }
}
