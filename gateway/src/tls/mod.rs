//! TLS termination for `wss://` and `https://` listeners, and TLS to upstreams (rustls 0.23, aws-lc-rs).
//!
//! Owns: certificates and keys (`certs`), choosing one by SNI (`resolver`), a listener's rustls setup and its
//! reload (`listener`), the server handshake (`accept`) and the client one to upstreams (`connect`), both driven by
//! one loop (`handshake`) around the sans-IO `engine`, the record layer after the handshake (`records`, sans-IO) with the server's traffic secrets (`secrets`),
//! and the TLS stream the HTTP path and the relay run over (`stream`). Does not own: anything after the bytes are decrypted; the relay, HTTP handling and routing are the
//! same for TLS and plain connections. Public only for the fuzz target's entry ([`fuzzing`]).

pub(crate) mod accept;
pub(crate) mod certs;
pub(crate) mod connect;
pub(crate) mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod handshake;
pub(crate) mod listener;
pub(crate) mod records;
pub(crate) mod resolver;
pub(crate) mod secrets;
pub(crate) mod stream;
