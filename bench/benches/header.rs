//! Header and frame decode cost per frame (ns/frame): `FrameHeader::decode` for each length class,
//! and the whole `FrameDecoder` path (header, unmask, UTF-8) for small text frames.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use frame_simd::{Decoded, DecoderConfig, FrameDecoder, FrameHeader, MAX_HEADER_LEN, OpCode};
use ringway_bench::{KEY, client_frame};

fn header_decode(c: &mut Criterion) {
    let cfg = DecoderConfig {
        max_frame_size: u64::MAX,
        ..DecoderConfig::default()
    };
    let mut group = c.benchmark_group("header");
    group.throughput(Throughput::Elements(1));
    for (name, len) in [("7bit", 100u64), ("16bit", 1000), ("64bit", 1 << 20)] {
        let mut raw = [0u8; MAX_HEADER_LEN];
        let n = FrameHeader::client(OpCode::Binary, len, KEY).encode(&mut raw);
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| FrameHeader::decode(black_box(&raw[..n]), &cfg.header_rules()).unwrap())
        });
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            let h = FrameHeader::client(OpCode::Binary, len, KEY);
            let mut out = [0u8; MAX_HEADER_LEN];
            b.iter(|| black_box(&h).encode(black_box(&mut out)))
        });
    }
    // 64 text frames of 16 bytes each through the full decoder, reported per frame.
    let frame = client_frame(OpCode::Text, b"hello, ringway!!");
    let stream: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 64)
        .collect();
    group.throughput(Throughput::Elements(64));
    group.bench_function(BenchmarkId::new("decoder", "text16x64"), |b| {
        let mut buf = stream.clone();
        b.iter(|| {
            buf.copy_from_slice(&stream);
            let mut dec = FrameDecoder::new(DecoderConfig::default());
            let mut at = 0;
            while at < buf.len() {
                match dec.decode(&mut buf[at..]).unwrap() {
                    Decoded::DataHeader { len, .. }
                    | Decoded::Control { len, .. }
                    | Decoded::DataPayload { len, .. } => at += len,
                    Decoded::Incomplete => break,
                }
            }
            at
        })
    });
    group.finish();
}

criterion_group!(benches, header_decode);
criterion_main!(benches);
