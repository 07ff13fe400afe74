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
    /// Worker threads (overrides `workers:`; default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Runtime driver (overrides `driver:`).
    #[arg(long, value_enum)]
    driver: Option<DriverArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a route file and print a summary; exit status 1 on error.
    Check { file: PathBuf },
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
        None => {
            let Some(path) = cli.config else {
                eprintln!(
                    "ringway: --config FILE is required (try config/examples/quickstart.yaml)"
                );
                return ExitCode::from(2);
            };
            run(&path, cli.workers, cli.driver)
        }
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    match ringway_config::load(file) {
        Ok(config) => {
            println!("{}: OK", file.display());
            print!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, workers: Option<usize>, driver: Option<DriverArg>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let config = match ringway_config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
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
    let options = StartOptions { workers, driver };
    let result = server::run(config, options, |bound| {
        for b in bound {
            tracing::info!(listener = %b.name, addr = %b.addr, workers, io_uring = uring, "listening");
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

/// Raises RLIMIT_NOFILE to its hard limit: every proxied WebSocket holds two sockets.
fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
}
