//! Portable masking 8 bytes at a time with a u64 key, in safe code: the fallback on targets without
//! a SIMD kernel, the path for buffers under [`super::SIMD_FROM`] bytes, the head/tail helper of the
//! SIMD kernels, and the baseline they are benchmarked against.

/// `buf[i] ^= key[(offset + i) % 4]`, one u64 word per step, then one u32, then bytes.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    mask_rotated(buf, rotate_key(key, offset));
}

/// Masks `buf` with `k`, the key already rotated to `buf`'s first byte.
#[inline(always)]
pub(crate) fn mask_rotated(buf: &mut [u8], k: [u8; 4]) {
    let k32 = u32::from_ne_bytes(k);
    let k64 = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let (words, tail) = buf.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ k64).to_ne_bytes();
    }
    // Whole words keep the key phase, so the tail starts at phase 0 of `k`.
    let tail = match tail.split_first_chunk_mut::<4>() {
        Some((half, rest)) => {
            *half = (u32::from_ne_bytes(*half) ^ k32).to_ne_bytes();
            rest
        }
        None => tail,
    };
    for (byte, k) in tail.iter_mut().zip(k) {
        *byte ^= k;
    }
}

/// The key as seen from payload position `offset`: `rotate_key(k, o)[i] == k[(o + i) % 4]`.
#[inline(always)]
pub fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Little-endian view: byte i of the rotated word is key[(offset + i) % 4]. One `ror`, no
    // variable-index byte loads.
    let shift = 8 * (offset as u32 & 3);
    u32::from_le_bytes(key).rotate_right(shift).to_le_bytes()
}
