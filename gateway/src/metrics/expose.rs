//! The Prometheus text exposition format (version 0.0.4) of every worker's cells, summed.
//!
//! Owns: metric names, help texts, label rendering and escaping, summing across workers, histogram buckets made
//! cumulative. Does not own: the cells (`super::cells`), serving HTTP (`crate::admin`).
//!
//! Written by hand rather than with `prometheus-client`: that crate's metrics are shared atomics in one registry,
//! which the workers would all write (contended cache lines on the hot path), and it cannot sum per-worker
//! registries. The format is a few lines of text per sample.

use std::fmt::Write;
use std::sync::Arc;

use super::cells::Histogram;
use super::worker::{
    AUTH_STATUSES, CLOSE_CODES, CLOSE_SOURCES, DIRECTIONS, REJECT_CODES, RouteMetrics,
    UPGRADE_STATUSES, UpstreamMetrics, WorkerMetrics,
};

/// What the process knows about itself, beside the workers' cells.
#[derive(Debug, Clone)]
pub(crate) struct ProcessInfo {
    pub(crate) version: &'static str,
    pub(crate) git: &'static str,
    pub(crate) config_generation: u64,
    pub(crate) last_reload_ok: bool,
    pub(crate) draining: bool,
    pub(crate) buffer_bytes: usize,
    /// `(pool, server, up)` by active health checks, for pools that have them.
    pub(crate) servers_up: Vec<(String, String, bool)>,
    /// Resident memory and open file descriptors of the process, when /proc tells.
    pub(crate) resident_bytes: Option<u64>,
    pub(crate) open_fds: Option<u64>,
}

impl ProcessInfo {
    /// Reads this process's resident memory and open descriptors from /proc (at scrape time only).
    pub(crate) fn read_proc() -> (Option<u64>, Option<u64>) {
        let page = 4096u64;
        let resident = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .map(|pages| pages * page);
        let fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        (resident, fds)
    }
}

/// Renders the whole scrape.
pub(crate) fn render(workers: &[Arc<WorkerMetrics>], p: &ProcessInfo) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let o = &mut out;
    family(
        o,
        "ringway_build_info",
        "gauge",
        "Version of the running gateway.",
    );
    sample(
        o,
        "ringway_build_info",
        &[("version", p.version), ("git", p.git)],
        1,
    );
    family(o, "ringway_workers", "gauge", "Worker threads.");
    sample(o, "ringway_workers", &[], workers.len() as u64);
    family(
        o,
        "ringway_config_generation",
        "counter",
        "Configurations loaded: 1 at start, one more per successful reload.",
    );
    sample(o, "ringway_config_generation", &[], p.config_generation);
    family(
        o,
        "ringway_config_last_reload_success",
        "gauge",
        "1 if the last reload (or the start) succeeded.",
    );
    sample(
        o,
        "ringway_config_last_reload_success",
        &[],
        u64::from(p.last_reload_ok),
    );
    family(
        o,
        "ringway_draining",
        "gauge",
        "1 while the gateway drains before exiting.",
    );
    sample(o, "ringway_draining", &[], u64::from(p.draining));
    if let Some(bytes) = p.resident_bytes {
        family(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        sample(o, "process_resident_memory_bytes", &[], bytes);
    }
    if let Some(fds) = p.open_fds {
        family(
            o,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        sample(o, "process_open_fds", &[], fds);
    }
    let sum = |f: &dyn Fn(&WorkerMetrics) -> i64| -> u64 {
        u64::try_from(workers.iter().map(|w| f(w)).sum::<i64>()).unwrap_or(0)
    };
    family(
        o,
        "ringway_connections_open",
        "gauge",
        "Client connections open (handshaking, HTTP or WebSocket).",
    );
    sample(
        o,
        "ringway_connections_open",
        &[],
        sum(&|w| w.totals.connections_open.get()),
    );
    family(
        o,
        "ringway_connections_refused_total",
        "counter",
        "Connections refused because max_connections was reached.",
    );
    sample(
        o,
        "ringway_connections_refused_total",
        &[],
        sum(&|w| w.totals.connections_refused.get() as i64),
    );
    family(
        o,
        "ringway_client_refused_total",
        "counter",
        "Refused per client address (429): reason=connections (limits.per_client.max_connections), \
         reason=upgrade_rate (upgrades_per_second).",
    );
    for (reason, n) in [
        (
            "connections",
            sum(&|w| w.totals.client_connections_refused.get() as i64),
        ),
        (
            "upgrade_rate",
            sum(&|w| w.totals.client_upgrades_refused.get() as i64),
        ),
    ] {
        sample(o, "ringway_client_refused_total", &[("reason", reason)], n);
    }
    family(
        o,
        "ringway_client_untracked_total",
        "counter",
        "Connections admitted without a per-client count (their set of the client table was full).",
    );
    sample(
        o,
        "ringway_client_untracked_total",
        &[],
        sum(&|w| w.totals.client_untracked.get() as i64),
    );
    family(
        o,
        "ringway_buffer_pool_cached_bytes",
        "gauge",
        "Bytes of free I/O buffers the workers keep for reuse.",
    );
    let bytes = p.buffer_bytes as u64;
    sample(
        o,
        "ringway_buffer_pool_cached_bytes",
        &[],
        sum(&|w| w.totals.buffers_cached.get()) * bytes,
    );
    family(
        o,
        "ringway_buffer_pool_in_use_bytes",
        "gauge",
        "Bytes of I/O buffers the workers have lent to connections with bytes in flight.",
    );
    sample(
        o,
        "ringway_buffer_pool_in_use_bytes",
        &[],
        sum(&|w| w.totals.buffers_in_use_bytes.get()),
    );
    family(
        o,
        "ringway_tls_handshake_failures_total",
        "counter",
        "TLS handshakes with clients that failed.",
    );
    sample(
        o,
        "ringway_tls_handshake_failures_total",
        &[],
        sum(&|w| w.totals.tls_handshake_failures.get() as i64),
    );
    family(
        o,
        "ringway_proxy_protocol_refused_total",
        "counter",
        "Connections on proxy_protocol listeners closed for a missing, malformed or late PROXY header.",
    );
    sample(
        o,
        "ringway_proxy_protocol_refused_total",
        &[],
        sum(&|w| w.totals.proxy_protocol_refused.get() as i64),
    );

    let routes = route_groups(workers);
    let route_sum = |group: &[&RouteMetrics], f: &dyn Fn(&RouteMetrics) -> u64| {
        group.iter().map(|r| f(r)).sum::<u64>()
    };

    family(
        o,
        "ringway_websocket_connections_open",
        "gauge",
        "WebSockets being relayed.",
    );
    for (l, group) in &routes {
        let open: i64 = group.iter().map(|r| r.ws_open.get()).sum();
        sample(
            o,
            "ringway_websocket_connections_open",
            &[("route", l)],
            u64::try_from(open).unwrap_or(0),
        );
    }
    family(
        o,
        "ringway_websocket_connections_total",
        "counter",
        "WebSockets relayed since start.",
    );
    for (l, group) in &routes {
        sample(
            o,
            "ringway_websocket_connections_total",
            &[("route", l)],
            route_sum(group, &|r| r.ws_total.get()),
        );
    }
    family(
        o,
        "ringway_websocket_upgrades_total",
        "counter",
        "WebSocket upgrade requests by the status answered.",
    );
    for (l, group) in &routes {
        for (s, status) in status_labels().iter().enumerate() {
            let n = route_sum(group, &|r| r.upgrades.get(s).map_or(0, |c| c.get()));
            if n > 0 || s == 0 {
                sample(
                    o,
                    "ringway_websocket_upgrades_total",
                    &[("route", l), ("status", status)],
                    n,
                );
            }
        }
    }
    histogram_family(
        o,
        "ringway_websocket_handshake_seconds",
        "From the upgrade request to the 101 sent (upstream connect and handshake included).",
        "route",
        &routes,
        |r| &r.ws_handshake,
    );
    for (name, help, pick) in [
        (
            "ringway_websocket_messages_total",
            "WebSocket messages relayed.",
            0,
        ),
        (
            "ringway_websocket_bytes_total",
            "WebSocket bytes relayed (frames as on the wire).",
            1,
        ),
    ] {
        family(o, name, "counter", help);
        for (l, group) in &routes {
            for (d, dir) in DIRECTIONS.iter().enumerate() {
                let n = route_sum(group, &|r| {
                    if pick == 0 {
                        r.messages[d].get()
                    } else {
                        r.bytes[d].get()
                    }
                });
                sample(o, name, &[("route", l), ("direction", dir)], n);
            }
        }
    }
    family(
        o,
        "ringway_websocket_closes_total",
        "counter",
        "WebSocket closes by who closed and the code (1006: no Close frame).",
    );
    let codes = code_labels();
    for (l, group) in &routes {
        for (src, from) in CLOSE_SOURCES.iter().enumerate() {
            for (c, code) in codes.iter().enumerate() {
                let n = route_sum(group, &|r| r.closes[src].get(c).map_or(0, |x| x.get()));
                if n > 0 {
                    sample(
                        o,
                        "ringway_websocket_closes_total",
                        &[("route", l), ("from", from), ("code", code)],
                        n,
                    );
                }
            }
        }
    }
    histogram_family(
        o,
        "ringway_websocket_duration_seconds",
        "How long relayed WebSockets lived.",
        "route",
        &routes,
        |r| &r.ws_duration,
    );
    family(
        o,
        "ringway_websocket_frames_rejected_total",
        "counter",
        "Frames the gateway refused, by the close code it answered.",
    );
    for (l, group) in &routes {
        for (k, code) in REJECT_CODES.iter().enumerate() {
            let code = code.to_string();
            sample(
                o,
                "ringway_websocket_frames_rejected_total",
                &[("route", l), ("code", &code)],
                route_sum(group, &|r| r.rejected[k].get()),
            );
        }
    }
    family(
        o,
        "ringway_auth_refused_total",
        "counter",
        "Requests (plain HTTP and upgrades) refused by the route's JWT policy, by status: 401 no or invalid token, 403 token not accepted.",
    );
    for (l, group) in &routes {
        for (k, status) in AUTH_STATUSES.iter().enumerate() {
            let status = status.to_string();
            sample(
                o,
                "ringway_auth_refused_total",
                &[("route", l), ("status", &status)],
                route_sum(group, &|r| r.auth_refused[k].get()),
            );
        }
    }
    family(
        o,
        "ringway_websocket_pings_sent_total",
        "counter",
        "Pings the gateway sent to idle peers.",
    );
    for (l, group) in &routes {
        sample(
            o,
            "ringway_websocket_pings_sent_total",
            &[("route", l)],
            route_sum(group, &|r| r.pings_sent.get()),
        );
    }
    family(
        o,
        "ringway_websocket_dead_peers_total",
        "counter",
        "Peers closed because they did not answer the gateway's ping.",
    );
    for (l, group) in &routes {
        sample(
            o,
            "ringway_websocket_dead_peers_total",
            &[("route", l)],
            route_sum(group, &|r| r.dead_peers.get()),
        );
    }
    family(
        o,
        "ringway_websocket_rate_limited_total",
        "counter",
        "Times a direction went over its message or byte rate (reads paused, or closed with 1008).",
    );
    for (l, group) in &routes {
        for (d, direction) in DIRECTIONS.iter().enumerate() {
            sample(
                o,
                "ringway_websocket_rate_limited_total",
                &[("route", l), ("direction", direction)],
                route_sum(group, &|r| r.rate_limited[d].get()),
            );
        }
    }
    family(
        o,
        "ringway_http_requests_total",
        "counter",
        "Plain HTTP requests by status class.",
    );
    for (l, group) in &routes {
        for (k, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            sample(
                o,
                "ringway_http_requests_total",
                &[("route", l), ("class", class)],
                route_sum(group, &|r| r.http_requests[k].get()),
            );
        }
    }
    histogram_family(
        o,
        "ringway_http_request_seconds",
        "Plain HTTP exchanges, from the request head to the end of the response.",
        "route",
        &routes,
        |r| &r.http_latency,
    );

    let pools = upstream_groups(workers);
    histogram_family(
        o,
        "ringway_upstream_connect_seconds",
        "Successful connects to upstream servers (TLS handshake included).",
        "upstream",
        &pools,
        |u| &u.connect,
    );
    family(
        o,
        "ringway_upstream_connect_failures_total",
        "counter",
        "Failed connects to upstream servers.",
    );
    for (name, group) in &pools {
        let n: u64 = group.iter().map(|u| u.connect_failures.get()).sum();
        sample(
            o,
            "ringway_upstream_connect_failures_total",
            &[("upstream", name)],
            n,
        );
    }
    family(
        o,
        "ringway_upstream_full_total",
        "counter",
        "Requests and upgrades refused (503) because every server of the pool was at its max_connections.",
    );
    for (name, group) in &pools {
        let n: u64 = group.iter().map(|u| u.full.get()).sum();
        sample(o, "ringway_upstream_full_total", &[("upstream", name)], n);
    }
    family(
        o,
        "ringway_upstream_server_healthy_workers",
        "gauge",
        "Workers that consider the server healthy (each worker judges on its own).",
    );
    let mut servers: Vec<(&str, &str, i64)> = Vec::new();
    for (name, group) in &pools {
        for u in group {
            for (addr, g) in u.servers.iter().zip(u.healthy.iter()) {
                match servers
                    .iter_mut()
                    .find(|(n, a, _)| n == name && *a == addr.as_str())
                {
                    Some(entry) => entry.2 += g.get(),
                    None => servers.push((name, addr, g.get())),
                }
            }
        }
    }
    family(
        o,
        "ringway_upstream_server_up",
        "gauge",
        "1 while the server passes its active health checks (pools with `health:` only).",
    );
    for (pool, server, up) in &p.servers_up {
        sample(
            o,
            "ringway_upstream_server_up",
            &[("upstream", pool), ("server", server)],
            u64::from(*up),
        );
    }
    for (name, addr, n) in servers {
        sample(
            o,
            "ringway_upstream_server_healthy_workers",
            &[("upstream", name), ("server", addr)],
            u64::try_from(n).unwrap_or(0),
        );
    }
    out
}

fn status_labels() -> Vec<String> {
    UPGRADE_STATUSES
        .iter()
        .map(u16::to_string)
        .chain(std::iter::once("other".to_owned()))
        .collect()
}

fn code_labels() -> Vec<String> {
    CLOSE_CODES
        .iter()
        .map(u16::to_string)
        .chain(std::iter::once("other".to_owned()))
        .collect()
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    write_labels(out, labels);
    let _ = writeln!(out, " {value}");
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// Every worker's route cells, grouped by label in first-seen order (workers that have not yet swapped in a
/// reloaded config still add theirs under the labels they have).
fn route_groups(workers: &[Arc<WorkerMetrics>]) -> Vec<(&str, Vec<&RouteMetrics>)> {
    let mut groups: Vec<(&str, Vec<&RouteMetrics>)> = Vec::new();
    for w in workers {
        for (label, r) in w.route_labels.iter().zip(w.routes.iter()) {
            match groups.iter_mut().find(|(l, _)| *l == label.as_str()) {
                Some((_, g)) => g.push(r),
                None => groups.push((label, vec![r])),
            }
        }
    }
    groups
}

/// Every worker's pool cells, grouped by pool name.
fn upstream_groups(workers: &[Arc<WorkerMetrics>]) -> Vec<(&str, Vec<&UpstreamMetrics>)> {
    let mut groups: Vec<(&str, Vec<&UpstreamMetrics>)> = Vec::new();
    for w in workers {
        for u in w.upstreams.iter() {
            match groups.iter_mut().find(|(l, _)| *l == u.name.as_str()) {
                Some((_, g)) => g.push(u),
                None => groups.push((&u.name, vec![u])),
            }
        }
    }
    groups
}

/// One histogram family, a series per label value, summed over workers, buckets cumulative.
fn histogram_family<T>(
    out: &mut String,
    name: &str,
    help: &str,
    label_name: &str,
    groups: &[(&str, Vec<&T>)],
    pick: impl Fn(&T) -> &Histogram,
) {
    family(out, name, "histogram", help);
    for (l, group) in groups {
        let Some(first) = group.first() else { continue };
        let bounds = pick(first).bounds();
        let mut per_bucket = vec![0u64; bounds.len() + 1];
        let mut sum_micros = 0u64;
        for item in group {
            let h = pick(item);
            for (slot, n) in per_bucket.iter_mut().zip(h.counts()) {
                *slot += n;
            }
            sum_micros += h.sum_micros();
        }
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (k, n) in per_bucket.iter().enumerate() {
            cumulative += n;
            let le = match bounds.get(k) {
                Some(b) => format!("{b}"),
                None => "+Inf".to_owned(),
            };
            sample(out, &bucket, &[(label_name, l), ("le", &le)], cumulative);
        }
        out.push_str(name);
        out.push_str("_sum");
        write_labels(out, &[(label_name, l)]);
        let _ = writeln!(out, " {}", sum_micros as f64 / 1e6);
        sample(
            out,
            &format!("{name}_count"),
            &[(label_name, l)],
            cumulative,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> ringway_config::Config {
        ringway_config::parse(
            "listeners: [{name: main, bind: '127.0.0.1:0'}]\n\
             upstreams: {chat: {servers: ['127.0.0.1:9']}}\n\
             routes: [{path: /chat, upstream: chat}, {path: /, header: {name: x-tenant, value: 'a\"b'}, upstream: chat}]\n",
            "test.yaml",
        )
        .expect("config")
    }

    fn info() -> ProcessInfo {
        ProcessInfo {
            version: "0.0.0",
            git: "test",
            config_generation: 1,
            last_reload_ok: true,
            draining: false,
            buffer_bytes: 1024,
            servers_up: Vec::new(),
            resident_bytes: Some(1 << 20),
            open_fds: Some(12),
        }
    }

    #[test]
    fn values_are_summed_over_workers_and_histograms_are_cumulative() {
        let config = config();
        let workers = vec![
            Arc::new(WorkerMetrics::new(&config)),
            Arc::new(WorkerMetrics::new(&config)),
        ];
        let chat = config
            .routes
            .iter()
            .position(|r| r.path_prefix == "/chat")
            .expect("route");
        workers[0].routes[chat].messages[0].add(3);
        workers[1].routes[chat].messages[0].add(4);
        workers[0].routes[chat].upgrade(101);
        workers[1].routes[chat].upgrade(429);
        workers[0].routes[chat].close(0, 1000);
        workers[0].routes[chat]
            .ws_handshake
            .observe(Duration::from_millis(3));
        workers[1].routes[chat]
            .ws_handshake
            .observe(Duration::from_secs(60));
        workers[1].totals.buffers_cached.add(2);
        workers[0].totals.buffers_in_use_bytes.set(1000);
        workers[1].totals.buffers_in_use_bytes.set(24);
        let text = render(&workers, &info());
        assert!(text.contains("ringway_websocket_messages_total{route=\"*/chat\",direction=\"client_to_upstream\"} 7\n"), "{text}");
        assert!(
            text.contains("ringway_websocket_upgrades_total{route=\"*/chat\",status=\"101\"} 1\n")
        );
        assert!(
            text.contains("ringway_websocket_upgrades_total{route=\"*/chat\",status=\"429\"} 1\n")
        );
        assert!(text.contains(
            "ringway_websocket_closes_total{route=\"*/chat\",from=\"client\",code=\"1000\"} 1\n"
        ));
        assert!(text.contains(
            "ringway_websocket_handshake_seconds_bucket{route=\"*/chat\",le=\"0.0025\"} 0\n"
        ));
        assert!(text.contains(
            "ringway_websocket_handshake_seconds_bucket{route=\"*/chat\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "ringway_websocket_handshake_seconds_bucket{route=\"*/chat\",le=\"10\"} 1\n"
        ));
        assert!(text.contains(
            "ringway_websocket_handshake_seconds_bucket{route=\"*/chat\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains("ringway_websocket_handshake_seconds_count{route=\"*/chat\"} 2\n"));
        assert!(
            text.contains("ringway_websocket_handshake_seconds_sum{route=\"*/chat\"} 60.003\n")
        );
        assert!(text.contains("ringway_buffer_pool_cached_bytes 2048\n"));
        assert!(text.contains("ringway_buffer_pool_in_use_bytes 1024\n"));
        assert!(text.contains(
            "ringway_upstream_server_healthy_workers{upstream=\"chat\",server=\"127.0.0.1:9\"} 2\n"
        ));
        // Label values from the config are escaped.
        assert!(text.contains("route=\"*/[x-tenant=a\\\"b]\""), "{text}");
    }

    #[test]
    fn every_sample_line_is_well_formed() {
        let config = config();
        let workers = vec![Arc::new(WorkerMetrics::new(&config))];
        let text = render(&workers, &info());
        for line in text.lines() {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                    "{line}"
                );
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a value");
            assert!(
                series.starts_with("ringway_") || series.starts_with("process_"),
                "{line}"
            );
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert_eq!(
                series.matches('{').count(),
                series.matches('}').count(),
                "{line}"
            );
        }
    }
}
