//! Records sent to a shard that a reshard closed.
//!
//! Kafka clients refresh metadata lazily, so they go on producing to a closed partition
//! for a while; they must neither lose records nor see a fatal error. The engine decodes
//! such a batch (with `shardline-records`, within
//! [`BrokerConfig::decompressed_batch_bytes_max`](crate::BrokerConfig)), sends each
//! record to the open shard owning the MD5 of its key (a keyless batch goes whole to one
//! open shard, taking them in turn), re-encodes each child's share with the batch's
//! codec, and stores the parts. An idempotent producer's retry of the original batch is
//! recognised against the closed shard's producer state and stores nothing twice.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use shardline_core::HashKey;
use shardline_core::batch::BatchHeader;
use shardline_records::{BatchSpec, DecodeLimits, Record};

use crate::{Broker, Error, PendingAppend, ShardInfo};

/// How many times a batch is routed again when reshards keep closing the children it
/// was routed to (each time nothing was stored, so routing again is safe).
const REROUTE_TRIES: usize = 6;

/// The result of [`Broker::append_to_closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rerouted {
    /// A retry of a batch already re-routed: nothing new was stored.
    pub duplicate: bool,
    /// How long to hold the answer for the children's write limits.
    pub throttle_ms: u64,
}

impl Broker {
    /// Stores `batch`, sent to closed shard `closed_shard` of `stream`, in the open shards
    /// that own its records now (see the module docs). The records are stored, but not
    /// at offsets of the closed shard: Kafka answers such a partition with base offset -1.
    ///
    /// A batch whose records do not decode (a count its bytes cannot hold, bad lengths, a
    /// codec that inflates past the limit) is refused whole with
    /// [`Error::Records`]; nothing is stored.
    pub async fn append_to_closed(
        &self,
        stream: &str,
        closed_shard: u32,
        batch: Bytes,
    ) -> Result<Rerouted, Error> {
        let limits = DecodeLimits {
            decompressed_bytes_max: self.inner.config.decompressed_batch_bytes_max,
        };
        // Decoding may inflate up to the limit: off the async workers.
        let decoded =
            tokio::task::spawn_blocking(move || shardline_records::decode_batch(&batch, limits))
                .await
                .map_err(|error| Error::Internal(format!("decode task failed: {error}")))??;
        let spec = BatchSpec {
            compression: decoded.header.compression(),
            ..BatchSpec::default()
        };
        let mut tries = 0;
        loop {
            let parts = self.split_by_owner(stream, &decoded.records, &spec)?;
            match self
                .store_rerouted(stream, closed_shard, &decoded.header, parts)
                .await
            {
                Err(Error::RerouteStale { .. }) if tries < REROUTE_TRIES => tries += 1,
                other => return other,
            }
        }
    }

    /// Groups `records` by the open shard that owns each key now and encodes each group
    /// as one batch without producer ids (the children keep their own sequences).
    fn split_by_owner(
        &self,
        stream: &str,
        records: &[Record],
        spec: &BatchSpec,
    ) -> Result<Vec<(u32, BytesMut)>, Error> {
        let open = self.open_shards(stream)?;
        if open.is_empty() {
            return Err(Error::ShardClosed {
                stream: stream.to_owned(),
                shard: 0,
            });
        }
        let turn = self.inner.keyless_turn.fetch_add(1, Ordering::Relaxed);
        let keyless = open[turn % open.len()].index;
        let mut groups: BTreeMap<u32, Vec<&Record>> = BTreeMap::new();
        for record in records {
            let child = match &record.key {
                Some(key) => owner(&open, HashKey::of_partition_key(key)).ok_or_else(|| {
                    Error::Internal(format!("no open shard of {stream} owns a record's key"))
                })?,
                None => keyless,
            };
            groups.entry(child).or_default().push(record);
        }
        groups
            .into_iter()
            .map(|(child, group)| {
                let batch = shardline_records::encode_batch(spec, &group)?;
                Ok((child, BytesMut::from(Bytes::from(batch))))
            })
            .collect()
    }

    /// Queues `parts` (child index, batch) under the admin lock, so a reshard cannot
    /// close a child between the check and the queueing: either every part is queued, or
    /// nothing is and [`Error::RerouteStale`] asks the caller to route again. (A child
    /// closed after its part was queued still stores that part: closing drains the
    /// queue.) Only a storage failure after queueing can leave some parts stored and
    /// others not; a retry then stores those parts again.
    async fn store_rerouted(
        &self,
        stream: &str,
        closed_shard: u32,
        original: &BatchHeader,
        parts: Vec<(u32, BytesMut)>,
    ) -> Result<Rerouted, Error> {
        self.check_running()?;
        let current = self.current(stream)?;
        let slot = current
            .shards
            .get(closed_shard as usize)
            .cloned()
            .ok_or_else(|| Error::UnknownShard {
                stream: stream.to_owned(),
                shard: i64::from(closed_shard),
            })?;
        let _serial = slot.shard.reroute.lock().await;
        if slot
            .shard
            .check_rerouted(original)
            .admit(original.producer_id)?
            .is_some()
        {
            return Ok(Rerouted {
                duplicate: true,
                throttle_ms: 0,
            });
        }
        let admin = self.inner.admin.lock().await;
        let now_current = self.current(stream)?;
        if let Some((child, _)) = parts.iter().find(|(child, _)| {
            !now_current
                .info
                .shards
                .get(*child as usize)
                .is_some_and(ShardInfo::is_open)
        }) {
            return Err(Error::RerouteStale {
                stream: stream.to_owned(),
                shard: *child,
            });
        }
        let mut pending = Vec::with_capacity(parts.len());
        for (child, batch) in parts {
            pending.push(self.append(stream, i64::from(child), batch).await?);
        }
        drop(admin);
        let throttle_ms = pending
            .iter()
            .map(PendingAppend::throttle_ms)
            .max()
            .unwrap_or(0);
        for append in pending {
            append.wait().await?;
        }
        slot.shard.record_rerouted(original);
        Ok(Rerouted {
            duplicate: false,
            throttle_ms,
        })
    }
}

/// The open shard whose range holds `key`.
fn owner(open: &[ShardInfo], key: HashKey) -> Option<u32> {
    open.iter()
        .find(|shard| shard.range.contains(key))
        .map(|shard| shard.index)
}

#[cfg(test)]
mod tests;
