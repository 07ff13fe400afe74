//! What one worker counts: a fixed set of cells per route, per upstream and per upstream server, laid out when the
//! worker starts from the config (so label values are bounded by the config, never by client input).
//!
//! Owns: the metric families and their label tables (statuses, close codes, directions). Does not own: where the
//! events happen (the callers), or how the scrape renders them (`super::expose`).

use std::sync::Arc;

use ringway_config::Config;

use super::cells::{Counter, DURATION_BOUNDS, Gauge, Histogram, LATENCY_BOUNDS};

/// Statuses an upgrade attempt is counted under; anything else is `other`.
pub(crate) const UPGRADE_STATUSES: &[u16] = &[
    101, 400, 401, 403, 404, 405, 408, 413, 426, 429, 431, 500, 502, 503, 504,
];
/// Close codes counted by value; anything else is `other`. 1005: a Close frame without a code; 1006: the side
/// disconnected without a Close frame.
pub(crate) const CLOSE_CODES: &[u16] = &[
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
];
/// Who sent a Close: the client, the upstream, or the gateway itself (to either side).
pub(crate) const CLOSE_SOURCES: [&str; 3] = ["client", "upstream", "gateway"];
/// Index of [`CLOSE_SOURCES`] for the gateway's own closes.
pub(crate) const FROM_GATEWAY: usize = 2;
/// Directions of relayed traffic, indexed like `SideId::index()` of the source side.
pub(crate) const DIRECTIONS: [&str; 2] = ["client_to_upstream", "upstream_to_client"];
/// Statuses of the routes' JWT refusals.
pub(crate) const AUTH_STATUSES: [u16; 2] = [401, 403];
/// Close codes of frames the gateway rejects.
pub(crate) const REJECT_CODES: [u16; 3] = [1002, 1007, 1009];

/// Index of `value` in `table`, or `table.len()` (the `other` cell).
pub(crate) fn slot(table: &[u16], value: u16) -> usize {
    table
        .iter()
        .position(|v| *v == value)
        .unwrap_or(table.len())
}

fn counters(n: usize) -> Box<[Counter]> {
    (0..n).map(|_| Counter::default()).collect()
}

/// One route's cells.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    pub(crate) ws_open: Gauge,
    pub(crate) ws_total: Counter,
    /// Indexed by [`slot`] of [`UPGRADE_STATUSES`].
    pub(crate) upgrades: Box<[Counter]>,
    /// From the request head to the `101` sent (upstream connect and handshake included).
    pub(crate) ws_handshake: Histogram,
    pub(crate) messages: [Counter; 2],
    pub(crate) bytes: [Counter; 2],
    /// `[source][slot of CLOSE_CODES]`.
    pub(crate) closes: [Box<[Counter]>; 3],
    pub(crate) ws_duration: Histogram,
    /// Indexed like [`REJECT_CODES`].
    pub(crate) rejected: [Counter; 3],
    /// Requests the route's JWT policy refused, indexed like [`AUTH_STATUSES`].
    pub(crate) auth_refused: [Counter; 2],
    pub(crate) pings_sent: Counter,
    pub(crate) dead_peers: Counter,
    /// Times a direction ([`DIRECTIONS`]) went over its message or byte rate (paused, or closed with 1008).
    pub(crate) rate_limited: [Counter; 2],
    /// Plain HTTP exchanges by status class (1xx..5xx).
    pub(crate) http_requests: [Counter; 5],
    pub(crate) http_latency: Histogram,
}

impl RouteMetrics {
    fn new() -> Self {
        Self {
            ws_open: Gauge::default(),
            ws_total: Counter::default(),
            upgrades: counters(UPGRADE_STATUSES.len() + 1),
            ws_handshake: Histogram::new(LATENCY_BOUNDS),
            messages: Default::default(),
            bytes: Default::default(),
            closes: std::array::from_fn(|_| counters(CLOSE_CODES.len() + 1)),
            ws_duration: Histogram::new(DURATION_BOUNDS),
            rejected: Default::default(),
            auth_refused: Default::default(),
            pings_sent: Counter::default(),
            dead_peers: Counter::default(),
            rate_limited: Default::default(),
            http_requests: Default::default(),
            http_latency: Histogram::new(LATENCY_BOUNDS),
        }
    }

    /// Counts an upgrade attempt answered with `status`.
    pub(crate) fn upgrade(&self, status: u16) {
        if let Some(c) = self.upgrades.get(slot(UPGRADE_STATUSES, status)) {
            c.inc();
        }
    }

    /// Counts a request refused by the route's JWT policy with `status` (401 or 403).
    pub(crate) fn auth_refusal(&self, status: u16) {
        if let Some(c) = AUTH_STATUSES
            .iter()
            .position(|s| *s == status)
            .and_then(|i| self.auth_refused.get(i))
        {
            c.inc();
        }
    }

    /// Counts a Close with `code` from `source` ([`CLOSE_SOURCES`] index).
    pub(crate) fn close(&self, source: usize, code: u16) {
        if let Some(c) = self
            .closes
            .get(source)
            .and_then(|row| row.get(slot(CLOSE_CODES, code)))
        {
            c.inc();
        }
    }

    /// Counts a plain HTTP exchange answered with `status`.
    pub(crate) fn http(&self, status: u16, took: std::time::Duration) {
        if let Some(c) = self
            .http_requests
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            c.inc();
        }
        self.http_latency.observe(took);
    }
}

/// One upstream pool's cells.
#[derive(Debug)]
pub(crate) struct UpstreamMetrics {
    pub(crate) name: String,
    /// The servers' addresses, as labels (indexed like the pool's servers).
    pub(crate) servers: Box<[String]>,
    /// TCP connect plus TLS handshake, successful attempts.
    pub(crate) connect: Histogram,
    pub(crate) connect_failures: Counter,
    /// Requests and upgrades refused (503) because every server was at its `max_connections`.
    pub(crate) full: Counter,
    /// Per server: 1 while this worker considers it healthy.
    pub(crate) healthy: Box<[Gauge]>,
}

/// A worker's cells that do not depend on the config.
#[derive(Debug, Default)]
pub(crate) struct WorkerTotals {
    /// Client connections open on this worker (WebSocket, HTTP and handshakes in progress).
    pub(crate) connections_open: Gauge,
    /// Connections refused at accept because the worker's share of `max_connections` was used up.
    pub(crate) connections_refused: Counter,
    /// Free buffers the worker's pool keeps for reuse.
    pub(crate) buffers_cached: Gauge,
    /// Bytes the worker's pool has lent and not had back (exact: a lent buffer returns itself when dropped).
    pub(crate) buffers_in_use_bytes: Gauge,
    pub(crate) tls_handshake_failures: Counter,
    /// Connections on `proxy_protocol` listeners closed for a missing, malformed or late PROXY header.
    pub(crate) proxy_protocol_refused: Counter,
    /// Connections refused (429) because their client held `limits.per_client.max_connections`.
    pub(crate) client_connections_refused: Counter,
    /// Upgrades refused (429) by their client's upgrade rate.
    pub(crate) client_upgrades_refused: Counter,
    /// Connections admitted without a per-client count: their set of the client table was full of live entries.
    pub(crate) client_untracked: Counter,
}

/// Everything one worker counts under one config. A reload makes the next one with [`WorkerMetrics::next`], which
/// keeps the cells of every route and pool whose label did not change, so counters run on across reloads and
/// connections of the previous config keep counting into cells the scrape still sees.
#[derive(Debug)]
pub(crate) struct WorkerMetrics {
    /// Indexed like `config.routes.iter()` (match order), with their labels.
    pub(crate) routes: Box<[Arc<RouteMetrics>]>,
    pub(crate) route_labels: Box<[String]>,
    /// Indexed like `config.upstreams`.
    pub(crate) upstreams: Box<[Arc<UpstreamMetrics>]>,
    pub(crate) totals: Arc<WorkerTotals>,
}

impl WorkerMetrics {
    pub(crate) fn new(config: &Config) -> Self {
        Self::build(None, config)
    }

    /// The cells for `config` after a reload, sharing this one's where labels match.
    pub(crate) fn next(&self, config: &Config) -> Self {
        Self::build(Some(self), config)
    }

    fn build(previous: Option<&WorkerMetrics>, config: &Config) -> Self {
        let route_labels: Box<[String]> = config.routes.iter().map(|r| r.label()).collect();
        let routes = route_labels
            .iter()
            .map(|label| {
                previous
                    .and_then(|p| {
                        p.route_labels
                            .iter()
                            .position(|l| l == label)
                            .and_then(|i| p.routes.get(i))
                    })
                    .cloned()
                    .unwrap_or_else(|| Arc::new(RouteMetrics::new()))
            })
            .collect();
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let servers: Box<[String]> =
                    u.servers.iter().map(|s| s.address.to_string()).collect();
                previous
                    .and_then(|p| {
                        p.upstreams
                            .iter()
                            .find(|m| m.name == u.name && m.servers == servers)
                    })
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(UpstreamMetrics {
                            name: u.name.clone(),
                            connect: Histogram::new(LATENCY_BOUNDS),
                            connect_failures: Counter::default(),
                            full: Counter::default(),
                            healthy: servers
                                .iter()
                                .map(|_| {
                                    let g = Gauge::default();
                                    g.set(1);
                                    g
                                })
                                .collect(),
                            servers,
                        })
                    })
            })
            .collect();
        Self {
            routes,
            route_labels,
            upstreams,
            totals: previous.map_or_else(Arc::default, |p| p.totals.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_keeps_the_cells_of_unchanged_routes_and_pools() {
        let parse = |routes: &str| {
            ringway_config::parse(
                &format!(
                    "listeners: [{{name: a, bind: '127.0.0.1:0'}}]\nupstreams: {{up: {{servers: ['127.0.0.1:9']}}}}\nroutes: {routes}\n"
                ),
                "t.yaml",
            )
            .expect("config")
        };
        let first = WorkerMetrics::new(&parse(
            "[{path: /a, upstream: up}, {path: /b, upstream: up}]",
        ));
        first.routes[0].ws_total.inc();
        first.totals.connections_open.add(2);
        let second = first.next(&parse(
            "[{path: /a, upstream: up}, {path: /c, upstream: up}]",
        ));
        let a = second
            .route_labels
            .iter()
            .position(|l| l == "*/a")
            .expect("a");
        assert_eq!(second.routes[a].ws_total.get(), 1, "the /a counter runs on");
        assert!(Arc::ptr_eq(&first.upstreams[0], &second.upstreams[0]));
        assert_eq!(second.totals.connections_open.get(), 2);
        let c = second
            .route_labels
            .iter()
            .position(|l| l == "*/c")
            .expect("c");
        assert_eq!(second.routes[c].ws_total.get(), 0);
    }

    #[test]
    fn unknown_values_count_as_other() {
        assert_eq!(slot(UPGRADE_STATUSES, 101), 0);
        assert_eq!(slot(UPGRADE_STATUSES, 418), UPGRADE_STATUSES.len());
        assert_eq!(slot(CLOSE_CODES, 4000), CLOSE_CODES.len());
    }
}
