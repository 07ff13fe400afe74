//! `ringway-load`: the WebSocket load generator operators use to size a Ringway deployment, and a
//! fast WebSocket echo upstream.
//!
//! The crate is a library so that tests (its own and the gateway's) can reuse its pieces; the
//! binary in `main.rs` only parses the command line and calls [`run_load`] or [`echo::run`].
//!
//! - [`cli`]: command-line model (clap) and the typed run configuration built from it.
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

pub mod cli;
pub mod client;
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
