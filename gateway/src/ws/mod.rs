//! The WebSocket path of a client connection, from its checked upgrade request to the relay task.
//!
//! Owns: the order of the upgrade: the client's handshake checks ([`accept`]), opening the upstream leg
//! ([`dial`]: connect, the upstream handshake ([`handshake`]), retries; non-101 answers forwarded by [`refusal`]),
//! the `101` to the client, and spawning the relay (or the built-in echo) as a task of its own, so no handshake state
//! stays alive for the life of the WebSocket.
//! Does not own: reading the request head and routing (`crate::conn`), the frame rules of the relay ([`relay`]).

pub(crate) mod accept;
pub(crate) mod dial;
pub(crate) mod echo;
pub(crate) mod handshake;
pub(crate) mod refusal;
pub(crate) mod relay;

use std::rc::Rc;
use std::time::Instant;

use monoio::io::AsyncWriteRentExt;
use monoio::io::{AsyncWriteRent, CancelableAsyncReadRent, Splitable};
use ringway_config::{Route, Target, UpstreamId};

use accept::UpgradeRequest;

use crate::answer::respond;
use crate::conn::ClientStream;
use crate::runtime::isolate::isolated;
use crate::upstream::stream::Inner;
use crate::worker::{ConnectionSlot, WorkerCtx};
use relay::{RelayMetrics, RelaySettings, relay};

/// Serves the upgrade: refusals are answered (and logged) here; on success the relay runs as its own task.
pub(crate) async fn serve<S: ClientStream>(
    mut client: S,
    mut request: UpgradeRequest<'_>,
    route: &Route,
    route_index: usize,
    ctx: &Rc<WorkerCtx>,
    slot: ConnectionSlot,
) {
    let began = Instant::now();
    let metrics = ctx.metrics.routes.get(route_index);
    let count = |status: u16| {
        if let Some(m) = metrics {
            m.upgrade(status);
        }
    };
    let peer = request.peer;
    let early = std::mem::take(&mut request.early);
    let upgrade = match accept::check(&request.head, &route.websocket) {
        Ok(u) => u,
        Err(rejection) => {
            tracing::info!(%peer, status = rejection.status, reason = rejection.reason, "upgrade refused");
            count(rejection.status);
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
    // The client's upgrade rate: before any upstream is contacted.
    let rate = match slot.client() {
        Some(own) => crate::limits::take_upgrade(Some(own), route.upgrade_rate),
        // A trusted proxy's connection: the client its X-Forwarded-For names has the bucket.
        None if request.fwd.trusted && request.fwd.client != peer.ip() => {
            crate::limits::take_forwarded_upgrade(
                &ctx.config,
                &ctx.limits.clients,
                request.fwd.client,
                route.upgrade_rate,
            )
        }
        None => Ok(()),
    };
    if let Err(wait) = rate {
        let secs = wait.header_secs();
        tracing::info!(%peer, client = %request.fwd.client, retry_after = secs, "per-client upgrade rate exceeded; refusing (429)");
        ctx.metrics.totals.client_upgrades_refused.inc();
        count(429);
        respond(
            &mut client,
            429,
            &[("retry-after", &secs.to_string())],
            "too many WebSocket upgrades from your address\n",
        )
        .await;
        return;
    }
    let limits = &ctx.config.limits;
    match route.target {
        Target::Echo => {
            let protocol = upgrade.subprotocols.first().map(String::as_str);
            let answer = accept::switching_protocols(&upgrade.key, protocol, None);
            if client.write_all(answer).await.0.is_err() {
                return;
            }
            count(101);
            tracing::debug!(%peer, "websocket echo session");
            Box::pin(echo::serve(
                client,
                early,
                &route.websocket,
                limits.close_timeout,
                &ctx.buffers,
            ))
            .await;
        }
        Target::Upstream(id) => {
            let opened = match Box::pin(dial::open_upstream(
                &mut client,
                &request,
                &upgrade,
                id,
                ctx,
            ))
            .await
            {
                Ok(opened) => opened,
                Err(status) => {
                    count(status);
                    return;
                }
            };
            let answer = accept::switching_protocols(
                &upgrade.key,
                opened.negotiated.protocol.as_deref(),
                opened.negotiated.extensions.as_deref(),
            );
            if client.write_all(answer).await.0.is_err() {
                return;
            }
            count(101);
            if let Some(m) = metrics {
                m.ws_handshake.observe(began.elapsed());
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
                limits: relay::rate::RateLimits::new(&ws.limits, peer),
                token_expires: request.expires_at.map(|exp| {
                    let left = exp.saturating_sub(crate::auth::unix_now());
                    Instant::now() + std::time::Duration::from_secs(left)
                }),
            };
            // Nothing of the handshake is needed while the relay runs (a WebSocket may live for days), so the
            // relay becomes a task of its own and this connection task, with all its handshake state, ends.
            let server = ctx.config.upstreams[id.0]
                .servers
                .get(opened.server)
                .map(|s| s.host.as_str())
                .unwrap_or("");
            tracing::info!(
                %peer,
                client = %request.fwd.client,
                target = %crate::http::redact::redact_query(&request.head.target, &ctx.config.redact_query),
                route = ctx.metrics.route_labels.get(route_index).map_or("", String::as_str),
                upstream = %ctx.config.upstreams[id.0].name,
                server,
                subprotocol = opened.negotiated.protocol.as_deref().unwrap_or(""),
                "websocket opened"
            );
            drop(request);
            drop(upgrade);
            let start = RelayStart {
                route: route_index,
                peer,
                upstream: id,
                guard: opened.guard,
                slot,
                client_early: early,
                upstream_early: opened.early,
                settings,
            };
            // One relay instantiation per pair of stream types: a plain pair pays nothing for TLS.
            match opened.stream.into_inner() {
                Inner::Plain(upstream) => spawn_relay(client, upstream, start, ctx),
                Inner::Tls(upstream) => spawn_relay(client, upstream, start, ctx),
            }
        }
    }
}

/// What the relay task takes over from the upgrade.
struct RelayStart {
    route: usize,
    peer: std::net::SocketAddr,
    upstream: UpstreamId,
    guard: crate::upstream::ActiveGuard,
    slot: ConnectionSlot,
    client_early: Vec<u8>,
    upstream_early: Vec<u8>,
    settings: RelaySettings,
}

/// Spawns the relay of one WebSocket as a task of its own.
fn spawn_relay<C, U>(client: C, upstream: U, start: RelayStart, ctx: &Rc<WorkerCtx>)
where
    C: ClientStream,
    U: Splitable<OwnedRead: CancelableAsyncReadRent, OwnedWrite: AsyncWriteRent + 'static>
        + 'static,
{
    let ctx = ctx.clone();
    if let Some(m) = ctx.metrics.routes.get(start.route) {
        m.ws_open.add(1);
        m.ws_total.inc();
    }
    let RelayStart {
        route,
        peer,
        upstream: upstream_id,
        guard,
        slot,
        client_early,
        upstream_early,
        settings,
    } = start;
    // Built before the task: the task holds the relay's future, not the streams it was built from.
    let relayed = relay(
        client,
        upstream,
        client_early,
        upstream_early,
        settings,
        (ctx.buffers.clone(), &ctx.sweeper),
        RelayMetrics {
            worker: ctx.metrics.clone(),
            route,
            periodic: ctx.config.log_interval.map(|every| {
                let now = crate::runtime::clock::now();
                Box::new(relay::PeriodicLog {
                    every,
                    peer,
                    started: now,
                    next: std::cell::Cell::new(now + every),
                })
            }),
        },
    );
    let started = Instant::now();
    // The end of the relay as a plain closure run by `Finish` (an `async` block awaiting `relayed` would keep a
    // second copy of it in the task).
    let finish = move |outcome: relay::session::RelayOutcome| {
        drop(guard);
        drop(slot);
        let lived = started.elapsed();
        if let Some(m) = ctx.metrics.routes.get(route) {
            m.ws_open.add(-1);
            m.ws_duration.observe(lived);
            for (source, code) in outcome.close_from.iter().enumerate() {
                // A side that went away without a Close frame counts as 1006.
                m.close(source, code.unwrap_or(1006));
            }
            for code in outcome.gateway_closes.iter().flatten() {
                m.close(crate::metrics::worker::FROM_GATEWAY, *code);
            }
            if let Some(code) = outcome.violation
                && let Some(i) = crate::metrics::worker::REJECT_CODES
                    .iter()
                    .position(|c| *c == code)
            {
                m.rejected[i].inc();
            }
            if outcome.dead_peer {
                m.dead_peers.inc();
            }
            // (The rate-limit excesses were published as they went, with the other counts.)
        }
        let code = |c: Option<u16>| c.map_or_else(|| "none".to_owned(), |c| c.to_string());
        tracing::info!(
            peer = %peer,
            upstream = %ctx.config.upstreams[upstream_id.0].name,
            duration_ms = lived.as_millis() as u64,
            messages_in = outcome.messages[0],
            messages_out = outcome.messages[1],
            bytes_in = outcome.bytes_client_to_upstream,
            bytes_out = outcome.bytes_upstream_to_client,
            client_close = %code(outcome.close_from[0]),
            upstream_close = %code(outcome.close_from[1]),
            gateway_close_to_client = %code(outcome.gateway_closes[0]),
            gateway_close_to_upstream = %code(outcome.gateway_closes[1]),
            rate_limited_in = outcome.rate_limited[0],
            rate_limited_out = outcome.rate_limited[1],
            "websocket closed: {}",
            outcome.reason
        );
    };
    let relay_task = Finish {
        future: relayed,
        then: Some(finish),
    };
    let relay_task = isolated(relay_task);
    tracing::trace!(
        task_bytes = std::mem::size_of_val(&relay_task),
        "relay task"
    );
    monoio::spawn(relay_task);
}

pin_project_lite::pin_project! {
    /// Runs `then` with the output of `future`, in place: the task is the future's size plus the closure's.
    struct Finish<F, G> {
        #[pin]
        future: F,
        then: Option<G>,
    }
}

impl<F: std::future::Future, G: FnOnce(F::Output)> std::future::Future for Finish<F, G> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.project();
        match this.future.poll(cx) {
            std::task::Poll::Ready(out) => {
                if let Some(then) = this.then.take() {
                    then(out);
                }
                std::task::Poll::Ready(())
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}
