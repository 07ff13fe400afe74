//! Keeping a bug in one connection's task from ending its worker.
//!
//! Owns: [`isolated`], which runs a connection's future and turns a panic inside it into an error log and the end
//! of that one task. A panic in a monoio task otherwise unwinds through the worker's event loop and takes every
//! connection of the worker with it. Does not own: preventing panics (network input must not cause any; this is
//! the second line).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Poll;

/// Runs `fut`; a panic while polling it ends only this future (logged with `what`).
pub(crate) async fn isolated<F: Future<Output = ()>>(what: &'static str, fut: F) {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        // The future is dropped right after a panic and never polled again, so a broken invariant inside it cannot
        // be observed (what `AssertUnwindSafe` asks of us).
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(task = what, "BUG: a connection task panicked and was closed: {message}");
                Poll::Ready(())
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_task_ends_alone() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        let survived = rt.block_on(async {
            let doomed = monoio::spawn(isolated("test", async {
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                panic!("boom");
            }));
            let other = monoio::spawn(async {
                monoio::time::sleep(std::time::Duration::from_millis(5)).await;
                true
            });
            doomed.await;
            other.await
        });
        assert!(survived);
    }
}
