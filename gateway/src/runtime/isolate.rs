//! Keeping a bug in one connection's task from ending its worker.
//!
//! Owns: [`isolated`], which runs a connection's future and turns a panic inside it into an error log and the end
//! of that one task. A panic in a monoio task otherwise unwinds through the worker's event loop and takes every
//! connection of the worker with it. Does not own: preventing panics (network input must not cause any; this is
//! the second line).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// A future whose panics end only itself. A struct rather than an `async fn`: an `async fn` would keep the
    /// argument and its pinned copy side by side, doubling the size of every connection and relay task.
    pub(crate) struct Isolated<F> {
        #[pin]
        fut: F,
    }
}

/// Runs `fut`; a panic while polling it ends only this future (and is logged). Adds nothing to the future's size:
/// every idle WebSocket's relay task is one of these.
pub(crate) fn isolated<F: Future<Output = ()>>(fut: F) -> Isolated<F> {
    Isolated { fut }
}

impl<F: Future<Output = ()>> Future for Isolated<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let fut = this.fut;
        // After a panic the task completes and the future is dropped, never polled again, so a broken invariant
        // inside it cannot be observed (what `AssertUnwindSafe` asks of us).
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!("BUG: a connection task panicked and was closed: {message}");
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_adds_only_its_label_to_a_task() {
        let task = async {
            let buf = [0u8; 1000];
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            std::hint::black_box(buf);
        };
        let plain = std::mem::size_of_val(&task);
        assert_eq!(std::mem::size_of_val(&isolated(task)), plain);
    }

    #[test]
    fn a_panicking_task_ends_alone() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        let survived = rt.block_on(async {
            let doomed = monoio::spawn(isolated(async {
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
