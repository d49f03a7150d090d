//! Cold reads: whole record batches from one remote segment, through the block cache.
//!
//! A read finds the segment holding the offset in the (cached) manifest, asks the
//! segment's remote `.index` where to start, and walks batches from there exactly as
//! the local log does: verify each batch (framing, CRC, record count) and that its base
//! offset continues the previous one; skip batches before the offset; then take batches
//! until the byte budget (the first batch is always whole, KIP-74), a batch reaching
//! `end_offset`, or the segment's end.
//!
//! Bytes come from fixed-size blocks. Entering a block schedules the next blocks in the
//! background: up to `readahead_blocks`, within what the read asked for — and, for a
//! sequential reader (one that starts where its previous read of the segment ended, or
//! at the segment's start), beyond it, so the next call finds its blocks cached or in
//! flight.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use shardline_core::batch::{BatchError, BatchHeader, HEADER_LEN};

use crate::Error;
use crate::cache::Lookup;
use crate::manifest::RemoteSegment;
use crate::tier::Inner;

/// One read of one segment.
pub(crate) struct SegmentRead<'a> {
    inner: &'a Arc<Inner>,
    segment: &'a RemoteSegment,
    identity: Arc<str>,
    /// Blocks this read already holds, so that re-reading a header costs no lookup.
    held: Vec<(u64, Bytes)>,
    /// Read-ahead may go up to (excluding) this block.
    prefetch_end_block: u64,
    /// Blocks up to (excluding) this one were already scheduled by this read.
    prefetched_to_block: u64,
}

impl fmt::Debug for SegmentRead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentRead")
            .field("segment", &self.identity)
            .field("held_blocks", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl<'a> SegmentRead<'a> {
    pub(crate) fn new(inner: &'a Arc<Inner>, segment: &'a RemoteSegment) -> SegmentRead<'a> {
        SegmentRead {
            inner,
            segment,
            identity: Arc::from(segment.identity()),
            held: Vec::new(),
            prefetch_end_block: 0,
            prefetched_to_block: 0,
        }
    }

    fn corrupt(&self, position: u64, reason: String) -> Error {
        Error::RemoteCorrupt {
            key: self.segment.log_key.clone(),
            position,
            reason,
        }
    }

    /// See the module docs. `offset` must lie in the segment.
    pub(crate) async fn read(
        mut self,
        offset: u64,
        end_offset: u64,
        max_bytes: usize,
    ) -> Result<Bytes, Error> {
        let segment = self.segment;
        debug_assert!(segment.contains(offset));
        let index = self
            .inner
            .cache
            .index(&self.inner.bucket, segment, &self.identity)
            .await?;
        let size = segment.size_bytes;
        // Batches from `limit` on all reach `end_offset`, so the walk need not look there.
        let limit = if end_offset >= segment.next_offset {
            size
        } else {
            index
                .position_bound(end_offset - segment.base_offset)
                .unwrap_or(size)
        };
        let (floor_relative, floor_position) = index.floor_of_offset(offset - segment.base_offset);
        let mut position = floor_position;
        let mut expected = segment.base_offset + floor_relative;
        // Find the batch holding `offset`.
        let first = loop {
            if position >= size {
                return Err(
                    self.corrupt(position, format!("offset {offset} is not in the segment"))
                );
            }
            let (header, batch_bytes) = self.batch_at(position, expected).await?;
            if header.last_offset() as u64 >= offset {
                break (header, batch_bytes);
            }
            position += batch_bytes;
            expected = header.last_offset() as u64 + 1;
        };
        let start = position;
        // A read from the segment's first byte is nearly always a consumer moving on from
        // the previous segment (or starting from the earliest offset): sequential too.
        let sequential =
            start == 0 || self.inner.read_positions.get(&self.identity).await == Some(start);
        self.prefetch_end_block = if sequential {
            self.block_count()
        } else {
            let wanted_end = start
                .saturating_add(max_bytes as u64)
                .max(start + first.1)
                .min(limit);
            wanted_end.div_ceil(self.inner.cache.block_bytes())
        };
        self.prefetch_after(start / self.inner.cache.block_bytes());
        // Take batches.
        let mut next = Some(first);
        while position < limit {
            let taken = position - start;
            let (header, batch_bytes) = match next.take() {
                Some(first) => first,
                None => {
                    let batch_bytes = self.batch_len(position).await?;
                    if taken + batch_bytes > max_bytes as u64 {
                        break;
                    }
                    self.batch_at(position, expected).await?
                }
            };
            if header.last_offset() as u64 >= end_offset {
                break;
            }
            position += batch_bytes;
            expected = header.last_offset() as u64 + 1;
        }
        if position == size && expected != segment.next_offset {
            return Err(self.corrupt(
                position,
                format!(
                    "the segment ends at offset {expected}, the manifest says {}",
                    segment.next_offset
                ),
            ));
        }
        let out = if position > start {
            self.bytes(start..position).await?
        } else {
            Bytes::new()
        };
        self.inner
            .read_positions
            .insert(Arc::clone(&self.identity), position)
            .await;
        Ok(out)
    }

    fn block_count(&self) -> u64 {
        self.segment
            .size_bytes
            .div_ceil(self.inner.cache.block_bytes())
    }

    /// Length of the batch at `position`, from its header alone.
    async fn batch_len(&mut self, position: u64) -> Result<u64, Error> {
        let size = self.segment.size_bytes;
        let head = self
            .bytes(position..(position + HEADER_LEN as u64).min(size))
            .await?;
        let batch_bytes = match BatchHeader::parse(&head) {
            Ok(header) => header.total_len() as u64,
            Err(BatchError::Incomplete { needed, .. }) => needed as u64,
            Err(error) => return Err(self.corrupt(position, error.to_string())),
        };
        if batch_bytes > size - position {
            return Err(self.corrupt(
                position,
                format!("a batch of {batch_bytes} bytes runs past the object's end at {size}"),
            ));
        }
        Ok(batch_bytes)
    }

    /// The verified header and length of the batch at `position`, which must start at
    /// offset `expected`.
    async fn batch_at(
        &mut self,
        position: u64,
        expected: u64,
    ) -> Result<(BatchHeader, u64), Error> {
        let batch_bytes = self.batch_len(position).await?;
        let batch = self.bytes(position..position + batch_bytes).await?;
        let header = BatchHeader::parse_and_verify(&batch)
            .map_err(|error| self.corrupt(position, error.to_string()))?;
        if header.base_offset < 0 || header.base_offset as u64 != expected {
            return Err(self.corrupt(
                position,
                format!(
                    "batch has base offset {}, expected {expected}",
                    header.base_offset
                ),
            ));
        }
        Ok((header, batch_bytes))
    }

    /// The bytes at `range` of the `.log` object (which must lie within it).
    async fn bytes(&mut self, range: Range<u64>) -> Result<Bytes, Error> {
        let block_bytes = self.inner.cache.block_bytes();
        let first = range.start / block_bytes;
        let last = (range.end - 1) / block_bytes;
        if first == last {
            let block = self.block(first).await?;
            let at = (range.start - first * block_bytes) as usize;
            return Ok(block.slice(at..at + (range.end - range.start) as usize));
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for number in first..=last {
            let block = self.block(number).await?;
            let block_start = number * block_bytes;
            let from = range.start.max(block_start) - block_start;
            let to = range.end.min(block_start + block.len() as u64) - block_start;
            out.extend_from_slice(&block[from as usize..to as usize]);
        }
        Ok(out.freeze())
    }

    async fn block(&mut self, number: u64) -> Result<Bytes, Error> {
        if let Some((_, bytes)) = self.held.iter().find(|(held, _)| *held == number) {
            return Ok(bytes.clone());
        }
        self.prefetch_after(number);
        let bytes = self
            .inner
            .cache
            .block(
                &self.inner.bucket,
                self.segment,
                &self.identity,
                number,
                Lookup::Reader,
            )
            .await?;
        self.held.push((number, bytes.clone()));
        Ok(bytes)
    }

    /// Schedules the blocks after `number` (see the module docs).
    fn prefetch_after(&mut self, number: u64) {
        let window = u64::from(self.inner.config.readahead_blocks);
        let from = (number + 1).max(self.prefetched_to_block);
        let to = (number + 1 + window).min(self.prefetch_end_block);
        for block in from..to {
            if self.inner.cache.contains_block(&self.identity, block) {
                continue;
            }
            // Bounded: with every permit taken, read-ahead is skipped, never queued.
            let Ok(permit) = Arc::clone(&self.inner.prefetch_permits).try_acquire_owned() else {
                break;
            };
            let inner = Arc::clone(self.inner);
            let segment = self.segment.clone();
            let identity = Arc::clone(&self.identity);
            // Detached on purpose: a prefetch is a few short GETs whose only effect is a
            // cache entry; the reader that needs the block joins the load if it is still
            // running, and repeats it if it failed.
            tokio::spawn(async move {
                let _permit = permit;
                let fetched = inner
                    .cache
                    .block(&inner.bucket, &segment, &identity, block, Lookup::Prefetch)
                    .await;
                if let Err(error) = fetched {
                    tracing::debug!(segment = %identity, block, %error, "read-ahead failed");
                }
            });
        }
        self.prefetched_to_block = self.prefetched_to_block.max(to);
    }
}
