//! Snapshots for readers ([`LogView`]): what one saw stays readable, whatever the log
//! does after it was taken.

use super::tests::{Fixture, record_batch, small_config};
use super::*;

#[test]
fn a_snapshot_reads_what_it_saw_after_appends_rolls_and_deletions() {
    let mut fixture = Fixture::new(LogConfig {
        segment_bytes_max: 4096,
        ..small_config()
    });
    for n in 0..30 {
        fixture.append(record_batch(n, 3, 100), n);
    }
    let before = fixture.log.view();
    let seen: Vec<u8> = fixture.stored.concat();
    let seen_end = fixture.log.next_offset();
    assert!(
        before.segments().len() > 2,
        "the test needs sealed segments"
    );

    for n in 30..60 {
        fixture.append(record_batch(n, 3, 100), n);
    }
    let deleted = fixture.log.delete_segments_before(seen_end).unwrap();
    assert!(
        deleted > 0,
        "the test needs a segment deleted under the snapshot"
    );

    // The snapshot still reads every byte it saw (the deleted files through their open
    // handles), and nothing appended after it.
    assert_eq!(before.log_start_offset(), 0);
    assert_eq!(before.next_offset(), seen_end);
    let read = before.read(0, u64::MAX, usize::MAX).unwrap();
    assert_eq!(&read[..], &seen[..]);
    // The log itself has moved on.
    let now = fixture.log.view();
    assert!(now.log_start_offset() > 0);
    assert_eq!(now.next_offset(), fixture.log.next_offset());
    assert!(
        before
            .read(seen_end, u64::MAX, usize::MAX)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_snapshot_of_a_growing_index_finds_every_offset() {
    // An index entry for nearly every batch, so the active segment's index runs over
    // several shared chunks while snapshots of it are taken.
    let mut fixture = Fixture::new(LogConfig {
        index_interval_bytes: 1,
        ..small_config()
    });
    let mut views = Vec::new();
    for n in 0..1500 {
        fixture.append(record_batch(n, 1, 10), n);
        if n % 400 == 0 {
            views.push((fixture.log.next_offset(), fixture.log.view()));
        }
    }
    views.push((fixture.log.next_offset(), fixture.log.view()));
    for (end, view) in views {
        assert_eq!(view.next_offset(), end);
        for offset in (0..end).step_by(37) {
            let read = view.read(offset, u64::MAX, 1).unwrap();
            assert_eq!(
                &read[..],
                &fixture.stored[offset as usize][..],
                "offset {offset}"
            );
        }
        assert_eq!(
            view.offset_for_timestamp(end as i64 - 1).unwrap(),
            Some(end - 1)
        );
    }
}
