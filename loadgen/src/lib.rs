//! `ringway-load`: the WebSocket load generator operators use to size a Ringway deployment, and a
//! fast WebSocket echo upstream.
//!
//! The crate is a library so that tests (its own and the gateway's) can reuse its pieces; the
//! binary in `main.rs` only parses the command line and calls [`run_load`] or [`echo::run`].
//!
//! - [`cli`]: command-line model (clap), validated into a [`config::LoadConfig`].
//! - [`config`]: the typed run configuration the client and the reports use.
//! - [`units`]: durations (`10s`, `500ms`) and payload size specs (`64`, `64..4096`, `16KiB`).
//! - [`target`]: `ws://` / `wss://` URL parsing.
//! - [`payload`]: the self-checking message layout (header + deterministic filler) and its
//!   streaming verifier.
//! - [`net`]: sockets: RLIMIT_NOFILE, SO_REUSEPORT listeners, source-address binding, runtimes.
//! - [`handshake`]: the HTTP/1.1 upgrade, client and server side.
//! - [`tls`]: rustls client configuration (`--insecure`, `--ca`).
//! - [`client`]: the load generator itself (closed loop, open loop, connect-only).
//! - [`stats`]: per-thread counters and histograms, merged into a [`stats::Summary`].
//! - [`report`]: human report, JSON line, `.hgrm` percentile file and the SVG latency plot.
//! - [`echo`]: the echo upstream.
//!
//! # Usage
//!
//! ```text
//! ringway-load echo --listen 127.0.0.1:9001 [--threads N] [--subprotocol NAME]
//! ringway-load --conns 100 --size 64 --duration 10s ws://127.0.0.1:9001/          # closed loop
//! ringway-load --conns 100 --inflight 8 --size 64..4096 --text ws://…             # K in flight
//! ringway-load --conns 50 --rate 20000 --duration 30s --hgrm lat.hgrm --plot lat.svg ws://…
//! ringway-load --conns 8 --messages-per-conn 1000 --json ws://…                   # exact count
//! ringway-load --connect-only --conns 50000 --ramp 5000 --duration 30s ws://…
//! ringway-load --insecure wss://…    or    --ca ca.pem wss://…
//! ```
//!
//! `--json` prints one line on stdout with `conns, duration_s, messages, msgs_per_sec,
//! bytes_per_sec, p50_us, p90_us, p99_us, p999_us, max_us, errors, mismatches,
//! unexpected_closes, connect_failures, connected, lost` (the human report then goes to stderr).
//! The exit status is 0 for a clean run, 1 when anything was counted as an error, a mismatch, an
//! unexpected close or a connect failure, 2 for usage and setup errors.
//!
//! # Measurement notes
//!
//! - Messages whose echo arrives inside `[warmup, warmup + duration]` are counted; exact-count
//!   mode counts all of them and reports the time until the last connection finished.
//! - Open-loop latency runs from each message's intended send time. The writer sleeps on monoio's
//!   millisecond timer wheel, so a send can start up to ~1 ms after its intended time and that
//!   delay is part of the measured latency (wrk2 has the same floor); compare runs against a
//!   direct-to-backend baseline rather than reading sub-millisecond open-loop values absolutely.
//!   The service time (`service_*` in `--json`) runs from when each message was actually written
//!   instead, without that slack: the finer figure for what a proxy adds at a fixed rate.
//! - Closed-loop latency runs from the actual send time of each message. A closed-loop
//!   connection writes its whole window (`--inflight` × size) before reading, so keep that below
//!   what the socket buffers on the path hold (a few MiB) when the server applies backpressure.

pub mod cli;
pub mod client;
pub mod config;
pub mod echo;
pub mod handshake;
pub mod net;
pub mod payload;
pub mod report;
pub mod stats;
pub mod target;
pub mod tls;
pub mod units;

pub use client::run_load;
