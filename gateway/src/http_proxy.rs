//! Plain HTTP/1.1 reverse proxying: one request/response exchange between a client connection and an upstream
//! server.
//!
//! Owns: the response head for the client (hop-by-hop headers dropped, framing re-stated by the gateway), streaming bodies both ways through bounded buffers from the worker's
//! `BufferPool` (never a whole body in memory), upstream connection reuse and the one retry on a stale pooled
//! connection, the persistence decision for the client connection, and the mapping of failures to a status.
//! Does not own: reading the client's request head and routing (`crate::conn`), the request head for the upstream
//! (`crate::http::rewrite`), picking, connecting and pooling servers (`crate::upstream`), body framing rules
//! (`crate::http::body`).
//!
//! Timeouts (no config fields exist for these yet):
//! - the upstream's response head must arrive within `limits.handshake_timeout` (default 10 s) after the request
//!   was sent; otherwise 504 (the server is not marked failed: one slow request says nothing about the others);
//!   at most [`MAX_INTERIM_RESPONSES`] 1xx responses are forwarded before it;
//! - every read or write of a body, on either side, must make progress within [`BODY_IDLE_TIMEOUT`] (60 s);
//! - a request body must arrive within `limits.body_timeout` plus one second per `limits.body_min_rate` bytes
//!   (408 otherwise).
//!
//! Passive health: a server is marked failed only when it could not take the request or gave a broken response
//! (connection closed without an answer, malformed head or framing), never for a slow answer.
//!
//! Not supported: request bodies and response bodies flowing at the same time (an upstream that answers before
//! reading the whole request body waits until the gateway has sent it), `Expect: 100-continue` end to end (the
//! gateway answers `100 Continue` itself once the upstream connection is open), trailers (validated, dropped).

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use ringway_config::{Balance, Upstream, UpstreamId};

use crate::http::body::{
    BodyDeadline, BodyError, BodyKind, BodyProgress, request_body_kind, response_body_kind,
};
use crate::http::head::{
    HeadError, HeadLimits, Headers, RequestHead, ResponseHead, is_hop_by_hop, write_header,
};
use crate::http::rewrite::{self, Destination, Forwarding, UpstreamHead};
use crate::runtime::buffer_pool::PoolBuf;
use crate::tls::connect::TlsConnector;
use crate::upstream::response::{HeadReadError, read_response_head};
use crate::upstream::{
    ActiveGuard, Balancer, ConnectError, UpstreamStream, connect, connect_to, hash_input,
};
use crate::worker::WorkerCtx;

/// A body read or write on either side that makes no progress for this long fails the exchange.
pub(crate) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Limits for upstream response heads (more generous than for client requests: the upstream is trusted more).
const RESPONSE_HEAD_LIMITS: HeadLimits = HeadLimits {
    max_bytes: 64 * 1024,
    max_headers: 256,
};
/// Interim (1xx) responses forwarded for one request; an upstream sending more is broken (or hostile): 502.
pub(crate) const MAX_INTERIM_RESPONSES: usize = 32;
/// Room kept free in a read buffer so that re-encoding chunked data never outgrows the output buffer.
const REENCODE_SLACK: usize = 64;

/// Whether the client connection may carry another request after this exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    KeepAlive,
    Close,
}

/// Whose fault a failed exchange was (for logs and metrics; the WebSocket relay's sides are another idea).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blame {
    Client,
    Upstream,
    Internal,
}

/// Why an exchange failed. [`ProxyError::status`] says what to answer; after any error the client connection
/// should be closed (its request body may be half read).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ProxyError {
    /// The request body's framing is invalid or ambiguous (smuggling defenses): 400.
    #[error("bad request body: {0}")]
    BadRequest(#[from] BodyError),
    /// The client stopped sending its body for [`BODY_IDLE_TIMEOUT`], or sent it slower than `limits.body_timeout`
    /// and `limits.body_min_rate` allow: 408.
    #[error("client request body timed out")]
    ClientTimeout,
    /// Reading from or writing to the client failed (it went away): nothing to answer.
    #[error("client I/O: {0}")]
    ClientIo(io::Error),
    /// No upstream connection: 502, 503 or 504 (see [`ConnectError::status`]).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The upstream connection failed before a response arrived: 502.
    #[error("upstream I/O: {0}")]
    UpstreamIo(io::Error),
    /// The upstream sent no response head in time: 504.
    #[error("upstream response timed out")]
    UpstreamTimeout,
    /// The upstream's response is malformed (bad head, bad framing, unexpected `101`): 502.
    #[error("bad upstream response: {0}")]
    BadResponse(String),
    /// The route names an upstream this worker does not know (a bug): 500.
    #[error("unknown upstream #{0}")]
    UnknownUpstream(usize),
    /// The response had started towards the client when this failure happened: nothing more can be sent.
    #[error("response aborted: {0}")]
    Aborted(Box<ProxyError>),
}

impl ProxyError {
    /// The status to send the client, or `None` when part of the response was already sent (or the client is
    /// gone) and the connection must simply be closed.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            ProxyError::BadRequest(e) => Some(e.status()),
            ProxyError::ClientTimeout => Some(408),
            ProxyError::ClientIo(_) | ProxyError::Aborted(_) => None,
            ProxyError::Connect(e) => Some(e.status()),
            ProxyError::UpstreamIo(_) | ProxyError::BadResponse(_) => Some(502),
            ProxyError::UpstreamTimeout => Some(504),
            ProxyError::UnknownUpstream(_) => Some(500),
        }
    }

    /// Where the failure came from (for logs and metrics).
    pub(crate) fn blame(&self) -> Blame {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientTimeout | ProxyError::ClientIo(_) => {
                Blame::Client
            }
            ProxyError::Connect(_)
            | ProxyError::UpstreamIo(_)
            | ProxyError::UpstreamTimeout
            | ProxyError::BadResponse(_) => Blame::Upstream,
            ProxyError::UnknownUpstream(_) => Blame::Internal,
            ProxyError::Aborted(inner) => inner.blame(),
        }
    }
}

/// Proxies one request (whose head the caller already read) to `upstream` and its response back to `client`.
///
/// `leftover` holds bytes the caller read after the head (body start, pipelined requests); on `Ok` it holds
/// exactly the bytes after this request's body. The returned [`Persist`] follows HTTP/1.0 / 1.1 and `Connection`
/// rules and the response framing (a close-delimited response closes the client connection).
pub(crate) async fn forward<S>(
    client: &mut S,
    fwd: Forwarding<'_>,
    head: RequestHead,
    dest: &Destination,
    leftover: &mut Vec<u8>,
    upstream: UpstreamId,
    ctx: &WorkerCtx,
) -> Result<(Persist, u16), ProxyError>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let (Some(pool), Some(balancer)) = (
        ctx.config.upstreams.get(upstream.0),
        ctx.balancers.get(upstream.0),
    ) else {
        return Err(ProxyError::UnknownUpstream(upstream.0));
    };
    let body_kind = request_body_kind(&head)?;
    let expect_continue = !matches!(body_kind, BodyKind::None | BodyKind::Length(0))
        && head.minor_version >= 1
        && head.has_token("expect", "100-continue");
    let key = match &pool.balance {
        Balance::Hash(k) => hash_input(k, fwd.client, &head),
        _ => None,
    };

    // The request head for the upstream plus the body bytes already read; kept whole so a retry can resend it.
    let drop: &[&str] = if expect_continue { &["expect"] } else { &[] };
    let mut initial = rewrite::upstream_head(
        &head,
        dest,
        fwd,
        UpstreamHead {
            framing: body_kind,
            drop,
            add: &[],
        },
    );
    let limits = &ctx.config.limits;
    let mut body = RequestBody::new(
        body_kind,
        BodyDeadline::new(Instant::now(), limits.body_timeout, limits.body_min_rate),
    );
    let used = body.feed(leftover, &mut initial)?;
    leftover.drain(..used);

    let exchange = Exchange {
        ctx,
        upstream_id: upstream,
        upstream: pool,
        balancer,
        key,
        method: head.method.clone(),
        client_minor: head.minor_version,
        client_keep_alive: wants_keep_alive(head.minor_version, &head),
        idempotent: is_idempotent(&head.method),
        has_body: !matches!(body_kind, BodyKind::None | BodyKind::Length(0)),
        expect_continue,
    };
    let mut tried = Vec::new();
    let mut sent_continue = false;
    let mut allow_pooled = true;
    loop {
        let conn = exchange.obtain(&mut tried, allow_pooled).await?;
        let reused = conn.reused;
        match exchange
            .attempt(
                client,
                leftover,
                conn,
                initial,
                &mut body,
                &mut sent_continue,
            )
            .await
        {
            Ok(persist) => return Ok(persist),
            Err(AttemptError::Retry {
                error,
                initial: again,
            }) if reused && allow_pooled => {
                tracing::debug!(error = %error, "pooled upstream connection failed; retrying on a fresh one");
                initial = again;
                allow_pooled = false;
            }
            Err(AttemptError::Retry { error, .. } | AttemptError::Fatal(error)) => {
                return Err(error);
            }
        }
    }
}

/// Everything one exchange needs, fixed before the first attempt.
struct Exchange<'a> {
    ctx: &'a WorkerCtx,
    upstream_id: UpstreamId,
    upstream: &'a Upstream,
    balancer: &'a Rc<Balancer>,
    key: Option<u64>,
    method: String,
    client_minor: u8,
    client_keep_alive: bool,
    idempotent: bool,
    has_body: bool,
    expect_continue: bool,
}

/// An upstream connection for one attempt.
struct Conn {
    stream: UpstreamStream,
    server: usize,
    _guard: ActiveGuard,
    reused: bool,
}

enum AttemptError {
    /// Failed on a reused connection before anything of the response arrived and before any request byte was
    /// read from the client beyond `initial`: the request may be sent again.
    Retry {
        error: ProxyError,
        initial: Vec<u8>,
    },
    Fatal(ProxyError),
}

/// Request body still to be read from the client, and by when.
struct RequestBody {
    progress: BodyProgress,
    deadline: BodyDeadline,
    received: u64,
}

impl RequestBody {
    fn new(kind: BodyKind, deadline: BodyDeadline) -> Self {
        Self {
            progress: BodyProgress::new(kind, true),
            deadline,
            received: 0,
        }
    }

    fn is_done(&self) -> bool {
        self.progress.is_done()
    }

    /// How long the next read may wait: the idle bound, cut short by the body's overall deadline.
    fn read_timeout(&self, now: Instant) -> Option<Duration> {
        let left = self
            .deadline
            .at(self.received)
            .checked_duration_since(now)?;
        (!left.is_zero()).then(|| left.min(BODY_IDLE_TIMEOUT))
    }

    /// Consumes body bytes from `input`, appending what to send upstream to `out`; returns the bytes consumed.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, BodyError> {
        let used = self.progress.feed(input, out)?;
        self.received += used as u64;
        Ok(used)
    }
}

impl<'a> Exchange<'a> {
    /// A pooled connection to the balancer's choice, or a new one (trying further servers on failure).
    async fn obtain(
        &self,
        tried: &mut Vec<usize>,
        allow_pooled: bool,
    ) -> Result<Conn, ConnectError> {
        let now = Instant::now();
        let Some(server) = self.balancer.pick(self.key, tried, now) else {
            return Err(if self.balancer.has_full(tried) {
                self.balancer.count_full();
                ConnectError::Full
            } else if tried.is_empty() {
                ConnectError::NoHealthyServer
            } else {
                ConnectError::Exhausted(tried.len())
            });
        };
        let pooled = if allow_pooled {
            self.ctx.http_pool.take(self.upstream_id, server, now).await
        } else {
            None
        };
        // A server that filled up since the pick: its idle connection is closed and the connect below finds another.
        if let Some(stream) = pooled
            && let Some(guard) = self.balancer.acquire(server)
        {
            return Ok(Conn {
                stream,
                server,
                _guard: guard,
                reused: true,
            });
        }
        let conn = match connect_to(self.balancer, self.upstream, self.tls(), server, tried).await {
            Ok(conn) => conn,
            Err(first) => {
                match connect(self.balancer, self.upstream, self.tls(), self.key, tried).await {
                    Ok(conn) => conn,
                    Err(ConnectError::NoHealthyServer | ConnectError::Exhausted(_)) => {
                        return Err(first);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(Conn {
            stream: conn.stream,
            server: conn.server,
            _guard: conn.guard,
            reused: false,
        })
    }

    /// One try on `conn`: send the request, stream the response, pool the connection if it stays usable.
    async fn attempt<S>(
        &self,
        client: &mut S,
        leftover: &mut Vec<u8>,
        mut conn: Conn,
        initial: Vec<u8>,
        body: &mut RequestBody,
        sent_continue: &mut bool,
    ) -> Result<(Persist, u16), AttemptError>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        let may_retry = conn.reused && (self.idempotent || !self.has_body);
        // 1. Request head and the body bytes already at hand.
        let initial = match write_all_timed(&mut conn.stream, initial, BODY_IDLE_TIMEOUT).await {
            Ok(buf) => buf,
            Err((e, Some(buf))) if may_retry => {
                return Err(AttemptError::Retry {
                    error: ProxyError::UpstreamIo(e),
                    initial: buf,
                });
            }
            Err((e, _)) => return Err(self.fatal_before_response(&conn, ProxyError::UpstreamIo(e))),
        };
        // 2. The rest of the body, streamed from the client. From here on a retry is impossible.
        let streamed = !body.is_done();
        if streamed {
            if self.expect_continue && !*sent_continue {
                *sent_continue = true;
                write_all_timed(
                    client,
                    b"HTTP/1.1 100 Continue\r\n\r\n".as_slice(),
                    BODY_IDLE_TIMEOUT,
                )
                .await
                .map_err(|(e, _)| AttemptError::Fatal(ProxyError::ClientIo(e)))?;
            }
            self.stream_request_body(client, &mut conn.stream, body, leftover)
                .await
                .map_err(AttemptError::Fatal)?;
        }
        // 3. The response head (interim 1xx responses are forwarded on the way).
        let (response, rbuf) = match self
            .read_response_head(client, &mut conn.stream, *sent_continue)
            .await
        {
            Ok(r) => r,
            Err(HeadFailure {
                error,
                nothing_received: true,
            }) if may_retry && !streamed => {
                return Err(AttemptError::Retry { error, initial });
            }
            Err(HeadFailure {
                error,
                nothing_received,
            }) => {
                // A slow answer is this request's problem (504), not proof the server is down; a connection closed
                // without an answer or a malformed answer is a broken response.
                let broken = match &error {
                    ProxyError::UpstreamTimeout | ProxyError::ClientIo(_) => false,
                    _ => !nothing_received || !conn.reused,
                };
                if broken {
                    self.mark_failed(conn.server);
                }
                return Err(AttemptError::Fatal(error));
            }
        };
        drop(initial);
        // 4. The response itself.
        let server = conn.server;
        let persist = self
            .stream_response(client, conn, &response, rbuf)
            .await
            .map_err(|e| {
                if matches!(e, ProxyError::BadResponse(_)) {
                    self.mark_failed(server);
                }
                AttemptError::Fatal(e)
            })?;
        Ok((persist, response.status))
    }

    /// A failure on a fresh connection before any response: the server counts as failed (passive health).
    fn fatal_before_response(&self, conn: &Conn, error: ProxyError) -> AttemptError {
        if !conn.reused {
            self.mark_failed(conn.server);
        }
        AttemptError::Fatal(error)
    }

    /// The pool's TLS client, for a TLS pool.
    fn tls(&self) -> Option<&'a TlsConnector> {
        self.ctx.upstream_tls.get(self.upstream_id.0)?.as_ref()
    }

    /// Passive health: the server gave a broken response (or could not take the request).
    fn mark_failed(&self, server: usize) {
        tracing::debug!(upstream = %self.upstream.name, server = %self.balancer.address(server), "upstream server failed a request");
        self.balancer.mark_failed(server, Instant::now());
    }

    async fn stream_request_body<S>(
        &self,
        client: &mut S,
        upstream: &mut UpstreamStream,
        body: &mut RequestBody,
        leftover: &mut Vec<u8>,
    ) -> Result<(), ProxyError>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        let mut inbuf = self.ctx.buffers.take();
        let mut out = self.ctx.buffers.take();
        while !body.is_done() {
            inbuf.clear();
            let limit = reencode_read_limit(&inbuf);
            let Some(timeout) = body.read_timeout(Instant::now()) else {
                return Err(ProxyError::ClientTimeout);
            };
            let (n, buf) = match read_timed(client, inbuf, limit, timeout).await {
                Ok(r) => r,
                Err(ReadFailure::TimedOut) => return Err(ProxyError::ClientTimeout),
                Err(ReadFailure::Io(e)) => return Err(ProxyError::ClientIo(e)),
            };
            inbuf = buf;
            if n == 0 {
                return Err(ProxyError::ClientIo(io::ErrorKind::UnexpectedEof.into()));
            }
            out.clear();
            let used = out.with_vec(|out| body.feed(&inbuf, out))?;
            leftover.extend_from_slice(&inbuf[used..]);
            out = write_all_timed(upstream, out, BODY_IDLE_TIMEOUT)
                .await
                .map_err(|(e, _)| ProxyError::UpstreamIo(e))?;
        }
        Ok(())
    }

    /// Reads the final response head within the head timeout, forwarding 1xx interim responses to the client.
    /// Returns the head and the buffer holding it followed by the first body bytes.
    async fn read_response_head<S>(
        &self,
        client: &mut S,
        upstream: &mut UpstreamStream,
        sent_continue: bool,
    ) -> Result<(ResponseHead, PoolBuf), HeadFailure>
    where
        S: AsyncWriteRent,
    {
        let deadline = Instant::now() + self.ctx.config.limits.handshake_timeout;
        let mut buf = self.ctx.buffers.take();
        let mut received = false;
        let mut interim = 0;
        loop {
            let read = read_response_head(upstream, buf, RESPONSE_HEAD_LIMITS, deadline).await;
            received |= read.received;
            let head = match read.head {
                Ok((head, read_into)) => {
                    buf = read_into;
                    head
                }
                Err(e) => {
                    let error = match e {
                        HeadReadError::TimedOut => ProxyError::UpstreamTimeout,
                        HeadReadError::Io(e) => ProxyError::UpstreamIo(e),
                        HeadReadError::Closed => ProxyError::UpstreamIo(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "upstream closed the connection before a complete response head",
                        )),
                        HeadReadError::Malformed(e) => return Err(HeadFailure::bad_head(&e)),
                    };
                    return Err(HeadFailure {
                        error,
                        nothing_received: !received,
                    });
                }
            };
            if head.status == 101 {
                return Err(HeadFailure::bad(
                    "unexpected 101 to a request without Upgrade",
                ));
            }
            if !(100..200).contains(&head.status) {
                return Ok((head, buf));
            }
            interim += 1;
            if interim > MAX_INTERIM_RESPONSES {
                return Err(HeadFailure::bad(
                    "more interim (1xx) responses than the gateway forwards",
                ));
            }
            buf.drain(..head.head_len);
            let forward = self.client_minor >= 1 && !(head.status == 100 && sent_continue);
            if forward {
                let bytes = response_head(&head, BodyKind::None, false, None);
                write_all_timed(client, bytes, BODY_IDLE_TIMEOUT)
                    .await
                    .map_err(|(e, _)| HeadFailure {
                        error: ProxyError::ClientIo(e),
                        nothing_received: false,
                    })?;
            }
        }
    }

    /// Sends the response head and streams the body; pools the upstream connection when it stays usable.
    async fn stream_response<S>(
        &self,
        client: &mut S,
        mut conn: Conn,
        response: &ResponseHead,
        mut rbuf: PoolBuf,
    ) -> Result<Persist, ProxyError>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        let kind = response_body_kind(&self.method, response)
            .map_err(|e| ProxyError::BadResponse(e.to_string()))?;
        let client_chunked = kind == BodyKind::Chunked && self.client_minor >= 1;
        let persist = if self.client_keep_alive
            && kind != BodyKind::CloseDelimited
            && (kind != BodyKind::Chunked || client_chunked)
        {
            Persist::KeepAlive
        } else {
            Persist::Close
        };
        let connection = match persist {
            Persist::Close => Some("close"),
            Persist::KeepAlive if self.client_minor == 0 => Some("keep-alive"),
            Persist::KeepAlive => None,
        };
        let mut upstream_reusable =
            wants_keep_alive(response.minor_version, response) && kind != BodyKind::CloseDelimited;
        let mut body = BodyProgress::new(kind, client_chunked);

        // Head and the body bytes that came with it, in one write.
        let mut out = response_head(response, kind, client_chunked, connection);
        let first = &rbuf[response.head_len..];
        let used = body
            .feed(first, &mut out)
            .map_err(|e| ProxyError::BadResponse(e.to_string()))?;
        if used < first.len() {
            upstream_reusable = false; // bytes beyond the response: the upstream is confused
        }
        let aborted = |e: ProxyError| ProxyError::Aborted(Box::new(e));
        let mut out = write_all_timed(client, out, BODY_IDLE_TIMEOUT)
            .await
            .map_err(|(e, _)| aborted(ProxyError::ClientIo(e)))?;

        while !body.is_done() {
            rbuf.clear();
            let limit = reencode_read_limit(&rbuf);
            let (n, buf) = match read_timed(&mut conn.stream, rbuf, limit, BODY_IDLE_TIMEOUT).await
            {
                Ok(r) => r,
                Err(ReadFailure::TimedOut) => return Err(aborted(ProxyError::UpstreamTimeout)),
                Err(ReadFailure::Io(e)) => return Err(aborted(ProxyError::UpstreamIo(e))),
            };
            rbuf = buf;
            if n == 0 {
                if matches!(body, BodyProgress::UntilClose) {
                    break;
                }
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed mid-body");
                return Err(aborted(ProxyError::UpstreamIo(eof)));
            }
            // Verbatim bodies go out of the read buffer itself; only chunked bodies are rewritten into `out`.
            let (used, rewritten) = match body.advance_verbatim(n) {
                Some(used) => {
                    rbuf.truncate(used);
                    (used, false)
                }
                None => {
                    out.clear();
                    let used = body
                        .feed(&rbuf, &mut out)
                        .map_err(|e| aborted(ProxyError::BadResponse(e.to_string())))?;
                    (used, true)
                }
            };
            if used < n {
                upstream_reusable = false; // bytes beyond the response: the upstream is confused
            }
            if rewritten {
                out = write_all_timed(client, out, BODY_IDLE_TIMEOUT)
                    .await
                    .map_err(|(e, _)| aborted(ProxyError::ClientIo(e)))?;
            } else {
                rbuf = write_all_timed(client, rbuf, BODY_IDLE_TIMEOUT)
                    .await
                    .map_err(|(e, _)| aborted(ProxyError::ClientIo(e)))?;
            }
        }
        drop((rbuf, out));
        self.balancer.mark_ok(conn.server);
        if upstream_reusable {
            self.ctx
                .http_pool
                .put(self.upstream_id, conn.server, conn.stream, Instant::now());
        }
        Ok(persist)
    }
}

struct HeadFailure {
    error: ProxyError,
    /// No byte of a response arrived (the request may be retried on a stale pooled connection).
    nothing_received: bool,
}

impl HeadFailure {
    fn bad(message: &str) -> Self {
        Self {
            error: ProxyError::BadResponse(message.to_owned()),
            nothing_received: false,
        }
    }

    fn bad_head(e: &HeadError) -> Self {
        Self::bad(&e.to_string())
    }
}

/// HTTP/1.1 persistence: 1.1 unless `Connection: close`, 1.0 only with `Connection: keep-alive`.
fn wants_keep_alive(minor_version: u8, head: &impl Headers) -> bool {
    if minor_version >= 1 {
        !head.has_token("connection", "close")
    } else {
        head.has_token("connection", "keep-alive")
    }
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// The response head sent to the client: end-to-end headers only, framing stated by the gateway, and
/// `Connection` as decided for the client connection.
fn response_head(
    head: &ResponseHead,
    kind: BodyKind,
    chunked: bool,
    connection: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.head_len + 64);
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", head.status, head.reason).as_bytes());
    for h in &head.headers {
        let name = h.name.as_str();
        let restated =
            name.eq_ignore_ascii_case("content-length") && matches!(kind, BodyKind::Length(_));
        if restated || name.eq_ignore_ascii_case("transfer-encoding") || is_hop_by_hop(head, name) {
            continue;
        }
        write_header(&mut out, name, &h.value);
    }
    if let BodyKind::Length(n) = kind {
        write_header(&mut out, "Content-Length", n.to_string().as_bytes());
    }
    if chunked {
        write_header(&mut out, "Transfer-Encoding", b"chunked");
    }
    if let Some(c) = connection {
        write_header(&mut out, "Connection", c.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

enum ReadFailure {
    TimedOut,
    Io(io::Error),
}

/// Reads at most `limit` bytes appended after `buf`'s current contents, within `timeout`. Returns the count and
/// the buffer (0 = end of stream). On failure the buffer is dropped.
async fn read_timed<R: AsyncReadRent>(
    reader: &mut R,
    mut buf: PoolBuf,
    limit: usize,
    timeout: Duration,
) -> Result<(usize, PoolBuf), ReadFailure> {
    let start = buf.len();
    let end = start + limit.min(buf.capacity() - start);
    if end == start {
        buf.reserve(limit.max(1));
    }
    let end = start + limit.min(buf.capacity() - start).max(1);
    match monoio::time::timeout(timeout, reader.read(buf.slice_mut(start..end))).await {
        Ok((Ok(n), slice)) => Ok((n, slice.into_inner())),
        Ok((Err(e), _)) => Err(ReadFailure::Io(e)),
        Err(_) => Err(ReadFailure::TimedOut),
    }
}

/// How much to read into `buf` so that re-encoding the bytes (chunked framing) still fits its capacity.
fn reencode_read_limit(buf: &PoolBuf) -> usize {
    buf.capacity()
        .saturating_sub(REENCODE_SLACK)
        .max(REENCODE_SLACK)
}

/// Writes all of `buf` within `timeout` per call. On an I/O error the buffer comes back (for a retry); on a
/// timeout it is lost.
async fn write_all_timed<W: AsyncWriteRent, T: IoBuf + 'static>(
    writer: &mut W,
    buf: T,
    timeout: Duration,
) -> Result<T, (io::Error, Option<T>)> {
    match monoio::time::timeout(timeout, writer.write_all(buf)).await {
        Ok((Ok(_), buf)) => Ok(buf),
        Ok((Err(e), buf)) => Err((e, Some(buf))),
        Err(_) => Err((
            io::Error::new(io::ErrorKind::TimedOut, "write timed out"),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::testing;

    fn request(raw: &str) -> RequestHead {
        testing::request(raw.as_bytes())
    }

    #[test]
    fn response_head_strips_hop_by_hop_and_states_framing_and_connection() {
        let raw = "HTTP/1.1 200 Fine\r\nConnection: X-Up\r\nX-Up: 1\r\nKeep-Alive: 1\r\nTransfer-Encoding: chunked\r\n\
                   Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
        let head = testing::response(raw.as_bytes());
        let out = response_head(&head, BodyKind::Chunked, true, Some("close"));
        let back = testing::response(&out);
        assert_eq!((back.status, back.reason.as_str()), (200, "Fine"));
        assert_eq!(back.header("x-up"), None);
        assert_eq!(back.header("keep-alive"), None);
        assert_eq!(back.header_str("transfer-encoding"), Some("chunked"));
        assert_eq!(back.header_str("connection"), Some("close"));
        assert_eq!(back.headers_named("set-cookie").count(), 2);

        // De-chunked for an HTTP/1.0 client: no Transfer-Encoding at all.
        let out = response_head(&head, BodyKind::Chunked, false, Some("close"));
        let back = testing::response(&out);
        assert_eq!(back.header("transfer-encoding"), None);

        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n";
        let head = testing::response(raw.as_bytes());
        let out = response_head(&head, BodyKind::Length(3), false, Some("keep-alive"));
        let back = testing::response(&out);
        assert_eq!(
            back.headers_named("content-length").collect::<Vec<_>>(),
            vec![b"3".as_slice()]
        );
        assert_eq!(back.header_str("connection"), Some("keep-alive"));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(wants_keep_alive(1, &request("GET / HTTP/1.1\r\n\r\n")));
        assert!(!wants_keep_alive(
            1,
            &request("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
        ));
        assert!(!wants_keep_alive(0, &request("GET / HTTP/1.0\r\n\r\n")));
        assert!(wants_keep_alive(
            0,
            &request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        ));
        assert!(is_idempotent("PUT") && !is_idempotent("POST") && !is_idempotent("PATCH"));
    }

    #[test]
    fn error_statuses() {
        assert_eq!(
            ProxyError::BadRequest(BodyError::ConflictingLength).status(),
            Some(400)
        );
        assert_eq!(
            ProxyError::Connect(ConnectError::NoHealthyServer).status(),
            Some(503)
        );
        assert_eq!(
            ProxyError::Connect(ConnectError::TimedOut).status(),
            Some(504)
        );
        assert_eq!(ProxyError::UpstreamTimeout.status(), Some(504));
        assert_eq!(ProxyError::BadResponse("x".into()).status(), Some(502));
        let aborted = ProxyError::Aborted(Box::new(ProxyError::UpstreamTimeout));
        assert_eq!((aborted.status(), aborted.blame()), (None, Blame::Upstream));
        assert_eq!(
            ProxyError::ClientIo(io::ErrorKind::BrokenPipe.into()).status(),
            None
        );
    }
}
