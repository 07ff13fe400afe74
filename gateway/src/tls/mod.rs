//! TLS termination for `wss://` and `https://` listeners (rustls 0.23, aws-lc-rs).
//!
//! Owns: certificates and keys ([`certs`]), choosing one by SNI ([`resolver`]), a listener's rustls setup and its
//! reload ([`listener`]), the server handshake ([`accept`]), and the TLS stream the HTTP path and the relay run
//! over ([`stream`], around the sans-IO [`engine`]). Does not own: anything after the bytes are decrypted; the
//! relay, HTTP handling and routing are the same for TLS and plain connections.

pub(crate) mod accept;
pub(crate) mod certs;
pub(crate) mod connect;
pub(crate) mod engine;
pub(crate) mod handshake;
pub(crate) mod listener;
pub(crate) mod resolver;
pub(crate) mod stream;
