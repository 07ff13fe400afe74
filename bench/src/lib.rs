//! Ringway benchmarks (being built).
