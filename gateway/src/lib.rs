//! Ringway gateway (being built).
