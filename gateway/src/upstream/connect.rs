//! Opening TCP connections to an upstream pool: pick a server with the pool's [`Balancer`], connect within the
//! pool's `connect_timeout`, and on failure mark the server for passive health and try the next one.
//!
//! Owns: the connect-and-retry loop and the mapping of connect failures to 502 / 503 / 504. A refused or timed-out
//! connect is the server's fault and marks it failed; running out of local resources (descriptors, memory,
//! ephemeral ports) is the gateway's and leaves every server's health alone.
//! Does not own: what is sent on the connection (HTTP in `crate::http_proxy`, the WebSocket handshake in
//! `crate::ws::dial`), nor keep-alive pooling (`super::pool`).
//!
//! `tried` accumulates the servers that failed for one client request or connection, across calls: a caller that
//! gives up on a connection after it opened (say the upstream's WebSocket handshake failed) pushes the server and
//! calls [`connect`] again. At most `max_attempts` servers are tried in total.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;
use ringway_config::Upstream;

use super::balancer::{ActiveGuard, Balancer};
use super::stream::UpstreamStream;
use crate::tls::connect::TlsConnector;

/// An open connection to one server of a pool.
#[derive(Debug)]
pub(crate) struct UpstreamConn {
    pub(crate) stream: UpstreamStream,
    /// Index of the server in the pool (for `Balancer::mark_failed` and pooling).
    pub(crate) server: usize,
    /// Counts this connection as active on the server (least_conn) until dropped.
    pub(crate) guard: ActiveGuard,
}

/// Why no upstream connection could be opened. [`ConnectError::status`] is what the client gets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConnectError {
    /// Every server is cooling down after a failure (or the pool is empty): 503.
    #[error("no healthy upstream server")]
    NoHealthyServer,
    /// The last attempt was refused or failed: 502.
    #[error("connecting to {address} failed: {source}")]
    Failed {
        address: SocketAddr,
        source: io::Error,
    },
    /// The last attempt did not complete within `connect_timeout`: 504.
    #[error("connecting to upstream timed out")]
    TimedOut,
    /// The TLS handshake with the last server failed (a certificate that does not verify, no common version...):
    /// 502.
    #[error("TLS to {address} failed: {reason}")]
    Tls { address: SocketAddr, reason: String },
    /// Every server the request could use holds its `max_connections`: 503 (with `Retry-After`), and no server is
    /// blamed.
    #[error("every upstream server is at its max_connections")]
    Full,
    /// `max_attempts` servers were already tried for this request before this call: 502.
    #[error("gave up after {0} upstream attempts")]
    Exhausted(usize),
    /// The gateway itself is out of descriptors, memory or local ports (EMFILE, ENFILE, ENOBUFS, ENOMEM,
    /// EADDRNOTAVAIL): 503, and no server is blamed.
    #[error("gateway out of local resources for an upstream connect: {0}")]
    LocalResources(io::Error),
}

impl ConnectError {
    /// The HTTP status for the client.
    pub(crate) fn status(&self) -> u16 {
        match self {
            ConnectError::NoHealthyServer
            | ConnectError::LocalResources(_)
            | ConnectError::Full => 503,
            ConnectError::Failed { .. } | ConnectError::Exhausted(_) | ConnectError::Tls { .. } => {
                502
            }
            ConnectError::TimedOut => 504,
        }
    }
}

/// Connects to a server of `upstream`, trying further servers on failure until `upstream.max_attempts` servers are
/// in `tried`. `key` is the request's hash input (`super::hash_input`) for hash pools.
///
/// Errors: [`ConnectError::NoHealthyServer`] when no attempt could be made (an empty pool);
/// [`ConnectError::LocalResources`] at once when the gateway is out of descriptors (other servers would fail the
/// same way); otherwise the error of the last attempt.
pub(crate) async fn connect(
    balancer: &Rc<Balancer>,
    upstream: &Upstream,
    tls: Option<&TlsConnector>,
    key: Option<u64>,
    tried: &mut Vec<usize>,
) -> Result<UpstreamConn, ConnectError> {
    let max_attempts = upstream.max_attempts.max(1);
    if tried.len() >= max_attempts {
        return Err(ConnectError::Exhausted(tried.len()));
    }
    let mut last = None;
    // A server that filled up between its pick and its count is skipped by the next pick; this bounds the retries
    // should counts keep moving under us.
    let mut raced = 0;
    while tried.len() < max_attempts {
        let Some(server) = balancer.pick(key, tried, Instant::now()) else {
            if last.is_none() && balancer.has_full(tried) {
                last = Some(ConnectError::Full);
            }
            break;
        };
        match connect_to(balancer, upstream, tls, server, tried).await {
            Ok(conn) => return Ok(conn),
            Err(e @ ConnectError::LocalResources(_)) => return Err(e),
            Err(ConnectError::Full) if raced < balancer.server_count() => raced += 1,
            Err(e) => last = Some(e),
        }
    }
    if matches!(last, Some(ConnectError::Full)) {
        balancer.count_full();
    }
    Err(last.unwrap_or(ConnectError::NoHealthyServer))
}

/// One attempt on `server` (already chosen by the caller): connects within `connect_timeout`, sets TCP_NODELAY
/// and, for a TLS pool, completes the TLS handshake within the same timeout. On failure the server is marked failed
/// (passive health) and pushed to `tried`, unless the failure is the gateway's own
/// ([`ConnectError::LocalResources`]).
pub(crate) async fn connect_to(
    balancer: &Rc<Balancer>,
    upstream: &Upstream,
    tls: Option<&TlsConnector>,
    server: usize,
    tried: &mut Vec<usize>,
) -> Result<UpstreamConn, ConnectError> {
    let address = balancer.address(server);
    let Some(guard) = balancer.acquire(server) else {
        return Err(ConnectError::Full);
    };
    let began = Instant::now();
    let deadline = began + upstream.connect_timeout;
    let result =
        monoio::time::timeout(upstream.connect_timeout, TcpStream::connect_addr(address)).await;
    let error = match result {
        Ok(Ok(tcp)) => {
            // Nagle only delays small proxied writes; failing to disable it is harmless.
            let _ = tcp.set_nodelay(true);
            let stream = match tls {
                None => Ok(UpstreamStream::Plain(tcp)),
                Some(tls) => {
                    let host = upstream.servers.get(server).map_or("", |s| s.host.as_str());
                    tls.handshake(tcp, host, deadline)
                        .await
                        .map(|s| UpstreamStream::Tls(Box::new(s)))
                }
            };
            match stream {
                Ok(stream) => {
                    balancer.count_connect(Some(began.elapsed()));
                    balancer.mark_ok(server);
                    return Ok(UpstreamConn {
                        stream,
                        server,
                        guard,
                    });
                }
                Err(reason) => {
                    tracing::warn!(upstream = %upstream.name, %address, "upstream TLS failed: {reason}");
                    ConnectError::Tls { address, reason }
                }
            }
        }
        Ok(Err(source)) if is_local_exhaustion(&source) => {
            tracing::warn!(upstream = %upstream.name, %address, error = %source, "cannot open an upstream connection: the gateway is out of local resources");
            return Err(ConnectError::LocalResources(source));
        }
        Ok(Err(source)) => ConnectError::Failed { address, source },
        Err(_elapsed) => ConnectError::TimedOut,
    };
    tracing::debug!(upstream = %upstream.name, %address, error = %error, "upstream connect failed");
    balancer.count_connect(None);
    balancer.mark_failed(server, Instant::now());
    tried.push(server);
    Err(error)
}

/// Errors that say the gateway, not the server, ran out of something.
pub(crate) fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use ringway_config::{Balance, Server};

    use super::*;

    fn upstream(addresses: &[SocketAddr], max_attempts: usize) -> Upstream {
        Upstream {
            name: "u".into(),
            servers: addresses
                .iter()
                .map(|&address| Server {
                    address,
                    host: "127.0.0.1".into(),
                    weight: NonZeroU32::new(1).unwrap(),
                    max_connections: None,
                })
                .collect(),
            balance: Balance::RoundRobin,
            connect_timeout: Duration::from_secs(2),
            fail_cooldown: Duration::from_secs(30),
            max_attempts,
            tls: None,
            health: None,
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// An address nothing listens on: bind a port, then free it.
    fn dead_address() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    #[test]
    fn skips_a_dead_server_and_marks_it() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = dead_address();
        let u = upstream(&[dead, live.local_addr().unwrap()], 2);
        let b = Rc::new(Balancer::new(&u));
        run(async {
            let mut tried = Vec::new();
            let conn = connect(&b, &u, None, None, &mut tried).await.unwrap();
            assert_eq!(conn.server, 1);
            assert_eq!(tried, vec![0]);
            assert_eq!(b.active(1), 1);
            drop(conn);
            assert_eq!(b.active(1), 0);
            assert_eq!(b.active(0), 0, "failed attempt released its count");
            // The dead server is cooling: the next request goes straight to the live one.
            let mut tried = Vec::new();
            let conn = connect(&b, &u, None, None, &mut tried).await.unwrap();
            assert_eq!((conn.server, tried.len()), (1, 0));
        });
    }

    #[test]
    fn all_dead_is_502_and_cooling_servers_are_still_tried() {
        let u = upstream(&[dead_address(), dead_address()], 2);
        let b = Rc::new(Balancer::new(&u));
        run(async {
            let mut tried = Vec::new();
            let err = connect(&b, &u, None, None, &mut tried).await.unwrap_err();
            assert_eq!(err.status(), 502, "{err}");
            assert_eq!(tried.len(), 2);
            // Both are cooling: they are tried again rather than answered 503 unseen.
            let mut tried = Vec::new();
            let err = connect(&b, &u, None, None, &mut tried).await.unwrap_err();
            assert_eq!(err.status(), 502, "{err}");
            assert_eq!(tried.len(), 2);
        });
    }

    #[test]
    fn running_out_of_descriptors_is_503_and_blames_no_server() {
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_local_exhaustion(&e));
        assert_eq!(ConnectError::LocalResources(e).status(), 503);
        assert!(!is_local_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
    }

    #[test]
    fn max_attempts_bounds_tries_across_calls() {
        let u = upstream(&[dead_address(), dead_address(), dead_address()], 1);
        let b = Rc::new(Balancer::new(&u));
        run(async {
            let mut tried = Vec::new();
            assert_eq!(
                connect(&b, &u, None, None, &mut tried)
                    .await
                    .unwrap_err()
                    .status(),
                502
            );
            assert_eq!(tried.len(), 1, "one attempt only");
            let err = connect(&b, &u, None, None, &mut tried).await.unwrap_err();
            assert!(matches!(err, ConnectError::Exhausted(1)), "{err}");
        });
    }
}
