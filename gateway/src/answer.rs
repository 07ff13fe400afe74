//! The gateway's own short answers to a client (errors, refusals): one small response, written within a bound, so a
//! client that does not read cannot hold the task that refuses it.
//!
//! Does not own: which status to answer (the callers decide), nor any forwarded response.
//!
//! A gateway-side failure (5xx) is answered with a generic body: its detail (upstream addresses, OS errors) is for the
//! log, not for clients ([`respond_error`]).

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

/// Answers a failure: a 4xx says what was wrong with the request (`detail`); a 5xx gets only its generic reason,
/// since the detail names internal addresses and OS errors (the caller logs it). A 503 says `Retry-After: 1`: every
/// 503 of the gateway is a moment's condition (no server free or healthy, the gateway out of descriptors).
pub(crate) async fn respond_error<S: AsyncWriteRent>(stream: &mut S, status: u16, detail: &str) {
    let extra: &[(&str, &str)] = if status == 503 {
        &[("retry-after", "1")]
    } else {
        &[]
    };
    respond(stream, status, extra, &public_body(status, detail)).await;
}

/// The body a client sees for a failure with this status and detail.
fn public_body(status: u16, detail: &str) -> String {
    match status {
        500..=599 => format!(
            "{}\n",
            match status {
                502 => "bad gateway: the upstream could not be reached or answered badly",
                503 => "service unavailable: no upstream can take the request now",
                504 => "gateway timeout: the upstream did not answer in time",
                _ => "the gateway could not complete the request",
            }
        ),
        _ => format!("{detail}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_failures_do_not_show_their_detail() {
        let detail = "connecting to 10.0.0.5:9001 failed: Connection refused (os error 111)";
        for status in [500, 502, 503, 504] {
            let body = public_body(status, detail);
            assert!(
                !body.contains("10.0.0.5") && !body.contains("os error"),
                "{status}: {body}"
            );
        }
        assert_eq!(public_body(400, "missing Host"), "missing Host\n");
    }
}
