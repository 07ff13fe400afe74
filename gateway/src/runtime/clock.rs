//! The worker's coarse clock for the relay's hot path.
//!
//! Owns: [`now`], the time of the worker's last sweeper tick ([`advance`], every [`crate::runtime::sweeper::TICK`]), so
//! stamping a batch costs a thread-local load instead of a `clock_gettime` call. The relay stamps every batch
//! several times (activity for the idle timer, when a read or write started), and `clock_gettime` showed up in
//! profiles of the 64 B benchmark (figure in README, "Measurements behind the design"). Every consumer of these
//! stamps is the sweeper,
//! which compares them with its own tick time, so a stamp up to one tick old changes nothing. On a thread whose
//! clock was never advanced, [`now`] is the precise time.

use std::cell::Cell;
use std::time::Instant;

thread_local! {
    static LAST_TICK: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time of this thread's last [`advance`] (at most one sweeper tick old), or the precise time if there was none.
pub(crate) fn now() -> Instant {
    LAST_TICK.with(Cell::get).unwrap_or_else(Instant::now)
}

/// Reads the precise time and makes it this thread's [`now`] until the next call.
pub(crate) fn advance() -> Instant {
    let now = Instant::now();
    LAST_TICK.with(|tick| tick.set(Some(now)));
    now
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn precise_until_advanced_then_holds_the_tick_time() {
        std::thread::spawn(|| {
            let before = Instant::now();
            std::thread::sleep(Duration::from_millis(2));
            assert!(now() > before, "not advanced yet: the precise time");
            let tick = advance();
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(now(), tick, "holds the tick time");
            let next = advance();
            assert!(next > tick);
            assert_eq!(now(), next);
        })
        .join()
        .expect("clock test thread");
    }
}
