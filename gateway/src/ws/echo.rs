//! The built-in `echo` target: a WebSocket echo endpoint served by the gateway itself (routes with `echo: true`),
//! for smoke-testing a deployment without any upstream.
//!
//! Owns: echoing data frames back with the same fragmentation, answering pings, completing the close handshake,
//! closing with the right code on a protocol violation, and the relay's bounds: the idle timeout on reads and on a
//! stalled write, and no read while a write is pending. Does not own: the handshake (`super::accept`).

use std::rc::Rc;
use std::time::Duration;

use frame_simd::{
    Decoded, DecoderConfig, FrameDecoder, FrameHeader, OpCode, PayloadMode, Role, Rsv,
    encode_close_payload, parse_close_payload,
};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use ringway_config::WebSocketSettings;

use super::relay::side::{push_control_frame, push_frame};
use crate::runtime::buffer_pool::BufferPool;

/// Serves an echo session until the close handshake completes, the peer fails, or `idle_timeout` passes.
pub(crate) async fn serve<S: AsyncReadRent + AsyncWriteRent>(
    mut stream: S,
    early: Vec<u8>,
    ws: &WebSocketSettings,
    close_timeout: Duration,
    pool: &Rc<BufferPool>,
) {
    let mut decoder = FrameDecoder::new(DecoderConfig {
        peer: Role::Client,
        max_frame_size: ws.max_frame_size,
        max_message_size: ws.max_message_size,
        allowed_rsv: Rsv::default(),
        validate_utf8: ws.validate_utf8,
        payload: PayloadMode::Unmask,
    });
    let mut input = pool.take();
    input.extend_from_slice(&early);
    let mut output: Vec<u8> = Vec::new();
    let mut closing = false;
    loop {
        let mut pos = 0;
        let mut done = false;
        // Where `output` is between frames (a Close may follow); `None` inside a frame whose header went out with
        // an earlier batch.
        let mut boundary = (decoder.remaining_in_frame() == 0).then_some(output.len());
        let mut cut = false;
        while pos < input.len() && !done {
            match decoder.decode(&mut input[pos..]) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::DataHeader { header, len }) => {
                    push_frame(
                        &mut output,
                        FrameHeader {
                            mask: None,
                            ..header
                        },
                        &[],
                    );
                    pos += len;
                    if decoder.remaining_in_frame() == 0 {
                        boundary = Some(output.len());
                    }
                }
                Ok(Decoded::DataPayload { len, frame_end, .. }) => {
                    output.extend_from_slice(&input[pos..pos + len]);
                    pos += len;
                    if frame_end {
                        boundary = Some(output.len());
                    }
                }
                Ok(Decoded::Control { opcode, len }) => {
                    pos += len;
                    boundary = Some(output.len());
                    match opcode {
                        OpCode::Ping => push_control_frame(
                            &mut output,
                            OpCode::Pong,
                            decoder.control_payload(),
                            None,
                        ),
                        OpCode::Close => {
                            let code = parse_close_payload(decoder.control_payload())
                                .ok()
                                .flatten();
                            push_close(&mut output, code.map_or(1000, |(c, _)| c));
                            done = true;
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    // The echo of the offending frame is dropped: its header promised payload that will not come,
                    // so the Close goes right after the last whole frame (as the relay does).
                    match boundary {
                        Some(at) => {
                            tracing::debug!(error = %e, "echo: protocol violation");
                            output.truncate(at);
                            push_close(&mut output, e.close_code());
                        }
                        None => {
                            // The frame's header went out with an earlier batch: nothing can follow it.
                            tracing::info!(error = %e, "echo: protocol violation inside a frame already being echoed; connection cut");
                            output.clear();
                            cut = true;
                        }
                    }
                    done = true;
                }
            }
        }
        if cut {
            return;
        }
        input.drain(..pos);
        if !output.is_empty() {
            // Nothing is read while a write is pending (backpressure: at most one batch is held), and a client that
            // stops reading gets as long as the relay gives a stalled write: the idle timeout.
            let write = stream.write_all(std::mem::take(&mut output));
            match monoio::time::timeout(ws.idle_timeout, write).await {
                Ok((Ok(_), out)) => {
                    output = out;
                    output.clear();
                }
                Ok((Err(_), _)) => break,
                Err(_) => {
                    tracing::info!(
                        "echo: the client stopped reading for the idle timeout; closing"
                    );
                    return;
                }
            }
        }
        if done {
            closing = true;
            break;
        }
        if input.len() == input.capacity() {
            input.reserve(input.capacity());
        }
        let start = input.len();
        let cap = input.capacity();
        let read =
            monoio::time::timeout(ws.idle_timeout, stream.read(input.slice_mut(start..cap))).await;
        match read {
            Ok((Ok(n), slice)) if n > 0 => input = slice.into_inner(),
            Ok((_, slice)) => {
                input = slice.into_inner();
                break;
            }
            Err(_) => {
                // The buffer went with the cancelled read (back to the pool once the kernel lets go of it).
                push_close(&mut output, 1001);
                let _ = monoio::time::timeout(close_timeout, stream.write_all(output)).await;
                linger(&mut stream, close_timeout).await;
                return;
            }
        }
    }
    drop(input);
    if closing {
        linger(&mut stream, close_timeout).await;
    }
}

/// Gives the client a moment to send its close answer / FIN before the socket is dropped.
async fn linger<S: AsyncReadRent>(stream: &mut S, close_timeout: Duration) {
    let _ = monoio::time::timeout(close_timeout, stream.read(vec![0u8; 256])).await;
}

fn push_close(out: &mut Vec<u8>, code: u16) {
    let mut payload = [0u8; 125];
    let n = encode_close_payload(code, "", &mut payload);
    push_control_frame(out, OpCode::Close, &payload[..n], None);
}
