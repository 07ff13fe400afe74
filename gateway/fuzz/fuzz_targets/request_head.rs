//! The request-head reader (`ringway::http::head::parse_request`), differentially against itself: a head that
//! parses is complete only at its own end (no prefix completes it), parses the same from its own bytes, survives a
//! round trip through its serialised form, and stays within the limits; the body-framing check and the header
//! helpers never panic on it. The first input byte picks the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::body::request_body_kind;
use ringway::http::head::{HeadLimits, Headers, RequestHead, parse_request};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let limits = HeadLimits {
        max_bytes: 64 + usize::from(knob) * 32,
        max_headers: 1 + usize::from(knob % 64),
    };
    match parse_request(input, limits) {
        Ok(Some(head)) => check_complete(input, &head, limits),
        Ok(None) => assert!(
            input.len() < limits.max_bytes,
            "partial past the size limit"
        ),
        Err(_) => {}
    }
});

fn check_complete(input: &[u8], head: &RequestHead, limits: HeadLimits) {
    assert!(head.head_len <= input.len() && head.head_len <= limits.max_bytes);
    assert!(head.headers.len() <= limits.max_headers);
    for cut in [0, head.head_len / 2, head.head_len - 1] {
        assert!(
            !matches!(parse_request(&input[..cut], limits), Ok(Some(_))),
            "a prefix of {cut} bytes completed a head of {}",
            head.head_len
        );
    }
    let own = parse_request(&input[..head.head_len], limits);
    assert_eq!(
        own.ok().flatten().as_ref(),
        Some(head),
        "depends on bytes after the head"
    );

    let mut out = format!(
        "{} {} HTTP/1.{}\r\n",
        head.method, head.target, head.minor_version
    )
    .into_bytes();
    for h in &head.headers {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if out.len() <= limits.max_bytes {
        match parse_request(&out, limits) {
            Ok(Some(again)) => {
                assert_eq!(
                    (
                        &again.method,
                        &again.target,
                        again.minor_version,
                        &again.headers
                    ),
                    (
                        &head.method,
                        &head.target,
                        head.minor_version,
                        &head.headers
                    ),
                    "round trip"
                );
                assert_eq!(again.head_len, out.len());
            }
            other => panic!("the serialised head does not parse: {other:?}"),
        }
    }

    let _ = request_body_kind(head);
    let _ = head.has_token("connection", "upgrade");
    let _ = head.header_str("host");
}
