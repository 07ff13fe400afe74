//! Declares the `frame_simd_force_scalar` cfg so `--cfg frame_simd_force_scalar` builds without warnings.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(frame_simd_force_scalar)");
}
