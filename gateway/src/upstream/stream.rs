//! A connection to an upstream server, plain or TLS, as one stream type for the handshake and HTTP paths.
//!
//! Owns: dispatching reads and writes to the plain socket or the TLS stream, and access to the socket underneath
//! (the keep-alive pool watches it). Does not own: the relay, which takes the two kinds apart
//! ([`UpstreamStream::into_inner`]) so a plain relay pays nothing for TLS.

use std::io;

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;

use crate::tls::connect::ClientTls;

/// An open connection to an upstream server.
pub(crate) enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<ClientTls>),
}

/// The two kinds, for code that is generic over the stream (the relay).
pub(crate) enum Inner {
    Plain(TcpStream),
    Tls(ClientTls),
}

impl std::fmt::Debug for UpstreamStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamStream::Plain(_) => "UpstreamStream::Plain",
            UpstreamStream::Tls(_) => "UpstreamStream::Tls",
        })
    }
}

impl UpstreamStream {
    /// The socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            UpstreamStream::Plain(s) => s,
            UpstreamStream::Tls(s) => s.tcp(),
        }
    }

    pub(crate) fn into_inner(self) -> Inner {
        match self {
            UpstreamStream::Plain(s) => Inner::Plain(s),
            UpstreamStream::Tls(s) => Inner::Tls(*s),
        }
    }
}

impl AsyncReadRent for UpstreamStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.read(buf).await,
            UpstreamStream::Tls(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.readv(buf).await,
            UpstreamStream::Tls(s) => s.readv(buf).await,
        }
    }
}

impl CancelableAsyncReadRent for UpstreamStream {
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.cancelable_read(buf, c).await,
            UpstreamStream::Tls(s) => s.cancelable_read(buf, c).await,
        }
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.cancelable_readv(buf, c).await,
            UpstreamStream::Tls(s) => s.cancelable_readv(buf, c).await,
        }
    }
}

impl AsyncWriteRent for UpstreamStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.write(buf).await,
            UpstreamStream::Tls(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.writev(buf).await,
            UpstreamStream::Tls(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.flush().await,
            UpstreamStream::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.shutdown().await,
            UpstreamStream::Tls(s) => s.shutdown().await,
        }
    }
}
