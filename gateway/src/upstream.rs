//! Opening TCP connections to an upstream pool: pick a server with the pool's [`Balancer`], connect within the
//! pool's `connect_timeout`, and on failure mark the server for passive health and try the next one.
//!
//! Owns: the connect-and-retry loop and the mapping of connect failures to 502 / 503 / 504.
//! Does not own: what is sent on the connection (HTTP in `crate::http_proxy`, the WebSocket handshake in
//! `crate::ws_upstream`), nor keep-alive pooling (`crate::http_proxy::UpstreamPool`).
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

use crate::balancer::{ActiveGuard, Balancer};

/// An open connection to one server of a pool.
#[derive(Debug)]
pub struct UpstreamConn {
    pub stream: TcpStream,
    /// Index of the server in the pool (for `Balancer::mark_failed` and pooling).
    pub server: usize,
    /// Counts this connection as active on the server (least_conn) until dropped.
    pub guard: ActiveGuard,
}

/// Why no upstream connection could be opened. [`ConnectError::status`] is what the client gets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
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
    /// `max_attempts` servers were already tried for this request before this call: 502.
    #[error("gave up after {0} upstream attempts")]
    Exhausted(usize),
}

impl ConnectError {
    /// The HTTP status for the client.
    pub fn status(&self) -> u16 {
        match self {
            ConnectError::NoHealthyServer => 503,
            ConnectError::Failed { .. } | ConnectError::Exhausted(_) => 502,
            ConnectError::TimedOut => 504,
        }
    }
}

/// Connects to a server of `upstream`, trying further servers on failure until `upstream.max_attempts` servers are
/// in `tried`. `key` is the request's hash input (`crate::balancer::hash_input`) for hash pools.
///
/// Errors: [`ConnectError::NoHealthyServer`] when no attempt could be made because every remaining server is
/// cooling down; otherwise the error of the last attempt.
pub async fn connect(
    balancer: &Rc<Balancer>,
    upstream: &Upstream,
    key: Option<u64>,
    tried: &mut Vec<usize>,
) -> Result<UpstreamConn, ConnectError> {
    let max_attempts = upstream.max_attempts.max(1);
    if tried.len() >= max_attempts {
        return Err(ConnectError::Exhausted(tried.len()));
    }
    let mut last = None;
    while tried.len() < max_attempts {
        let Some(server) = balancer.pick(key, tried, Instant::now()) else {
            break;
        };
        match connect_to(balancer, upstream, server, tried).await {
            Ok(conn) => return Ok(conn),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ConnectError::NoHealthyServer))
}

/// One attempt on `server` (already chosen by the caller): connects within `connect_timeout` and sets
/// TCP_NODELAY. On failure the server is marked failed (passive health) and pushed to `tried`.
pub async fn connect_to(
    balancer: &Rc<Balancer>,
    upstream: &Upstream,
    server: usize,
    tried: &mut Vec<usize>,
) -> Result<UpstreamConn, ConnectError> {
    let address = balancer.address(server);
    let guard = balancer.acquire(server);
    let result =
        monoio::time::timeout(upstream.connect_timeout, TcpStream::connect_addr(address)).await;
    let error = match result {
        Ok(Ok(stream)) => {
            // Nagle only delays small proxied writes; failing to disable it is harmless.
            let _ = stream.set_nodelay(true);
            balancer.mark_ok(server);
            return Ok(UpstreamConn {
                stream,
                server,
                guard,
            });
        }
        Ok(Err(source)) => ConnectError::Failed { address, source },
        Err(_elapsed) => ConnectError::TimedOut,
    };
    tracing::debug!(upstream = %upstream.name, %address, error = %error, "upstream connect failed");
    balancer.mark_failed(server, Instant::now());
    tried.push(server);
    Err(error)
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
                    weight: NonZeroU32::new(1).unwrap(),
                })
                .collect(),
            balance: Balance::RoundRobin,
            connect_timeout: Duration::from_secs(2),
            fail_cooldown: Duration::from_secs(30),
            max_attempts,
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
            let conn = connect(&b, &u, None, &mut tried).await.unwrap();
            assert_eq!(conn.server, 1);
            assert_eq!(tried, vec![0]);
            assert_eq!(b.active(1), 1);
            drop(conn);
            assert_eq!(b.active(1), 0);
            assert_eq!(b.active(0), 0, "failed attempt released its count");
            // The dead server is cooling: the next request goes straight to the live one.
            let mut tried = Vec::new();
            let conn = connect(&b, &u, None, &mut tried).await.unwrap();
            assert_eq!((conn.server, tried.len()), (1, 0));
        });
    }

    #[test]
    fn all_dead_is_502_then_503_while_cooling() {
        let u = upstream(&[dead_address(), dead_address()], 2);
        let b = Rc::new(Balancer::new(&u));
        run(async {
            let mut tried = Vec::new();
            let err = connect(&b, &u, None, &mut tried).await.unwrap_err();
            assert_eq!(err.status(), 502, "{err}");
            assert_eq!(tried.len(), 2);
            let err = connect(&b, &u, None, &mut Vec::new()).await.unwrap_err();
            assert!(matches!(err, ConnectError::NoHealthyServer));
            assert_eq!(err.status(), 503);
        });
    }

    #[test]
    fn max_attempts_bounds_tries_across_calls() {
        let u = upstream(&[dead_address(), dead_address(), dead_address()], 1);
        let b = Rc::new(Balancer::new(&u));
        run(async {
            let mut tried = Vec::new();
            assert_eq!(
                connect(&b, &u, None, &mut tried)
                    .await
                    .unwrap_err()
                    .status(),
                502
            );
            assert_eq!(tried.len(), 1, "one attempt only");
            let err = connect(&b, &u, None, &mut tried).await.unwrap_err();
            assert!(matches!(err, ConnectError::Exhausted(1)), "{err}");
        });
    }
}
