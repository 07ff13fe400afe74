//! The TLS-facing entry (`ringway::tls::fuzzing`): any bytes a client may send before and during the handshake,
//! split into reads of any size (the first input byte picks the read size), must end in "wants more", a refusal
//! (whose answer, the flight so far plus the alert, stays bounded), or a completed handshake, and never a panic. Fed whole or in pieces, the same bytes
//! must be refused or not alike (whether a ClientHello is acceptable does not depend on how it was read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::tls::fuzzing::{TlsEntryOutcome, feed_client_bytes};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(knob).max(1);
    let whole = feed_client_bytes([input]);
    let pieces = feed_client_bytes(input.chunks(piece));
    if let TlsEntryOutcome::Refused { answer_bytes } = whole {
        assert!(answer_bytes <= 16 * 1024, "an answer of {answer_bytes} bytes");
    }
    assert_eq!(
        matches!(whole, TlsEntryOutcome::Refused { .. }),
        matches!(pieces, TlsEntryOutcome::Refused { .. }),
        "refused whole but not in pieces of {piece} (or the reverse)"
    );
});
