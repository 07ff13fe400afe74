//! HTTP/1.1 message body framing, sans-IO (RFC 9112 §6 and §7.1).
//!
//! Owns: deciding how a request or response body is delimited ([`request_body_kind`], [`response_body_kind`]),
//! the request-smuggling defenses that go with it (conflicting or malformed `Content-Length`, `Transfer-Encoding`
//! other than exactly `chunked`, both at once), and a streaming chunked decoder ([`ChunkedDecoder`]) that validates
//! chunk framing byte by byte and re-encodes it (or strips it) without ever holding a whole body, and the overall
//! deadline of a request body ([`BodyDeadline`]).
//! Does not own: sockets or buffers (the proxy feeds slices in), heads (see `head`).
//!
//! Policy: the gateway is strict where parsers are known to disagree. Only a single `chunked` transfer coding is
//! accepted; chunk extensions are dropped (bounded to [`MAX_CHUNK_EXT`] bytes per chunk); trailer fields are
//! validated, bounded to [`MAX_TRAILER_BYTES`], and discarded (RFC 9110 §6.5.1 allows it).

use std::time::{Duration, Instant};

use crate::http::head::{Headers, RequestHead, ResponseHead};

/// Most bytes of chunk extensions accepted on one chunk-size line.
pub const MAX_CHUNK_EXT: usize = 1024;
/// Most bytes of the trailer section (all trailer lines together).
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    None,
    /// Exactly this many bytes (`Content-Length`, possibly 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Response only: the body runs until the server closes the connection.
    CloseDelimited,
}

/// A framing violation. In a request each maps to 400; in an upstream response the proxy answers 502.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Both `Content-Length` and `Transfer-Encoding` (the classic CL.TE / TE.CL smuggling vector).
    #[error("both Content-Length and Transfer-Encoding present")]
    LengthAndEncoding,
    /// Several `Content-Length` values that differ.
    #[error("conflicting Content-Length values")]
    ConflictingLength,
    /// A `Content-Length` that is not a plain decimal number fitting 64 bits.
    #[error("invalid Content-Length")]
    InvalidLength,
    /// A transfer coding other than a single, final `chunked`.
    #[error("unsupported Transfer-Encoding")]
    UnsupportedEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 message.
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    EncodingInHttp10,
    /// A chunk-size line that is not hex digits (or is empty).
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// A chunk size above 2^64 - 1.
    #[error("chunk size overflows")]
    ChunkSizeOverflow,
    /// Chunk extensions longer than [`MAX_CHUNK_EXT`] or containing control characters.
    #[error("invalid or oversized chunk extension")]
    InvalidChunkExtension,
    /// A missing CR LF after chunk data, or a line ending in a bare LF or bare CR.
    #[error("invalid line ending in chunked body")]
    InvalidLineEnding,
    /// A malformed trailer field.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// A trailer section longer than [`MAX_TRAILER_BYTES`].
    #[error("trailer section too large")]
    TrailersTooLarge,
}

impl BodyError {
    /// The status a client gets when its request body is malformed (always 400).
    pub fn status(&self) -> u16 {
        400
    }
}

/// How the body of `head` is delimited (RFC 9112 §6.3), rejecting ambiguous framing.
pub fn request_body_kind(head: &RequestHead) -> Result<BodyKind, BodyError> {
    match framing(head, head.minor_version)? {
        Framing::Chunked => Ok(BodyKind::Chunked),
        Framing::Length(n) => Ok(BodyKind::Length(n)),
        Framing::Neither => Ok(BodyKind::None),
    }
}

/// How the body of a response to a `request_method` request is delimited (RFC 9112 §6.3).
pub fn response_body_kind(
    request_method: &str,
    head: &ResponseHead,
) -> Result<BodyKind, BodyError> {
    if request_method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&head.status)
        || matches!(head.status, 204 | 304)
    {
        return Ok(BodyKind::None);
    }
    match framing(head, head.minor_version)? {
        Framing::Chunked => Ok(BodyKind::Chunked),
        Framing::Length(n) => Ok(BodyKind::Length(n)),
        Framing::Neither => Ok(BodyKind::CloseDelimited),
    }
}

/// Where a body stands while it streams, in either direction: fed each slice as it arrives, it says how many bytes
/// belong to the body and when the body has ended. One type for request bodies, response bodies and refusals.
#[derive(Debug, Clone)]
pub enum BodyProgress {
    /// Nothing (more) belongs to the body.
    Done,
    /// This many bytes are still to come.
    Length(u64),
    /// A chunked body; the decoder knows where it ends.
    Chunked(ChunkedDecoder),
    /// Everything until the sender closes the connection.
    UntilClose,
}

impl BodyProgress {
    /// The progress of a body framed as `kind`. For a chunked body, `reencode` chooses whether [`BodyProgress::feed`]
    /// re-encodes it (for a chunked hop) or strips the framing (for an HTTP/1.0 recipient).
    pub fn new(kind: BodyKind, reencode: bool) -> Self {
        match kind {
            BodyKind::None | BodyKind::Length(0) => BodyProgress::Done,
            BodyKind::Length(n) => BodyProgress::Length(n),
            BodyKind::Chunked => BodyProgress::Chunked(ChunkedDecoder::new(reencode)),
            BodyKind::CloseDelimited => BodyProgress::UntilClose,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        matches!(self, BodyProgress::Done)
    }

    /// Feeds `input`, appending the body's bytes as they are to be forwarded to `out` (a chunked body re-encoded or
    /// stripped, any other as is); returns how many input bytes belong to the body. Bytes past the end are left.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, BodyError> {
        match self {
            BodyProgress::Chunked(decoder) => {
                let progress = decoder.feed(input, out)?;
                if progress.done {
                    *self = BodyProgress::Done;
                }
                Ok(progress.consumed)
            }
            _ => {
                let n = self.advance_verbatim(input.len()).unwrap_or(0);
                out.extend_from_slice(&input[..n]);
                Ok(n)
            }
        }
    }

    /// For a body forwarded verbatim out of the read buffer: how many of `available` bytes belong to it, counted
    /// without copying. `None` for a chunked body, whose framing only [`BodyProgress::feed`] can check.
    pub fn advance_verbatim(&mut self, available: usize) -> Option<usize> {
        match self {
            BodyProgress::Done => Some(0),
            BodyProgress::Length(remaining) => {
                let take = usize::try_from(*remaining).map_or(available, |r| r.min(available));
                *remaining -= take as u64;
                if *remaining == 0 {
                    *self = BodyProgress::Done;
                }
                Some(take)
            }
            BodyProgress::UntilClose => Some(available),
            BodyProgress::Chunked(_) => None,
        }
    }
}

enum Framing {
    Chunked,
    Length(u64),
    Neither,
}

fn framing(head: &impl Headers, minor_version: u8) -> Result<Framing, BodyError> {
    let has_te = head.headers_named("transfer-encoding").next().is_some();
    let length = content_length(head)?;
    match (has_te, length) {
        (true, Some(_)) => Err(BodyError::LengthAndEncoding),
        (true, None) if minor_version == 0 => Err(BodyError::EncodingInHttp10),
        (true, None) => {
            // All Transfer-Encoding values together must be exactly one token: `chunked`.
            let mut codings = head
                .headers_named("transfer-encoding")
                .flat_map(|v| v.split(|&b| b == b','))
                .map(<[u8]>::trim_ascii);
            match (codings.next(), codings.next()) {
                (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
                _ => Err(BodyError::UnsupportedEncoding),
            }
        }
        (false, Some(n)) => Ok(Framing::Length(n)),
        (false, None) => Ok(Framing::Neither),
    }
}

/// The message's Content-Length: every value in every `Content-Length` header (comma lists included) must be the
/// same plain decimal number (RFC 9110 §8.6).
fn content_length(head: &impl Headers) -> Result<Option<u64>, BodyError> {
    let mut found: Option<u64> = None;
    for value in head.headers_named("content-length") {
        for part in value.split(|&b| b == b',') {
            let n = parse_decimal(part.trim_ascii()).ok_or(BodyError::InvalidLength)?;
            match found {
                Some(prev) if prev != n => return Err(BodyError::ConflictingLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// What the decoder expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Hex digits of a chunk size; `any` once at least one digit was read.
    Size { size: u64, any: bool },
    /// Whitespace after the size, allowed only before a `;` extension.
    SizeWhitespace { size: u64 },
    /// Inside chunk extensions, `len` bytes so far.
    Extension { size: u64, len: usize },
    /// CR seen at the end of the size line; LF must follow.
    SizeLf { size: u64 },
    /// Chunk data, `remaining` bytes to go.
    Data { remaining: u64 },
    /// CR after chunk data.
    DataCr,
    /// LF after chunk data.
    DataLf,
    /// Start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// CR seen at the end of a trailer line.
    TrailerLf,
    /// CR of the final empty line seen; LF must follow.
    FinalLf,
    /// The body is complete.
    Done,
}

/// Result of feeding bytes to a [`ChunkedDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes consumed (all of them unless `done`).
    pub consumed: usize,
    /// The body ended; input beyond `consumed` belongs to the next message.
    pub done: bool,
}

/// Streaming decoder and validator of a chunked body.
///
/// Fed arbitrary slices of the body ([`ChunkedDecoder::feed`]), it appends to `out` either a re-encoded chunked
/// body (one chunk per run of data in the input, extensions dropped, trailers discarded, ending `0\r\n\r\n`) or,
/// in strip mode, the raw data only. It never looks ahead: every input byte is consumed or rejected on the spot.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    reencode: bool,
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder that re-encodes (`reencode = true`, for a chunked hop) or strips the chunk framing (for an
    /// HTTP/1.0 client, which then gets a close-delimited body).
    pub fn new(reencode: bool) -> Self {
        Self {
            state: ChunkState::Size {
                size: 0,
                any: false,
            },
            reencode,
            trailer_bytes: 0,
        }
    }

    /// Whether the terminating chunk and trailer section have been seen.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes `input`, appending what to forward to `out`. On error the body is unusable and the connection
    /// must be closed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, BodyError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                ChunkState::Size { size, any } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if size > u64::MAX >> 4 {
                            return Err(BodyError::ChunkSizeOverflow);
                        }
                        ChunkState::Size {
                            size: (size << 4) | u64::from(hex_value(b)),
                            any: true,
                        }
                    }
                    _ if !any => return Err(BodyError::InvalidChunkSize),
                    b';' => ChunkState::Extension { size, len: 0 },
                    b' ' | b'\t' => ChunkState::SizeWhitespace { size },
                    b'\r' => ChunkState::SizeLf { size },
                    b'\n' => return Err(BodyError::InvalidLineEnding),
                    _ => return Err(BodyError::InvalidChunkSize),
                },
                ChunkState::SizeWhitespace { size } => match b {
                    b' ' | b'\t' => ChunkState::SizeWhitespace { size },
                    b';' => ChunkState::Extension { size, len: 0 },
                    _ => return Err(BodyError::InvalidChunkSize),
                },
                ChunkState::Extension { size, len } => match b {
                    b'\r' => ChunkState::SizeLf { size },
                    b'\n' => return Err(BodyError::InvalidLineEnding),
                    _ if len >= MAX_CHUNK_EXT => return Err(BodyError::InvalidChunkExtension),
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => {
                        ChunkState::Extension { size, len: len + 1 }
                    }
                    _ => return Err(BodyError::InvalidChunkExtension),
                },
                ChunkState::SizeLf { size } => match b {
                    b'\n' if size == 0 => {
                        if self.reencode {
                            out.extend_from_slice(b"0\r\n");
                        }
                        ChunkState::TrailerStart
                    }
                    b'\n' => ChunkState::Data { remaining: size },
                    _ => return Err(BodyError::InvalidLineEnding),
                },
                ChunkState::Data { remaining } => {
                    let avail = input.len() - i;
                    let take = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                    let data = &input[i..i + take];
                    if self.reencode {
                        push_hex(out, take);
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(data);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.extend_from_slice(data);
                    }
                    i += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { remaining }
                    };
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => ChunkState::DataLf,
                    _ => return Err(BodyError::InvalidLineEnding),
                },
                ChunkState::DataLf => match b {
                    b'\n' => ChunkState::Size {
                        size: 0,
                        any: false,
                    },
                    _ => return Err(BodyError::InvalidLineEnding),
                },
                ChunkState::TrailerStart => match b {
                    b'\r' => ChunkState::FinalLf,
                    _ if is_tchar(b) => self.trailer_byte(ChunkState::TrailerName)?,
                    b'\n' => return Err(BodyError::InvalidLineEnding),
                    _ => return Err(BodyError::InvalidTrailer),
                },
                ChunkState::TrailerName => match b {
                    b':' => self.trailer_byte(ChunkState::TrailerValue)?,
                    _ if is_tchar(b) => self.trailer_byte(ChunkState::TrailerName)?,
                    _ => return Err(BodyError::InvalidTrailer),
                },
                ChunkState::TrailerValue => match b {
                    b'\r' => self.trailer_byte(ChunkState::TrailerLf)?,
                    b'\n' => return Err(BodyError::InvalidLineEnding),
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => {
                        self.trailer_byte(ChunkState::TrailerValue)?
                    }
                    _ => return Err(BodyError::InvalidTrailer),
                },
                ChunkState::TrailerLf => match b {
                    b'\n' => self.trailer_byte(ChunkState::TrailerStart)?,
                    _ => return Err(BodyError::InvalidLineEnding),
                },
                ChunkState::FinalLf => match b {
                    b'\n' => {
                        if self.reencode {
                            out.extend_from_slice(b"\r\n");
                        }
                        self.state = ChunkState::Done;
                        return Ok(Progress {
                            consumed: i + 1,
                            done: true,
                        });
                    }
                    _ => return Err(BodyError::InvalidLineEnding),
                },
                ChunkState::Done => {
                    return Ok(Progress {
                        consumed: i,
                        done: true,
                    });
                }
            };
            i += 1;
        }
        Ok(Progress {
            consumed: i,
            done: self.state == ChunkState::Done,
        })
    }

    fn trailer_byte(&mut self, next: ChunkState) -> Result<ChunkState, BodyError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(BodyError::TrailersTooLarge);
        }
        Ok(next)
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

fn push_hex(out: &mut Vec<u8>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut len = 0;
    let mut n = n;
    loop {
        digits[len] = HEX[n & 0xf];
        len += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[..len].iter().rev());
}

/// RFC 9110 token characters (header field names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The overall deadline of a request body, as Apache's `mod_reqtimeout` sets it: `timeout` after the body started,
/// plus one second for every `min_rate` bytes received, so a large upload at a fair pace never times out and a body
/// trickled a byte at a time does (it would otherwise hold a connection and an upstream request for as long as the
/// client likes, each byte resetting an idle timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDeadline {
    start: Instant,
    timeout: Duration,
    min_rate: u64,
}

impl BodyDeadline {
    /// A deadline for a body starting at `start`; `min_rate` 0 gives no extension per byte.
    pub fn new(start: Instant, timeout: Duration, min_rate: u64) -> Self {
        Self {
            start,
            timeout,
            min_rate,
        }
    }

    /// The deadline once `received` body bytes have arrived.
    pub fn at(&self, received: u64) -> Instant {
        let extension = match self.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_millis(received.saturating_mul(1000) / rate),
        };
        // A year is forever for one request body, and cannot overflow an `Instant`.
        const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);
        self.start + self.timeout.saturating_add(extension).min(FOREVER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::testing;

    fn req(headers: &str) -> Result<BodyKind, BodyError> {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n");
        request_body_kind(&testing::request(raw.as_bytes()))
    }

    fn resp(method: &str, status_line: &str, headers: &str) -> Result<BodyKind, BodyError> {
        let raw = format!("{status_line}\r\n{headers}\r\n");
        response_body_kind(method, &testing::response(raw.as_bytes()))
    }

    #[test]
    fn request_kinds() {
        assert_eq!(req(""), Ok(BodyKind::None));
        assert_eq!(req("Content-Length: 0\r\n"), Ok(BodyKind::Length(0)));
        assert_eq!(req("Content-Length: 12\r\n"), Ok(BodyKind::Length(12)));
        assert_eq!(
            req("Content-Length: 12\r\nContent-Length: 12\r\n"),
            Ok(BodyKind::Length(12))
        );
        assert_eq!(req("Content-Length: 12, 12\r\n"), Ok(BodyKind::Length(12)));
        assert_eq!(req("Transfer-Encoding: chunked\r\n"), Ok(BodyKind::Chunked));
        assert_eq!(req("Transfer-Encoding: Chunked\r\n"), Ok(BodyKind::Chunked));
    }

    #[test]
    fn smuggling_vectors_are_rejected() {
        use BodyError::*;
        assert_eq!(
            req("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            Err(LengthAndEncoding)
        );
        assert_eq!(
            req("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"),
            Err(LengthAndEncoding)
        );
        assert_eq!(
            req("Content-Length: 5\r\nContent-Length: 6\r\n"),
            Err(ConflictingLength)
        );
        assert_eq!(req("Content-Length: 5, 6\r\n"), Err(ConflictingLength));
        assert_eq!(req("Content-Length: +5\r\n"), Err(InvalidLength));
        assert_eq!(req("Content-Length: -5\r\n"), Err(InvalidLength));
        assert_eq!(req("Content-Length: 0x5\r\n"), Err(InvalidLength));
        assert_eq!(req("Content-Length: 5 5\r\n"), Err(InvalidLength));
        assert_eq!(req("Content-Length: \r\n"), Err(InvalidLength));
        assert_eq!(
            req("Content-Length: 99999999999999999999\r\n"),
            Err(InvalidLength)
        );
        assert_eq!(
            req("Transfer-Encoding: chunked, identity\r\n"),
            Err(UnsupportedEncoding)
        );
        assert_eq!(
            req("Transfer-Encoding: gzip, chunked\r\n"),
            Err(UnsupportedEncoding)
        );
        assert_eq!(
            req("Transfer-Encoding: xchunked\r\n"),
            Err(UnsupportedEncoding)
        );
        assert_eq!(
            req("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Err(UnsupportedEncoding)
        );
        assert_eq!(
            req("Transfer-Encoding: identity\r\n"),
            Err(UnsupportedEncoding)
        );
        assert_eq!(req("Transfer-Encoding: \r\n"), Err(UnsupportedEncoding));
        let raw = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = testing::request(raw);
        assert_eq!(request_body_kind(&head), Err(EncodingInHttp10));
        assert_eq!(BodyError::LengthAndEncoding.status(), 400);
    }

    #[test]
    fn response_kinds() {
        assert_eq!(
            resp("GET", "HTTP/1.1 200 OK", "Content-Length: 3\r\n"),
            Ok(BodyKind::Length(3))
        );
        assert_eq!(
            resp("HEAD", "HTTP/1.1 200 OK", "Content-Length: 3\r\n"),
            Ok(BodyKind::None)
        );
        assert_eq!(
            resp("GET", "HTTP/1.1 204 No Content", ""),
            Ok(BodyKind::None)
        );
        assert_eq!(
            resp("GET", "HTTP/1.1 304 Not Modified", "Content-Length: 3\r\n"),
            Ok(BodyKind::None)
        );
        assert_eq!(
            resp("GET", "HTTP/1.1 103 Early Hints", ""),
            Ok(BodyKind::None)
        );
        assert_eq!(
            resp("GET", "HTTP/1.1 200 OK", ""),
            Ok(BodyKind::CloseDelimited)
        );
        assert_eq!(
            resp("GET", "HTTP/1.1 200 OK", "Transfer-Encoding: chunked\r\n"),
            Ok(BodyKind::Chunked)
        );
        assert_eq!(
            resp(
                "GET",
                "HTTP/1.1 200 OK",
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"
            ),
            Err(BodyError::LengthAndEncoding)
        );
    }

    /// Feeds `input` in pieces of `step` bytes; returns (output, consumed total, done).
    fn decode(
        input: &[u8],
        step: usize,
        reencode: bool,
    ) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut d = ChunkedDecoder::new(reencode);
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(step) {
            let p = d.feed(piece, &mut out)?;
            consumed += p.consumed;
            if p.done {
                assert!(d.is_done());
                return Ok((out, consumed, true));
            }
            assert_eq!(p.consumed, piece.len());
        }
        Ok((out, consumed, false))
    }

    fn strip(input: &[u8], step: usize) -> Result<Vec<u8>, BodyError> {
        decode(input, step, false).map(|(out, _, _)| out)
    }

    /// Decodes a re-encoded body again: it must be valid chunked with the same data.
    fn roundtrip_data(reencoded: &[u8]) -> Vec<u8> {
        let (out, n, done) = decode(reencoded, reencoded.len().max(1), false).unwrap();
        assert!(done);
        assert_eq!(n, reencoded.len());
        out
    }

    #[test]
    fn decodes_chunks_in_any_split() {
        let body =
            b"5\r\nhello\r\n7;ext=1;q=\"x\"\r\n, world\r\n00A\r\n0123456789\r\n0\r\n\r\nNEXT";
        for step in 1..=body.len() {
            let (out, consumed, done) = decode(body, step, true).unwrap();
            assert!(done, "step {step}");
            assert_eq!(
                consumed,
                body.len() - 4,
                "step {step}: the next message is not consumed"
            );
            assert_eq!(roundtrip_data(&out), b"hello, world0123456789");
            assert_eq!(strip(body, step).unwrap(), b"hello, world0123456789");
        }
        let (out, _, _) = decode(body, body.len(), true).unwrap();
        assert_eq!(
            out,
            b"5\r\nhello\r\n7\r\n, world\r\na\r\n0123456789\r\n0\r\n\r\n"
        );
    }

    #[test]
    fn trailers_are_validated_and_dropped() {
        let body = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B:\r\n\r\n";
        for step in 1..=body.len() {
            let (out, consumed, done) = decode(body, step, true).unwrap();
            assert!(done);
            assert_eq!(consumed, body.len());
            assert_eq!(roundtrip_data(&out), b"abc");
            assert!(out.ends_with(b"\r\n0\r\n\r\n"), "trailers dropped");
        }
        assert_eq!(
            decode(body, body.len(), true).unwrap().0,
            b"3\r\nabc\r\n0\r\n\r\n"
        );
        assert_eq!(
            strip(b"0\r\nbad name: x\r\n\r\n", 64),
            Err(BodyError::InvalidTrailer)
        );
        assert_eq!(
            strip(b"0\r\nX: a\nY: b\r\n\r\n", 64),
            Err(BodyError::InvalidLineEnding)
        );
        let mut big = b"0\r\n".to_vec();
        for _ in 0..1000 {
            big.extend_from_slice(b"X-Long: 0123456789\r\n");
        }
        big.extend_from_slice(b"\r\n");
        assert_eq!(strip(&big, 100), Err(BodyError::TrailersTooLarge));
    }

    #[test]
    fn bad_chunk_sizes_are_rejected() {
        use BodyError::*;
        assert_eq!(strip(b"g\r\n", 8), Err(InvalidChunkSize));
        assert_eq!(strip(b"\r\n", 8), Err(InvalidChunkSize));
        assert_eq!(strip(b"-1\r\n", 8), Err(InvalidChunkSize));
        assert_eq!(strip(b"0x5\r\n", 8), Err(InvalidChunkSize));
        assert_eq!(
            strip(b"5 \r\nhello\r\n", 8),
            Err(InvalidChunkSize),
            "whitespace only before an extension"
        );
        assert_eq!(
            strip(b"5 ;a\r\nhello\r\n0\r\n\r\n", 8),
            Ok(b"hello".to_vec())
        );
        assert_eq!(strip(b"10000000000000000\r\n", 4), Err(ChunkSizeOverflow));
        assert_eq!(
            strip(b"ffffffffffffffff\r\n", 4).map(|v| v.len()),
            Ok(0),
            "2^64-1 is representable"
        );
        assert_eq!(
            strip(b"00000000000000000000003\r\nabc\r\n0\r\n\r\n", 5),
            Ok(b"abc".to_vec())
        );
    }

    #[test]
    fn bare_lf_and_missing_crlf_are_rejected() {
        use BodyError::*;
        assert_eq!(strip(b"5\nhello\r\n", 64), Err(InvalidLineEnding));
        assert_eq!(strip(b"5\r\nhello\n0\r\n\r\n", 64), Err(InvalidLineEnding));
        assert_eq!(strip(b"5\r\nhelloX\r\n", 64), Err(InvalidLineEnding));
        assert_eq!(strip(b"5\r\nhello\r\n0\r\n\n", 64), Err(InvalidLineEnding));
        assert_eq!(strip(b"5;a\nb\r\n", 64), Err(InvalidLineEnding));
        assert_eq!(strip(b"5\rX", 64), Err(InvalidLineEnding));
    }

    #[test]
    fn chunk_extensions_are_bounded() {
        let mut body = b"1;".to_vec();
        body.resize(2 + MAX_CHUNK_EXT, b'a');
        body.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(strip(&body, 100), Ok(b"x".to_vec()));
        let mut body = b"1;".to_vec();
        body.resize(3 + MAX_CHUNK_EXT, b'a');
        body.extend_from_slice(b"\r\nx\r\n");
        assert_eq!(strip(&body, 100), Err(BodyError::InvalidChunkExtension));
        assert_eq!(
            strip(b"1;a\x00\r\nx\r\n", 100),
            Err(BodyError::InvalidChunkExtension)
        );
    }

    #[test]
    fn incomplete_body_is_not_done() {
        let (out, consumed, done) = decode(b"5\r\nhel", 64, false).unwrap();
        assert!(!done);
        assert_eq!(consumed, 6);
        assert_eq!(out, b"hel");
    }

    #[test]
    fn body_progress_counts_every_framing() {
        let mut out = Vec::new();
        let mut p = BodyProgress::new(BodyKind::Length(5), true);
        assert_eq!(p.feed(b"abc", &mut out), Ok(3));
        assert_eq!(p.advance_verbatim(10), Some(2));
        assert!(p.is_done());
        assert_eq!(p.feed(b"next", &mut out), Ok(0));
        assert_eq!(out, b"abc");

        let mut p = BodyProgress::new(BodyKind::Chunked, false);
        out.clear();
        assert_eq!(p.advance_verbatim(3), None);
        assert_eq!(p.feed(b"3\r\nabc\r\n0\r\n\r\nGET", &mut out), Ok(13));
        assert!(p.is_done());
        assert_eq!(out, b"abc");

        let mut p = BodyProgress::new(BodyKind::CloseDelimited, true);
        assert_eq!(p.advance_verbatim(7), Some(7));
        assert!(!p.is_done());
        assert!(BodyProgress::new(BodyKind::None, true).is_done());
        assert!(BodyProgress::new(BodyKind::Length(0), true).is_done());
    }

    #[test]
    fn body_deadline_grows_with_the_bytes_received() {
        let t0 = Instant::now();
        let d = BodyDeadline::new(t0, Duration::from_secs(20), 500);
        assert_eq!(d.at(0), t0 + Duration::from_secs(20));
        assert_eq!(d.at(500), t0 + Duration::from_secs(21));
        assert_eq!(d.at(750), t0 + Duration::from_millis(21_500));
        let flat = BodyDeadline::new(t0, Duration::from_secs(3), 0);
        assert_eq!(flat.at(1 << 40), t0 + Duration::from_secs(3));
        assert!(d.at(u64::MAX) > t0, "no overflow");
    }

    #[test]
    fn hex_encoding() {
        for n in [0usize, 1, 15, 16, 255, 4096, 0xdead_beef] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{n:x}"));
        }
    }
}
