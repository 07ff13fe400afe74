//! Runtime CPU feature detection, done once and cached in an `AtomicU8`.
//!
//! Owns the answer to "which kernels may run on this CPU" and "which one does the dispatcher pick".
//! The pick is the best available level unless the scalar path is forced with the `force-scalar`
//! feature or `--cfg frame_simd_force_scalar`; forcing changes only the pick, never what
//! [`Level::available`] reports, so tests still exercise every kernel the CPU has.

use std::sync::atomic::{AtomicU8, Ordering};

/// An implementation level of a kernel, from the byte-wise reference up to the widest vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Byte-at-a-time reference implementation.
    Scalar,
    /// Portable 64-bit word loop (the "scalar elsewhere" fast path; no `unsafe`).
    Word,
    /// x86-64 SSE2 (128-bit).
    Sse2,
    /// x86-64 AVX2 (256-bit).
    Avx2,
    /// x86-64 AVX-512 F + BW, with AVX2 (512-bit, masked head and tail).
    Avx512,
    /// aarch64 NEON (128-bit).
    Neon,
}

impl Level {
    /// Every level, in order.
    pub const ALL: [Level; 6] = [
        Level::Scalar,
        Level::Word,
        Level::Sse2,
        Level::Avx2,
        Level::Avx512,
        Level::Neon,
    ];

    /// Whether this CPU can run the level.
    pub fn available(self) -> bool {
        let bit = match self {
            Level::Scalar | Level::Word => return true,
            Level::Sse2 => SSE2,
            Level::Avx2 => AVX2,
            Level::Avx512 => AVX512,
            Level::Neon => NEON,
        };
        features() & bit != 0
    }

    /// The levels this CPU can run, in order.
    pub fn all_available() -> impl Iterator<Item = Level> {
        Self::ALL.into_iter().filter(|level| level.available())
    }

    /// The level the dispatcher uses: the best available, or [`Level::Word`] when scalar is forced.
    /// Cached: after the first call this is one relaxed atomic load.
    #[inline]
    pub fn dispatched() -> Level {
        match DISPATCHED.load(Ordering::Relaxed) {
            0 => {
                let level = Self::pick();
                DISPATCHED.store(level as u8 + 1, Ordering::Relaxed);
                level
            }
            code => Self::ALL
                .get(usize::from(code - 1))
                .copied()
                .unwrap_or(Level::Word),
        }
    }

    #[cold]
    fn pick() -> Level {
        if FORCE_SCALAR {
            return Level::Word;
        }
        [Level::Avx512, Level::Avx2, Level::Sse2, Level::Neon]
            .into_iter()
            .find(|level| level.available())
            .unwrap_or(Level::Word)
    }

    /// A short lowercase name, for benchmark ids and reports.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Word => "word",
            Level::Sse2 => "sse2",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }
}

/// Whether the dispatcher is forced onto the portable path.
pub const FORCE_SCALAR: bool = cfg!(any(feature = "force-scalar", frame_simd_force_scalar));

const SSE2: u8 = 1;
const AVX2: u8 = 1 << 1;
const AVX512: u8 = 1 << 2;
const NEON: u8 = 1 << 3;
const DETECTED: u8 = 1 << 7;

static FEATURES: AtomicU8 = AtomicU8::new(0);
/// `Level as u8 + 1` of the dispatched level, 0 until first use.
static DISPATCHED: AtomicU8 = AtomicU8::new(0);

/// The cached feature bits; detects on first use. Racing first calls store the same value.
#[inline]
fn features() -> u8 {
    let cached = FEATURES.load(Ordering::Relaxed);
    if cached & DETECTED != 0 {
        return cached;
    }
    let detected = detect() | DETECTED;
    FEATURES.store(detected, Ordering::Relaxed);
    detected
}

#[cold]
fn detect() -> u8 {
    let mut bits = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("sse2") {
            bits |= SSE2;
        }
        if std::is_x86_feature_detected!("avx2") {
            bits |= AVX2;
        }
        // The AVX-512 kernel hands buffers under 128 bytes to the AVX2 one.
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx2")
        {
            bits |= AVX512;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            bits |= NEON;
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_levels_are_always_available() {
        assert!(Level::Scalar.available());
        assert!(Level::Word.available());
    }

    #[test]
    fn dispatched_level_is_available() {
        assert!(Level::dispatched().available());
        if FORCE_SCALAR {
            assert_eq!(Level::dispatched(), Level::Word);
        }
    }

    #[test]
    fn level_codes_round_trip_through_all() {
        for (i, level) in Level::ALL.into_iter().enumerate() {
            assert_eq!(level as usize, i);
        }
        assert_eq!(Level::dispatched(), Level::pick());
    }

    #[test]
    fn detection_matches_std() {
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(
                Level::Avx2.available(),
                std::is_x86_feature_detected!("avx2")
            );
            assert!(Level::Sse2.available());
            assert!(!Level::Neon.available());
        }
        #[cfg(not(target_arch = "x86_64"))]
        assert!(!Level::Avx2.available());
    }
}
