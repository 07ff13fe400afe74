//! Byte-at-a-time masking: the reference every other kernel is checked against.

/// `buf[i] ^= key[(offset + i) % 4]`.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(offset + i) & 3];
    }
}
