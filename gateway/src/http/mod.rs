//! HTTP/1.1 wire pieces, sans-IO: message heads ([`head`]), body framing ([`body`]), and turning a client's request
//! head into the upstream's (`rewrite`).

pub mod body;
pub mod head;
pub(crate) mod redact;
pub(crate) mod rewrite;
