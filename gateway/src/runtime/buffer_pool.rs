//! Per-worker pool of I/O buffers, and the exact count of the bytes it has lent.
//!
//! Owns: the buffers a connection borrows while bytes are in flight, and two figures: bytes lent and not yet back
//! ([`BufferPool::in_use_bytes`]) and free buffers kept for reuse ([`BufferPool::cached`]). A relay
//! leg takes a buffer when its socket has data and drops it as soon as the bytes are written on, so an idle
//! connection pins none. The pool keeps at most `max_cached` free buffers; beyond that, returned buffers are freed
//! (memory is bounded by in-flight data, not by the number of connections). Single-threaded by design (one pool per
//! worker, `!Sync`).
//! Does not own: publishing the figures (the worker's control tick in `crate::server`).
//!
//! A lent buffer is a [`PoolBuf`], whose drop returns it, wherever that happens: after a write, on an error path,
//! or when io_uring completes a read whose future was cancelled (monoio keeps the buffer of a cancelled operation
//! until the kernel lets go of it, then drops it on the worker's thread). So nothing lent is lost to the count. The
//! price per lend is the pool handle (an `Rc` clone: a non-atomic increment, 8 bytes beside the `Vec`); no
//! allocation beyond the buffer itself. Where those 8 bytes would sit in every idle connection's state, the holder
//! keeps a [`Detached`] buffer instead and must hand it back (its own `Drop` included).

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut, RangeBounds};
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut};

/// A pool of equally sized byte buffers for one worker thread.
pub(crate) struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
    buffer_size: usize,
    max_cached: usize,
    /// Capacity of every buffer lent and not yet returned (detached ones and ones the kernel holds included).
    in_use: Cell<usize>,
}

impl BufferPool {
    /// A pool handing out buffers of `buffer_size` bytes, caching up to `max_cached` free ones.
    pub(crate) fn new(buffer_size: usize, max_cached: usize) -> Self {
        Self {
            free: RefCell::new(Vec::new()),
            buffer_size,
            max_cached,
            in_use: Cell::new(0),
        }
    }

    /// Lends an empty buffer with capacity `buffer_size`; dropping it gives it back.
    pub(crate) fn take(self: &Rc<Self>) -> PoolBuf {
        let buf = self
            .free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.buffer_size));
        self.in_use.set(self.in_use.get() + buf.capacity());
        PoolBuf {
            buf,
            pool: Rc::clone(self),
        }
    }

    /// Turns a buffer from [`PoolBuf::detach`] back into one that returns itself.
    pub(crate) fn reattach(self: &Rc<Self>, mut detached: Detached) -> PoolBuf {
        PoolBuf {
            buf: std::mem::take(&mut detached.0),
            pool: Rc::clone(self),
        }
    }

    /// Bytes lent and not yet returned (the capacity of each lent buffer, grown ones at their current size).
    pub(crate) fn in_use_bytes(&self) -> usize {
        self.in_use.get()
    }

    /// Number of free buffers currently cached.
    pub(crate) fn cached(&self) -> usize {
        self.free.borrow().len()
    }

    /// Takes a lent buffer back. Buffers of the wrong capacity (grown by a caller) are freed, as are buffers
    /// beyond the cap.
    fn give_back(&self, mut buf: Vec<u8>) {
        self.in_use
            .set(self.in_use.get().saturating_sub(buf.capacity()));
        let mut free = self.free.borrow_mut();
        if buf.capacity() == self.buffer_size && free.len() < self.max_cached {
            buf.clear();
            free.push(buf);
        }
    }

    /// Counts the growth of a lent buffer from `before` bytes of capacity to `after`.
    fn grown(&self, before: usize, after: usize) {
        if after != before {
            self.in_use
                .set((self.in_use.get() + after).saturating_sub(before));
        }
    }
}

/// A buffer lent by a [`BufferPool`]; dropping it returns it.
///
/// It reads as a byte slice. Everything that may change its capacity goes through its own methods (or
/// [`PoolBuf::with_vec`]), so the pool's count follows a buffer that grows.
pub(crate) struct PoolBuf {
    buf: Vec<u8>,
    pool: Rc<BufferPool>,
}

impl PoolBuf {
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Removes `range` from the buffer, moving what follows to its place.
    pub(crate) fn drain(&mut self, range: impl RangeBounds<usize>) {
        self.buf.drain(range);
    }

    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.with_vec(|v| v.extend_from_slice(bytes));
    }

    pub(crate) fn push(&mut self, byte: u8) {
        self.with_vec(|v| v.push(byte));
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        self.with_vec(|v| v.reserve(additional));
    }

    /// Runs `f` on the `Vec` itself (for code written against `&mut Vec<u8>`); growth is counted.
    pub(crate) fn with_vec<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let before = self.buf.capacity();
        let out = f(&mut self.buf);
        self.pool.grown(before, self.buf.capacity());
        out
    }

    /// The buffer without its pool handle, still counted as lent: give it back with [`BufferPool::reattach`].
    pub(crate) fn detach(mut self) -> Detached {
        Detached(std::mem::take(&mut self.buf))
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

impl Deref for PoolBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl std::fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuf")
            .field("len", &self.buf.len())
            .field("capacity", &self.buf.capacity())
            .finish()
    }
}

// SAFETY: the pointer is the `Vec`'s heap allocation, which moving the `PoolBuf` does not move; nothing reachable
// through a `PoolBuf` handed to the runtime can reallocate it until the runtime hands it back (the growing methods
// need `&mut self`). `bytes_init` is the `Vec`'s length, so the bytes it names are initialised. This is what
// monoio's own `impl IoBuf for Vec<u8>` relies on.
#[allow(unsafe_code)]
unsafe impl IoBuf for PoolBuf {
    #[inline]
    fn read_ptr(&self) -> *const u8 {
        self.buf.as_ptr()
    }

    #[inline]
    fn bytes_init(&self) -> usize {
        self.buf.len()
    }
}

// SAFETY: as for `IoBuf` above: the allocation is stable while the runtime owns the buffer and `bytes_total` is
// its capacity. `set_init` is called by the runtime only with a length whose bytes the kernel has written, within
// the capacity (monoio's contract), which is what `Vec::set_len` requires.
#[allow(unsafe_code)]
unsafe impl IoBufMut for PoolBuf {
    #[inline]
    fn write_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr()
    }

    #[inline]
    fn bytes_total(&mut self) -> usize {
        self.buf.capacity()
    }

    #[inline]
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: the caller guarantees `pos` bytes are initialised and within the capacity (see above).
        unsafe { self.buf.set_len(pos) };
    }
}

/// A byte buffer that owned-buffer reads append to and that may grow: a plain `Vec` or a lent [`PoolBuf`] (code
/// that reads into either, like an HTTP head reader, is written against this).
pub(crate) trait GrowBuf: IoBuf + IoBufMut + DerefMut<Target = [u8]> {
    fn capacity(&self) -> usize;
    fn reserve(&mut self, additional: usize);
}

impl GrowBuf for Vec<u8> {
    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }

    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }
}

impl GrowBuf for PoolBuf {
    fn capacity(&self) -> usize {
        PoolBuf::capacity(self)
    }

    fn reserve(&mut self, additional: usize) {
        PoolBuf::reserve(self, additional);
    }
}

/// A lent buffer kept without its pool handle (8 bytes less, where they would sit in every idle connection's
/// state). Still counted as in use; its holder gives it back with [`BufferPool::reattach`], from its own `Drop` too.
/// Dropped any other way, the count would drift: debug builds assert that this does not happen.
#[must_use = "a detached buffer must be reattached to its pool"]
pub(crate) struct Detached(Vec<u8>);

impl Drop for Detached {
    fn drop(&mut self) {
        debug_assert!(
            self.0.capacity() == 0,
            "a detached pool buffer was dropped without being reattached"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_returned_buffers_up_to_the_cap() {
        let pool = Rc::new(BufferPool::new(4096, 1));
        let a = pool.take();
        let b = pool.take();
        assert_eq!(a.capacity(), 4096);
        assert_eq!(pool.in_use_bytes(), 2 * 4096);
        let a_ptr = a.as_ptr();
        drop(a);
        drop(b);
        assert_eq!(pool.cached(), 1, "second buffer beyond the cap is freed");
        assert_eq!(pool.in_use_bytes(), 0);
        let again = pool.take();
        assert_eq!(again.as_ptr(), a_ptr);
        assert_eq!((pool.cached(), pool.in_use_bytes()), (0, 4096));
    }

    #[test]
    fn returned_buffers_are_cleared_and_grown_ones_freed() {
        let pool = Rc::new(BufferPool::new(16, 4));
        let mut a = pool.take();
        a.extend_from_slice(b"hello");
        drop(a);
        assert!(pool.take().is_empty());
        let mut big = pool.take();
        big.reserve(1000);
        assert_eq!(pool.in_use_bytes(), big.capacity(), "growth is counted");
        drop(big);
        assert_eq!((pool.cached(), pool.in_use_bytes()), (0, 0));
    }

    #[test]
    fn every_way_a_buffer_grows_is_counted() {
        let pool = Rc::new(BufferPool::new(8, 4));
        let mut a = pool.take();
        a.extend_from_slice(&[1; 20]);
        let after_extend = a.capacity();
        assert!(after_extend >= 20);
        assert_eq!(pool.in_use_bytes(), after_extend);
        a.clear();
        for _ in 0..=after_extend {
            a.push(0);
        }
        assert_eq!(pool.in_use_bytes(), a.capacity());
        a.with_vec(|v| v.reserve_exact(v.capacity() * 4));
        assert_eq!(pool.in_use_bytes(), a.capacity());
        a.with_vec(Vec::shrink_to_fit);
        assert_eq!(pool.in_use_bytes(), a.capacity(), "shrinking is counted");
        drop(a);
        assert_eq!((pool.cached(), pool.in_use_bytes()), (0, 0));
    }

    #[test]
    fn a_detached_buffer_stays_counted_until_reattached_and_dropped() {
        let pool = Rc::new(BufferPool::new(64, 4));
        let mut a = pool.take();
        a.extend_from_slice(b"partial record");
        let detached = a.detach();
        assert_eq!(pool.in_use_bytes(), 64);
        let a = pool.reattach(detached);
        assert_eq!(&a[..], b"partial record");
        assert_eq!(pool.in_use_bytes(), 64);
        drop(a);
        assert_eq!((pool.cached(), pool.in_use_bytes()), (1, 0));
    }

    #[test]
    fn a_buffer_moved_into_a_dropped_read_comes_back() {
        // What a cancelled read does to its buffer: the operation owns it (here a slice of it) and drops it.
        let pool = Rc::new(BufferPool::new(32, 4));
        let mut a = pool.take();
        a.push(7);
        let slice = a.slice_mut(1..32);
        assert_eq!(pool.in_use_bytes(), 32);
        drop(slice);
        assert_eq!((pool.cached(), pool.in_use_bytes()), (1, 0));
    }

    #[test]
    fn io_traits_see_the_vec() {
        let pool = Rc::new(BufferPool::new(32, 4));
        let mut a = pool.take();
        a.extend_from_slice(b"abc");
        assert_eq!(a.bytes_init(), 3);
        assert_eq!(a.bytes_total(), 32);
        assert_eq!(a.read_ptr(), a.as_ptr());
        // SAFETY: 3 bytes are initialised.
        #[allow(unsafe_code)]
        unsafe {
            a.set_init(2);
        }
        assert_eq!(&a[..], b"ab");
    }

    #[test]
    fn in_use_returns_to_zero_whatever_the_order() {
        let pool = Rc::new(BufferPool::new(128, 2));
        let mut held: Vec<PoolBuf> = (0..5).map(|_| pool.take()).collect();
        assert_eq!(pool.in_use_bytes(), 5 * 128);
        held.swap(0, 3);
        held.truncate(2);
        assert_eq!(pool.in_use_bytes(), 2 * 128);
        assert_eq!(pool.cached(), 2, "the cap holds");
        drop(held);
        assert_eq!((pool.cached(), pool.in_use_bytes()), (2, 0));
    }
}
