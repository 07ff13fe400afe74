//! Ringway: a frame-aware WebSocket gateway and HTTP/1.1 reverse proxy on monoio (io_uring, epoll fallback).
//!
//! Shape: [`server`] starts one monoio runtime per worker thread, each with its own SO_REUSEPORT listener and its own
//! [`worker::WorkerCtx`] (balancers, buffer pool, upstream connection pool) — nothing shared and mutable between
//! workers. Each accepted connection is served by [`conn`]: it reads a request head, routes it, and either proxies a
//! plain HTTP exchange ([`http_proxy`]) or performs the WebSocket upgrade ([`ws`]) and hands both legs to the
//! frame-aware relay ([`ws::relay`]). Upstream servers are chosen, connected and pooled by [`upstream`].

mod answer;
pub mod buffer_pool;
pub mod clock;
pub mod conn;
pub mod echo;
pub mod http;
pub mod http_proxy;
pub mod server;
pub mod sweeper;
pub mod upstream;
pub mod worker;
pub mod ws;
