//! Active health checks of upstream servers (`health:` of a pool): an HTTP GET, a WebSocket upgrade or a TCP
//! connect, every `interval`, each server checked by one worker only.
//!
//! Owns: the up/down decision from consecutive results ([`Tracker`], sans-IO), the board every worker's balancer
//! reads ([`HealthBoard`]: one atomic flag per server, written by the checking worker only, read with a relaxed load
//! when a server is picked), which worker checks which server, and the checks themselves. Does not own: passive
//! health (the balancer's cooldown after a failed connect), picking (`super::balancer`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use ringway_config::{Config, HealthCheck, HealthKind};

use super::stream::UpstreamStream;
use crate::tls::connect::TlsConnector;

/// Consecutive results of one server's checks, and whether it is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracker {
    up: bool,
    streak: u32,
}

impl Default for Tracker {
    /// A server starts up: checks take it out, not the gateway's start.
    fn default() -> Self {
        Self {
            up: true,
            streak: 0,
        }
    }
}

impl Tracker {
    /// Counts one result; `Some(up)` when the server changes state.
    pub(crate) fn record(&mut self, ok: bool, check: &HealthCheck) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok {
            check.healthy_after
        } else {
            check.unhealthy_after
        };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// Per pool, per server: is it up by its active checks (always up for pools without checks).
#[derive(Debug)]
pub(crate) struct HealthBoard {
    pools: Vec<(String, Vec<(SocketAddr, AtomicBool)>)>,
}

impl HealthBoard {
    /// The board for `config`, keeping the state of servers `previous` had (same pool name and address).
    pub(crate) fn new(config: &Config, previous: Option<&HealthBoard>) -> Self {
        let pools = config
            .upstreams
            .iter()
            .map(|u| {
                let servers = u
                    .servers
                    .iter()
                    .map(|s| {
                        let up = previous
                            .and_then(|p| p.get(&u.name, s.address))
                            .unwrap_or(true);
                        (s.address, AtomicBool::new(up))
                    })
                    .collect();
                (u.name.clone(), servers)
            })
            .collect();
        Self { pools }
    }

    fn get(&self, pool: &str, address: SocketAddr) -> Option<bool> {
        self.pools
            .iter()
            .find(|(n, _)| n == pool)
            .and_then(|(_, s)| s.iter().find(|(a, _)| *a == address))
            .map(|(_, up)| up.load(Ordering::Relaxed))
    }

    /// Whether server `server` of pool `pool` (indexes into the config) is up.
    pub(crate) fn is_up(&self, pool: usize, server: usize) -> bool {
        self.pools
            .get(pool)
            .and_then(|(_, s)| s.get(server))
            .is_none_or(|(_, up)| up.load(Ordering::Relaxed))
    }

    fn set(&self, pool: usize, server: usize, up: bool) {
        if let Some((_, flag)) = self.pools.get(pool).and_then(|(_, s)| s.get(server)) {
            flag.store(up, Ordering::Relaxed);
        }
    }

    /// `(pool, server address, up)` for every server of a pool with checks, for the scrape.
    pub(crate) fn states<'a>(
        &'a self,
        config: &'a Config,
    ) -> impl Iterator<Item = (&'a str, SocketAddr, bool)> + 'a {
        self.pools
            .iter()
            .zip(&config.upstreams)
            .filter(|(_, u)| u.health.is_some())
            .flat_map(|((name, servers), _)| {
                servers
                    .iter()
                    .map(move |(a, up)| (name.as_str(), *a, up.load(Ordering::Relaxed)))
            })
    }
}

/// Which worker checks a server: spread by pool name and address, so each is checked by exactly one worker.
pub(crate) fn checker_of(pool: &str, address: SocketAddr, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pool.bytes().chain(address.to_string().bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// One check: `Ok` when the server passes, the reason otherwise.
pub(crate) async fn check(
    address: SocketAddr,
    host: &str,
    check: &HealthCheck,
    tls: Option<&TlsConnector>,
) -> Result<(), String> {
    let deadline = Instant::now() + check.timeout;
    let attempt = async {
        let tcp = TcpStream::connect_addr(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut stream = match tls {
            None => UpstreamStream::Plain(tcp),
            Some(t) => UpstreamStream::Tls(Box::new(t.handshake(tcp, host, deadline).await?)),
        };
        let request = match &check.kind {
            HealthKind::Tcp => return Ok(()),
            HealthKind::Http { path } => format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringway-health-check\r\nConnection: close\r\n\r\n"
            ),
            HealthKind::WebSocket { path } => format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringway-health-check\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: cmluZ3dheS1oZWFsdGgtaw==\r\n\r\n"
            ),
        };
        let (res, _) = stream.write_all(request.into_bytes()).await;
        res.map_err(|e| format!("write: {e}"))?;
        let mut got = Vec::with_capacity(256);
        while !got.windows(2).any(|w| w == b"\r\n") && got.len() < 1024 {
            let buf = Vec::with_capacity(512);
            let (res, buf) = stream.read(buf).await;
            match res {
                Ok(0) => return Err("closed before answering".to_owned()),
                Ok(_) => got.extend_from_slice(&buf),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        let status = status_code(&got).ok_or("not an HTTP answer")?;
        let ok = match check.kind {
            HealthKind::WebSocket { .. } => status == 101,
            _ => (200..400).contains(&status),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    match monoio::time::timeout(check.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

/// The status code of an HTTP/1.x status line.
fn status_code(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// What one worker remembers of the servers it checks.
#[derive(Default)]
pub(crate) struct Checks {
    state: HashMap<(String, SocketAddr), (Tracker, Instant)>,
}

impl Checks {
    /// The servers this worker must check now: `(pool index, server index)`; their next check is scheduled.
    pub(crate) fn due(
        &mut self,
        config: &Config,
        worker: usize,
        workers: usize,
        now: Instant,
    ) -> Vec<(usize, usize)> {
        let mut due = Vec::new();
        for (p, u) in config.upstreams.iter().enumerate() {
            let Some(check) = &u.health else { continue };
            for (s, server) in u.servers.iter().enumerate() {
                if checker_of(&u.name, server.address, workers) != worker {
                    continue;
                }
                let entry = self
                    .state
                    .entry((u.name.clone(), server.address))
                    .or_insert((Tracker::default(), now));
                if now >= entry.1 {
                    entry.1 = now + check.interval;
                    due.push((p, s));
                }
            }
        }
        due
    }

    /// Records a result; logs and updates the board when the server changes state.
    pub(crate) fn record(
        &mut self,
        config: &Config,
        board: &HealthBoard,
        (pool, server): (usize, usize),
        result: Result<(), String>,
    ) -> Option<bool> {
        let u = config.upstreams.get(pool)?;
        let check = u.health.as_ref()?;
        let address = u.servers.get(server)?.address;
        let (tracker, _) = self.state.get_mut(&(u.name.clone(), address))?;
        let changed = tracker.record(result.is_ok(), check);
        match (changed, &result) {
            (Some(false), Err(reason)) => {
                tracing::info!(upstream = %u.name, server = %address, reason = %reason, "upstream server marked down (health check)");
            }
            (Some(true), _) => {
                tracing::info!(upstream = %u.name, server = %address, "upstream server back up (health check)");
            }
            (None, Err(reason)) => {
                tracing::debug!(upstream = %u.name, server = %address, reason = %reason, "health check failed");
            }
            _ => {}
        }
        if let Some(up) = changed {
            board.set(pool, server, up);
        }
        changed
    }
}

/// How often a worker looks for due checks.
pub(crate) const CHECK_TICK: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> HealthCheck {
        HealthCheck {
            kind: HealthKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_after: 2,
            unhealthy_after: 3,
        }
    }

    #[test]
    fn a_server_goes_down_after_unhealthy_after_failures_and_back_after_healthy_after_passes() {
        let c = check();
        let mut t = Tracker::default();
        assert_eq!(t.record(false, &c), None);
        assert_eq!(t.record(false, &c), None);
        assert_eq!(t.record(true, &c), None, "a pass resets the failure streak");
        assert_eq!(t.record(false, &c), None);
        assert_eq!(t.record(false, &c), None);
        assert_eq!(t.record(false, &c), Some(false));
        assert_eq!(t.record(false, &c), None, "already down");
        assert_eq!(t.record(true, &c), None);
        assert_eq!(t.record(true, &c), Some(true));
    }

    #[test]
    fn status_lines_are_read_strictly() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 101 x\r\n"), Some(101));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 abc\r\n"), None);
    }

    #[test]
    fn every_server_has_exactly_one_checker() {
        let a: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
        for workers in 1..8 {
            let w = checker_of("pool", a, workers);
            assert!(w < workers);
            assert_eq!(w, checker_of("pool", a, workers), "stable");
        }
    }
}
