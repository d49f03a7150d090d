//! Behaviour of a whole shard log on a real (temporary) directory.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use shardline_core::batch::{BatchHeader, Batches};
use shardline_records::build_simple_batch;

use super::*;
use crate::layout::SegmentFile;
use crate::segment::IndexSource;

/// A valid batch of `records` values of `value_bytes` each, CreateTime `timestamp_ms`.
pub(super) fn record_batch(timestamp_ms: i64, records: usize, value_bytes: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|n| vec![(n as u8).wrapping_add(value_bytes as u8); value_bytes])
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    build_simple_batch(timestamp_ms, &refs)
}

pub(super) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1 << 20,
        segment_ms_max: 1_000_000,
        index_interval_bytes: 128,
        verify_crc_on_read: true,
    }
}

/// A log plus the bytes it should hold, batch by batch, as stored (offsets assigned).
pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) log: ShardLog,
    pub(super) stored: Vec<Vec<u8>>,
}

impl Fixture {
    pub(super) fn new(config: LogConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = ShardLog::open(dir.path(), config, 0).unwrap();
        Fixture {
            dir,
            log,
            stored: Vec::new(),
        }
    }

    pub(super) fn append(&mut self, mut batch: Vec<u8>, now_ms: i64) -> AppendInfo {
        let info = self.log.append(&mut batch, now_ms).unwrap();
        self.stored.push(batch);
        info
    }

    /// Batches whose records include `offset`, and all after it.
    fn stored_from(&self, offset: u64) -> Vec<u8> {
        self.stored
            .iter()
            .filter(|batch| last_offset(batch) >= offset)
            .flatten()
            .copied()
            .collect()
    }

    pub(super) fn reopen(self, config: LogConfig, now_ms: i64) -> Fixture {
        let Fixture { dir, log, stored } = self;
        drop(log);
        let log = ShardLog::open(dir.path(), config, now_ms).unwrap();
        Fixture { dir, log, stored }
    }
}

fn base_offset(batch: &[u8]) -> u64 {
    BatchHeader::parse(batch).unwrap().base_offset as u64
}

fn last_offset(batch: &[u8]) -> u64 {
    BatchHeader::parse(batch).unwrap().last_offset() as u64
}

pub(super) fn read_all(log: &ShardLog) -> Vec<u8> {
    log.read(log.log_start_offset(), u64::MAX, usize::MAX)
        .unwrap()
        .to_vec()
}

/// Varied batches: 1..=5 records, values of 1..=50 bytes (at most ~350 bytes), timestamps
/// that wander.
fn varied_batches(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|n| record_batch(1000 + (n as i64 * 37) % 101, 1 + n % 5, 1 + (n * 53) % 50))
        .collect()
}

#[test]
fn an_empty_log_starts_at_zero_and_reads_empty() {
    let fixture = Fixture::new(small_config());
    assert_eq!(fixture.log.log_start_offset(), 0);
    assert_eq!(fixture.log.next_offset(), 0);
    assert_eq!(fixture.log.size_bytes(), 0);
    assert!(fixture.log.read(0, 0, 100).unwrap().is_empty());
    assert!(fixture.log.read(0, 10, 100).unwrap().is_empty());
    assert_eq!(fixture.log.offset_for_timestamp(0).unwrap(), None);
    assert!(matches!(
        fixture.log.read(1, 10, 100),
        Err(Error::OffsetOutOfRange {
            offset: 1,
            log_start_offset: 0,
            next_offset: 0
        })
    ));
}

#[test]
fn appends_get_consecutive_offsets_and_every_offset_reads_its_batch() {
    let mut fixture = Fixture::new(small_config());
    let mut expected_base = 0;
    for batch in varied_batches(40) {
        let records = BatchHeader::parse(&batch).unwrap().record_count as u64;
        let info = fixture.append(batch, 5);
        assert_eq!(info.base_offset, expected_base);
        assert_eq!(info.last_offset, expected_base + records - 1);
        expected_base += records;
    }
    let log = &fixture.log;
    assert_eq!(log.next_offset(), expected_base);
    assert!(log.segment_internals()[0].index().offset_entries().len() > 5);
    for (number, batch) in fixture.stored.iter().enumerate() {
        // Stored bytes verify, with the assigned base offset in place.
        BatchHeader::parse_and_verify(batch).unwrap();
        for offset in base_offset(batch)..=last_offset(batch) {
            // A zero budget still yields the whole batch holding the offset.
            assert_eq!(log.read(offset, u64::MAX, 0).unwrap(), batch.as_slice());
            let rest = log.read(offset, u64::MAX, usize::MAX).unwrap();
            assert_eq!(rest, fixture.stored[number..].concat(), "offset {offset}");
        }
    }
    assert!(
        log.read(log.next_offset(), u64::MAX, 100)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        log.read(log.next_offset() + 1, u64::MAX, 100),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn max_bytes_takes_whole_batches_only() {
    let mut fixture = Fixture::new(small_config());
    for batch in varied_batches(6) {
        fixture.append(batch, 0);
    }
    let lens: Vec<usize> = fixture.stored.iter().map(Vec::len).collect();
    let log = &fixture.log;
    assert_eq!(
        log.read(0, u64::MAX, 1).unwrap(),
        fixture.stored[0].as_slice()
    );
    let two = lens[0] + lens[1];
    assert_eq!(log.read(0, u64::MAX, two - 1).unwrap().len(), lens[0]);
    assert_eq!(log.read(0, u64::MAX, two).unwrap().len(), two);
    assert_eq!(log.read(0, u64::MAX, two + lens[2] - 1).unwrap().len(), two);
}

#[test]
fn end_offset_excludes_batches_at_or_past_it() {
    let mut fixture = Fixture::new(small_config());
    for batch in varied_batches(6) {
        fixture.append(batch, 0);
    }
    let log = &fixture.log;
    let fourth = base_offset(&fixture.stored[3]);
    assert_eq!(
        log.read(0, fourth, usize::MAX).unwrap(),
        fixture.stored[..3].concat()
    );
    assert!(log.read(fourth, fourth, usize::MAX).unwrap().is_empty());
    // An end inside a batch excludes that batch too: no record at or past it escapes.
    assert_eq!(
        log.read(0, fourth + 1, usize::MAX).unwrap(),
        fixture.stored[..3].concat()
    );
    // Past the log end it is clamped.
    assert_eq!(read_all(log), fixture.stored.concat());
}

#[test]
fn rolls_by_size_and_reads_span_segments() {
    let config = LogConfig {
        segment_bytes_max: 1000,
        ..small_config()
    };
    let mut fixture = Fixture::new(config.clone());
    let mut rolls = 0;
    for batch in varied_batches(40) {
        rolls += usize::from(fixture.append(batch, 0).rolled);
    }
    let segments = fixture.log.segments();
    assert_eq!(segments.len(), rolls + 1);
    assert!(segments.len() > 5);
    for pair in segments.windows(2) {
        assert_eq!(pair[0].next_offset, pair[1].base_offset);
        assert!(!pair[0].active);
    }
    assert!(segments.iter().all(|segment| segment.size_bytes <= 1000));
    assert!(segments.last().unwrap().active);
    assert_eq!(
        fixture.log.size_bytes(),
        fixture.stored.iter().map(|b| b.len() as u64).sum::<u64>()
    );
    // Every offset, with budgets that stop inside later segments.
    for offset in 0..fixture.log.next_offset() {
        let all = fixture.stored_from(offset);
        assert_eq!(fixture.log.read(offset, u64::MAX, usize::MAX).unwrap(), all);
        let budget = 1500;
        let partial = fixture.log.read(offset, u64::MAX, budget).unwrap();
        let first_len = BatchHeader::parse(&all).unwrap().total_len();
        assert!(partial.len() <= budget.max(first_len));
        assert_eq!(partial, all[..partial.len()]);
        // Whole batches only, and as many as fit.
        let walked: usize = Batches::new(&partial, true)
            .map(|item| item.unwrap().1.len())
            .sum();
        assert_eq!(walked, partial.len());
        if partial.len() < all.len() {
            let next = BatchHeader::parse(&all[partial.len()..])
                .unwrap()
                .total_len();
            assert!(partial.len() + next > budget);
        }
    }
    // The same after a crash and after a clean close.
    let expected = fixture.stored.concat();
    let fixture = fixture.reopen(config.clone(), 0);
    assert_eq!(read_all(&fixture.log), expected);
    let Fixture { dir, mut log, .. } = fixture;
    log.close().unwrap();
    drop(log);
    let log = ShardLog::open(dir.path(), config, 0).unwrap();
    assert_eq!(read_all(&log), expected);
}

#[test]
fn rolls_by_age_counted_from_the_first_batch() {
    let config = LogConfig {
        segment_ms_max: 1000,
        ..small_config()
    };
    let mut fixture = Fixture::new(config);
    // Idle for a long time while empty: the first batch does not roll.
    assert!(!fixture.append(record_batch(0, 1, 10), 50_000).rolled);
    assert!(!fixture.append(record_batch(0, 1, 10), 51_000).rolled);
    let info = fixture.append(record_batch(0, 1, 10), 51_001);
    assert!(info.rolled);
    assert_eq!(info.segment_base_offset, 2);
    assert_eq!(info.position, 0);
    let segments = fixture.log.segments();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0].created_ms, 50_000);
    assert_eq!(segments[1].created_ms, 51_001);
}

#[test]
fn segment_age_survives_a_crash_and_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ShardLog::open(dir.path(), small_config(), 100).unwrap();
    log.append(&mut record_batch(0, 1, 10), 200).unwrap();
    drop(log);
    let mut log = ShardLog::open(dir.path(), small_config(), 9_000).unwrap();
    // Created at 100 (the header written at creation); the crash lost the reset to 200.
    assert_eq!(log.segments()[0].created_ms, 100);
    log.append(&mut record_batch(0, 1, 10), 9_100).unwrap();
    log.close().unwrap();
    drop(log);
    let log = ShardLog::open(dir.path(), small_config(), 20_000).unwrap();
    assert_eq!(log.segments()[0].created_ms, 100);
}

#[test]
fn too_large_and_malformed_batches_are_refused_without_side_effects() {
    let config = LogConfig {
        segment_bytes_max: 200,
        ..small_config()
    };
    let mut fixture = Fixture::new(config);
    fixture.append(record_batch(0, 1, 10), 0);
    let mut big = record_batch(0, 1, 300);
    assert!(matches!(
        fixture.log.append(&mut big, 0),
        Err(Error::BatchTooLarge { .. })
    ));
    let mut trailing = record_batch(0, 1, 10);
    trailing.push(0);
    assert!(matches!(
        fixture.log.append(&mut trailing, 0),
        Err(Error::InvalidBatch {
            source: InvalidBatch::TrailingBytes { .. }
        })
    ));
    let mut garbage = vec![0u8; 80];
    assert!(matches!(
        fixture.log.append(&mut garbage, 0),
        Err(Error::InvalidBatch {
            source: InvalidBatch::Header(_)
        })
    ));
    assert_eq!(fixture.log.next_offset(), 1);
    assert_eq!(read_all(&fixture.log), fixture.stored.concat());
}

/// Copies every file of `from` into a fresh directory.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
    }
    to
}

/// Checks that a log recovered to exactly `stored` and keeps working.
fn assert_recovered_to(dir: &Path, config: &LogConfig, stored: &[Vec<u8>]) {
    let mut log = ShardLog::open(dir, config.clone(), 0).unwrap();
    let expected_next = stored.last().map_or(0, |batch| last_offset(batch) + 1);
    assert_eq!(log.next_offset(), expected_next);
    assert_eq!(read_all(&log), stored.concat());
    let info = log.append(&mut record_batch(7, 2, 5), 0).unwrap();
    assert_eq!(info.base_offset, expected_next);
    drop(log);
    let log = ShardLog::open(dir, config.clone(), 0).unwrap();
    assert_eq!(log.next_offset(), expected_next + 2);
    let tail = log.read(expected_next, u64::MAX, usize::MAX).unwrap();
    assert_eq!(base_offset(&tail), expected_next);
}

#[test]
fn a_torn_last_batch_is_truncated_at_every_cut() {
    let config = LogConfig {
        segment_bytes_max: 600,
        index_interval_bytes: 64,
        ..small_config()
    };
    let mut fixture = Fixture::new(config.clone());
    for batch in varied_batches(8) {
        fixture.append(batch, 0);
    }
    fixture.append(record_batch(9, 2, 4), 0);
    let Fixture { dir, log, stored } = fixture;
    let active = log.segments().pop().unwrap();
    assert!(
        active.base_offset > 0,
        "the last batch should be in a later segment"
    );
    drop(log);
    let last = stored.last().unwrap();
    let last_start = active.size_bytes - last.len() as u64;
    let log_name = active.path.file_name().unwrap().to_owned();
    for cut in last_start..active.size_bytes {
        let copy = copy_dir(dir.path());
        let file = fs::OpenOptions::new()
            .write(true)
            .open(copy.path().join(&log_name))
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        assert_recovered_to(copy.path(), &config, &stored[..stored.len() - 1]);
    }
    // And nothing is lost when nothing is torn.
    assert_recovered_to(dir.path(), &config, &stored);
}

#[test]
fn a_corrupt_last_batch_is_truncated_but_a_corrupt_sealed_one_is_an_error() {
    let config = LogConfig {
        segment_bytes_max: 600,
        ..small_config()
    };
    let mut fixture = Fixture::new(config.clone());
    for batch in varied_batches(12) {
        fixture.append(batch, 0);
    }
    let Fixture { dir, log, stored } = fixture;
    let segments = log.segments();
    drop(log);

    // A flipped payload byte in the last batch: CRC mismatch, dropped like a torn write.
    let copy = copy_dir(dir.path());
    let active = segments.last().unwrap();
    let path = copy.path().join(active.path.file_name().unwrap());
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    assert_recovered_to(copy.path(), &config, &stored[..stored.len() - 1]);

    // The same damage in a sealed segment whose indexes are gone: refused, not repaired.
    let copy = copy_dir(dir.path());
    let sealed = &segments[0];
    let path = copy.path().join(sealed.path.file_name().unwrap());
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let index_path = SegmentFile::OffsetIndex.path(copy.path(), sealed.base_offset);
    fs::remove_file(index_path).unwrap();
    assert!(matches!(
        ShardLog::open(copy.path(), config.clone(), 0),
        Err(Error::Corrupt {
            segment_base_offset: 0,
            ..
        })
    ));

    // With its indexes intact the segment opens unscanned, and the read catches the damage.
    let copy = copy_dir(dir.path());
    let path = copy.path().join(sealed.path.file_name().unwrap());
    fs::write(&path, &bytes).unwrap();
    let log = ShardLog::open(copy.path(), config, 0).unwrap();
    assert!(matches!(
        log.read(0, u64::MAX, usize::MAX),
        Err(Error::Corrupt {
            segment_base_offset: 0,
            reason: CorruptReason::Batch(_),
            ..
        })
    ));
}

#[test]
fn garbage_after_the_last_batch_is_dropped() {
    let mut fixture = Fixture::new(small_config());
    for batch in varied_batches(5) {
        fixture.append(batch, 0);
    }
    let Fixture { dir, log, stored } = fixture;
    let path = log.segments()[0].path.clone();
    drop(log);
    let mut bytes = fs::read(&path).unwrap();
    // A stale copy of an earlier batch (valid CRC, wrong offset), then zeros.
    bytes.extend_from_slice(&stored[1]);
    bytes.extend_from_slice(&[0u8; 100]);
    fs::write(&path, &bytes).unwrap();
    assert_recovered_to(dir.path(), &small_config(), &stored);
}

#[test]
fn a_clean_close_reopens_from_persisted_indexes() {
    let config = LogConfig {
        segment_bytes_max: 800,
        index_interval_bytes: 64,
        ..small_config()
    };
    let mut fixture = Fixture::new(config.clone());
    for batch in varied_batches(30) {
        fixture.append(batch, 3);
    }
    let indexes: Vec<_> = fixture
        .log
        .segment_internals()
        .iter()
        .map(|segment| segment.index().clone())
        .collect();
    let Fixture {
        dir,
        mut log,
        stored,
    } = fixture;
    log.close().unwrap();
    drop(log);
    assert!(dir.path().join(layout::CLEAN_SHUTDOWN_FILE).exists());

    let log = ShardLog::open(dir.path(), config.clone(), 0).unwrap();
    assert!(!dir.path().join(layout::CLEAN_SHUTDOWN_FILE).exists());
    let reloaded: Vec<_> = log
        .segment_internals()
        .iter()
        .map(|segment| segment.index().clone())
        .collect();
    assert_eq!(reloaded, indexes);
    assert!(
        log.segment_internals()
            .iter()
            .all(|segment| segment.index_source == IndexSource::Loaded)
    );
    assert_eq!(read_all(&log), stored.concat());

    // A crash instead: sealed segments still load, the last one is rescanned.
    drop(log);
    let log = ShardLog::open(dir.path(), config.clone(), 0).unwrap();
    let internals = log.segment_internals();
    let (last, sealed) = internals.split_last().unwrap();
    assert!(sealed.iter().all(|s| s.index_source == IndexSource::Loaded));
    assert_eq!(last.index_source, IndexSource::Rebuilt);
    assert_eq!(last.index(), indexes.last().unwrap());
    drop(log);

    // Damaged or missing index files are rebuilt, to the same thing.
    let bases = layout::list(dir.path()).unwrap().log_base_offsets;
    assert!(bases.len() >= 3);
    fs::write(
        SegmentFile::TimeIndex.path(dir.path(), bases[0]),
        b"SLTI garbage",
    )
    .unwrap();
    fs::remove_file(SegmentFile::OffsetIndex.path(dir.path(), bases[1])).unwrap();
    let log = ShardLog::open(dir.path(), config, 0).unwrap();
    let internals = log.segment_internals();
    assert_eq!(internals[0].index_source, IndexSource::Rebuilt);
    assert_eq!(internals[1].index_source, IndexSource::Rebuilt);
    assert_eq!(internals[2].index_source, IndexSource::Loaded);
    let rebuilt: Vec<_> = internals.iter().map(|s| s.index().clone()).collect();
    assert_eq!(rebuilt, indexes);
    assert_eq!(read_all(&log), stored.concat());
}

#[test]
fn leftovers_are_cleaned_up_at_open() {
    let mut fixture = Fixture::new(small_config());
    fixture.append(record_batch(0, 3, 10), 0);
    let Fixture {
        dir,
        mut log,
        stored,
    } = fixture;
    log.close().unwrap();
    drop(log);
    let tmp = dir.path().join("00000000000000000000.index.tmp");
    fs::write(&tmp, b"half written").unwrap();
    let orphan = SegmentFile::TimeIndex.path(dir.path(), 500);
    fs::write(&orphan, b"index of a deleted segment").unwrap();
    let unrelated = dir.path().join("README");
    fs::write(&unrelated, b"not ours").unwrap();
    let log = ShardLog::open(dir.path(), small_config(), 0).unwrap();
    assert!(!tmp.exists());
    assert!(!orphan.exists());
    assert!(unrelated.exists());
    assert_eq!(read_all(&log), stored.concat());
}

#[test]
fn a_gap_between_segments_is_corruption() {
    let config = LogConfig {
        segment_bytes_max: 500,
        ..small_config()
    };
    let mut fixture = Fixture::new(config.clone());
    for batch in varied_batches(12) {
        fixture.append(batch, 0);
    }
    let segments = fixture.log.segments();
    assert!(segments.len() >= 3);
    let Fixture { dir, log, .. } = fixture;
    drop(log);
    fs::remove_file(&segments[1].path).unwrap();
    assert!(matches!(
        ShardLog::open(dir.path(), config, 0),
        Err(Error::Corrupt {
            reason: CorruptReason::Gap { .. },
            ..
        })
    ));
}

#[test]
fn offset_for_timestamp_finds_the_first_batch_reaching_it() {
    let config = LogConfig {
        segment_bytes_max: 700,
        index_interval_bytes: 100,
        ..small_config()
    };
    let mut fixture = Fixture::new(config);
    // Timestamps that go back and forth, over several segments.
    for n in 0..60i64 {
        let timestamp = 10_000 + (n * 7919) % 500 + n * 3;
        fixture.append(record_batch(timestamp, 1 + n as usize % 3, 20), 0);
    }
    assert!(fixture.log.segments().len() > 3);
    let max_timestamps: Vec<i64> = fixture
        .stored
        .iter()
        .map(|batch| BatchHeader::parse(batch).unwrap().max_timestamp)
        .collect();
    for ts in (9_990..10_700).step_by(3) {
        let expected = fixture
            .stored
            .iter()
            .zip(&max_timestamps)
            .find(|(_, max)| **max >= ts)
            .map(|(batch, _)| base_offset(batch));
        assert_eq!(
            fixture.log.offset_for_timestamp(ts).unwrap(),
            expected,
            "ts {ts}"
        );
    }
}

#[test]
fn deleting_old_segments_moves_the_log_start() {
    let config = LogConfig {
        segment_bytes_max: 500,
        ..small_config()
    };
    let mut fixture = Fixture::new(config.clone());
    for batch in varied_batches(20) {
        fixture.append(batch, 0);
    }
    let segments = fixture.log.segments();
    assert!(segments.len() >= 4);
    // An offset inside the third segment deletes only the first two.
    let cut = segments[2].base_offset + 1;
    assert_eq!(fixture.log.delete_segments_before(cut).unwrap(), 2);
    assert_eq!(fixture.log.log_start_offset(), segments[2].base_offset);
    assert!(!segments[0].path.exists());
    assert!(
        !SegmentFile::OffsetIndex
            .path(fixture.dir.path(), 0)
            .exists()
    );
    assert!(matches!(
        fixture.log.read(segments[2].base_offset - 1, u64::MAX, 100),
        Err(Error::OffsetOutOfRange { .. })
    ));
    let start = fixture.log.log_start_offset();
    assert_eq!(read_all(&fixture.log), fixture.stored_from(start));
    // Never the active segment, whatever the offset.
    let total = segments.len() - 2;
    assert_eq!(
        fixture.log.delete_segments_before(u64::MAX).unwrap(),
        total - 1
    );
    assert_eq!(fixture.log.segments().len(), 1);
    let start = fixture.log.log_start_offset();
    assert_eq!(start, segments.last().unwrap().base_offset);
    let fixture = fixture.reopen(config, 0);
    assert_eq!(fixture.log.log_start_offset(), start);
    assert_eq!(read_all(&fixture.log), fixture.stored_from(start));
}

#[test]
fn sync_handles_cover_what_was_appended_before_them() {
    let config = LogConfig {
        segment_bytes_max: 500,
        ..small_config()
    };
    let mut fixture = Fixture::new(config);
    fixture.append(record_batch(0, 2, 10), 0);
    let before_roll = fixture.log.sync_handle();
    assert_eq!(before_roll.next_offset(), 2);
    for batch in varied_batches(6) {
        fixture.append(batch, 0);
    }
    assert!(fixture.log.segments().len() > 1);
    assert_eq!(before_roll.sync().unwrap(), 2);
    let now = fixture.log.sync_handle();
    assert_eq!(now.sync().unwrap(), fixture.log.next_offset());
}

#[test]
fn a_directory_is_opened_by_one_log_at_a_time() {
    let fixture = Fixture::new(small_config());
    assert!(matches!(
        ShardLog::open(fixture.dir.path(), small_config(), 0),
        Err(Error::Locked { .. })
    ));
}

#[test]
fn invalid_config_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 1 << 33,
        ..LogConfig::default()
    };
    assert!(matches!(
        ShardLog::open(dir.path(), config, 0),
        Err(Error::InvalidConfig { .. })
    ));
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_bytes: usize,
        timestamp_ms: i64,
    },
    Wait(i64),
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..8, 0usize..200, 0i64..1000).prop_map(|(records, value_bytes, timestamp_ms)| {
            Op::Append { records, value_bytes, timestamp_ms }
        }),
        1 => (0i64..400).prop_map(Op::Wait),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_read_back_byte_identical(
        ops in proptest::collection::vec(op(), 1..40),
        segment_bytes_max in 1600u64..4000,
        index_interval_bytes in 0u32..600,
    ) {
        let config = LogConfig {
            segment_bytes_max,
            segment_ms_max: 500,
            index_interval_bytes,
            verify_crc_on_read: true,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut log = Some(ShardLog::open(dir.path(), config.clone(), 0).unwrap());
        let mut stored: Vec<Vec<u8>> = Vec::new();
        let mut now_ms = 0;
        for op in ops {
            match op {
                Op::Append { records, value_bytes, timestamp_ms } => {
                    let mut batch = record_batch(timestamp_ms, records, value_bytes);
                    log.as_mut().unwrap().append(&mut batch, now_ms).unwrap();
                    stored.push(batch);
                }
                Op::Wait(ms) => now_ms += ms,
                Op::Reopen { clean } => {
                    let mut current = log.take().unwrap();
                    if clean {
                        current.close().unwrap();
                        drop(current);
                    } else {
                        drop(current);
                    }
                    log = Some(ShardLog::open(dir.path(), config.clone(), now_ms).unwrap());
                }
            }
        }
        drop(log);
        let log = ShardLog::open(dir.path(), config, now_ms).unwrap();
        prop_assert_eq!(read_all(&log), stored.concat());
        let expected_next = stored.last().map_or(0, |batch| last_offset(batch) + 1);
        prop_assert_eq!(log.next_offset(), expected_next);
        for batch in &stored {
            for offset in [base_offset(batch), last_offset(batch)] {
                let read = log.read(offset, u64::MAX, 0).unwrap();
                prop_assert_eq!(&read[..], batch.as_slice());
            }
        }
        for segment in log.segments() {
            prop_assert!(segment.size_bytes <= segment_bytes_max);
        }
    }
}

#[test]
fn bytes_left_by_a_failed_write_do_not_survive_sealing() {
    use std::os::unix::fs::FileExt;

    let config = LogConfig {
        segment_bytes_max: 500,
        ..small_config()
    };
    let mut fixture = Fixture::new(config.clone());
    fixture.append(record_batch(0, 2, 10), 0);
    // What a write that failed half-way could leave behind the last whole batch.
    let active = fixture.log.segment_internals().last().unwrap();
    active
        .file()
        .write_all_at(&[0xAB; 700], active.size_bytes())
        .unwrap();
    for batch in varied_batches(8) {
        fixture.append(batch, 0);
    }
    assert!(fixture.log.segments().len() > 1);
    let Fixture {
        dir,
        mut log,
        stored,
    } = fixture;
    log.close().unwrap();
    drop(log);
    let log = ShardLog::open(dir.path(), config, 0).unwrap();
    assert_eq!(read_all(&log), stored.concat());
}

#[test]
fn roll_now_seals_everything_so_all_of_it_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ShardLog::open(dir.path(), small_config(), 0).unwrap();
    assert!(
        !log.roll_now(1).unwrap(),
        "an empty active segment is not rolled"
    );
    log.append(&mut record_batch(10, 3, 8), 10).unwrap();
    assert!(log.roll_now(20).unwrap());
    assert_eq!(log.segments().len(), 2);
    assert_eq!(log.delete_segments_before(3).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(log.next_offset(), 3);
    log.close().unwrap();
    assert!(matches!(log.roll_now(30), Err(Error::Closed { .. })));
}

#[test]
fn a_new_log_can_start_after_offsets_held_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ShardLog::open_starting_at(dir.path(), small_config(), 0, 500).unwrap();
    assert_eq!((log.log_start_offset(), log.next_offset()), (500, 500));
    assert_eq!(
        log.append(&mut record_batch(1, 2, 4), 1)
            .unwrap()
            .base_offset,
        500
    );
    drop(log);
    // An existing log keeps its own offsets.
    let log = ShardLog::open_starting_at(dir.path(), small_config(), 0, 9).unwrap();
    assert_eq!(log.next_offset(), 502);
}
