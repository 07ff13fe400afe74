//! The `ringway` binary: `ringway --config FILE` runs the gateway, `ringway check FILE` validates a route file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ringway::server::{self, StartOptions};
use ringway_config::Driver;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "ringway",
    version,
    about = "Frame-aware WebSocket gateway and HTTP/1.1 reverse proxy"
)]
struct Cli {
    /// Route file (YAML).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Worker threads, 1 to 4096 (overrides `workers:`; default: one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    workers: Option<u16>,
    /// Runtime driver (overrides `driver:`).
    #[arg(long, value_enum)]
    driver: Option<DriverArg>,
    /// Share listening ports another process already listens on (a binary upgrade: start the new ringway, then
    /// stop the old one). Without it, a port in use is an error.
    #[arg(long)]
    takeover: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a route file (and the certificates it names) and print a summary; exit status 1 on error.
    Check { file: PathBuf },
    /// Certificates for development.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Tell a running ringway to re-read its route file and certificates (sends it SIGHUP). It is found by the
    /// route file it runs (`--config`) or by `--pid`; the result is in its log.
    Reload {
        /// The route file of the ringway to reload.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The process to reload.
        #[arg(long)]
        pid: Option<i32>,
    },
}

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// Write a self-signed ECDSA P-256 certificate (`cert.pem`) and its key (`key.pem`) into a folder.
    SelfSigned {
        /// Folder to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Names the certificate serves (repeat for more); `localhost` also covers 127.0.0.1 and ::1.
        #[arg(long = "name", value_name = "NAME", default_values_t = ["localhost".to_owned()])]
        names: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum DriverArg {
    Auto,
    #[value(name = "io_uring", alias = "io-uring")]
    IoUring,
    Epoll,
}

fn main() -> ExitCode {
    // Transparent huge pages would back each touched 4 KiB of the allocator's arenas with 2 MiB, multiplying the
    // resident memory of many small idle connections; the gateway's hot data is small and per connection.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { file }) => check(&file),
        Some(Command::Reload { config, pid }) => reload(config.as_deref(), pid),
        Some(Command::Cert(CertCommand::SelfSigned { out, names, days })) => {
            match self_signed(&out, &names, days) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let Some(path) = cli.config else {
                eprintln!(
                    "ringway: --config FILE is required (try config/examples/quickstart.yaml)"
                );
                return ExitCode::from(2);
            };
            run(
                &path,
                cli.workers.map(usize::from),
                cli.driver,
                cli.takeover,
            )
        }
    }
}

/// `ringway reload`: SIGHUP to the ringway processes running `config` (or to `pid`).
fn reload(config: Option<&std::path::Path>, pid: Option<i32>) -> ExitCode {
    use rustix::process::{Pid, Signal, kill_process};
    let targets: Vec<i32> = match (pid, config) {
        (Some(pid), _) => vec![pid],
        (None, Some(config)) => {
            let Ok(wanted) = std::fs::canonicalize(config) else {
                eprintln!("ringway: cannot read {}", config.display());
                return ExitCode::FAILURE;
            };
            running_with(&wanted)
        }
        (None, None) => {
            eprintln!(
                "ringway reload: say which one: --config FILE (the route file it runs) or --pid PID"
            );
            return ExitCode::from(2);
        }
    };
    if targets.is_empty() {
        eprintln!(
            "ringway: no running ringway uses {}",
            config.map_or_else(String::new, |c| c.display().to_string())
        );
        return ExitCode::FAILURE;
    }
    let mut failed = false;
    for pid in targets {
        match Pid::from_raw(pid).map(|p| kill_process(p, Signal::HUP)) {
            Some(Ok(())) => println!("sent SIGHUP to ringway (pid {pid}); it logs the result"),
            Some(Err(e)) => {
                eprintln!("ringway: cannot signal pid {pid}: {e}");
                failed = true;
            }
            None => {
                eprintln!("ringway: {pid} is not a process id");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Pids of `ringway` processes (not this one) started with `--config` naming `wanted` (canonical path).
fn running_with(wanted: &std::path::Path) -> Vec<i32> {
    let own = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_ringway = args
            .first()
            .and_then(|a| std::path::Path::new(a).file_name())
            .is_some_and(|n| n == "ringway");
        if !is_ringway {
            continue;
        }
        let config = args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
            "--config" | "-c" => args.get(i + 1).cloned(),
            _ => a.strip_prefix("--config=").map(str::to_owned),
        });
        let Some(config) = config else { continue };
        // A relative path is relative to that process's working directory.
        let path = entry.path().join("cwd").join(&config);
        if std::fs::canonicalize(&path).is_ok_and(|p| p == wanted)
            && let Ok(pid) = i32::try_from(pid)
        {
            found.push(pid);
        }
    }
    found
}

fn check(file: &std::path::Path) -> ExitCode {
    let config = match ringway_config::load(file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let findings = server::check_tls(&config, std::time::SystemTime::now());
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for f in &findings {
        let (line, column) = ringway_config::position_of(&text, &f.yaml_key);
        let kind = if f.error { "" } else { "warning: " };
        eprintln!(
            "{}:{line}:{column}: {}: {kind}{}",
            file.display(),
            f.yaml_key,
            f.message
        );
    }
    if findings.iter().any(|f| f.error) {
        return ExitCode::FAILURE;
    }
    println!("{}: OK", file.display());
    print!("{}", config.summary());
    ExitCode::SUCCESS
}

/// `ringway cert self-signed`: a development certificate, never for production (clients must be told to trust it).
fn self_signed(out: &std::path::Path, names: &[String], days: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut sans: Vec<rcgen::SanType> = Vec::new();
    for name in names {
        if let Ok(ip) = name.parse::<std::net::IpAddr>() {
            sans.push(rcgen::SanType::IpAddress(ip));
            continue;
        }
        let dns = name
            .as_str()
            .try_into()
            .with_context(|| format!("`{name}` is not a DNS name"))?;
        sans.push(rcgen::SanType::DnsName(dns));
        if name == "localhost" {
            sans.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
            sans.push(rcgen::SanType::IpAddress(
                std::net::Ipv6Addr::LOCALHOST.into(),
            ));
        }
    }
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = sans;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().map_or("localhost", String::as_str),
    );
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("cannot generate a key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the certificate")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)
            .with_context(|| format!("cannot write {}", key_path.display()))?;
        file.write_all(key.serialize_pem().as_bytes())
            .with_context(|| format!("cannot write {}", key_path.display()))?;
    }
    println!(
        "wrote {} and {} (self-signed for {}, valid {} days)",
        cert_path.display(),
        key_path.display(),
        names.join(", "),
        days.max(1)
    );
    Ok(())
}

fn run(
    path: &std::path::Path,
    workers: Option<usize>,
    driver: Option<DriverArg>,
    takeover: bool,
) -> ExitCode {
    let config = match ringway_config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logs(config.log_format);
    for f in server::check_tls(&config, std::time::SystemTime::now()) {
        if f.error {
            tracing::error!("{}: {}: {}", path.display(), f.yaml_key, f.message);
        } else {
            tracing::warn!("{}: {}: {}", path.display(), f.yaml_key, f.message);
        }
    }
    let workers = workers
        .or(config.workers.map(|w| w.get()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let driver = match driver {
        Some(DriverArg::Auto) => Driver::Auto,
        Some(DriverArg::IoUring) => Driver::IoUring,
        Some(DriverArg::Epoll) => Driver::Epoll,
        None => config.driver,
    };
    // Masking keys towards upstreams must be unpredictable (RFC 6455 §5.3): no random source, no start.
    if let Err(e) = getrandom::fill(&mut [0u8; 4]) {
        eprintln!("ringway: the operating system's random source is unavailable: {e}");
        return ExitCode::FAILURE;
    }
    raise_fd_limit();
    let uring = match driver {
        Driver::Epoll => false,
        _ => monoio::utils::detect_uring(),
    };
    let options = StartOptions {
        workers,
        driver,
        takeover,
        config_path: Some(path.to_path_buf()),
    };
    let result = server::run(config, options, |bound| {
        let listeners: Vec<String> = bound
            .iter()
            .map(|b| format!("{} {}", b.name, b.addr))
            .collect();
        // One start line for the log (stderr); the addresses also go to stdout, one per line, for scripts.
        tracing::info!(
            version = %env!("CARGO_PKG_VERSION"),
            config = %path.display(),
            workers,
            io_uring = uring,
            listeners = %listeners.join(", "),
            "ringway started"
        );
        for b in bound {
            println!("ringway listening on {} ({})", b.addr, b.name);
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The log subscriber: `RUST_LOG` filters (default `info`); text for people, or one JSON object per line
/// (`log_format: json`) for shippers. The access log is the target `access` (`RUST_LOG=info,access=off` mutes it).
fn init_logs(format: ringway_config::LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match format {
        ringway_config::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .init(),
        ringway_config::LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            // Colours only for a person at a terminal: journald and log shippers get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
}

/// Raises RLIMIT_NOFILE to its hard limit: every proxied WebSocket holds two sockets.
fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
}
