//! One accepted client connection, from its first byte to its close.
//!
//! Owns: on `proxy_protocol` listeners, reading the PROXY header first and taking its client as `peer`
//! ([`crate::proxy_protocol`]); the per-client admission on that `peer` (429, `crate::limits`); reading request heads
//! under the handshake timeout and size limits (slowloris 408, 431), the head checks that decide where a request goes
//! (`crate::http::rewrite::destination`, 400), routing (404), the route's JWT check before any upstream work
//! (401/403, verdict from `crate::auth`), and the keep-alive loop that hands each request to the plain HTTP exchange
//! ([`crate::http_proxy`]) or the WebSocket path ([`crate::ws`]). Does not own: anything after the dispatch.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Splitable,
};
use monoio::net::TcpStream;
use ringway_config::{Route, Target};

use crate::answer::{respond, respond_error};
use crate::http::head::{HeadLimits, Headers, RequestHead, parse_request, simple_response};
use crate::http::redact::redact_query;
use crate::http::rewrite::{self, ClaimHeaders, ClientCertHeader, Destination, Forwarding};
use crate::http_proxy::{self, Persist};
use crate::limits::{self, ClientAdmission};
use crate::proxy_protocol::{self, read::ReadError};
use crate::tls;
use crate::worker::{ConnectionSlot, WorkerCtx};
use crate::ws;

/// What a client connection runs over once accepted: a `TcpStream`, or a TLS stream after its handshake. The HTTP
/// path and the relay are written once against this.
pub(crate) trait ClientStream:
    AsyncReadRent
    + AsyncWriteRent
    + CancelableAsyncReadRent
    + Splitable<OwnedRead: CancelableAsyncReadRent + 'static, OwnedWrite: AsyncWriteRent + 'static>
    + 'static
{
}

impl<T> ClientStream for T where
    T: AsyncReadRent
        + AsyncWriteRent
        + CancelableAsyncReadRent
        + Splitable<
            OwnedRead: CancelableAsyncReadRent + 'static,
            OwnedWrite: AsyncWriteRent + 'static,
        > + 'static
{
}

/// Serves one client connection accepted on listener `listener` (an index into `config.listeners`).
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
    ctx: Rc<WorkerCtx>,
) {
    let Some(slot) = ConnectionSlot::claim(&ctx) else {
        tracing::warn!(%peer, limit = ctx.max_connections, "connection limit reached; refusing");
        ctx.metrics.totals.connections_refused.inc();
        let tls = ctx.config.listeners[listener].tls.is_some();
        refuse_at_accept(&mut stream, tls, 503, "connection limit reached\n").await;
        return;
    };
    // Behind a load balancer speaking the PROXY protocol, its header comes first (before TLS) and names the client:
    // from here on `peer` is that client, for logs, forwarding headers, hashing and limits.
    let (peer, early) = if ctx.config.listeners[listener].proxy_protocol {
        let deadline = Instant::now() + ctx.config.limits.proxy_protocol_timeout;
        match proxy_protocol::read::read_header(&mut stream, deadline).await {
            Ok((header, early)) => {
                let client = header.source.unwrap_or(peer);
                tracing::debug!(peer = %client, tcp_peer = %peer, "PROXY protocol header");
                (client, early)
            }
            Err(ReadError::Closed { sent: 0 }) => {
                tracing::debug!(%peer, "closed before sending a PROXY protocol header");
                return;
            }
            Err(e) => {
                tracing::info!(%peer, reason = %e, "refused: bad PROXY protocol header; closing");
                ctx.metrics.totals.proxy_protocol_refused.inc();
                return;
            }
        }
    } else {
        (peer, Vec::new())
    };
    // Per client, on `peer` as the gateway knows it by now; before the TLS handshake, so a refused client costs none.
    let tls = ctx.config.listeners[listener].tls.is_some();
    let Some(slot) = admit_client(&ctx, slot, peer, &mut stream, tls).await else {
        return;
    };
    // The TLS handshake and the first request head share one `handshake_timeout`.
    let deadline = Instant::now() + ctx.config.limits.handshake_timeout;
    match ctx.tls.get(listener).and_then(Option::as_ref) {
        None => {
            let client = Client {
                peer,
                scheme: Scheme::Http,
                redirect_https: ctx.config.listeners[listener].redirect_https,
                client_cert: None,
            };
            serve_requests(stream, early, client, &ctx, slot, deadline).await
        }
        Some(tls) => {
            let Some(tls::accept::Accepted {
                stream,
                client_cert,
            }) = tls::accept::accept(stream, &early, peer, tls, &ctx.buffers, deadline).await
            else {
                ctx.metrics.totals.tls_handshake_failures.inc();
                return;
            };
            let client = Client {
                peer,
                scheme: Scheme::Https,
                redirect_https: None,
                client_cert,
            };
            Box::pin(serve_requests(
                stream,
                Vec::new(),
                client,
                &ctx,
                slot,
                deadline,
            ))
            .await
        }
    }
}

/// Counts the connection against its client's `limits.per_client.max_connections`; a client at its cap is refused
/// (see [`refuse_at_accept`]) and `None` is returned.
async fn admit_client(
    ctx: &Rc<WorkerCtx>,
    slot: ConnectionSlot,
    peer: SocketAddr,
    stream: &mut TcpStream,
    tls: bool,
) -> Option<ConnectionSlot> {
    match limits::admit_client(&ctx.config, &ctx.limits.clients, peer.ip()) {
        ClientAdmission::Admitted(client) => Some(slot.with_client(client)),
        ClientAdmission::Untracked => {
            ctx.metrics.totals.client_untracked.inc();
            tracing::warn!(%peer, "per-client table set full of live clients; admitted without a per-client count");
            Some(slot)
        }
        ClientAdmission::AtCap(limit) => {
            drop(slot);
            tracing::info!(%peer, limit, "per-client connection limit reached; refusing (429)");
            ctx.metrics.totals.client_connections_refused.inc();
            refuse_at_accept(stream, tls, 429, "too many connections from your address\n").await;
            None
        }
    }
}

/// Answers a connection refused before anything was read, then closes; a client that does not read its answer gets
/// a second, not more. Plain HTTP gets `status` with `Retry-After: 1`. A TLS client gets a fatal `internal_error`
/// alert in the clear (no handshake has happened, so no HTTP answer could reach it; doing the handshake first would
/// spend the CPU the refusal is there to save).
async fn refuse_at_accept(stream: &mut TcpStream, tls: bool, status: u16, body: &str) {
    let answer = if tls {
        tls::accept::INTERNAL_ERROR_ALERT.to_vec()
    } else {
        simple_response(status, &[("retry-after", "1")], body, true)
    };
    let _ = monoio::time::timeout(Duration::from_secs(1), stream.write_all(answer)).await;
}

/// Whether the client connection is TLS (what `X-Forwarded-Proto` says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// What the connection's requests share: who the client is and how it reached the gateway.
struct Client {
    peer: SocketAddr,
    scheme: Scheme,
    /// Plain listeners with `redirect_https`: every request is redirected to this https port.
    redirect_https: Option<u16>,
    /// The verified client certificate (mTLS), as forwarded to upstreams.
    client_cert: Option<String>,
}

/// Serves the requests on `stream`; `early` holds bytes already read from it (after a PROXY header).
async fn serve_requests<S: ClientStream>(
    mut stream: S,
    early: Vec<u8>,
    client: Client,
    ctx: &Rc<WorkerCtx>,
    slot: ConnectionSlot,
    first_deadline: Instant,
) {
    let Client {
        peer,
        scheme,
        redirect_https: redirect,
        client_cert,
    } = client;
    let limits = &ctx.config.limits;
    let head_limits = HeadLimits {
        max_bytes: limits.max_header_bytes,
        max_headers: limits.max_headers,
    };
    let mut buf: Vec<u8> = early;
    let mut first = true;
    loop {
        let deadline = if std::mem::take(&mut first) {
            first_deadline
        } else {
            Instant::now() + limits.handshake_timeout
        };
        let head = match read_request_head(&mut stream, &mut buf, head_limits, deadline).await {
            HeadRead::Head(head) => head,
            HeadRead::Closed => return,
            HeadRead::Reject(status, why) => {
                tracing::info!(%peer, status, "{why}");
                respond(&mut stream, status, &[], &format!("{why}\n")).await;
                return;
            }
        };
        let mut leftover = buf.split_off(head.head_len);
        buf.clear();
        let dest = match rewrite::destination(&head) {
            Ok(dest) => dest,
            Err(e) => {
                tracing::info!(%peer, target = %head.target, status = e.status(), "refused: {e}");
                respond(&mut stream, e.status(), &[], &format!("{e}\n")).await;
                return;
            }
        };
        if let Some(port) = redirect {
            match https_location(&dest, port) {
                Some(location) => {
                    tracing::info!(%peer, %location, "plain HTTP redirected to https (308)");
                    respond(&mut stream, 308, &[("location", &location)], "use https\n").await;
                }
                None => {
                    tracing::info!(%peer, "refused: no Host to redirect to https (400)");
                    respond(&mut stream, 400, &[], "a Host header is required\n").await;
                }
            }
            return;
        }
        let Some((route_index, route)) = find_route(ctx, &head, &dest) else {
            tracing::info!(
                %peer,
                target = %redact_query(&head.target, &ctx.config.redact_query),
                "no route (404)"
            );
            respond(&mut stream, 404, &[], "no route\n").await;
            return;
        };
        let mut head = head;
        let policy = ctx.auth.get(route_index).and_then(Option::as_ref);
        let authorized = match policy {
            None => None,
            Some(policy) => {
                match crate::auth::check(policy, &head, &dest.path, crate::auth::unix_now()) {
                    Ok(authorized) => Some(authorized),
                    Err(refusal) => {
                        refuse_unauthorized(&mut stream, ctx, peer, route_index, &head, &refusal)
                            .await;
                        return;
                    }
                }
            }
        };
        if let Some(left) = authorized
            .as_ref()
            .and_then(|a| a.subprotocols_left.as_deref())
        {
            crate::auth::token::set_subprotocols(&mut head, left);
        }
        let fwd = Forwarding {
            peer: peer.ip(),
            client: rewrite::client_address(&head, peer.ip(), &ctx.config.trusted_proxies),
            proto: match scheme {
                Scheme::Http => "http",
                Scheme::Https => "https",
            },
            trusted: rewrite::is_trusted(&ctx.config.trusted_proxies, peer.ip()),
            client_cert: ClientCertHeader {
                name: route.client_cert_header.as_deref(),
                value: client_cert.as_deref(),
            },
            claims: ClaimHeaders {
                strip: policy.map_or(&[], |p| p.header_names()),
                add: authorized.as_ref().map_or(&[], |a| a.headers.as_slice()),
            },
        };
        if ws::accept::is_websocket_request(&head) {
            // The head buffer is not needed any more: a long-lived WebSocket must not keep it.
            drop(std::mem::take(&mut buf));
            let request = ws::accept::UpgradeRequest {
                peer,
                head,
                dest,
                fwd,
                early: leftover,
                expires_at: authorized.as_ref().and_then(|a| a.expires_at),
            };
            ws::serve(stream, request, route, route_index, ctx, slot).await;
            return;
        }
        let began = Instant::now();
        let metrics = ctx.metrics.routes.get(route_index);
        // The access log line is written after the exchange, when `head` has gone upstream.
        let access = tracing::enabled!(target: "access", tracing::Level::INFO).then(|| {
            (
                head.method.clone(),
                redact_query(&head.target, &ctx.config.redact_query).into_owned(),
            )
        });
        let log_access = |status: Option<u16>| {
            if let Some((method, target)) = &access {
                tracing::info!(
                    target: "access",
                    %peer,
                    client = %fwd.client,
                    method = %method,
                    target = %target,
                    route = ctx.metrics.route_labels.get(route_index).map_or("", String::as_str),
                    status = status.unwrap_or(0),
                    duration_us = began.elapsed().as_micros() as u64,
                    "access"
                );
            }
        };
        let persist = match route.target {
            Target::Echo => {
                let persist = serve_echo_http(&mut stream, &head).await;
                if let Some(m) = metrics {
                    m.http(200, began.elapsed());
                }
                log_access(Some(200));
                persist
            }
            Target::Upstream(id) => {
                match Box::pin(http_proxy::forward(
                    &mut stream,
                    fwd,
                    head,
                    &dest,
                    &mut leftover,
                    id,
                    ctx,
                ))
                .await
                {
                    Ok((persist, status)) => {
                        if let Some(m) = metrics {
                            m.http(status, began.elapsed());
                        }
                        log_access(Some(status));
                        persist
                    }
                    Err(e) => {
                        tracing::info!(%peer, error = %e, blame = ?e.blame(), "http proxy failed");
                        if let Some(status) = e.status() {
                            respond_error(&mut stream, status, &e.to_string()).await;
                            if let Some(m) = metrics {
                                m.http(status, began.elapsed());
                            }
                        }
                        log_access(e.status());
                        Persist::Close
                    }
                }
            }
        };
        if persist == Persist::Close {
            return;
        }
        if ctx.sweeper.drain().is_some() {
            // Draining: the exchange is finished; the client opens its next connection elsewhere.
            return;
        }
        buf = leftover;
    }
}

/// Answers a request the route's JWT policy refused (401/403, before any upstream work), logs why (never the
/// token) and counts it.
async fn refuse_unauthorized<S: AsyncWriteRent>(
    stream: &mut S,
    ctx: &WorkerCtx,
    peer: SocketAddr,
    route_index: usize,
    head: &RequestHead,
    refusal: &crate::auth::Refusal,
) {
    let route = ctx
        .metrics
        .route_labels
        .get(route_index)
        .map_or("", String::as_str);
    tracing::info!(%peer, route, status = refusal.status, reason = %refusal.reason, "refused by auth");
    if let Some(m) = ctx.metrics.routes.get(route_index) {
        m.auth_refusal(refusal.status);
        if ws::accept::is_websocket_request(head) {
            m.upgrade(refusal.status);
        } else {
            m.http(refusal.status, Duration::ZERO);
        }
    }
    respond(
        stream,
        refusal.status,
        refusal.headers(),
        &format!("{}\n", refusal.reason),
    )
    .await;
}

enum HeadRead {
    Head(RequestHead),
    /// The client closed (or sent nothing) before a request started.
    Closed,
    Reject(u16, String),
}

/// Reads until `buf` holds a whole request head; the head must complete before `deadline` (slowloris guard).
async fn read_request_head<S: AsyncReadRent>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    limits: HeadLimits,
    deadline: Instant,
) -> HeadRead {
    loop {
        match parse_request(buf, limits) {
            Ok(Some(head)) => return HeadRead::Head(head),
            Ok(None) => {}
            Err(e) => return HeadRead::Reject(e.status(), e.to_string()),
        }
        if buf.len() == buf.capacity() {
            // Start small (most heads are a few hundred bytes) and double up to the limit.
            let grow = buf
                .capacity()
                .max(1024)
                .min(limits.max_bytes + 1 - buf.len().min(limits.max_bytes));
            buf.reserve_exact(grow.max(1));
        }
        let start = buf.len();
        let cap = buf.capacity();
        let wait = deadline.saturating_duration_since(Instant::now());
        // The buffer moves into the read; a timeout drops it with the read, so whether a request had started is
        // decided from `start`, not from the buffer.
        let read =
            monoio::time::timeout(wait, stream.read(std::mem::take(buf).slice_mut(start..cap)))
                .await;
        match read {
            Ok((Ok(n), slice)) => {
                *buf = slice.into_inner();
                if n == 0 {
                    return if buf.is_empty() {
                        HeadRead::Closed
                    } else {
                        HeadRead::Reject(400, "connection closed inside the request head".into())
                    };
                }
            }
            Ok((Err(e), _)) => {
                tracing::debug!(error = %e, "client read failed before a request head");
                return HeadRead::Closed;
            }
            // An idle keep-alive connection (or one that never sent a byte) just ends, as RFC 9112 §9.5 allows.
            Err(_) if start == 0 => return HeadRead::Closed,
            Err(_) => return HeadRead::Reject(408, "request head not received in time".into()),
        }
    }
}

/// `https://HOST[:PORT]/target` for a request redirected from a plain listener (the port is left out for 443);
/// `None` without a host.
fn https_location(dest: &Destination, port: u16) -> Option<String> {
    let authority = dest.host.as_deref()?;
    // `[v6]:port`, `name:port` or a bare host: keep the host, drop the plain listener's port.
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => {
            h
        }
        _ => authority,
    };
    let path = if dest.path.starts_with('/') {
        dest.path.as_str()
    } else {
        "/"
    };
    Some(if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    })
}

/// The route for the destination's host and path: the same host the upstream will see in `Host`.
fn find_route<'c>(
    ctx: &'c WorkerCtx,
    head: &RequestHead,
    dest: &Destination,
) -> Option<(usize, &'c Route)> {
    ctx.config
        .routes
        .find_indexed(dest.host.as_deref(), dest.route_path(), |name| {
            head.header(name)
        })
}

/// Plain HTTP to an echo route: a small text answer, so a browser or curl sees the gateway is up.
async fn serve_echo_http<S: AsyncWriteRent>(stream: &mut S, head: &RequestHead) -> Persist {
    let has_body = head.header("content-length").is_some_and(|v| v != b"0")
        || head.header("transfer-encoding").is_some();
    let keep = head.minor_version >= 1 && !head.has_token("connection", "close") && !has_body;
    let body = "ringway echo endpoint: connect with a WebSocket client\n";
    let answer = simple_response(200, &[], body, !keep);
    match stream.write_all(answer).await {
        (Ok(_), _) if keep => Persist::KeepAlive,
        _ => Persist::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(host: Option<&str>, path: &str) -> Destination {
        Destination {
            host: host.map(str::to_owned),
            path: path.to_owned(),
            routing: None,
        }
    }

    #[test]
    fn https_redirects_keep_host_and_target_and_swap_the_port() {
        let at = |h, p, port| https_location(&dest(h, p), port);
        assert_eq!(
            at(Some("example.com:8080"), "/a?b=1", 8443).as_deref(),
            Some("https://example.com:8443/a?b=1")
        );
        assert_eq!(
            at(Some("example.com"), "/", 443).as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            at(Some("[::1]:80"), "/x", 443).as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(
            at(Some("[::1]"), "/x", 8443).as_deref(),
            Some("https://[::1]:8443/x")
        );
        assert_eq!(at(Some("h"), "*", 443).as_deref(), Some("https://h/"));
        assert_eq!(at(None, "/", 443), None);
    }
}
