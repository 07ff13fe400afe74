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

use ringway_config::Config;

use super::cells::Histogram;
use super::worker::{
    CLOSE_CODES, CLOSE_SOURCES, DIRECTIONS, REJECT_CODES, RouteMetrics, UPGRADE_STATUSES,
    WorkerMetrics,
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
}

/// Renders the whole scrape.
pub(crate) fn render(config: &Config, workers: &[Arc<WorkerMetrics>], p: &ProcessInfo) -> String {
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
        sum(&|w| w.connections_open.get()),
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
        sum(&|w| w.connections_refused.get() as i64),
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
        sum(&|w| w.buffers_cached.get()) * bytes,
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
        sum(&|w| w.tls_handshake_failures.get() as i64),
    );

    let labels: Vec<String> = config.routes.iter().map(|r| r.label()).collect();
    let routes = |i: usize| workers.iter().filter_map(move |w| w.routes.get(i));
    let route_sum = |i: usize, f: &dyn Fn(&RouteMetrics) -> u64| routes(i).map(f).sum::<u64>();

    family(
        o,
        "ringway_websocket_connections_open",
        "gauge",
        "WebSockets being relayed.",
    );
    for (i, l) in labels.iter().enumerate() {
        let open: i64 = routes(i).map(|r| r.ws_open.get()).sum();
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
    for (i, l) in labels.iter().enumerate() {
        sample(
            o,
            "ringway_websocket_connections_total",
            &[("route", l)],
            route_sum(i, &|r| r.ws_total.get()),
        );
    }
    family(
        o,
        "ringway_websocket_upgrades_total",
        "counter",
        "WebSocket upgrade requests by the status answered.",
    );
    for (i, l) in labels.iter().enumerate() {
        for (s, status) in status_labels().iter().enumerate() {
            let n = route_sum(i, &|r| r.upgrades.get(s).map_or(0, |c| c.get()));
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
        &labels,
        workers,
        |w, i| w.routes.get(i).map(|r| &r.ws_handshake),
        "route",
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
        for (i, l) in labels.iter().enumerate() {
            for (d, dir) in DIRECTIONS.iter().enumerate() {
                let n = route_sum(i, &|r| {
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
    for (i, l) in labels.iter().enumerate() {
        for (src, from) in CLOSE_SOURCES.iter().enumerate() {
            for (c, code) in codes.iter().enumerate() {
                let n = route_sum(i, &|r| r.closes[src].get(c).map_or(0, |x| x.get()));
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
        &labels,
        workers,
        |w, i| w.routes.get(i).map(|r| &r.ws_duration),
        "route",
    );
    family(
        o,
        "ringway_websocket_frames_rejected_total",
        "counter",
        "Frames the gateway refused, by the close code it answered.",
    );
    for (i, l) in labels.iter().enumerate() {
        for (k, code) in REJECT_CODES.iter().enumerate() {
            let code = code.to_string();
            sample(
                o,
                "ringway_websocket_frames_rejected_total",
                &[("route", l), ("code", &code)],
                route_sum(i, &|r| r.rejected[k].get()),
            );
        }
    }
    family(
        o,
        "ringway_websocket_pings_sent_total",
        "counter",
        "Pings the gateway sent to idle peers.",
    );
    for (i, l) in labels.iter().enumerate() {
        sample(
            o,
            "ringway_websocket_pings_sent_total",
            &[("route", l)],
            route_sum(i, &|r| r.pings_sent.get()),
        );
    }
    family(
        o,
        "ringway_websocket_dead_peers_total",
        "counter",
        "Peers closed because they did not answer the gateway's ping.",
    );
    for (i, l) in labels.iter().enumerate() {
        sample(
            o,
            "ringway_websocket_dead_peers_total",
            &[("route", l)],
            route_sum(i, &|r| r.dead_peers.get()),
        );
    }
    family(
        o,
        "ringway_http_requests_total",
        "counter",
        "Plain HTTP requests by status class.",
    );
    for (i, l) in labels.iter().enumerate() {
        for (k, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            sample(
                o,
                "ringway_http_requests_total",
                &[("route", l), ("class", class)],
                route_sum(i, &|r| r.http_requests[k].get()),
            );
        }
    }
    histogram_family(
        o,
        "ringway_http_request_seconds",
        "Plain HTTP exchanges, from the request head to the end of the response.",
        &labels,
        workers,
        |w, i| w.routes.get(i).map(|r| &r.http_latency),
        "route",
    );

    let pools: Vec<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
    histogram_family(
        o,
        "ringway_upstream_connect_seconds",
        "Successful connects to upstream servers (TLS handshake included).",
        &pools,
        workers,
        |w, i| w.upstreams.get(i).map(|u| &u.connect),
        "upstream",
    );
    family(
        o,
        "ringway_upstream_connect_failures_total",
        "counter",
        "Failed connects to upstream servers.",
    );
    for (i, name) in pools.iter().enumerate() {
        let n: u64 = workers
            .iter()
            .filter_map(|w| w.upstreams.get(i))
            .map(|u| u.connect_failures.get())
            .sum();
        sample(
            o,
            "ringway_upstream_connect_failures_total",
            &[("upstream", name)],
            n,
        );
    }
    family(
        o,
        "ringway_upstream_server_healthy_workers",
        "gauge",
        "Workers that consider the server healthy (each worker judges on its own).",
    );
    for (i, u) in config.upstreams.iter().enumerate() {
        for (s, server) in u.servers.iter().enumerate() {
            let n: i64 = workers
                .iter()
                .filter_map(|w| w.upstreams.get(i).and_then(|x| x.healthy.get(s)))
                .map(|g| g.get())
                .sum();
            let addr = format!("{}", server.address);
            sample(
                o,
                "ringway_upstream_server_healthy_workers",
                &[("upstream", &u.name), ("server", &addr)],
                u64::try_from(n).unwrap_or(0),
            );
        }
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

/// One histogram family, a series per label value, summed over workers, buckets cumulative.
fn histogram_family<'w>(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &[String],
    workers: &'w [Arc<WorkerMetrics>],
    pick: impl Fn(&'w WorkerMetrics, usize) -> Option<&'w Histogram>,
    label_name: &str,
) {
    family(out, name, "histogram", help);
    for (i, l) in labels.iter().enumerate() {
        let hs: Vec<&Histogram> = workers.iter().filter_map(|w| pick(w, i)).collect();
        let Some(first) = hs.first() else { continue };
        let bounds = first.bounds();
        let mut per_bucket = vec![0u64; bounds.len() + 1];
        let mut sum_micros = 0u64;
        for h in &hs {
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

    fn config() -> Config {
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
        workers[1].buffers_cached.add(2);
        let text = render(&config, &workers, &info());
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
        let text = render(&config, &workers, &info());
        for line in text.lines() {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP ringway_") || line.starts_with("# TYPE ringway_"),
                    "{line}"
                );
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a value");
            assert!(series.starts_with("ringway_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert_eq!(
                series.matches('{').count(),
                series.matches('}').count(),
                "{line}"
            );
        }
    }
}
