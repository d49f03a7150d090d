//! A shard's log on local disk: an append-only sequence of Kafka v2 record batches,
//! split into segment files, with sparse indexes for reads by offset and by time, fsync
//! decoupled from appends for group commit, and crash recovery.
//!
//! ```text
//! <shard dir>/
//!   .lock                          flock held while a ShardLog has the directory open
//!   .clean_shutdown                present only between close() and the next open()
//!   00000000000000000000.log       batches verbatim, base offsets assigned by append()
//!   00000000000000000000.index     sparse offset -> byte position (sealed segments)
//!   00000000000000000000.timeindex sparse max timestamp -> offset  (sealed segments)
//!   00000000000000004711.log       the active segment: the only one appended to
//!   00000000000000004711.index     persisted at close(); rebuilt by scanning after a crash
//!   00000000000000004711.timeindex
//!   *.tmp                          an index being replaced; removed at open()
//! ```
//!
//! File names are the segment's base offset in 20 digits. Segments are contiguous: each
//! starts at the offset after the previous one's last record.
//!
//! - [`ShardLog`] (`shard_log`): the public API, recovery, rolling, reads across
//!   segments, [`SyncHandle`] for group commit, retention by whole segments.
//! - `segment`: one segment's `.log` file, positioned writes, batch walking, the
//!   recovery scan.
//! - [`LogView`] (`view`): an immutable snapshot of a log that readers use without the
//!   log itself, and the reads across segments; `entries`: the chunked entry list that
//!   makes a snapshot of a growing index cheap.
//! - `index`: the two index formats (the one place they are encoded and decoded) and
//!   in-memory lookups; [`OffsetIndexFile`] decodes an `.index` file for readers outside
//!   the crate (the tier's remote copies).
//! - `layout`: file names, atomic replace, directory fsync, the marker and the lock.
//! - [`LogConfig`] (`config`) and [`Error`] (`error`).
//!
//! Synchronous `std::fs` only; time comes in as `now_ms` arguments, never from a clock.
//! The batch format itself belongs to `shardline_core::batch`.
//!
//! Depends on core only.

mod config;
mod entries;
mod error;
pub mod faults;
mod index;
mod layout;
mod segment;
mod shard_log;
mod view;

pub use config::LogConfig;
pub use error::{CorruptReason, Error, InvalidBatch};
pub use index::{IndexFileError, OffsetIndexFile};
pub use layout::SegmentFile;
pub use shard_log::{AppendInfo, SegmentInfo, ShardLog, SyncHandle};
pub use view::LogView;
