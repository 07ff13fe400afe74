//! x86-64 masking kernels: SSE2 (baseline on x86-64), AVX2 and AVX-512 (F + BW).
//!
//! Each kernel is an `unsafe fn` with `#[target_feature]`; the safe wrappers check
//! [`Level::available`] (cached detection) first, and [`apply_mask_dispatched`] trusts
//! [`Level::dispatched`], which only returns levels detection has confirmed.
//!
//! Design notes:
//! - All loads and stores stay inside `buf`; nothing over-reads into hidden padding.
//! - Heads and tails use overlapping vectors instead of byte loops: the first and last vector of
//!   the buffer are loaded *before* any store and masked from those original bytes, so a byte that
//!   the main loop already masked is stored again with the same value (XOR is not idempotent, so
//!   the order matters and is documented at each kernel). AVX-512 uses masked loads/stores instead,
//!   which do not touch masked-out bytes.
//! - The AVX2 and AVX-512 main loops run on addresses aligned to the vector width (no split
//!   cache-line accesses); the key is rotated by the distance to the first aligned address.
//! - Every kernel is one `#[target_feature]` function, so all its instructions are VEX/EVEX
//!   encoded and the compiler emits `vzeroupper` on exit: no AVX<->SSE transition penalty for the
//!   SSE code that runs after it.
//! - 8..16 bytes: two overlapping u64 words; under 8 bytes: byte-wise.

use core::arch::x86_64::*;

use super::{Level, rotate_key, scalar, word};

/// Masks with the level chosen by [`Level::dispatched`].
#[inline]
pub(crate) fn apply_mask_dispatched(buf: &mut [u8], key: [u8; 4], offset: usize) {
    match Level::dispatched() {
        // SAFETY: `Level::dispatched` returns Avx512 only when detection found avx512f and avx512bw.
        Level::Avx512 => unsafe { mask_avx512(buf, key, offset) },
        // SAFETY: `Level::dispatched` returns Avx2 only when detection found avx2.
        Level::Avx2 => unsafe { mask_avx2(buf, key, offset) },
        // SAFETY: SSE2 is part of the x86-64 baseline.
        Level::Sse2 => unsafe { mask_sse2(buf, key, offset) },
        _ => word::apply_mask(buf, key, offset),
    }
}

/// SSE2 kernel; `None` if the CPU lacks SSE2 (never on x86-64, kept for symmetry).
pub fn apply_mask_sse2(buf: &mut [u8], key: [u8; 4], offset: usize) -> Option<()> {
    if !Level::Sse2.available() {
        return None;
    }
    // SAFETY: the CPU supports SSE2 (checked just above; always true on x86-64).
    unsafe { mask_sse2(buf, key, offset) };
    Some(())
}

/// AVX2 kernel; `None` if the CPU lacks AVX2.
pub fn apply_mask_avx2(buf: &mut [u8], key: [u8; 4], offset: usize) -> Option<()> {
    if !Level::Avx2.available() {
        return None;
    }
    // SAFETY: the CPU supports AVX2 (checked just above).
    unsafe { mask_avx2(buf, key, offset) };
    Some(())
}

/// AVX-512 (F + BW) kernel; `None` if the CPU lacks either.
pub fn apply_mask_avx512(buf: &mut [u8], key: [u8; 4], offset: usize) -> Option<()> {
    if !Level::Avx512.available() {
        return None;
    }
    // SAFETY: the CPU supports AVX-512 F and BW (checked just above).
    unsafe { mask_avx512(buf, key, offset) };
    Some(())
}

/// The rotated key repeated over a 32-bit lane, in memory order.
#[inline(always)]
fn key_lane(key: [u8; 4], offset: usize) -> i32 {
    i32::from_ne_bytes(rotate_key(key, offset))
}

/// SSE2: unaligned 16-byte vectors, 64 bytes per iteration; the last partial vector is done by
/// one overlapping store of the *original* last 16 bytes (loaded before any store), so bytes
/// already masked are written again with the same value. Safe to call from the AVX kernels (which
/// imply SSE2); other callers need `unsafe`, justified by SSE2 being part of the x86-64 baseline.
#[inline]
#[target_feature(enable = "sse2")]
fn mask_sse2(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let len = buf.len();
    if len < 16 {
        mask_small(buf, key, offset);
        return;
    }
    let p = buf.as_mut_ptr();
    let k = _mm_set1_epi32(key_lane(key, offset));
    // SAFETY: len >= 16, so the last 16 bytes are inside `buf`; nothing has been stored yet.
    let last = unsafe { _mm_loadu_si128(p.add(len - 16).cast()) };
    let mut i = 0;
    while i + 64 <= len {
        // SAFETY: [i, i + 64) is inside `buf`; unaligned loads/stores.
        unsafe {
            let q = p.add(i).cast::<__m128i>();
            let a = _mm_loadu_si128(q);
            let b = _mm_loadu_si128(q.add(1));
            let c = _mm_loadu_si128(q.add(2));
            let d = _mm_loadu_si128(q.add(3));
            _mm_storeu_si128(q, _mm_xor_si128(a, k));
            _mm_storeu_si128(q.add(1), _mm_xor_si128(b, k));
            _mm_storeu_si128(q.add(2), _mm_xor_si128(c, k));
            _mm_storeu_si128(q.add(3), _mm_xor_si128(d, k));
        }
        i += 64;
    }
    while i + 16 <= len {
        // SAFETY: [i, i + 16) is inside `buf`.
        unsafe {
            let q = p.add(i).cast::<__m128i>();
            _mm_storeu_si128(q, _mm_xor_si128(_mm_loadu_si128(q), k));
        }
        i += 16;
    }
    if i < len {
        let k_last = _mm_set1_epi32(key_lane(key, offset + len - 16));
        // SAFETY: the last 16 bytes are inside `buf`; `last` holds their original values.
        unsafe { _mm_storeu_si128(p.add(len - 16).cast(), _mm_xor_si128(last, k_last)) };
    }
}

/// AVX2: the first and last 32 bytes are loaded up front; the main loop runs on 32-byte aligned
/// addresses (128 bytes per iteration) from the first alignment boundary; then the original first
/// and last vectors are masked and stored, covering the unaligned head and the partial tail (bytes
/// they overlap receive the same value twice).
#[target_feature(enable = "avx2")]
unsafe fn mask_avx2(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let len = buf.len();
    if len < 32 {
        mask_sse2(buf, key, offset);
        return;
    }
    let p = buf.as_mut_ptr();
    // SAFETY: len >= 32, so the first and last 32 bytes are inside `buf`; nothing stored yet.
    let (first, last) = unsafe {
        (
            _mm256_loadu_si256(p.cast()),
            _mm256_loadu_si256(p.add(len - 32).cast()),
        )
    };
    let head = p.align_offset(32).min(32);
    let k = _mm256_set1_epi32(key_lane(key, offset + head));
    let mut i = head;
    while i + 128 <= len {
        // SAFETY: [i, i + 128) is inside `buf` and `p + i` is 32-byte aligned (head aligns it and
        // steps are multiples of 32), as the aligned load/store require.
        unsafe {
            let q = p.add(i).cast::<__m256i>();
            let a = _mm256_load_si256(q);
            let b = _mm256_load_si256(q.add(1));
            let c = _mm256_load_si256(q.add(2));
            let d = _mm256_load_si256(q.add(3));
            _mm256_store_si256(q, _mm256_xor_si256(a, k));
            _mm256_store_si256(q.add(1), _mm256_xor_si256(b, k));
            _mm256_store_si256(q.add(2), _mm256_xor_si256(c, k));
            _mm256_store_si256(q.add(3), _mm256_xor_si256(d, k));
        }
        i += 128;
    }
    while i + 32 <= len {
        // SAFETY: [i, i + 32) is inside `buf`, `p + i` is 32-byte aligned (see above).
        unsafe {
            let q = p.add(i).cast::<__m256i>();
            _mm256_store_si256(q, _mm256_xor_si256(_mm256_load_si256(q), k));
        }
        i += 32;
    }
    let k_first = _mm256_set1_epi32(key_lane(key, offset));
    let k_last = _mm256_set1_epi32(key_lane(key, offset + len - 32));
    // SAFETY: both ranges are inside `buf` (len >= 32); `first`/`last` hold original bytes, so every
    // byte they cover ends up as original ^ key, whether or not the loop already masked it.
    unsafe {
        _mm256_storeu_si256(p.add(len - 32).cast(), _mm256_xor_si256(last, k_last));
        _mm256_storeu_si256(p.cast(), _mm256_xor_si256(first, k_first));
    }
}

/// AVX-512: a masked head up to 64-byte alignment, aligned 256-byte iterations, a masked tail.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn mask_avx512(buf: &mut [u8], key: [u8; 4], offset: usize) {
    if buf.len() < 128 {
        // SAFETY: AVX-512 implies AVX2 on every CPU that has it, and `mask_avx512` is only called
        // after detection; AVX2 kernels are a subset.
        unsafe { mask_avx2(buf, key, offset) };
        return;
    }
    let head_len = buf.as_ptr().align_offset(64).min(buf.len());
    let (head, body) = buf.split_at_mut(head_len);
    // SAFETY: `head` is shorter than 64 bytes, so the mask covers exactly its bytes; masked-out
    // bytes are neither read nor written (and never fault).
    unsafe { mask_partial_avx512(head, _mm512_set1_epi32(key_lane(key, offset))) };
    let offset = offset + head_len;
    let k = _mm512_set1_epi32(key_lane(key, offset));
    let (blocks, rest) = body.as_chunks_mut::<256>();
    for block in blocks {
        let p = block.as_mut_ptr().cast::<__m512i>();
        // SAFETY: `p` points to 256 writable bytes and is 64-byte aligned (body starts at a
        // 64-byte boundary and blocks are 256 bytes), as the aligned load/store require.
        unsafe {
            let a = _mm512_load_si512(p);
            let b = _mm512_load_si512(p.add(1));
            let c = _mm512_load_si512(p.add(2));
            let d = _mm512_load_si512(p.add(3));
            _mm512_store_si512(p, _mm512_xor_si512(a, k));
            _mm512_store_si512(p.add(1), _mm512_xor_si512(b, k));
            _mm512_store_si512(p.add(2), _mm512_xor_si512(c, k));
            _mm512_store_si512(p.add(3), _mm512_xor_si512(d, k));
        }
    }
    let (vectors, tail) = rest.as_chunks_mut::<64>();
    for v in vectors {
        let p = v.as_mut_ptr().cast::<__m512i>();
        // SAFETY: `p` points to 64 writable bytes, 64-byte aligned (see above).
        unsafe { _mm512_store_si512(p, _mm512_xor_si512(_mm512_load_si512(p), k)) };
    }
    // SAFETY: `tail` is shorter than 64 bytes (see `mask_partial_avx512`).
    unsafe { mask_partial_avx512(tail, k) };
}

/// XORs `part` (< 64 bytes) with the first `part.len()` bytes of `k` using one masked load/store.
///
/// # Safety
/// The CPU must support AVX-512 F and BW, and `part.len()` must be below 64.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn mask_partial_avx512(part: &mut [u8], k: __m512i) {
    debug_assert!(part.len() < 64);
    if part.is_empty() {
        return;
    }
    let m: __mmask64 = (1u64 << part.len()) - 1;
    let p = part.as_mut_ptr().cast::<i8>();
    // SAFETY: the mask selects exactly the `part.len()` bytes of `part`; masked-out lanes are not
    // accessed (AVX-512 masked memory operations suppress faults on them).
    unsafe {
        let v = _mm512_maskz_loadu_epi8(m, p);
        _mm512_mask_storeu_epi8(p, m, _mm512_xor_si512(v, k));
    }
}

/// Below 16 bytes: two overlapping u64 words from 8 bytes, byte-wise below.
#[inline(always)]
fn mask_small(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let len = buf.len();
    let (Some(&first), Some(&last)) = (buf.first_chunk::<8>(), buf.last_chunk::<8>()) else {
        scalar::apply_mask(buf, key, offset);
        return;
    };
    let word = |k: [u8; 4]| u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let last = u64::from_ne_bytes(last) ^ word(rotate_key(key, offset + len - 8));
    let first = u64::from_ne_bytes(first) ^ word(rotate_key(key, offset));
    if let Some(chunk) = buf.last_chunk_mut::<8>() {
        *chunk = last.to_ne_bytes();
    }
    if let Some(chunk) = buf.first_chunk_mut::<8>() {
        *chunk = first.to_ne_bytes();
    }
}
