//! Sans-IO RFC 6455 WebSocket frame codec.
//!
//! This crate owns the wire format of WebSocket frames and nothing else: it never touches a socket, a
//! timer or an allocator on the hot path. Bytes go in ([`FrameDecoder::decode`]) and events come out
//! ([`Decoded`]); headers are written into caller buffers ([`FrameHeader::encode`]).
//!
//! - [`header`]: frame header types, decoding with every RFC 6455 §5 rule, encoding.
//! - [`decoder`]: the incremental stream decoder (fragmentation, message size, UTF-8 of text messages).
//! - [`close`]: close frame payloads (§5.5.1, §7.4).
//! - [`mask`]: payload masking with runtime dispatch (AVX-512 / AVX2 / SSE2 / NEON / scalar).
//! - [`utf8`]: incremental, fail-fast UTF-8 validation across frames and reads.
//! - [`handshake`]: the `Sec-WebSocket-Accept` computation.
//!
//! `unsafe` is denied crate-wide and allowed only in the SIMD kernels (`mask::x86`, `mask::aarch64`),
//! each of which is checked against the scalar reference by tests and a fuzz target.
//!
//! The scalar paths can be forced with the `force-scalar` cargo feature or `--cfg frame_simd_force_scalar`.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod close;
pub mod decoder;
pub mod error;
pub mod handshake;
pub mod header;
pub mod mask;
pub mod simd;
pub mod utf8;

pub use close::{encode_close_payload, is_valid_close_code, parse_close_payload};
pub use decoder::{Decoded, DecoderConfig, FrameDecoder, PayloadMode};
pub use error::FrameError;
pub use header::{FrameHeader, HeaderRules, MAX_HEADER_LEN, OpCode, Role, Rsv, encode_frame};
pub use mask::apply_mask;
pub use utf8::{Utf8Error, Utf8Validator};
