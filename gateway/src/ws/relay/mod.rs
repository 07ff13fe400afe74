//! The frame-aware relay between a client and an upstream WebSocket after both handshakes succeeded.
//!
//! Owns: moving frames both ways, validating every frame with `frame_simd` (masking, control and fragmentation
//! rules, UTF-8, size limits), the gateway's own keepalive (ping after silence, drop the pongs that answer it, close a
//! peer that does not answer), bridging the close handshake with a timeout, and tearing both legs down together.
//! Does not own: handshakes, routing, or TLS (it is generic over the stream type).
//!
//! Three parts: [`session`] holds every rule, sans-IO (fed batches, events and `now`; it answers with what to forward,
//! which control frames to write and whom to wake); [`side`] is one socket's write slot and control-frame writer;
//! [`io`] is the loop that drives a session over two sockets; [`rate`] holds the message and byte rate buckets.

mod io;
pub(crate) mod rate;
pub(crate) mod session;
pub(crate) mod side;

pub(crate) use io::{PeriodicLog, RelayMetrics, relay};
pub(crate) use session::RelaySettings;
