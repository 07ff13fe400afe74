//! Ringway route file model (being built).
