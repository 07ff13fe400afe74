//! Decoder tests: RFC 6455 §5.7 examples, one test per cross-frame rule, and the chunking property.

use proptest::prelude::*;

use super::*;
use crate::header::encode_frame;

/// What a decoded stream says, independent of how it was split.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Header(FrameHeader),
    /// A whole frame's payload as left in the buffer, and whether it ended the message.
    Payload(Vec<u8>, bool),
    Control(OpCode, Vec<u8>, Vec<u8>),
}

/// Feeds `stream` in pieces cut at `cuts` (like reads into a growing buffer) and collects events
/// until the stream is used up, or the first error.
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
            match dec.decode(&mut buf) {
                Err(e) => return (events, Some(e)),
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::DataHeader { header, len }) => {
                    events.push(Event::Header(header));
                    buf.drain(..len);
                }
                Ok(Decoded::DataPayload {
                    len,
                    frame_end,
                    message_end,
                }) => {
                    payload.extend(buf.drain(..len));
                    assert!(!message_end || frame_end);
                    assert_eq!(dec.in_message(), !message_end);
                    if frame_end {
                        events.push(Event::Payload(std::mem::take(&mut payload), message_end));
                    }
                }
                Ok(Decoded::Control { opcode, len }) => {
                    let raw: Vec<u8> = buf.drain(..len).collect();
                    events.push(Event::Control(opcode, raw, dec.control_payload().to_vec()));
                }
            }
        }
    }
    (events, None)
}

fn frame(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        fin,
        rsv: Rsv::default(),
        opcode,
        mask,
        payload_len: 0,
    };
    let mut out = vec![0; payload.len() + 14];
    let n = encode_frame(&header, payload, &mut out).unwrap();
    out.truncate(n);
    out
}

const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

fn server_peer() -> DecoderConfig {
    DecoderConfig {
        peer: Role::Server,
        ..DecoderConfig::default()
    }
}

fn payloads(events: &[Event]) -> Vec<(Vec<u8>, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Payload(p, end) => Some((p.clone(), *end)),
            _ => None,
        })
        .collect()
}

#[test]
fn rfc_5_7_examples_decode() {
    let single_masked = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (events, err) = run(DecoderConfig::default(), &single_masked, &[]);
    assert_eq!(err, None);
    assert_eq!(payloads(&events), vec![(b"Hello".to_vec(), true)]);

    let fragmented = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    let (events, err) = run(server_peer(), &fragmented, &[]);
    assert_eq!(err, None);
    assert_eq!(
        payloads(&events),
        vec![(b"Hel".to_vec(), false), (b"lo".to_vec(), true)]
    );

    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let (events, err) = run(server_peer(), &ping, &[]);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![Event::Control(
            OpCode::Ping,
            ping.to_vec(),
            b"Hello".to_vec()
        )]
    );

    let mut binary = vec![0x82, 0x7E, 0x01, 0x00];
    binary.extend(std::iter::repeat_n(0xAB, 256));
    let (events, err) = run(server_peer(), &binary, &[]);
    assert_eq!(err, None);
    assert_eq!(payloads(&events), vec![(vec![0xAB; 256], true)]);
}

#[test]
fn empty_frame_yields_one_empty_payload() {
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    let mut buf = frame(true, OpCode::Binary, KEY, b"");
    assert!(matches!(
        dec.decode(&mut buf),
        Ok(Decoded::DataHeader { len: 6, .. })
    ));
    assert!(dec.in_message());
    assert_eq!(
        dec.decode(&mut []),
        Ok(Decoded::DataPayload {
            len: 0,
            frame_end: true,
            message_end: true
        })
    );
    assert!(!dec.in_message());
    assert_eq!(dec.decode(&mut []), Ok(Decoded::Incomplete));
}

#[test]
fn payload_split_across_reads_is_unmasked_with_the_right_phase() {
    let text = "masked text split at odd places ✓";
    let stream = frame(true, OpCode::Text, KEY, text.as_bytes());
    for cut in 0..=stream.len() {
        let (events, err) = run(DecoderConfig::default(), &stream, &[cut, cut + 3]);
        assert_eq!(err, None);
        assert_eq!(
            payloads(&events),
            vec![(text.as_bytes().to_vec(), true)],
            "cut {cut}"
        );
    }
}

#[test]
fn continuation_without_a_start_is_refused() {
    let stream = frame(true, OpCode::Continuation, KEY, b"x");
    assert_eq!(
        run(DecoderConfig::default(), &stream, &[]).1,
        Some(FrameError::UnexpectedContinuation)
    );
}

#[test]
fn new_data_frame_inside_a_fragmented_message_is_refused() {
    let mut stream = frame(false, OpCode::Text, KEY, b"a");
    stream.extend(frame(true, OpCode::Binary, KEY, b"b"));
    assert_eq!(
        run(DecoderConfig::default(), &stream, &[]).1,
        Some(FrameError::ExpectedContinuation)
    );
}

#[test]
fn control_frames_may_interleave_a_fragmented_message() {
    let mut stream = frame(false, OpCode::Text, KEY, b"he");
    stream.extend(frame(true, OpCode::Ping, KEY, b"p"));
    stream.extend(frame(false, OpCode::Continuation, KEY, b"l"));
    stream.extend(frame(true, OpCode::Pong, KEY, b""));
    stream.extend(frame(true, OpCode::Continuation, KEY, b"lo"));
    let (events, err) = run(DecoderConfig::default(), &stream, &[]);
    assert_eq!(err, None);
    assert_eq!(
        payloads(&events),
        vec![
            (b"he".to_vec(), false),
            (b"l".to_vec(), false),
            (b"lo".to_vec(), true)
        ]
    );
    let controls: Vec<_> = events
        .iter()
        .filter_map(|e| {
            if let Event::Control(op, _, p) = e {
                Some((*op, p.clone()))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        controls,
        vec![(OpCode::Ping, b"p".to_vec()), (OpCode::Pong, vec![])]
    );
}

#[test]
fn max_message_size_counts_every_fragment() {
    let cfg = DecoderConfig {
        max_message_size: 5,
        ..DecoderConfig::default()
    };
    let mut ok = frame(false, OpCode::Binary, KEY, b"abc");
    ok.extend(frame(true, OpCode::Continuation, KEY, b"de"));
    assert_eq!(run(cfg, &ok, &[]).1, None);
    let mut too_big = frame(false, OpCode::Binary, KEY, b"abc");
    too_big.extend(frame(true, OpCode::Continuation, KEY, b"def"));
    let err = run(cfg, &too_big, &[]).1.unwrap();
    assert_eq!(err, FrameError::MessageTooLarge { len: 6, max: 5 });
    assert_eq!(err.close_code(), 1009);
}

#[test]
fn max_frame_size_is_enforced() {
    let cfg = DecoderConfig {
        max_frame_size: 3,
        ..DecoderConfig::default()
    };
    let err = run(cfg, &frame(true, OpCode::Binary, KEY, b"abcd"), &[])
        .1
        .unwrap();
    assert_eq!(err.close_code(), 1009);
}

#[test]
fn invalid_utf8_fails_at_the_frame_that_makes_it_impossible() {
    // "\xED" ends frame 1 (still a valid prefix), "\xA0" starts frame 2: the surrogate fails there,
    // before frame 2's remaining bytes or FIN arrive.
    let mut stream = frame(false, OpCode::Text, KEY, b"ok\xED");
    stream.extend(frame(true, OpCode::Continuation, KEY, b"\xA0\x80 and more"));
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    let first_len = 6 + 2 + 3;
    let mut buf = stream.clone();
    let mut at = 0;
    let mut events = 0;
    let err = loop {
        // Hand over only the first payload byte of frame 2.
        let end = (first_len + 6 + 1).min(buf.len());
        match dec.decode(&mut buf[at..end]) {
            Ok(Decoded::Incomplete) => panic!("should fail before needing more bytes"),
            Ok(Decoded::DataHeader { len, .. } | Decoded::Control { len, .. }) => at += len,
            Ok(Decoded::DataPayload { len, .. }) => at += len,
            Err(e) => break e,
        }
        events += 1;
    };
    assert_eq!(err, FrameError::InvalidUtf8);
    assert_eq!(err.close_code(), 1007);
    assert_eq!(
        events, 3,
        "header, payload, header, then the failing payload byte"
    );
}

#[test]
fn text_cut_inside_a_code_point_at_message_end_fails() {
    let stream = frame(true, OpCode::Text, KEY, "é".as_bytes().get(..1).unwrap());
    assert_eq!(
        run(DecoderConfig::default(), &stream, &[]).1,
        Some(FrameError::InvalidUtf8)
    );
}

#[test]
fn code_point_cut_between_fragments_is_accepted() {
    let text = "日本".as_bytes();
    let mut stream = frame(false, OpCode::Text, KEY, &text[..2]);
    stream.extend(frame(false, OpCode::Continuation, KEY, &text[2..4]));
    stream.extend(frame(true, OpCode::Continuation, KEY, &text[4..]));
    assert_eq!(run(DecoderConfig::default(), &stream, &[]).1, None);
}

#[test]
fn utf8_checks_can_be_disabled_and_skip_compressed_and_binary_messages() {
    let bad = frame(true, OpCode::Text, KEY, b"\xFF");
    assert_eq!(
        run(DecoderConfig::default(), &bad, &[]).1,
        Some(FrameError::InvalidUtf8)
    );
    let off = DecoderConfig {
        validate_utf8: false,
        ..DecoderConfig::default()
    };
    assert_eq!(run(off, &bad, &[]).1, None);
    assert_eq!(
        run(
            DecoderConfig::default(),
            &frame(true, OpCode::Binary, KEY, b"\xFF"),
            &[]
        )
        .1,
        None
    );
    let deflate = DecoderConfig {
        allowed_rsv: Rsv {
            rsv1: true,
            ..Rsv::default()
        },
        ..DecoderConfig::default()
    };
    let mut compressed = bad.clone();
    compressed[0] |= 0x40;
    assert_eq!(run(deflate, &compressed, &[]).1, None);
}

#[test]
fn preserve_mode_leaves_bytes_as_received_and_still_validates() {
    let cfg = DecoderConfig {
        payload: PayloadMode::Preserve,
        ..DecoderConfig::default()
    };
    let text = frame(true, OpCode::Text, KEY, "héllo".as_bytes());
    let (events, err) = run(cfg, &text, &[9]);
    assert_eq!(err, None);
    assert_eq!(payloads(&events), vec![(text[6..].to_vec(), true)]);
    let ping = frame(true, OpCode::Ping, KEY, b"hi");
    let (events, _) = run(cfg, &ping, &[]);
    assert_eq!(
        events,
        vec![Event::Control(OpCode::Ping, ping.clone(), b"hi".to_vec())]
    );
    assert_eq!(
        run(cfg, &frame(true, OpCode::Text, KEY, b"\xC3("), &[]).1,
        Some(FrameError::InvalidUtf8)
    );
}

#[test]
fn unmask_mode_unmasks_control_frames_in_place_too() {
    let ping = frame(true, OpCode::Ping, KEY, b"hi");
    let (events, _) = run(DecoderConfig::default(), &ping, &[]);
    let mut expected = ping.clone();
    expected[6..].copy_from_slice(b"hi");
    assert_eq!(
        events,
        vec![Event::Control(OpCode::Ping, expected, b"hi".to_vec())]
    );
}

#[test]
fn control_frames_are_consumed_only_when_complete() {
    let ping = frame(true, OpCode::Ping, KEY, &[7; 125]);
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    for end in 0..ping.len() {
        let mut part = ping[..end].to_vec();
        assert_eq!(dec.decode(&mut part), Ok(Decoded::Incomplete), "end {end}");
    }
    let mut whole = ping.clone();
    assert_eq!(
        dec.decode(&mut whole),
        Ok(Decoded::Control {
            opcode: OpCode::Ping,
            len: 131
        })
    );
    assert_eq!(dec.control_payload(), &[7; 125][..]);
}

#[test]
fn close_payloads_are_validated() {
    for (payload, expected) in [
        (&[][..], None),
        (&[0x03, 0xE8][..], None),
        (&[0x03][..], Some(FrameError::CloseTooShort)),
        (&[0x03, 0xED][..], Some(FrameError::InvalidCloseCode(1005))),
        (
            &[0x03, 0xE8, 0xFF][..],
            Some(FrameError::InvalidCloseReason),
        ),
    ] {
        let stream = frame(true, OpCode::Close, KEY, payload);
        assert_eq!(
            run(DecoderConfig::default(), &stream, &[]).1,
            expected,
            "{payload:x?}"
        );
    }
}

#[test]
fn nothing_may_follow_a_close_frame() {
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    let mut close = frame(true, OpCode::Close, KEY, &[0x03, 0xE8]);
    assert!(matches!(
        dec.decode(&mut close),
        Ok(Decoded::Control {
            opcode: OpCode::Close,
            ..
        })
    ));
    assert!(dec.is_closed());
    assert_eq!(dec.decode(&mut []), Ok(Decoded::Incomplete));
    let mut more = frame(true, OpCode::Ping, KEY, b"");
    assert_eq!(dec.decode(&mut more), Err(FrameError::FrameAfterClose));
}

#[test]
fn errors_are_sticky() {
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    let mut bad = frame(true, OpCode::Binary, None, b"x");
    assert_eq!(dec.decode(&mut bad), Err(FrameError::UnmaskedFrame));
    let mut good = frame(true, OpCode::Binary, KEY, b"x");
    assert_eq!(dec.decode(&mut good), Err(FrameError::UnmaskedFrame));
}

#[test]
fn header_errors_fail_before_the_header_is_complete() {
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    assert_eq!(dec.decode(&mut [0x83]), Err(FrameError::ReservedOpcode(3)));
}

/// A random frame stream: messages fragmented at random, control frames in between, text that is
/// sometimes corrupted, masked or not according to `peer`.
fn arb_stream() -> impl Strategy<Value = (Role, Vec<u8>)> {
    let piece = prop_oneof![
        4 => (any::<bool>(), proptest::collection::vec(any::<String>(), 1..4), any::<[u8; 4]>())
            .prop_map(|(text, parts, key)| (0u8, text, parts, key)),
        1 => (proptest::collection::vec(any::<u8>(), 0..126), any::<[u8; 4]>())
            .prop_map(|(p, key)| (1u8, false, vec![String::from_utf8_lossy(&p).into_owned()], key)),
        1 => (any::<u16>(), any::<[u8; 4]>()).prop_map(|(code, key)| (2u8, false, vec![code.to_string()], key)),
    ];
    (
        any::<bool>(),
        proptest::collection::vec(piece, 1..6),
        any::<Option<(usize, u8)>>(),
    )
        .prop_map(|(client, pieces, corrupt)| {
            let peer = if client { Role::Client } else { Role::Server };
            let mut out = Vec::new();
            for (kind, text, parts, key) in pieces {
                let mask = (peer == Role::Client).then_some(key);
                match kind {
                    0 => {
                        let n = parts.len();
                        for (i, part) in parts.iter().enumerate() {
                            let op = match (i, text) {
                                (0, true) => OpCode::Text,
                                (0, false) => OpCode::Binary,
                                _ => OpCode::Continuation,
                            };
                            out.extend(frame(i + 1 == n, op, mask, part.as_bytes()));
                        }
                    }
                    1 => {
                        let p = parts[0].as_bytes();
                        out.extend(frame(true, OpCode::Ping, mask, &p[..p.len().min(125)]));
                    }
                    _ => {
                        let code: u16 = parts[0].parse().unwrap_or(1000);
                        out.extend(frame(true, OpCode::Close, mask, &code.to_be_bytes()));
                    }
                }
            }
            if let Some((at, byte)) = corrupt
                && !out.is_empty()
            {
                let i = at % out.len();
                out[i] = byte;
            }
            (peer, out)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_split_decodes_like_the_whole_stream(
        (peer, stream) in arb_stream(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        preserve in any::<bool>(),
    ) {
        let cfg = DecoderConfig {
            peer,
            payload: if preserve { PayloadMode::Preserve } else { PayloadMode::Unmask },
            ..DecoderConfig::default()
        };
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        let whole = run(cfg, &stream, &[]);
        let split = run(cfg, &stream, &cuts);
        prop_assert_eq!(&whole, &split);
        let bytewise: Vec<usize> = (0..stream.len()).collect();
        prop_assert_eq!(&whole, &run(cfg, &stream, &bytewise));
    }
}
