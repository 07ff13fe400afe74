//! Opening the upstream leg of a WebSocket: connect to the route's pool, send the upgrade request, read and check
//! the answer, and try further servers when one fails.
//!
//! Owns: the connect/handshake retry loop, its timeouts (`handshake_timeout`, at least the pool's
//! `connect_timeout`), passive health for handshakes (an I/O failure or a broken `101` marks the server failed; a
//! slow answer does not), and the statuses a client gets when no upstream accepts (502/503/504).
//! Does not own: what the upgrade request and a valid `101` look like ([`super::handshake`]), forwarding a non-101
//! answer ([`super::refusal`]), connecting and balancing (`crate::upstream`).

use std::rc::Rc;
use std::time::Instant;

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use ringway_config::{Balance, UpstreamId};

use super::accept::{ClientUpgrade, UpgradeRequest};
use super::{handshake, refusal};
use crate::answer::{respond, respond_error};
use crate::http::head::HeadLimits;
use crate::upstream::response::{HeadReadError, read_response_head};
use crate::upstream::{self, UpstreamStream, hash_input};
use crate::worker::WorkerCtx;

/// An upstream that accepted the upgrade.
pub(crate) struct OpenedUpstream {
    pub(crate) stream: UpstreamStream,
    pub(crate) server: usize,
    pub(crate) guard: upstream::ActiveGuard,
    pub(crate) negotiated: handshake::Negotiated,
    /// Bytes the upstream sent right behind its `101`.
    pub(crate) early: Vec<u8>,
}

/// Connects to the route's pool and performs the upstream handshake, trying further servers when one fails. On
/// failure the client has been answered (non-101 answers are forwarded as is) and `None` is returned.
pub(crate) async fn open_upstream<C: AsyncWriteRent>(
    client: &mut C,
    request: &UpgradeRequest<'_>,
    upgrade: &ClientUpgrade,
    id: UpstreamId,
    ctx: &Rc<WorkerCtx>,
) -> Result<OpenedUpstream, u16> {
    let head = &request.head;
    let peer = request.peer;
    let upstream = &ctx.config.upstreams[id.0];
    let balancer = &ctx.balancers[id.0];
    let key = match &upstream.balance {
        Balance::Hash(k) => hash_input(k, request.fwd.client, head),
        _ => None,
    };
    let limits = &ctx.config.limits;
    let head_limits = HeadLimits {
        max_bytes: limits.max_header_bytes.max(8192),
        max_headers: limits.max_headers.max(64),
    };
    let mut tried = Vec::new();
    let mut last_status: Option<u16> = None;
    loop {
        let mut conn = match upstream::connect(
            balancer,
            upstream,
            ctx.upstream_tls[id.0].as_ref(),
            key,
            &mut tried,
        )
        .await
        {
            Ok(conn) => conn,
            Err(e) => {
                // A handshake failure earlier in this loop decides the status (502, or 504 for a timeout).
                let status = last_status.unwrap_or(e.status());
                tracing::info!(%peer, upstream = %upstream.name, status, error = %e, "no upstream for websocket");
                respond_error(client, status, &e.to_string()).await;
                return Err(status);
            }
        };
        if !tried.contains(&conn.server) {
            tried.push(conn.server);
        }
        let key_sent = handshake::fresh_key();
        let upgrade_request =
            handshake::upstream_request(head, &request.dest, upgrade, &key_sent, request.fwd);
        let deadline = Instant::now() + limits.handshake_timeout.max(upstream.connect_timeout);
        let write = monoio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            conn.stream.write_all(upgrade_request),
        )
        .await;
        let answer = match write {
            Ok((Ok(_), _)) => {
                let read = read_response_head(
                    &mut conn.stream,
                    Vec::with_capacity(4096),
                    head_limits,
                    deadline,
                )
                .await;
                read.head
            }
            Ok((Err(e), _)) => Err(HeadReadError::Io(e)),
            Err(_) => Err(HeadReadError::TimedOut),
        };
        let server_addr = balancer.address(conn.server);
        let (res_head, mut buf) = match answer {
            Ok(ok) => ok,
            Err(HeadReadError::TimedOut) => {
                // Slow to answer this client is not proof the server is down: no passive-health mark.
                tracing::warn!(%server_addr, "upstream handshake timed out; trying the next server");
                last_status = Some(504);
                if tried.len() >= upstream.max_attempts {
                    respond(client, 504, &[], "upstream handshake timed out\n").await;
                    return Err(504);
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(%server_addr, error = %e, "upstream handshake failed; trying the next server");
                balancer.mark_failed(conn.server, Instant::now());
                last_status = Some(502);
                if tried.len() >= upstream.max_attempts {
                    respond(client, 502, &[], "upstream handshake failed\n").await;
                    return Err(502);
                }
                continue;
            }
        };
        if res_head.status != 101 {
            tracing::info!(%peer, %server_addr, status = res_head.status, "upstream refused the upgrade; forwarding its answer");
            balancer.mark_ok(conn.server);
            refusal::forward(
                client,
                &mut conn.stream,
                &res_head,
                buf,
                limits.handshake_timeout,
            )
            .await;
            return Err(res_head.status);
        }
        match handshake::verify_switching(&res_head, &key_sent, upgrade) {
            Ok(negotiated) => {
                balancer.mark_ok(conn.server);
                let early = buf.split_off(res_head.head_len);
                return Ok(OpenedUpstream {
                    stream: conn.stream,
                    server: conn.server,
                    guard: conn.guard,
                    negotiated,
                    early,
                });
            }
            Err(e) => {
                tracing::warn!(%server_addr, error = %e, "upstream answered the upgrade incorrectly");
                balancer.mark_failed(conn.server, Instant::now());
                last_status = Some(502);
                if tried.len() >= upstream.max_attempts {
                    respond(client, 502, &[], &format!("bad upstream handshake: {e}\n")).await;
                    return Err(502);
                }
            }
        }
    }
}
