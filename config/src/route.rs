//! Route matching: [`RouteTable`] keeps the routes sorted most specific first, so a request is
//! served by the first route that matches.
//!
//! Order: exact host, then wildcard host (longer suffix first), then no host; within that, the
//! longest path prefix (plain byte prefix, like nginx `location /ws`); then routes with a header
//! condition before those without; ties keep file order. This module matches requests only; it
//! does not parse HTTP or decide what a route's target does.

use crate::{Route, Target, WebSocketSettings};

/// Host condition of a route. Both forms hold lowercase text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `chat.example.com`: exactly this host (case-insensitive, port ignored).
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`: any host ending in it, with at
    /// least one label before it (`example.com` itself does not match).
    Wildcard(String),
}

impl HostMatch {
    /// Whether a host (already stripped of its port) satisfies this condition.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// The routes, sorted most specific first (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Sort `routes` (given in file order) into match order.
    pub fn new(routes: Vec<Route>) -> RouteTable {
        let mut routes: Vec<(usize, Route)> = routes.into_iter().enumerate().collect();
        routes.sort_by(|(ia, a), (ib, b)| {
            specificity(a).cmp(&specificity(b)).then_with(|| ia.cmp(ib))
        });
        RouteTable {
            routes: routes.into_iter().map(|(_, r)| r).collect(),
        }
    }

    /// The most specific route matching the request, if any.
    ///
    /// `host` is the Host header value as received (a port such as `:8080`, a trailing dot and
    /// case are ignored). `path` is the request path; anything from `?` on is ignored. `header` looks
    /// up a request header by lowercase name and returns its value; its lifetime is independent
    /// of the table's, so it may borrow from a request buffer.
    pub fn find<'a, 'h>(
        &'a self,
        host: Option<&str>,
        path: &str,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Option<&'a Route> {
        self.find_indexed(host, path, header).map(|(_, r)| r)
    }

    /// [`RouteTable::find`], with the route's index in match order (what [`RouteTable::iter`] yields; metrics
    /// are kept per index).
    pub fn find_indexed<'a, 'h>(
        &'a self,
        host: Option<&str>,
        path: &str,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Option<(usize, &'a Route)> {
        let host = host.map(|h| strip_port(h).trim_end_matches('.'));
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.routes.iter().enumerate().find(|(_, route)| {
            let host_ok = match (&route.host, host) {
                (None, _) => true,
                (Some(m), Some(h)) => m.matches(h),
                (Some(_), None) => false,
            };
            host_ok
                && path.as_bytes().starts_with(route.path_prefix.as_bytes())
                && route
                    .header
                    .as_ref()
                    .is_none_or(|h| header(&h.name) == Some(h.value.as_bytes()))
        })
    }

    /// The routes in match order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes (never true for a loaded config).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Sort key: smaller is more specific.
fn specificity(r: &Route) -> (u8, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>, bool) {
    let (class, host_len) = match &r.host {
        Some(HostMatch::Exact(_)) => (0, 0),
        Some(HostMatch::Wildcard(s)) => (1, s.len()),
        None => (2, 0),
    };
    (
        class,
        std::cmp::Reverse(host_len),
        std::cmp::Reverse(r.path_prefix.len()),
        r.header.is_none(),
    )
}

/// `example.com:8080` → `example.com`, `[::1]:8080` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Two routes with the same conditions: the later one could never be chosen.
pub(crate) fn same_match(a: &Route, b: &Route) -> bool {
    a.host == b.host && a.path_prefix == b.path_prefix && a.header == b.header
}

/// Used by `summary()`: a short description of a route's target.
pub(crate) fn describe_target(target: &Target, upstream_names: &[&str]) -> String {
    match target {
        Target::Echo => "echo (built-in)".to_owned(),
        Target::Upstream(id) => format!(
            "upstream {}",
            upstream_names.get(id.0).copied().unwrap_or("?")
        ),
    }
}

/// Used by `summary()`: the route's WebSocket settings in one line.
pub(crate) fn describe_ws(ws: &WebSocketSettings) -> String {
    use crate::units::{format_duration, format_size};
    let ping = ws
        .ping_interval
        .map_or_else(|| "off".to_owned(), format_duration);
    let list = |l: &Option<Vec<String>>| match l {
        None => "any".to_owned(),
        Some(v) => v.join(","),
    };
    format!(
        "idle {} ping {} pong {} frame<={} message<={} origins {} subprotocols {} utf8 {}",
        format_duration(ws.idle_timeout),
        ping,
        format_duration(ws.pong_timeout),
        format_size(ws.max_frame_size),
        format_size(ws.max_message_size),
        list(&ws.allowed_origins),
        list(&ws.allowed_subprotocols),
        if ws.validate_utf8 {
            "checked"
        } else {
            "unchecked"
        },
    )
}

impl Route {
    /// A short name for logs and metric labels, from what the route matches: `host/path` (`*` for any host), plus
    /// `[header=value]` when it matches a header.
    pub fn label(&self) -> String {
        let host = match &self.host {
            None => "*".to_owned(),
            Some(HostMatch::Exact(h)) => h.clone(),
            Some(HostMatch::Wildcard(suffix)) => format!("*{suffix}"),
        };
        match &self.header {
            None => format!("{host}{}", self.path_prefix),
            Some(h) => format!("{host}{}[{}={}]", self.path_prefix, h.name, h.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HeaderMatch, UpstreamId};

    fn route(host: Option<&str>, path: &str, header: Option<(&str, &str)>, tag: usize) -> Route {
        Route {
            host: host.map(|h| match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Wildcard(suffix.to_owned()),
                None => HostMatch::Exact(h.to_owned()),
            }),
            path_prefix: path.to_owned(),
            header: header.map(|(n, v)| HeaderMatch {
                name: n.to_owned(),
                value: v.to_owned(),
            }),
            target: Target::Upstream(UpstreamId(tag)),
            client_cert_header: None,
            auth: None,
            websocket: WebSocketSettings::default(),
            upgrade_rate: None,
        }
    }

    fn tag(r: Option<&Route>) -> Option<usize> {
        r.map(|r| match r.target {
            Target::Upstream(UpstreamId(t)) => t,
            Target::Echo => usize::MAX,
        })
    }

    fn no_headers(_: &str) -> Option<&'static [u8]> {
        None
    }

    #[test]
    fn longest_prefix_wins_regardless_of_file_order() {
        let t = RouteTable::new(vec![
            route(None, "/", None, 0),
            route(None, "/ws", None, 1),
            route(None, "/ws/chat", None, 2),
        ]);
        assert_eq!(tag(t.find(None, "/ws/chat/room", no_headers)), Some(2));
        assert_eq!(tag(t.find(None, "/ws/feed", no_headers)), Some(1));
        // Plain byte prefix, like nginx: `/ws` also matches `/wsx`.
        assert_eq!(tag(t.find(None, "/wsx", no_headers)), Some(1));
        assert_eq!(tag(t.find(None, "/other", no_headers)), Some(0));
        assert_eq!(tag(t.find(None, "/ws/chat?x=/ws", no_headers)), Some(2));
    }

    #[test]
    fn exact_host_then_wildcard_then_no_host() {
        let t = RouteTable::new(vec![
            route(None, "/ws/very/long", None, 0),
            route(Some("*.example.com"), "/", None, 1),
            route(Some("chat.example.com"), "/", None, 2),
            route(Some("*.eu.example.com"), "/", None, 3),
        ]);
        assert_eq!(
            tag(t.find(Some("chat.example.com"), "/ws/very/long", no_headers)),
            Some(2)
        );
        assert_eq!(
            tag(t.find(Some("CHAT.Example.com:8443"), "/", no_headers)),
            Some(2)
        );
        assert_eq!(
            tag(t.find(Some("chat.example.com.:80"), "/", no_headers)),
            Some(2)
        );
        assert_eq!(
            tag(t.find(Some("feed.example.com"), "/ws/very/long", no_headers)),
            Some(1)
        );
        assert_eq!(
            tag(t.find(Some("a.eu.example.com"), "/", no_headers)),
            Some(3)
        );
        assert_eq!(
            tag(t.find(Some("example.com"), "/ws/very/long", no_headers)),
            Some(0)
        );
        assert_eq!(tag(t.find(None, "/ws/very/long", no_headers)), Some(0));
        assert_eq!(tag(t.find(Some("example.com"), "/", no_headers)), None);
    }

    #[test]
    fn header_condition_beats_plain_route_with_same_prefix() {
        let t = RouteTable::new(vec![
            route(None, "/ws", None, 0),
            route(None, "/ws", Some(("x-env", "beta")), 1),
        ]);
        let beta = |name: &str| (name == "x-env").then_some(&b"beta"[..]);
        let prod = |name: &str| (name == "x-env").then_some(&b"prod"[..]);
        assert_eq!(tag(t.find(None, "/ws", beta)), Some(1));
        assert_eq!(tag(t.find(None, "/ws", prod)), Some(0));
        assert_eq!(tag(t.find(None, "/ws", no_headers)), Some(0));
    }

    #[test]
    fn ties_keep_file_order() {
        let t = RouteTable::new(vec![
            route(None, "/a", Some(("x", "1")), 0),
            route(None, "/a", Some(("y", "1")), 1),
        ]);
        let both = |_: &str| Some(&b"1"[..]);
        assert_eq!(tag(t.find(None, "/a", both)), Some(0));
        assert_eq!(t.len(), 2);
        assert_eq!(t.iter().count(), 2);
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
