//! One accepted client connection, from its first byte to its close.
//!
//! Owns: reading request heads under the handshake timeout and size limits (slowloris, 431), routing (404), the
//! keep-alive loop for plain HTTP, and the WebSocket path: client checks, upstream connect with retries across the
//! pool (502/503/504), the upstream handshake, the `101` to the client, then the [`crate::relay`]. Every error the
//! client can see is answered here, in one place, with one status.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Split,
};
use monoio::net::TcpStream;
use ringway_config::{Balance, Route, Target, UpstreamId};

use crate::http::body::{self, BodyKind};
use crate::http::head::{
    HeadLimits, Headers, RequestHead, ResponseHead, parse_request, parse_response, simple_response,
};
use crate::http::rewrite::{self, Destination, Forwarding};
use crate::http_proxy::{self, Persist};
use crate::relay::{RelaySettings, relay};
use crate::upgrade::{self, ClientUpgrade};
use crate::upstream::{self, hash_input};
use crate::worker::WorkerCtx;
use crate::ws_upstream;

/// Counts a worker's open connections for `max_connections`.
struct ConnectionSlot(Rc<WorkerCtx>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0
            .connections
            .set(self.0.connections.get().saturating_sub(1));
    }
}

/// Serves one accepted client connection.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, ctx: Rc<WorkerCtx>) {
    if ctx.connections.get() >= ctx.max_connections {
        tracing::warn!(%peer, limit = ctx.max_connections, "connection limit reached; refusing");
        let answer = simple_response(
            503,
            &[("retry-after", "1")],
            "connection limit reached\n",
            true,
        );
        let _ = monoio::time::timeout(Duration::from_secs(1), stream.write_all(answer)).await;
        return;
    }
    ctx.connections.set(ctx.connections.get() + 1);
    let slot = ConnectionSlot(ctx.clone());
    serve_requests(stream, peer, &ctx, slot).await;
}

async fn serve_requests(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: &Rc<WorkerCtx>,
    slot: ConnectionSlot,
) {
    let limits = &ctx.config.limits;
    let head_limits = HeadLimits {
        max_bytes: limits.max_header_bytes,
        max_headers: limits.max_headers,
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let deadline = Instant::now() + limits.handshake_timeout;
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
        let Some(route) = find_route(ctx, &head, &dest) else {
            tracing::info!(%peer, target = %head.target, "no route");
            respond(&mut stream, 404, &[], "no route\n").await;
            return;
        };
        let fwd = Forwarding {
            peer: peer.ip(),
            proto: "http",
            trusted: rewrite::is_trusted(&ctx.config.trusted_proxies, peer.ip()),
        };
        if upgrade::is_websocket_request(&head) {
            // The head buffer is not needed any more: a long-lived WebSocket must not keep it.
            drop(std::mem::take(&mut buf));
            let request = Routed { head, dest, fwd };
            serve_websocket(stream, peer, request, leftover, route, ctx, slot).await;
            return;
        }
        let persist = match route.target {
            Target::Echo => serve_echo_http(&mut stream, &head).await,
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
                    Ok(persist) => persist,
                    Err(e) => {
                        tracing::info!(%peer, error = %e, "http proxy failed");
                        if let Some(status) = e.status() {
                            respond(&mut stream, status, &[], &format!("{e}\n")).await;
                        }
                        Persist::Close
                    }
                }
            }
        };
        if persist == Persist::Close {
            return;
        }
        buf = leftover;
    }
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

/// The route for the destination's host and path: the same host the upstream will see in `Host`.
fn find_route<'c>(ctx: &'c WorkerCtx, head: &RequestHead, dest: &Destination) -> Option<&'c Route> {
    ctx.config
        .routes
        .find(dest.host.as_deref(), &dest.path, |name| head.header(name))
}

async fn respond<S: AsyncWriteRent>(
    stream: &mut S,
    status: u16,
    extra: &[(&str, &str)],
    body: &str,
) {
    let answer = simple_response(status, extra, body, true);
    let _ = monoio::time::timeout(Duration::from_secs(5), stream.write_all(answer)).await;
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

/// A request that passed the head checks: its head, where it goes and who sent it.
struct Routed {
    head: RequestHead,
    dest: Destination,
    fwd: Forwarding<'static>,
}

async fn serve_websocket(
    mut client: TcpStream,
    peer: SocketAddr,
    request: Routed,
    early: Vec<u8>,
    route: &Route,
    ctx: &Rc<WorkerCtx>,
    slot: ConnectionSlot,
) {
    let upgrade = match upgrade::check(&request.head, &route.websocket) {
        Ok(u) => u,
        Err(rejection) => {
            tracing::info!(%peer, status = rejection.status, reason = rejection.reason, "upgrade refused");
            respond(
                &mut client,
                rejection.status,
                rejection.headers(),
                &format!("{}\n", rejection.reason),
            )
            .await;
            return;
        }
    };
    let limits = &ctx.config.limits;
    match route.target {
        Target::Echo => {
            let protocol = upgrade.subprotocols.first().map(String::as_str);
            let answer = upgrade::switching_protocols(&upgrade.key, protocol, None);
            if client.write_all(answer).await.0.is_err() {
                return;
            }
            tracing::debug!(%peer, "websocket echo session");
            Box::pin(crate::echo::serve(
                client,
                early,
                &route.websocket,
                limits.close_timeout,
                &ctx.buffers,
            ))
            .await;
        }
        Target::Upstream(id) => {
            let Some(opened) = Box::pin(open_upstream(
                &mut client,
                peer,
                &request,
                &upgrade,
                id,
                ctx,
            ))
            .await
            else {
                return;
            };
            let answer = upgrade::switching_protocols(
                &upgrade.key,
                opened.negotiated.protocol.as_deref(),
                opened.negotiated.extensions.as_deref(),
            );
            if client.write_all(answer).await.0.is_err() {
                return;
            }
            let ws = &route.websocket;
            let settings = RelaySettings {
                idle_timeout: ws.idle_timeout,
                ping_interval: ws.ping_interval,
                pong_timeout: ws.pong_timeout,
                close_timeout: limits.close_timeout,
                max_frame_size: ws.max_frame_size,
                max_message_size: ws.max_message_size,
                validate_utf8: ws.validate_utf8,
                deflate: opened.negotiated.deflate,
            };
            // Nothing of the handshake is needed while the relay runs (a WebSocket may live for days), so the
            // relay becomes a task of its own and this connection task, with all its handshake state, ends.
            drop(request);
            drop(upgrade);
            tracing::debug!(%peer, upstream = %ctx.config.upstreams[id.0].name, server = opened.server, "websocket relay started");
            let ctx = ctx.clone();
            let relay_task = async move {
                let started = Instant::now();
                let outcome = relay(
                    client,
                    opened.stream,
                    early,
                    opened.early,
                    &settings,
                    &ctx.buffers,
                    &ctx.sweeper,
                )
                .await;
                drop(opened.guard);
                drop(slot);
                tracing::info!(
                    %peer,
                    upstream = %ctx.config.upstreams[id.0].name,
                    duration_ms = started.elapsed().as_millis() as u64,
                    bytes_in = outcome.bytes_client_to_upstream,
                    bytes_out = outcome.bytes_upstream_to_client,
                    "websocket closed: {}",
                    outcome.reason
                );
            };
            tracing::trace!(
                task_bytes = std::mem::size_of_val(&relay_task),
                "relay task"
            );
            monoio::spawn(relay_task);
        }
    }
}

/// An upstream that accepted the upgrade.
struct OpenedUpstream {
    stream: TcpStream,
    server: usize,
    guard: upstream::ActiveGuard,
    negotiated: ws_upstream::Negotiated,
    /// Bytes the upstream sent right behind its `101`.
    early: Vec<u8>,
}

/// Connects to the route's pool and performs the upstream handshake, trying further servers when one fails. On
/// failure the client has been answered (non-101 answers are relayed as is) and `None` is returned.
async fn open_upstream(
    client: &mut TcpStream,
    peer: SocketAddr,
    request: &Routed,
    upgrade: &ClientUpgrade,
    id: UpstreamId,
    ctx: &Rc<WorkerCtx>,
) -> Option<OpenedUpstream> {
    let head = &request.head;
    let upstream = &ctx.config.upstreams[id.0];
    let balancer = &ctx.balancers[id.0];
    let key = match &upstream.balance {
        Balance::Hash(k) => hash_input(k, peer.ip(), head),
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
        let mut conn = match upstream::connect(balancer, upstream, key, &mut tried).await {
            Ok(conn) => conn,
            Err(e) => {
                // A handshake failure earlier in this loop decides the status (502, or 504 for a timeout).
                let status = last_status.unwrap_or(e.status());
                tracing::info!(%peer, upstream = %upstream.name, status, error = %e, "no upstream for websocket");
                respond(client, status, &[], &format!("{e}\n")).await;
                return None;
            }
        };
        if !tried.contains(&conn.server) {
            tried.push(conn.server);
        }
        let key_sent = ws_upstream::fresh_key();
        let upgrade_request =
            ws_upstream::upstream_request(head, &request.dest, upgrade, &key_sent, request.fwd);
        let deadline = Instant::now() + limits.handshake_timeout.max(upstream.connect_timeout);
        let exchange = async {
            let (res, _) = conn.stream.write_all(upgrade_request).await;
            res?;
            read_response_head(&mut conn.stream, head_limits).await
        };
        let answer =
            monoio::time::timeout(deadline.saturating_duration_since(Instant::now()), exchange)
                .await;
        let server_addr = balancer.address(conn.server);
        let (res_head, mut buf) = match answer {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                tracing::warn!(%server_addr, error = %e, "upstream handshake failed; trying the next server");
                balancer.mark_failed(conn.server, Instant::now());
                last_status = Some(502);
                if tried.len() >= upstream.max_attempts {
                    respond(client, 502, &[], "upstream handshake failed\n").await;
                    return None;
                }
                continue;
            }
            Err(_) => {
                // Slow to answer this client is not proof the server is down: no passive-health mark.
                tracing::warn!(%server_addr, "upstream handshake timed out; trying the next server");
                last_status = Some(504);
                if tried.len() >= upstream.max_attempts {
                    respond(client, 504, &[], "upstream handshake timed out\n").await;
                    return None;
                }
                continue;
            }
        };
        if res_head.status != 101 {
            tracing::info!(%peer, %server_addr, status = res_head.status, "upstream refused the upgrade; relaying its answer");
            balancer.mark_ok(conn.server);
            relay_refusal(
                client,
                &mut conn.stream,
                &res_head,
                buf,
                limits.handshake_timeout,
            )
            .await;
            return None;
        }
        match ws_upstream::verify_switching(&res_head, &key_sent, upgrade) {
            Ok(negotiated) => {
                balancer.mark_ok(conn.server);
                let early = buf.split_off(res_head.head_len);
                return Some(OpenedUpstream {
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
                    return None;
                }
            }
        }
    }
}

/// Reads an upstream response head; returns it with the buffer holding the head and whatever followed it.
async fn read_response_head<S: AsyncReadRent>(
    stream: &mut S,
    limits: HeadLimits,
) -> std::io::Result<(ResponseHead, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        match parse_response(&buf, limits) {
            Ok(Some(head)) => return Ok((head, buf)),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        let start = buf.len();
        let cap = buf.capacity();
        let (res, slice) = stream.read(buf.slice_mut(start..cap)).await;
        buf = slice.into_inner();
        if res? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Relays an upstream's non-101 answer (e.g. 401) to the client as is: the head, then the body as the upstream
/// framed it (Content-Length, chunked, or until it closes), bounded by `timeout`. The client connection is closed
/// after it (`Connection: close` semantics: the upgrade request is not reused).
async fn relay_refusal<S>(
    client: &mut TcpStream,
    upstream: &mut S,
    head: &ResponseHead,
    mut buf: Vec<u8>,
    timeout: Duration,
) where
    S: AsyncReadRent + CancelableAsyncReadRent + Split,
{
    let kind = match body::response_body_kind("GET", head) {
        Ok(kind) => kind,
        Err(e) => {
            tracing::info!(error = %e, "upstream refusal has a malformed body; answering 502");
            respond(client, 502, &[], "bad upstream response\n").await;
            return;
        }
    };
    let work = async {
        let mut body = RefusalBody::new(kind);
        // The head and whatever body bytes arrived with it.
        let mut end = head.head_len + body.take(&buf[head.head_len..]);
        loop {
            buf.truncate(end);
            let (res, b) = client.write_all(buf).await;
            buf = b;
            res?;
            if body.done() {
                return std::io::Result::Ok(());
            }
            buf.clear();
            buf.reserve(16 * 1024);
            let cap = buf.capacity();
            let (res, slice) = upstream.read(buf.slice_mut(0..cap)).await;
            buf = slice.into_inner();
            if res? == 0 {
                return Ok(());
            }
            end = body.take(&buf);
        }
    };
    let _ = monoio::time::timeout(timeout, work).await;
}

/// Tracks where a refusal's body ends.
struct RefusalBody {
    kind: BodyKind,
    /// Bytes of a Content-Length body still to come.
    remaining: u64,
    chunked: body::ChunkedDecoder,
    finished: bool,
    scratch: Vec<u8>,
}

impl RefusalBody {
    fn new(kind: BodyKind) -> Self {
        let remaining = if let BodyKind::Length(n) = kind { n } else { 0 };
        Self {
            kind,
            remaining,
            chunked: body::ChunkedDecoder::new(true),
            finished: matches!(kind, BodyKind::None | BodyKind::Length(0)),
            scratch: Vec::new(),
        }
    }

    /// How many bytes of `input` belong to the body (the rest is dropped).
    fn take(&mut self, input: &[u8]) -> usize {
        match self.kind {
            BodyKind::None => 0,
            BodyKind::Length(_) => {
                let n = (input.len() as u64).min(self.remaining);
                self.remaining -= n;
                self.finished = self.remaining == 0;
                n as usize
            }
            BodyKind::Chunked => {
                self.scratch.clear();
                match self.chunked.feed(input, &mut self.scratch) {
                    Ok(progress) => {
                        self.finished = progress.done;
                        progress.consumed
                    }
                    Err(_) => {
                        self.finished = true;
                        0
                    }
                }
            }
            BodyKind::CloseDelimited => input.len(),
        }
    }

    fn done(&self) -> bool {
        self.finished
    }
}
