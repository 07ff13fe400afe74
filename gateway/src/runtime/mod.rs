//! What each worker's connections share that is about running, not about a protocol: the pool of I/O buffers
//! ([`buffer_pool`]), the worker's coarse clock ([`clock`]) and the one timer that drives every relay's deadlines and
//! parks idle reads ([`sweeper`]), and the panic fence around each connection task ([`isolate`]). Per worker, never shared across threads; depends on nothing above it.

pub(crate) mod buffer_pool;
pub(crate) mod clock;
pub(crate) mod isolate;
pub(crate) mod sweeper;
