//! Idle keep-alive connections to upstream servers, per worker, keyed by (upstream, server index).
//!
//! Owns: keeping, expiring and handing out idle HTTP/1.1 upstream connections, and making sure an idle connection
//! never carries anything to the next request. Each pooled connection has a small watcher task waiting for it to
//! become readable: an upstream that writes while the connection is idle (bytes after its response, as a confused
//! or hostile server does) or closes it gets the connection discarded at once, as nginx does with its keepalive
//! close handler. Before reuse, a non-blocking peek checks once more that nothing arrived.
//! Does not own: connecting (`super::connect`), nor deciding whether a connection is reusable after an exchange
//! (`crate::http_proxy`: only a response that ended exactly at its framing comes back here).
//!
//! Bounded to `max_idle_per_server` per key (the oldest is closed when a new one arrives); connections idle longer
//! than `idle_timeout` are closed by their watcher. Most recently used connections are reused first, so surplus
//! connections age out.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::stream::UpstreamStream;
use ringway_config::UpstreamId;

/// Idle connections kept per upstream server and worker.
pub(crate) const DEFAULT_MAX_IDLE_PER_SERVER: usize = 32;
/// How long an idle upstream connection stays pooled (below the 5 s keep-alive of Node.js and Apache, so the
/// gateway rarely reuses a connection the server is closing).
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The idle connections of one worker.
pub(crate) struct UpstreamPool {
    idle: RefCell<HashMap<ServerKey, Vec<Rc<IdleSlot>>>>,
    max_idle_per_server: usize,
    idle_timeout: Duration,
}

/// An upstream and the index of one of its servers.
type ServerKey = (UpstreamId, usize);

/// One pooled connection, shared by the pool and the connection's watcher task.
struct IdleSlot {
    since: Instant,
    state: Cell<SlotState>,
    /// The connection, handed back by the watcher when a request wants it.
    returned: RefCell<Option<UpstreamStream>>,
    watcher: Cell<Option<Waker>>,
    taker: Cell<Option<Waker>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Idle; the watcher owns the connection and waits for it to become readable.
    Watching,
    /// A request asked for it; the watcher is to hand it back.
    Wanted,
    /// Handed back in `returned`.
    Returned,
    /// The pool let it go (full, expired); the watcher is to close it.
    Discarded,
    /// Closed: the upstream wrote or hung up while idle, or it expired.
    Closed,
}

impl Default for UpstreamPool {
    fn default() -> Self {
        Self::new()
    }
}

impl UpstreamPool {
    /// A pool with [`DEFAULT_MAX_IDLE_PER_SERVER`] and [`DEFAULT_IDLE_TIMEOUT`].
    pub(crate) fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_IDLE_PER_SERVER, DEFAULT_IDLE_TIMEOUT)
    }

    /// A pool keeping at most `max_idle_per_server` connections per server for at most `idle_timeout`.
    pub(crate) fn with_limits(max_idle_per_server: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: RefCell::new(HashMap::new()),
            max_idle_per_server,
            idle_timeout,
        }
    }

    /// The most recently pooled connection to `server` of `upstream` that is still clean: open, unexpired and with
    /// nothing to read. Must run on a monoio runtime (the watcher hands the connection back).
    pub(crate) async fn take(
        &self,
        upstream: UpstreamId,
        server: usize,
        now: Instant,
    ) -> Option<UpstreamStream> {
        loop {
            let slot = self.pop_live(upstream, server, now)?;
            slot.state.set(SlotState::Wanted);
            wake(&slot.watcher);
            let stream = poll_fn(|cx| match slot.state.get() {
                SlotState::Returned => Poll::Ready(slot.returned.borrow_mut().take()),
                SlotState::Closed | SlotState::Discarded => Poll::Ready(None),
                SlotState::Watching | SlotState::Wanted => {
                    slot.taker.set(Some(cx.waker().clone()));
                    Poll::Pending
                }
            })
            .await;
            if let Some(stream) = stream {
                match waiting_input(stream.tcp()) {
                    WaitingInput::Nothing => return Some(stream),
                    other => other.log(server, "just before reuse"),
                }
            }
        }
    }

    /// Keeps `stream` for reuse (or closes it when the server's share of the pool is full). Must run on a monoio
    /// runtime: it spawns the connection's watcher.
    pub(crate) fn put(
        &self,
        upstream: UpstreamId,
        server: usize,
        stream: UpstreamStream,
        now: Instant,
    ) {
        if self.max_idle_per_server == 0 || self.idle_timeout.is_zero() {
            return;
        }
        let slot = Rc::new(IdleSlot {
            since: now,
            state: Cell::new(SlotState::Watching),
            returned: RefCell::new(None),
            watcher: Cell::new(None),
            taker: Cell::new(None),
        });
        {
            let mut idle = self.idle.borrow_mut();
            let list = idle.entry((upstream, server)).or_default();
            self.prune(list, now);
            if list.len() >= self.max_idle_per_server {
                list.remove(0).discard();
            }
            list.push(slot.clone());
        }
        monoio::spawn(watch(slot, stream, server, self.idle_timeout));
    }

    #[cfg(test)]
    /// Number of pooled connections that are still open.
    pub(crate) fn idle_count(&self) -> usize {
        self.idle
            .borrow()
            .values()
            .flatten()
            .filter(|s| s.state.get() == SlotState::Watching)
            .count()
    }

    fn pop_live(&self, upstream: UpstreamId, server: usize, now: Instant) -> Option<Rc<IdleSlot>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&(upstream, server))?;
        self.prune(list, now);
        list.pop()
    }

    /// Drops closed entries and lets expired ones go.
    fn prune(&self, list: &mut Vec<Rc<IdleSlot>>, now: Instant) {
        list.retain(|s| {
            let live = s.state.get() == SlotState::Watching
                && now.saturating_duration_since(s.since) < self.idle_timeout;
            if !live {
                s.discard();
            }
            live
        });
    }
}

impl IdleSlot {
    fn discard(&self) {
        if self.state.get() == SlotState::Watching {
            self.state.set(SlotState::Discarded);
            wake(&self.watcher);
        }
    }
}

fn wake(cell: &Cell<Option<Waker>>) {
    if let Some(w) = cell.take() {
        w.wake();
    }
}

/// Owns one idle connection until a request wants it, the upstream writes or hangs up, or it expires.
async fn watch(slot: Rc<IdleSlot>, stream: UpstreamStream, server: usize, idle_timeout: Duration) {
    enum Outcome {
        Wanted,
        Readable,
        Discarded,
        Expired,
    }
    let outcome = {
        let mut readable = pin!(stream.tcp().readable(false));
        let mut expiry = pin!(monoio::time::sleep(idle_timeout));
        poll_fn(|cx| {
            match slot.state.get() {
                SlotState::Wanted => return Poll::Ready(Outcome::Wanted),
                SlotState::Discarded => return Poll::Ready(Outcome::Discarded),
                _ => {}
            }
            slot.watcher.set(Some(cx.waker().clone()));
            if readable.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Outcome::Readable);
            }
            if expiry.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Outcome::Expired);
            }
            Poll::Pending
        })
        .await
    };
    match outcome {
        Outcome::Wanted => {
            *slot.returned.borrow_mut() = Some(stream);
            slot.state.set(SlotState::Returned);
            wake(&slot.taker);
            return;
        }
        Outcome::Readable => waiting_input(stream.tcp()).log(server, "while idle"),
        Outcome::Discarded | Outcome::Expired => {}
    }
    slot.state.set(SlotState::Closed);
    wake(&slot.taker);
    drop(stream);
}

/// What an idle connection has waiting to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitingInput {
    /// Nothing: a read would block. The connection is clean.
    Nothing,
    /// The upstream closed it: the usual end of a keep-alive connection the server timed out.
    Closed,
    /// Bytes no request asked for (a confused or hostile upstream), or a socket error.
    Stray,
}

impl WaitingInput {
    /// Logs why a pooled connection is discarded: a close is routine, stray bytes are the upstream's fault.
    fn log(self, server: usize, when: &str) {
        match self {
            WaitingInput::Nothing => {}
            WaitingInput::Closed => {
                tracing::debug!(
                    server,
                    "upstream closed a pooled connection {when}; discarded"
                );
            }
            WaitingInput::Stray => tracing::warn!(
                server,
                "upstream sent bytes no request asked for on a pooled connection {when}; discarded"
            ),
        }
    }
}

/// Looks at what is waiting on `stream` without consuming it or blocking.
fn waiting_input(stream: &monoio::net::TcpStream) -> WaitingInput {
    let mut byte = [0u8; 1];
    #[allow(unsafe_code)]
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow (used for one recv call).
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    match rustix::net::recv(fd, &mut byte[..], flags) {
        Err(e) if e == rustix::io::Errno::AGAIN => WaitingInput::Nothing,
        Ok((0, _)) => WaitingInput::Closed,
        _ => WaitingInput::Stray,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn run<F: Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// A connected pair: the pool's end and the server's end.
    async fn pair(listener: &std::net::TcpListener) -> (UpstreamStream, std::net::TcpStream) {
        let addr = listener.local_addr().expect("addr");
        let client = monoio::net::TcpStream::connect_addr(addr)
            .await
            .expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (UpstreamStream::Plain(client), server)
    }

    #[test]
    fn bounded_lifo_and_expiring() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        run(async {
            let pool = UpstreamPool::with_limits(2, Duration::from_millis(300));
            let id = UpstreamId(0);
            let now = Instant::now();
            let mut ports = Vec::new();
            let mut servers = Vec::new();
            for _ in 0..3 {
                let (c, s) = pair(&listener).await;
                ports.push(c.tcp().local_addr().expect("addr").port());
                servers.push(s);
                pool.put(id, 0, c, now);
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(pool.idle_count(), 2, "the oldest was closed");
            assert!(pool.take(id, 1, now).await.is_none(), "other server");
            assert!(
                pool.take(UpstreamId(1), 0, now).await.is_none(),
                "other upstream"
            );
            let newest = pool.take(id, 0, now).await.expect("pooled");
            assert_eq!(
                newest.tcp().local_addr().expect("addr").port(),
                ports[2],
                "most recent first"
            );
            // The remaining one expires by itself.
            monoio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(pool.idle_count(), 0);
            assert!(pool.take(id, 0, Instant::now()).await.is_none());
        });
    }

    #[test]
    fn a_connection_the_upstream_writes_to_or_closes_while_idle_is_discarded() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        run(async {
            let pool = UpstreamPool::new();
            let id = UpstreamId(0);
            let (stray, mut stray_server) = pair(&listener).await;
            let (closed, closed_server) = pair(&listener).await;
            let (clean, _clean_server) = pair(&listener).await;
            let clean_port = clean.tcp().local_addr().expect("addr").port();
            pool.put(id, 0, clean, Instant::now());
            pool.put(id, 0, closed, Instant::now());
            pool.put(id, 0, stray, Instant::now());
            monoio::time::sleep(Duration::from_millis(10)).await;
            stray_server
                .write_all(b"HTTP/1.1 200 OK\r\n")
                .expect("write");
            drop(closed_server);
            monoio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(pool.idle_count(), 1, "both were discarded while idle");
            let got = pool
                .take(id, 0, Instant::now())
                .await
                .expect("the clean one");
            assert_eq!(got.tcp().local_addr().expect("addr").port(), clean_port);
        });
    }

    #[test]
    fn waiting_input_tells_a_close_from_stray_bytes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        run(async {
            let (clean, _clean_server) = pair(&listener).await;
            let (closed, closed_server) = pair(&listener).await;
            let (stray, mut stray_server) = pair(&listener).await;
            drop(closed_server);
            stray_server.write_all(b"x").expect("write");
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(waiting_input(clean.tcp()), WaitingInput::Nothing);
            assert_eq!(waiting_input(closed.tcp()), WaitingInput::Closed);
            assert_eq!(waiting_input(stray.tcp()), WaitingInput::Stray);
        });
    }

    #[test]
    fn bytes_that_arrive_before_the_watcher_sees_them_are_caught_at_reuse() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        run(async {
            let pool = UpstreamPool::new();
            let id = UpstreamId(0);
            let (stray, mut stray_server) = pair(&listener).await;
            pool.put(id, 0, stray, Instant::now());
            // No yield: the watcher has not run yet when the bytes are there and the request asks.
            stray_server.write_all(b"x").expect("write");
            std::thread::sleep(Duration::from_millis(20));
            assert!(pool.take(id, 0, Instant::now()).await.is_none());
        });
    }
}
