//! Tiered storage: sealed log segments copied to an object store (S3 or S3-compatible,
//! a local directory, or memory), one manifest per shard, cold reads through a block
//! cache, remote retention, and small documents for disaster recovery.
//!
//! Bucket layout (keys below the configured prefix: `s3://bucket/<prefix>`, or the
//! directory of `file:///dir`):
//!
//! ```text
//! <prefix>/
//!   streams/<shard_key>/                      a shard key may hold '/', e.g. orders/shard-0001
//!     manifest.json                           the shard's remote segments (see `manifest`)
//!     00000000000000000000-<writer>.log       batches verbatim, as in the local segment
//!     00000000000000000000-<writer>.index     the local .index file, byte for byte
//!     00000000000000000000-<writer>.timeindex the local .timeindex file, byte for byte
//!     00000000000000004711-<writer>.log …
//!
//! `<writer>` is the uploading tier's random id and its attempt number
//! (`3f2a…c1-1b`): no two uploads, by this server or another one on the same bucket,
//! ever write the same key, so segment objects are put create-if-absent and nothing a
//! manifest lists is ever overwritten. Keys written before writer ids (no `-<writer>`)
//! are still read, listed and swept.
//!   documents/<name>                          DR documents (metadata snapshots)
//!   uploads/<ms>-<hash>.json                  journal of in-flight multipart uploads
//!   probes/<pid>-<ms>                         start-up probe, deleted right away
//! ```
//!
//! A segment is readable remotely if and only if its manifest lists it: objects are
//! uploaded and verified before the entry is added, and the entry is removed before the
//! objects are deleted.
//!
//! Parts:
//! - [`Tier`] (`tier`): the public API and the per-shard manifest read-modify-write.
//! - `upload`: [`SealedSegment`] upload (whole or multipart), verification, journal.
//! - `read`: cold reads, batch by batch, with read-ahead.
//! - `cache`: the moka block cache (LRU, weighed in bytes, single-flight loads).
//! - `whole_crc`: the whole-object CRC check, from the CRCs of the blocks fetched.
//! - `manifest`: [`Manifest`] and [`RemoteSegment`], the manifest's JSON format.
//! - `layout`: the one owner of object key names.
//! - `bucket`: builds the store from the URL and wraps it once in the decorators:
//!   `retry` ([`RetryStore`](retry), back-off on transient errors) inside `metrics`
//!   (counting requests and bytes for [`TierStats`]).
//! - [`TierConfig`] (`config`) and [`Error`] (`error`).
//!
//! Formats of the segment files belong to `shardline_log` (the `.index` decoder) and
//! `shardline_core::batch` (record batches); this crate only moves and checks them.
//! Library types only in the public API: no `object_store` or `moka` type appears in it.
//!
//! Depends on core and log (formats only); never on the broker or a front.

mod bucket;
mod cache;
mod config;
mod error;
mod layout;
mod manifest;
mod metrics;
mod read;
mod retry;
mod tier;
mod upload;
mod whole_crc;

#[cfg(test)]
mod testsuite;

pub use config::{S3Settings, TierConfig};
pub use error::{Error, StoreError};
pub use manifest::{Manifest, RemoteSegment};
pub use metrics::TierStats;
pub use tier::Tier;
pub use upload::SealedSegment;
