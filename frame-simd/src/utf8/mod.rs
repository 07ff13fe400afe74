//! Incremental, fail-fast UTF-8 validation of text messages that arrive in pieces.
//!
//! Owns the stitching: a code point may be cut at any byte by a frame or read boundary. The
//! validator keeps the cut code point (at most 3 bytes) between calls, completes it with the next
//! bytes, hands the whole-code-point bulk to a fast validator (`simdutf8`, which dispatches to
//! AVX2 / SSE4.2 / NEON at runtime) and keeps the new incomplete tail.
//!
//! "Fail fast": [`Utf8Validator::feed`] fails on the call whose bytes make the input impossible to
//! complete into valid UTF-8 (e.g. `0xF5`, or `0xED 0xA0` for a surrogate), never later. A
//! truncated final code point is only reported by [`Utf8Validator::finish`].

/// Which bulk validator to use. [`Backend::Simd`] is the default unless scalar is forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `core::str::from_utf8`.
    Std,
    /// `simdutf8::basic::from_utf8` (runtime-dispatched SIMD).
    Simd,
}

impl Backend {
    /// Both backends.
    pub const ALL: [Backend; 2] = [Backend::Std, Backend::Simd];

    /// The backend [`Utf8Validator::new`] uses.
    pub fn dispatched() -> Backend {
        if crate::simd::detect::FORCE_SCALAR {
            Backend::Std
        } else {
            Backend::Simd
        }
    }

    /// Whether `bytes` is entirely valid UTF-8.
    #[inline]
    pub fn is_valid(self, bytes: &[u8]) -> bool {
        match self {
            // Short inputs (small frames, a read's leftovers): the SIMD entry's dispatch and setup
            // cost more than std's scalar loop.
            Backend::Simd if bytes.len() >= SIMD_FROM => simdutf8::basic::from_utf8(bytes).is_ok(),
            Backend::Std | Backend::Simd => core::str::from_utf8(bytes).is_ok(),
        }
    }
}

/// From this many bytes on, [`Backend::Simd`] hands the bulk to `simdutf8`.
pub const SIMD_FROM: usize = 64;

/// Invalid UTF-8 was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 after {valid_up_to} valid bytes")]
pub struct Utf8Error {
    /// Number of bytes (since the last reset) before the code point that cannot be valid.
    pub valid_up_to: u64,
}

/// Incremental UTF-8 validator; see the module docs.
#[derive(Debug, Clone)]
pub struct Utf8Validator {
    /// Bytes of a code point cut at the end of the previous input (a valid prefix).
    pending: [u8; 4],
    pending_len: usize,
    /// Bytes fed since the last reset.
    fed: u64,
    backend: Backend,
}

impl Default for Utf8Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Utf8Validator {
    /// A validator using the dispatched backend.
    pub fn new() -> Self {
        Self::with_backend(Backend::dispatched())
    }

    /// A validator using a specific backend (tests, benchmarks).
    pub fn with_backend(backend: Backend) -> Self {
        Self {
            pending: [0; 4],
            pending_len: 0,
            fed: 0,
            backend,
        }
    }

    /// Validates the next piece of input. Fails as soon as the input so far cannot be the prefix of
    /// valid UTF-8.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Utf8Error> {
        if self.pending_len > 0 {
            let need = sequence_len(self.pending[0]) - self.pending_len;
            let take = need.min(data.len());
            let start = self.fed - self.pending_len as u64;
            let mut joined = self.pending;
            joined[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            let joined_len = self.pending_len + take;
            self.fed += take as u64;
            data = &data[take..];
            match core::str::from_utf8(&joined[..joined_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    self.pending = joined;
                    self.pending_len = joined_len;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error { valid_up_to: start }),
            }
        }

        let start = self.fed;
        self.fed += data.len() as u64;
        let cut = incomplete_tail_start(data);
        let (body, tail) = data.split_at(cut);
        if !self.backend.is_valid(body) {
            let valid_up_to = match core::str::from_utf8(body) {
                Err(e) => e.valid_up_to(),
                Ok(_) => body.len(),
            };
            return Err(Utf8Error {
                valid_up_to: start + valid_up_to as u64,
            });
        }
        if !tail.is_empty() {
            match core::str::from_utf8(tail) {
                Err(e) if e.error_len().is_none() => {
                    self.pending[..tail.len()].copy_from_slice(tail);
                    self.pending_len = tail.len();
                }
                _ => {
                    return Err(Utf8Error {
                        valid_up_to: start + cut as u64,
                    });
                }
            }
        }
        Ok(())
    }

    /// Ends the input: fails if it stopped inside a code point. Resets the validator either way.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let result = if self.pending_len == 0 {
            Ok(())
        } else {
            Err(Utf8Error {
                valid_up_to: self.fed - self.pending_len as u64,
            })
        };
        self.reset();
        result
    }

    /// Forgets all input (keeps the backend).
    pub fn reset(&mut self) {
        self.pending_len = 0;
        self.fed = 0;
    }

    /// Whether the input so far ends inside a code point.
    pub fn is_incomplete(&self) -> bool {
        self.pending_len > 0
    }
}

/// The length a sequence starting with lead byte `b` claims (1 for ASCII and for bytes that cannot
/// lead, which the validators then reject).
#[inline]
fn sequence_len(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xFF => 4,
        _ => 1,
    }
}

/// Where a trailing sequence that is too short for its lead byte starts, or `data.len()`.
#[inline]
fn incomplete_tail_start(data: &[u8]) -> usize {
    let len = data.len();
    for back in 1..=len.min(3) {
        let b = data[len - back];
        if (0x80..=0xBF).contains(&b) {
            continue;
        }
        return if sequence_len(b) > back {
            len - back
        } else {
            len
        };
    }
    len
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The first prefix length at which `input` can no longer be completed into valid UTF-8.
    fn std_fail_point(input: &[u8]) -> Option<usize> {
        (1..=input.len()).find(
            |&n| matches!(core::str::from_utf8(&input[..n]), Err(e) if e.error_len().is_some()),
        )
    }

    fn validate_split(backend: Backend, input: &[u8], cuts: &[usize]) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::with_backend(backend);
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, input.len());
            v.feed(&input[at..cut])?;
            at = cut;
        }
        v.feed(&input[at..])?;
        v.finish()
    }

    #[test]
    fn accepts_valid_text_cut_at_every_byte() {
        let text = "héllo wörld — 日本語 🎉 ascii".as_bytes();
        for backend in Backend::ALL {
            for cut in 0..=text.len() {
                assert_eq!(validate_split(backend, text, &[cut]), Ok(()), "cut {cut}");
            }
        }
    }

    #[test]
    fn fails_fast_on_bytes_that_never_start_utf8() {
        for backend in Backend::ALL {
            for bad in [0xF5u8, 0xF8, 0xFF, 0xC0, 0xC1, 0x80] {
                let mut v = Utf8Validator::with_backend(backend);
                v.feed(b"ok ").unwrap();
                assert_eq!(
                    v.feed(&[bad]),
                    Err(Utf8Error { valid_up_to: 3 }),
                    "{bad:#x}"
                );
            }
        }
    }

    #[test]
    fn fails_fast_on_a_surrogate_second_byte() {
        for backend in Backend::ALL {
            let mut v = Utf8Validator::with_backend(backend);
            v.feed(&[b'a', 0xED]).unwrap();
            assert_eq!(v.feed(&[0xA0]), Err(Utf8Error { valid_up_to: 1 }));
            let mut v = Utf8Validator::with_backend(backend);
            v.feed(&[0xF4]).unwrap();
            assert!(v.feed(&[0x90]).is_err(), "above U+10FFFF");
            let mut v = Utf8Validator::with_backend(backend);
            v.feed(&[0xE0]).unwrap();
            assert!(v.feed(&[0x9F]).is_err(), "overlong 3-byte");
        }
    }

    /// Long inputs reach simdutf8 (short ones use std): corrupt every position of a mixed text
    /// and compare with std, whole and split.
    #[test]
    fn simd_bulk_path_matches_std_on_long_corrupted_text() {
        let text = "Grüße Привет 日本語 🎉 plain ascii run "
            .repeat(6)
            .into_bytes();
        assert!(text.len() > 2 * SIMD_FROM);
        for at in 0..text.len() {
            for bad in [0xFFu8, 0x80, 0xED, b'a'] {
                let mut input = text.clone();
                input[at] = bad;
                let expected = core::str::from_utf8(&input).is_ok();
                for cuts in [&[][..], &[at][..], &[at / 2, at + 1][..]] {
                    let got = validate_split(Backend::Simd, &input, cuts);
                    assert_eq!(got.is_ok(), expected, "at {at} byte {bad:#x} cuts {cuts:?}");
                }
            }
        }
    }

    #[test]
    fn truncated_code_point_fails_only_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(&[b'x', 0xF0, 0x9F, 0x8E]).unwrap();
        assert!(v.is_incomplete());
        assert_eq!(v.finish(), Err(Utf8Error { valid_up_to: 1 }));
        // finish resets: the next message starts clean.
        v.feed(b"fine").unwrap();
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn byte_by_byte_feeding_fails_exactly_where_std_says() {
        let cases: [&[u8]; 6] = [
            b"abc\xED\xA0\x80",
            b"\xF0\x9F\x8E\x89\xF5",
            b"ab\xE2\x82",
            b"\xC3\xA9\xC3\x28",
            b"\xF4\x8F\xBF\xBF\xF4\x90",
            b"\xE0\xA0\x80\x80",
        ];
        for backend in Backend::ALL {
            for input in cases {
                let mut v = Utf8Validator::with_backend(backend);
                let failed_at = (0..input.len())
                    .find(|&i| v.feed(&input[i..=i]).is_err())
                    .map(|i| i + 1);
                assert_eq!(failed_at, std_fail_point(input), "{input:x?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn equals_std_on_arbitrary_bytes_and_splits(
            input in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                any::<String>().prop_map(String::into_bytes),
                (any::<String>(), any::<usize>(), any::<u8>()).prop_map(|(s, at, b)| {
                    let mut v = s.into_bytes();
                    if !v.is_empty() { let i = at % v.len(); v[i] = b; }
                    v
                }),
            ],
            cuts in proptest::collection::vec(0usize..300, 0..8),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let expected = core::str::from_utf8(&input).is_ok();
            for backend in Backend::ALL {
                prop_assert_eq!(validate_split(backend, &input, &cuts).is_ok(), expected);
            }
        }

        #[test]
        fn fails_at_the_first_impossible_byte(
            input in (any::<String>(), any::<usize>(), any::<u8>()).prop_map(|(s, at, b)| {
                let mut v = s.into_bytes();
                if !v.is_empty() { let i = at % v.len(); v[i] = b; }
                v
            }),
            cut in any::<usize>(),
        ) {
            // Feeding a prefix must succeed exactly when std does not yet see a definite error.
            let fail = std_fail_point(&input);
            let n = if input.is_empty() { 0 } else { cut % (input.len() + 1) };
            let mut v = Utf8Validator::new();
            let ok_prefix = v.feed(&input[..n]).is_ok();
            prop_assert_eq!(ok_prefix, fail.is_none_or(|f| f > n));
        }
    }
}
