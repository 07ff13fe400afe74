//! The PROXY protocol parser (`ringway::proxy_protocol::parse`): never panics; a complete header lies within the
//! input and within the bounds (107 bytes for v1, `V2_MAX_LEN` for v2) and parses the same from exactly its own
//! bytes; every prefix is `Partial` or fails the same way (an error never waits for later bytes, and a header is
//! never complete early); and a header with addresses, written again by the encoder, parses to the same addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::proxy_protocol::{Parsed, V1_MAX_LEN, V2_MAX_LEN, encode, parse};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Ok(Parsed::Complete(h)) = whole {
        assert!(h.header_len <= data.len());
        let bound = if data[0] == b'P' { V1_MAX_LEN } else { V2_MAX_LEN };
        assert!(h.header_len <= bound, "{} > {bound}", h.header_len);
        assert_eq!(h.source.is_some(), h.destination.is_some());
        assert_eq!(parse(&data[..h.header_len]), whole, "not the same from its own bytes");
        if let (Some(src), Some(dst)) = (h.source, h.destination) {
            let written = if data[0] == b'P' {
                encode::v1(Some((src, dst)))
            } else {
                encode::v2(Some((src, dst)), &[])
            };
            match parse(&written) {
                Ok(Parsed::Complete(again)) => {
                    assert_eq!((again.source, again.destination), (h.source, h.destination));
                    assert_eq!(again.header_len, written.len());
                }
                other => panic!("re-encoded header did not parse: {other:?}"),
            }
        }
    }
    // Every prefix for short inputs, a spread of them for long ones (parse is linear in the header).
    let step = (data.len() / 256).max(1);
    for cut in (0..data.len()).step_by(step) {
        let part = parse(&data[..cut]);
        match (&whole, &part) {
            (_, Ok(Parsed::Partial)) => {}
            (Err(a), Err(b)) => assert_eq!(a, b, "prefix {cut} fails differently"),
            (Ok(Parsed::Complete(h)), Ok(Parsed::Complete(p))) => {
                assert!(cut >= h.header_len, "complete at {cut}, before its end");
                assert_eq!(h, p);
            }
            _ => panic!("prefix {cut}: {part:?}, whole: {whole:?}"),
        }
    }
});
