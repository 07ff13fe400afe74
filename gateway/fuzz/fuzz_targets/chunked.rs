//! The chunked-body decoder (`ringway::http::body::ChunkedDecoder`), differentially against itself: fed in pieces
//! of any size it gives exactly what it gives fed whole (data, bytes consumed, end, or the same error); it consumes
//! every byte it is given until the body ends and none after; and re-encoding then decoding gives the same data as
//! decoding directly. The first input byte picks the piece size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::body::{BodyError, ChunkedDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(knob).max(1);
    let whole = decode(input, false, input.len().max(1));
    assert_eq!(decode(input, false, piece), whole, "pieces of {piece}");

    let reencoded = decode(input, true, piece);
    match (&whole, &reencoded) {
        (Ok(plain), Ok(framed)) => {
            assert_eq!((plain.consumed, plain.done), (framed.consumed, framed.done));
            if framed.done {
                let again = decode(&framed.out, false, framed.out.len().max(1))
                    .expect("the re-encoded body decodes");
                assert!(again.done && again.consumed == framed.out.len());
                assert_eq!(again.out, plain.out, "re-encoding changed the data");
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        other => panic!("re-encoding changed the outcome: {other:?}"),
    }
});

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    out: Vec<u8>,
    consumed: usize,
    done: bool,
}

fn decode(input: &[u8], reencode: bool, piece: usize) -> Result<Decoded, BodyError> {
    let mut decoder = ChunkedDecoder::new(reencode);
    let mut out = Vec::new();
    let mut consumed = 0;
    for chunk in input.chunks(piece) {
        let progress = decoder.feed(chunk, &mut out)?;
        assert!(progress.consumed <= chunk.len());
        consumed += progress.consumed;
        if progress.done {
            assert!(decoder.is_done());
            let after = decoder.feed(b"more", &mut out)?;
            assert_eq!(
                (after.consumed, after.done),
                (0, true),
                "consumed after the end"
            );
            return Ok(Decoded {
                out,
                consumed,
                done: true,
            });
        }
        assert_eq!(
            progress.consumed,
            chunk.len(),
            "stopped early without ending"
        );
    }
    Ok(Decoded {
        out,
        consumed,
        done: false,
    })
}
