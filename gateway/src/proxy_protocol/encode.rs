//! Writing PROXY protocol headers, as a load balancer would: for the gateway's tests, the fuzz seeds and tools that
//! stand in for a proxy. Mixed families are written as IPv6 (the IPv4 side mapped), since a header has one family.

use std::net::{IpAddr, SocketAddr};

use super::V2_SIGNATURE;

/// A v1 line: `PROXY TCP4|TCP6 src dst sport dport\r\n`, or `PROXY UNKNOWN\r\n` without addresses.
pub fn v1(addresses: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let Some((src, dst)) = addresses else {
        return b"PROXY UNKNOWN\r\n".to_vec();
    };
    let line = match same_family(src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            format!("PROXY TCP4 {s} {d} {} {}\r\n", src.port(), dst.port())
        }
        (s, d) => format!("PROXY TCP6 {s} {d} {} {}\r\n", src.port(), dst.port()),
    };
    line.into_bytes()
}

/// A v2 header. `addresses`: `Some` is a PROXY command over TCP (INET or INET6), `None` a LOCAL command with an
/// UNSPEC family. `tlvs` (type, value) follow the addresses.
pub fn v2(addresses: Option<(SocketAddr, SocketAddr)>, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    let (command, family) = match addresses {
        None => (0x20, 0x00),
        Some((src, dst)) => match same_family(src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                body.extend_from_slice(&s.octets());
                body.extend_from_slice(&d.octets());
                body.extend_from_slice(&src.port().to_be_bytes());
                body.extend_from_slice(&dst.port().to_be_bytes());
                (0x21, 0x11)
            }
            (s, d) => {
                body.extend_from_slice(&v6_octets(s));
                body.extend_from_slice(&v6_octets(d));
                body.extend_from_slice(&src.port().to_be_bytes());
                body.extend_from_slice(&dst.port().to_be_bytes());
                (0x21, 0x21)
            }
        },
    };
    for (kind, value) in tlvs {
        body.push(*kind);
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&value[..usize::from(len)]);
    }
    let mut out = V2_SIGNATURE.to_vec();
    out.push(command);
    out.push(family);
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body[..usize::from(len)]);
    out
}

fn same_family(src: SocketAddr, dst: SocketAddr) -> (IpAddr, IpAddr) {
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V6(d)) => (IpAddr::V6(s.to_ipv6_mapped()), IpAddr::V6(d)),
        (IpAddr::V6(s), IpAddr::V4(d)) => (IpAddr::V6(s), IpAddr::V6(d.to_ipv6_mapped())),
        pair => pair,
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}
