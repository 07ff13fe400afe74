//! The load generator (being built).
use crate::cli::LoadConfig;
/// Runs a load test; `Ok(true)` when clean.
pub fn run_load(_cfg: LoadConfig) -> anyhow::Result<bool> {
    anyhow::bail!("not yet")
}
