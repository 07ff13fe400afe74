//! A TLS connection as a monoio stream: the same read/write/cancel/split interface a `TcpStream` offers, so the
//! HTTP path and the frame relay run over it unchanged (one code path for `ws://` and `wss://`).
//!
//! Owns: moving bytes between the socket and the [`RecordLayer`]: ciphertext is read into a buffer borrowed from the
//! worker's pool only while a record is incomplete, decrypted straight into the caller's buffer, and encrypted into
//! a pooled buffer only while a write is in flight. An idle connection therefore pins no TLS buffer: a small read
//! (the relay's parked one-byte read) waits on a one-byte socket read, like the plain relay does.
//! Does not own: the handshake (`super::accept`), any rule about what the bytes mean.
//!
//! Both halves share the record layer (`Rc<RefCell<_>>`, never borrowed across an await). The read half never writes
//! to the socket: records produced while reading (key updates) go out before the next write.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
    OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;

use super::engine::{PlainSink, TlsEngine, TlsError, Unbuffered};
use super::records::{PostHandshake, RecordLayer};
use crate::runtime::buffer_pool::{BufferPool, Detached, PoolBuf};

/// Reads asking for fewer bytes than this wait on a one-byte socket read, so no pooled buffer is held while the
/// peer is quiet (the relay parks idle legs on a one-byte read).
const SMALL_READ: usize = 64;

/// One TLS connection over TCP whose handshake is complete. The socket stays whole until [`Splitable::into_split`]
/// (a pooled upstream connection is watched for readability on it).
pub(crate) struct TlsStream<C> {
    /// Reading and writing both go through the whole socket until the split.
    reader: TlsReader<C, TcpStream>,
}

/// What both halves share, in one allocation (mimalloc's 384-byte class for a server-side connection: tests here
/// and in `super::records` keep it there): the record layer, ciphertext of an incomplete record, the worker's buffer pool.
struct Shared<C> {
    records: RecordLayer<C>,
    /// Ciphertext received and not yet decrypted (an incomplete record); `None` while there is none. Detached from
    /// its pool handle (the allocation has no byte to spare; `pool` is at hand) and given back on drop.
    incoming: Option<Detached>,
    pool: Rc<BufferPool>,
}

impl<C> Shared<C> {
    /// The ciphertext held, as a buffer that returns itself to the pool.
    fn take_incoming(&mut self) -> Option<PoolBuf> {
        let pool = &self.pool;
        self.incoming.take().map(|d| pool.reattach(d))
    }

    /// Keeps `incoming` for the next read if it holds ciphertext; otherwise it goes back to the pool.
    fn keep_incoming(&mut self, incoming: PoolBuf) {
        debug_assert!(
            self.incoming.is_none(),
            "the one reader took the ciphertext before reading more"
        );
        if !incoming.is_empty() {
            self.incoming = Some(incoming.detach());
        }
    }
}

impl<C> Drop for Shared<C> {
    fn drop(&mut self) {
        drop(self.take_incoming());
    }
}

/// The reading half of a TLS connection; `R` is the socket (or its read half).
pub(crate) struct TlsReader<C, R = OwnedReadHalf<TcpStream>> {
    tcp: R,
    shared: Rc<RefCell<Shared<C>>>,
}

/// The writing half of a TLS connection; `W` is the socket's write half (`()` while the stream is whole: the
/// reader's socket is used).
pub(crate) struct TlsWriter<C, W = OwnedWriteHalf<TcpStream>> {
    tcp: W,
    shared: Rc<RefCell<Shared<C>>>,
}

impl<C: PostHandshake> TlsStream<C> {
    /// Wraps a socket whose handshake `engine` completed. `incoming` holds ciphertext received after the
    /// handshake's last record (it may be empty).
    pub(crate) fn new<U: Unbuffered<Kernel = C>>(
        tcp: TcpStream,
        engine: TlsEngine<U>,
        incoming: PoolBuf,
        pool: Rc<BufferPool>,
    ) -> Result<Self, TlsError> {
        let records = engine.into_records()?;
        let mut shared = Shared {
            records,
            incoming: None,
            pool,
        };
        shared.keep_incoming(incoming);
        let shared = Rc::new(RefCell::new(shared));
        Ok(Self {
            reader: TlsReader { tcp, shared },
        })
    }

    /// The socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.reader.tcp
    }
}

fn invalid(e: TlsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The caller's read buffer as a [`PlainSink`].
struct IoSink<'b, T> {
    buf: &'b mut T,
    filled: usize,
}

impl<T: IoBufMut> PlainSink for IoSink<'_, T> {
    fn put(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.buf.bytes_total() - self.filled);
        // SAFETY: monoio's `IoBufMut` contract: `write_ptr()` is valid for writes of `bytes_total()` bytes while
        // the buffer is alive and not moved (it is what the kernel writes into on a socket read). We write
        // `filled..filled + n`, within that, from a slice that cannot overlap it (rustls' plaintext), and then
        // declare exactly the bytes written so far initialised.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.buf.write_ptr().add(self.filled), n);
            self.buf.set_init(self.filled + n);
        }
        self.filled += n;
        n
    }
}

impl<C: PostHandshake, R: CancelableAsyncReadRent> TlsReader<C, R> {
    /// The ciphertext of an incomplete record, if any (the borrow of the shared state ends here).
    fn held_incoming(&self) -> Option<PoolBuf> {
        self.shared.borrow_mut().take_incoming()
    }

    async fn read_plain<T: IoBufMut>(
        &mut self,
        mut buf: T,
        cancel: Option<CancelHandle>,
    ) -> BufResult<usize, T> {
        loop {
            // Plaintext already decrypted, or whole records already received.
            {
                let mut shared = self.shared.borrow_mut();
                let mut sink = IoSink {
                    buf: &mut buf,
                    filled: 0,
                };
                if shared.records.has_plain() {
                    let n = shared.records.take_plain(&mut sink);
                    return (Ok(n), buf);
                }
                if let Some(mut incoming) = shared.take_incoming() {
                    let records = &mut shared.records;
                    let decrypted = incoming.with_vec(|v| records.decrypt(v, &mut sink));
                    shared.keep_incoming(incoming);
                    match decrypted {
                        Ok(d) if d.written > 0 || d.peer_closed => return (Ok(d.written), buf),
                        Ok(_) => {}
                        Err(e) => return (Err(invalid(e)), buf),
                    }
                } else if shared.records.peer_closed() {
                    return (Ok(0), buf);
                }
            }
            // More ciphertext is needed. (`if let` on a call: no local holds the empty `None` across the parked
            // read below, which every idle connection's read future would keep room for.)
            let incoming = if let Some(held) = self.held_incoming() {
                held
            } else if buf.bytes_total() < SMALL_READ {
                // Parked: nothing is in flight, so the AEAD contexts go too (rebuilt by the next record).
                self.shared.borrow_mut().records.release_keys();
                let byte = Box::new([0u8; 1]);
                let (res, byte) = match &cancel {
                    Some(c) => self.tcp.cancelable_read(byte, c.clone()).await,
                    None => self.tcp.read(byte).await,
                };
                match res {
                    Ok(0) => return (Ok(0), buf),
                    Ok(_) => {
                        let mut b = self.shared.borrow().pool.take();
                        b.push(byte[0]);
                        b
                    }
                    Err(e) => return (Err(e), buf),
                }
            } else {
                self.shared.borrow().pool.take()
            };
            let (len, cap) = (incoming.len(), incoming.capacity());
            if len == cap {
                // A record larger than the buffer: impossible for a peer that follows RFC 8446 §5.2.
                return (
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS record larger than the read buffer",
                    )),
                    buf,
                );
            }
            // Cancelled or dropped, the read takes the buffer with it (back to the pool once the kernel lets go).
            let slice = incoming.slice_mut(len..cap);
            let (res, slice) = match &cancel {
                Some(c) => self.tcp.cancelable_read(slice, c.clone()).await,
                None => self.tcp.read(slice).await,
            };
            let incoming = slice.into_inner();
            match res {
                Ok(0) => {
                    let partial = !incoming.is_empty();
                    drop(incoming);
                    // A TCP FIN without close_notify: the data so far was complete records, so it is an ordinary
                    // end for WebSocket and HTTP (both frame their own messages); inside a record it is not.
                    return if partial {
                        (
                            Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "connection closed inside a TLS record",
                            )),
                            buf,
                        )
                    } else {
                        (Ok(0), buf)
                    };
                }
                Ok(_) => self.shared.borrow_mut().keep_incoming(incoming),
                Err(e) => {
                    self.shared.borrow_mut().keep_incoming(incoming);
                    return (Err(e), buf);
                }
            }
        }
    }
}

/// Encrypts what of `buf` fits one pooled buffer; the ciphertext is written with `tcp`.
async fn write_plain<C: PostHandshake, T: IoBuf, S: AsyncWriteRent>(
    shared: &Rc<RefCell<Shared<C>>>,
    tcp: &mut S,
    buf: T,
) -> BufResult<usize, T> {
    {
        if buf.bytes_init() == 0 {
            return (Ok(0), buf);
        }
        let mut out = shared.borrow().pool.take();
        let encrypted = out.with_vec(|out| {
            // SAFETY: monoio's `IoBuf` contract: `read_ptr()` is valid for reads of `bytes_init()` initialised
            // bytes while the buffer is alive (it is what the kernel reads on a socket write); the slice does not
            // outlive this block, during which `buf` is neither moved nor changed.
            #[allow(unsafe_code)]
            let plain = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
            shared.borrow_mut().records.encrypt(plain, out)
        });
        let taken = match encrypted {
            Ok(n) => n,
            Err(e) => return (Err(invalid(e)), buf),
        };
        let (res, out) = tcp.write_all(out).await;
        drop(out);
        match res {
            Ok(_) => (Ok(taken), buf),
            Err(e) => (Err(e), buf),
        }
    }
}

/// Sends close_notify (the record layer sends it once) and shuts the socket's sending side.
async fn close<C: PostHandshake, S: AsyncWriteRent>(
    shared: &Rc<RefCell<Shared<C>>>,
    tcp: &mut S,
) -> io::Result<()> {
    let mut out = Vec::new();
    let sent = shared.borrow_mut().records.close_notify(&mut out);
    if sent.is_ok() && !out.is_empty() {
        tcp.write_all(out).await.0?;
    }
    tcp.shutdown().await
}

fn no_vectored() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "vectored I/O is not offered on TLS streams",
    )
}

impl<C: PostHandshake, R: CancelableAsyncReadRent> AsyncReadRent for TlsReader<C, R> {
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.read_plain(buf, None)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        (Err(no_vectored()), buf)
    }
}

impl<C: PostHandshake, R: CancelableAsyncReadRent> CancelableAsyncReadRent for TlsReader<C, R> {
    fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>> {
        self.read_plain(buf, Some(c))
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        _c: CancelHandle,
    ) -> BufResult<usize, T> {
        (Err(no_vectored()), buf)
    }
}

impl<C: PostHandshake> AsyncWriteRent for TlsWriter<C> {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        write_plain(&self.shared, &mut self.tcp, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        (Err(no_vectored()), buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        close(&self.shared, &mut self.tcp)
    }
}

impl<C: PostHandshake> AsyncReadRent for TlsStream<C> {
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.reader.read(buf)
    }

    fn readv<T: IoVecBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.reader.readv(buf)
    }
}

impl<C: PostHandshake> CancelableAsyncReadRent for TlsStream<C> {
    fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>> {
        self.reader.cancelable_read(buf, c)
    }

    fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>> {
        self.reader.cancelable_readv(buf, c)
    }
}

impl<C: PostHandshake> AsyncWriteRent for TlsStream<C> {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        write_plain(&self.reader.shared, &mut self.reader.tcp, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        (Err(no_vectored()), buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        close(&self.reader.shared, &mut self.reader.tcp)
    }
}

impl<C: PostHandshake> Splitable for TlsStream<C> {
    type OwnedRead = TlsReader<C>;
    type OwnedWrite = TlsWriter<C>;

    fn into_split(self) -> (Self::OwnedRead, Self::OwnedWrite) {
        let (read, write) = self.reader.tcp.into_split();
        (
            TlsReader {
                tcp: read,
                shared: self.reader.shared.clone(),
            },
            TlsWriter {
                tcp: write,
                shared: self.reader.shared,
            },
        )
    }
}

#[cfg(test)]
mod size_tests {
    use std::cell::RefCell;

    use super::Shared;
    use crate::tls::secrets::ServerSecrets;

    #[test]
    fn the_shared_state_of_a_server_connection_fits_mimallocs_384_byte_class_with_its_rc() {
        // An idle wss connection's memory is mostly this allocation (README, idle figures); one class up is 448.
        let rc_box = 16 + std::mem::size_of::<RefCell<Shared<ServerSecrets>>>();
        assert!(rc_box <= 384, "{rc_box} bytes");
    }
}
