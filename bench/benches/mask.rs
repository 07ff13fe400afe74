//! Masking throughput: byte-wise scalar, u64 word loop, every SIMD level this CPU has, the
//! dispatched `apply_mask`, and `copy_from_slice` (memcpy) of the same size as the ceiling.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use frame_simd::mask::{self, Level};
use ringway_bench::{KEY, MASK_SIZES, pattern, size_label};

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in MASK_SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let label = size_label(size);
        let mut buf = pattern(size);
        // The portable loops are called directly (inlinable, like the dispatched entry point);
        // the SIMD kernels are out-of-line `#[target_feature]` functions in any case.
        group.bench_with_input(BenchmarkId::new("scalar", &label), &size, |b, _| {
            b.iter(|| mask::scalar::apply_mask(black_box(&mut buf), KEY, 1))
        });
        group.bench_with_input(BenchmarkId::new("word", &label), &size, |b, _| {
            b.iter(|| mask::word::apply_mask(black_box(&mut buf), KEY, 1))
        });
        for level in Level::all_available().filter(|l| *l > Level::Word) {
            group.bench_with_input(BenchmarkId::new(level.name(), &label), &size, |b, _| {
                b.iter(|| mask::apply_mask_with(level, black_box(&mut buf), KEY, 1).unwrap())
            });
        }
        group.bench_with_input(BenchmarkId::new("dispatched", &label), &size, |b, _| {
            b.iter(|| mask::apply_mask(black_box(&mut buf), KEY, 1))
        });
        let src = pattern(size);
        group.bench_with_input(BenchmarkId::new("memcpy", &label), &size, |b, _| {
            b.iter(|| black_box(&mut buf[..]).copy_from_slice(black_box(&src)))
        });
    }
    group.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
