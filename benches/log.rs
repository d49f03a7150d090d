//! Micro-benchmarks of `shardline-log`: appending 16 KiB batches (16 records of 1 KiB)
//! with and without group-commit fsyncs, and indexed reads at random offsets of a
//! 64 MiB log.
//!
//! Appends run against fresh logs of at most 64 MiB each, so a long measurement does
//! not fill the disk; creating and removing those logs is not timed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shardline_log::{LogConfig, ShardLog};
use shardline_records::build_simple_batch;

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;
/// Appends between fsyncs in the group-commit benchmark: 64 KiB of records.
const BATCHES_PER_SYNC: usize = 4;
/// Size of each log the append benchmarks write before starting a fresh one.
const LOG_BYTES_MAX: usize = 64 << 20;

fn batch() -> Vec<u8> {
    let value = vec![0x5a; RECORD_BYTES];
    let values: Vec<&[u8]> = (0..RECORDS_PER_BATCH).map(|_| value.as_slice()).collect();
    build_simple_batch(1_700_000_000_000, &values)
}

fn fresh_log() -> (tempfile::TempDir, ShardLog) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = ShardLog::open(dir.path(), LogConfig::default(), 0).expect("open log");
    (dir, log)
}

/// Times `iters` rounds of `round` (each appending `batches_per_round` batches), moving
/// to a fresh log whenever the current one would pass [`LOG_BYTES_MAX`].
fn time_rounds(
    iters: u64,
    batches_per_round: usize,
    mut round: impl FnMut(&mut ShardLog),
) -> Duration {
    let rounds_per_log = (LOG_BYTES_MAX / (batch().len() * batches_per_round)).max(1) as u64;
    let mut elapsed = Duration::ZERO;
    let mut remaining = iters;
    while remaining > 0 {
        let rounds = remaining.min(rounds_per_log);
        let (dir, mut log) = fresh_log();
        let start = Instant::now();
        for _ in 0..rounds {
            round(&mut log);
        }
        elapsed += start.elapsed();
        drop(log);
        drop(dir);
        remaining -= rounds;
    }
    elapsed
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append");
    let mut template = batch();
    group.throughput(Throughput::Bytes(template.len() as u64));
    group.bench_function("16x1KiB_no_sync", |b| {
        b.iter_custom(|iters| {
            time_rounds(iters, 1, |log| {
                // append only rewrites the base offset, so the same buffer can go again.
                black_box(log.append(&mut template, 0).expect("append"));
            })
        });
    });
    group.throughput(Throughput::Bytes(
        (template.len() * BATCHES_PER_SYNC) as u64,
    ));
    group.bench_function("16x1KiB_sync_every_64KiB", |b| {
        b.iter_custom(|iters| {
            time_rounds(iters, BATCHES_PER_SYNC, |log| {
                for _ in 0..BATCHES_PER_SYNC {
                    black_box(log.append(&mut template, 0).expect("append"));
                }
                black_box(log.sync_handle().sync().expect("sync"));
            })
        });
    });
    group.finish();
}

fn read(c: &mut Criterion) {
    let (_dir, mut log) = fresh_log();
    let mut template = batch();
    let batch_bytes = template.len();
    let batches = LOG_BYTES_MAX / batch_bytes;
    for _ in 0..batches {
        log.append(&mut template, 0).expect("append");
    }
    // A consumer-style fetch: the batch holding the offset and the three after it.
    let fetch_batches = 4;
    let max_bytes = batch_bytes * fetch_batches;
    let readable = (batches - fetch_batches) as u64 * RECORDS_PER_BATCH as u64;
    let end_offset = log.next_offset();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;

    let mut group = c.benchmark_group("log_read");
    group.throughput(Throughput::Bytes(max_bytes as u64));
    group.bench_function("random_offset_64KiB_of_64MiB", |b| {
        b.iter(|| {
            // xorshift64: random offsets without a dependency.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let bytes = log
                .read(rng % readable, end_offset, max_bytes)
                .expect("read");
            assert_eq!(bytes.len(), max_bytes);
            black_box(bytes)
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = append, read
}
criterion_main!(benches);
