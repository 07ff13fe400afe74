//! What each worker's connections share that is about running, not about a protocol: the pool of I/O buffers
//! ([`buffer_pool`]), the worker's coarse clock ([`clock`]) and the one timer that drives every relay's deadlines and
//! parks idle reads ([`sweeper`]), the drain schedule ([`drain`]) and the panic fence around each connection task
//! ([`isolate`]): per worker, never shared across threads. Beside them, the little the whole process shares
//! ([`process`]: readiness, the drain flag, metrics registry) and systemd's notifications ([`notify`]).

pub(crate) mod buffer_pool;
pub(crate) mod clock;
pub(crate) mod drain;
pub(crate) mod isolate;
pub(crate) mod notify;
pub(crate) mod process;
pub(crate) mod sweeper;
