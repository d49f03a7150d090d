use std::io::Cursor;

use proptest::prelude::*;

use super::*;

fn committed(offset: i64, metadata: Option<&str>) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: 3,
        metadata: metadata.map(str::to_owned),
        commit_timestamp_ms: 1_700_000_000_000 + offset,
    }
}

fn commit(group: &str, stream: &str, shard: u32, offset: i64) -> OffsetRecord {
    OffsetRecord::Commit {
        group: group.to_owned(),
        stream: stream.to_owned(),
        shard,
        committed: committed(offset, Some("meta")),
    }
}

fn delete(group: &str, stream: &str, shard: u32) -> OffsetRecord {
    OffsetRecord::DeleteOffsets {
        group: group.to_owned(),
        stream: stream.to_owned(),
        shard,
    }
}

fn model(records: &[OffsetRecord]) -> OffsetMap {
    let mut map = OffsetMap::new();
    for record in records {
        record.apply_to(&mut map);
    }
    map
}

fn offsets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("offsets")
}

fn log_path(data_dir: &Path, generation: u64) -> PathBuf {
    FileKind::Log.path(&offsets_dir(data_dir), generation)
}

fn snapshot_path(data_dir: &Path, generation: u64) -> PathBuf {
    FileKind::Snapshot.path(&offsets_dir(data_dir), generation)
}

fn open(data_dir: &Path) -> OffsetStore {
    OffsetStore::open(data_dir, OffsetStoreConfig::default()).unwrap()
}

/// File names left in the offsets directory, sorted.
fn file_names(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(offsets_dir(data_dir))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn decode_all(bytes: &[u8]) -> Vec<Step> {
    let mut reader = Cursor::new(bytes);
    let mut payload = Vec::new();
    let mut steps = Vec::new();
    loop {
        let step = read_record(&mut reader, &mut payload).unwrap();
        let done = !matches!(step, Step::Record { .. });
        steps.push(step);
        if done {
            return steps;
        }
    }
}

fn committed_strategy() -> impl Strategy<Value = CommittedOffset> {
    (
        any::<i64>(),
        any::<i32>(),
        proptest::option::of(".{0,12}"),
        any::<i64>(),
    )
        .prop_map(
            |(offset, leader_epoch, metadata, commit_timestamp_ms)| CommittedOffset {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
            },
        )
}

fn record_strategy() -> impl Strategy<Value = OffsetRecord> {
    // Few distinct names, so that deletes often hit something committed before.
    let group = prop_oneof![Just(String::new()), "[ab]", ".{0,8}"];
    let stream = prop_oneof!["[xy]", ".{1,8}"];
    prop_oneof![
        4 => (group.clone(), stream.clone(), 0u32..3, committed_strategy()).prop_map(
            |(group, stream, shard, committed)| OffsetRecord::Commit { group, stream, shard, committed }
        ),
        2 => (group.clone(), stream, 0u32..3)
            .prop_map(|(group, stream, shard)| OffsetRecord::DeleteOffsets { group, stream, shard }),
        1 => group.prop_map(|group| OffsetRecord::DeleteGroup { group }),
    ]
}

proptest! {
    #[test]
    fn records_round_trip(records in proptest::collection::vec(record_strategy(), 0..16)) {
        let mut bytes = Vec::new();
        for record in &records {
            encode_frame(record, &mut bytes).unwrap();
        }
        let decoded: Vec<OffsetRecord> = decode_all(&bytes)
            .into_iter()
            .filter_map(|step| match step {
                Step::Record { record, .. } => Some(record),
                Step::End => None,
                Step::Damaged(reason) => panic!("damaged: {reason}"),
            })
            .collect();
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_all(&bytes);
        let _ = decode_payload(&bytes);
        let _ = decode_header(&bytes);
    }

    #[test]
    fn sizes_are_computed_exactly(record in record_strategy()) {
        let mut bytes = Vec::new();
        encode_frame(&record, &mut bytes).unwrap();
        prop_assert_eq!(bytes.len(), FRAME_HEADER_BYTES + payload_bytes(&record));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Replay after any sequence of appends (some across a compaction) rebuilds exactly
    /// the map that applying the records in memory gives.
    #[test]
    fn replay_equals_the_model(
        records in proptest::collection::vec(record_strategy(), 0..40),
        compact_at in proptest::option::of(0usize..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        for (number, chunk) in records.chunks(3).enumerate() {
            store.append(chunk).unwrap();
            if compact_at == Some(number) {
                store.compact().unwrap();
            }
        }
        let expected = model(&records);
        prop_assert_eq!(store.offsets(), &expected);
        store.close().unwrap();
        let store = open(dir.path());
        prop_assert_eq!(store.offsets(), &expected);
        prop_assert!(store.offsets().values().all(|entries| !entries.is_empty()));
    }
}

#[test]
fn delete_records_remove_entries_and_empty_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store
        .append(&[
            commit("g1", "orders", 0, 10),
            commit("g1", "orders", 1, 11),
            commit("g2", "orders", 0, 20),
            commit("g3", "orders", 0, 30),
        ])
        .unwrap();
    store
        .append(&[
            delete("g1", "orders", 0),
            delete("g2", "orders", 0),
            delete("nobody", "orders", 0),
            OffsetRecord::DeleteGroup {
                group: "g3".to_owned(),
            },
        ])
        .unwrap();
    let expected = BTreeMap::from([(
        "g1".to_owned(),
        BTreeMap::from([(("orders".to_owned(), 1), committed(11, Some("meta")))]),
    )]);
    assert_eq!(store.offsets(), &expected);
    store.close().unwrap();
    assert_eq!(open(dir.path()).offsets(), &expected);
}

/// Appends three records one by one and returns the log length before the last one.
fn three_records(data_dir: &Path) -> (Vec<OffsetRecord>, u64) {
    let records = vec![
        commit("g", "orders", 0, 1),
        commit("g", "orders", 1, 2),
        commit("g", "orders", 0, 3),
    ];
    let mut store = open(data_dir);
    store.append(&records[..2]).unwrap();
    let before_last = store.log_bytes();
    store.append(&records[2..]).unwrap();
    store.close().unwrap();
    (records, before_last)
}

#[test]
fn a_torn_last_record_is_truncated_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (records, before_last) = three_records(dir.path());
    let path = log_path(dir.path(), 0);
    let whole = fs::read(&path).unwrap();
    for cut in before_last..whole.len() as u64 {
        fs::write(&path, &whole[..cut as usize]).unwrap();
        let mut store = open(dir.path());
        assert_eq!(store.offsets(), &model(&records[..2]), "cut at {cut}");
        assert_eq!(store.log_bytes(), before_last);
        assert_eq!(fs::metadata(&path).unwrap().len(), before_last);
        // The log goes on cleanly after the truncation.
        store.append(&records[2..]).unwrap();
        store.close().unwrap();
        assert_eq!(open(dir.path()).offsets(), &model(&records), "cut at {cut}");
    }
}

#[test]
fn a_zero_filled_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (records, _) = three_records(dir.path());
    let path = log_path(dir.path(), 0);
    let whole = fs::read(&path).unwrap();
    let mut padded = whole.clone();
    padded.extend_from_slice(&[0; 4096]);
    fs::write(&path, &padded).unwrap();
    let store = open(dir.path());
    assert_eq!(store.offsets(), &model(&records));
    assert_eq!(store.log_bytes(), whole.len() as u64);
}

#[test]
fn a_checksum_failure_truncates_from_that_record_on() {
    let dir = tempfile::tempdir().unwrap();
    let (records, before_last) = three_records(dir.path());
    let path = log_path(dir.path(), 0);
    let whole = fs::read(&path).unwrap();

    // A flipped bit in the last record's payload drops that record.
    let mut flipped = whole.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    fs::write(&path, &flipped).unwrap();
    let store = open(dir.path());
    assert_eq!(store.offsets(), &model(&records[..2]));
    assert_eq!(store.log_bytes(), before_last);
    drop(store);

    // In the first record it drops everything after, as the segment log does: past a bad
    // length, nothing tells where the next record starts.
    let mut flipped = whole;
    flipped[HEADER_BYTES + FRAME_HEADER_BYTES + 2] ^= 0x80;
    fs::write(&path, &flipped).unwrap();
    let store = open(dir.path());
    assert!(store.offsets().is_empty());
    assert_eq!(store.log_bytes(), HEADER_BYTES as u64);
}

#[test]
fn damage_in_a_snapshot_or_header_is_an_error_not_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store
        .append(&[commit("g", "orders", 0, 1), commit("g", "orders", 1, 2)])
        .unwrap();
    store.compact().unwrap();
    store.close().unwrap();
    let path = snapshot_path(dir.path(), 1);
    let whole = fs::read(&path).unwrap();

    let mut flipped = whole.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    fs::write(&path, &flipped).unwrap();
    assert!(matches!(
        OffsetStore::open(dir.path(), OffsetStoreConfig::default()),
        Err(Error::CorruptOffsets {
            reason: CorruptReason::ChecksumMismatch { .. },
            ..
        })
    ));

    // A snapshot missing its last record whole is caught by the count in its header.
    let shortened = &whole[..whole.len() - (whole.len() - HEADER_BYTES) / 2];
    fs::write(&path, shortened).unwrap();
    assert!(matches!(
        OffsetStore::open(dir.path(), OffsetStoreConfig::default()),
        Err(Error::CorruptOffsets {
            reason: CorruptReason::CountMismatch {
                expected: 2,
                found: 1
            },
            ..
        })
    ));

    let mut bad_header = whole;
    bad_header[3] ^= 0x01;
    fs::write(&path, &bad_header).unwrap();
    assert!(matches!(
        OffsetStore::open(dir.path(), OffsetStoreConfig::default()),
        Err(Error::CorruptOffsets {
            position: 0,
            reason: CorruptReason::BadMagic,
            ..
        })
    ));
}

#[test]
fn an_unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let path = log_path(dir.path(), 0);
    let mut header = fs::read(&path).unwrap();
    header[8..12].copy_from_slice(&2u32.to_be_bytes());
    let checksum = crc32c::crc32c(&header[..24]);
    header[24..28].copy_from_slice(&checksum.to_be_bytes());
    fs::write(&path, &header).unwrap();
    assert!(matches!(
        OffsetStore::open(dir.path(), OffsetStoreConfig::default()),
        Err(Error::UnknownVersion {
            found: 2,
            supported: OFFSETS_FORMAT_VERSION,
            ..
        })
    ));
}

#[test]
fn an_oversized_record_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let huge = OffsetRecord::Commit {
        group: "g".to_owned(),
        stream: "orders".to_owned(),
        shard: 0,
        committed: CommittedOffset {
            metadata: Some("m".repeat(RECORD_BYTES_MAX)),
            ..committed(1, None)
        },
    };
    let result = store.append(&[commit("g", "orders", 1, 1), huge]);
    assert!(matches!(result, Err(Error::RecordTooLarge { .. })));
    assert!(store.offsets().is_empty());
    assert_eq!(store.log_bytes(), HEADER_BYTES as u64);
    assert!(store.failure().is_none());
    store.append(&[commit("g", "orders", 1, 1)]).unwrap();
}

#[test]
fn compaction_is_triggered_by_size_and_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = OffsetStoreConfig {
        log_bytes_max: 64 * 1024,
        log_to_live_ratio_max: 10,
        log_bytes_min: 1024,
    };
    let mut store = OffsetStore::open(dir.path(), config).unwrap();
    let mut records = Vec::new();
    let mut compactions = 0;
    for offset in 0..200 {
        let record = commit("g", "orders", (offset % 2) as u32, offset);
        store.append(std::slice::from_ref(&record)).unwrap();
        records.push(record);
        if store.needs_compaction() {
            store.compact().unwrap();
            compactions += 1;
        }
    }
    // Two live entries of ~50 bytes: compaction at ~1 KiB, every ~20 commits.
    assert!(compactions >= 5, "compactions: {compactions}");
    assert!(store.log_bytes() < 2048);
    let expected = model(&records);
    assert_eq!(store.offsets(), &expected);
    store.close().unwrap();
    assert_eq!(
        file_names(dir.path()),
        vec![
            format!("{compactions:020}.log"),
            format!("{compactions:020}.snapshot")
        ]
    );
    assert_eq!(
        OffsetStore::open(dir.path(), config).unwrap().offsets(),
        &expected
    );
}

/// Builds a store with some history, then runs a compaction up to `last` and drops the
/// store there, as a crash would. Returns what the map must be.
fn crash_during_compaction(data_dir: &Path, last: CompactionStep) -> OffsetMap {
    let mut store = open(data_dir);
    let before = [
        commit("g1", "orders", 0, 5),
        commit("g2", "orders", 0, 7),
        commit("g1", "orders", 1, 6),
    ];
    store.append(&before).unwrap();
    // A first compaction, so that an older snapshot exists too.
    store.compact().unwrap();
    let after = [
        delete("g2", "orders", 0),
        commit("g1", "orders", 0, 9),
        commit("g3", "clicks", 2, 1),
    ];
    store.append(&after).unwrap();
    store.compact_steps(last).unwrap();
    let expected = store.offsets().clone();
    drop(store);
    assert_eq!(expected, model(&[&before[..], &after[..]].concat()));
    expected
}

#[test]
fn a_crash_at_any_compaction_step_replays_to_the_same_map() {
    for last in [
        CompactionStep::WriteSnapshot,
        CompactionStep::RenameSnapshot,
        CompactionStep::CreateLog,
        CompactionStep::RemoveOld,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let expected = crash_during_compaction(dir.path(), last);
        let leftovers = file_names(dir.path());
        let mut store = open(dir.path());
        assert_eq!(store.offsets(), &expected, "crash after {last:?}");
        // Only the newest generation is left, whatever the crash left behind.
        let generation = if last == CompactionStep::WriteSnapshot {
            1
        } else {
            2
        };
        assert_eq!(
            file_names(dir.path()),
            vec![
                format!("{generation:020}.log"),
                format!("{generation:020}.snapshot")
            ],
            "crash after {last:?} left {leftovers:?}"
        );
        // And the store goes on: a later write survives another reopen.
        store.append(&[commit("g4", "orders", 0, 1)]).unwrap();
        store.close().unwrap();
        let mut expected = expected;
        commit("g4", "orders", 0, 1).apply_to(&mut expected);
        assert_eq!(
            open(dir.path()).offsets(),
            &expected,
            "crash after {last:?}"
        );
    }
}

#[test]
fn a_torn_snapshot_tmp_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let expected = crash_during_compaction(dir.path(), CompactionStep::WriteSnapshot);
    let tmp = offsets_dir(dir.path()).join(format!("{:020}.snapshot.tmp", 2));
    let whole = fs::read(&tmp).unwrap();
    fs::write(&tmp, &whole[..whole.len() / 2]).unwrap();
    let store = open(dir.path());
    assert_eq!(store.offsets(), &expected);
    assert!(!tmp.exists());
}

#[test]
fn a_torn_header_of_a_new_log_is_rewritten() {
    for torn_len in [0, 5, HEADER_BYTES] {
        let dir = tempfile::tempdir().unwrap();
        let expected = crash_during_compaction(dir.path(), CompactionStep::CreateLog);
        let path = log_path(dir.path(), 2);
        let header = fs::read(&path).unwrap();
        assert_eq!(header.len(), HEADER_BYTES);
        // A crash may leave the new file short, or the right length but zero-filled.
        let mut torn = header[..torn_len].to_vec();
        if torn_len == HEADER_BYTES {
            torn.fill(0);
        }
        fs::write(&path, &torn).unwrap();
        let mut store = open(dir.path());
        assert_eq!(store.offsets(), &expected, "torn to {torn_len} bytes");
        assert_eq!(fs::read(&path).unwrap(), header);
        store.append(&[commit("g4", "orders", 0, 1)]).unwrap();
        store.close().unwrap();
        let mut expected = expected;
        commit("g4", "orders", 0, 1).apply_to(&mut expected);
        assert_eq!(open(dir.path()).offsets(), &expected);
    }
}

#[test]
fn damage_in_a_log_that_is_not_the_newest_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let _ = three_records(dir.path());
    // Fake a second log after the first, as if the first had been superseded by it.
    let newer = log_path(dir.path(), 1);
    fs::write(&newer, encode_header(FileKind::Log, 0)).unwrap();
    let path = log_path(dir.path(), 0);
    let mut whole = fs::read(&path).unwrap();
    let last = whole.len() - 1;
    whole[last] ^= 0x01;
    fs::write(&path, &whole).unwrap();
    assert!(matches!(
        OffsetStore::open(dir.path(), OffsetStoreConfig::default()),
        Err(Error::CorruptOffsets {
            reason: CorruptReason::ChecksumMismatch { .. },
            ..
        })
    ));
}

#[test]
fn sync_handles_make_appends_durable_without_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.append(&[commit("g", "orders", 0, 1)]).unwrap();
    let handle = store.sync_handle();
    store.append(&[commit("g", "orders", 0, 2)]).unwrap();
    handle.sync().unwrap();
    store.sync_handle().sync().unwrap();
    drop(store);
    assert_eq!(
        open(dir.path()).offsets()["g"][&("orders".to_owned(), 0)].offset,
        2
    );
}
