//! Uploading a sealed segment: its three files, verified, then recorded in the manifest.
//!
//! Order, and why:
//! 1. The local `.index` is decoded and must describe exactly the segment being
//!    uploaded (base, next offset, size): the pair check that catches a stale
//!    [`SealedSegment`] or a wrong file before anything is sent.
//! 2. The `.log` goes up whole (at most `multipart_threshold_bytes`) or in parts of
//!    `multipart_part_bytes`, a few in flight; its CRC-32C is computed from the very
//!    bytes sent. Multipart uploads are journaled under `uploads/` while in flight, so
//!    that [`Tier::abort_stale_uploads`](crate::Tier::abort_stale_uploads) can abort the
//!    ones a crash abandoned.
//! 3. `.index` and `.timeindex` go up.
//! 4. HEAD checks each object's size against what was sent.
//! 5. Only then is the segment added to the manifest, so a reader never sees a segment
//!    whose objects are incomplete. A crash before this step leaves objects that the
//!    next upload of the same segment overwrites.

use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::{MultipartId, PutMode, PutPayload};
use serde::{Deserialize, Serialize};
use shardline_log::OffsetIndexFile;
use tokio::io::AsyncReadExt;

use crate::Error;
use crate::bucket::Bucket;
use crate::layout::{Layout, SegmentObject};
use crate::manifest::{Manifest, RemoteSegment};
use crate::metrics::add;
use crate::tier::{Inner, ManifestChange, now_ms};

/// Parts uploaded concurrently; with the one being read, this many plus one parts are in
/// memory per upload.
const PARTS_IN_FLIGHT: usize = 4;

/// A sealed (immutable) local segment to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    /// First offset in the segment.
    pub base_offset: u64,
    /// One past its last offset.
    pub next_offset: u64,
    /// Largest batch `max_timestamp` in it.
    pub max_timestamp: Option<i64>,
    /// Its `.log` file.
    pub log_path: PathBuf,
    /// Its `.index` file.
    pub index_path: PathBuf,
    /// Its `.timeindex` file.
    pub timeindex_path: PathBuf,
    /// Length of the `.log` file.
    pub size_bytes: u64,
}

impl SealedSegment {
    /// The segment described by the log's [`SegmentInfo`](shardline_log::SegmentInfo),
    /// or `None` for the active segment (which is still written to).
    ///
    /// The index paths follow the log's naming (`<base>.log` beside `<base>.index` and
    /// `<base>.timeindex`).
    pub fn from_segment_info(info: &shardline_log::SegmentInfo) -> Option<SealedSegment> {
        if info.active {
            return None;
        }
        Some(SealedSegment {
            base_offset: info.base_offset,
            next_offset: info.next_offset,
            max_timestamp: info.max_timestamp,
            log_path: info.path.clone(),
            index_path: info.path.with_extension("index"),
            timeindex_path: info.path.with_extension("timeindex"),
            size_bytes: info.size_bytes,
        })
    }
}

/// The journal entry of an in-flight multipart upload.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct UploadMarker {
    pub(crate) key: String,
    pub(crate) upload_id: String,
}

fn invalid(path: &Path, reason: String) -> Error {
    Error::InvalidSegment {
        path: path.to_path_buf(),
        reason,
    }
}

/// Whether `existing` (in the manifest) is the upload of `segment`.
fn same_segment(
    shard_key: &str,
    existing: &RemoteSegment,
    segment: &SealedSegment,
) -> Result<(), Error> {
    if existing.next_offset == segment.next_offset && existing.size_bytes == segment.size_bytes {
        return Ok(());
    }
    Err(Error::NotContiguous {
        shard_key: shard_key.to_string(),
        base_offset: segment.base_offset,
        reason: format!(
            "the manifest already holds offsets [{}, {}) in {} bytes at this base offset, not [{}, {}) in {}",
            existing.base_offset,
            existing.next_offset,
            existing.size_bytes,
            segment.base_offset,
            segment.next_offset,
            segment.size_bytes
        ),
    })
}

/// Whether `segment` extends `manifest` at its end.
fn extends(shard_key: &str, manifest: &Manifest, segment: &SealedSegment) -> Result<(), Error> {
    match manifest.next_offset() {
        Some(next_offset) if next_offset != segment.base_offset => Err(Error::NotContiguous {
            shard_key: shard_key.to_string(),
            base_offset: segment.base_offset,
            reason: format!("the remote log ends at offset {next_offset}"),
        }),
        _ => Ok(()),
    }
}

pub(crate) async fn upload_segment(
    inner: &Arc<Inner>,
    shard_key: &str,
    segment: &SealedSegment,
) -> Result<RemoteSegment, Error> {
    if segment.base_offset >= segment.next_offset || segment.size_bytes == 0 {
        return Err(invalid(
            &segment.log_path,
            "the segment is empty".to_string(),
        ));
    }
    let manifest = inner.manifest(shard_key).await?;
    if let Some(existing) = manifest.segment_at(segment.base_offset) {
        same_segment(shard_key, existing, segment)?;
        return Ok(existing.clone());
    }
    extends(shard_key, &manifest, segment)?;

    let index_bytes = read_file(&segment.index_path).await?;
    let index = OffsetIndexFile::decode(&index_bytes)
        .map_err(|error| invalid(&segment.index_path, error.to_string()))?;
    if (index.base_offset, index.next_offset, index.log_size_bytes)
        != (segment.base_offset, segment.next_offset, segment.size_bytes)
    {
        return Err(invalid(
            &segment.index_path,
            format!(
                "the index describes offsets [{}, {}) in {} bytes",
                index.base_offset, index.next_offset, index.log_size_bytes
            ),
        ));
    }
    let timeindex_bytes = read_file(&segment.timeindex_path).await?;

    let writer = inner.writer_token();
    let key = |object| Layout::segment_key(shard_key, segment.base_offset, object, &writer);
    let log_key = key(SegmentObject::Log);
    let index_key = key(SegmentObject::OffsetIndex);
    let timeindex_key = key(SegmentObject::TimeIndex);
    let log_crc32c = if segment.size_bytes > inner.config.multipart_threshold_bytes {
        upload_log_in_parts(inner, &log_key, segment).await?
    } else {
        upload_log_whole(inner, &log_key, segment).await?
    };
    let index_len = index_bytes.len() as u64;
    let timeindex_len = timeindex_bytes.len() as u64;
    put_new(inner, &index_key, index_bytes).await?;
    put_new(inner, &timeindex_key, timeindex_bytes).await?;
    for (key, sent_bytes) in [
        (&log_key, segment.size_bytes),
        (&index_key, index_len),
        (&timeindex_key, timeindex_len),
    ] {
        let stored_bytes = inner.bucket.size(key).await?;
        if stored_bytes != sent_bytes {
            return Err(Error::RemoteCorrupt {
                key: key.clone(),
                position: stored_bytes.min(sent_bytes),
                reason: format!("uploaded {sent_bytes} bytes but the store holds {stored_bytes}"),
            });
        }
    }

    let remote = RemoteSegment {
        base_offset: segment.base_offset,
        next_offset: segment.next_offset,
        size_bytes: segment.size_bytes,
        max_timestamp: segment.max_timestamp,
        log_crc32c,
        uploaded_ms: now_ms(),
        log_key,
        index_key,
        timeindex_key,
    };
    let recorded = inner
        .update_manifest(shard_key, |manifest| {
            // Another uploader may have recorded it meanwhile: theirs stands.
            if let Some(existing) = manifest.segment_at(segment.base_offset) {
                same_segment(shard_key, existing, segment)?;
                return Ok(ManifestChange::Keep(existing.clone()));
            }
            extends(shard_key, manifest, segment)?;
            manifest.segments.push(remote.clone());
            Ok(ManifestChange::Write(remote.clone()))
        })
        .await;
    let recorded = match recorded {
        Ok(recorded) => recorded,
        // Definite refusals: the manifest will never list these objects. (After any
        // other error the put may have landed, so the objects must stay.)
        Err(error @ (Error::Fenced { .. } | Error::NotContiguous { .. })) => {
            // Unless an earlier attempt of this very call did land (its answer lost, the
            // retry refused) and the manifest, now someone else's, lists these objects.
            let listed = match inner.load_manifest(shard_key).await {
                Ok((manifest, _)) => manifest
                    .segments
                    .iter()
                    .any(|segment| segment.log_key == remote.log_key),
                Err(_) => true,
            };
            if !listed {
                discard(inner, &remote).await;
            }
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    if recorded != remote {
        // Another upload of the same segment was recorded first; ours is unlisted.
        discard(inner, &remote).await;
    }
    if recorded == remote {
        add(&inner.counters.segments_uploaded, 1);
        add(&inner.counters.segment_uploaded_bytes, segment.size_bytes);
        tracing::debug!(
            shard_key,
            base_offset = segment.base_offset,
            size_bytes = segment.size_bytes,
            "segment uploaded"
        );
    }
    Ok(recorded)
}

/// Deletes the objects of an upload no manifest lists, best effort (a leftover is swept
/// by the next remote retention below it).
async fn discard(inner: &Inner, remote: &RemoteSegment) {
    for key in remote.keys() {
        if let Err(error) = inner.bucket.delete(key).await {
            tracing::warn!(key, %error, "could not delete an unlisted segment object");
        }
    }
}

async fn read_file(path: &Path) -> Result<Bytes, Error> {
    tokio::fs::read(path)
        .await
        .map(Bytes::from)
        .map_err(Error::io(path))
}

/// Puts a segment object create-if-absent: its key is unique to this upload attempt
/// (see `Layout::segment_key`), so an object already there is someone else's and is
/// never replaced.
async fn put_new(inner: &Inner, key: &str, bytes: Bytes) -> Result<(), Error> {
    inner
        .bucket
        .put(key, bytes, PutMode::Create)
        .await
        .map_err(Error::store("put", key))
}

async fn upload_log_whole(inner: &Inner, key: &str, segment: &SealedSegment) -> Result<u32, Error> {
    let bytes = read_file(&segment.log_path).await?;
    if bytes.len() as u64 != segment.size_bytes {
        return Err(invalid(
            &segment.log_path,
            format!(
                "the file holds {} bytes, not {}",
                bytes.len(),
                segment.size_bytes
            ),
        ));
    }
    let crc = crc32c::crc32c(&bytes);
    put_new(inner, key, bytes).await?;
    Ok(crc)
}

/// Reads the `.log` in parts and hands each to `send` (part number, bytes), keeping up to
/// [`PARTS_IN_FLIGHT`] sends running. Returns the CRC-32C of the file and what the sends
/// returned, in part order.
async fn send_parts<T, F, Fut>(
    segment: &SealedSegment,
    part_bytes: u64,
    mut send: F,
) -> Result<(u32, Vec<T>), Error>
where
    F: FnMut(usize, Bytes) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let path = &segment.log_path;
    let mut file = tokio::fs::File::open(path).await.map_err(Error::io(path))?;
    let mut crc = 0u32;
    // FuturesOrdered polls every queued send whenever the next one is awaited; futures
    // merely held in a queue would not run until their turn (async blocks are lazy).
    let mut in_flight = FuturesOrdered::new();
    let mut sent = Vec::new();
    let mut remaining = segment.size_bytes;
    let mut part_idx = 0;
    while remaining > 0 {
        let len = remaining.min(part_bytes);
        let mut buffer = vec![0u8; len as usize];
        file.read_exact(&mut buffer)
            .await
            .map_err(Error::io(path))?;
        crc = crc32c::crc32c_append(crc, &buffer);
        in_flight.push_back(send(part_idx, Bytes::from(buffer)));
        part_idx += 1;
        remaining -= len;
        if in_flight.len() == PARTS_IN_FLIGHT
            && let Some(oldest) = in_flight.next().await
        {
            sent.push(oldest?);
        }
    }
    // A sealed segment never grows: more bytes mean the description is stale.
    let mut probe = [0u8; 1];
    if file.read(&mut probe).await.map_err(Error::io(path))? != 0 {
        return Err(invalid(
            path,
            format!("the file is longer than {} bytes", segment.size_bytes),
        ));
    }
    while let Some(oldest) = in_flight.next().await {
        sent.push(oldest?);
    }
    Ok((crc, sent))
}

async fn upload_log_in_parts(
    inner: &Inner,
    key: &str,
    segment: &SealedSegment,
) -> Result<u32, Error> {
    let bucket = &inner.bucket;
    let part_bytes = inner.config.multipart_part_bytes;
    if bucket.multipart().is_none() {
        // The local file system: a streaming upload to a staging file, renamed at the end.
        let mut upload = bucket.start_streaming_upload(key).await?;
        let sent = send_parts(segment, part_bytes, |_, bytes| {
            let part = upload.put_part(PutPayload::from(bytes));
            let key = key.to_string();
            async move { part.await.map_err(Error::store("put part", key)) }
        })
        .await;
        return match sent {
            Ok((crc, _)) => {
                upload
                    .complete()
                    .await
                    .map_err(Error::store("complete multipart upload", key))?;
                Ok(crc)
            }
            Err(error) => {
                if let Err(abort_error) = upload.abort().await {
                    tracing::warn!(key, error = %abort_error, "aborting a failed upload failed");
                }
                Err(error)
            }
        };
    }
    let (upload_id, marker_key) = begin_multipart(bucket, key).await?;
    let sent = send_parts(segment, part_bytes, |part_idx, bytes| {
        bucket.put_part(key, &upload_id, part_idx, bytes)
    })
    .await;
    let result = match sent {
        Ok((crc, part_ids)) => bucket
            .complete_multipart(key, &upload_id, part_ids)
            .await
            .map(|()| crc),
        Err(error) => Err(error),
    };
    if let Err(error) = &result {
        tracing::warn!(key, %error, "multipart upload failed; aborting it");
        if let Err(abort_error) = bucket.abort_multipart(key, &upload_id).await {
            // The journal entry stays, so abort_stale_uploads retries the abort.
            tracing::warn!(key, error = %abort_error, "aborting a failed upload failed");
            return result;
        }
    }
    // Done or aborted: the journal entry has served. If deleting it fails, a later
    // abort_stale_uploads finds the upload gone, which counts as aborted.
    if let Err(error) = bucket.delete(&marker_key).await {
        tracing::warn!(key = marker_key, %error, "could not remove an upload journal entry");
    }
    result
}

/// Starts a multipart upload of `key` and journals it under `uploads/`; returns the
/// upload id and the journal entry's key. The journal entry is what lets
/// [`Tier::abort_stale_uploads`](crate::Tier::abort_stale_uploads) find the upload if
/// this process dies before completing or aborting it.
pub(crate) async fn begin_multipart(
    bucket: &Bucket,
    key: &str,
) -> Result<(MultipartId, String), Error> {
    let upload_id = bucket.create_multipart(key).await?;
    let marker_key = Layout::upload_marker_key(&format!(
        "{}-{:08x}",
        now_ms(),
        crc32c::crc32c(format!("{key}/{upload_id}").as_bytes())
    ));
    let marker = UploadMarker {
        key: key.to_string(),
        upload_id: upload_id.clone(),
    };
    // Serializing two strings cannot fail.
    let marker_bytes = Bytes::from(serde_json::to_vec(&marker).expect("marker serializes"));
    if let Err(error) = bucket
        .put(&marker_key, marker_bytes, PutMode::Overwrite)
        .await
    {
        // Unjournaled, the upload must not outlive this call.
        if let Err(abort_error) = bucket.abort_multipart(key, &upload_id).await {
            tracing::warn!(key, error = %abort_error, "aborting an unjournaled upload failed");
        }
        return Err(Error::store("put", marker_key)(error));
    }
    Ok((upload_id, marker_key))
}
