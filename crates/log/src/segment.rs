//! One segment: a `.log` file of concatenated batches plus its in-memory indexes.
//!
//! A segment is written only at its end, by positioned writes at `size_bytes`, so a
//! failed write leaves nothing the segment's bookkeeping counts, and is read only by
//! positioned reads, so any number of readers can share the file handle.
//!
//! Walking batches uses [`BatchWindow`], which reads the file in chunks and lets
//! `shardline_core`'s parser say how many bytes each batch needs: the layout of a batch
//! is core's business, never re-derived here.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use shardline_core::batch::{BatchError, BatchHeader, assign_base_offset};

use crate::index::{self, SegmentIndex, SegmentSummary};
use crate::layout::{self, SegmentFile};
use crate::view::SegmentView;
use crate::{CorruptReason, Error};

/// How much a recovery scan reads per call.
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// How much a lookup reads per call before it knows how much it wants.
pub(crate) const LOOKUP_CHUNK_BYTES: usize = 32 << 10;

/// What the caller of [`Segment::open`] knows about the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// An older segment: sealed (synced, indexes persisted) when the next one was
    /// created. Damage in it is corruption, never repaired.
    Sealed,
    /// The last segment after a clean shutdown: its persisted indexes are trusted if
    /// they match the file; otherwise it is recovered like [`OpenMode::Recover`].
    CleanTail,
    /// The last segment after a crash: scanned and verified from the start, and
    /// truncated at the first torn or corrupt batch.
    Recover,
}

/// How a segment's in-memory indexes came to be (tests check recovery takes the
/// intended path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexSource {
    Created,
    Loaded,
    Rebuilt,
}

/// One segment of a shard's log: what readers see of it (`data`, of which they get
/// clones), plus what only the writer needs.
#[derive(Debug)]
pub(crate) struct Segment {
    data: SegmentView,
    pub(crate) index_source: IndexSource,
}

/// Result of looking at the bytes at one position.
pub(crate) enum Step {
    Batch(BatchHeader),
    End,
    Damaged(CorruptReason),
    /// The batch is larger than the caller's limit (and was not read whole).
    TooLarge,
}

/// A sliding buffer over `[.., limit)` of a segment file, for walking batches.
pub(crate) struct BatchWindow<'a> {
    file: &'a File,
    path: &'a Path,
    /// Bytes at or past this position are never read.
    limit: u64,
    /// File position of `buffer[0]`.
    start: u64,
    buffer: Vec<u8>,
    /// When refilling, read at least this far past the batch being parsed.
    pub(crate) read_ahead_bytes: usize,
    /// Bytes from this position on are kept when the window slides (they will be returned).
    pub(crate) keep_from: Option<u64>,
    verify_crc: bool,
}

impl<'a> BatchWindow<'a> {
    pub(crate) fn new(
        segment: &'a SegmentView,
        limit: u64,
        read_ahead_bytes: usize,
        verify_crc: bool,
    ) -> Self {
        BatchWindow {
            file: &segment.file,
            path: &segment.log_path,
            limit,
            start: 0,
            buffer: Vec::new(),
            read_ahead_bytes,
            keep_from: None,
            verify_crc,
        }
    }

    fn end(&self) -> u64 {
        self.start + self.buffer.len() as u64
    }

    /// Parses the batch starting at `position` (which must be at or after the window's
    /// start), reading more of the file as the parser asks for it, unless the batch turns
    /// out to be larger than `max_batch_bytes` (then [`Step::TooLarge`], without reading it).
    pub(crate) fn batch_at(&mut self, position: u64, max_batch_bytes: u64) -> Result<Step, Error> {
        if position >= self.limit {
            return Ok(Step::End);
        }
        loop {
            let window = if position < self.end() {
                &self.buffer[(position - self.start) as usize..]
            } else {
                &[][..]
            };
            let parsed = if self.verify_crc {
                BatchHeader::parse_and_verify(window)
            } else {
                BatchHeader::parse(window)
            };
            let needed = match parsed {
                Ok(header)
                    if header.base_offset < 0
                        || header.last_offset_delta < 0
                        || header
                            .base_offset
                            .checked_add(i64::from(header.last_offset_delta))
                            .is_none() =>
                {
                    // Checked here so that `last_offset()` and `as u64` are safe later.
                    return Ok(Step::Damaged(CorruptReason::BadOffsets {
                        base_offset: header.base_offset,
                        last_offset_delta: header.last_offset_delta,
                    }));
                }
                Ok(header) => return Ok(Step::Batch(header)),
                Err(BatchError::Incomplete { needed, available }) if needed > available => needed,
                Err(error) => return Ok(Step::Damaged(CorruptReason::Batch(error))),
            };
            let available = self.limit - position;
            if needed as u64 > available {
                // The batch runs past the end of the segment: a torn write.
                return Ok(Step::Damaged(CorruptReason::Batch(
                    BatchError::Incomplete {
                        needed,
                        available: usize::try_from(available).unwrap_or(usize::MAX),
                    },
                )));
            }
            if needed as u64 > max_batch_bytes {
                return Ok(Step::TooLarge);
            }
            let wanted = needed.max(self.read_ahead_bytes) as u64;
            self.fill(position, position + wanted.min(available))?;
        }
    }

    /// Makes the buffer cover `[position, until)`, dropping bytes no longer needed.
    fn fill(&mut self, position: u64, until: u64) -> Result<(), Error> {
        let keep = self.keep_from.map_or(position, |from| from.min(position));
        if keep > self.end() {
            self.buffer.clear();
            self.start = keep;
        } else if keep > self.start {
            self.buffer.drain(..(keep - self.start) as usize);
            self.start = keep;
        }
        let from = self.end();
        if until <= from {
            return Ok(());
        }
        let old_len = self.buffer.len();
        self.buffer.resize(old_len + (until - from) as usize, 0);
        self.file
            .read_exact_at(&mut self.buffer[old_len..], from)
            .map_err(Error::io("reading", self.path))
    }

    /// The bytes `[from, to)`, which must lie inside the window.
    pub(crate) fn bytes(&self, from: u64, to: u64) -> &[u8] {
        &self.buffer[(from - self.start) as usize..(to - self.start) as usize]
    }
}

/// What a scan of a whole `.log` file found.
struct Scan {
    index: SegmentIndex,
    next_offset: u64,
    valid_bytes: u64,
    /// Where and why the scan stopped early.
    damage: Option<(u64, CorruptReason)>,
}

/// The index files of a segment as found on disk.
struct PersistedIndex {
    summary: SegmentSummary,
    offsets: Vec<index::OffsetEntry>,
    times: Vec<index::TimeEntry>,
}

impl Segment {
    /// Creates an empty segment starting at `base_offset`. The caller fsyncs the directory.
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        now_ms: i64,
        index_interval_bytes: u32,
    ) -> Result<Segment, Error> {
        let log_path = SegmentFile::Log.path(dir, base_offset);
        // Truncating is safe: a file at the log end offset can only be the leftover of a
        // roll that failed before anything was appended to it.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(Error::io("creating", &log_path))?;
        let segment = Segment {
            data: SegmentView {
                base_offset,
                next_offset: base_offset,
                size_bytes: 0,
                created_ms: now_ms,
                index: SegmentIndex::new(index_interval_bytes),
                log_path: log_path.into(),
                file: Arc::new(file),
            },
            index_source: IndexSource::Created,
        };
        // Only so that `created_ms` survives a crash; a torn copy is detected and ignored.
        let written = segment.write_index_files(dir, layout::write_best_effort);
        if let Err(error) = written {
            // Leaving the .log would put a file at an offset later appends may pass.
            if let Err(cleanup) = fs::remove_file(&*segment.data.log_path) {
                tracing::warn!(path = %segment.data.log_path.display(), error = %cleanup,
                    "could not remove segment after failing to create its indexes");
            }
            return Err(error);
        }
        Ok(segment)
    }

    /// Opens an existing segment, loading or rebuilding its indexes as `mode` says.
    pub(crate) fn open(
        dir: &Path,
        base_offset: u64,
        mode: OpenMode,
        now_ms: i64,
        index_interval_bytes: u32,
    ) -> Result<Segment, Error> {
        let log_path = SegmentFile::Log.path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(mode != OpenMode::Sealed)
            .open(&log_path)
            .map_err(Error::io("opening", &log_path))?;
        let file_bytes = file
            .metadata()
            .map_err(Error::io("inspecting", &log_path))?
            .len();
        let persisted = load_index_files(dir, base_offset);
        let mut segment = Segment {
            data: SegmentView {
                base_offset,
                next_offset: base_offset,
                size_bytes: file_bytes,
                created_ms: persisted
                    .as_ref()
                    .map_or(now_ms, |persisted| persisted.summary.created_ms),
                index: SegmentIndex::new(index_interval_bytes),
                log_path: log_path.into(),
                file: Arc::new(file),
            },
            index_source: IndexSource::Loaded,
        };
        let usable = persisted.filter(|persisted| {
            let matches = persisted.summary.log_size_bytes == file_bytes;
            if !matches && mode != OpenMode::Recover {
                // Expected after a crash, surprising otherwise.
                tracing::warn!(
                    segment = base_offset,
                    index_log_bytes = persisted.summary.log_size_bytes,
                    file_bytes,
                    "index files describe a different length of log; rebuilding"
                );
            }
            mode != OpenMode::Recover && matches
        });
        if let Some(persisted) = usable {
            segment.data.next_offset = persisted.summary.next_offset;
            segment.data.index = SegmentIndex::from_entries(
                index_interval_bytes,
                &persisted.summary,
                persisted.offsets,
                persisted.times,
            );
            return Ok(segment);
        }
        if file_bytes > u64::from(u32::MAX) {
            return Err(segment.corrupt(u64::from(u32::MAX), CorruptReason::SegmentTooLarge));
        }
        let scan = segment.scan(index_interval_bytes)?;
        segment.data.index = scan.index;
        segment.data.next_offset = scan.next_offset;
        segment.data.size_bytes = scan.valid_bytes;
        segment.index_source = IndexSource::Rebuilt;
        if let Some((position, reason)) = scan.damage {
            if mode == OpenMode::Sealed {
                return Err(segment.corrupt(position, reason));
            }
            tracing::warn!(
                segment = base_offset,
                position,
                bytes_dropped = file_bytes - position,
                reason = %reason,
                "truncating torn or corrupt tail of the log"
            );
            segment
                .data
                .file
                .set_len(position)
                .and_then(|()| segment.data.file.sync_all())
                .map_err(Error::io("truncating", &*segment.data.log_path))?;
        } else if mode == OpenMode::Recover {
            // After a crash the tail may be in the page cache only (written, never
            // synced, never acknowledged). It is about to be served as durable, so make
            // it so first.
            crate::faults::sync_data(&segment.data.file, &segment.data.log_path)
                .map_err(Error::io("syncing", &*segment.data.log_path))?;
        } else if mode == OpenMode::Sealed {
            // Sealed segments never change again, so one rebuild should be the last.
            segment.write_index_files(dir, layout::write_atomically)?;
        }
        Ok(segment)
    }

    /// Reads the whole file, verifying every batch, and rebuilds the indexes.
    fn scan(&self, index_interval_bytes: u32) -> Result<Scan, Error> {
        let mut window = BatchWindow::new(&self.data, self.data.size_bytes, SCAN_CHUNK_BYTES, true);
        let mut index = SegmentIndex::new(index_interval_bytes);
        let mut position = 0;
        let mut next_offset = self.data.base_offset;
        let damage = loop {
            let header = match window.batch_at(position, u64::MAX)? {
                Step::End | Step::TooLarge => break None,
                Step::Damaged(reason) => break Some((position, reason)),
                Step::Batch(header) => header,
            };
            if header.base_offset as u64 != next_offset {
                break Some((
                    position,
                    CorruptReason::OffsetMismatch {
                        expected: next_offset,
                        found: header.base_offset,
                    },
                ));
            }
            let last_relative = header.last_offset() as u64 - self.data.base_offset;
            if last_relative > u64::from(u32::MAX) {
                break Some((position, CorruptReason::SegmentTooLarge));
            }
            index.observe(
                (next_offset - self.data.base_offset) as u32,
                position as u32,
                header.total_len() as u64,
                header.max_timestamp,
            );
            position += header.total_len() as u64;
            next_offset = header.last_offset() as u64 + 1;
        };
        Ok(Scan {
            index,
            next_offset,
            valid_bytes: position,
            damage,
        })
    }

    /// Writes both index files with `write` (atomic or best effort).
    fn write_index_files(
        &self,
        dir: &Path,
        write: fn(&Path, &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let summary = self.summary();
        write(
            &SegmentFile::OffsetIndex.path(dir, self.data.base_offset),
            &index::encode_offset_index(&summary, &self.data.index.offset_entries()),
        )?;
        write(
            &SegmentFile::TimeIndex.path(dir, self.data.base_offset),
            &index::encode_time_index(&summary, &self.data.index.time_entries()),
        )
    }

    /// Makes the segment's data durable and persists its indexes atomically, for a roll
    /// or a clean shutdown. The caller fsyncs the directory.
    /// `sync` fsyncs the data file (the log's guarded fsync, see `shard_log`).
    pub(crate) fn seal(
        &self,
        dir: &Path,
        sync: impl FnOnce(&File, &Path) -> Result<(), Error>,
    ) -> Result<(), Error> {
        // A failed write may have left bytes past the last whole batch; a sealed file
        // must be exactly what its index describes, or the next open would reject it.
        self.data
            .file
            .set_len(self.data.size_bytes)
            .map_err(Error::io("truncating", &*self.data.log_path))?;
        sync(&self.data.file, &self.data.log_path)?;
        self.write_index_files(dir, layout::write_atomically)
    }

    /// Writes `batch`, whose header is `header`, at the end of the segment with base
    /// offset `next_offset`. The caller has checked it fits.
    pub(crate) fn append(
        &mut self,
        batch: &mut [u8],
        header: &BatchHeader,
        now_ms: i64,
    ) -> Result<u64, Error> {
        if self.data.size_bytes == 0 {
            // A segment's age counts from its first batch, so an idle empty segment is
            // not rolled (leaving a one-batch segment) the moment traffic resumes.
            self.data.created_ms = now_ms;
        }
        let base_offset = self.data.next_offset;
        assign_base_offset(batch, base_offset as i64);
        debug_assert_eq!(
            BatchHeader::parse(batch).map(|stored| stored.base_offset),
            Ok(base_offset as i64),
            "the batch must carry the log end offset before it is written"
        );
        let position = self.data.size_bytes;
        // A failed write leaves `size_bytes` where it was, so whatever part of the batch
        // reached the file is overwritten by the next append or cut off by a seal.
        crate::faults::write_all_at(&self.data.file, batch, position, &self.data.log_path)
            .map_err(Error::io("writing", &*self.data.log_path))?;
        self.data.index.observe(
            (base_offset - self.data.base_offset) as u32,
            position as u32,
            batch.len() as u64,
            header.max_timestamp,
        );
        self.data.size_bytes += batch.len() as u64;
        self.data.next_offset = base_offset + u64::from(header.last_offset_delta as u32) + 1;
        Ok(position)
    }

    /// Removes the index files, once the `.log` is gone (removing the `.log` first means a
    /// crash part-way leaves at worst index files without a log, which open() discards).
    pub(crate) fn remove_index_files(&self, dir: &Path) -> Result<(), Error> {
        layout::remove_if_present(&SegmentFile::OffsetIndex.path(dir, self.data.base_offset))?;
        layout::remove_if_present(&SegmentFile::TimeIndex.path(dir, self.data.base_offset))
    }

    fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            base_offset: self.data.base_offset,
            next_offset: self.data.next_offset,
            log_size_bytes: self.data.size_bytes,
            created_ms: self.data.created_ms,
            max_timestamp: self.data.index.max_timestamp(),
        }
    }

    fn corrupt(&self, position: u64, reason: CorruptReason) -> Error {
        self.data.corrupt(position, reason)
    }

    /// What a reader's snapshot holds of this segment, as it is now.
    pub(crate) fn view(&self) -> SegmentView {
        self.data.clone()
    }

    pub(crate) fn base_offset(&self) -> u64 {
        self.data.base_offset
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.data.next_offset
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.data.size_bytes
    }

    pub(crate) fn created_ms(&self) -> i64 {
        self.data.created_ms
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.data.log_path
    }

    pub(crate) fn file(&self) -> &Arc<File> {
        &self.data.file
    }

    pub(crate) fn shared_log_path(&self) -> &Arc<Path> {
        &self.data.log_path
    }

    #[cfg(test)]
    pub(crate) fn index(&self) -> &SegmentIndex {
        &self.data.index
    }
}

/// Loads a segment's index files if both decode and agree; anything else means rebuild.
fn load_index_files(dir: &Path, base_offset: u64) -> Option<PersistedIndex> {
    let offset_path = SegmentFile::OffsetIndex.path(dir, base_offset);
    let time_path = SegmentFile::TimeIndex.path(dir, base_offset);
    let offset_bytes = read_if_present(&offset_path)?;
    let time_bytes = read_if_present(&time_path)?;
    let decoded = index::decode_offset_index(&offset_bytes).and_then(|(summary, offsets)| {
        index::decode_time_index(&time_bytes)
            .map(|(time_summary, times)| (summary, offsets, time_summary, times))
    });
    match decoded {
        Ok((summary, offsets, time_summary, times))
            if summary == time_summary && summary.base_offset == base_offset =>
        {
            Some(PersistedIndex {
                summary,
                offsets,
                times,
            })
        }
        Ok(_) => {
            tracing::warn!(
                segment = base_offset,
                "index files disagree; rebuilding from the log"
            );
            None
        }
        Err(error) => {
            tracing::warn!(segment = base_offset, error = %error, "unusable index file; rebuilding from the log");
            None
        }
    }
}

fn read_if_present(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => {
            // An index is only an accelerator; the log itself is the truth.
            tracing::warn!(path = %path.display(), error = %error, "cannot read index file; rebuilding from the log");
            None
        }
    }
}
