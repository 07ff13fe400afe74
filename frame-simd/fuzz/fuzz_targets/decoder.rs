//! Decoding a byte stream split at arbitrary points gives exactly what decoding it whole gives:
//! the same headers, frame payloads, control frames and the same error, for both payload modes and
//! both peer roles. Also checks the decoder's own invariants (no progress without consumption,
//! `Incomplete` consumes nothing, control payloads within 125 bytes).
#![no_main]

use frame_simd::{
    Decoded, DecoderConfig, FrameDecoder, FrameError, FrameHeader, OpCode, PayloadMode, Role, Rsv,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Header(FrameHeader),
    Payload(Vec<u8>, bool),
    Control(OpCode, Vec<u8>, Vec<u8>),
}

fn run(cfg: DecoderConfig, stream: &[u8], cuts: &[usize]) -> (Vec<Event>, Option<FrameError>) {
    let mut dec = FrameDecoder::new(cfg);
    let mut events = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut payload = Vec::new();
    let mut fed = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    bounds.sort_unstable();
    bounds.push(stream.len());
    for end in bounds {
        if end <= fed {
            continue;
        }
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            let before = buf.clone();
            match dec.decode(&mut buf) {
                Err(e) => return (events, Some(e)),
                Ok(Decoded::Incomplete) => {
                    assert!(buf == before, "Incomplete must not touch the buffer");
                    break;
                }
                Ok(Decoded::DataHeader { header, len }) => {
                    assert!((2..=14).contains(&len) && len <= buf.len());
                    events.push(Event::Header(header));
                    buf.drain(..len);
                }
                Ok(Decoded::DataPayload {
                    len,
                    frame_end,
                    message_end,
                }) => {
                    assert!(len <= buf.len() && (!message_end || frame_end));
                    assert!(len > 0 || frame_end, "an empty chunk must end the frame");
                    payload.extend(buf.drain(..len));
                    if frame_end {
                        events.push(Event::Payload(std::mem::take(&mut payload), message_end));
                    }
                }
                Ok(Decoded::Control { opcode, len }) => {
                    assert!(opcode.is_control() && len <= buf.len());
                    assert!(dec.control_payload().len() <= 125);
                    let raw: Vec<u8> = buf.drain(..len).collect();
                    events.push(Event::Control(opcode, raw, dec.control_payload().to_vec()));
                }
            }
        }
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    let [flags, max_frame, max_message, c0, c1, c2, stream @ ..] = data else {
        return;
    };
    let cfg = DecoderConfig {
        peer: if flags & 1 != 0 {
            Role::Client
        } else {
            Role::Server
        },
        payload: if flags & 2 != 0 {
            PayloadMode::Preserve
        } else {
            PayloadMode::Unmask
        },
        allowed_rsv: Rsv {
            rsv1: flags & 4 != 0,
            rsv2: flags & 8 != 0,
            rsv3: false,
        },
        validate_utf8: flags & 16 == 0,
        max_frame_size: u64::from(*max_frame) * 8,
        max_message_size: u64::from(*max_message) * 16,
    };
    let n = stream.len() + 1;
    let cuts = [
        usize::from(*c0) % n,
        usize::from(*c1) * 7 % n,
        usize::from(*c2) * 13 % n,
    ];
    let whole = run(cfg, stream, &[]);
    let split = run(cfg, stream, &cuts);
    assert_eq!(whole, split, "split at {cuts:?}");
    if stream.len() <= 256 {
        let bytewise: Vec<usize> = (0..stream.len()).collect();
        assert_eq!(whole, run(cfg, stream, &bytewise), "byte by byte");
    }
});
