//! Pure domain types and rules shared by every other Shardline crate.
//!
//! Nothing in here does I/O: no files, no sockets, no clocks. Time, when a rule needs it,
//! is passed in as milliseconds since the Unix epoch. That keeps every rule here testable
//! with plain unit and property tests.
//!
//! - [`hash`]: the 128-bit hash-key space, MD5 routing of partition keys, and the even
//!   split of the space into N shards exactly as Kinesis computes it.
//! - [`ids`]: stream names and shard ids (`shardId-000000000007`).
//! - [`batch`]: the Kafka v2 record-batch header (61 bytes), its CRC-32C, and walking a
//!   buffer of concatenated batches. The log stores batches verbatim; this module is the
//!   one place that knows where the offsets, lengths and checksum live (records inside
//!   a batch are `shardline-records`).
//! - [`reshard`]: which splits and merges Kinesis allows, and the children's ranges.
//! - [`sequence`]: Kinesis sequence numbers derived from (shard, offset) and back.
//! - [`throttle`]: token buckets for per-shard limits, refusing or delaying.
//!
//! Depends on no other Shardline crate.

pub mod batch;
pub mod hash;
pub mod ids;
pub mod reshard;
pub mod sequence;
pub mod throttle;

pub use batch::{BatchError, BatchHeader};
pub use hash::{HashKey, HashKeyRange};
pub use ids::{ShardId, StreamName, StreamNameError};
