//! Conversion of the raw file ([`crate::raw`]) into the validated model: defaults are applied,
//! text is parsed into durations, sizes and addresses, names are resolved, and every rule is
//! enforced here, once. Each failure is a [`Problem`] carrying the YAML path it is about;
//! `lib.rs` turns that into a positioned [`crate::ConfigError`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Problem, join};
use crate::raw::{
    RawConfig, RawDrain, RawHeader, RawHealth, RawLimits, RawListener, RawListenerTls,
    RawMessageLimits, RawPerClient, RawRateLimit, RawRoute, RawRouteLimits, RawServer, RawUpstream,
    RawWebSocket,
};
use crate::route::same_match;
use crate::units::{Scalar, parse_bool, parse_count, parse_duration, parse_size};
use crate::{
    Admin, Balance, CertificateFiles, ClientAuth, Config, DEFAULT_REDACTED_QUERY, DirectionLimits,
    Drain, Driver, HashKey, HeaderMatch, HealthCheck, HealthKind, HostMatch, Limits, Listener,
    ListenerTls, LogFormat, MessageLimits, OnExcess, PerClientLimits, Rate, Route, RouteTable,
    Server, Target, TlsVersion, UnknownSni, UpgradeRate, Upstream, UpstreamId, UpstreamTls,
    WebSocketSettings,
};

type Result<T> = std::result::Result<T, Problem>;

/// Convert the whole file.
pub(crate) fn config(raw: RawConfig) -> Result<Config> {
    let workers = match raw.workers {
        None => None,
        Some(s) => {
            let n = count(&s, "workers", 1, 4096, "a number of worker threads")?;
            NonZeroUsize::new(n)
        }
    };
    let driver = match raw.driver {
        None => Driver::Auto,
        Some(s) => match s.0.as_str() {
            "auto" => Driver::Auto,
            "io_uring" => Driver::IoUring,
            "epoll" => Driver::Epoll,
            other => {
                return Err(Problem::new(
                    "driver",
                    format!("unknown driver `{other}` (allowed: auto, io_uring, epoll)"),
                ));
            }
        },
    };
    let listeners = listeners(raw.listeners)?;
    let limits = limits(raw.limits.unwrap_or_default())?;
    let mut upstreams = Vec::new();
    for (name, u) in raw.upstreams.unwrap_or_default().0 {
        upstreams.push(upstream(name, u)?);
    }
    let routes = routes(
        raw.routes,
        &upstreams,
        limits.per_client.upgrades,
        &limits.messages,
    )?;
    let trusted_proxies = match raw.trusted_proxies {
        None => Vec::new(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                out.push(
                    network(&s.0).map_err(|m| Problem::new(format!("trusted_proxies[{i}]"), m))?,
                );
            }
            out
        }
    };
    let admin = match raw.admin {
        None => None,
        Some(a) => match a.bind {
            None => {
                return Err(Problem::new(
                    "admin.bind",
                    "missing: write e.g. `127.0.0.1:9900`",
                ));
            }
            Some(b) => Some(Admin {
                bind: address(&b.0, true).map_err(|m| Problem::new("admin.bind", m))?,
            }),
        },
    };
    if let Some(a) = &admin
        && listeners.iter().any(|l| l.bind == a.bind)
    {
        return Err(Problem::new(
            "admin.bind",
            format!(
                "{} is also a listener's address: give the admin endpoint its own",
                a.bind
            ),
        ));
    }
    let drain = drain(raw.drain.unwrap_or_default())?;
    let log_format = match raw.log_format.as_ref().map(|s| s.0.as_str()) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(Problem::new(
                "log_format",
                format!("`{other}` is not a log format (allowed: text, json)"),
            ));
        }
    };
    let log_interval = opt_timeout(raw.log_interval, "log_interval")?;
    let resolve_interval =
        opt_timeout(raw.resolve_interval, "resolve_interval")?.unwrap_or(Duration::from_secs(30));
    let redact_query = match raw.redact_query {
        None => DEFAULT_REDACTED_QUERY
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        Some(list) => list.into_iter().map(|s| s.0.to_ascii_lowercase()).collect(),
    };
    Ok(Config {
        workers,
        driver,
        listeners,
        limits,
        upstreams,
        routes,
        trusted_proxies,
        admin,
        drain,
        log_format,
        log_interval,
        redact_query,
        resolve_interval,
    })
}

fn drain(raw: RawDrain) -> Result<Drain> {
    let d = Drain::default();
    let period = match raw.period {
        None => d.period,
        // Zero is allowed: every WebSocket is closed at once.
        Some(s) => parse_duration(&s.0).map_err(|m| Problem::new("drain.period", m))?,
    };
    let timeout = opt_timeout(raw.timeout, "drain.timeout")?.unwrap_or(d.timeout.max(period));
    if timeout < period {
        return Err(Problem::new(
            "drain.timeout",
            format!(
                "{timeout:?} is shorter than drain.period ({period:?}): connections would be cut before their Close"
            ),
        ));
    }
    let close_code = match raw.close_code.as_ref().map(|s| s.0.as_str()) {
        None => d.close_code,
        Some("1001" | "going_away") => 1001,
        Some("1012" | "service_restart") => 1012,
        Some(other) => {
            return Err(Problem::new(
                "drain.close_code",
                format!(
                    "`{other}` is not allowed: write 1001 (going_away) or 1012 (service_restart)"
                ),
            ));
        }
    };
    Ok(Drain {
        period,
        timeout,
        close_code,
    })
}

/// An address range `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7`, a /32 or /128).
fn network(text: &str) -> std::result::Result<ipnet::IpNet, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    let net: ipnet::IpNet = text.parse().map_err(|_| {
        format!("`{text}` is not an address range: write e.g. `10.0.0.0/8`, `2001:db8::/32` or `192.0.2.7`")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits set: did you mean `{}`?",
            net.trunc()
        ));
    }
    Ok(net)
}

fn listeners(raw: Option<Vec<RawListener>>) -> Result<Vec<Listener>> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return Err(Problem::new(
            "listeners",
            "at least one listener is required, e.g. `- { name: public, bind: 127.0.0.1:8080 }`",
        ));
    }
    let mut out: Vec<Listener> = Vec::with_capacity(raw.len());
    for (i, l) in raw.into_iter().enumerate() {
        let path = format!("listeners[{i}]");
        let name = name(l.name, &join(&path, "name"), "listener")?;
        let bind_path = join(&path, "bind");
        let bind_text = l.bind.ok_or_else(|| {
            Problem::new(
                &bind_path,
                "missing required key `bind` (the host:port to listen on, e.g. 127.0.0.1:8080)",
            )
        })?;
        let bind = address(&bind_text.0, true).map_err(|m| Problem::new(&bind_path, m))?;
        if let Some(prev) = out.iter().find(|p| p.name == name) {
            return Err(Problem::new(
                join(&path, "name"),
                format!(
                    "duplicate listener name `{}`: names must be unique",
                    prev.name
                ),
            ));
        }
        if let Some(prev) = out.iter().find(|p| p.bind == bind && bind.port() != 0) {
            return Err(Problem::new(
                bind_path,
                format!("address {bind} is already used by listener `{}`", prev.name),
            ));
        }
        let tls = l
            .tls
            .map(|t| listener_tls(t, &join(&path, "tls")))
            .transpose()?;
        let redirect_path = join(&path, "redirect_https");
        let redirect_https = match l.redirect_https {
            None => None,
            Some(_) if tls.is_some() => {
                return Err(Problem::new(
                    redirect_path,
                    "`redirect_https` is for plain listeners; this one already speaks TLS",
                ));
            }
            Some(s) => match s.0.trim() {
                "false" => None,
                "true" => Some(443),
                text => Some(
                    text.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| {
                            Problem::new(
                                &redirect_path,
                                format!(
                                    "`{text}` is not a port: write the https port (e.g. 8443), or true for 443"
                                ),
                            )
                        })?,
                ),
            },
        };
        let proxy_protocol = match l.proxy_protocol {
            None => false,
            Some(s) => {
                parse_bool(&s.0).map_err(|m| Problem::new(join(&path, "proxy_protocol"), m))?
            }
        };
        out.push(Listener {
            name,
            bind,
            tls,
            redirect_https,
            proxy_protocol,
        });
    }
    Ok(out)
}

/// A listener's `tls:` block.
fn listener_tls(raw: RawListenerTls, path: &str) -> Result<ListenerTls> {
    let certs_path = join(path, "certificates");
    let raw_certs = raw.certificates.unwrap_or_default();
    if raw_certs.is_empty() {
        return Err(Problem::new(
            certs_path,
            "at least one certificate is required, e.g. `certificates: [{ cert: cert.pem, key: key.pem }]`",
        ));
    }
    let mut certificates = Vec::with_capacity(raw_certs.len());
    let mut default_certificate = None;
    for (i, c) in raw_certs.into_iter().enumerate() {
        let entry = format!("{certs_path}[{i}]");
        let file = |s: Option<Scalar>, key: &str, what: &str| -> Result<PathBuf> {
            let s = s.ok_or_else(|| {
                Problem::new(
                    join(&entry, key),
                    format!("missing required key `{key}` ({what})"),
                )
            })?;
            if s.0.trim().is_empty() {
                return Err(Problem::new(join(&entry, key), "empty file name"));
            }
            Ok(PathBuf::from(s.0.trim()))
        };
        let cert = file(c.cert, "cert", "the PEM certificate chain, leaf first")?;
        let key = file(c.key, "key", "the PEM private key")?;
        if let Some(d) = c.default {
            let is_default =
                parse_bool(&d.0).map_err(|m| Problem::new(join(&entry, "default"), m))?;
            if is_default {
                if let Some(prev) = default_certificate {
                    return Err(Problem::new(
                        join(&entry, "default"),
                        format!("certificates[{prev}] is already the default; only one may be"),
                    ));
                }
                default_certificate = Some(i);
            }
        }
        certificates.push(CertificateFiles {
            cert,
            key,
            yaml_path: entry,
        });
    }
    let unknown_sni = match raw.unknown_sni {
        None => UnknownSni::Default,
        Some(s) => match s.0.trim() {
            "default" => UnknownSni::Default,
            "refuse" => UnknownSni::Refuse,
            other => {
                return Err(Problem::new(
                    join(path, "unknown_sni"),
                    format!(
                        "unknown value `{other}` (allowed: default = serve the default certificate, \
                         refuse = the unrecognized_name alert)"
                    ),
                ));
            }
        },
    };
    let min_version = match raw.min_version {
        None => TlsVersion::V1_2,
        Some(s) => match s.0.trim() {
            "1.2" => TlsVersion::V1_2,
            "1.3" => TlsVersion::V1_3,
            other => {
                return Err(Problem::new(
                    join(path, "min_version"),
                    format!("unsupported TLS version `{other}` (allowed: \"1.2\", \"1.3\")"),
                ));
            }
        },
    };
    let session_tickets = match raw.session_tickets {
        None => true,
        Some(s) => parse_bool(&s.0).map_err(|m| Problem::new(join(path, "session_tickets"), m))?,
    };
    let session_cache = match raw.session_cache {
        None => 1024,
        Some(s) => count(
            &s,
            &join(path, "session_cache"),
            0,
            1_000_000,
            "sessions per worker (0 = off)",
        )?,
    };
    let client_auth = match raw.client_auth {
        None => None,
        Some(c) => {
            let at = join(path, "client_auth");
            let ca = c.ca.ok_or_else(|| {
                Problem::new(
                    join(&at, "ca"),
                    "missing required key `ca` (PEM bundle of the CAs client certificates chain to)",
                )
            })?;
            let required = match c.mode {
                None => true,
                Some(m) => match m.0.trim() {
                    "required" => true,
                    "optional" => false,
                    other => {
                        return Err(Problem::new(
                            join(&at, "mode"),
                            format!("unknown mode `{other}` (allowed: required, optional)"),
                        ));
                    }
                },
            };
            Some(ClientAuth {
                ca: PathBuf::from(ca.0.trim()),
                required,
            })
        }
    };
    Ok(ListenerTls {
        certificates,
        default_certificate: default_certificate.unwrap_or(0),
        unknown_sni,
        min_version,
        session_tickets,
        session_cache,
        client_auth,
    })
}

fn limits(raw: RawLimits) -> Result<Limits> {
    let d = Limits::default();
    Ok(Limits {
        handshake_timeout: opt_timeout(raw.handshake_timeout, "limits.handshake_timeout")?
            .unwrap_or(d.handshake_timeout),
        max_header_bytes: match raw.max_header_bytes {
            None => d.max_header_bytes,
            Some(s) => usize_size(&s, "limits.max_header_bytes", 256)?,
        },
        max_headers: match raw.max_headers {
            None => d.max_headers,
            Some(s) => count(
                &s,
                "limits.max_headers",
                1,
                10_000,
                "a number of header lines",
            )?,
        },
        max_connections: match raw.max_connections {
            None => d.max_connections,
            Some(s) => count(
                &s,
                "limits.max_connections",
                1,
                100_000_000,
                "a number of connections",
            )?,
        },
        close_timeout: opt_timeout(raw.close_timeout, "limits.close_timeout")?
            .unwrap_or(d.close_timeout),
        body_timeout: opt_timeout(raw.body_timeout, "limits.body_timeout")?
            .unwrap_or(d.body_timeout),
        body_min_rate: match raw.body_min_rate {
            None => d.body_min_rate,
            Some(s) => size(&s, "limits.body_min_rate", 0)?,
        },
        proxy_protocol_timeout: opt_timeout(
            raw.proxy_protocol_timeout,
            "limits.proxy_protocol_timeout",
        )?
        .unwrap_or(d.proxy_protocol_timeout),
        per_client: per_client(raw.per_client.unwrap_or_default())?,
        messages: match raw.messages {
            None => d.messages,
            Some(m) => message_limits(m, "limits.messages", &d.messages)?,
        },
    })
}

fn per_client(raw: RawPerClient) -> Result<PerClientLimits> {
    let d = PerClientLimits::default();
    let number = |s: Option<Scalar>, key: &str, min: u64, max: u64, what: &str, default: usize| {
        s.map_or(Ok(default), |s| {
            count(&s, &format!("limits.per_client.{key}"), min, max, what)
        })
    };
    let max_connections = number(
        raw.max_connections,
        "max_connections",
        0,
        1_000_000,
        "connections per client (0 = no limit)",
        d.max_connections as usize,
    )?;
    let upgrades = upgrade_rate(
        raw.upgrades_per_second,
        raw.upgrade_burst,
        "limits.per_client",
        d.upgrades,
    )?;
    let ipv4_prefix = number(
        raw.ipv4_prefix,
        "ipv4_prefix",
        1,
        32,
        "a prefix length",
        usize::from(d.ipv4_prefix),
    )?;
    let ipv6_prefix = number(
        raw.ipv6_prefix,
        "ipv6_prefix",
        1,
        128,
        "a prefix length",
        usize::from(d.ipv6_prefix),
    )?;
    let table_size = number(
        raw.table_size,
        "table_size",
        64,
        16_777_216,
        "client entries",
        d.table_size,
    )?;
    let exempt = match raw.exempt {
        None => d.exempt,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                out.push(
                    network(&s.0)
                        .map_err(|m| Problem::new(format!("limits.per_client.exempt[{i}]"), m))?,
                );
            }
            out
        }
    };
    Ok(PerClientLimits {
        max_connections: u32::try_from(max_connections).unwrap_or(u32::MAX),
        upgrades,
        ipv4_prefix: u8::try_from(ipv4_prefix).unwrap_or(32),
        ipv6_prefix: u8::try_from(ipv6_prefix).unwrap_or(128),
        table_size,
        exempt,
    })
}

/// `upgrades_per_second` (0 = no limit) and `upgrade_burst` under `at`; what is not written comes from `inherit`.
fn upgrade_rate(
    per_second: Option<Scalar>,
    burst: Option<Scalar>,
    at: &str,
    inherit: Option<UpgradeRate>,
) -> Result<Option<UpgradeRate>> {
    let per_second = match per_second {
        None => inherit.map(|r| r.per_second),
        Some(s) => {
            let n = count(
                &s,
                &join(at, "upgrades_per_second"),
                0,
                1_000_000,
                "upgrades per second (0 = no limit)",
            )?;
            NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))
        }
    };
    let burst_path = join(at, "upgrade_burst");
    let burst = match burst {
        None => inherit.map_or(UpgradeRate::DEFAULT.burst, |r| r.burst),
        Some(s) => {
            let n = count(&s, &burst_path, 1, 1_000_000, "upgrades at once")?;
            NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
        }
    };
    Ok(per_second.map(|per_second| UpgradeRate { per_second, burst }))
}

fn upstream(name_text: String, raw: RawUpstream) -> Result<Upstream> {
    let path = join("upstreams", &name_text);
    let name = name(Some(Scalar(name_text)), &path, "upstream")?;
    let servers_path = join(&path, "servers");
    let raw_servers = raw.servers.unwrap_or_default();
    if raw_servers.is_empty() {
        return Err(Problem::new(
            servers_path,
            "an upstream needs at least one server, e.g. `servers: [127.0.0.1:9001]`",
        ));
    }
    let mut servers: Vec<Server> = Vec::with_capacity(raw_servers.len());
    let mut schemes: Vec<(usize, bool)> = Vec::new();
    for (i, s) in raw_servers.into_iter().enumerate() {
        let spath = format!("{servers_path}[{i}]");
        let (server, tls_scheme) = server(s, &spath)?;
        if let Some(tls) = tls_scheme {
            schemes.push((i, tls));
        }
        if servers.iter().any(|p| p.address == server.address) {
            return Err(Problem::new(
                spath,
                format!(
                    "server {} is listed twice; raise its weight instead",
                    server.address
                ),
            ));
        }
        servers.push(server);
    }
    let hash_key = match raw.hash_key {
        None => None,
        Some(s) => Some(hash_key(&s.0).map_err(|m| Problem::new(join(&path, "hash_key"), m))?),
    };
    let balance = match (raw.balance.as_ref().map(|s| s.0.as_str()), hash_key) {
        (None | Some("round_robin"), None) => Balance::RoundRobin,
        (Some("least_conn"), None) => Balance::LeastConn,
        (Some("hash"), Some(k)) => Balance::Hash(k),
        (Some("hash"), None) => {
            return Err(Problem::new(
                join(&path, "balance"),
                "`balance: hash` needs `hash_key` (client_ip, header:NAME or cookie:NAME)",
            ));
        }
        (None | Some("round_robin" | "least_conn"), Some(_)) => {
            return Err(Problem::new(
                join(&path, "hash_key"),
                "`hash_key` is only used with `balance: hash`",
            ));
        }
        (Some(other), _) => {
            return Err(Problem::new(
                join(&path, "balance"),
                format!("unknown balance `{other}` (allowed: round_robin, least_conn, hash)"),
            ));
        }
    };
    let connect_timeout = opt_timeout(raw.connect_timeout, &join(&path, "connect_timeout"))?
        .unwrap_or(Duration::from_secs(3));
    let fail_cooldown = match raw.fail_cooldown {
        None => Duration::from_secs(10),
        Some(s) => {
            parse_duration(&s.0).map_err(|m| Problem::new(join(&path, "fail_cooldown"), m))?
        }
    };
    let max_attempts = match raw.max_attempts {
        None => servers.len(),
        Some(s) => count(
            &s,
            &join(&path, "max_attempts"),
            1,
            100,
            "a number of attempts",
        )?,
    };
    let tls_block = raw.tls.is_some();
    if let Some(&(i, _)) = schemes
        .iter()
        .find(|(_, tls)| *tls != (tls_block || schemes.iter().any(|(_, t)| *t)))
    {
        return Err(Problem::new(
            format!("{servers_path}[{i}]"),
            "all servers of a pool speak TLS or none does: do not mix ws:// / http:// with wss:// / https:// \
             (or with a `tls:` block)",
        ));
    }
    let tls = if tls_block || schemes.iter().any(|(_, t)| *t) {
        let raw_tls = raw.tls.unwrap_or_default();
        let tpath = join(&path, "tls");
        let server_name = match raw_tls.server_name {
            None => None,
            Some(s) => {
                let name = s.0.trim().to_ascii_lowercase();
                if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/') {
                    return Err(Problem::new(
                        join(&tpath, "server_name"),
                        format!("`{}` is not a server name", s.0),
                    ));
                }
                Some(name)
            }
        };
        Some(UpstreamTls {
            server_name,
            ca: raw_tls.ca.map(|s| PathBuf::from(s.0.trim())),
            insecure_skip_verify: match raw_tls.insecure_skip_verify {
                None => false,
                Some(s) => parse_bool(&s.0)
                    .map_err(|m| Problem::new(join(&tpath, "insecure_skip_verify"), m))?,
            },
        })
    } else {
        None
    };
    let health = raw
        .health
        .map(|h| health(h, &join(&path, "health")))
        .transpose()?;
    Ok(Upstream {
        name,
        servers,
        balance,
        connect_timeout,
        fail_cooldown,
        max_attempts,
        tls,
        health,
    })
}

fn health(raw: RawHealth, path: &str) -> Result<HealthCheck> {
    let sub = |k: &str| format!("{path}.{k}");
    let check_path = match raw.path {
        None => None,
        Some(p) if p.0.starts_with('/') => Some(p.0),
        Some(p) => {
            return Err(Problem::new(
                sub("path"),
                format!("`{}` must start with `/`", p.0),
            ));
        }
    };
    let kind = match (raw.kind.as_ref().map(|s| s.0.as_str()), check_path) {
        (None | Some("http"), Some(p)) => HealthKind::Http { path: p },
        (Some("websocket"), Some(p)) => HealthKind::WebSocket { path: p },
        (Some("websocket"), None) => HealthKind::WebSocket {
            path: "/".to_owned(),
        },
        (Some("http"), None) => HealthKind::Http {
            path: "/".to_owned(),
        },
        (None | Some("tcp"), None) => HealthKind::Tcp,
        (Some("tcp"), Some(_)) => {
            return Err(Problem::new(sub("path"), "a tcp check has no path"));
        }
        (Some(other), _) => {
            return Err(Problem::new(
                sub("type"),
                format!("unknown check `{other}` (allowed: http, websocket, tcp)"),
            ));
        }
    };
    let interval = opt_timeout(raw.interval, &sub("interval"))?.unwrap_or(Duration::from_secs(5));
    let timeout = opt_timeout(raw.timeout, &sub("timeout"))?
        .unwrap_or(Duration::from_secs(2))
        .min(interval);
    let times = |s: Option<Scalar>, key: &str, default: u32| -> Result<u32> {
        match s {
            None => Ok(default),
            Some(s) => Ok(count(&s, &sub(key), 1, 100, "a number of checks in a row")? as u32),
        }
    };
    Ok(HealthCheck {
        kind,
        interval,
        timeout,
        healthy_after: times(raw.healthy_after, "healthy_after", 2)?,
        unhealthy_after: times(raw.unhealthy_after, "unhealthy_after", 3)?,
    })
}

/// One server; the second value is `Some(true)` for `wss://`/`https://`, `Some(false)` for `ws://`/`http://`, `None`
/// without a scheme.
fn server(raw: RawServer, path: &str) -> Result<(Server, Option<bool>)> {
    let addr_path = join(path, "address");
    let text = raw.address.ok_or_else(|| {
        Problem::new(
            &addr_path,
            "missing required key `address` (host:port of the server)",
        )
    })?;
    let written = text.0.trim();
    let (scheme, hostport) = match written.split_once("://") {
        None => (None, written),
        Some(("wss" | "https", rest)) => (Some(true), rest),
        Some(("ws" | "http", rest)) => (Some(false), rest),
        Some((other, _)) => {
            return Err(Problem::new(
                &addr_path,
                format!(
                    "unknown scheme `{other}://` (allowed: ws://, wss://, http://, https://, or none)"
                ),
            ));
        }
    };
    let hostport = hostport.trim_end_matches('/');
    // A TLS server written without a port gets 443, a plain one 80.
    let with_port;
    let hostport = match (scheme, hostport.rsplit_once(':')) {
        (Some(tls), None) => {
            with_port = format!("{hostport}:{}", if tls { 443 } else { 80 });
            with_port.as_str()
        }
        (Some(tls), Some((_, p))) if p.ends_with(']') => {
            with_port = format!("{hostport}:{}", if tls { 443 } else { 80 });
            with_port.as_str()
        }
        _ => hostport,
    };
    let address = address(hostport, false).map_err(|m| Problem::new(&addr_path, m))?;
    let host = hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let weight = match raw.weight {
        None => NonZeroU32::MIN,
        Some(s) => {
            let wpath = join(path, "weight");
            let n = count(&s, &wpath, 1, 1_000_000, "a weight")?;
            u32::try_from(n)
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| Problem::new(wpath, "weight must be between 1 and 1000000"))?
        }
    };
    let max_connections = match raw.max_connections {
        None => None,
        Some(s) => {
            let n = count(
                &s,
                &join(path, "max_connections"),
                1,
                10_000_000,
                "connections to this server",
            )?;
            NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))
        }
    };
    Ok((
        Server {
            address,
            host,
            weight,
            max_connections,
        },
        scheme,
    ))
}

fn hash_key(text: &str) -> std::result::Result<HashKey, String> {
    const ALLOWED: &str = "allowed: client_ip, header:NAME, cookie:NAME";
    if text == "client_ip" {
        return Ok(HashKey::ClientIp);
    }
    if let Some((kind, name)) = text.split_once(':') {
        let name = name.trim();
        if !is_token(name) {
            return Err(format!(
                "`{text}`: `{name}` is not a valid {kind} name ({ALLOWED})"
            ));
        }
        match kind.trim() {
            "header" => return Ok(HashKey::Header(name.to_ascii_lowercase())),
            "cookie" => return Ok(HashKey::Cookie(name.to_owned())),
            _ => {}
        }
    }
    Err(format!("unknown hash key `{text}` ({ALLOWED})"))
}

fn routes(
    raw: Option<Vec<RawRoute>>,
    upstreams: &[Upstream],
    upgrades: Option<UpgradeRate>,
    limits: &MessageLimits,
) -> Result<RouteTable> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return Err(Problem::new(
            "routes",
            "at least one route is required, e.g. `- { path: /, echo: true }`",
        ));
    }
    let mut out: Vec<Route> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let route = route(r, &path, upstreams, upgrades, limits)?;
        if let Some(j) = out.iter().position(|prev| same_match(prev, &route)) {
            return Err(Problem::new(
                path,
                format!(
                    "matches exactly the same requests as routes[{j}] (same host, path and \
                     header), so it would never be used"
                ),
            ));
        }
        out.push(route);
    }
    Ok(RouteTable::new(out))
}

fn route(
    raw: RawRoute,
    path: &str,
    upstreams: &[Upstream],
    upgrades: Option<UpgradeRate>,
    limits: &MessageLimits,
) -> Result<Route> {
    let host = match raw.host {
        None => None,
        Some(s) => Some(host(&s.0).map_err(|m| Problem::new(join(path, "host"), m))?),
    };
    let path_prefix = match raw.path {
        None => "/".to_owned(),
        Some(s) => {
            let p = s.0;
            if !p.starts_with('/') {
                return Err(Problem::new(
                    join(path, "path"),
                    format!("path `{p}` must start with `/`"),
                ));
            }
            if p.bytes()
                .any(|b| b <= b' ' || b == b'?' || b == b'#' || b >= 0x7f)
            {
                return Err(Problem::new(
                    join(path, "path"),
                    format!("path `{p}` may not contain spaces, `?`, `#` or non-ASCII characters"),
                ));
            }
            p
        }
    };
    let header = match raw.header {
        None => None,
        Some(h) => Some(header(h, &join(path, "header"))?),
    };
    let echo = match raw.echo {
        None => false,
        Some(s) => parse_bool(&s.0).map_err(|m| Problem::new(join(path, "echo"), m))?,
    };
    let target = match (raw.upstream, echo) {
        (Some(_), true) => {
            return Err(Problem::new(
                join(path, "echo"),
                "a route has either `upstream: NAME` or `echo: true`, not both",
            ));
        }
        (None, true) => Target::Echo,
        (None, false) => {
            return Err(Problem::new(
                path,
                "a route needs a target: `upstream: NAME` or `echo: true`",
            ));
        }
        (Some(name), false) => match upstreams.iter().position(|u| u.name == name.0) {
            Some(i) => Target::Upstream(UpstreamId(i)),
            None => {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                let known = if known.is_empty() {
                    "no upstreams are defined".to_owned()
                } else {
                    format!("known: {}", known.join(", "))
                };
                return Err(Problem::new(
                    join(path, "upstream"),
                    format!("unknown upstream `{}` ({known})", name.0),
                ));
            }
        },
    };
    let websocket = websocket(
        raw.websocket.unwrap_or_default(),
        &join(path, "websocket"),
        limits,
    )?;
    let client_cert_header = match raw.client_cert_header {
        None => None,
        Some(s) if is_token(&s.0) => Some(s.0.to_ascii_lowercase()),
        Some(s) => {
            return Err(Problem::new(
                join(path, "client_cert_header"),
                format!("`{}` is not a valid header name", s.0),
            ));
        }
    };
    let auth = crate::auth::route_auth(raw.auth, &join(path, "auth"))?;
    let upgrade_rate = match raw.limits.and_then(|l: RawRouteLimits| l.per_client) {
        None => upgrades,
        Some(p) => upgrade_rate(
            p.upgrades_per_second,
            p.upgrade_burst,
            &join(path, "limits.per_client"),
            upgrades,
        )?,
    };
    Ok(Route {
        host,
        path_prefix,
        header,
        target,
        websocket,
        client_cert_header,
        auth: auth.map(std::sync::Arc::new),
        upgrade_rate,
    })
}

fn host(text: &str) -> std::result::Result<HostMatch, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !ok {
        return Err(format!(
            "`{text}` is not a host name: write `chat.example.com` or `*.example.com` \
             (no port, no scheme, `*` only as the first label)"
        ));
    }
    Ok(if wild {
        HostMatch::Wildcard(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_owned())
    })
}

fn header(raw: RawHeader, path: &str) -> Result<HeaderMatch> {
    let name = raw.name.ok_or_else(|| {
        Problem::new(
            join(path, "name"),
            "missing required key `name` (the header name)",
        )
    })?;
    let value = raw.value.ok_or_else(|| {
        Problem::new(
            join(path, "value"),
            "missing required key `value` (the exact value)",
        )
    })?;
    if !is_token(&name.0) {
        return Err(Problem::new(
            join(path, "name"),
            format!("`{}` is not a valid header name", name.0),
        ));
    }
    if value
        .0
        .bytes()
        .any(|b| (b < b' ' && b != b'\t') || b == 0x7f)
    {
        return Err(Problem::new(
            join(path, "value"),
            "header values may not contain control characters",
        ));
    }
    Ok(HeaderMatch {
        name: name.0.to_ascii_lowercase(),
        value: value.0,
    })
}

fn websocket(raw: RawWebSocket, path: &str, limits: &MessageLimits) -> Result<WebSocketSettings> {
    let d = WebSocketSettings::default();
    let p = |key: &str| join(path, key);
    let idle_timeout = opt_timeout(raw.idle_timeout, &p("idle_timeout"))?.unwrap_or(d.idle_timeout);
    let ping_interval = match raw.ping_interval {
        None => d.ping_interval,
        Some(s) if s.0 == "off" => None,
        Some(s) => Some(timeout(&s, &p("ping_interval"), " or `off`")?),
    };
    let pong_timeout = opt_timeout(raw.pong_timeout, &p("pong_timeout"))?.unwrap_or(d.pong_timeout);
    let max_frame_size = match raw.max_frame_size {
        None => d.max_frame_size,
        Some(s) => size(&s, &p("max_frame_size"), 1)?,
    };
    let max_message_size = match raw.max_message_size {
        None => d.max_message_size.max(max_frame_size),
        Some(s) => size(&s, &p("max_message_size"), 1)?,
    };
    if max_message_size < max_frame_size {
        return Err(Problem::new(
            p("max_message_size"),
            format!(
                "max_message_size ({}) is smaller than max_frame_size ({}); a message is one or \
                 more frames, so it must be at least as large",
                crate::units::format_size(max_message_size),
                crate::units::format_size(max_frame_size),
            ),
        ));
    }
    let allowed_origins = match raw.allowed_origins {
        None => None,
        Some(list) => Some(string_list(list, &p("allowed_origins"), origin, "origin")?),
    };
    let allowed_subprotocols = match raw.allowed_subprotocols {
        None => None,
        Some(list) => Some(string_list(
            list,
            &p("allowed_subprotocols"),
            |s| {
                if is_token(s) {
                    Ok(s.to_owned())
                } else {
                    Err(format!(
                        "`{s}` is not a valid subprotocol name (no spaces or separators)"
                    ))
                }
            },
            "subprotocol",
        )?),
    };
    let validate_utf8 = match raw.validate_utf8 {
        None => d.validate_utf8,
        Some(s) => parse_bool(&s.0).map_err(|m| Problem::new(p("validate_utf8"), m))?,
    };
    let limits = match raw.limits {
        None => *limits,
        Some(l) => message_limits(l, &p("limits"), limits)?,
    };
    Ok(WebSocketSettings {
        idle_timeout,
        ping_interval,
        pong_timeout,
        max_frame_size,
        max_message_size,
        allowed_origins,
        allowed_subprotocols,
        validate_utf8,
        limits,
    })
}

/// `limits.messages:` or a route's `websocket.limits:`, over `base` (the built-in default, or `limits.messages`).
fn message_limits(
    raw: RawMessageLimits,
    path: &str,
    base: &MessageLimits,
) -> Result<MessageLimits> {
    Ok(MessageLimits {
        from_client: match raw.from_client {
            None => base.from_client,
            Some(r) => direction_limits(r, &join(path, "from_client"), &base.from_client)?,
        },
        from_upstream: match raw.from_upstream {
            None => base.from_upstream,
            Some(r) => direction_limits(r, &join(path, "from_upstream"), &base.from_upstream)?,
        },
    })
}

/// Most messages per second: far above what one connection can carry.
const MAX_MESSAGES_PER_SECOND: u64 = 1_000_000_000;

fn direction_limits(
    raw: RawRateLimit,
    path: &str,
    base: &DirectionLimits,
) -> Result<DirectionLimits> {
    let p = |key: &str| join(path, key);
    let messages_per = |s: &Scalar, path: &str| {
        count(s, path, 1, MAX_MESSAGES_PER_SECOND, "a number of messages").map(|n| n as u64)
    };
    let bytes_per = |s: &Scalar, path: &str| match size(s, path, 0)? {
        0 => Err(Problem::new(
            path,
            "must be greater than zero: write a size such as `1MiB`, or `off` for no limit",
        )),
        n => Ok(n),
    };
    let messages = rate(
        (raw.messages_per_second, &p("messages_per_second")),
        (raw.message_burst, &p("message_burst")),
        base.messages,
        messages_per,
    )?;
    let bytes = rate(
        (raw.bytes_per_second, &p("bytes_per_second")),
        (raw.byte_burst, &p("byte_burst")),
        base.bytes,
        bytes_per,
    )?;
    let on_excess = match raw.on_excess.as_ref().map(|s| s.0.as_str()) {
        None => base.on_excess,
        Some("pause") => OnExcess::Pause,
        Some("close") => OnExcess::Close,
        Some(other) => {
            return Err(Problem::new(
                p("on_excess"),
                format!("unknown action `{other}` (allowed: pause, close)"),
            ));
        }
    };
    Ok(DirectionLimits {
        messages,
        bytes,
        on_excess,
    })
}

/// A rate and its burst, over `base`. A rate given here brings its own burst (default: one second's worth); a burst
/// alone resizes the inherited rate's bucket; `off` removes the rate.
fn rate(
    (per_second, rate_path): (Option<Scalar>, &str),
    (burst, burst_path): (Option<Scalar>, &str),
    base: Option<Rate>,
    parse: impl Fn(&Scalar, &str) -> Result<u64>,
) -> Result<Option<Rate>> {
    let rate_key = rate_path.rsplit('.').next().unwrap_or(rate_path);
    let burst_key = burst_path.rsplit('.').next().unwrap_or(burst_path);
    let per_second = match per_second {
        Some(s) if s.0 == "off" => {
            if burst.is_some() {
                return Err(Problem::new(
                    burst_path,
                    format!("`{burst_key}` with `{rate_key}: off`: remove one of them"),
                ));
            }
            return Ok(None);
        }
        Some(s) => Some(parse(&s, rate_path)?),
        None => None,
    };
    let burst = burst.map(|s| parse(&s, burst_path)).transpose()?;
    Ok(match (per_second, burst, base) {
        (Some(per_second), burst, _) => Some(Rate {
            per_second,
            burst: burst.unwrap_or(per_second),
        }),
        (None, Some(burst), Some(base)) => Some(Rate {
            per_second: base.per_second,
            burst,
        }),
        (None, Some(_), None) => {
            return Err(Problem::new(
                burst_path,
                format!("`{burst_key}` needs `{rate_key}` (a burst of what rate?)"),
            ));
        }
        (None, None, base) => base,
    })
}

fn origin(text: &str) -> std::result::Result<String, String> {
    if text == "*" {
        return Ok("*".to_owned());
    }
    let lower = text.to_ascii_lowercase();
    let valid = match lower.split_once("://") {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                && !rest.is_empty()
                && !rest.contains('/')
                && !rest.bytes().any(|b| b <= b' ')
        }
        None => false,
    };
    if valid {
        Ok(lower)
    } else {
        Err(format!(
            "`{text}` is not an origin: write scheme://host[:port] without a path, \
             e.g. `https://app.example.com`, or `*` for any"
        ))
    }
}

fn string_list(
    list: Vec<Scalar>,
    path: &str,
    each: impl Fn(&str) -> std::result::Result<String, String>,
    what: &str,
) -> Result<Vec<String>> {
    if list.is_empty() {
        return Err(Problem::new(
            path,
            format!("an empty list would refuse every {what}; remove the key to allow any"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, s) in list.into_iter().enumerate() {
        let v = each(&s.0).map_err(|m| Problem::new(format!("{path}[{i}]"), m))?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

// ----- scalar helpers -----

fn name(raw: Option<Scalar>, path: &str, what: &str) -> Result<String> {
    let s = raw.ok_or_else(|| {
        Problem::new(
            path,
            format!("missing required key `name` (the {what}'s name)"),
        )
    })?;
    let ok = !s.0.is_empty()
        && s.0.len() <= 64
        && s.0
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(s.0)
    } else {
        Err(Problem::new(
            path,
            format!(
                "`{}` is not a valid {what} name: use 1 to 64 letters, digits, `_`, `-` or `.`",
                s.0
            ),
        ))
    }
}

fn count(s: &Scalar, path: &str, min: u64, max: u64, what: &str) -> Result<usize> {
    let n = parse_count(&s.0)
        .map_err(|m| Problem::new(path, format!("{m}: expected {what} from {min} to {max}")))?;
    if n < min || n > max {
        return Err(Problem::new(
            path,
            format!("{n} is out of range: expected {what} from {min} to {max}"),
        ));
    }
    usize::try_from(n).map_err(|_| Problem::new(path, format!("{n} is too large")))
}

fn size(s: &Scalar, path: &str, min: u64) -> Result<u64> {
    let n = parse_size(&s.0).map_err(|m| Problem::new(path, m))?;
    if n == 0 && min > 0 {
        return Err(Problem::new(
            path,
            "must be greater than zero: write a size such as `64KiB`",
        ));
    }
    if n < min {
        return Err(Problem::new(
            path,
            format!("must be at least {min} bytes (got {n})"),
        ));
    }
    Ok(n)
}

fn usize_size(s: &Scalar, path: &str, min: u64) -> Result<usize> {
    let n = size(s, path, min)?;
    usize::try_from(n).map_err(|_| Problem::new(path, format!("{n} is too large")))
}

/// A duration that must be positive.
fn timeout(s: &Scalar, path: &str, alternative: &str) -> Result<Duration> {
    let d = parse_duration(&s.0).map_err(|m| Problem::new(path, m))?;
    if d.is_zero() {
        return Err(Problem::new(
            path,
            format!("must be greater than zero: write a duration such as `30s`{alternative}"),
        ));
    }
    Ok(d)
}

fn opt_timeout(s: Option<Scalar>, path: &str) -> Result<Option<Duration>> {
    s.map(|s| timeout(&s, path, "")).transpose()
}

thread_local! {
    /// Set by [`crate::parse_offline`]: names other than `localhost` are not looked up (the fuzz target must not
    /// send DNS queries).
    pub(crate) static OFFLINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `host:port`. IP literals and `localhost` resolve without DNS; other names are resolved now.
fn address(text: &str, allow_port_zero: bool) -> std::result::Result<SocketAddr, String> {
    const FORM: &str = "write host:port, e.g. `127.0.0.1:9001`, `[::1]:9001` or `localhost:9001`";
    let text = text.trim();
    let (host, port) = match text.rsplit_once(':') {
        Some(parts) => parts,
        None => return Err(format!("`{text}` has no port: {FORM}")),
    };
    let port: u16 = match port.parse() {
        Ok(p) if p != 0 || allow_port_zero => p,
        _ => {
            let lowest = if allow_port_zero { 0 } else { 1 };
            return Err(format!(
                "`{text}`: port `{port}` is not a number from {lowest} to 65535"
            ));
        }
    };
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| SocketAddr::new(IpAddr::V6(ip), port))
            .map_err(|_| format!("`{inner}` is not an IPv6 address: {FORM}"));
    }
    if host.contains(':') {
        return Err(format!(
            "`{text}`: IPv6 addresses need brackets, e.g. `[::1]:9001`"
        ));
    }
    if host.is_empty() {
        return Err(format!("`{text}` has no host: {FORM}"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(format!("`{host}` is not a host name or IP address: {FORM}"));
    }
    if OFFLINE.get() {
        return Err(format!("cannot resolve `{host}`: offline"));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("`{host}` resolved to no address")),
        Err(e) => Err(format!("cannot resolve `{host}`: {e}")),
    }
}

/// RFC 9110 token characters (header names, subprotocols, cookie names).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            address("127.0.0.1:9001", false),
            Ok("127.0.0.1:9001".parse().unwrap())
        );
        assert_eq!(address("[::1]:80", false), Ok("[::1]:80".parse().unwrap()));
        assert_eq!(
            address("localhost:8080", false),
            Ok("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(address("0.0.0.0:0", true), Ok("0.0.0.0:0".parse().unwrap()));
        assert!(
            address("127.0.0.1:0", false)
                .unwrap_err()
                .contains("from 1 to 65535")
        );
        assert!(
            address("127.0.0.1", false)
                .unwrap_err()
                .contains("has no port")
        );
        assert!(address("127.0.0.1:99999", false).is_err());
        assert!(address("::1:80", false).unwrap_err().contains("brackets"));
        assert!(
            address("[zz]:80", false)
                .unwrap_err()
                .contains("not an IPv6")
        );
        assert!(address("bad host:80", false).is_err());
    }

    #[test]
    fn tls_servers_take_their_scheme_default_port_and_host() {
        let cfg = crate::parse(
            "listeners: [{name: p, bind: 127.0.0.1:0}]\nupstreams:\n  s:\n    servers: [\"wss://localhost\", \"https://127.0.0.1:9443/\"]\n\
             routes: [{path: /, upstream: s}]\n",
            "t.yaml",
        )
        .unwrap();
        let u = &cfg.upstreams[0];
        assert_eq!(u.tls, Some(UpstreamTls::default()));
        assert_eq!(u.servers[0].address.port(), 443);
        assert_eq!(u.servers[0].host, "localhost");
        assert_eq!(u.servers[1].address, "127.0.0.1:9443".parse().unwrap());
        let plain = crate::parse(
            "listeners: [{name: p, bind: 127.0.0.1:0}]\nupstreams:\n  s:\n    servers: [\"ws://[::1]\"]\n\
             routes: [{path: /, upstream: s}]\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(plain.upstreams[0].tls, None);
        assert_eq!(
            plain.upstreams[0].servers[0].address,
            "[::1]:80".parse().unwrap()
        );
    }

    #[test]
    fn offline_parsing_looks_no_name_up_and_restores_resolution() {
        let yaml = "listeners: [{name: p, bind: 127.0.0.1:0}]\nupstreams:\n  s:\n    servers: [backend.invalid:80]\n\
                    routes: [{path: /, upstream: s}]\n";
        let e = crate::parse_offline(yaml, "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot resolve `backend.invalid`: offline"),
            "{e}"
        );
        assert!(!OFFLINE.get());
        let local = yaml.replace("backend.invalid", "localhost");
        assert!(crate::parse_offline(&local, "t.yaml").is_ok());
    }

    #[test]
    fn proxy_protocol_is_off_unless_a_listener_asks_and_its_timeout_defaults_to_5s() {
        let cfg = crate::parse(
            "listeners:\n  - {name: lb, bind: 127.0.0.1:0, proxy_protocol: true}\n  - {name: d, bind: 127.0.0.1:0}\n\
             routes: [{echo: true}]\n",
            "t.yaml",
        )
        .unwrap();
        assert!(cfg.listeners[0].proxy_protocol);
        assert!(!cfg.listeners[1].proxy_protocol);
        assert_eq!(cfg.limits.proxy_protocol_timeout, Duration::from_secs(5));
        assert!(
            cfg.summary()
                .contains("PROXY protocol header (v1/v2) required within 5s")
        );
    }

    #[test]
    fn a_tls_listener_defaults_to_the_first_pair_and_safe_settings() {
        let cfg = crate::parse(
            "listeners:\n  - name: p\n    bind: 127.0.0.1:0\n    tls:\n      certificates: [{cert: a.pem, key: a.key}, {cert: b.pem, key: b.key}]\n\
             routes: [{path: /, echo: true}]\n",
            "t.yaml",
        )
        .unwrap();
        let tls = cfg.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.default_certificate, 0);
        assert_eq!(tls.unknown_sni, UnknownSni::Default);
        assert_eq!(tls.min_version, TlsVersion::V1_2);
        assert!(tls.session_tickets);
        assert_eq!(tls.session_cache, 1024);
        assert_eq!(
            tls.certificates[1].yaml_path,
            "listeners[0].tls.certificates[1]"
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host("Chat.Example.com"),
            Ok(HostMatch::Exact("chat.example.com".into()))
        );
        assert_eq!(
            host("*.example.com"),
            Ok(HostMatch::Wildcard(".example.com".into()))
        );
        assert!(host("example.com:8080").is_err());
        assert!(host("a.*.com").is_err());
        assert!(host("*").is_err());
        assert!(host("https://x").is_err());
    }

    #[test]
    fn hash_keys() {
        assert_eq!(hash_key("client_ip"), Ok(HashKey::ClientIp));
        assert_eq!(
            hash_key("header:X-User"),
            Ok(HashKey::Header("x-user".into()))
        );
        assert_eq!(hash_key("cookie:sid"), Ok(HashKey::Cookie("sid".into())));
        assert!(hash_key("header:").is_err());
        assert!(hash_key("query:x").is_err());
        assert!(hash_key("ip").is_err());
    }

    #[test]
    fn message_limits_inherit_key_by_key_and_a_rate_brings_its_own_burst() {
        let text = "listeners: [{name: a, bind: 127.0.0.1:0}]\n\
                    limits: {messages: {from_client: {messages_per_second: 100, message_burst: 300, \
                    bytes_per_second: 1MiB, on_excess: close}}}\n\
                    routes:\n\
                    - {path: /a, echo: true}\n\
                    - {path: /b, echo: true, websocket: {limits: {from_client: {messages_per_second: 10}}}}\n\
                    - {path: /c, echo: true, websocket: {limits: {from_client: {message_burst: 5, \
                    bytes_per_second: off, on_excess: pause}}}}\n";
        let cfg = crate::parse(text, "t.yaml").unwrap();
        let rate = |per_second, burst| Some(Rate { per_second, burst });
        let client = |p: &str| {
            cfg.routes
                .iter()
                .find(|r| r.path_prefix == p)
                .unwrap()
                .websocket
                .limits
                .from_client
        };
        let (a, b, c) = (client("/a"), client("/b"), client("/c"));
        assert_eq!(a.messages, rate(100, 300));
        assert_eq!(a.bytes, rate(1 << 20, 1 << 20), "burst: one second's worth");
        assert_eq!(a.on_excess, OnExcess::Close);
        assert_eq!(
            b.messages,
            rate(10, 10),
            "a new rate does not inherit the old burst"
        );
        assert_eq!((b.bytes, b.on_excess), (a.bytes, OnExcess::Close));
        assert_eq!(
            c.messages,
            rate(100, 5),
            "a burst alone resizes the inherited rate"
        );
        assert_eq!((c.bytes, c.on_excess), (None, OnExcess::Pause));
        assert!(!cfg.limits.messages.from_upstream.any());
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://App.example.com"),
            Ok("https://app.example.com".into())
        );
        assert_eq!(origin("*"), Ok("*".into()));
        assert!(origin("https://app.example.com/").is_err());
        assert!(origin("app.example.com").is_err());
    }
}
