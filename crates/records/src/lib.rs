//! Kafka v2 records: the one place that decodes and encodes what is inside a record
//! batch. The log stores batches verbatim and needs only their 61-byte header
//! (`shardline_core::batch`); everything that must look at records uses this crate:
//! re-routing a batch sent to a closed shard, Kinesis puts (encode), and later Kinesis
//! GetRecords, compaction and transactions (decode).
//!
//! - [`decode_batch`] / [`check_batch`]: one batch → its records, or just a check of
//!   them. Every length and count is checked against the bytes present before anything
//!   is sized from it; compressed sections are inflated within
//!   [`DecodeLimits::decompressed_bytes_max`] (a bomb fails at the limit); the header's
//!   record count must be exactly the records present, numbered 0, 1, 2, ….
//! - [`encode_batch`]: records → one batch with any of the five codecs; [`build_batch`]
//!   is the uncompressed shortcut for records the server makes itself.
//! - [`codec`]: gzip, snappy (Xerial or raw), lz4 (frame) and zstd, bounded.
//! - [`ControlRecord`]: transaction markers.
//!
//! Depends on `shardline-core` only; does no I/O.

mod batch;
pub mod codec;
mod control;
mod error;
mod record;
mod varint;

pub use batch::{
    BatchSpec, BatchSummary, DecodeLimits, DecodedBatch, NewRecord, RecordHeader, batch_len,
    build_batch, build_simple_batch, check_batch, decode_batch, encode_batch, record_len,
};
pub use control::{ControlRecord, ControlType};
pub use error::RecordsError;
pub use record::{EncodeRecord, Header, Record};
pub use shardline_core::batch::Compression;

#[cfg(test)]
mod tests;
