//! The load generator: connection setup (TCP from a loopback source address, optional TLS, the
//! upgrade), the three sending modes, and the run's driver (threads, progress line, report).
//!
//! - Closed loop ([`Mode::Closed`], [`Mode::Exact`]): one task per connection keeps K messages in
//!   flight; every read's replies refill the window in one write. Latency is measured from the
//!   actual send time.
//! - Open loop ([`Mode::Open`]): per connection a writer sends on a fixed schedule (rate / conns
//!   per second, connections phase-shifted) and a reader verifies echoes. Each message carries its
//!   *intended* send time, so a stall shows up in the latency of every message scheduled during it
//!   (coordinated-omission correction, as wrk2 does). The writer ends with a Close; the server's
//!   Close reply marks that every echo is in.
//! - Connect-only ([`Mode::ConnectOnly`]): open, upgrade and hold idle connections.
//!
//! Every echo is verified byte for byte ([`crate::payload::Verifier`]), in order. Buffers are
//! allocated per connection at start and reused; the message path does not allocate.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use frame_simd::{
    Decoded, DecoderConfig, FrameDecoder, FrameHeader, MAX_HEADER_LEN, OpCode, PayloadMode, Role,
    Rsv, apply_mask,
};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use monoio::time::{sleep_until, timeout_at};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::config::{LoadConfig, Mode};
use crate::handshake;
use crate::net;
use crate::payload::{Kind, Stamp, Verifier, write_payload};
use crate::report;
use crate::stats::{Clock, Local, Shared, Summary};
use crate::units::SizeSpec;

/// Read buffer capacity per connection.
const READ_BUF: usize = 64 * 1024;
/// How long the closing handshake may take at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Runs a load test and prints its report. `Ok(true)` when the run counted no error.
pub fn run_load(cfg: LoadConfig) -> anyhow::Result<bool> {
    if let Err(e) = net::raise_nofile_limit() {
        eprintln!("ringway-load: cannot raise RLIMIT_NOFILE: {e}");
    }
    let tls = match cfg.target.tls {
        true => Some((
            crate::tls::client_config(cfg.insecure, cfg.ca.as_deref())?,
            crate::tls::server_name(&cfg.target.host)?,
        )),
        false => None,
    };
    let cpu_before = net::process_cpu_time();
    let clock = Clock::start();
    let plan = Plan::new(&cfg);
    let shared = Arc::new(Shared::new(cfg.threads));
    let sources = net::source_addresses(cfg.addr, cfg.source_addrs);
    let ctx = Arc::new(RunCtx {
        cfg,
        clock,
        plan,
        tls,
        sources,
        shared: shared.clone(),
    });

    let mut threads = Vec::with_capacity(ctx.cfg.threads);
    for idx in 0..ctx.cfg.threads {
        let ctx = ctx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("load-{idx}"))
                .spawn(move || net::block_on(worker(idx, ctx)))?,
        );
    }
    progress_until_done(&ctx);
    for t in threads {
        match t.join() {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("a load thread panicked"),
        }
    }

    let client_cpu_s = match (cpu_before, net::process_cpu_time()) {
        (Some(before), Some(after)) => after.saturating_sub(before).as_secs_f64(),
        _ => 0.0,
    };
    let merged = shared.merge();
    let duration_s = match ctx.cfg.mode {
        Mode::Exact { .. } => shared.finished_ns() as f64 / 1e9,
        _ => ctx.cfg.duration.as_secs_f64(),
    };
    let summary = Summary {
        conns: ctx.cfg.conns,
        duration_s,
        hist: merged.hist,
        service: merged.service,
        counters: merged.counters,
        connected: merged.up_at_end,
        first_error: shared.first_error(),
        client_cpu_s,
        upgrades: merged.upgrades.0,
        connect_time_s: merged.upgrades.1 as f64 / 1e9,
    };
    report::emit(&ctx.cfg, &summary)?;
    Ok(summary.is_clean())
}

/// Open loop: when each message not yet echoed was written (ns since the clock's epoch), oldest first. Bounded by
/// the messages one connection sends in a run.
type SentTimes = std::cell::RefCell<std::collections::VecDeque<u64>>;

/// The run's timeline in nanoseconds since the clock's epoch.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Sending starts (after the connection ramp).
    send_start: u64,
    /// Latencies of echoes received in `measure_start..=measure_end` are recorded.
    measure_start: u64,
    measure_end: u64,
    /// No new message is sent from here on (connect-only: the hold ends).
    send_end: u64,
    /// Anything still outstanding now is lost.
    hard_end: u64,
}

impl Plan {
    fn new(cfg: &LoadConfig) -> Self {
        let ns = |d: Duration| d.as_nanos().min(u128::from(u64::MAX / 4)) as u64;
        let ramp = if cfg.ramp > 0.0 {
            ns(Duration::from_secs_f64(cfg.conns as f64 / cfg.ramp))
        } else {
            0
        };
        let (warmup, duration, drain) = (ns(cfg.warmup), ns(cfg.duration), ns(cfg.drain));
        match cfg.mode {
            Mode::Exact { .. } => Self {
                send_start: ramp,
                measure_start: 0,
                measure_end: u64::MAX,
                send_end: ramp + duration,
                hard_end: ramp + duration + drain,
            },
            _ => Self {
                send_start: ramp,
                measure_start: ramp + warmup,
                measure_end: ramp + warmup + duration,
                send_end: ramp + warmup + duration,
                hard_end: ramp + warmup + duration + drain,
            },
        }
    }

    fn in_window(&self, now: u64) -> bool {
        now >= self.measure_start && now <= self.measure_end
    }
}

/// Everything a worker thread needs, shared read-only.
struct RunCtx {
    cfg: LoadConfig,
    clock: Clock,
    plan: Plan,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    sources: Vec<Option<IpAddr>>,
    shared: Arc<Shared>,
}

/// Prints the live progress line every second until every worker thread is done.
fn progress_until_done(ctx: &RunCtx) {
    let started = std::time::Instant::now();
    let mut last = (0u64, started);
    let mut next_print = started + Duration::from_secs(1);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = std::time::Instant::now();
        let done = ctx
            .shared
            .threads
            .iter()
            .all(|slot| slot.lock().map(|p| p.done).unwrap_or(true));
        if done {
            return;
        }
        if now < next_print || !ctx.cfg.progress {
            continue;
        }
        next_print += Duration::from_secs(1);
        let m = ctx.shared.merge();
        let elapsed = now.duration_since(last.1).as_secs_f64();
        let rate = (m.counters.messages - last.0) as f64 / elapsed.max(1e-9);
        last = (m.counters.messages, now);
        let t_ns = ctx.clock.now_ns();
        let phase = if t_ns < ctx.plan.send_start {
            "ramp"
        } else if t_ns < ctx.plan.measure_start {
            "warmup"
        } else if t_ns <= ctx.plan.send_end {
            "run"
        } else {
            "drain"
        };
        let p99 = if m.hist.is_empty() {
            0.0
        } else {
            m.hist.value_at_quantile(0.99) as f64 / 1000.0
        };
        let c = m.counters;
        eprintln!(
            "[{:>5.1}s {phase:>6}] conns {}/{}  msgs/s {:>9.0}  p99 {}  errors {}  mismatches {}  closes {}  connect failures {}",
            t_ns as f64 / 1e9,
            m.up,
            ctx.cfg.conns,
            rate,
            report::fmt_us(p99),
            c.errors,
            c.mismatches,
            c.unexpected_closes,
            c.connect_failures,
        );
    }
}

/// One worker thread: opens its share of the connections (conn ids `idx`, `idx + threads`, …),
/// publishes its measurements a few times per second and when done.
async fn worker(idx: usize, ctx: Arc<RunCtx>) {
    let local = Rc::new(Local::default());
    let stop = Rc::new(std::cell::Cell::new(false));
    {
        let (ctx, local, stop) = (ctx.clone(), local.clone(), stop.clone());
        monoio::spawn(async move {
            while !stop.get() {
                monoio::time::sleep(Duration::from_millis(200)).await;
                ctx.shared.publish(idx, &local);
            }
        });
    }
    let mut tasks = Vec::new();
    for conn in (idx..ctx.cfg.conns).step_by(ctx.cfg.threads) {
        if ctx.cfg.ramp > 0.0 {
            let at = Duration::from_secs_f64(conn as f64 / ctx.cfg.ramp);
            sleep_until(ctx.clock.instant(at.as_nanos() as u64)).await;
        }
        tasks.push(monoio::spawn(connection(
            conn as u32,
            ctx.clone(),
            local.clone(),
        )));
    }
    for task in tasks {
        task.await;
    }
    stop.set(true);
    ctx.shared.publish(idx, &local);
    ctx.shared.finish(idx, ctx.clock.now_ns());
}

/// How a connection ended badly (each is counted once, where it happens).
#[derive(Debug)]
struct Ended;

/// Opens one connection (TCP, TLS if `wss`, upgrade) and runs the configured mode on it.
async fn connection(conn: u32, ctx: Arc<RunCtx>, local: Rc<Local>) {
    let hard = ctx.clock.instant(ctx.plan.hard_end);
    let source = ctx.sources[conn as usize % ctx.sources.len()];
    let tcp = match timeout_at(hard, net::connect(ctx.cfg.addr, source)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            ctx.shared
                .note_error(|| format!("connect to {}: {e}", ctx.cfg.addr));
            return local.count(|c| c.connect_failures += 1);
        }
        Err(_) => {
            ctx.shared
                .note_error(|| format!("connect to {}: timed out", ctx.cfg.addr));
            return local.count(|c| c.connect_failures += 1);
        }
    };
    match &ctx.tls {
        None => drive(tcp, conn, &ctx, &local).await,
        Some((config, name)) => {
            let connector = monoio_rustls::TlsConnector::from(config.clone());
            match timeout_at(hard, connector.connect(name.clone(), tcp)).await {
                Ok(Ok(tls)) => drive(tls, conn, &ctx, &local).await,
                Ok(Err(e)) => {
                    ctx.shared.note_error(|| format!("TLS handshake: {e}"));
                    local.count(|c| c.connect_failures += 1);
                }
                Err(_) => {
                    ctx.shared
                        .note_error(|| "TLS handshake: timed out".to_owned());
                    local.count(|c| c.connect_failures += 1);
                }
            }
        }
    }
}

async fn drive<S>(mut io: S, conn: u32, ctx: &RunCtx, local: &Local)
where
    S: AsyncReadRent + AsyncWriteRent + Split + 'static,
{
    let mut input = match upgrade(&mut io, ctx).await {
        Ok(input) => input,
        Err(why) => {
            ctx.shared.note_error(|| format!("upgrade: {why}"));
            return local.count(|c| c.connect_failures += 1);
        }
    };
    let now = ctx.clock.now_ns();
    let (count, _) = local.upgrades.get();
    local.upgrades.set((count + 1, now));
    if now >= ctx.plan.send_end {
        // Up only after the run (or hold) ended: it never took part, count it as failed.
        ctx.shared.note_error(|| {
            "a connection came up only after the run ended (server too slow to accept, or --ramp \
             too fast)"
                .to_owned()
        });
        return local.count(|c| c.connect_failures += 1);
    }
    if ctx.cfg.mode != Mode::ConnectOnly {
        input.reserve(READ_BUF.saturating_sub(input.len()));
    }
    local.up.set(local.up.get() + 1);
    let _ = match ctx.cfg.mode {
        Mode::Closed { inflight } => {
            closed_loop(io, input, conn, inflight, u64::MAX, ctx, local).await
        }
        Mode::Exact { inflight, per_conn } => {
            closed_loop(io, input, conn, inflight, per_conn, ctx, local).await
        }
        Mode::Open { rate } => open_loop(io, input, conn, rate, ctx, local).await,
        Mode::ConnectOnly => hold(io, input, ctx, local).await,
    };
    local.up.set(local.up.get() - 1);
}

/// The HTTP upgrade; returns the read buffer holding whatever followed the 101 head.
async fn upgrade<S: AsyncReadRent + AsyncWriteRent>(
    io: &mut S,
    ctx: &RunCtx,
) -> Result<Vec<u8>, String> {
    let hard = ctx.clock.instant(ctx.plan.hard_end);
    let key = handshake::random_key();
    let mut req = Vec::with_capacity(256);
    handshake::write_client_request(
        &mut req,
        &ctx.cfg.target.authority,
        &ctx.cfg.target.path,
        &key,
        ctx.cfg.subprotocol.as_deref(),
    );
    match timeout_at(hard, io.write_all(req)).await {
        Ok((Ok(_), _)) => {}
        Ok((Err(e), _)) => return Err(format!("sending the request: {e}")),
        Err(_) => return Err("timed out".to_owned()),
    }
    let mut buf = Vec::with_capacity(1024);
    loop {
        let (res, b) = timeout_at(hard, net::read_more(io, buf))
            .await
            .map_err(|_| "timed out".to_owned())?;
        buf = b;
        match res {
            Ok(0) => return Err("connection closed before the response".to_owned()),
            Err(e) => return Err(format!("reading the response: {e}")),
            Ok(_) => {}
        }
        match handshake::check_server_response(&buf, &key) {
            Ok(Some(n)) => {
                buf.drain(..n);
                return Ok(buf);
            }
            Ok(None) if buf.len() == buf.capacity() => buf.reserve(buf.capacity()),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Appends message `seq` of connection `conn` as one masked client frame.
fn encode_message(out: &mut Vec<u8>, kind: Kind, sizes: &SizeSpec, stamp: Stamp) {
    let size = sizes.size_for(stamp.conn, stamp.seq);
    let opcode = match kind {
        Kind::Binary => OpCode::Binary,
        Kind::Text => OpCode::Text,
    };
    let key = fastrand::u32(..).to_ne_bytes();
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = FrameHeader::client(opcode, size as u64, key).encode(&mut head);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.resize(start + size, 0);
    let payload = &mut out[start..];
    write_payload(kind, stamp, payload);
    apply_mask(payload, key, 0);
}

/// Appends a masked control frame.
fn encode_control(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let key = fastrand::u32(..).to_ne_bytes();
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = FrameHeader::client(opcode, payload.len() as u64, key).encode(&mut head);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
}

/// Appends a Close 1000 frame.
fn encode_close(out: &mut Vec<u8>) {
    encode_control(out, OpCode::Close, &1000u16.to_be_bytes());
}

/// What reading produced besides echoes.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// More bytes needed.
    More,
    /// The server sent Close.
    Close,
}

/// The receive side of one connection: decodes server frames, verifies echoes, records latency.
struct Receiver {
    decoder: FrameDecoder,
    verifier: Verifier,
    kind: Kind,
    /// Sequence number of the next echo expected.
    next: u64,
    /// Pong frames to send.
    pongs: Vec<u8>,
    /// The code of the server's Close frame, once one came (1005: without a code).
    close_code: Option<u16>,
}

impl Receiver {
    fn new(kind: Kind, sizes: SizeSpec, conn: u32) -> Self {
        let decoder = FrameDecoder::new(DecoderConfig {
            peer: Role::Server,
            max_frame_size: u64::MAX >> 1,
            max_message_size: u64::MAX >> 1,
            allowed_rsv: Rsv::default(),
            // Every byte is compared with what was sent: a separate UTF-8 pass adds nothing.
            validate_utf8: false,
            payload: PayloadMode::Unmask,
        });
        Self {
            decoder,
            verifier: Verifier::new(kind, sizes, conn),
            kind,
            next: 0,
            pongs: Vec::new(),
            close_code: None,
        }
    }

    /// Processes `input`; returns the bytes consumed and whether the server closed. Protocol
    /// errors are counted and end the connection (`Err`).
    fn process(
        &mut self,
        input: &mut [u8],
        now: u64,
        sent_at: Option<&SentTimes>,
        ctx: &RunCtx,
        local: &Local,
    ) -> Result<(usize, Incoming), Ended> {
        let mut at = 0;
        loop {
            match self.decoder.decode(&mut input[at..]) {
                Ok(Decoded::Incomplete) => return Ok((at, Incoming::More)),
                Ok(Decoded::DataHeader { header, len }) => {
                    at += len;
                    if header.opcode != OpCode::Continuation {
                        self.verifier.begin();
                        let expected = match self.kind {
                            Kind::Binary => OpCode::Binary,
                            Kind::Text => OpCode::Text,
                        };
                        if header.opcode != expected {
                            self.verifier.fail(crate::payload::Mismatch::Opcode);
                        }
                    }
                }
                Ok(Decoded::DataPayload {
                    len, message_end, ..
                }) => {
                    self.verifier.feed(&input[at..at + len]);
                    at += len;
                    if message_end {
                        let bytes = self.verifier.received_len();
                        // Echoes come back in order: this one answers the oldest message written.
                        let written = sent_at.map(|q| q.borrow_mut().pop_front());
                        match self.verifier.finish() {
                            Ok(stamp) if stamp.seq == self.next => {
                                if ctx.plan.in_window(now) {
                                    let service = written.map(|w| {
                                        now.saturating_sub(w.unwrap_or(stamp.intended_ns))
                                    });
                                    local.record(
                                        now.saturating_sub(stamp.intended_ns),
                                        service,
                                        bytes,
                                    );
                                }
                            }
                            Ok(stamp) => {
                                let (got, next) = (stamp.seq, self.next);
                                ctx.shared.note_error(|| {
                                    format!(
                                        "mismatch: echo of message {got} where {next} was expected"
                                    )
                                });
                                local.count(|c| c.mismatches += 1);
                            }
                            Err(why) => {
                                let next = self.next;
                                ctx.shared
                                    .note_error(|| format!("mismatch in echo {next}: {why}"));
                                local.count(|c| c.mismatches += 1);
                            }
                        }
                        self.next += 1;
                    }
                }
                Ok(Decoded::Control { opcode, len }) => {
                    at += len;
                    match opcode {
                        OpCode::Ping => {
                            let payload = self.decoder.control_payload();
                            encode_control(&mut self.pongs, OpCode::Pong, payload);
                        }
                        OpCode::Close => {
                            self.close_code = Some(match self.decoder.control_payload() {
                                [a, b, ..] => u16::from_be_bytes([*a, *b]),
                                _ => 1005,
                            });
                            return Ok((at, Incoming::Close));
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    ctx.shared
                        .note_error(|| format!("protocol error from the server: {e}"));
                    local.count(|c| c.errors += 1);
                    return Err(Ended);
                }
            }
        }
    }
}

/// Frames the server sent right behind its 101 (a Close, a ping), handled before anything read later: a Close there
/// ends the connection with its code.
fn early_frames(
    rx: &mut Receiver,
    input: &mut Vec<u8>,
    ctx: &RunCtx,
    local: &Local,
) -> Result<(), Ended> {
    if input.is_empty() {
        return Ok(());
    }
    let (used, incoming) = rx.process(input, ctx.clock.now_ns(), None, ctx, local)?;
    input.drain(..used);
    if incoming == Incoming::Close {
        local.count(|c| c.unexpected_close(rx.close_code.unwrap_or(1005)));
        return Err(Ended);
    }
    Ok(())
}

fn count_lost(local: &Local, lost: u64) {
    if lost > 0 {
        local.count(|c| {
            c.lost += lost;
            c.errors += lost;
        });
    }
}

/// Closed loop: keep `inflight` messages outstanding until `send_end` or `limit` messages.
async fn closed_loop<S>(
    mut io: S,
    mut input: Vec<u8>,
    conn: u32,
    inflight: usize,
    limit: u64,
    ctx: &RunCtx,
    local: &Local,
) -> Result<(), Ended>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let (clock, plan, cfg) = (&ctx.clock, &ctx.plan, &ctx.cfg);
    let hard = clock.instant(plan.hard_end);
    let mut out = Vec::with_capacity(inflight * (cfg.size.max + MAX_HEADER_LEN) + 256);
    let mut rx = Receiver::new(cfg.kind, cfg.size, conn);
    let mut sent = 0u64;
    early_frames(&mut rx, &mut input, ctx, local)?;
    if plan.send_start > clock.now_ns() {
        sleep_until(clock.instant(plan.send_start)).await;
    }
    loop {
        let now = clock.now_ns();
        if now < plan.send_end && sent < limit {
            let room = (inflight as u64)
                .saturating_sub(sent - rx.next)
                .min(limit - sent);
            for _ in 0..room {
                encode_message(
                    &mut out,
                    cfg.kind,
                    &cfg.size,
                    Stamp {
                        conn,
                        seq: sent,
                        intended_ns: now,
                    },
                );
                sent += 1;
            }
        }
        out.extend_from_slice(&rx.pongs);
        rx.pongs.clear();
        if !out.is_empty() {
            match timeout_at(hard, io.write_all(out)).await {
                Ok((Ok(_), b)) => {
                    out = b;
                    out.clear();
                }
                Ok((Err(_), _)) => {
                    count_lost(local, sent - rx.next);
                    local.count(|c| c.errors += 1);
                    return Err(Ended);
                }
                Err(_) => {
                    count_lost(local, sent - rx.next);
                    return Err(Ended);
                }
            }
        }
        if rx.next == sent {
            break;
        }
        let (res, b) = match timeout_at(hard, net::read_more(&mut io, input)).await {
            Ok(r) => r,
            Err(_) => {
                count_lost(local, sent - rx.next);
                return Err(Ended);
            }
        };
        input = b;
        match res {
            Ok(0) => {
                count_lost(local, sent - rx.next);
                local.count(|c| c.unexpected_close(1006));
                return Err(Ended);
            }
            Err(_) => {
                count_lost(local, sent - rx.next);
                local.count(|c| c.errors += 1);
                return Err(Ended);
            }
            Ok(_) => {}
        }
        let now = clock.now_ns();
        let (used, incoming) = rx
            .process(&mut input, now, None, ctx, local)
            .inspect_err(|_| count_lost(local, sent - rx.next))?;
        input.drain(..used);
        if incoming == Incoming::Close {
            count_lost(local, sent - rx.next);
            local.count(|c| c.unexpected_close(rx.close_code.unwrap_or(1005)));
            return Err(Ended);
        }
    }
    if sent < limit && limit != u64::MAX {
        // Exact-count mode that hit the time limit: the unsent messages are missing too.
        count_lost(local, limit - sent);
    }
    local.up_at_end.set(local.up_at_end.get() + 1);
    encode_close(&mut out);
    close_handshake(&mut io, out, input, &mut rx, ctx, local).await;
    Ok(())
}

/// Sends the prepared Close in `out` and waits (bounded) for the server's Close.
async fn close_handshake<S>(
    io: &mut S,
    out: Vec<u8>,
    mut input: Vec<u8>,
    rx: &mut Receiver,
    ctx: &RunCtx,
    local: &Local,
) where
    S: AsyncReadRent + AsyncWriteRent,
{
    let deadline = monoio::time::Instant::now() + CLOSE_WAIT;
    if !matches!(
        timeout_at(deadline, io.write_all(out)).await,
        Ok((Ok(_), _))
    ) {
        return;
    }
    loop {
        let Ok((res, b)) = timeout_at(deadline, net::read_more(io, input)).await else {
            return;
        };
        input = b;
        if !matches!(res, Ok(n) if n > 0) {
            return;
        }
        match rx.process(&mut input, ctx.clock.now_ns(), None, ctx, local) {
            Ok((_, Incoming::Close)) | Err(_) => return,
            Ok((used, Incoming::More)) => {
                input.drain(..used);
            }
        }
    }
}

/// Open loop: a scheduled writer and a verifying reader on the two halves of the connection.
async fn open_loop<S>(
    io: S,
    input: Vec<u8>,
    conn: u32,
    rate: f64,
    ctx: &RunCtx,
    local: &Local,
) -> Result<(), Ended>
where
    S: AsyncReadRent + AsyncWriteRent + Split + 'static,
{
    let (mut rd, mut wr) = io.into_split();
    let sent = std::cell::Cell::new(0u64);
    let writer_done = std::cell::Cell::new(false);
    let failed = std::cell::Cell::new(false);
    let pongs = std::cell::RefCell::new(Vec::<u8>::new());
    // When each message not yet echoed was written (ns), oldest first: service time = echo - write.
    let sent_at = SentTimes::default();
    let (clock, plan, cfg) = (&ctx.clock, &ctx.plan, &ctx.cfg);
    let hard = clock.instant(plan.hard_end);

    let writer = async {
        let interval = cfg.conns as f64 / rate * 1e9;
        let begin = clock.now_ns().max(plan.send_start) as f64
            + interval * f64::from(conn) / cfg.conns as f64;
        let mut out = Vec::with_capacity(4 * (cfg.size.max + MAX_HEADER_LEN) + 256);
        let mut k = 0u64;
        loop {
            if failed.get() {
                break;
            }
            let next = (begin + interval * k as f64) as u64;
            if next >= plan.send_end {
                break;
            }
            if next > clock.now_ns() {
                sleep_until(clock.instant(next)).await;
            }
            let now = clock.now_ns();
            loop {
                let intended = (begin + interval * k as f64) as u64;
                if intended > now || intended >= plan.send_end {
                    break;
                }
                encode_message(
                    &mut out,
                    cfg.kind,
                    &cfg.size,
                    Stamp {
                        conn,
                        seq: k,
                        intended_ns: intended,
                    },
                );
                sent_at.borrow_mut().push_back(now);
                k += 1;
            }
            out.extend_from_slice(&pongs.borrow());
            pongs.borrow_mut().clear();
            match timeout_at(hard, wr.write_all(out)).await {
                Ok((Ok(_), b)) => {
                    out = b;
                    out.clear();
                    sent.set(k);
                }
                Ok((Err(_), _)) => {
                    failed.set(true);
                    local.count(|c| c.errors += 1);
                    return;
                }
                Err(_) => {
                    failed.set(true);
                    return;
                }
            }
        }
        if failed.get() {
            return;
        }
        local.up_at_end.set(local.up_at_end.get() + 1);
        writer_done.set(true);
        encode_close(&mut out);
        let _ = timeout_at(hard, wr.write_all(out)).await;
    };

    let reader = async {
        let mut input = input;
        let mut rx = Receiver::new(cfg.kind, cfg.size, conn);
        if early_frames(&mut rx, &mut input, ctx, local).is_err() {
            failed.set(true);
            return;
        }
        loop {
            let (res, b) = match timeout_at(hard, net::read_more(&mut rd, input)).await {
                Ok(r) => r,
                Err(_) => break,
            };
            input = b;
            match res {
                Ok(0) => {
                    if !writer_done.get() {
                        local.count(|c| c.unexpected_close(1006));
                    }
                    break;
                }
                Err(_) => {
                    local.count(|c| c.errors += 1);
                    break;
                }
                Ok(_) => {}
            }
            match rx.process(&mut input, clock.now_ns(), Some(&sent_at), ctx, local) {
                Ok((used, Incoming::More)) => {
                    input.drain(..used);
                    if !rx.pongs.is_empty() {
                        pongs.borrow_mut().extend_from_slice(&rx.pongs);
                        rx.pongs.clear();
                    }
                }
                Ok((_, Incoming::Close)) => {
                    if !writer_done.get() {
                        local.count(|c| c.unexpected_close(rx.close_code.unwrap_or(1005)));
                    }
                    break;
                }
                Err(Ended) => break,
            }
        }
        failed.set(failed.get() || !writer_done.get());
        count_lost(local, sent.get().saturating_sub(rx.next));
    };
    monoio::join!(writer, reader);
    if failed.get() { Err(Ended) } else { Ok(()) }
}

/// Connect-only: hold the idle connection until the hold ends, answering pings.
async fn hold<S>(mut io: S, mut input: Vec<u8>, ctx: &RunCtx, local: &Local) -> Result<(), Ended>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let end = ctx.clock.instant(ctx.plan.send_end);
    let mut rx = Receiver::new(ctx.cfg.kind, ctx.cfg.size, u32::MAX);
    early_frames(&mut rx, &mut input, ctx, local)?;
    loop {
        if input.len() == input.capacity() {
            input.reserve(512);
        }
        let (res, b) = match timeout_at(end, net::read_more(&mut io, input)).await {
            Ok(r) => r,
            Err(_) => break,
        };
        input = b;
        match res {
            Ok(0) => {
                local.count(|c| c.unexpected_close(1006));
                return Err(Ended);
            }
            Err(_) => {
                local.count(|c| c.errors += 1);
                return Err(Ended);
            }
            Ok(_) => {}
        }
        let (used, incoming) = rx.process(&mut input, ctx.clock.now_ns(), None, ctx, local)?;
        input.drain(..used);
        if incoming == Incoming::Close {
            local.count(|c| c.unexpected_close(rx.close_code.unwrap_or(1005)));
            return Err(Ended);
        }
        if !rx.pongs.is_empty() {
            let pongs = std::mem::take(&mut rx.pongs);
            if !matches!(io.write_all(pongs).await, (Ok(_), _)) {
                local.count(|c| c.errors += 1);
                return Err(Ended);
            }
        }
    }
    local.up_at_end.set(local.up_at_end.get() + 1);
    let mut out = Vec::with_capacity(16);
    encode_close(&mut out);
    close_handshake(&mut io, out, Vec::with_capacity(512), &mut rx, ctx, local).await;
    Ok(())
}
