//! [`ShardLog`]: one shard's ordered list of segments, the last of which takes appends,
//! plus recovery at open, rolling, reads across segments, group-commit syncing and
//! deletion of old segments.
//!
//! Durability rules:
//! - `append` never fsyncs what it writes; a [`SyncHandle`] does, outside `&mut self`.
//! - Rolling seals the old segment: its data is fsynced and its indexes persisted
//!   before the new segment exists, and the directory is fsynced after the new file is
//!   created. So every segment but the last is durable and described by its index files,
//!   and damage found in one of them is reported as corruption, never "repaired" by
//!   dropping data that was acknowledged.
//! - Only the last segment can have a torn tail. Without the clean-shutdown marker it is
//!   scanned with CRC checks and truncated at the first bad batch; nothing after that
//!   point was ever covered by a completed sync.
//! - Once a write or an fsync has failed (through a [`SyncHandle`] too) the log is
//!   *failed*: it refuses appends, rolls and [`ShardLog::close`], so it is never sealed
//!   or marked clean, and its next open scans it (fsyncgate: a failed fsync may have
//!   dropped dirty pages while the file still reads back fine).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shardline_core::batch::BatchHeader;

use crate::error::InvalidBatch;
use crate::layout;
use crate::segment::{OpenMode, Segment};
use crate::view::{LogView, SegmentView};
use crate::{CorruptReason, Error, LogConfig};

/// One shard's log in a directory of its own. Reads take `&self`; writes `&mut self`.
#[derive(Debug)]
pub struct ShardLog {
    dir: PathBuf,
    config: LogConfig,
    /// Ascending and contiguous; never empty; the last one takes appends.
    segments: Vec<Segment>,
    /// What snapshots share of every segment but the last (see [`ShardLog::view`]).
    sealed_views: Arc<[SegmentView]>,
    /// Held for the flock on `.lock`.
    _lock: File,
    /// Set by [`ShardLog::close`]: the clean-shutdown marker now vouches for the files, so
    /// nothing may be appended any more.
    closed: bool,
    /// Set by the first failed write or fsync; shared with every [`SyncHandle`].
    failed: Arc<Fsyncs>,
}

/// What every fsync of one log goes through: a lock, so that no two of them run at once,
/// and the failed flag, checked and set under it. Linux reports a writeback error to
/// only one fsync of a file: without the lock, a roll's fsync could take the error and a
/// group commit's fsync racing it return success (acknowledging lost pages), or the
/// other way round a roll could seal a segment whose pages were lost.
#[derive(Debug, Default)]
struct Fsyncs {
    lock: Mutex<()>,
    failed: AtomicBool,
}

impl Fsyncs {
    fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn mark_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// fsyncs `file` unless the log has failed; a failure fails the log.
    fn sync(&self, file: &File, path: &Path, dir: &Path) -> Result<(), Error> {
        let _one_at_a_time = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.is_failed() {
            return Err(Error::Failed {
                path: dir.to_path_buf(),
            });
        }
        crate::faults::sync_data(file, path).map_err(|error| {
            self.mark_failed();
            Error::io("syncing", path)(error)
        })
    }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
    /// The batch's `max_timestamp` field.
    pub max_timestamp: i64,
    /// Base offset of the segment it was written to.
    pub segment_base_offset: u64,
    /// Byte position of the batch in that segment's `.log` file.
    pub position: u64,
    /// Whether this append rolled a new segment first.
    pub rolled: bool,
}

/// What retention and tiering need to know about a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First offset of the segment.
    pub base_offset: u64,
    /// One past its last offset.
    pub next_offset: u64,
    /// Length of its `.log` file.
    pub size_bytes: u64,
    /// When its age started counting: its first append, or its creation while empty.
    pub created_ms: i64,
    /// Largest batch `max_timestamp` in it; `None` while it is empty.
    pub max_timestamp: Option<i64>,
    /// Its `.log` file.
    pub path: PathBuf,
    /// Whether it is the segment taking appends (all others are sealed and immutable).
    pub active: bool,
}

/// Everything needed to fsync what was appended up to a point, without the log itself:
/// take it under the writer's lock, drop the lock, then [`sync`](SyncHandle::sync).
#[derive(Debug)]
#[must_use = "a SyncHandle does nothing until sync() is called"]
pub struct SyncHandle {
    file: Arc<File>,
    path: Arc<Path>,
    dir: PathBuf,
    next_offset: u64,
    failed: Arc<Fsyncs>,
}

impl SyncHandle {
    /// The offset that becomes durable (everything before it) once `sync` returns.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Fsyncs the data of the segment that was active when the handle was taken. Older
    /// segments were synced when they were sealed, and the directory when this one was
    /// created, so this is all that is needed. Returns the now-durable next offset.
    ///
    /// An error marks the log failed (see the module docs): a failed fsync can drop
    /// dirty pages, so a retry proves nothing.
    pub fn sync(self) -> Result<u64, Error> {
        self.failed.sync(&self.file, &self.path, &self.dir)?;
        Ok(self.next_offset)
    }
}

impl ShardLog {
    /// Opens the log in `dir`, creating the directory and a first segment (aged from
    /// `now_ms`) if there is none, and recovering from a crash if the last shutdown was
    /// not clean (see the module docs). Removes leftovers of interrupted file
    /// replacements and index files whose segment is gone.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<ShardLog, Error> {
        ShardLog::open_starting_at(dir, config, now_ms, 0)
    }

    /// As [`ShardLog::open`], but a log that has no segment yet starts at `first_offset`
    /// instead of 0: a shard rebuilt from object storage continues after its remote data.
    /// An existing log ignores `first_offset`.
    pub fn open_starting_at(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
        first_offset: u64,
    ) -> Result<ShardLog, Error> {
        config.validate()?;
        // Durably: a shard reported created must still have its directory after a crash.
        shardline_durable::create_dir(dir)?;
        let lock = layout::lock_dir(dir)?;
        let listing = layout::list(dir)?;
        for tmp in &listing.tmp_files {
            tracing::warn!(path = %tmp.display(), "removing leftover temporary file");
            layout::remove_if_present(tmp)?;
        }
        for (base_offset, path) in &listing.index_files {
            if listing.log_base_offsets.binary_search(base_offset).is_err() {
                tracing::warn!(path = %path.display(), "removing index file without a segment");
                layout::remove_if_present(path)?;
            }
        }
        if listing.clean_shutdown {
            layout::remove_if_present(&dir.join(layout::CLEAN_SHUTDOWN_FILE))?;
        }
        let mut segments: Vec<Segment> = Vec::with_capacity(listing.log_base_offsets.len().max(1));
        let last = listing.log_base_offsets.len().saturating_sub(1);
        for (number, &base_offset) in listing.log_base_offsets.iter().enumerate() {
            let mode = match (number == last, listing.clean_shutdown) {
                (false, _) => OpenMode::Sealed,
                (true, true) => OpenMode::CleanTail,
                (true, false) => OpenMode::Recover,
            };
            let segment =
                Segment::open(dir, base_offset, mode, now_ms, config.index_interval_bytes)?;
            if let Some(previous) = segments.last()
                && previous.next_offset() != base_offset
            {
                return Err(Error::Corrupt {
                    segment_base_offset: base_offset,
                    position: 0,
                    reason: CorruptReason::Gap {
                        expected: previous.next_offset(),
                        found: base_offset,
                    },
                });
            }
            segments.push(segment);
        }
        if segments.is_empty() {
            segments.push(Segment::create(
                dir,
                first_offset,
                now_ms,
                config.index_interval_bytes,
            )?);
        }
        // Makes the marker's removal (and any new first segment) durable before appends
        // start: a marker that reappeared after a crash would skip recovery.
        layout::sync_dir(dir)?;
        let mut log = ShardLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            sealed_views: Arc::from(Vec::new()),
            _lock: lock,
            closed: false,
            failed: Arc::new(Fsyncs::default()),
        };
        log.refresh_sealed_views();
        Ok(log)
    }

    /// Appends one record batch, assigning it the base offset [`next_offset`]
    /// (written into `batch`, which is otherwise stored verbatim). Rolls to a new segment
    /// first if the active one is full or old enough. Does not fsync the batch.
    ///
    /// The caller is expected to have verified the batch (CRC included); here only its
    /// framing is checked.
    ///
    /// [`next_offset`]: ShardLog::next_offset
    pub fn append(&mut self, batch: &mut [u8], now_ms: i64) -> Result<AppendInfo, Error> {
        self.check_writable()?;
        let header = BatchHeader::parse(batch).map_err(|source| Error::InvalidBatch {
            source: InvalidBatch::Header(source),
        })?;
        if header.total_len() != batch.len() {
            return Err(Error::InvalidBatch {
                source: InvalidBatch::TrailingBytes {
                    batch_bytes: header.total_len(),
                    buffer_bytes: batch.len(),
                },
            });
        }
        if header.last_offset_delta < 0 {
            return Err(Error::InvalidBatch {
                source: InvalidBatch::NegativeLastOffsetDelta(header.last_offset_delta),
            });
        }
        if batch.len() as u64 > self.config.segment_bytes_max {
            return Err(Error::BatchTooLarge {
                batch_bytes: batch.len(),
                limit_bytes: self.config.segment_bytes_max,
            });
        }
        let next_offset = self.next_offset();
        let record_count = u64::from(header.last_offset_delta as u32) + 1;
        if next_offset + record_count > i64::MAX as u64 {
            return Err(Error::OffsetOverflow {
                next_offset,
                record_count,
            });
        }
        let rolled = self.should_roll(batch.len() as u64, record_count, now_ms);
        if rolled {
            self.roll(now_ms)?;
        }
        let active = self.active_mut();
        let position = match active.append(batch, &header, now_ms) {
            Ok(position) => position,
            Err(error) => return Err(self.fail_unless_full(error)),
        };
        Ok(AppendInfo {
            base_offset: next_offset,
            last_offset: next_offset + record_count - 1,
            max_timestamp: header.max_timestamp,
            segment_base_offset: active.base_offset(),
            position,
            rolled,
        })
    }

    fn should_roll(&self, batch_bytes: u64, record_count: u64, now_ms: i64) -> bool {
        let active = self.active();
        if active.size_bytes() == 0 {
            // An empty segment can take any batch that passed the size check.
            return false;
        }
        let full = active.size_bytes() + batch_bytes > self.config.segment_bytes_max;
        let old = now_ms.saturating_sub(active.created_ms()) > self.config.segment_ms_max;
        // Index entries hold offsets relative to the segment base in 32 bits.
        let offsets_exhausted =
            active.next_offset() + record_count - active.base_offset() > u64::from(u32::MAX);
        full || old || offsets_exhausted
    }

    /// Seals the active segment and starts a new one at the log end offset.
    fn roll(&mut self, now_ms: i64) -> Result<(), Error> {
        self.try_roll(now_ms)
            .map_err(|error| self.fail_unless_full(error))
    }

    fn try_roll(&mut self, now_ms: i64) -> Result<(), Error> {
        let active = self.active();
        active.seal(&self.dir, |file, path| {
            self.failed.sync(file, path, &self.dir)
        })?;
        let segment = Segment::create(
            &self.dir,
            active.next_offset(),
            now_ms,
            self.config.index_interval_bytes,
        )?;
        tracing::debug!(
            dir = %self.dir.display(),
            sealed = active.base_offset(),
            sealed_bytes = active.size_bytes(),
            new = segment.base_offset(),
            "rolled log segment"
        );
        self.segments.push(segment);
        self.refresh_sealed_views();
        // The new file (and the sealed indexes' renames) must survive a crash before a
        // sync of the new segment can claim anything in it is durable.
        layout::sync_dir(&self.dir)
    }

    /// Seals the active segment now if it holds anything, so that every record so far
    /// lies in sealed segments: what retention needs to delete the data of a shard that
    /// takes no more appends, or whose newest records have all expired.
    pub fn roll_now(&mut self, now_ms: i64) -> Result<bool, Error> {
        self.check_writable()?;
        if self.active().size_bytes() == 0 {
            return Ok(false);
        }
        self.roll(now_ms)?;
        Ok(true)
    }

    /// A handle that makes everything appended so far durable, usable without `&mut self`.
    pub fn sync_handle(&self) -> SyncHandle {
        let active = self.active();
        SyncHandle {
            file: Arc::clone(active.file()),
            path: Arc::clone(active.shared_log_path()),
            dir: self.dir.clone(),
            next_offset: active.next_offset(),
            failed: Arc::clone(&self.failed),
        }
    }

    /// A snapshot for readers: see [`LogView`]. Take a new one after every change.
    pub fn view(&self) -> LogView {
        LogView {
            sealed: Arc::clone(&self.sealed_views),
            active: self.active().view(),
            verify_crc: self.config.verify_crc_on_read,
        }
    }

    /// As [`LogView::read`] on a snapshot taken now.
    pub fn read(&self, offset: u64, end_offset: u64, max_bytes: usize) -> Result<Bytes, Error> {
        self.view().read(offset, end_offset, max_bytes)
    }

    /// As [`LogView::offset_for_timestamp`] on a snapshot taken now.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<u64>, Error> {
        self.view().offset_for_timestamp(ts_ms)
    }

    /// The first offset the log still holds.
    pub fn log_start_offset(&self) -> u64 {
        self.segments[0].base_offset()
    }

    /// The offset the next append gets (the log end offset).
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset()
    }

    /// Bytes of batches held, over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size_bytes).sum()
    }

    /// The segments, oldest first; the last is the active one.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.view().segments()
    }

    /// Rebuilds the sealed segments' shared snapshot after the list changed.
    fn refresh_sealed_views(&mut self) {
        let sealed = &self.segments[..self.segments.len() - 1];
        self.sealed_views = sealed.iter().map(Segment::view).collect();
    }

    /// Deletes the oldest segments whose records all lie below `offset`, never the active
    /// one, and returns how many went. The log start offset becomes the first remaining
    /// segment's base offset.
    ///
    /// The directory is not fsynced: a deletion lost in a crash only brings back whole old
    /// segments, which the next call deletes again.
    pub fn delete_segments_before(&mut self, offset: u64) -> Result<usize, Error> {
        let doomed = self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|segment| segment.next_offset() <= offset)
            .count();
        for _ in 0..doomed {
            // A failure here leaves the segment whole, so it stays in the log.
            layout::remove_if_present(self.segments[0].log_path())?;
            // Without its .log the segment is gone whatever happens to its indexes;
            // leftovers are removed at the next open.
            let gone = self.segments.remove(0);
            self.refresh_sealed_views();
            gone.remove_index_files(&self.dir)?;
        }
        Ok(doomed)
    }

    /// Shuts down cleanly: syncs the active segment, persists its indexes and writes the
    /// clean-shutdown marker, so the next open skips the recovery scan. Takes `&mut self`
    /// so that an owner sharing the log behind a lock can close it in place; every later
    /// append fails with [`Error::Closed`], while reads keep working.
    ///
    /// A failed log is not closed: it answers [`Error::Failed`] and leaves no marker, so
    /// its next open scans it.
    pub fn close(&mut self) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        if self.is_failed() {
            return Err(self.failed_error());
        }
        let sealed = self
            .active()
            .seal(&self.dir, |file, path| {
                self.failed.sync(file, path, &self.dir)
            })
            // The indexes' renames must be durable before the marker vouches for them.
            .and_then(|()| layout::sync_dir(&self.dir));
        if let Err(error) = sealed {
            return Err(self.fail(error));
        }
        // Closed only now: a close whose seal failed must not count as done.
        self.closed = true;
        layout::write_clean_shutdown(&self.dir)?;
        layout::sync_dir(&self.dir)
    }

    /// Whether a write or fsync of this log has failed (see the module docs).
    pub fn is_failed(&self) -> bool {
        self.failed.is_failed()
    }

    /// Marks the log failed: its owner saw a storage error this log could not (one
    /// outside it, or one it wants treated as fatal). Reads go on working.
    pub fn mark_failed(&self) {
        self.failed.mark_failed();
    }

    fn failed_error(&self) -> Error {
        Error::Failed {
            path: self.dir.clone(),
        }
    }

    /// Marks the log failed and hands `error` back: what every failed write does.
    fn fail(&self, error: Error) -> Error {
        self.mark_failed();
        error
    }

    /// As [`ShardLog::fail`], except for a write that found the disk full: that wrote
    /// nothing the log counts (its length stays where it was), so the log stays usable
    /// and the error becomes [`Error::NoSpace`]. A failed *sync* is fatal whatever its
    /// errno: by then the kernel may have dropped the dirty pages.
    fn fail_unless_full(&self, error: Error) -> Error {
        match error {
            Error::Io {
                operation,
                path,
                source,
            } if !operation.starts_with("syncing")
                && source.kind() == std::io::ErrorKind::StorageFull =>
            {
                Error::NoSpace { path }
            }
            other => self.fail(other),
        }
    }

    fn check_writable(&self) -> Result<(), Error> {
        if self.closed {
            return Err(Error::Closed {
                path: self.dir.clone(),
            });
        }
        if self.is_failed() {
            return Err(self.failed_error());
        }
        Ok(())
    }

    fn active(&self) -> &Segment {
        let last = self.segments.len() - 1;
        &self.segments[last]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    #[cfg(test)]
    pub(crate) fn segment_internals(&self) -> &[Segment] {
        &self.segments
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod view_tests;
