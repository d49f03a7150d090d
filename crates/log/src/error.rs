//! The one error type of the crate, and why a stored byte range was judged corrupt.
//!
//! Every variant carries enough context (file path, segment base offset, byte position)
//! for an operator to find the bad bytes without a debugger.

use std::io;
use std::path::PathBuf;

use shardline_core::BatchError;

/// Everything that can go wrong in a shard's log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system call failed.
    #[error("log I/O failed: {operation} {}", path.display())]
    Io {
        /// What the log was doing, e.g. "writing" or "syncing".
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk are not what the log wrote, in a place recovery must not repair
    /// (a sealed segment, a gap between segments) or found while serving a read.
    #[error("log segment {segment_base_offset} is corrupt at byte {position}")]
    Corrupt {
        /// Base offset of the segment holding the bad bytes.
        segment_base_offset: u64,
        /// Byte position within that segment's `.log` file.
        position: u64,
        /// What was wrong.
        #[source]
        reason: CorruptReason,
    },
    /// A read asked for an offset the log does not hold.
    #[error("offset {offset} is out of range: the log holds [{log_start_offset}, {next_offset})")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// First offset still held.
        log_start_offset: u64,
        /// Offset the next append will get; reading exactly here is allowed and empty.
        next_offset: u64,
    },
    /// A [`LogConfig`](crate::LogConfig) value is outside what the log supports.
    #[error("invalid log config: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The field's name.
        field: &'static str,
        /// The value given.
        value: i128,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A batch cannot be stored because it would not fit in an empty segment.
    #[error("record batch of {batch_bytes} bytes exceeds the segment limit of {limit_bytes} bytes")]
    BatchTooLarge {
        /// Size of the batch.
        batch_bytes: usize,
        /// `segment_bytes_max`.
        limit_bytes: u64,
    },
    /// The buffer handed to `append` is not exactly one well-formed v2 batch.
    #[error("append needs exactly one record batch, and this buffer is not one")]
    InvalidBatch {
        /// What was wrong with it.
        #[source]
        source: InvalidBatch,
    },
    /// Assigning offsets to a batch would pass `i64::MAX`, the largest Kafka offset.
    #[error("offset overflow: {next_offset} + {record_count} records passes i64::MAX")]
    OffsetOverflow {
        /// The log end offset.
        next_offset: u64,
        /// Records in the batch being appended.
        record_count: u64,
    },
    /// Another `ShardLog` (in this or another process) already has the directory open.
    #[error("log directory {} is already open elsewhere", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The log was closed; it takes no more appends.
    #[error("log {} is closed", path.display())]
    Closed {
        /// The shard directory.
        path: PathBuf,
    },
    /// The file system is full: the batch (or the roll before it) was not written, and
    /// nothing already stored is affected. Appends succeed again once there is space;
    /// this is not a failure of the log (a *sync* that fails for lack of space is, as
    /// any failed sync).
    #[error("no space left for log {}", path.display())]
    NoSpace {
        /// The file that could not grow.
        path: PathBuf,
    },
    /// A write or fsync of this log failed earlier. What the page cache holds is then
    /// unknown (a failed fsync may have dropped dirty pages), so the log takes no more
    /// appends, is never sealed or marked clean, and must be reopened, which scans it.
    #[error("log {} had a storage failure and must be reopened", path.display())]
    Failed {
        /// The shard directory.
        path: PathBuf,
    },
}

/// Why `append` refused a buffer.
#[derive(Debug, thiserror::Error)]
pub enum InvalidBatch {
    /// The header does not parse.
    #[error("bad record batch header")]
    Header(#[source] BatchError),
    /// The buffer holds more than the one batch its header describes.
    #[error("buffer is {buffer_bytes} bytes but its batch is {batch_bytes}")]
    TrailingBytes {
        /// Size the header gives.
        batch_bytes: usize,
        /// Size of the buffer.
        buffer_bytes: usize,
    },
    /// `last_offset_delta` is negative, so the batch covers no offsets.
    #[error("last offset delta {0} is negative")]
    NegativeLastOffsetDelta(i32),
}

/// What made a byte range in a segment unacceptable.
#[derive(Debug, thiserror::Error)]
pub enum CorruptReason {
    /// The batch there fails header, length or CRC checks.
    #[error("bad record batch")]
    Batch(#[source] BatchError),
    /// The batch there is well formed but carries the wrong offsets.
    #[error("batch has base offset {found}, expected {expected}")]
    OffsetMismatch {
        /// The offset the log's bookkeeping says comes next.
        expected: u64,
        /// The batch's stored base offset.
        found: i64,
    },
    /// The batch's offsets are negative or overflow: base offset plus last offset delta
    /// must stay within `0..=i64::MAX`.
    #[error(
        "batch has impossible offsets: base {base_offset}, last offset delta {last_offset_delta}"
    )]
    BadOffsets {
        /// Stored base offset.
        base_offset: i64,
        /// Stored last offset delta.
        last_offset_delta: i32,
    },
    /// A batch ends beyond what 32-bit index positions or offsets can describe.
    #[error("segment grows past the 4 GiB / 2^32-offset limit of its index")]
    SegmentTooLarge,
    /// The segment does not start where the previous one ends, so offsets are missing.
    #[error("segment starts at offset {found} but the previous segment ends at {expected}")]
    Gap {
        /// Next offset of the previous segment.
        expected: u64,
        /// Base offset of this segment.
        found: u64,
    },
    /// The offset looked for is not in the segment even though its bookkeeping says so.
    #[error("offset {0} was not found in the segment")]
    OffsetMissing(u64),
}

impl Error {
    /// Whether the log may be in an unknown state after this error (failed I/O, damaged
    /// data, exhausted offsets), so that its owner must stop writing to it. The others
    /// refuse one append and leave the log as it was.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::Corrupt { .. }
                | Error::OffsetOverflow { .. }
                | Error::Failed { .. }
        )
    }

    /// Wraps an I/O error with what was being done and to which path.
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            operation,
            path,
            source,
        }
    }
}

impl From<shardline_durable::DurableError> for Error {
    fn from(error: shardline_durable::DurableError) -> Error {
        Error::Io {
            operation: error.action,
            path: error.path,
            source: error.source,
        }
    }
}
