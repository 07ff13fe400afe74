//! UTF-8 validation throughput on ASCII and mixed multibyte text: `std::str::from_utf8` against the
//! incremental validator (SIMD and std backends), whole and fed in 1500-byte reads.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use frame_simd::utf8::{Backend, Utf8Validator};
use ringway_bench::{ascii_text, mixed_text, size_label};

const SIZE: usize = 64 << 10;
/// A typical TCP segment payload: reads cut code points at arbitrary places.
const READ: usize = 1500;

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for (name, text) in [("ascii", ascii_text(SIZE)), ("mixed", mixed_text(SIZE))] {
        let bytes = text.as_bytes();
        let id = format!("{name}-{}", size_label(SIZE));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("std", &id), bytes, |b, bytes| {
            b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok())
        });
        for backend in Backend::ALL {
            let fn_name = match backend {
                Backend::Std => "validator-std",
                Backend::Simd => "validator-simd",
            };
            group.bench_with_input(BenchmarkId::new(fn_name, &id), bytes, |b, bytes| {
                let mut v = Utf8Validator::with_backend(backend);
                b.iter(|| {
                    v.feed(black_box(bytes)).unwrap();
                    v.finish().unwrap();
                })
            });
        }
        group.bench_with_input(
            BenchmarkId::new("validator-simd-1500B-reads", &id),
            bytes,
            |b, bytes| {
                let mut v = Utf8Validator::new();
                b.iter(|| {
                    for read in black_box(bytes).chunks(READ) {
                        v.feed(read).unwrap();
                    }
                    v.finish().unwrap();
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
