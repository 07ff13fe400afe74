//! The incremental validator equals `core::str::from_utf8` for every backend and any split, and
//! fails exactly at the first byte after which the input cannot become valid.
#![no_main]

use frame_simd::utf8::{Backend, Utf8Validator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, input @ ..] = data else { return };
    let expected = core::str::from_utf8(input).is_ok();
    let cuts = [
        usize::from(*a) % (input.len() + 1),
        usize::from(*b) % (input.len() + 1),
    ];
    let (lo, hi) = (cuts[0].min(cuts[1]), cuts[0].max(cuts[1]));
    // First prefix length that std declares definitely invalid.
    let fail_point = (1..=input.len())
        .find(|&n| matches!(core::str::from_utf8(&input[..n]), Err(e) if e.error_len().is_some()));
    for backend in Backend::ALL {
        let mut v = Utf8Validator::with_backend(backend);
        let split = v
            .feed(&input[..lo])
            .and_then(|()| v.feed(&input[lo..hi]))
            .and_then(|()| v.feed(&input[hi..]))
            .and_then(|()| v.finish());
        assert_eq!(split.is_ok(), expected, "{backend:?} split at {lo}/{hi}");

        // Fail fast: the prefix up to `lo` is accepted exactly when std sees no definite error yet.
        let mut v = Utf8Validator::with_backend(backend);
        let prefix_ok = v.feed(&input[..lo]).is_ok();
        assert_eq!(
            prefix_ok,
            fail_point.is_none_or(|f| f > lo),
            "{backend:?} prefix {lo}"
        );
    }
});
