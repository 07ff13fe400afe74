//! Portable masking 8 bytes at a time with a u64 key, in safe code: the fallback on targets without
//! a SIMD kernel and the baseline the SIMD kernels are benchmarked against.

use super::rotate_key;

/// `buf[i] ^= key[(offset + i) % 4]`, one u64 word per step, byte-wise tail.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let k = rotate_key(key, offset);
    let k64 = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let (words, tail) = buf.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ k64).to_ne_bytes();
    }
    // Whole words keep the key phase, so the tail starts at phase 0 of `k`.
    for (i, byte) in tail.iter_mut().enumerate() {
        *byte ^= k[i & 3];
    }
}
