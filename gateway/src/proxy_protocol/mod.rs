//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) a load balancer in front of the
//! gateway sends before the client's first byte, sans-IO.
//!
//! Owns: recognising and checking the header ([`parse`]: fed the bytes read so far, `Partial` consumes nothing),
//! writing one ([`encode`], for tests, fuzz seeds and tools), and the one piece with I/O, reading it off a socket
//! under a deadline (`read`). Does not own: which listeners expect it or what the address is used for
//! (`crate::conn`).
//!
//! Hand-written rather than taken from the `ppp` crate: the gateway needs (a) strict v1 (exact tokens, single
//! spaces, canonical ports, CRLF) with a typed error per violation, (b) a decision on every prefix — an input that
//! fails fails on the byte that is wrong, so a prefix of it is either `Partial` or the same error (`ppp` reports
//! an incomplete v1 line and some malformed ones alike), and (c) a bound on v2 headers well below 64 KiB checked
//! before the body arrives. It is small, allocation-free and fuzzed (`gateway/fuzz`, target `proxy_protocol`).
//!
//! Policy: v1 lines are checked byte by byte as they arrive (only `PROXY `, letters, digits, `.`, `:` and single
//! spaces); `UNKNOWN` ignores what follows it. v2 needs version 2, command LOCAL or PROXY, a known family and
//! transport; with PROXY over INET/INET6 the transport must be STREAM (the listener is TCP); the address block must
//! fit the declared length, and the TLVs after it must fill it exactly (each skipped, never read past the header).
//! LOCAL, UNSPEC and UNIX headers carry no usable client address: the caller keeps the TCP peer.

pub mod encode;
pub(crate) mod read;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX_LEN: usize = 107;
/// Longest v2 header accepted (16-byte fixed part plus addresses and TLVs). The format allows 16 + 65535; real
/// senders (HAProxy, cloud load balancers) stay far below this, and a connection should not pin 64 KiB to say who
/// it is.
pub const V2_MAX_LEN: usize = 4096;
/// The v2 signature: the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

const V1_PREFIX: &[u8] = b"PROXY ";
/// Fixed part of a v2 header: signature, version/command, family/transport, length.
const V2_FIXED_LEN: usize = 16;
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;

/// What the bytes read so far come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole header yet and nothing wrong so far: read more.
    Partial,
    /// A whole header; the bytes after `header_len` belong to the client's own protocol.
    Complete(ProxyHeader),
}

/// A complete, valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Bytes the header takes at the start of the input (at most [`V1_MAX_LEN`] or [`V2_MAX_LEN`]).
    pub header_len: usize,
    /// The client as the proxy saw it; `None` for LOCAL, UNKNOWN, UNSPEC or UNIX (use the TCP peer).
    pub source: Option<SocketAddr>,
    /// The address the client connected to at the proxy; `None` when `source` is.
    pub destination: Option<SocketAddr>,
}

/// Why the bytes are not a valid PROXY protocol header. Every error is final: more bytes cannot fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// The connection does not start with `PROXY ` or the v2 signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// v1: no CRLF within 107 bytes.
    #[error("PROXY v1 line longer than 107 bytes")]
    V1TooLong,
    /// v1: a byte no v1 line may contain (control characters, other punctuation).
    #[error("PROXY v1 line contains an invalid byte")]
    V1InvalidByte,
    /// v1: a CR not followed by LF, or an LF without CR.
    #[error("PROXY v1 line does not end with CRLF")]
    V1LineEnding,
    /// v1: the protocol is not `TCP4`, `TCP6` or `UNKNOWN`.
    #[error("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN")]
    V1Protocol,
    /// v1: not exactly four fields after the protocol, separated by single spaces.
    #[error("PROXY v1 line does not have exactly four address fields")]
    V1Fields,
    /// v1: an address that is not a valid address of the protocol's family.
    #[error("PROXY v1 address is invalid for its protocol")]
    V1Address,
    /// v1: a port that is not a decimal from 0 to 65535 without leading zeros.
    #[error("PROXY v1 port is invalid")]
    V1Port,
    /// v2: the version nibble is not 2.
    #[error("PROXY v2 version is not 2")]
    V2Version,
    /// v2: the command is neither LOCAL nor PROXY.
    #[error("PROXY v2 command is neither LOCAL nor PROXY")]
    V2Command,
    /// v2: an unknown address family or transport.
    #[error("PROXY v2 address family or transport is unknown")]
    V2Family,
    /// v2: PROXY over INET/INET6 with a transport other than STREAM.
    #[error("PROXY v2 transport is not TCP")]
    V2Transport,
    /// v2: the header is longer than [`V2_MAX_LEN`].
    #[error("PROXY v2 header longer than 4096 bytes")]
    V2TooLong,
    /// v2: the declared length is shorter than the family's address block.
    #[error("PROXY v2 length too short for its addresses")]
    V2Addresses,
    /// v2: a TLV runs past the header's end.
    #[error("PROXY v2 TLV runs past the header")]
    V2Tlv,
}

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    match buf.first() {
        None => Ok(Parsed::Partial),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyHeaderError::Missing),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let seen = buf.len().min(V1_PREFIX.len());
    if buf[..seen] != V1_PREFIX[..seen] {
        return Err(ProxyHeaderError::Missing);
    }
    // Checked in byte order, so the first wrong byte decides the error whatever follows it.
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let mut line_end = None;
    for (i, &b) in window.iter().enumerate().skip(V1_PREFIX.len()) {
        match b {
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => {
                    line_end = Some(i);
                    break;
                }
                Some(_) => return Err(ProxyHeaderError::V1LineEnding),
                None if i + 1 == V1_MAX_LEN => return Err(ProxyHeaderError::V1TooLong),
                None => return Ok(Parsed::Partial),
            },
            b'\n' => return Err(ProxyHeaderError::V1LineEnding),
            b' ' | b'.' | b':' => {}
            b if b.is_ascii_alphanumeric() => {}
            _ => return Err(ProxyHeaderError::V1InvalidByte),
        }
    }
    let Some(end) = line_end else {
        return if window.len() == V1_MAX_LEN {
            Err(ProxyHeaderError::V1TooLong)
        } else {
            Ok(Parsed::Partial)
        };
    };
    let header_len = end + 2;
    let line = &buf[V1_PREFIX.len()..end];
    let mut fields = line.split(|&b| b == b' ');
    let proto = fields.next().unwrap_or_default();
    let v6 = match proto {
        b"UNKNOWN" => {
            return Ok(Parsed::Complete(ProxyHeader {
                header_len,
                source: None,
                destination: None,
            }));
        }
        b"TCP4" => false,
        b"TCP6" => true,
        _ => return Err(ProxyHeaderError::V1Protocol),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyHeaderError::V1Fields);
    };
    let address = |text: &[u8]| -> Result<IpAddr, ProxyHeaderError> {
        let text = std::str::from_utf8(text).map_err(|_| ProxyHeaderError::V1Address)?;
        let ip = if v6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| ProxyHeaderError::V1Address)
    };
    let (src, dst) = (address(src)?, address(dst)?);
    let (sport, dport) = (v1_port(sport)?, v1_port(dport)?);
    Ok(Parsed::Complete(ProxyHeader {
        header_len,
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
    }))
}

/// `0` or a decimal without leading zeros, at most 65535.
fn v1_port(text: &[u8]) -> Result<u16, ProxyHeaderError> {
    let canonical = matches!(text, [b'0'] | [b'1'..=b'9', ..])
        && text.len() <= 5
        && text.iter().all(u8::is_ascii_digit);
    if !canonical {
        return Err(ProxyHeaderError::V1Port);
    }
    let value = text.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    u16::try_from(value).map_err(|_| ProxyHeaderError::V1Port)
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let seen = buf.len().min(V2_SIGNATURE.len());
    if buf[..seen] != V2_SIGNATURE[..seen] {
        return Err(ProxyHeaderError::Missing);
    }
    let Some(&version_command) = buf.get(12) else {
        return Ok(Parsed::Partial);
    };
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::V2Version);
    }
    let proxy = match version_command & 0x0f {
        0 => false,
        1 => true,
        _ => return Err(ProxyHeaderError::V2Command),
    };
    let Some(&family_transport) = buf.get(13) else {
        return Ok(Parsed::Partial);
    };
    let (family, transport) = (family_transport >> 4, family_transport & 0x0f);
    if family > 3 || transport > 2 {
        return Err(ProxyHeaderError::V2Family);
    }
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
        return Ok(Parsed::Partial);
    };
    let body_len = usize::from(u16::from_be_bytes([hi, lo]));
    let header_len = V2_FIXED_LEN + body_len;
    if header_len > V2_MAX_LEN {
        return Err(ProxyHeaderError::V2TooLong);
    }
    let Some(body) = buf.get(V2_FIXED_LEN..header_len) else {
        return Ok(Parsed::Partial);
    };
    let addresses_len = match family {
        1 => V2_INET_LEN,
        2 => V2_INET6_LEN,
        3 => V2_UNIX_LEN,
        _ => 0,
    };
    // LOCAL: the receiver uses the real endpoints and discards the block (the spec), TLVs included.
    if !proxy {
        return Ok(Parsed::Complete(ProxyHeader {
            header_len,
            source: None,
            destination: None,
        }));
    }
    let (addresses, tlvs) = body
        .split_at_checked(addresses_len)
        .ok_or(ProxyHeaderError::V2Addresses)?;
    // UNSPEC's block is opaque (the receiver ignores it); the other families are followed by TLVs.
    if family != 0 {
        skip_tlvs(tlvs)?;
    }
    let (source, destination) = match (family, addresses) {
        (1 | 2, _) if transport != 1 => return Err(ProxyHeaderError::V2Transport),
        (1, &[a, b, c, d, e, f, g, h, sp0, sp1, dp0, dp1]) => (
            SocketAddr::new(
                Ipv4Addr::new(a, b, c, d).into(),
                u16::from_be_bytes([sp0, sp1]),
            ),
            SocketAddr::new(
                Ipv4Addr::new(e, f, g, h).into(),
                u16::from_be_bytes([dp0, dp1]),
            ),
        ),
        (2, a) => {
            let ip = |at: usize| -> IpAddr {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                Ipv6Addr::from(octets).into()
            };
            (
                SocketAddr::new(ip(0), u16::from_be_bytes([a[32], a[33]])),
                SocketAddr::new(ip(16), u16::from_be_bytes([a[34], a[35]])),
            )
        }
        // UNSPEC and UNIX: nothing the gateway can use as a client address.
        _ => {
            return Ok(Parsed::Complete(ProxyHeader {
                header_len,
                source: None,
                destination: None,
            }));
        }
    };
    Ok(Parsed::Complete(ProxyHeader {
        header_len,
        source: Some(source),
        destination: Some(destination),
    }))
}

/// Walks the TLVs (type, 16-bit length, value): each must end within the header.
fn skip_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyHeaderError> {
    while !tlvs.is_empty() {
        let [_kind, hi, lo, rest @ ..] = tlvs else {
            return Err(ProxyHeaderError::V2Tlv);
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        tlvs = rest.get(len..).ok_or(ProxyHeaderError::V2Tlv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
