//! x86-64 masking kernels: SSE2 (baseline on x86-64), AVX2 and AVX-512 (F + BW).
//!
//! Each kernel is a `#[target_feature]` function (callable from code without the feature only
//! through `unsafe`); the safe wrappers check
//! [`Level::available`] (cached detection) first, and `apply_mask_dispatched` trusts
//! [`Level::dispatched`], which only returns levels detection has confirmed.
//!
//! Design notes:
//! - All loads and stores stay inside `buf`; nothing over-reads into hidden padding.
//! - Heads and tails use the safe word loop (u64, u32, bytes), never overlapping vector stores:
//!   re-storing bytes through a second, overlapping vector defeats store-to-load forwarding when
//!   the same buffer is touched again soon (measured: slower than the word loop at 64 B). AVX-512
//!   uses masked loads/stores instead, which do not touch masked-out bytes.
//! - AVX2 (from 256 bytes) and AVX-512 (from 128 bytes) first reach the vector width's alignment,
//!   so the main loop never splits a cache line; the key is rotated by the head's length.
//! - Every kernel is one `#[target_feature]` function, so all its instructions are VEX/EVEX
//!   encoded and the compiler emits `vzeroupper` on exit: no AVX<->SSE transition penalty for the
//!   SSE code that runs after it.
//! - [`super::apply_mask`] only dispatches from [`super::SIMD_FROM`] bytes; the kernels themselves
//!   accept any length (tests call them directly with 0..=256 bytes).

use core::arch::x86_64::*;

use super::word::{self, rotate_key};
use crate::simd::Level;

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

/// AVX-512 (F + BW) kernel; `None` if the CPU lacks either (or AVX2, used below 128 bytes).
pub fn apply_mask_avx512(buf: &mut [u8], key: [u8; 4], offset: usize) -> Option<()> {
    if !Level::Avx512.available() {
        return None;
    }
    // SAFETY: the CPU supports AVX-512 F and BW and AVX2 (checked just above).
    unsafe { mask_avx512(buf, key, offset) };
    Some(())
}

/// The rotated key repeated over a 32-bit lane, in memory order.
#[inline(always)]
fn key_lane(key: [u8; 4], offset: usize) -> i32 {
    i32::from_ne_bytes(rotate_key(key, offset))
}

/// SSE2: unaligned 16-byte vectors, 64 bytes per iteration, word-loop tail. Safe to call from the
/// AVX kernels (which imply SSE2); other callers need `unsafe`, justified by SSE2 being part of the
/// x86-64 baseline.
#[inline]
#[target_feature(enable = "sse2")]
fn mask_sse2(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let k = _mm_set1_epi32(key_lane(key, offset));
    let (blocks, rest) = buf.as_chunks_mut::<64>();
    for block in blocks {
        let q = block.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `q` points to 64 writable bytes (one `[u8; 64]`); unaligned loads/stores.
        unsafe {
            let a = _mm_loadu_si128(q);
            let b = _mm_loadu_si128(q.add(1));
            let c = _mm_loadu_si128(q.add(2));
            let d = _mm_loadu_si128(q.add(3));
            _mm_storeu_si128(q, _mm_xor_si128(a, k));
            _mm_storeu_si128(q.add(1), _mm_xor_si128(b, k));
            _mm_storeu_si128(q.add(2), _mm_xor_si128(c, k));
            _mm_storeu_si128(q.add(3), _mm_xor_si128(d, k));
        }
    }
    // Whole vectors keep the key phase: the rest starts at the same phase as `buf`.
    let (vectors, tail) = rest.as_chunks_mut::<16>();
    for v in vectors {
        let q = v.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `q` points to 16 writable bytes; unaligned load/store.
        unsafe { _mm_storeu_si128(q, _mm_xor_si128(_mm_loadu_si128(q), k)) };
    }
    word::mask_rotated(tail, rotate_key(key, offset));
}

/// AVX2: buffers of 256 bytes or more first reach 32-byte alignment with the word loop (the head
/// is under 32 bytes), so the main loop (128 bytes per iteration) never splits a cache line; the
/// tail (under 32 bytes) is one 16-byte vector at most plus the word loop.
#[target_feature(enable = "avx2")]
fn mask_avx2(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let head_len = if buf.len() >= 256 {
        buf.as_ptr().align_offset(32).min(32)
    } else {
        0
    };
    let (head, body) = buf.split_at_mut(head_len);
    word::mask_rotated(head, rotate_key(key, offset));
    let offset = offset + head_len;
    let k = _mm256_set1_epi32(key_lane(key, offset));
    let (blocks, rest) = body.as_chunks_mut::<128>();
    for block in blocks {
        let q = block.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `q` points to 128 writable bytes (one `[u8; 128]`); unaligned loads/stores
        // (which run at full speed on the aligned addresses the head produced).
        unsafe {
            let a = _mm256_loadu_si256(q);
            let b = _mm256_loadu_si256(q.add(1));
            let c = _mm256_loadu_si256(q.add(2));
            let d = _mm256_loadu_si256(q.add(3));
            _mm256_storeu_si256(q, _mm256_xor_si256(a, k));
            _mm256_storeu_si256(q.add(1), _mm256_xor_si256(b, k));
            _mm256_storeu_si256(q.add(2), _mm256_xor_si256(c, k));
            _mm256_storeu_si256(q.add(3), _mm256_xor_si256(d, k));
        }
    }
    let (vectors, tail) = rest.as_chunks_mut::<32>();
    for v in vectors {
        let q = v.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `q` points to 32 writable bytes; unaligned load/store.
        unsafe { _mm256_storeu_si256(q, _mm256_xor_si256(_mm256_loadu_si256(q), k)) };
    }
    let tail = match tail.split_first_chunk_mut::<16>() {
        Some((half, rest)) => {
            let q = half.as_mut_ptr().cast::<__m128i>();
            // SAFETY: `q` points to 16 writable bytes; the low 128 bits of `k` hold the same
            // key pattern (the phase is unchanged after whole vectors).
            unsafe {
                _mm_storeu_si128(
                    q,
                    _mm_xor_si128(_mm_loadu_si128(q), _mm256_castsi256_si128(k)),
                )
            };
            rest
        }
        None => tail,
    };
    word::mask_rotated(tail, rotate_key(key, offset));
}

/// AVX-512: a masked head up to 64-byte alignment, aligned 256-byte iterations, a masked tail.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
unsafe fn mask_avx512(buf: &mut [u8], key: [u8; 4], offset: usize) {
    if buf.len() < 128 {
        mask_avx2(buf, key, offset);
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
