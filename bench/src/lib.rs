//! Ringway benchmarks (being built).
//!
//! Shared inputs for the frame-simd micro-benchmarks in `benches/` (masking, UTF-8, header decode):
//! deterministic payloads so runs are comparable, and the sizes every masking group covers.

use frame_simd::{FrameHeader, OpCode, encode_frame};

/// Payload sizes of the masking groups: 16 B to 1 MiB.
pub const MASK_SIZES: [usize; 7] = [16, 64, 512, 4 << 10, 16 << 10, 64 << 10, 1 << 20];

/// The masking key used by every benchmark.
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A human label for a byte size: `16B`, `4KiB`, `1MiB`.
pub fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{}MiB", size >> 20)
    } else if size >= 1 << 10 && size.is_multiple_of(1 << 10) {
        format!("{}KiB", size >> 10)
    } else {
        format!("{size}B")
    }
}

/// `len` bytes of a repeating, non-constant pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add((i >> 8) as u8))
        .collect()
}

/// About `len` bytes of ASCII text (English-like).
pub fn ascii_text(len: usize) -> String {
    repeat_to(
        len,
        "The quick brown fox jumps over the lazy dog; 0123456789 {\"k\":[1,2,3]}\n",
    )
}

/// About `len` bytes of mixed text: ASCII, Latin-1 accents, Cyrillic, Greek, CJK and emoji, so
/// 1-, 2-, 3- and 4-byte sequences all occur.
pub fn mixed_text(len: usize) -> String {
    repeat_to(
        len,
        "Grüße, Ἀθῆναι! Привет мир — 日本語のテキスト 🎉🚀 naïve café, 中文 ok.\n",
    )
}

fn repeat_to(len: usize, unit: &str) -> String {
    let mut out = String::with_capacity(len + unit.len());
    while out.len() + unit.len() <= len.max(unit.len()) {
        out.push_str(unit);
    }
    out
}

/// One masked client frame (as a server decodes it) with `payload`.
pub fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; payload.len() + frame_simd::MAX_HEADER_LEN];
    let header = FrameHeader::client(opcode, payload.len() as u64, KEY);
    let n = encode_frame(&header, payload, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_texts() {
        assert_eq!(size_label(16), "16B");
        assert_eq!(size_label(4096), "4KiB");
        assert_eq!(size_label(1 << 20), "1MiB");
        let mixed = mixed_text(4096);
        assert!(mixed.len() <= 4096 && mixed.len() > 3000);
        assert!(mixed.chars().any(|c| c.len_utf8() == 4));
        assert!(ascii_text(1000).is_ascii());
        assert_eq!(client_frame(OpCode::Binary, &[1, 2, 3]).len(), 2 + 4 + 3);
    }
}
