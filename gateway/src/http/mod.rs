//! HTTP/1.1 wire pieces, sans-IO: message heads ([`head`]), body framing ([`body`]), the path a request is routed
//! on (`path`), and turning a client's request head into the upstream's (`rewrite`).

pub mod body;
pub mod head;
pub(crate) mod path;
pub(crate) mod redact;
pub(crate) mod rewrite;
