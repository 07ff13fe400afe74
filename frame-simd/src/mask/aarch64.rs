//! aarch64 NEON masking kernel (128-bit vectors, 64 bytes per iteration, unaligned access).
//!
//! NEON is part of the aarch64 baseline, but the safe wrapper still checks the cached detection so
//! the code reads the same as the x86 kernels.

use core::arch::aarch64::*;

use super::word::{self, rotate_key};
use crate::simd::Level;

/// Masks with the level chosen by [`Level::dispatched`].
#[inline]
pub(crate) fn apply_mask_dispatched(buf: &mut [u8], key: [u8; 4], offset: usize) {
    match Level::dispatched() {
        // SAFETY: `Level::dispatched` returns Neon only when detection found NEON.
        Level::Neon => unsafe { mask_neon(buf, key, offset) },
        _ => word::apply_mask(buf, key, offset),
    }
}

/// NEON kernel; `None` if the CPU lacks NEON.
pub fn apply_mask_neon(buf: &mut [u8], key: [u8; 4], offset: usize) -> Option<()> {
    if !Level::Neon.available() {
        return None;
    }
    // SAFETY: the CPU supports NEON (checked just above).
    unsafe { mask_neon(buf, key, offset) };
    Some(())
}

#[target_feature(enable = "neon")]
unsafe fn mask_neon(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let k = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_ne_bytes(rotate_key(key, offset))));
    let (blocks, rest) = buf.as_chunks_mut::<64>();
    for block in blocks {
        let p = block.as_mut_ptr();
        // SAFETY: `p` points to 64 writable bytes; vld1q/vst1q have no alignment requirement.
        unsafe {
            let a = vld1q_u8(p);
            let b = vld1q_u8(p.add(16));
            let c = vld1q_u8(p.add(32));
            let d = vld1q_u8(p.add(48));
            vst1q_u8(p, veorq_u8(a, k));
            vst1q_u8(p.add(16), veorq_u8(b, k));
            vst1q_u8(p.add(32), veorq_u8(c, k));
            vst1q_u8(p.add(48), veorq_u8(d, k));
        }
    }
    let (vectors, tail) = rest.as_chunks_mut::<16>();
    for v in vectors {
        let p = v.as_mut_ptr();
        // SAFETY: `p` points to 16 writable bytes; unaligned access is allowed.
        unsafe { vst1q_u8(p, veorq_u8(vld1q_u8(p), k)) };
    }
    // Whole vectors keep the key phase: the tail starts at the same phase as `buf`.
    word::mask_rotated(tail, rotate_key(key, offset));
}
