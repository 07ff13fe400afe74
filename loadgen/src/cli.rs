//! The command line: `ringway-load [OPTIONS] URL` (load) and `ringway-load echo` (echo upstream).
//! Parses flags with clap and turns them into the typed [`LoadConfig`] / [`EchoConfig`]; reports
//! usage errors with the flag's name. Running is left to [`crate::client`] and [`crate::echo`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{LoadConfig, Mode};
use crate::echo::EchoConfig;
use crate::payload::Kind;
use crate::target::Target;
use crate::units::{SizeSpec, parse_duration};

/// WebSocket load generator and fast echo upstream.
#[derive(Debug, Parser)]
#[command(name = "ringway-load", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Subcommand; without one, generate load against URL.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Load options.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a WebSocket echo server (the upstream for benchmarks and tests).
    Echo(EchoArgs),
}

/// `ringway-load echo` flags.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on (port 0: pick one; the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Subprotocol to select when the client offers it.
    #[arg(long)]
    pub subprotocol: Option<String>,
    /// Largest frame accepted; larger frames close the connection with 1009.
    #[arg(long, default_value = "16MiB", value_parser = crate::units::parse_size)]
    pub max_frame_size: usize,
    /// Largest message accepted; larger messages close the connection with 1009.
    #[arg(long, default_value = "64MiB", value_parser = crate::units::parse_size)]
    pub max_message_size: usize,
}

/// Load generator flags.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Target, `ws://host:port/path` or `wss://...`.
    pub url: Option<String>,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 100)]
    pub conns: usize,
    /// Closed loop: messages in flight per connection.
    #[arg(long, short = 'k', default_value_t = 1)]
    pub inflight: usize,
    /// Open loop: messages per second in total, spread over the connections. Latency is measured
    /// from each message's intended send time (coordinated-omission corrected).
    #[arg(long, short = 'R')]
    pub rate: Option<f64>,
    /// Payload size: `64`, `16KiB` or a uniform range `64..4096`.
    #[arg(long, short = 's', default_value = "64", value_parser = SizeSpec::parse)]
    pub size: SizeSpec,
    /// Send text messages (default binary).
    #[arg(long)]
    pub text: bool,
    /// Measured duration (after warm-up).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// How long to wait for outstanding echoes at the end before counting them as lost.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Worker threads (default: one per core).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Exact-count closed loop: every connection sends exactly N messages, then closes (no
    /// warm-up; --duration is the time limit).
    #[arg(long)]
    pub messages_per_conn: Option<u64>,
    /// Only open and hold idle connections for --duration; report how many are up.
    #[arg(long)]
    pub connect_only: bool,
    /// Connection opening rate in connections per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Loopback source addresses to spread connections over (127.0.0.1..127.0.0.K), each with its
    /// own ephemeral port range. Default: 16 with --connect-only, else 1 (all from 127.0.0.1).
    #[arg(long)]
    pub source_addrs: Option<usize>,
    /// Print one JSON line with the results on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the latency percentile distribution (HdrHistogram .hgrm text) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Write a latency-by-percentile SVG chart to FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// wss: accept any server certificate.
    #[arg(long)]
    pub insecure: bool,
    /// wss: trust the CA certificates in this PEM file (in addition to none: no system roots).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Offer this subprotocol in the upgrade request.
    #[arg(long)]
    pub subprotocol: Option<String>,
    /// No live progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl LoadArgs {
    /// Validates the flags into a [`LoadConfig`].
    pub fn into_config(self) -> anyhow::Result<LoadConfig> {
        let Some(url) = self.url else {
            anyhow::bail!("missing URL (ws://host:port/path); see --help");
        };
        let target = Target::parse(&url)?;
        let addr = target.resolve()?;
        let kind = if self.text { Kind::Text } else { Kind::Binary };
        if self.conns == 0 {
            anyhow::bail!("--conns must be at least 1");
        }
        if self.inflight == 0 {
            anyhow::bail!("--inflight must be at least 1");
        }
        if self.size.min < kind.header_len() {
            anyhow::bail!(
                "--size {}: messages carry a {}-byte header in {} mode, so the size must be at least {}",
                self.size.min,
                kind.header_len(),
                if self.text { "text" } else { "binary" },
                kind.header_len()
            );
        }
        let mode = match (self.connect_only, self.rate, self.messages_per_conn) {
            (true, None, None) => Mode::ConnectOnly,
            (false, Some(rate), None) if rate > 0.0 && rate.is_finite() => Mode::Open { rate },
            (false, Some(_), None) => anyhow::bail!("--rate must be a positive number"),
            (false, None, Some(per_conn)) => Mode::Exact {
                inflight: self.inflight,
                per_conn,
            },
            (false, None, None) => Mode::Closed {
                inflight: self.inflight,
            },
            _ => anyhow::bail!(
                "--connect-only, --rate and --messages-per-conn are mutually exclusive"
            ),
        };
        if self.insecure && self.ca.is_some() {
            anyhow::bail!("--insecure and --ca are mutually exclusive");
        }
        Ok(LoadConfig {
            target,
            addr,
            conns: self.conns,
            mode,
            size: self.size,
            kind,
            duration: self.duration,
            warmup: if matches!(mode, Mode::Exact { .. } | Mode::ConnectOnly) {
                Duration::ZERO
            } else {
                self.warmup
            },
            drain: self.drain,
            threads: self
                .threads
                .unwrap_or_else(crate::net::default_threads)
                .max(1),
            ramp: self.ramp.max(0.0),
            source_addrs: self
                .source_addrs
                .unwrap_or(if mode == Mode::ConnectOnly { 16 } else { 1 })
                .max(1),
            json: self.json,
            hgrm: self.hgrm,
            plot: self.plot,
            insecure: self.insecure,
            ca: self.ca,
            subprotocol: self.subprotocol,
            progress: !self.quiet,
        })
    }
}

impl EchoArgs {
    /// The echo server configuration.
    pub fn into_config(self) -> EchoConfig {
        EchoConfig {
            listen: self.listen,
            threads: self
                .threads
                .unwrap_or_else(crate::net::default_threads)
                .max(1),
            subprotocol: self.subprotocol,
            max_frame_size: self.max_frame_size as u64,
            max_message_size: self.max_message_size as u64,
        }
    }
}

/// The binary's entry point: exit status 0 on a clean run, 1 when the run counted errors,
/// mismatches, unexpected closes or connect failures, 2 on usage or setup errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Echo(args)) => crate::echo::run(args.into_config()).map(|()| true),
        None => cli.load.into_config().and_then(crate::client::run_load),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ringway-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> anyhow::Result<LoadConfig> {
        let cli = Cli::try_parse_from(std::iter::once("ringway-load").chain(args.iter().copied()))?;
        cli.load.into_config()
    }

    #[test]
    fn flags_select_the_mode() {
        let c = config(&["ws://127.0.0.1:1/"]).unwrap();
        assert_eq!(c.mode, Mode::Closed { inflight: 1 });
        assert_eq!((c.conns, c.source_addrs, c.kind), (100, 1, Kind::Binary));
        let c = config(&["--rate", "1000", "--text", "ws://127.0.0.1:1/"]).unwrap();
        assert_eq!(c.mode, Mode::Open { rate: 1000.0 });
        assert_eq!(c.kind, Kind::Text);
        let c = config(&["--messages-per-conn", "5", "-k", "3", "ws://127.0.0.1:1/"]).unwrap();
        assert_eq!(
            c.mode,
            Mode::Exact {
                inflight: 3,
                per_conn: 5
            }
        );
        assert_eq!(c.warmup, Duration::ZERO);
        let c = config(&["--connect-only", "ws://127.0.0.1:1/"]).unwrap();
        assert_eq!((c.mode, c.source_addrs), (Mode::ConnectOnly, 16));
    }

    #[test]
    fn bad_combinations_are_rejected_with_the_flag_name() {
        let err = |args: &[&str]| config(args).unwrap_err().to_string();
        assert!(err(&["--rate", "5", "--connect-only", "ws://127.0.0.1:1/"]).contains("exclusive"));
        assert!(err(&["--size", "10", "ws://127.0.0.1:1/"]).contains("--size 10"));
        assert!(err(&["--text", "--size", "20", "ws://127.0.0.1:1/"]).contains("at least 40"));
        assert!(err(&["--rate", "0", "ws://127.0.0.1:1/"]).contains("--rate"));
        assert!(err(&["--conns", "0", "ws://127.0.0.1:1/"]).contains("--conns"));
        assert!(err(&[]).contains("missing URL"));
        assert!(err(&["http://127.0.0.1:1/"]).contains("ws://"));
    }

    #[test]
    fn echo_subcommand_parses() {
        let cli = Cli::try_parse_from(["ringway-load", "echo", "--listen", "127.0.0.1:0"]).unwrap();
        let Some(Command::Echo(args)) = cli.command else {
            panic!("not echo")
        };
        let cfg = args.into_config();
        assert_eq!(cfg.listen.port(), 0);
        assert_eq!(cfg.max_frame_size, 16 << 20);
    }
}
