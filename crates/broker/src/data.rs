//! The data plane: appends (validated, throttled, queued with the shard's writer), reads
//! below the high watermark (local log or, below it, the object store), offsets,
//! long-poll wake-ups and idempotent-producer ids.

use super::*;
use shardline_core::batch::Compression;
use shardline_records::{BatchSummary, DecodeLimits};

impl Broker {
    /// Validates one record batch and queues it for `shard`. Calls made in order from one
    /// task are stored in that order; await the returned [`PendingAppend`] for the result.
    /// The `await` here only waits for room in the shard's queue (backpressure).
    ///
    /// Over the shard's write limits the append is still taken, and
    /// [`PendingAppend::throttle_ms`] says how long the caller should hold its answer
    /// (Kafka's way). An append to a closed shard fails with [`Error::ShardClosed`]: route
    /// its records with [`Broker::route`] instead.
    pub async fn append(
        &self,
        stream: &str,
        shard: i64,
        batch: BytesMut,
    ) -> Result<PendingAppend, Error> {
        self.append_limited(stream, shard, batch, false).await
    }

    /// As [`Broker::append`], but an append over the shard's write limits is refused with
    /// [`Error::Throttled`] and nothing is stored (Kinesis' way).
    pub async fn append_or_refuse(
        &self,
        stream: &str,
        shard: i64,
        batch: BytesMut,
    ) -> Result<PendingAppend, Error> {
        self.append_limited(stream, shard, batch, true).await
    }

    async fn append_limited(
        &self,
        stream: &str,
        shard: i64,
        batch: BytesMut,
        refuse: bool,
    ) -> Result<PendingAppend, Error> {
        self.check_running()?;
        let (stream, index) = self.shard(stream, shard)?;
        if !stream.info.shards[index].is_open() {
            return Err(Error::ShardClosed {
                stream: stream.info.name.clone(),
                shard: index as u32,
            });
        }
        let limit = stream.info.config.max_message_bytes;
        if batch.len() > limit as usize {
            return Err(Error::BatchTooLarge {
                size: batch.len(),
                limit,
            });
        }
        let (batch, summary) = self.check_batch(batch).await?;
        let header = summary.header;
        if header.total_len() != batch.len() {
            return Err(Error::InvalidBatch(
                "exactly one record batch per partition is allowed".to_owned(),
            ));
        }
        if header.is_control() || header.is_transactional() {
            return Err(Error::InvalidBatch(
                "transactional and control batches are not supported".to_owned(),
            ));
        }
        let slot = &stream.shards[index];
        slot.shard.check_failed()?;
        let sender = slot.queue.load_full();
        let Some(sender) = sender else {
            return Err(self.closed_queue(&stream.info.name, index as u32).await);
        };
        let now = self.now_ms();
        let throttle_ms = slot
            .shard
            .charge_write(batch.len() as u64, summary.records as u64, now, refuse)
            .map_err(|wait_ms| Error::Throttled {
                stream: stream.info.name.clone(),
                shard: index as u32,
                wait_ms,
            })?;
        if throttle_ms > 0 {
            self.inner.throttled_writes.fetch_add(1, Ordering::Relaxed);
        }
        self.inner
            .appended_records
            .fetch_add(summary.records as u64, Ordering::Relaxed);
        self.inner
            .appended_bytes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let (reply, receiver) = oneshot::channel();
        sender
            .send(AppendRequest {
                batch,
                header,
                now_ms: now,
                reply,
            })
            .await
            // Our clone of the sender keeps the queue open through a reshard (the writer
            // drains every sender's appends), so only a dead writer gets here.
            .map_err(|_writer_gone| Error::ShardFailed {
                stream: stream.info.name.clone(),
                shard: index as u32,
                reason: "the shard's writer stopped".to_owned(),
            })?;
        Ok(PendingAppend {
            reply: receiver,
            throttle_ms,
        })
    }

    /// Checks a batch before it is stored verbatim: its header and CRC, and every record
    /// against the header's count and offset deltas, so the count that offsets and
    /// throttles go by is the count really present. A compressed batch is inflated within
    /// [`BrokerConfig::decompressed_batch_bytes_max`] off the async workers (as Kafka's
    /// broker does, it looks inside); an uncompressed one is walked in place.
    async fn check_batch(&self, batch: BytesMut) -> Result<(BytesMut, BatchSummary), Error> {
        let limits = DecodeLimits {
            decompressed_bytes_max: self.inner.config.decompressed_batch_bytes_max,
        };
        let compressed = BatchHeader::parse(&batch)
            .is_ok_and(|header| header.compression() != Compression::None);
        if !compressed {
            let summary = shardline_records::check_batch(&batch, limits)?;
            return Ok((batch, summary));
        }
        let (batch, checked) = tokio::task::spawn_blocking(move || {
            let checked = shardline_records::check_batch(&batch, limits);
            (batch, checked)
        })
        .await
        .map_err(|error| Error::Internal(format!("batch check task failed: {error}")))?;
        Ok((batch, checked?))
    }

    /// The error for an append that found its shard's queue closed. Outside shutdown that
    /// means a reshard (or a delete) is closing the shard under the admin lock, while the
    /// published layout still shows it open; waiting for the lock means the caller's next
    /// `route` sees the children, so callers never need to poll for the layout.
    /// (`store_rerouted` appends while holding that lock, but only to children it found
    /// open under it, whose queues nothing else can close meanwhile, so it never gets here.)
    pub(crate) async fn closed_queue(&self, stream: &str, shard: u32) -> Error {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Error::ShuttingDown;
        }
        drop(self.inner.admin.lock().await);
        Error::ShardClosed {
            stream: stream.to_owned(),
            shard,
        }
    }

    /// Reads whole batches from `offset` (see [`ReadOutcome`]); what is answered is
    /// charged to the shard's read limit with [`Broker::charge_read`].
    pub async fn read(
        &self,
        stream: &str,
        shard: i64,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadOutcome, Error> {
        let (stream, index) = self.shard(stream, shard)?;
        let shard = Arc::clone(&stream.shards[index].shard);
        if offset < 0 {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: shard.first_offset(),
                high_watermark: shard.high_watermark(),
            });
        }
        let high_watermark = shard.high_watermark();
        if offset as u64 == high_watermark {
            // The common long-poll case: nothing new, no need to leave the runtime.
            return Ok(ReadOutcome {
                records: Bytes::new(),
                high_watermark,
                log_start_offset: shard.first_offset(),
            });
        }
        let local_start = shard.log_start_offset();
        self.read_from(&stream, index, offset as u64, max_bytes, local_start)
            .await
    }

    /// The read below the high watermark, given `local_start`, the local log start
    /// offset as seen when the read began. Below it the tier is read; otherwise the local
    /// log, and if the tiering pass deleted that local segment in between (the read finds
    /// the offset below the log start now), the tier after all — answering
    /// OFFSET_OUT_OF_RANGE there would make consumers reset their position.
    pub(crate) async fn read_from(
        &self,
        stream: &Arc<Stream>,
        index: usize,
        offset: u64,
        max_bytes: usize,
        local_start: u64,
    ) -> Result<ReadOutcome, Error> {
        let shard = Arc::clone(&stream.shards[index].shard);
        let high_watermark = shard.high_watermark();
        let from_tier = |records| ReadOutcome {
            records,
            high_watermark,
            log_start_offset: shard.first_offset(),
        };
        // Below the local log: the object store may hold it (tiered segments).
        if offset < local_start
            && let Some(records) = self
                .read_remote(&stream.info, index as u32, offset, local_start, max_bytes)
                .await?
        {
            return Ok(from_tier(records));
        }
        let reader = Arc::clone(&shard);
        let local = tokio::task::spawn_blocking(move || reader.read_blocking(offset, max_bytes))
            .await
            .map_err(|error| Error::Internal(format!("read task failed: {error}")))?;
        match local {
            Ok(records) => Ok(ReadOutcome {
                records,
                high_watermark: shard.high_watermark(),
                log_start_offset: shard.first_offset(),
            }),
            Err(Error::OffsetOutOfRange { .. })
                if offset >= local_start && offset < shard.log_start_offset() =>
            {
                let now_local_start = shard.log_start_offset();
                match self
                    .read_remote(
                        &stream.info,
                        index as u32,
                        offset,
                        now_local_start,
                        max_bytes,
                    )
                    .await?
                {
                    Some(records) => Ok(from_tier(records)),
                    None => Err(Error::OffsetOutOfRange {
                        offset: offset as i64,
                        log_start_offset: shard.first_offset(),
                        high_watermark,
                    }),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Charges `bytes` being answered from a shard to its read limit (Kinesis' 2 MiB/s)
    /// and returns how long the answer should be held to keep the shard at that rate (0
    /// when within it). Separate from [`Broker::read`] so that a long poll, which may
    /// read a shard several times before it answers, pays once for what it sends.
    pub fn charge_read(&self, stream: &str, shard: i64, bytes: u64) -> u64 {
        let Ok((stream, index)) = self.shard(stream, shard) else {
            return 0;
        };
        let throttle_ms = stream.shards[index].shard.charge_read(bytes, self.now_ms());
        if throttle_ms > 0 {
            self.inner.throttled_reads.fetch_add(1, Ordering::Relaxed);
        }
        throttle_ms
    }

    /// Whether `stream` has a shard (Kafka partition) `shard`; cheaper than
    /// [`Broker::stream`], which copies the stream's description.
    pub fn has_shard(&self, stream: &str, shard: i64) -> bool {
        self.shard(stream, shard).is_ok()
    }

    /// `(log start offset, high watermark)` of a shard.
    pub fn offsets(&self, stream: &str, shard: i64) -> Result<(u64, u64), Error> {
        let (stream, index) = self.shard(stream, shard)?;
        let shard = &stream.shards[index].shard;
        Ok((shard.first_offset(), shard.high_watermark()))
    }

    /// The first offset whose batch holds a timestamp at or after `timestamp_ms`, if any
    /// readable one does. Batch granularity: the offset may point at the start of a batch
    /// that also holds earlier records, which consumers skip.
    pub async fn offset_for_timestamp(
        &self,
        stream: &str,
        shard: i64,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, Error> {
        let (stream, index) = self.shard(stream, shard)?;
        let shard = Arc::clone(&stream.shards[index].shard);
        // Offset order: segments only the tier holds come before the local log.
        let local_start = shard.log_start_offset();
        if let Some(found) = self
            .remote_offset_for_timestamp(&stream.info, index as u32, timestamp_ms, local_start)
            .await?
        {
            return Ok(Some(found));
        }
        tokio::task::spawn_blocking(move || {
            let high_watermark = shard.high_watermark();
            let found = shard.view().offset_for_timestamp(timestamp_ms)?;
            Ok(found.filter(|offset| *offset < high_watermark))
        })
        .await
        .map_err(|error| Error::Internal(format!("lookup task failed: {error}")))?
    }

    /// Returns a notifier that fires at the next append to any of `targets` (unknown ones
    /// are skipped). Register before reading, then await, so no append is missed.
    pub fn watch(&self, targets: &[(&str, i64)]) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        for (stream, shard) in targets {
            if let Ok((stream, index)) = self.shard(stream, *shard) {
                stream.shards[index].shard.register_waiter(&notify);
            }
        }
        notify
    }

    /// Hands out an idempotent-producer id and epoch. With `current`, a client asks for
    /// its epoch to be bumped (KIP-360); a bump past the epoch range gets a fresh id.
    pub async fn init_producer_id(&self, current: Option<(i64, i16)>) -> Result<(i64, i16), Error> {
        if let Some((producer_id, epoch)) = current
            && producer_id >= 0
            && (0..i16::MAX - 1).contains(&epoch)
        {
            return Ok((producer_id, epoch + 1));
        }
        let broker = self.clone();
        let producer_id =
            tokio::task::spawn_blocking(move || lock(&broker.inner.meta).allocate_producer_id())
                .await
                .map_err(|error| Error::Internal(format!("producer id task failed: {error}")))??;
        Ok((producer_id, 0))
    }
}

#[cfg(test)]
mod tests;
