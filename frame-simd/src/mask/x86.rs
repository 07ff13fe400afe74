//! x86-64 masking kernels: SSE2 (baseline on x86-64), AVX2 and AVX-512 (F + BW).
//!
//! Each kernel is an `unsafe fn` with `#[target_feature]`; the safe wrappers check
//! [`Level::available`] (cached detection) first, and [`apply_mask_dispatched`] trusts
//! [`Level::dispatched`], which only returns levels detection has confirmed.
//!
//! Design notes:
//! - All loads and stores stay inside `buf`: heads and tails are done by narrower steps (or, in
//!   AVX-512, by masked loads/stores that do not touch masked-out bytes), never by over-reading.
//! - AVX2 and AVX-512 align the main loop's stores to the vector width; the misaligned head is
//!   masked with the key rotated by the head's length so the key phase stays right.
//! - Every kernel is one `#[target_feature]` function, so all its instructions are VEX/EVEX
//!   encoded and the compiler emits `vzeroupper` on exit: no AVX<->SSE transition penalty for the
//!   SSE code that runs after it.
//! - Lengths under [`super::SCALAR_BELOW`] are handled byte-wise by the caller before dispatch.

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

/// SSE2: 64 bytes per iteration with unaligned 16-byte loads and stores. Safe to call from the
/// AVX kernels (which imply SSE2); other callers need `unsafe`, justified by SSE2 being part of the
/// x86-64 baseline.
#[inline]
#[target_feature(enable = "sse2")]
fn mask_sse2(buf: &mut [u8], key: [u8; 4], offset: usize) {
    if buf.len() < 16 {
        scalar_or_word(buf, key, offset);
        return;
    }
    let k = _mm_set1_epi32(key_lane(key, offset));
    let (blocks, rest) = buf.as_chunks_mut::<64>();
    for block in blocks {
        let p = block.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `p` points to 64 writable bytes (one `[u8; 64]`); unaligned loads/stores are used.
        unsafe {
            let a = _mm_loadu_si128(p);
            let b = _mm_loadu_si128(p.add(1));
            let c = _mm_loadu_si128(p.add(2));
            let d = _mm_loadu_si128(p.add(3));
            _mm_storeu_si128(p, _mm_xor_si128(a, k));
            _mm_storeu_si128(p.add(1), _mm_xor_si128(b, k));
            _mm_storeu_si128(p.add(2), _mm_xor_si128(c, k));
            _mm_storeu_si128(p.add(3), _mm_xor_si128(d, k));
        }
    }
    // Whole blocks keep the key phase: the rest starts at the same phase as `buf`.
    let (vectors, tail) = rest.as_chunks_mut::<16>();
    for v in vectors {
        let p = v.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `p` points to 16 writable bytes; unaligned load/store.
        unsafe { _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), k)) };
    }
    scalar_or_word(tail, key, offset);
}

/// AVX2: aligned 128-byte iterations after a head that reaches 32-byte alignment.
#[target_feature(enable = "avx2")]
unsafe fn mask_avx2(buf: &mut [u8], key: [u8; 4], offset: usize) {
    if buf.len() < 64 {
        mask_sse2(buf, key, offset);
        return;
    }
    let head_len = buf.as_ptr().align_offset(32).min(buf.len());
    let (head, body) = buf.split_at_mut(head_len);
    mask_sse2(head, key, offset);
    let offset = offset + head_len;
    let k = _mm256_set1_epi32(key_lane(key, offset));
    let (blocks, rest) = body.as_chunks_mut::<128>();
    for block in blocks {
        let p = block.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `p` points to 128 writable bytes and is 32-byte aligned (body starts at a 32-byte
        // boundary and blocks are 128 bytes), as the aligned load/store require.
        unsafe {
            let a = _mm256_load_si256(p);
            let b = _mm256_load_si256(p.add(1));
            let c = _mm256_load_si256(p.add(2));
            let d = _mm256_load_si256(p.add(3));
            _mm256_store_si256(p, _mm256_xor_si256(a, k));
            _mm256_store_si256(p.add(1), _mm256_xor_si256(b, k));
            _mm256_store_si256(p.add(2), _mm256_xor_si256(c, k));
            _mm256_store_si256(p.add(3), _mm256_xor_si256(d, k));
        }
    }
    let (vectors, tail) = rest.as_chunks_mut::<32>();
    for v in vectors {
        let p = v.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `p` points to 32 writable bytes, 32-byte aligned (see above).
        unsafe { _mm256_store_si256(p, _mm256_xor_si256(_mm256_load_si256(p), k)) };
    }
    mask_sse2(tail, key, offset);
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

/// Tails: byte-wise below 8 bytes, word loop above.
#[inline(always)]
fn scalar_or_word(buf: &mut [u8], key: [u8; 4], offset: usize) {
    if buf.len() < super::SCALAR_BELOW {
        scalar::apply_mask(buf, key, offset);
    } else {
        word::apply_mask(buf, key, offset);
    }
}
