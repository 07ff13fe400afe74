//! The self-checking message layout and its streaming verifier.
//!
//! Every message the load generator sends is `header + filler`:
//! - binary mode: a 20-byte header: connection id (u32 LE), sequence number (u64 LE), intended send
//!   time in nanoseconds since the run's epoch (u64 LE);
//! - text mode: the same three numbers as 40 lowercase hex digits (8 + 16 + 16), so the whole
//!   payload is ASCII;
//! - filler: bytes derived from `(conn, seq, position)` (`Filler`), so the receiver can check every
//!   byte of the echo without keeping a copy of what it sent. In text mode the filler is printable.
//!   Both ends work on 8-byte words: for 16 KiB messages, generating and checking the filler byte by byte
//!   made the load generator cost more CPU per message than the proxy it measures.
//!
//! The payload size for a `(conn, seq)` is derived from them too ([`SizeSpec::size_for`]), so the
//! receiver knows the length it must get back. Nothing here allocates.

use crate::units::SizeSpec;

/// Header length in binary mode.
pub const BINARY_HEADER_LEN: usize = 20;
/// Header length in text mode.
pub const TEXT_HEADER_LEN: usize = 40;

/// Text or binary messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Binary frames with a 20-byte binary header.
    Binary,
    /// Text frames, all ASCII, with a 40-byte hex header.
    Text,
}

impl Kind {
    /// The header length of this kind: the smallest payload a message can have.
    pub fn header_len(self) -> usize {
        match self {
            Kind::Binary => BINARY_HEADER_LEN,
            Kind::Text => TEXT_HEADER_LEN,
        }
    }
}

/// What a verified echo carried in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Connection id.
    pub conn: u32,
    /// Sequence number within the connection.
    pub seq: u64,
    /// Intended send time, nanoseconds since the run's epoch.
    pub intended_ns: u64,
}

impl SizeSpec {
    /// The payload size of message `seq` on connection `conn`: fixed, or uniform over the range
    /// (deterministic, so the receiver can check it).
    pub fn size_for(&self, conn: u32, seq: u64) -> usize {
        if self.is_fixed() {
            return self.min;
        }
        let span = (self.max - self.min) as u64 + 1;
        self.min + (mix(seq ^ (u64::from(conn) << 40) ^ 0x5bd1_e995) % span) as usize
    }
}

/// SplitMix64 finaliser: a cheap, well-mixed hash of one word.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How payload positions `start .. start + len` fall onto filler words: the first `head` bytes (the first value)
/// finish word `start / 8`, which `start` may enter part-way; whole words follow from the word numbered by the
/// second value.
fn word_split(start: usize, len: usize) -> (usize, usize) {
    let head = (start.next_multiple_of(8) - start).min(len);
    (head, (start + head) / 8)
}

/// The filler of one message `(conn, seq)`: payload byte `pos` is byte `pos % 8` of the little-endian
/// [`Filler::word`] `pos / 8`. Both directions work a word at a time: the partial word up to the first 8-byte
/// boundary, whole words, then the partial word at the end.
#[derive(Debug, Clone, Copy)]
struct Filler {
    kind: Kind,
    /// Hash of `(conn, seq)`: where this message's sequence of words starts.
    seed: u64,
}

impl Filler {
    fn new(kind: Kind, conn: u32, seq: u64) -> Self {
        Self {
            kind,
            seed: mix(seq.rotate_left(17) ^ (u64::from(conn) << 32)),
        }
    }

    /// Filler bytes `8 * block .. 8 * block + 8`: `(seed + block) * odd constant`, one multiply per word (a
    /// Weyl sequence: no two words of a message are equal, and two messages share a run of words only if their
    /// seeds are within the message's length of each other). Text filler keeps six bits of each byte and moves
    /// them to `'0'..='o'` (printable ASCII) with one add, so text is as cheap as binary.
    #[inline]
    fn word(self, block: usize) -> u64 {
        let word = self
            .seed
            .wrapping_add(block as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        match self.kind {
            Kind::Binary => word,
            // Each byte ends up at most 0x3f + 0x30 = 0x6f: no carry crosses into the next byte.
            Kind::Text => (word & 0x3f3f_3f3f_3f3f_3f3f) + 0x3030_3030_3030_3030,
        }
    }

    /// Writes the filler for payload positions `start .. start + out.len()` into `out`.
    fn write(self, start: usize, out: &mut [u8]) {
        let (head, block0) = word_split(start, out.len());
        let (first, rest) = out.split_at_mut(head);
        if !first.is_empty() {
            let skip = start % 8;
            first.copy_from_slice(&self.word(start / 8).to_le_bytes()[skip..skip + head]);
        }
        let (words, tail) = rest.as_chunks_mut::<8>();
        for (i, w) in words.iter_mut().enumerate() {
            *w = self.word(block0 + i).to_le_bytes();
        }
        if !tail.is_empty() {
            let word = self.word(block0 + words.len()).to_le_bytes();
            tail.copy_from_slice(&word[..tail.len()]);
        }
    }

    /// The payload position of the first byte of `bytes` (which hold positions `start ..`) that differs from the
    /// filler, if any.
    fn first_mismatch(self, start: usize, bytes: &[u8]) -> Option<usize> {
        // `got` holds bytes `skip ..` of word `block`.
        let differs_at = |block: usize, skip: usize, got: &[u8]| {
            let want = self.word(block).to_le_bytes();
            got.iter()
                .zip(&want[skip..])
                .position(|(a, b)| a != b)
                .map(|i| block * 8 + skip + i)
        };
        let (head, block0) = word_split(start, bytes.len());
        let (first, rest) = bytes.split_at(head);
        if !first.is_empty()
            && let Some(pos) = differs_at(start / 8, start % 8, first)
        {
            return Some(pos);
        }
        let (words, tail) = rest.as_chunks::<8>();
        // Four words per branch: the compare loop then runs at the speed of the loads.
        let (quads, last) = words.as_chunks::<4>();
        for (q, quad) in quads.iter().enumerate() {
            let block = block0 + 4 * q;
            let diff = quad.iter().enumerate().fold(0, |acc, (i, w)| {
                acc | (u64::from_le_bytes(*w) ^ self.word(block + i))
            });
            if diff != 0 {
                return (0..4).find_map(|i| differs_at(block + i, 0, &quad[i]));
            }
        }
        let block = block0 + 4 * quads.len();
        for (i, w) in last.iter().enumerate() {
            if let Some(pos) = differs_at(block + i, 0, w) {
                return Some(pos);
            }
        }
        differs_at(block0 + words.len(), 0, tail)
    }
}

/// Writes the payload of message `stamp` into `out` (all of it: `out.len()` is the payload size,
/// at least `kind.header_len()`).
pub fn write_payload(kind: Kind, stamp: Stamp, out: &mut [u8]) {
    let header_len = kind.header_len().min(out.len());
    match kind {
        Kind::Binary => {
            let mut head = [0u8; BINARY_HEADER_LEN];
            head[..4].copy_from_slice(&stamp.conn.to_le_bytes());
            head[4..12].copy_from_slice(&stamp.seq.to_le_bytes());
            head[12..20].copy_from_slice(&stamp.intended_ns.to_le_bytes());
            out[..header_len].copy_from_slice(&head[..header_len]);
        }
        Kind::Text => {
            let mut head = [0u8; TEXT_HEADER_LEN];
            write_hex(u64::from(stamp.conn), &mut head[..8]);
            write_hex(stamp.seq, &mut head[8..24]);
            write_hex(stamp.intended_ns, &mut head[24..40]);
            out[..header_len].copy_from_slice(&head[..header_len]);
        }
    }
    Filler::new(kind, stamp.conn, stamp.seq).write(header_len, &mut out[header_len..]);
}

fn write_hex(value: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((value >> ((digits - 1 - i) * 4)) & 0xf) as usize];
    }
}

fn read_hex(text: &[u8]) -> Option<u64> {
    text.iter().try_fold(0u64, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(d))
    })
}

/// Why an echoed message failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The header could not be decoded (text mode: not hex) or the message is shorter than it.
    #[error("malformed header")]
    Header,
    /// The echo carries another connection's id.
    #[error("connection id {got} where {expected} was expected")]
    Conn {
        /// Id found.
        got: u32,
        /// Id expected.
        expected: u32,
    },
    /// The payload length differs from the one sent.
    #[error("length {got} where {expected} was expected")]
    Length {
        /// Length received.
        got: usize,
        /// Length sent.
        expected: usize,
    },
    /// A filler byte differs from the one sent.
    #[error("byte {pos} differs")]
    Byte {
        /// Offset in the payload.
        pos: usize,
    },
    /// Text sent, binary received or the other way round.
    #[error("wrong opcode")]
    Opcode,
}

/// Checks one echoed message fed in chunks as the frame decoder yields them.
///
/// `begin` at the first frame of a message, `feed` every payload chunk in order, `finish` at the
/// end of the message. The header is buffered (it may be split across reads), every later byte is
/// compared against the filler as it arrives.
#[derive(Debug)]
pub struct Verifier {
    kind: Kind,
    sizes: SizeSpec,
    conn: u32,
    head: [u8; TEXT_HEADER_LEN],
    pos: usize,
    stamp: Option<Stamp>,
    error: Option<Mismatch>,
}

impl Verifier {
    /// A verifier for messages of `kind` and `sizes` sent on connection `conn`.
    pub fn new(kind: Kind, sizes: SizeSpec, conn: u32) -> Self {
        Self {
            kind,
            sizes,
            conn,
            head: [0; TEXT_HEADER_LEN],
            pos: 0,
            stamp: None,
            error: None,
        }
    }

    /// Starts a new message.
    pub fn begin(&mut self) {
        self.pos = 0;
        self.stamp = None;
        self.error = None;
    }

    /// Marks the current message as failed (e.g. wrong opcode).
    pub fn fail(&mut self, why: Mismatch) {
        self.error.get_or_insert(why);
    }

    /// Feeds the next chunk of the current message's payload.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if self.error.is_some() {
            self.pos += chunk.len();
            return;
        }
        let header_len = self.kind.header_len();
        if self.pos < header_len {
            let take = (header_len - self.pos).min(chunk.len());
            self.head[self.pos..self.pos + take].copy_from_slice(&chunk[..take]);
            self.pos += take;
            chunk = &chunk[take..];
            if self.pos < header_len {
                return;
            }
            match self.parse_header() {
                Ok(stamp) => self.stamp = Some(stamp),
                Err(e) => {
                    self.error = Some(e);
                    self.pos += chunk.len();
                    return;
                }
            }
        }
        let Some(stamp) = self.stamp else { return };
        let filler = Filler::new(self.kind, stamp.conn, stamp.seq);
        if let Some(pos) = filler.first_mismatch(self.pos, chunk) {
            self.error = Some(Mismatch::Byte { pos });
        }
        self.pos += chunk.len();
    }

    /// Payload bytes of the current message fed so far.
    pub fn received_len(&self) -> usize {
        self.pos
    }

    /// Ends the current message: its stamp if every byte and the length matched.
    pub fn finish(&mut self) -> Result<Stamp, Mismatch> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let stamp = self.stamp.ok_or(Mismatch::Header)?;
        let expected = self.sizes.size_for(stamp.conn, stamp.seq);
        if self.pos != expected {
            return Err(Mismatch::Length {
                got: self.pos,
                expected,
            });
        }
        Ok(stamp)
    }

    fn parse_header(&self) -> Result<Stamp, Mismatch> {
        let stamp = match self.kind {
            Kind::Binary => {
                let h = &self.head;
                let word = |r: std::ops::Range<usize>| {
                    h[r].iter()
                        .rev()
                        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
                };
                Stamp {
                    conn: word(0..4) as u32,
                    seq: word(4..12),
                    intended_ns: word(12..20),
                }
            }
            Kind::Text => {
                let h = &self.head;
                let conn = read_hex(&h[..8]).ok_or(Mismatch::Header)?;
                let seq = read_hex(&h[8..24]).ok_or(Mismatch::Header)?;
                let intended_ns = read_hex(&h[24..40]).ok_or(Mismatch::Header)?;
                Stamp {
                    conn: conn as u32,
                    seq,
                    intended_ns,
                }
            }
        };
        if stamp.conn != self.conn {
            return Err(Mismatch::Conn {
                got: stamp.conn,
                expected: self.conn,
            });
        }
        Ok(stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(kind: Kind, sizes: SizeSpec, conn: u32, seq: u64) -> Vec<u8> {
        let mut v = vec![0; sizes.size_for(conn, seq)];
        write_payload(
            kind,
            Stamp {
                conn,
                seq,
                intended_ns: 123_456_789,
            },
            &mut v,
        );
        v
    }

    #[test]
    fn round_trip_in_any_chunking() {
        let sizes = SizeSpec { min: 40, max: 300 };
        for kind in [Kind::Binary, Kind::Text] {
            for seq in 0..20 {
                let msg = build(kind, sizes, 7, seq);
                for chunk in [1, 3, 8, 41, 1000] {
                    let mut v = Verifier::new(kind, sizes, 7);
                    v.begin();
                    for c in msg.chunks(chunk) {
                        v.feed(c);
                    }
                    let stamp = v.finish().unwrap();
                    assert_eq!(
                        (stamp.conn, stamp.seq, stamp.intended_ns),
                        (7, seq, 123_456_789)
                    );
                }
            }
        }
    }

    /// The filler's definition, one byte at a time: what the word-at-a-time paths must agree with.
    fn reference_byte(f: Filler, pos: usize) -> u8 {
        f.word(pos / 8).to_le_bytes()[pos % 8]
    }

    #[test]
    fn word_at_a_time_filler_matches_the_byte_definition_at_any_offset() {
        for kind in [Kind::Binary, Kind::Text] {
            let f = Filler::new(kind, 9, 1234);
            for start in 0..17 {
                for len in 0..40 {
                    let mut out = vec![0u8; len];
                    f.write(start, &mut out);
                    let want: Vec<u8> =
                        (start..start + len).map(|p| reference_byte(f, p)).collect();
                    assert_eq!(out, want, "{kind:?} start {start} len {len}");
                    assert_eq!(f.first_mismatch(start, &out), None);
                    for i in 0..len {
                        let mut bad = out.clone();
                        bad[i] ^= 0x80;
                        assert_eq!(f.first_mismatch(start, &bad), Some(start + i));
                    }
                }
            }
        }
    }

    #[test]
    fn verifier_reports_the_first_differing_byte_in_any_chunking() {
        let sizes = SizeSpec { min: 100, max: 100 };
        for kind in [Kind::Binary, Kind::Text] {
            let msg = build(kind, sizes, 4, 17);
            for pos in [kind.header_len(), 41, 63, 64, 99] {
                let mut bad = msg.clone();
                bad[pos] = bad[pos].wrapping_add(1);
                bad[99] ^= if pos == 99 { 0 } else { 0x01 };
                for chunk in [1, 3, 7, 8, 9, 100] {
                    let mut v = Verifier::new(kind, sizes, 4);
                    v.begin();
                    for c in bad.chunks(chunk) {
                        v.feed(c);
                    }
                    assert_eq!(
                        v.finish(),
                        Err(Mismatch::Byte { pos }),
                        "{kind:?} chunk {chunk}"
                    );
                }
            }
        }
    }

    #[test]
    fn filler_differs_between_messages_and_connections() {
        let sizes = SizeSpec { min: 64, max: 64 };
        for kind in [Kind::Binary, Kind::Text] {
            let a = build(kind, sizes, 1, 1);
            let b = build(kind, sizes, 1, 2);
            let c = build(kind, sizes, 2, 1);
            let h = kind.header_len();
            assert_ne!(a[h..], b[h..]);
            assert_ne!(a[h..], c[h..]);
        }
    }

    #[test]
    fn text_payloads_are_ascii() {
        let msg = build(Kind::Text, SizeSpec { min: 500, max: 500 }, 3, 99);
        assert!(msg.iter().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let sizes = SizeSpec { min: 64, max: 64 };
        for kind in [Kind::Binary, Kind::Text] {
            let msg = build(kind, sizes, 1, 5);
            for pos in 0..msg.len() {
                let mut bad = msg.clone();
                bad[pos] ^= 0x01;
                let mut v = Verifier::new(kind, sizes, 1);
                v.begin();
                v.feed(&bad);
                // A flipped header byte changes conn, seq (hence filler/length) or the timestamp;
                // the timestamp is not checkable, every other byte is.
                let ts_range = match kind {
                    Kind::Binary => 12..20,
                    Kind::Text => 24..40,
                };
                if !ts_range.contains(&pos) {
                    assert!(v.finish().is_err(), "{kind:?} flip at {pos} not detected");
                }
            }
        }
    }

    #[test]
    fn wrong_length_and_conn_are_detected() {
        let sizes = SizeSpec { min: 64, max: 64 };
        let msg = build(Kind::Binary, sizes, 2, 1);
        let mut v = Verifier::new(Kind::Binary, sizes, 2);
        v.begin();
        v.feed(&msg[..63]);
        assert_eq!(
            v.finish(),
            Err(Mismatch::Length {
                got: 63,
                expected: 64
            })
        );
        let mut v = Verifier::new(Kind::Binary, sizes, 3);
        v.begin();
        v.feed(&msg);
        assert_eq!(
            v.finish(),
            Err(Mismatch::Conn {
                got: 2,
                expected: 3
            })
        );
    }
}
