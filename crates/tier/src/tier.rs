//! [`Tier`]: the public face of the crate, and the shared state behind it (the bucket,
//! the block cache, cached manifests, per-shard manifest locks).
//!
//! Manifests are cached after their first load and updated by this tier's own writes:
//! the tier assumes it is the only writer of its shards (one broker owns a shard), and
//! uses conditional puts so that a second writer is detected rather than overwritten.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::future::Cache;
use object_store::PutMode;
use tokio::sync::Semaphore;

use crate::bucket::Bucket;
use crate::cache::BlockCache;
use crate::error::StoreError;
use crate::layout::{Layout, validate_name};
use crate::manifest::{Manifest, RemoteSegment};
use crate::metrics::{Counters, TierStats, add};
use crate::read::SegmentRead;
use crate::retry::permanent_s3_code;
use crate::upload::{SealedSegment, UploadMarker, upload_segment};
use crate::{Error, TierConfig};

/// Conditional manifest writes tried before giving up with [`Error::ManifestConflict`].
const MANIFEST_ATTEMPTS_MAX: u32 = 8;
/// Cached manifests (one per shard).
const MANIFESTS_CACHED_MAX: u64 = 65_536;
/// Segments whose last read position is remembered, to recognise sequential readers.
const READ_POSITIONS_MAX: u64 = 16_384;
/// Read-ahead GETs running at once, over all readers.
const PREFETCHES_IN_FLIGHT_MAX: usize = 32;

/// Wall-clock milliseconds since the epoch (for `uploaded_ms` and journal names only;
/// no decision depends on it).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// What a manifest edit decided.
pub(crate) enum ManifestChange<R> {
    /// Nothing to write; return this.
    Keep(R),
    /// Write the edited manifest, then return this.
    Write(R),
}

/// Shared state of a [`Tier`] and its clones.
pub(crate) struct Inner {
    pub(crate) config: TierConfig,
    pub(crate) bucket: Bucket,
    pub(crate) counters: Arc<Counters>,
    pub(crate) cache: BlockCache,
    manifests: Cache<String, Arc<Manifest>>,
    /// Per segment upload identity: where its last read ended.
    pub(crate) read_positions: Cache<Arc<str>, u64>,
    pub(crate) prefetch_permits: Arc<Semaphore>,
    /// Serializes manifest edits per shard within this process, so that an upload and a
    /// retention pass of one shard do not make each other retry (and so that stores
    /// without conditional updates, the local file system, are safe too).
    manifest_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// This tier's writer id (random per process), in every segment key it writes.
    pub(crate) writer_id: String,
    /// Upload attempts so far: the second part of every segment key's writer token.
    upload_attempts: AtomicU64,
}

/// A writer id: 64 bits that differ between processes (clock, process id and a
/// per-process count mixed through CRC-32C), as 16 hex digits.
pub(crate) fn fresh_writer_id() -> String {
    static OPENED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let seed = format!(
        "{nanos}/{}/{}",
        std::process::id(),
        OPENED.fetch_add(1, Ordering::Relaxed)
    );
    let high = crc32c::crc32c(seed.as_bytes());
    let low = crc32c::crc32c_append(high, seed.as_bytes());
    format!("{:016x}", (u64::from(high) << 32) | u64::from(low))
}

impl Inner {
    /// The writer token for one upload attempt: this tier's id and a fresh attempt
    /// number, so that no two attempts ever put the same key.
    pub(crate) fn writer_token(&self) -> String {
        let attempt = self.upload_attempts.fetch_add(1, Ordering::Relaxed);
        format!("{}-{attempt:x}", self.writer_id)
    }

    /// The shard's manifest: cached, or loaded (single-flight) from the store.
    pub(crate) async fn manifest(&self, shard_key: &str) -> Result<Arc<Manifest>, Error> {
        validate_name(shard_key)?;
        self.manifests
            .try_get_with_by_ref(shard_key, async {
                let (manifest, _) = self.load_manifest(shard_key).await?;
                Ok(Arc::new(manifest))
            })
            .await
            .map_err(Error::shared)
    }

    /// The stored manifest and how to replace it conditionally.
    pub(crate) async fn load_manifest(
        &self,
        shard_key: &str,
    ) -> Result<(Manifest, PutMode), Error> {
        let key = Layout::manifest_key(shard_key);
        match self.bucket.get(&key).await? {
            None => Ok((Manifest::default(), PutMode::Create)),
            Some((bytes, version)) => {
                let manifest = Manifest::decode(&bytes).map_err(|reason| Error::RemoteCorrupt {
                    key: key.clone(),
                    position: 0,
                    reason,
                })?;
                let mode = if self.bucket.conditional_updates() {
                    Bucket::update_mode(version)
                } else {
                    PutMode::Overwrite
                };
                Ok((manifest, mode))
            }
        }
    }

    fn manifest_lock(&self, shard_key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .manifest_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Drop locks nobody holds, so the map does not grow with every shard ever seen.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(locks.entry(shard_key.to_string()).or_default())
    }

    /// Read-modify-write of the shard's manifest with a conditional put, re-reading and
    /// re-applying `edit` when another writer got there first. A manifest owned by
    /// another server is [`Error::Fenced`] and stays as it is; a write makes this server
    /// its owner if it had none.
    pub(crate) async fn update_manifest<R>(
        &self,
        shard_key: &str,
        edit: impl FnMut(&mut Manifest) -> Result<ManifestChange<R>, Error>,
    ) -> Result<R, Error> {
        self.edit_manifest(shard_key, false, edit).await
    }

    /// As [`Inner::update_manifest`]; with `takeover`, a manifest owned by another
    /// server is edited all the same and this server becomes its owner.
    pub(crate) async fn edit_manifest<R>(
        &self,
        shard_key: &str,
        takeover: bool,
        mut edit: impl FnMut(&mut Manifest) -> Result<ManifestChange<R>, Error>,
    ) -> Result<R, Error> {
        let lock = self.manifest_lock(shard_key);
        let _guard = lock.lock().await;
        let key = Layout::manifest_key(shard_key);
        for attempt in 1..=MANIFEST_ATTEMPTS_MAX {
            let (mut manifest, mode) = self.load_manifest(shard_key).await?;
            let ours = &self.config.owner;
            match &manifest.owner {
                Some(owner) if owner != ours && !takeover => {
                    self.manifests
                        .insert(shard_key.to_string(), Arc::new(manifest.clone()))
                        .await;
                    return Err(Error::Fenced {
                        shard_key: shard_key.to_string(),
                        owner: owner.clone(),
                    });
                }
                _ => {}
            }
            let claimed = manifest.owner.as_ref() != Some(ours);
            let outcome = match edit(&mut manifest)? {
                ManifestChange::Keep(outcome) if !(takeover && claimed) => {
                    self.manifests
                        .insert(shard_key.to_string(), Arc::new(manifest))
                        .await;
                    return Ok(outcome);
                }
                ManifestChange::Keep(outcome) | ManifestChange::Write(outcome) => outcome,
            };
            manifest.owner = Some(ours.clone());
            let bytes = Bytes::from(manifest.encode());
            match self.bucket.put(&key, bytes, mode).await {
                Ok(()) => {
                    self.manifests
                        .insert(shard_key.to_string(), Arc::new(manifest))
                        .await;
                    return Ok(outcome);
                }
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {
                    tracing::info!(
                        shard_key,
                        attempt,
                        "manifest changed concurrently; re-reading"
                    );
                }
                Err(error) => return Err(Error::store("put", key)(error)),
            }
        }
        self.manifests.invalidate(shard_key).await;
        Err(Error::ManifestConflict {
            shard_key: shard_key.to_string(),
            attempts: MANIFEST_ATTEMPTS_MAX,
        })
    }
}

/// Tiered storage for sealed log segments; see the crate docs. Cheap to clone: clones
/// share the store, the cache and the counters.
#[derive(Clone)]
pub struct Tier {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tier")
            .field("bucket", &self.inner.bucket)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

impl Tier {
    /// Builds the store and probes it (a list, then put, get and delete of a small
    /// object under the prefix): an unreachable store is [`Error::Unreachable`]; a missing bucket,
    /// rejected credentials or a bad setting is [`Error::Misconfigured`]; both name the
    /// URL and the cause.
    pub async fn open(config: TierConfig) -> Result<Tier, Error> {
        config.validate()?;
        let counters = Arc::new(Counters::default());
        let bucket = Bucket::build(&config, &counters)?;
        let cache = BlockCache::new(
            config.cache_bytes_max,
            config.block_bytes,
            Arc::clone(&counters),
        );
        let tier = Tier {
            inner: Arc::new(Inner {
                bucket,
                counters,
                cache,
                manifests: Cache::builder().max_capacity(MANIFESTS_CACHED_MAX).build(),
                read_positions: Cache::builder().max_capacity(READ_POSITIONS_MAX).build(),
                prefetch_permits: Arc::new(Semaphore::new(PREFETCHES_IN_FLIGHT_MAX)),
                manifest_locks: Mutex::default(),
                writer_id: fresh_writer_id(),
                upload_attempts: AtomicU64::new(0),
                config,
            }),
        };
        tier.probe().await?;
        Ok(tier)
    }

    async fn probe(&self) -> Result<(), Error> {
        let bucket = &self.inner.bucket;
        let url = bucket.url().to_string();
        // Unique per probe, also between tiers opened at once in one process.
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let nonce = format!(
            "{}-{}-{}",
            std::process::id(),
            now_ms(),
            PROBES.fetch_add(1, Ordering::Relaxed)
        );
        let key = Layout::probe_key(&nonce);
        let payload = Bytes::from(format!("shardline probe {nonce}"));
        let classify = |operation: &str, error: StoreError| -> Error {
            use object_store::Error as E;
            let reason = match error.inner() {
                E::NotFound { .. } => "found no bucket",
                E::PermissionDenied { .. } | E::Unauthenticated { .. } => "was refused",
                E::NotSupported { .. } | E::NotImplemented { .. } | E::InvalidPath { .. } => {
                    "is not possible"
                }
                _ if let Some(code) = permanent_s3_code(error.inner()) => {
                    return Error::Misconfigured {
                        url: url.clone(),
                        reason: format!("{operation} of a probe object was answered {code}"),
                    };
                }
                _ => {
                    return Error::Unreachable {
                        url: url.clone(),
                        source: error,
                    };
                }
            };
            Error::Misconfigured {
                url: url.clone(),
                reason: format!("{operation} of a probe object {reason}: {error}"),
            }
        };
        // Listing first: retention and stream deletion need it, and some S3 servers
        // create a missing bucket's directory on a put rather than refuse it.
        match bucket.list(Layout::probes_dir()).await {
            Err(Error::Store { source, .. }) => return Err(classify("list", source)),
            Err(error) => return Err(error),
            Ok(_) => {}
        }
        bucket
            .put(&key, payload.clone(), PutMode::Overwrite)
            .await
            .map_err(|error| classify("put", StoreError::new(error)))?;
        let read_back = bucket.get(&key).await;
        // Remove the probe whatever the read gave.
        let deleted = bucket.delete(&key).await;
        match read_back {
            Ok(Some((bytes, _))) if bytes == payload => {}
            Ok(_) => {
                return Err(Error::Misconfigured {
                    url,
                    reason: "a probe object read back differently from what was written"
                        .to_string(),
                });
            }
            Err(Error::Store { source, .. }) => return Err(classify("get", source)),
            Err(error) => return Err(error),
        }
        match deleted {
            Err(Error::Store { source, .. }) => Err(classify("delete", source)),
            other => other,
        }
    }

    /// Uploads one sealed segment (its `.log`, `.index` and `.timeindex`), verifies it,
    /// and records it in the shard's manifest; returns the manifest entry. Re-uploading
    /// a segment the manifest already holds does nothing. The segment must extend the
    /// shard's remote log at its end (or start it). See the `upload` module for the
    /// order of steps.
    pub async fn upload_segment(
        &self,
        shard_key: &str,
        segment: &SealedSegment,
    ) -> Result<RemoteSegment, Error> {
        let uploaded = upload_segment(&self.inner, shard_key, segment).await;
        if let Err(error) = &uploaded {
            add(&self.inner.counters.upload_failures, 1);
            tracing::warn!(shard_key, base_offset = segment.base_offset, %error, "segment upload failed");
        }
        uploaded
    }

    /// Checks that a remote segment's three objects are in the store and that its `.log`
    /// has the size the manifest recorded: a HEAD each, no data read, so damage that keeps
    /// the size is found only when the range is read (by its CRCs). Missing objects are
    /// [`Error::RemoteMissing`], a wrong size [`Error::RemoteCorrupt`].
    pub async fn verify_segment(&self, segment: &RemoteSegment) -> Result<(), Error> {
        let size = self.inner.bucket.size(&segment.log_key).await?;
        if size != segment.size_bytes {
            return Err(Error::RemoteCorrupt {
                key: segment.log_key.clone(),
                position: size.min(segment.size_bytes),
                reason: format!("{size} bytes stored, {} uploaded", segment.size_bytes),
            });
        }
        self.inner.bucket.size(&segment.index_key).await?;
        self.inner.bucket.size(&segment.timeindex_key).await?;
        Ok(())
    }

    /// The shard's manifest (the cached copy, shared, not cloned: a year of segments is a
    /// long list); empty when it has none.
    pub async fn manifest(&self, shard_key: &str) -> Result<Arc<Manifest>, Error> {
        self.inner.manifest(shard_key).await
    }

    /// Reads whole record batches from the remote segment holding `offset`, starting
    /// with the batch that contains it: at most `max_bytes` except that the first batch
    /// is always whole (KIP-74), never a batch with records at or past `end_offset`, and
    /// never past the segment's end (call again from the returned end for the next
    /// segment). Empty when `offset >= end_offset`. An offset no remote segment holds is
    /// [`Error::OffsetNotRemote`]; bad or missing objects are [`Error::RemoteCorrupt`]
    /// and [`Error::RemoteMissing`].
    pub async fn read(
        &self,
        shard_key: &str,
        offset: u64,
        end_offset: u64,
        max_bytes: usize,
    ) -> Result<Bytes, Error> {
        if offset >= end_offset {
            return Ok(Bytes::new());
        }
        let manifest = self.inner.manifest(shard_key).await?;
        let segment = manifest
            .segment_for(offset)
            .ok_or(Error::OffsetNotRemote { offset })?;
        let read = SegmentRead::new(&self.inner, segment)
            .read(offset, end_offset, max_bytes)
            .await;
        if let Err(Error::RemoteMissing { key }) = &read {
            tracing::warn!(shard_key, key, "a remote segment object is missing");
        }
        read
    }

    /// Takes the shard's remote log over: this server becomes the manifest's owner,
    /// whoever owned it, and the previous owner's next change to it is
    /// [`Error::Fenced`]. What a server restored from the bucket does for every shard it
    /// restored, so that the server it replaces, if it still runs, stops writing there.
    pub async fn claim(&self, shard_key: &str) -> Result<(), Error> {
        validate_name(shard_key)?;
        self.inner
            .edit_manifest(shard_key, true, |_| Ok(ManifestChange::Keep(())))
            .await
    }

    /// This tier's owner identity ([`TierConfig::owner`]).
    pub fn owner(&self) -> &str {
        &self.inner.config.owner
    }

    /// Remote retention: removes the segments whose records all lie below `offset`
    /// (`next_offset <= offset`) and returns how many.
    ///
    /// The manifest entry goes first, the objects after: the manifest must never list an
    /// object that is gone (a reader would fail, a disaster recovery would find a hole).
    /// A crash in between leaves only unlisted objects, which the next call that removes
    /// a segment sweeps up (any segment object below the remote start offset is such a
    /// leftover). A call with nothing to remove makes no request at all.
    pub async fn delete_segments_before(
        &self,
        shard_key: &str,
        offset: u64,
    ) -> Result<usize, Error> {
        validate_name(shard_key)?;
        // The common case, every retention pass over every shard: nothing expired, and no
        // request needed. (Leftovers of a crash wait for the next pass that deletes.)
        let cached = self.inner.manifest(shard_key).await?;
        if cached
            .segments
            .first()
            .is_none_or(|first| first.next_offset > offset)
        {
            return Ok(0);
        }
        let (removed, sweep_below) = self
            .inner
            .update_manifest(shard_key, |manifest| {
                let doomed = manifest
                    .segments
                    .iter()
                    .take_while(|segment| segment.next_offset <= offset)
                    .count();
                let old_end = manifest.next_offset();
                let removed: Vec<RemoteSegment> = manifest.segments.drain(..doomed).collect();
                // Objects below this are listed nowhere: the remote start, or the old end
                // when everything went (a segment being uploaded starts at the old end).
                let sweep_below = manifest.start_offset().or(old_end).unwrap_or(0).min(offset);
                if removed.is_empty() {
                    Ok(ManifestChange::Keep((removed, sweep_below)))
                } else {
                    Ok(ManifestChange::Write((removed, sweep_below)))
                }
            })
            .await?;
        let mut doomed_keys: Vec<String> = removed
            .iter()
            .flat_map(|segment| segment.keys().map(str::to_string))
            .collect();
        let listed = self
            .inner
            .bucket
            .list(&Layout::shard_dir(shard_key))
            .await?;
        doomed_keys.extend(
            listed.into_iter().filter(|key| {
                Layout::segment_base_offset(key).is_some_and(|base| base < sweep_below)
            }),
        );
        doomed_keys.sort();
        doomed_keys.dedup();
        self.inner.bucket.delete_all(&doomed_keys).await?;
        Ok(removed.len())
    }

    /// Deletes every object of every shard whose key starts with `prefix` (whole
    /// segments: `orders` covers `orders/shard-1`, not `orders2/…`): a deleted stream.
    /// Manifests go first, for the reason given at
    /// [`delete_segments_before`](Tier::delete_segments_before). Returns how many
    /// objects were deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, Error> {
        validate_name(prefix)?;
        let keys = self.inner.bucket.list(&Layout::shard_dir(prefix)).await?;
        let (manifests, others): (Vec<String>, Vec<String>) = keys
            .into_iter()
            .partition(|key| Layout::is_manifest_key(key));
        let dropped: Vec<Arc<String>> = self
            .inner
            .manifests
            .iter()
            .map(|(shard_key, _)| shard_key)
            .filter(|shard_key| {
                shard_key.as_str() == prefix || shard_key.starts_with(&format!("{prefix}/"))
            })
            .collect();
        for shard_key in dropped {
            self.inner.manifests.invalidate(shard_key.as_str()).await;
        }
        let deleted = self.inner.bucket.delete_all(&manifests).await?;
        Ok(deleted + self.inner.bucket.delete_all(&others).await?)
    }

    /// Stores a small document (a metadata snapshot) under `name`, replacing any
    /// previous one atomically: a reader sees the old or the new bytes, never a mix.
    pub async fn put_document(&self, name: &str, bytes: Bytes) -> Result<(), Error> {
        validate_name(name)?;
        let key = Layout::document_key(name);
        self.inner
            .bucket
            .put(&key, bytes, PutMode::Overwrite)
            .await
            .map_err(Error::store("put", key))
    }

    /// The document stored under `name`, if any.
    pub async fn get_document(&self, name: &str) -> Result<Option<Bytes>, Error> {
        validate_name(name)?;
        let document = self.inner.bucket.get(&Layout::document_key(name)).await?;
        Ok(document.map(|(bytes, _)| bytes))
    }

    /// Names of the stored documents, sorted.
    pub async fn list_documents(&self) -> Result<Vec<String>, Error> {
        let dir = Layout::documents_dir();
        let mut names: Vec<String> = self
            .inner
            .bucket
            .list(dir)
            .await?
            .into_iter()
            .filter_map(|key| key.strip_prefix(&format!("{dir}/")).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Aborts multipart uploads that a crash left behind (for start-up, before uploads
    /// begin): those journaled under `uploads/` on stores with a part-level multipart
    /// API (S3, memory), and the staging files of the local file system. Returns how
    /// many were cleaned up.
    pub async fn abort_stale_uploads(&self) -> Result<usize, Error> {
        let bucket = &self.inner.bucket;
        if let Some(root) = bucket.local_root() {
            let root = root.clone();
            return tokio::task::spawn_blocking(move || sweep_staging_files(&root))
                .await
                .unwrap_or_else(|join_error| {
                    // The sweep does not panic; if it did, report it as an I/O failure.
                    Err(Error::Io {
                        path: std::path::PathBuf::new(),
                        source: Arc::new(std::io::Error::other(join_error)),
                    })
                });
        }
        if bucket.multipart().is_none() {
            return Ok(0);
        }
        let mut aborted = 0;
        for marker_key in bucket.list(Layout::uploads_dir()).await? {
            let Some((bytes, _)) = bucket.get(&marker_key).await? else {
                continue;
            };
            match serde_json::from_slice::<UploadMarker>(&bytes) {
                Ok(marker) => {
                    bucket
                        .abort_multipart(&marker.key, &marker.upload_id)
                        .await?;
                    tracing::info!(key = marker.key, "aborted an abandoned multipart upload");
                    aborted += 1;
                }
                Err(error) => {
                    tracing::warn!(key = marker_key, %error, "removing an unreadable upload journal entry");
                }
            }
            bucket.delete(&marker_key).await?;
        }
        Ok(aborted)
    }

    /// The counters, for metrics.
    pub fn stats(&self) -> TierStats {
        self.inner.counters.snapshot(self.inner.cache.size_bytes())
    }

    /// Applies the cache's pending evictions (moka batches them), so that
    /// [`TierStats::cache_size_bytes`] is exact.
    pub async fn sync_cache(&self) {
        self.inner.cache.run_pending_tasks().await;
    }
}

/// Removes `<name>#<digits>` staging files under `root`, which the local file system
/// store leaves when an upload is interrupted; returns how many.
fn sweep_staging_files(root: &std::path::Path) -> Result<usize, Error> {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let entry = entry.map_err(Error::io(&dir))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(Error::io(&path))?;
            if file_type.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = entry.file_name();
            let staging = name
                .to_str()
                .and_then(|name| name.rsplit_once('#'))
                .is_some_and(|(_, suffix)| {
                    !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
                });
            if staging {
                std::fs::remove_file(&path).map_err(Error::io(&path))?;
                tracing::info!(path = %path.display(), "removed an abandoned upload staging file");
                removed += 1;
            }
        }
    }
    Ok(removed)
}
