//! Tiered storage as the engine uses it: sealed segments go to the object store, local
//! copies go once uploaded and past local retention, reads below the local start come
//! from the store, expired remote segments are deleted, and metadata and committed
//! offsets are snapshotted to the store so a node whose disk is lost can be rebuilt from
//! the bucket alone.
//!
//! ```text
//! shard log:  [ sealed | sealed | sealed | active ]        local disk
//!                 │         │        │
//!     tier_pass:  └── upload (in offset order) ──▶ bucket: streams/<stream>/<shard>/…
//!                 then delete local copies that are uploaded and past local retention
//! read(offset < local start) ──▶ Tier::read (block cache, read-ahead)
//! ```
//!
//! Every pass is idempotent and driven by the manifests, so a crash at any point (mid
//! upload, between upload and local delete) is repaired by the next pass.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use shardline_core::batch::Batches;
use shardline_tier::{SealedSegment, Tier, TierConfig};
use std::sync::atomic::Ordering;
use tracing::{error, info, warn};

use crate::{Broker, CommittedOffset, Error, Stream, StreamInfo, hex, lock};

/// Each shard's remote range `[start, next)`, by shard key.
pub(crate) type RemoteRanges = HashMap<String, (u64, u64)>;

/// Name of the metadata snapshot document in the bucket.
const METADATA_DOCUMENT: &str = "metadata.json";
/// Name of the committed-offsets snapshot document in the bucket.
const OFFSETS_DOCUMENT: &str = "offsets.json";

/// What was last written to the bucket's documents, to skip unchanged ones.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    metadata: Option<Vec<u8>>,
    offsets: Option<Vec<u8>>,
}

/// Sealed segments not yet in the object store (the upload backlog).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierBacklog {
    /// Segments waiting.
    pub segments: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The bucket prefix of a stream's data. The topic id keeps a re-created stream of the
/// same name apart from the old one's objects.
pub(crate) fn stream_key(info: &StreamInfo) -> String {
    stream_key_of(&info.name, &hex(&info.topic_id))
}

/// [`stream_key`] from the metadata document's fields (the topic id in hex): the first
/// four bytes of the id, eight hex digits.
fn stream_key_of(name: &str, topic_id_hex: &str) -> String {
    format!("{name}-{}", topic_id_hex.get(..8).unwrap_or(topic_id_hex))
}

/// The bucket prefix of one shard's segments and manifest.
pub(crate) fn shard_key(info: &StreamInfo, shard: u32) -> String {
    format!("{}/{shard:06}", stream_key(info))
}

fn tier_error(error: shardline_tier::Error) -> Error {
    Error::Tier(error)
}

/// Opens the store (probing it), cleans up abandoned multipart uploads, and restores the
/// metadata document into a data directory that has none.
///
/// The tier's owner identity (what manifests name as their owner) is this data
/// directory's: kept in `<data_dir>/meta/tier-owner`, created on first open. A data
/// directory restored from the bucket gets a new one and takes over every shard it
/// restored ([`Tier::claim`]), so a server it replaces, if still running, is fenced.
pub(crate) async fn open_tier(config: &TierConfig, data_dir: &Path) -> Result<Tier, Error> {
    let restoring = !shardline_meta::document_path(data_dir).exists();
    let mut config = config.clone();
    config.owner = shardline_meta::tier_owner(data_dir, &config.owner)?;
    let tier = Tier::open(config.clone()).await.map_err(tier_error)?;
    let aborted = tier.abort_stale_uploads().await.map_err(tier_error)?;
    if aborted > 0 {
        info!(aborted, "cleaned up multipart uploads left by a crash");
    }
    if !shardline_meta::document_path(data_dir).exists()
        && let Some(snapshot) = tier
            .get_document(METADATA_DOCUMENT)
            .await
            .map_err(tier_error)?
    {
        shardline_meta::install_document(data_dir, &snapshot)?;
        warn!(
            bucket = %config.url,
            "data directory was empty: restored stream metadata from the object store; tiered records keep their offsets"
        );
    }
    if restoring && let Some(metadata) = shardline_meta::read_document(data_dir)? {
        for key in shard_keys(&metadata) {
            if let Err(error) = tier.claim(&key).await {
                // Undo the restore, so that the next start restores (and claims) again
                // instead of running unclaimed shards, fenced by their old owner.
                let _ = std::fs::remove_file(shardline_meta::document_path(data_dir));
                return Err(tier_error(error));
            }
        }
    }
    Ok(tier)
}

/// The shard key of every shard of every stream in a metadata document.
fn shard_keys(metadata: &shardline_meta::Metadata) -> Vec<String> {
    metadata
        .streams
        .values()
        .flat_map(|record| {
            let stream_key = stream_key_of(&record.name, &record.topic_id);
            record
                .shards
                .iter()
                .map(move |shard| format!("{stream_key}/{:06}", shard.index))
        })
        .collect()
}

/// Reads each shard's remote range from its manifest, for the streams in the local
/// metadata document (before the broker opens anything).
pub(crate) async fn remote_ranges(tier: &Tier, data_dir: &Path) -> Result<RemoteRanges, Error> {
    let Some(metadata) = shardline_meta::read_document(data_dir)? else {
        return Ok(RemoteRanges::default());
    };
    let mut ranges = RemoteRanges::new();
    for key in shard_keys(&metadata) {
        let manifest = tier.manifest(&key).await.map_err(tier_error)?;
        if let (Some(start), Some(next)) = (manifest.start_offset(), manifest.next_offset()) {
            ranges.insert(key, (start, next));
        }
    }
    Ok(ranges)
}

/// Where one shard's records are: on local disk, in the object store, and waiting for
/// upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStorage {
    /// The shard (Kafka partition) index.
    pub shard: u32,
    /// First offset readable anywhere.
    pub first_offset: u64,
    /// One past the last durable offset.
    pub high_watermark: u64,
    /// First offset on local disk.
    pub local_start: u64,
    /// Local segments, the active one included.
    pub local_segments: u64,
    /// Their bytes.
    pub local_bytes: u64,
    /// What the object store holds of this shard; `None` without tiering.
    pub remote: Option<RemoteStorage>,
    /// Sealed local segments not in the object store yet (zero without tiering).
    pub backlog: TierBacklog,
}

/// One shard's part in the object store, as its manifest lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteStorage {
    /// `[start, next)` of the remote segments, if there are any.
    pub range: Option<(u64, u64)>,
    /// Remote segments.
    pub segments: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Why the manifest could not be read: then `range` is the broker's last known one
    /// and the counts are zero. Manifests are cached once read and kept current by this
    /// server's own uploads and deletions, so an outage usually shows the cached figures
    /// (the backlog tells of the outage); this is for a shard whose manifest was not
    /// cached yet.
    pub error: Option<String>,
}

/// How far [`Broker::verify_remote`] got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyProgress {
    /// Segments checked so far.
    pub segments_done: u64,
    /// Segments to check.
    pub segments_total: u64,
    /// Bytes of the segments checked so far.
    pub bytes_done: u64,
    /// Bytes of all segments to check.
    pub bytes_total: u64,
    /// What was wrong, one line per bad segment.
    pub problems: Vec<String>,
    /// Bytes of the bad segments.
    pub bytes_unreadable: u64,
}

/// Deletes the shard's local segments whose records all lie below `offset` (off the
/// runtime: it removes files).
async fn delete_local_before(shard: Arc<crate::shard::Shard>, offset: u64) -> Result<usize, Error> {
    tokio::task::spawn_blocking(move || shard.with_log(|log| log.delete_segments_before(offset)))
        .await
        .map_err(|error| Error::Internal(format!("local delete task failed: {error}")))?
        .map_err(Error::from)
}

/// The sealed segments of `segments` at or past `uploaded_to` (the backlog).
fn backlog_of(segments: &[shardline_log::SegmentInfo], uploaded_to: u64) -> TierBacklog {
    let mut backlog = TierBacklog::default();
    for segment in segments {
        if !segment.active && segment.next_offset > uploaded_to {
            backlog.segments += 1;
            backlog.bytes += segment.size_bytes;
        }
    }
    backlog
}

impl Broker {
    /// The upload backlog across all shards.
    pub fn tier_backlog(&self) -> Option<TierBacklog> {
        self.inner.tier.as_ref()?;
        let mut backlog = TierBacklog::default();
        for stream in self.streams_ref().values() {
            for slot in &stream.shards {
                let uploaded_to = slot.shard.remote_range().map_or(0, |(_, next)| next);
                let segments = slot.shard.view().segments();
                let shard = backlog_of(&segments, uploaded_to);
                backlog.segments += shard.segments;
                backlog.bytes += shard.bytes;
            }
        }
        Some(backlog)
    }

    /// Where each shard of `stream` keeps its records (local disk, object store, upload
    /// backlog), for operators: `shardline stream describe` shows it.
    pub async fn stream_storage(&self, stream: &str) -> Result<Vec<ShardStorage>, Error> {
        let stream = self
            .streams_ref()
            .get(stream)
            .cloned()
            .ok_or_else(|| Error::UnknownStream(stream.to_owned()))?;
        let mut shards = Vec::with_capacity(stream.shards.len());
        for slot in &stream.shards {
            let shard = &slot.shard;
            // From the manifest cache, which this server keeps current; the store is read
            // only for a manifest not cached yet, and its failure is reported, not fatal:
            // an operator looking at an outage still gets the local picture.
            let remote = match &self.inner.tier {
                Some(tier) => Some(
                    match tier.manifest(&shard_key(&stream.info, shard.index)).await {
                        Ok(manifest) => RemoteStorage {
                            range: manifest.start_offset().zip(manifest.next_offset()),
                            segments: manifest.segments.len() as u64,
                            bytes: manifest
                                .segments
                                .iter()
                                .map(|segment| segment.size_bytes)
                                .sum(),
                            error: None,
                        },
                        Err(error) => RemoteStorage {
                            range: shard.remote_range(),
                            error: Some(error.to_string()),
                            ..RemoteStorage::default()
                        },
                    },
                ),
                None => None,
            };
            let (segments, local_start) = {
                let log = shard.view();
                (log.segments(), log.log_start_offset())
            };
            let backlog = match &remote {
                Some(remote) => backlog_of(&segments, remote.range.map_or(0, |(_, next)| next)),
                None => TierBacklog::default(),
            };
            shards.push(ShardStorage {
                shard: shard.index,
                first_offset: shard.first_offset(),
                high_watermark: shard.high_watermark(),
                local_start,
                local_segments: segments.len() as u64,
                local_bytes: segments.iter().map(|segment| segment.size_bytes).sum(),
                remote,
                backlog,
            });
        }
        Ok(shards)
    }

    /// Checks that every segment the manifests list is in the object store with its
    /// recorded size (see [`Tier::verify_segment`]; contents are not read), calling
    /// `progress` after each one, so that a restore can say what is there and show how far
    /// it got. Problems are collected, not fatal. Each shard is checked under its tiering
    /// lock, so retention cannot delete a segment between listing and checking it.
    pub async fn verify_remote(
        &self,
        mut progress: impl FnMut(&VerifyProgress),
    ) -> Result<VerifyProgress, Error> {
        /// HEAD requests in flight at once (three per segment).
        const SEGMENTS_IN_FLIGHT: usize = 16;
        let mut state = VerifyProgress::default();
        let Some(tier) = &self.inner.tier else {
            return Ok(state);
        };
        let streams: Vec<Arc<Stream>> = self.streams_ref().values().cloned().collect();
        // First the totals, for the progress bar.
        for stream in &streams {
            for slot in &stream.shards {
                let manifest = tier
                    .manifest(&shard_key(&stream.info, slot.shard.index))
                    .await
                    .map_err(tier_error)?;
                state.segments_total += manifest.segments.len() as u64;
                state.bytes_total += manifest
                    .segments
                    .iter()
                    .map(|segment| segment.size_bytes)
                    .sum::<u64>();
            }
        }
        progress(&state);
        for stream in &streams {
            for slot in &stream.shards {
                let _tiering = slot.shard.tiering.lock().await;
                let manifest = tier
                    .manifest(&shard_key(&stream.info, slot.shard.index))
                    .await
                    .map_err(tier_error)?;
                let mut pending = manifest.segments.iter().cloned();
                let mut running = tokio::task::JoinSet::new();
                loop {
                    while running.len() < SEGMENTS_IN_FLIGHT
                        && let Some(segment) = pending.next()
                    {
                        let tier = tier.clone();
                        running.spawn(async move {
                            let checked = tier.verify_segment(&segment).await;
                            (segment.size_bytes, checked)
                        });
                    }
                    let Some(joined) = running.join_next().await else {
                        break;
                    };
                    let (size, checked) = joined
                        .map_err(|error| Error::Internal(format!("verify task failed: {error}")))?;
                    if let Err(error) = checked {
                        state.problems.push(error.to_string());
                        state.bytes_unreadable += size;
                    }
                    state.segments_done += 1;
                    state.bytes_done += size;
                    progress(&state);
                }
            }
        }
        // Retention may have removed segments between the totals and the checks.
        if (state.segments_total, state.bytes_total) != (state.segments_done, state.bytes_done) {
            state.segments_total = state.segments_done;
            state.bytes_total = state.bytes_done;
            progress(&state);
        }
        Ok(state)
    }

    /// Counters of the object store, when tiering is on.
    pub fn tier_stats(&self) -> Option<shardline_tier::TierStats> {
        self.inner.tier.as_ref().map(Tier::stats)
    }

    /// Reads whole batches below the local start offset from the object store.
    pub(crate) async fn read_remote(
        &self,
        stream: &StreamInfo,
        shard: u32,
        offset: u64,
        local_start: u64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, Error> {
        let Some(tier) = &self.inner.tier else {
            return Ok(None);
        };
        match tier
            .read(&shard_key(stream, shard), offset, local_start, max_bytes)
            .await
        {
            Ok(records) => Ok(Some(records)),
            Err(shardline_tier::Error::OffsetNotRemote { .. }) => Ok(None),
            Err(error) => Err(tier_error(error)),
        }
    }

    /// The base offset of the first batch below `local_start` (in segments only the
    /// tier holds) with a timestamp at or after `timestamp_ms`, if any. The manifest says
    /// which segment holds it (its newest timestamp); that segment's batches are then
    /// walked through the block cache, a chunk at a time.
    pub(crate) async fn remote_offset_for_timestamp(
        &self,
        stream: &StreamInfo,
        shard: u32,
        timestamp_ms: i64,
        local_start: u64,
    ) -> Result<Option<u64>, Error> {
        const CHUNK_BYTES: usize = 1 << 20;
        let Some(tier) = &self.inner.tier else {
            return Ok(None);
        };
        let key = shard_key(stream, shard);
        let manifest = tier.manifest(&key).await.map_err(tier_error)?;
        let Some(segment) = manifest.segments.iter().find(|segment| {
            segment.base_offset < local_start
                && segment.max_timestamp.is_some_and(|max| max >= timestamp_ms)
        }) else {
            return Ok(None);
        };
        let mut offset = segment.base_offset;
        while offset < segment.next_offset {
            let bytes = tier
                .read(&key, offset, segment.next_offset, CHUNK_BYTES)
                .await
                .map_err(tier_error)?;
            if bytes.is_empty() {
                break;
            }
            for batch in Batches::new(&bytes, false) {
                let (header, _) = batch.map_err(|error| {
                    Error::Internal(format!("remote segment of {key} does not parse: {error}"))
                })?;
                if header.max_timestamp >= timestamp_ms {
                    return Ok(Some(header.base_offset as u64));
                }
                offset = header.last_offset() as u64 + 1;
            }
        }
        Ok(None)
    }

    /// One tiering pass at `now_ms`: upload sealed segments in offset order, delete local
    /// copies that are uploaded and past local retention, and snapshot metadata and
    /// committed offsets. Returns how many segments were uploaded.
    pub async fn tier_pass(&self, now_ms: i64) -> Result<usize, Error> {
        let Some(tier) = self.inner.tier.clone() else {
            return Ok(0);
        };
        let streams: Vec<Arc<Stream>> = self.streams_ref().values().cloned().collect();
        let mut uploaded = 0;
        let mut first_error = None;
        for stream in &streams {
            for slot in &stream.shards {
                // Shutdown stops a pass between shards, never inside an upload.
                if self.stopping() {
                    return Ok(uploaded);
                }
                match self
                    .tier_shard(&tier, stream, slot.shard.index, now_ms)
                    .await
                {
                    Ok(count) => uploaded += count,
                    // One shard's failure must not stop the others' uploads.
                    Err(error) => {
                        warn!(stream = %stream.info.name, shard = slot.shard.index, %error, "tiering a shard failed; the others go on");
                        self.inner
                            .pass_failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        self.snapshot_documents(&tier).await?;
        match first_error {
            Some(error) => Err(error),
            None => Ok(uploaded),
        }
    }

    pub(crate) async fn tier_shard(
        &self,
        tier: &Tier,
        stream: &Stream,
        index: u32,
        now_ms: i64,
    ) -> Result<usize, Error> {
        let shard = Arc::clone(&stream.shards[index as usize].shard);
        let _tiering = shard.tiering.lock().await;
        if shard.tier_stopped.load(Ordering::Acquire) {
            return Ok(0);
        }
        let key = shard_key(&stream.info, index);
        let segments = shard.view().segments();
        let mut uploaded_to = shard.remote_range().map(|(_, next)| next);
        let mut uploaded = 0;
        for segment in segments
            .iter()
            .filter(|segment| !segment.active && segment.size_bytes > 0)
        {
            if uploaded_to.is_some_and(|next| segment.next_offset <= next) {
                continue;
            }
            if let Some(next) = uploaded_to
                && segment.base_offset != next
            {
                // The local copy of the next segment is gone (retention got there first):
                // remote data can no longer be contiguous with it. Start the remote copy
                // afresh from what is still local rather than stop uploading for good.
                warn!(stream = %stream.info.name, shard = index, remote_next = next, local = segment.base_offset, "gap between remote and local segments; restarting the remote copy");
                tier.delete_segments_before(&key, u64::MAX)
                    .await
                    .map_err(tier_error)?;
                // Until the next upload lands, the bucket holds nothing of this shard.
                shard.set_remote_range(None);
                uploaded_to = None;
            }
            let Some(sealed) = SealedSegment::from_segment_info(segment) else {
                continue;
            };
            let remote = match tier.upload_segment(&key, &sealed).await {
                Ok(remote) => remote,
                Err(shardline_tier::Error::Fenced { owner, .. }) => {
                    shard.tier_stopped.store(true, Ordering::Release);
                    error!(stream = %stream.info.name, shard = index, %owner, "another server took this shard's remote log over (it was restored from the bucket); this server stops tiering the shard and keeps its local copy");
                    return Ok(uploaded);
                }
                Err(error) => return Err(tier_error(error)),
            };
            let start = shard
                .remote_range()
                .filter(|_| uploaded_to.is_some())
                .map_or(remote.base_offset, |(start, _)| start);
            shard.set_remote_range(Some((start, remote.next_offset)));
            uploaded_to = Some(remote.next_offset);
            uploaded += 1;
        }
        // Local copies: only uploaded segments, oldest first, while past local retention
        // by age or beyond the local byte budget.
        let config = &stream.info.config;
        let local_ms = if config.local_retention_ms == -2 {
            config.retention_ms
        } else {
            config.local_retention_ms
        };
        let uploaded_to = uploaded_to.unwrap_or(0);
        let mut local_bytes: u64 = segments.iter().map(|segment| segment.size_bytes).sum();
        let mut delete_before = None;
        for segment in segments.iter().filter(|segment| !segment.active) {
            if segment.next_offset > uploaded_to {
                break;
            }
            let too_old = segment
                .max_timestamp
                .is_none_or(|newest| newest < now_ms.saturating_sub(local_ms));
            let too_big = config.local_retention_bytes >= 0
                && local_bytes > config.local_retention_bytes as u64;
            if !(too_old || too_big) {
                break;
            }
            local_bytes -= segment.size_bytes;
            delete_before = Some(segment.next_offset);
        }
        if let Some(offset) = delete_before {
            let deleted = delete_local_before(Arc::clone(&shard), offset).await?;
            if deleted > 0 {
                info!(stream = %stream.info.name, shard = index, segments = deleted, "local copies of tiered segments deleted");
            }
        }
        Ok(uploaded)
    }

    /// Deletes remote segments of `stream`, oldest first, while their newest record is
    /// older than `cutoff_ms` or while the shard's whole log (remote segments plus local
    /// ones not uploaded yet) stays at least `bytes_max` (`retention.bytes`, Kafka's rule)
    /// without them. Local copies of deleted segments go too, so the shard's first
    /// offset moves past them.
    pub(crate) async fn enforce_remote_retention(
        &self,
        stream: &Stream,
        cutoff_ms: i64,
        bytes_max: Option<u64>,
    ) -> Result<crate::RetentionReport, Error> {
        let mut report = crate::RetentionReport::default();
        let Some(tier) = &self.inner.tier else {
            return Ok(report);
        };
        for slot in &stream.shards {
            let _tiering = slot.shard.tiering.lock().await;
            // Another server owns the remote log now: not ours to trim.
            if slot.shard.tier_stopped.load(Ordering::Acquire) {
                continue;
            }
            let key = shard_key(&stream.info, slot.shard.index);
            let manifest = tier.manifest(&key).await.map_err(tier_error)?;
            let remote_next = manifest.next_offset().unwrap_or(0);
            let local_only: u64 = slot
                .shard
                .view()
                .segments()
                .iter()
                .filter(|segment| segment.next_offset > remote_next)
                .map(|segment| segment.size_bytes)
                .sum();
            let total = manifest
                .segments
                .iter()
                .map(|segment| segment.size_bytes)
                .sum::<u64>()
                + local_only;
            let mut over = bytes_max.map(|max| total.saturating_sub(max));
            let keep_from = manifest
                .segments
                .iter()
                .take_while(|segment| {
                    let expired = segment
                        .max_timestamp
                        .is_some_and(|newest| newest < cutoff_ms);
                    let go = expired || crate::manage::over_by_at_least(over, segment.size_bytes);
                    if go {
                        over = over.map(|over| over.saturating_sub(segment.size_bytes));
                    }
                    go
                })
                .last()
                .map(|segment| segment.next_offset);
            let Some(offset) = keep_from else {
                continue;
            };
            let deleted = tier
                .delete_segments_before(&key, offset)
                .await
                .map_err(tier_error)?;
            let manifest = tier.manifest(&key).await.map_err(tier_error)?;
            slot.shard
                .set_remote_range(manifest.start_offset().zip(manifest.next_offset()));
            // The local copies are the same segments: not counted again.
            delete_local_before(Arc::clone(&slot.shard), offset).await?;
            if deleted > 0 {
                report.segments_deleted += deleted;
                report.shards_trimmed += 1;
                info!(stream = %stream.info.name, shard = slot.shard.index, segments = deleted, first_offset = slot.shard.first_offset(), "remote segments deleted by retention");
            }
        }
        Ok(report)
    }

    /// Deletes a stream's objects.
    pub(crate) async fn delete_remote_stream(&self, info: &StreamInfo) -> Result<(), Error> {
        let Some(tier) = &self.inner.tier else {
            return Ok(());
        };
        // Not ours to delete if another server took any of its shards over.
        for shard in &info.shards {
            let key = shard_key(info, shard.index);
            let manifest = tier.manifest(&key).await.map_err(tier_error)?;
            if let Some(owner) = manifest.owner.as_deref()
                && owner != tier.owner()
            {
                warn!(stream = %info.name, shard = shard.index, owner, "the stream's objects belong to another server now (restored from the bucket); leaving them");
                return Ok(());
            }
        }
        tier.delete_prefix(&stream_key(info))
            .await
            .map_err(tier_error)?;
        Ok(())
    }

    /// Writes the metadata document and a snapshot of committed offsets to the bucket
    /// when they changed since the last pass.
    async fn snapshot_documents(&self, tier: &Tier) -> Result<(), Error> {
        let metadata_path = shardline_meta::document_path(&self.inner.config.data_dir);
        let metadata = tokio::fs::read(&metadata_path).await.map_err(|source| {
            Error::Meta(shardline_meta::Error::Io {
                path: metadata_path,
                source,
            })
        })?;
        let mut offsets = serde_json::Map::new();
        for group in self.groups_with_committed_offsets() {
            let entries: Vec<serde_json::Value> = self
                .committed_offsets(&group)
                .into_iter()
                .map(|(stream, shard, committed)| {
                    serde_json::json!({
                        "stream": stream, "shard": shard, "offset": committed.offset,
                        "leader_epoch": committed.leader_epoch, "metadata": committed.metadata,
                        "commit_timestamp_ms": committed.commit_timestamp_ms,
                    })
                })
                .collect();
            offsets.insert(group, serde_json::Value::Array(entries));
        }
        let offsets = serde_json::to_vec(&offsets)
            .map_err(|error| Error::Internal(format!("offsets snapshot: {error}")))?;
        let (metadata_changed, offsets_changed) = {
            let snapshots = lock(&self.inner.snapshots);
            (
                snapshots.metadata.as_ref() != Some(&metadata),
                snapshots.offsets.as_ref() != Some(&offsets),
            )
        };
        if metadata_changed {
            tier.put_document(METADATA_DOCUMENT, Bytes::from(metadata.clone()))
                .await
                .map_err(tier_error)?;
            lock(&self.inner.snapshots).metadata = Some(metadata);
        }
        if offsets_changed {
            tier.put_document(OFFSETS_DOCUMENT, Bytes::from(offsets.clone()))
                .await
                .map_err(tier_error)?;
            lock(&self.inner.snapshots).offsets = Some(offsets);
        }
        Ok(())
    }

    /// After a restore from the bucket (no committed offsets locally), commits the
    /// offsets of the bucket's snapshot again.
    pub(crate) async fn restore_committed_offsets_if_new(&self) -> Result<(), Error> {
        let Some(tier) = &self.inner.tier else {
            return Ok(());
        };
        if !self.groups_with_committed_offsets().is_empty() {
            return Ok(());
        }
        let Some(snapshot) = tier
            .get_document(OFFSETS_DOCUMENT)
            .await
            .map_err(tier_error)?
        else {
            return Ok(());
        };
        let groups: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&snapshot)
            .map_err(|error| {
                Error::Internal(format!(
                    "offsets snapshot in the bucket is unreadable: {error}"
                ))
            })?;
        let mut restored = 0;
        for (group, entries) in groups {
            let offsets: Vec<(String, u32, CommittedOffset)> = entries
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|entry| {
                    Some((
                        entry["stream"].as_str()?.to_owned(),
                        u32::try_from(entry["shard"].as_u64()?).ok()?,
                        CommittedOffset {
                            offset: entry["offset"].as_i64()?,
                            leader_epoch: i32::try_from(entry["leader_epoch"].as_i64()?).ok()?,
                            metadata: entry["metadata"].as_str().map(str::to_owned),
                            commit_timestamp_ms: entry["commit_timestamp_ms"].as_i64()?,
                        },
                    ))
                })
                .filter(|(stream, shard, _)| {
                    self.stream(stream)
                        .is_some_and(|info| (*shard as usize) < info.shards.len())
                })
                .collect();
            restored += offsets.len();
            if !offsets.is_empty() {
                self.commit_offsets(&group, offsets).await?;
            }
        }
        if restored > 0 {
            info!(
                offsets = restored,
                "restored committed offsets from the object store"
            );
        }
        Ok(())
    }
}
