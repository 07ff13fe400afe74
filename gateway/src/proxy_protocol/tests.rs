use proptest::prelude::*;

use super::*;

fn sa(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

fn complete(buf: &[u8]) -> ProxyHeader {
    match parse(buf) {
        Ok(Parsed::Complete(h)) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

/// Every proper prefix of `buf` is `Partial` or fails like the whole (an error never depends on later bytes).
fn assert_prefixes_agree(buf: &[u8]) {
    let whole = parse(buf);
    for cut in 0..buf.len() {
        let part = parse(&buf[..cut]);
        match (&part, &whole) {
            (Ok(Parsed::Partial), _) => {}
            (Err(a), Err(b)) if a == b => {}
            _ => panic!("prefix {cut} of {buf:?}: {part:?}, whole: {whole:?}"),
        }
    }
}

const MAX_V6: &str = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";

#[test]
fn the_specifications_v1_examples_parse() {
    let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
    let h = complete(line);
    assert_eq!(h.header_len, 47);
    assert_eq!(h.source, Some(sa("192.168.0.1:56324")));
    assert_eq!(h.destination, Some(sa("192.168.0.11:443")));

    let worst4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    assert_eq!(complete(worst4).header_len, 56);
    let worst6 = format!("PROXY TCP6 {MAX_V6} {MAX_V6} 65535 65535\r\n");
    assert_eq!(worst6.len(), 104);
    let h = complete(worst6.as_bytes());
    assert_eq!(h.header_len, 104);
    assert_eq!(
        h.source,
        Some(SocketAddr::new(Ipv6Addr::from(u128::MAX).into(), 65535))
    );

    let h = complete(b"PROXY UNKNOWN\r\n\x16\x03\x01");
    assert_eq!((h.header_len, h.source, h.destination), (15, None, None));
    // The longest line the specification allows: UNKNOWN followed by TCP6-sized addresses, 107 bytes.
    let worst_unknown = format!("PROXY UNKNOWN {MAX_V6} {MAX_V6} 65535 65535\r\n");
    assert_eq!(worst_unknown.len(), V1_MAX_LEN);
    assert_eq!(complete(worst_unknown.as_bytes()).source, None);
    let h = complete(b"PROXY TCP6 2001:db8::1 ::1 0 8080\r\n");
    assert_eq!(h.source, Some(sa("[2001:db8::1]:0")));
}

#[test]
fn malformed_v1_lines_are_refused_with_their_reason() {
    use ProxyHeaderError::*;
    let cases: &[(&[u8], ProxyHeaderError)] = &[
        (b"GET / HTTP/1.1\r\n", Missing),
        (b"PROXZ TCP4", Missing),
        (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Missing),
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", V1Protocol),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", V1Protocol),
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", V1Protocol),
        (b"PROXY UNKNOWNX\r\n", V1Protocol),
        (b"PROXY \r\n", V1Protocol),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", V1Fields),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", V1Fields),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", V1Fields),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", V1Fields),
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", V1Address),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", V1Address),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", V1Address),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", V1Address),
        (b"PROXY TCP6 ::1 ::g 1 2\r\n", V1Address),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n", V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 999999\r\n", V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", V1LineEnding),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx", V1LineEnding),
        (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", V1InvalidByte),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n", V1InvalidByte),
        (b"PROXY TCP6 [::1] ::1 1 2\r\n", V1InvalidByte),
        (b"PROXY UNKNOWN \xff\r\n", V1InvalidByte),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse(input),
            Err(*want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_prefixes_agree(input);
    }
    // No CRLF within 107 bytes, and a CRLF that would end the line at byte 108.
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 200]].concat();
    assert_eq!(parse(&long), Err(ProxyHeaderError::V1TooLong));
    assert_eq!(parse(&long[..106]), Ok(Parsed::Partial));
    let mut just_over = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 92]].concat();
    just_over.extend_from_slice(b"\r\n");
    assert_eq!(just_over.len(), V1_MAX_LEN + 1);
    assert_eq!(parse(&just_over), Err(ProxyHeaderError::V1TooLong));
    assert_prefixes_agree(&just_over);
}

fn v2_raw(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, fam]);
    out.extend_from_slice(&u16::try_from(body.len()).expect("len").to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn v2_headers_parse_with_their_tlvs_skipped() {
    // PROXY TCP over IPv4, 192.0.2.1:51000 -> 198.51.100.2:443, then a NOOP and an AUTHORITY TLV.
    let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2, 0xc7, 0x38, 0x01, 0xbb];
    body.extend_from_slice(&[0x04, 0x00, 0x02, 0, 0]);
    body.extend_from_slice(&[0x02, 0x00, 0x09]);
    body.extend_from_slice(b"a.example");
    let mut wire = v2_raw(0x21, 0x11, &body);
    let len = wire.len();
    wire.extend_from_slice(b"\x16\x03\x01rest");
    let h = complete(&wire);
    assert_eq!(h.header_len, len);
    assert_eq!(h.source, Some(sa("192.0.2.1:51000")));
    assert_eq!(h.destination, Some(sa("198.51.100.2:443")));

    let h = complete(&encode::v2(
        Some((sa("[2001:db8::5]:1234"), sa("[2001:db8::1]:443"))),
        &[(0x01, b"h2")],
    ));
    assert_eq!(h.source, Some(sa("[2001:db8::5]:1234")));

    // LOCAL (health checks from the proxy itself): the TCP peer stands; the block is discarded unread.
    let h = complete(&v2_raw(0x20, 0x00, &[]));
    assert_eq!((h.header_len, h.source), (16, None));
    assert_eq!(complete(&v2_raw(0x20, 0x11, &[1, 2, 3])).source, None);
    // UNSPEC and UNIX carry no client address.
    assert_eq!(complete(&v2_raw(0x21, 0x00, &[9; 7])).source, None);
    assert_eq!(complete(&v2_raw(0x21, 0x31, &[0; 216])).source, None);
}

#[test]
fn malformed_v2_headers_are_refused_with_their_reason() {
    use ProxyHeaderError::*;
    let inet = [192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 2];
    let mut bad_sig = v2_raw(0x21, 0x11, &inet);
    bad_sig[11] = b'X';
    let cases: Vec<(Vec<u8>, ProxyHeaderError)> = vec![
        (bad_sig, Missing),
        (b"\r\nGET".to_vec(), Missing),
        (v2_raw(0x11, 0x11, &inet), V2Version),
        (v2_raw(0x31, 0x11, &inet), V2Version),
        (v2_raw(0x22, 0x11, &inet), V2Command),
        (v2_raw(0x21, 0x41, &inet), V2Family),
        (v2_raw(0x21, 0x13, &inet), V2Family),
        (v2_raw(0x21, 0x12, &inet), V2Transport),
        (v2_raw(0x21, 0x10, &inet), V2Transport),
        (v2_raw(0x21, 0x11, &inet[..11]), V2Addresses),
        (v2_raw(0x21, 0x21, &[0; 35]), V2Addresses),
        (v2_raw(0x21, 0x31, &[0; 100]), V2Addresses),
        (
            v2_raw(0x21, 0x11, &[inet.as_slice(), &[1, 0]].concat()),
            V2Tlv,
        ),
        (
            v2_raw(0x21, 0x11, &[inet.as_slice(), &[1, 0, 3, 7, 7]].concat()),
            V2Tlv,
        ),
        (v2_raw(0x21, 0x11, &[0; V2_MAX_LEN - 15]), V2TooLong),
    ];
    for (input, want) in &cases {
        assert_eq!(parse(input), Err(*want), "{input:?}");
        assert_prefixes_agree(input);
    }
    // The bound is decided on the length field, before the body arrives.
    let mut huge = V2_SIGNATURE.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    assert_eq!(parse(&huge), Err(V2TooLong));
    assert_eq!(
        complete(&v2_raw(0x21, 0x11, &[0; V2_MAX_LEN - 16])).header_len,
        V2_MAX_LEN
    );
}

#[test]
fn headers_fed_byte_by_byte_are_partial_until_their_last_byte() {
    let headers = [
        encode::v1(Some((sa("192.0.2.1:5"), sa("192.0.2.2:80")))),
        encode::v1(Some((sa("[::1]:5"), sa("[2001:db8::2]:80")))),
        encode::v1(None),
        encode::v2(
            Some((sa("192.0.2.1:5"), sa("192.0.2.2:80"))),
            &[(4, &[0; 20])],
        ),
        encode::v2(None, &[]),
    ];
    for header in headers {
        for cut in 0..header.len() {
            assert_eq!(
                parse(&header[..cut]),
                Ok(Parsed::Partial),
                "{header:?} cut at {cut}"
            );
        }
        let mut with_more = header.clone();
        with_more.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(complete(&with_more).header_len, header.len());
    }
}

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
    ]
}

/// What a header says after the parser normalises mixed families to IPv6.
fn as_written(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    if src.is_ipv4() == dst.is_ipv4() {
        return (src, dst);
    }
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), a.port()),
        IpAddr::V6(_) => a,
    };
    (v6(src), v6(dst))
}

proptest! {
    #[test]
    fn encoded_headers_parse_back(
        src in any_addr(),
        dst in any_addr(),
        tlvs in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..4),
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let want = as_written(src, dst);
        let tlvs: Vec<(u8, &[u8])> = tlvs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        for header in [encode::v1(Some((src, dst))), encode::v2(Some((src, dst)), &tlvs)] {
            let mut wire = header.clone();
            wire.extend_from_slice(&tail);
            let h = complete(&wire);
            prop_assert_eq!(h.header_len, header.len());
            prop_assert_eq!((h.source, h.destination), (Some(want.0), Some(want.1)));
            for cut in 0..header.len() {
                prop_assert_eq!(parse(&wire[..cut]), Ok(Parsed::Partial));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_prefixes_agree(
        start in prop_oneof![Just(b"PROXY ".to_vec()), Just(V2_SIGNATURE.to_vec()), Just(Vec::new())],
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let bytes = [start, rest].concat();
        if let Ok(Parsed::Complete(h)) = parse(&bytes) {
            prop_assert!(h.header_len <= bytes.len());
        }
        assert_prefixes_agree(&bytes);
    }
}
