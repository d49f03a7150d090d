//! The log under storage faults injected with `crate::faults`: failed fsyncs
//! (fsyncgate), a full disk, and a crash whose tail was never synced.

use super::tests::{Fixture, read_all, record_batch, small_config};
use super::*;
use crate::segment::IndexSource;

/// fsyncgate: after a failed fsync the file may read back fine while the kernel has
/// dropped the dirty pages, so nothing may vouch for it again — no seal, no marker.
#[test]
fn a_failed_sync_fails_the_log_and_it_is_never_sealed_or_marked_clean() {
    let mut fixture = Fixture::new(small_config());
    fixture.append(record_batch(1, 3, 10), 1);
    crate::faults::inject(fixture.dir.path(), crate::faults::Fault::SyncFails);
    let synced = fixture.log.sync_handle().sync();
    crate::faults::clear(fixture.dir.path());
    assert!(matches!(synced, Err(Error::Io { .. })), "{synced:?}");
    assert!(fixture.log.is_failed());

    // Every later write is refused, even with the disk healthy again.
    let mut batch = record_batch(2, 1, 10);
    assert!(matches!(
        fixture.log.append(&mut batch, 2),
        Err(Error::Failed { .. })
    ));
    assert!(matches!(fixture.log.roll_now(2), Err(Error::Failed { .. })));
    assert!(matches!(fixture.log.close(), Err(Error::Failed { .. })));
    assert!(
        !fixture
            .dir
            .path()
            .join(layout::CLEAN_SHUTDOWN_FILE)
            .exists()
    );
    assert_eq!(
        read_all(&fixture.log),
        fixture.stored.concat(),
        "reads go on"
    );

    // The next open scans the tail instead of trusting anything.
    let fixture = fixture.reopen(small_config(), 3);
    assert!(!fixture.log.is_failed());
    let internals = fixture.log.segment_internals();
    assert_eq!(internals.last().unwrap().index_source, IndexSource::Rebuilt);
    assert_eq!(read_all(&fixture.log), fixture.stored.concat());
}

/// A seal's fsync failing is the same: the roll fails and so does the log.
#[test]
fn a_failed_sync_while_rolling_fails_the_log() {
    let mut fixture = Fixture::new(small_config());
    fixture.append(record_batch(1, 3, 10), 1);
    crate::faults::inject(fixture.dir.path(), crate::faults::Fault::SyncFails);
    let rolled = fixture.log.roll_now(2);
    crate::faults::clear(fixture.dir.path());
    assert!(matches!(rolled, Err(Error::Io { .. })), "{rolled:?}");
    assert!(fixture.log.is_failed());
    assert_eq!(fixture.log.segments().len(), 1, "no segment was started");
}

/// Linux reports a writeback error to one fsync only: once a roll's fsync took it, a
/// group commit's fsync of the same file must not report success (acknowledging pages
/// that may be lost) even though the kernel would now say 0.
#[test]
fn a_group_commit_after_a_roll_took_the_fsync_error_does_not_succeed() {
    let mut fixture = Fixture::new(small_config());
    fixture.append(record_batch(1, 3, 10), 1);
    let group_commit = fixture.log.sync_handle();
    crate::faults::inject(fixture.dir.path(), crate::faults::Fault::SyncFails);
    assert!(fixture.log.roll_now(2).is_err());
    crate::faults::clear(fixture.dir.path());
    let synced = group_commit.sync();
    assert!(matches!(synced, Err(Error::Failed { .. })), "{synced:?}");
}

/// A full disk is not a failure of the log: the batch is refused, nothing stored is
/// touched, and appends go on once there is space, at the offset the refused one would
/// have had. What half-reached the file is overwritten, or cut off at recovery.
#[test]
fn a_full_disk_refuses_appends_and_they_resume_when_space_is_back() {
    let mut fixture = Fixture::new(small_config());
    fixture.append(record_batch(1, 3, 10), 1);
    crate::faults::inject(fixture.dir.path(), crate::faults::Fault::DiskFull);
    let mut refused = record_batch(2, 5, 200);
    let outcome = fixture.log.append(&mut refused, 2);
    assert!(matches!(outcome, Err(Error::NoSpace { .. })), "{outcome:?}");
    assert!(!outcome.unwrap_err().is_fatal());
    assert!(!fixture.log.is_failed());
    assert_eq!(
        fixture.log.next_offset(),
        3,
        "the refused batch took no offsets"
    );
    crate::faults::clear(fixture.dir.path());

    // Shorter than what the refused write left behind, so some of it stays past the end.
    let info = fixture.append(record_batch(3, 1, 1), 3);
    assert_eq!(info.base_offset, 3);
    assert_eq!(read_all(&fixture.log), fixture.stored.concat());
    fixture.log.sync_handle().sync().unwrap();

    // A crash now: recovery drops the leftover bytes after the last whole batch.
    let mut fixture = fixture.reopen(small_config(), 4);
    assert_eq!(read_all(&fixture.log), fixture.stored.concat());
    fixture.append(record_batch(4, 2, 10), 4);
    fixture.log.close().unwrap();
    let fixture = fixture.reopen(small_config(), 5);
    assert_eq!(read_all(&fixture.log), fixture.stored.concat());
}

/// After kill -9 the tail may never have been synced; it is synced at open, before the
/// log serves it (an open whose sync fails fails, rather than serve it).
#[test]
fn recovery_syncs_the_tail_before_serving_it() {
    let mut fixture = Fixture::new(small_config());
    fixture.append(record_batch(1, 3, 10), 1);
    let Fixture { dir, log, stored } = fixture;
    drop(log); // a crash: no marker
    crate::faults::inject(dir.path(), crate::faults::Fault::SyncFails);
    let reopened = ShardLog::open(dir.path(), small_config(), 2);
    crate::faults::clear(dir.path());
    assert!(matches!(reopened, Err(Error::Io { .. })), "{reopened:?}");
    let mut log = ShardLog::open(dir.path(), small_config(), 2).unwrap();
    assert_eq!(read_all(&log), stored.concat());

    // A clean close needs no sync at open: its marker vouches for the files.
    log.close().unwrap();
    drop(log);
    crate::faults::inject(dir.path(), crate::faults::Fault::SyncFails);
    let reopened = ShardLog::open(dir.path(), small_config(), 3);
    crate::faults::clear(dir.path());
    assert!(reopened.is_ok(), "{reopened:?}");
}
