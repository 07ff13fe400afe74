//! The gateway's own short answers to a client (errors, refusals): one small response, written within a bound, so a
//! client that does not read cannot hold the task that refuses it.
//!
//! Does not own: which status to answer (the callers decide), nor any forwarded response.

use std::time::Duration;

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::http::head::simple_response;

/// How long writing a refusal may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes a `status` answer with `body` and `extra` headers and `Connection: close`.
pub(crate) async fn respond<S: AsyncWriteRent>(
    stream: &mut S,
    status: u16,
    extra: &[(&str, &str)],
    body: &str,
) {
    let answer = simple_response(status, extra, body, true);
    let _ = monoio::time::timeout(ANSWER_TIMEOUT, stream.write_all(answer)).await;
}
