//! Forwarding an upstream's non-101 answer to an upgrade (say 401 or 404) to the client as is, bounded in time.
//!
//! Owns: finding where that answer's body ends (Content-Length, chunked, or the upstream's close) so nothing after it
//! reaches the client. Does not own: deciding that the answer is a refusal (`super::dial`).

use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent};

use crate::answer::respond;
use crate::http::body::{self, BodyKind, BodyProgress};
use crate::http::head::ResponseHead;

/// Forwards an upstream's non-101 answer (e.g. 401) to the client as is: the head, then the body as the upstream
/// framed it (Content-Length, chunked, or until it closes), bounded by `timeout`. The client connection is closed
/// after it (`Connection: close` semantics: the upgrade request is not reused).
pub(crate) async fn forward<C, S>(
    client: &mut C,
    upstream: &mut S,
    head: &ResponseHead,
    mut buf: Vec<u8>,
    timeout: Duration,
) where
    C: AsyncWriteRent,
    S: AsyncReadRent + CancelableAsyncReadRent,
{
    let kind = match body::response_body_kind("GET", head) {
        Ok(kind) => kind,
        Err(e) => {
            tracing::info!(error = %e, "upstream refusal has a malformed body; answering 502");
            respond(client, 502, &[], "bad upstream response\n").await;
            return;
        }
    };
    let work = async {
        let mut body = RefusalBody::new(kind);
        // The head and whatever body bytes arrived with it.
        let mut end = head.head_len + body.take(&buf[head.head_len..]);
        loop {
            buf.truncate(end);
            let (res, b) = client.write_all(buf).await;
            buf = b;
            res?;
            if body.done() {
                return std::io::Result::Ok(());
            }
            buf.clear();
            buf.reserve(16 * 1024);
            let cap = buf.capacity();
            let (res, slice) = upstream.read(buf.slice_mut(0..cap)).await;
            buf = slice.into_inner();
            if res? == 0 {
                return Ok(());
            }
            end = body.take(&buf);
        }
    };
    let _ = monoio::time::timeout(timeout, work).await;
}

/// Tracks where a refusal's body ends; its bytes are forwarded as the upstream framed them.
struct RefusalBody {
    progress: BodyProgress,
    scratch: Vec<u8>,
}

impl RefusalBody {
    fn new(kind: BodyKind) -> Self {
        Self {
            progress: BodyProgress::new(kind, true),
            scratch: Vec::new(),
        }
    }

    /// How many bytes of `input` belong to the body (the rest is dropped). Broken framing ends the body.
    fn take(&mut self, input: &[u8]) -> usize {
        self.scratch.clear();
        match self.progress.feed(input, &mut self.scratch) {
            Ok(n) => n,
            Err(_) => {
                self.progress = BodyProgress::Done;
                0
            }
        }
    }

    fn done(&self) -> bool {
        self.progress.is_done()
    }
}
