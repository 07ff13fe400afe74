//! Everything about upstream servers and their connections: choosing a server ([`balancer`]), opening a connection
//! to it ([`connect`], TLS included, as one [`stream`] type), reading its response head ([`response`]), and keeping idle keep-alive connections for reuse
//! ([`pool`]).
//!
//! Does not own: what is said on a connection (plain HTTP in `crate::http_proxy`, the WebSocket handshake in
//! `crate::ws`). Depends on nothing above it, so the worker context can hold these parts without a cycle.

pub(crate) mod balancer;
pub(crate) mod connect;
pub(crate) mod health;
pub(crate) mod pool;
pub(crate) mod resolve;
pub(crate) mod response;
pub(crate) mod stream;

pub(crate) use balancer::{ActiveGuard, Balancer, hash_input};
pub(crate) use connect::{ConnectError, connect, connect_to};
pub(crate) use pool::UpstreamPool;
pub(crate) use stream::UpstreamStream;
