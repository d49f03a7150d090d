//! What readers see of a log: [`LogView`], an immutable snapshot of a [`ShardLog`]'s
//! segments (file handles, lengths, indexes) that the owner of the log hands out after
//! every change, so reads never wait for the writer (nor for a roll's fsyncs).
//!
//! A snapshot stays readable after the log moves on: its segments' lengths and indexes
//! are those of the moment it was taken, and the bytes below those lengths never change
//! (segments are append-only; a torn tail is cut only at open). A segment that retention
//! deleted after the snapshot was taken is still readable through the snapshot's open
//! file handle.
//!
//! [`ShardLog`]: crate::ShardLog

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use shardline_core::batch::{BatchHeader, HEADER_LEN};

use crate::index::SegmentIndex;
use crate::segment::{BatchWindow, LOOKUP_CHUNK_BYTES, Step};
use crate::shard_log::SegmentInfo;
use crate::{CorruptReason, Error};

/// One segment as a snapshot saw it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub(crate) base_offset: u64,
    pub(crate) next_offset: u64,
    pub(crate) size_bytes: u64,
    pub(crate) created_ms: i64,
    pub(crate) index: SegmentIndex,
    pub(crate) log_path: Arc<Path>,
    pub(crate) file: Arc<File>,
}

impl SegmentView {
    /// Appends to `out` the stored batches from the one holding `offset` on, stopping
    /// before any batch with records at or past `end_offset`, and before exceeding
    /// `budget_bytes` unless `take_first` and nothing has been taken yet. Returns whether
    /// the read reached the end of the segment (so the next segment may continue it).
    pub(crate) fn read_into(
        &self,
        offset: u64,
        end_offset: u64,
        budget_bytes: usize,
        take_first: bool,
        verify_crc: bool,
        out: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        let limit = if end_offset >= self.next_offset {
            self.size_bytes
        } else {
            self.index
                .position_bound(end_offset - self.base_offset)
                .unwrap_or(self.size_bytes)
        };
        let (floor_relative, floor_position) =
            self.index.floor_of_offset(offset - self.base_offset);
        let mut window = BatchWindow::new(self, limit, LOOKUP_CHUNK_BYTES, verify_crc);
        let mut expected = self.base_offset + floor_relative;
        let mut position = floor_position;
        // Find the batch holding `offset`.
        loop {
            let header = self.expect_batch(&mut window, position, expected, u64::MAX)?;
            let Some(header) = header else {
                return Err(self.corrupt(position, CorruptReason::OffsetMissing(offset)));
            };
            if header.last_offset() as u64 >= offset {
                break;
            }
            position += header.total_len() as u64;
            expected = header.last_offset() as u64 + 1;
        }
        let start = position;
        window.keep_from = Some(start);
        loop {
            let taken = position - start;
            // Read what the budget could still take in one go, not more.
            window.read_ahead_bytes = budget_bytes.saturating_sub(taken as usize).max(HEADER_LEN);
            // KIP-74: the first batch of a response goes out whole, whatever the budget.
            let room = if take_first && taken == 0 {
                u64::MAX
            } else {
                (budget_bytes as u64).saturating_sub(taken)
            };
            let Some(header) = self.expect_batch(&mut window, position, expected, room)? else {
                break;
            };
            let batch_bytes = header.total_len() as u64;
            if header.last_offset() as u64 >= end_offset || batch_bytes > room {
                out.extend_from_slice(window.bytes(start, position));
                return Ok(false);
            }
            position += batch_bytes;
            expected = header.last_offset() as u64 + 1;
        }
        out.extend_from_slice(window.bytes(start, position));
        Ok(position == self.size_bytes)
    }

    /// The batch at `position`, which must start at offset `expected`; `None` at the end
    /// of the window or if the batch is larger than `max_batch_bytes`.
    fn expect_batch(
        &self,
        window: &mut BatchWindow<'_>,
        position: u64,
        expected: u64,
        max_batch_bytes: u64,
    ) -> Result<Option<BatchHeader>, Error> {
        match window.batch_at(position, max_batch_bytes)? {
            Step::End | Step::TooLarge => Ok(None),
            Step::Damaged(reason) => Err(self.corrupt(position, reason)),
            Step::Batch(header) if header.base_offset as u64 != expected => Err(self.corrupt(
                position,
                CorruptReason::OffsetMismatch {
                    expected,
                    found: header.base_offset,
                },
            )),
            Step::Batch(header) => Ok(Some(header)),
        }
    }

    /// Base offset of the first batch whose `max_timestamp >= timestamp_ms`, if any.
    pub(crate) fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>, Error> {
        if self
            .index
            .max_timestamp()
            .is_none_or(|max| max < timestamp_ms)
        {
            return Ok(None);
        }
        let (floor_relative, floor_position) = self.index.floor_of_timestamp(timestamp_ms);
        let mut window = BatchWindow::new(self, self.size_bytes, LOOKUP_CHUNK_BYTES, false);
        let mut expected = self.base_offset + floor_relative;
        let mut position = floor_position;
        while let Some(header) = self.expect_batch(&mut window, position, expected, u64::MAX)? {
            if header.max_timestamp >= timestamp_ms {
                return Ok(Some(expected));
            }
            position += header.total_len() as u64;
            expected = header.last_offset() as u64 + 1;
        }
        Ok(None)
    }

    pub(crate) fn corrupt(&self, position: u64, reason: CorruptReason) -> Error {
        Error::Corrupt {
            segment_base_offset: self.base_offset,
            position,
            reason,
        }
    }
}

/// A snapshot of a log for readers (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogView {
    /// The sealed segments, oldest first; shared by every snapshot until a roll or a
    /// deletion changes the list.
    pub(crate) sealed: Arc<[SegmentView]>,
    pub(crate) active: SegmentView,
    pub(crate) verify_crc: bool,
}

impl LogView {
    fn segment(&self, number: usize) -> &SegmentView {
        self.sealed.get(number).unwrap_or(&self.active)
    }

    fn segments_iter(&self) -> impl Iterator<Item = &SegmentView> {
        self.sealed.iter().chain(std::iter::once(&self.active))
    }

    /// Reads whole stored batches, starting with the batch that contains `offset` (which
    /// may begin before it), up to but excluding any batch with records at or past
    /// `end_offset` (a batch boundary such as the durable high watermark; it is clamped to
    /// [`next_offset`](LogView::next_offset)). Returns at most `max_bytes`, except that
    /// the first batch is always returned whole (KIP-74), and continues across segments.
    /// Empty when `offset >= end_offset`.
    ///
    /// Every batch is checked for framing, magic and offset continuity (and CRC with
    /// [`LogConfig::verify_crc_on_read`](crate::LogConfig::verify_crc_on_read)); bad bytes
    /// are [`Error::Corrupt`], never returned.
    pub fn read(&self, offset: u64, end_offset: u64, max_bytes: usize) -> Result<Bytes, Error> {
        let next_offset = self.next_offset();
        if offset < self.log_start_offset() || offset > next_offset {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                next_offset,
            });
        }
        let end_offset = end_offset.min(next_offset);
        let mut out = Vec::new();
        if offset >= end_offset {
            return Ok(Bytes::from(out));
        }
        let first = if self.active.base_offset <= offset {
            self.sealed.len()
        } else {
            self.sealed
                .partition_point(|segment| segment.base_offset <= offset)
                - 1
        };
        let mut offset = offset;
        for number in first..=self.sealed.len() {
            let segment = self.segment(number);
            if offset >= end_offset {
                break;
            }
            if offset >= segment.next_offset {
                // Empty segment (only the active one can be): nothing to take here.
                continue;
            }
            let budget_bytes = max_bytes.saturating_sub(out.len());
            let reached_end = segment.read_into(
                offset,
                end_offset,
                budget_bytes,
                out.is_empty(),
                self.verify_crc,
                &mut out,
            )?;
            if !reached_end {
                break;
            }
            offset = segment.next_offset;
        }
        Ok(Bytes::from(out))
    }

    /// The base offset of the first batch (in offset order) whose `max_timestamp` is at
    /// least `ts_ms`, or `None` if there is none. Batch granularity: a client looking for
    /// the first *record* at or after `ts_ms` skips earlier records of that batch itself,
    /// as it does for fetches.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<u64>, Error> {
        for segment in self.segments_iter() {
            if let Some(offset) = segment.offset_for_timestamp(ts_ms)? {
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }

    /// The first offset the log held.
    pub fn log_start_offset(&self) -> u64 {
        self.segment(0).base_offset
    }

    /// The log end offset: the offset the next append got.
    pub fn next_offset(&self) -> u64 {
        self.active.next_offset
    }

    /// Bytes of batches held, over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments_iter().map(|segment| segment.size_bytes).sum()
    }

    /// The segments, oldest first; the last is the active one.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let last = self.sealed.len();
        self.segments_iter()
            .enumerate()
            .map(|(number, segment)| SegmentInfo {
                base_offset: segment.base_offset,
                next_offset: segment.next_offset,
                size_bytes: segment.size_bytes,
                created_ms: segment.created_ms,
                max_timestamp: segment.index.max_timestamp(),
                path: segment.log_path.to_path_buf(),
                active: number == last,
            })
            .collect()
    }
}
