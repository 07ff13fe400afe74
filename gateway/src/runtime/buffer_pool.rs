//! Per-worker pool of I/O buffers.
//!
//! Owns: the buffers a connection borrows while bytes are in flight. A relay leg takes a buffer when its socket has
//! data and gives it back as soon as the bytes are written on, so an idle connection pins none. The pool keeps at
//! most `max_cached` free buffers; beyond that, returned buffers are freed (memory is bounded by in-flight data,
//! not by the number of connections). Single-threaded by design (one pool per worker, `!Sync`).

use std::cell::RefCell;

/// A pool of equally sized byte buffers for one worker thread.
pub(crate) struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
    buffer_size: usize,
    max_cached: usize,
}

impl BufferPool {
    /// A pool handing out buffers of `buffer_size` bytes, caching up to `max_cached` free ones.
    pub(crate) fn new(buffer_size: usize, max_cached: usize) -> Self {
        Self {
            free: RefCell::new(Vec::new()),
            buffer_size,
            max_cached,
        }
    }

    /// Takes an empty buffer with capacity `buffer_size`.
    pub(crate) fn take(&self) -> Vec<u8> {
        match self.free.borrow_mut().pop() {
            Some(buf) => buf,
            None => Vec::with_capacity(self.buffer_size),
        }
    }

    /// Returns a buffer. Buffers of the wrong capacity (grown or shrunk by a caller) are dropped.
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if buf.capacity() == self.buffer_size && free.len() < self.max_cached {
            buf.clear();
            free.push(buf);
        }
    }

    /// Number of free buffers currently cached.
    pub(crate) fn cached(&self) -> usize {
        self.free.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_returned_buffers_up_to_the_cap() {
        let pool = BufferPool::new(4096, 1);
        let a = pool.take();
        let b = pool.take();
        assert_eq!(a.capacity(), 4096);
        let a_ptr = a.as_ptr();
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.cached(), 1, "second buffer beyond the cap is freed");
        let again = pool.take();
        assert_eq!(again.as_ptr(), a_ptr);
    }

    #[test]
    fn returned_buffers_are_cleared_and_resized_ones_dropped() {
        let pool = BufferPool::new(16, 4);
        let mut a = pool.take();
        a.extend_from_slice(b"hello");
        pool.give(a);
        assert!(pool.take().is_empty());
        let mut big = pool.take();
        big.reserve(1000);
        pool.give(big);
        assert_eq!(pool.cached(), 0);
    }
}
