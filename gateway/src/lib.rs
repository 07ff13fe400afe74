//! Ringway: a frame-aware WebSocket gateway and HTTP/1.1 reverse proxy on monoio (io_uring, epoll fallback).
//!
//! Shape: [`server`] starts one monoio runtime per worker thread, each with its own SO_REUSEPORT listener and its own
//! `worker::WorkerCtx` (balancers, buffer pool, upstream connection pool) — nothing shared and mutable between
//! workers. Each accepted connection is served by `conn`: it reads a request head, routes it, and either proxies a
//! plain HTTP exchange (`http_proxy`) or performs the WebSocket upgrade (`ws`) and hands both legs to the
//! frame-aware relay (`ws::relay`). Upstream servers are chosen, connected and pooled by `upstream`; `runtime` holds
//! the per-worker buffer pool, clock and timer. A TLS listener runs the handshake first (`tls`) and then the same
//! code over the decrypted stream.
//!
//! Public surface: [`server`] (what the `ringway` binary runs), [`http`]'s sans-IO head and body parsers, the
//! sans-IO [`proxy_protocol`] parser and encoder, and `tls::fuzzing` (for the fuzz targets and tests). Everything else is `pub(crate)`, and `unreachable_pub` keeps it so.

#![deny(unreachable_pub)]

pub(crate) mod admin;
mod answer;
pub(crate) mod auth;
pub(crate) mod conn;
pub mod http;
pub(crate) mod http_proxy;
pub(crate) mod limits;
pub(crate) mod metrics;
pub mod proxy_protocol;
pub(crate) mod runtime;
pub mod server;
pub mod tls;
pub(crate) mod upstream;
pub(crate) mod worker;
pub(crate) mod ws;
