//! A per-worker coarse timer for relays.
//!
//! Owns: one periodic tick per worker that looks at every live relay and wakes the legs that must act: a read that
//! has waited [`crate::ws::relay::side::PARK_AFTER`] (so it parks and gives its buffer back), a leg whose deadline passed
//! (keepalive, idle, close timeouts), a write stalled past the idle timeout. One timer per worker instead of one
//! per leg keeps each idle connection small (a monoio timer entry is 640 bytes) and the hot path free of timer
//! bookkeeping. Deadlines are therefore coarse: up to one [`TICK`] late. Each tick also advances the worker's coarse
//! [`crate::runtime::clock`], which the relay uses to stamp its batches.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use super::drain::DrainPlan;

/// How often the sweeper looks at the relays.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// Lets the allocator return memory freed a while ago to the OS (called on every tick).
///
/// mimalloc gives freed memory back to the OS (purges it) only after a delay (1 s) and only when it next frees a page
/// of its own accord. After a burst of handshakes the worker goes quiet — idle relays allocate nothing — so the
/// handshake-time memory of thousands of connections stayed resident for good. Allocating and freeing one block above
/// mimalloc's largest size class (a page of its own, released at once) runs that purge. The block is never written,
/// so it costs no resident memory; a tick costs one allocation and one free.
/// Measured with `bench/peers.sh`'s idle scenario (one worker pinned to one core, 9,000 idle proxied connections
/// opened at once, RSS growth per connection 2.5 s after the last one is up): 4.7–8.9 KiB without the nudge (the
/// high figure whenever many handshakes were in flight at the peak), 4.0–4.9 KiB with it. What remains is mostly
/// pages shared by long-lived relay state and freed handshake-time objects; `mi_collect(force)` on every tick does
/// not go below it either (tried).
fn nudge_allocator() {
    let block: Vec<u8> = Vec::with_capacity(NUDGE_BLOCK_BYTES);
    drop(std::hint::black_box(block));
}

/// Above mimalloc's largest size class (512 KiB): a block of its own page.
const NUDGE_BLOCK_BYTES: usize = 1 << 20;

/// Something the sweeper looks at on every tick.
pub(crate) trait Sweep {
    /// `drain`: the worker is draining (each item schedules its own close).
    fn sweep(&self, now: Instant, drain: Option<&DrainPlan>);
}

/// The registry of live relays of one worker.
#[derive(Default)]
pub(crate) struct Sweeper {
    entries: RefCell<Vec<Option<Weak<dyn Sweep>>>>,
    free: RefCell<Vec<usize>>,
    drain: Cell<Option<DrainPlan>>,
}

/// Unregisters its entry when dropped.
pub(crate) struct Registration {
    sweeper: Rc<Sweeper>,
    index: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(slot) = self.sweeper.entries.borrow_mut().get_mut(self.index) {
            *slot = None;
            self.sweeper.free.borrow_mut().push(self.index);
        }
    }
}

impl Sweeper {
    pub(crate) fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    /// Registers `item` until the returned registration is dropped.
    pub(crate) fn register(self: &Rc<Self>, item: Weak<dyn Sweep>) -> Registration {
        let index = match self.free.borrow_mut().pop() {
            Some(i) => {
                self.entries.borrow_mut()[i] = Some(item);
                i
            }
            None => {
                let mut entries = self.entries.borrow_mut();
                entries.push(Some(item));
                entries.len() - 1
            }
        };
        Registration {
            sweeper: self.clone(),
            index,
        }
    }

    /// Looks at every registered item once.
    pub(crate) fn sweep(&self, now: Instant) {
        let drain = self.drain.get();
        // Items only wake tasks here; none registers or unregisters during the walk.
        let entries = self.entries.borrow();
        for item in entries.iter().flatten() {
            if let Some(item) = item.upgrade() {
                item.sweep(now, drain.as_ref());
            }
        }
    }

    /// Starts draining this worker's relays (the first plan wins).
    pub(crate) fn start_drain(&self, plan: DrainPlan) {
        if self.drain.get().is_none() {
            self.drain.set(Some(plan));
        }
    }

    /// The drain under way, if any.
    pub(crate) fn drain(&self) -> Option<DrainPlan> {
        self.drain.get()
    }

    /// Live registrations (relays) on this worker.
    pub(crate) fn live(&self) -> usize {
        self.entries.borrow().iter().filter(|e| e.is_some()).count()
    }

    /// Ticks forever (spawned once per worker).
    pub(crate) async fn run(self: Rc<Self>) {
        loop {
            monoio::time::sleep(TICK).await;
            self.sweep(crate::runtime::clock::advance());
            nudge_allocator();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    struct Counter(Cell<usize>);

    impl Sweep for Counter {
        fn sweep(&self, _now: Instant, _drain: Option<&DrainPlan>) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn sweeps_registered_items_until_they_unregister() {
        let sweeper = Sweeper::new();
        let a = Rc::new(Counter(Cell::new(0)));
        let b = Rc::new(Counter(Cell::new(0)));
        let weak_a: Weak<dyn Sweep> = Rc::downgrade(&a) as Weak<dyn Sweep>;
        let reg_a = sweeper.register(weak_a);
        let weak_b: Weak<dyn Sweep> = Rc::downgrade(&b) as Weak<dyn Sweep>;
        let _reg_b = sweeper.register(weak_b);
        sweeper.sweep(Instant::now());
        drop(reg_a);
        sweeper.sweep(Instant::now());
        assert_eq!((a.0.get(), b.0.get()), (1, 2));
        assert_eq!(sweeper.live(), 1);
        // The freed slot is reused.
        let c = Rc::new(Counter(Cell::new(0)));
        let weak_c: Weak<dyn Sweep> = Rc::downgrade(&c) as Weak<dyn Sweep>;
        let reg_c = sweeper.register(weak_c);
        assert_eq!(reg_c.index, 0);
    }
}
