//! Instruction-set levels and their runtime detection, shared by the SIMD kernels.

pub mod detect;

pub use detect::Level;
