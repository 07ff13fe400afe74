//! `ringway-load`: WebSocket load generator and echo upstream. See the library docs.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    ringway_load::cli::main()
}
