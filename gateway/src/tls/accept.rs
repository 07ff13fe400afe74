//! The server side of a TLS handshake on an accepted socket, under the connection's handshake deadline.
//!
//! Owns: reading the ClientHello and later flights into a pooled buffer, sending what rustls produces, the answers
//! to clients that are not speaking TLS (a plain HTTP request gets nginx's `400`; anything else rustls' alert) and
//! the `unrecognized_name` alert for refused server names, and one log line per refusal.
//! Does not own: the rustls configuration (`super::listener`), the stream after the handshake (`super::stream`).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;

use super::engine::TlsEngine;
use super::handshake::{FirstBytes, HandshakeError, drive};
use super::listener::WorkerTls;
use super::resolver;
use super::secrets::ServerSecrets;
use super::stream::TlsStream;
use crate::http::head::simple_response;
use crate::runtime::buffer_pool::BufferPool;

/// A server-side TLS stream.
pub(crate) type ServerTls = TlsStream<ServerSecrets>;

/// How long a refusal may take to send: the connection ends either way.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// `unrecognized_name` (112), fatal, as a plaintext record: sent before any key exists.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112];

/// A fatal `internal_error` alert record in the clear: what a client refused before its handshake gets (the
/// connection limits, `crate::conn`).
pub(crate) const INTERNAL_ERROR_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 80];

/// A completed server handshake: the stream and the verified client certificate (mTLS) as forwarded upstream.
pub(crate) struct Accepted {
    pub(crate) stream: ServerTls,
    pub(crate) client_cert: Option<String>,
}

/// Runs the handshake; `None` if it failed (already answered and logged). `early`: bytes already read from `tcp`
/// (after a PROXY header), the start of the ClientHello.
pub(crate) async fn accept(
    mut tcp: TcpStream,
    early: &[u8],
    peer: SocketAddr,
    tls: &WorkerTls,
    pool: &Rc<BufferPool>,
    deadline: Instant,
) -> Option<Accepted> {
    let conn = match UnbufferedServerConnection::new(tls.config()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%peer, error = %e, "cannot start a TLS session");
            return None;
        }
    };
    let mut engine = TlsEngine::new(conn);
    let mut plain_http = false;
    let result = drive(
        &mut tcp,
        &mut engine,
        pool,
        early,
        deadline,
        |first| {
            plain_http = looks_like_plain_http(first);
            if plain_http {
                FirstBytes::Refuse
            } else {
                FirstBytes::Continue
            }
        },
        || resolver::take_refused().then(|| UNRECOGNIZED_NAME_ALERT.to_vec()),
    )
    .await;
    let incoming = match result {
        Ok(incoming) => incoming,
        Err(HandshakeError::Refused) if plain_http => {
            tracing::info!(%peer, "refused: plain HTTP request on a TLS port (400)");
            let answer = simple_response(
                400,
                &[],
                "The plain HTTP request was sent to an HTTPS port\n",
                true,
            );
            let _ = monoio::time::timeout(REFUSAL_WRITE, tcp.write_all(answer)).await;
            return None;
        }
        Err(e @ (HandshakeError::Closed | HandshakeError::Io(_))) => {
            tracing::debug!(%peer, "TLS handshake ended: {e}");
            return None;
        }
        Err(e @ HandshakeError::Tls(_)) => {
            tracing::info!(%peer, error = %e, "TLS refused: handshake failed");
            return None;
        }
        Err(e) => {
            tracing::info!(%peer, "TLS refused: {e}");
            return None;
        }
    };
    if tracing::enabled!(tracing::Level::DEBUG) {
        let conn = engine.conn();
        tracing::debug!(
            %peer,
            version = ?conn.protocol_version(),
            kind = ?conn.handshake_kind(),
            "TLS handshake complete"
        );
    }
    let client_cert = engine
        .conn()
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| super::certs::describe_client(leaf));
    match TlsStream::new(tcp, engine, incoming, pool.clone()) {
        Ok(stream) => Some(Accepted {
            stream,
            client_cert,
        }),
        Err(e) => {
            tracing::error!(%peer, error = %e, "TLS session could not start after the handshake");
            None
        }
    }
}

/// Whether the first bytes on a TLS port are an HTTP request line rather than a TLS record (which starts with a
/// content type byte, 0x14..0x18): an upper-case method token followed by a space.
fn looks_like_plain_http(bytes: &[u8]) -> bool {
    let method_len = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method_len > 0 && (method_len == bytes.len() || bytes[method_len] == b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_told_apart_from_tls_records() {
        assert!(looks_like_plain_http(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_plain_http(b"OPTIONS * HTTP/1.1\r\n"));
        assert!(
            looks_like_plain_http(b"GE"),
            "a method split over reads still counts"
        );
        assert!(!looks_like_plain_http(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!looks_like_plain_http(b"\x00garbage"));
        assert!(!looks_like_plain_http(b"get / HTTP/1.1"));
    }
}
