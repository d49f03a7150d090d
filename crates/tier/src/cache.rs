//! The block cache: fixed-size blocks of remote `.log` objects and decoded remote
//! `.index` files, in one `moka` cache weighed in bytes with LRU eviction.
//!
//! LRU rather than moka's default TinyLFU, which refuses new keys while the cache is full
//! unless they were seen before: a cold reader streaming through a segment reads each
//! block once, and must still get it cached for the batches that straddle blocks and for
//! read-ahead.
//!
//! Loads are single-flight: concurrent readers of one missing block wait for one GET
//! (`entry().or_try_insert_with`), and a failed load is not cached, so the next reader
//! tries again.
//!
//! Entries are keyed by the segment's upload identity (key, upload time, CRC), never by
//! key alone: a stream deleted and recreated under the same name reuses keys, and must
//! not be served the old bytes. Entries of deleted segments are never looked up again
//! and age out.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use shardline_log::OffsetIndexFile;

use crate::Error;
use crate::bucket::Bucket;
use crate::manifest::RemoteSegment;
use crate::metrics::{Counters, add};
use crate::whole_crc::WholeCrc;

/// Bookkeeping bytes charged per entry on top of its data, so that many tiny entries
/// cannot exceed the budget in real memory.
const ENTRY_OVERHEAD_BYTES: u64 = 128;

#[derive(Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Block { segment: Arc<str>, block: u64 },
    Index { segment: Arc<str> },
}

#[derive(Clone)]
enum Cached {
    Block(Bytes),
    Index(Arc<OffsetIndexFile>),
}

impl Cached {
    fn weight(&self) -> u32 {
        let bytes = match self {
            Cached::Block(bytes) => bytes.len() as u64,
            // Each in-memory entry is two u32s.
            Cached::Index(index) => index.entry_count() as u64 * 8,
        };
        u32::try_from(bytes + ENTRY_OVERHEAD_BYTES).unwrap_or(u32::MAX)
    }
}

/// Whether a lookup should count as a reader's hit or miss (read-ahead does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    Reader,
    Prefetch,
}

/// See the module docs.
#[derive(Clone)]
pub(crate) struct BlockCache {
    cache: Cache<CacheKey, Cached>,
    block_bytes: u64,
    counters: Arc<Counters>,
    whole_crc: WholeCrc,
}

impl fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("block_bytes", &self.block_bytes)
            .field("entries", &self.cache.entry_count())
            .field("weighted_size", &self.cache.weighted_size())
            .finish()
    }
}

impl BlockCache {
    pub(crate) fn new(
        capacity_bytes: u64,
        block_bytes: u64,
        counters: Arc<Counters>,
    ) -> BlockCache {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|_key: &CacheKey, value: &Cached| value.weight())
            .eviction_policy(EvictionPolicy::lru())
            .build();
        BlockCache {
            cache,
            block_bytes,
            whole_crc: WholeCrc::new(Arc::clone(&counters)),
            counters,
        }
    }

    pub(crate) fn block_bytes(&self) -> u64 {
        self.block_bytes
    }

    /// Bytes held (moka applies evictions lazily: see [`BlockCache::run_pending_tasks`]).
    pub(crate) fn size_bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Applies pending evictions now.
    pub(crate) async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    pub(crate) fn contains_block(&self, identity: &Arc<str>, block: u64) -> bool {
        self.cache.contains_key(&CacheKey::Block {
            segment: Arc::clone(identity),
            block,
        })
    }

    /// Block number `block` of the segment's `.log` object.
    pub(crate) async fn block(
        &self,
        bucket: &Bucket,
        segment: &RemoteSegment,
        identity: &Arc<str>,
        block: u64,
        lookup: Lookup,
    ) -> Result<Bytes, Error> {
        let start = block * self.block_bytes;
        let end = (start + self.block_bytes).min(segment.size_bytes);
        debug_assert!(start < end, "block {block} is past the segment's end");
        self.whole_crc.check(segment, identity)?;
        let key = CacheKey::Block {
            segment: Arc::clone(identity),
            block,
        };
        let entry = self
            .cache
            .entry(key)
            .or_try_insert_with(async {
                let bytes = bucket.get_range(&segment.log_key, start..end).await?;
                if bytes.len() as u64 == end - start {
                    self.whole_crc.record(
                        segment,
                        identity,
                        self.block_bytes,
                        block,
                        crc32c::crc32c(&bytes),
                    )?;
                }
                if bytes.len() as u64 != end - start {
                    return Err(Error::RemoteCorrupt {
                        key: segment.log_key.clone(),
                        position: start + bytes.len() as u64,
                        reason: format!(
                            "object ends before the {} bytes the manifest records",
                            segment.size_bytes
                        ),
                    });
                }
                Ok(Cached::Block(bytes))
            })
            .await
            .map_err(Error::shared)?;
        if lookup == Lookup::Reader {
            let counter = if entry.is_fresh() {
                &self.counters.cache_misses
            } else {
                &self.counters.cache_hits
            };
            add(counter, 1);
        }
        match entry.into_value() {
            Cached::Block(bytes) => Ok(bytes),
            Cached::Index(_) => unreachable!("block keys hold blocks"),
        }
    }

    /// The segment's decoded `.index`, fetched once and checked against the manifest.
    pub(crate) async fn index(
        &self,
        bucket: &Bucket,
        segment: &RemoteSegment,
        identity: &Arc<str>,
    ) -> Result<Arc<OffsetIndexFile>, Error> {
        let key = CacheKey::Index {
            segment: Arc::clone(identity),
        };
        let value = self
            .cache
            .try_get_with(key, async {
                let key = &segment.index_key;
                let (bytes, _) = bucket.get(key).await?.ok_or_else(|| Error::RemoteMissing {
                    key: key.clone(),
                })?;
                let index = OffsetIndexFile::decode(&bytes).map_err(|error| {
                    Error::RemoteCorrupt {
                        key: key.clone(),
                        position: 0,
                        reason: error.to_string(),
                    }
                })?;
                let agrees = index.base_offset == segment.base_offset
                    && index.next_offset == segment.next_offset
                    && index.log_size_bytes == segment.size_bytes;
                if !agrees {
                    return Err(Error::RemoteCorrupt {
                        key: key.clone(),
                        position: 0,
                        reason: format!(
                            "index describes offsets [{}, {}) in {} bytes, the manifest [{}, {}) in {}",
                            index.base_offset,
                            index.next_offset,
                            index.log_size_bytes,
                            segment.base_offset,
                            segment.next_offset,
                            segment.size_bytes
                        ),
                    });
                }
                Ok(Cached::Index(Arc::new(index)))
            })
            .await
            .map_err(Error::shared)?;
        match value {
            Cached::Index(index) => Ok(index),
            Cached::Block(_) => unreachable!("index keys hold indexes"),
        }
    }
}
