//! Every masking kernel the CPU has, and the dispatched `apply_mask`, equal the byte-wise scalar
//! reference for any data, key, key phase and buffer misalignment.
#![no_main]

use frame_simd::mask::{self, Level};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [k0, k1, k2, k3, offset, misalign, rest @ ..] = data else {
        return;
    };
    let key = [*k0, *k1, *k2, *k3];
    let offset = usize::from(*offset);
    let misalign = usize::from(*misalign % 64);
    let mut backing = vec![0u8; rest.len() + misalign];
    backing[misalign..].copy_from_slice(rest);
    let mut expected = backing.clone();
    mask::scalar::apply_mask(&mut expected[misalign..], key, offset);
    for level in Level::all_available() {
        let mut actual = backing.clone();
        assert_eq!(
            mask::apply_mask_with(level, &mut actual[misalign..], key, offset),
            Some(())
        );
        assert!(actual == expected, "{level:?} differs from scalar");
    }
    let mut actual = backing;
    mask::apply_mask(&mut actual[misalign..], key, offset);
    assert!(
        actual == expected,
        "dispatched apply_mask differs from scalar"
    );
});
