//! The typed configuration of one load run, built from the command line by [`crate::cli`] and consumed by the
//! client ([`crate::client`]) and the reports ([`crate::report`]).
//!
//! Owns: the run's settings after validation. Does not own: parsing flags (`cli`), running (`client`),
//! presenting the results (`report`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::payload::Kind;
use crate::target::Target;
use crate::units::SizeSpec;

/// How messages are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// K messages in flight per connection, for the run's duration.
    Closed {
        /// In flight per connection.
        inflight: usize,
    },
    /// Exactly `per_conn` messages per connection, K in flight.
    Exact {
        /// In flight per connection.
        inflight: usize,
        /// Messages per connection.
        per_conn: u64,
    },
    /// `rate` messages per second in total.
    Open {
        /// Messages per second, all connections together.
        rate: f64,
    },
    /// Idle connections only.
    ConnectOnly,
}

/// A validated load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where to connect.
    pub target: Target,
    /// Resolved target address.
    pub addr: SocketAddr,
    /// Connections.
    pub conns: usize,
    /// Sending mode.
    pub mode: Mode,
    /// Payload sizes.
    pub size: SizeSpec,
    /// Text or binary.
    pub kind: Kind,
    /// Measured duration.
    pub duration: Duration,
    /// Warm-up.
    pub warmup: Duration,
    /// Drain time at the end.
    pub drain: Duration,
    /// Worker threads.
    pub threads: usize,
    /// Connections per second while opening (0 = unlimited).
    pub ramp: f64,
    /// Loopback source addresses.
    pub source_addrs: usize,
    /// Print JSON.
    pub json: bool,
    /// `.hgrm` output.
    pub hgrm: Option<PathBuf>,
    /// SVG output.
    pub plot: Option<PathBuf>,
    /// Accept any certificate.
    pub insecure: bool,
    /// Extra CA file.
    pub ca: Option<PathBuf>,
    /// Offered subprotocol.
    pub subprotocol: Option<String>,
    /// Live progress line.
    pub progress: bool,
}
