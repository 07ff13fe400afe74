//! HTTP/1.1 wire pieces, sans-IO: message heads ([`head`]) and body framing ([`body`]).

pub mod body;
pub mod head;
