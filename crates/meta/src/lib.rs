//! Durable metadata: which streams exist, their shards, their configs, and the counter
//! that hands out idempotent-producer ids.
//!
//! Everything lives in one small JSON document, `meta/metadata.json` under the data
//! directory. Metadata changes rarely (a topic is created, a shard split), so the whole
//! document is rewritten on every change the crash-safe way: write `metadata.json.tmp`,
//! fsync it, rename it over the old file, fsync the directory. A crash at any point leaves
//! either the old or the new document, never a mix; a stray `.tmp` is removed on open.
//!
//! The document carries a `format_version`; an unknown version is refused rather than
//! misread.
//!
//! Committed consumer-group offsets change far too often for that scheme, so they have
//! their own append-only, group-committed store under `meta/offsets/`: see [`offsets`].
//!
//! Depends on core only.

pub mod offsets;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shardline_durable::DirSync;

pub use offsets::{
    CommittedOffset, CorruptReason, DecodeError, OFFSETS_FORMAT_VERSION, OffsetMap, OffsetRecord,
    OffsetStore, OffsetStoreConfig, OffsetSyncHandle, RECORD_BYTES_MAX,
};

/// The metadata format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Producer ids are reserved from disk in blocks, so that handing one out rarely costs a
/// write, and a crash can only skip ids, never reuse them.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Why metadata could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem call failed.
    #[error("metadata i/o on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The document is not valid JSON of the expected shape.
    #[error("metadata file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a newer Shardline.
    #[error(
        "metadata file {path} has format version {found}; this build reads version {supported}"
    )]
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A committed-offsets file holds bytes the store did not write, in a place recovery
    /// must not repair (a snapshot, an older log, a file header).
    #[error("offsets file {path} is corrupt at byte {position}: {reason}")]
    CorruptOffsets {
        /// The file.
        path: PathBuf,
        /// Byte position of the bad header or record.
        position: u64,
        /// What was wrong.
        #[source]
        reason: CorruptReason,
    },
    /// An offset record would exceed [`RECORD_BYTES_MAX`]; nothing was written.
    #[error("offset record of {record_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    RecordTooLarge {
        /// Encoded payload size.
        record_bytes: usize,
        /// [`RECORD_BYTES_MAX`].
        limit_bytes: usize,
    },
    /// An earlier write to the offsets log failed, so the store takes no more writes until
    /// it is reopened (which truncates whatever partial record the failure left).
    #[error("offsets store {path} failed and takes no more writes: {reason}")]
    OffsetsFailed {
        /// The offsets directory.
        path: PathBuf,
        /// The first failure.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.as_ref().to_path_buf();
        move |source| Error::Io { path, source }
    }
}

impl From<shardline_durable::DurableError> for Error {
    fn from(error: shardline_durable::DurableError) -> Error {
        Error::Io {
            path: error.path,
            source: error.source,
        }
    }
}

/// One shard as stored. Hash keys are decimal strings, as Kinesis prints them, because
/// JSON numbers cannot hold 128 bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// Index in the stream (the Kafka partition number).
    pub index: u32,
    /// First hash key owned, inclusive, decimal.
    pub starting_hash_key: String,
    /// Last hash key owned, inclusive, decimal.
    pub ending_hash_key: String,
    /// Parent shard index for split or merge children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// The second parent of a merge child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjacent_parent: Option<u32>,
    /// When the shard was created, ms since the epoch.
    pub created_ms: i64,
    /// Set once the shard is closed by a reshard: the offset after its last record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_offset: Option<u64>,
    /// When the shard was closed, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_ms: Option<i64>,
}

/// One stream (Kafka topic) as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Stream / topic name.
    pub name: String,
    /// Stable topic id (Kafka Metadata v10+), 32 hex digits.
    pub topic_id: String,
    /// When the stream was created, ms since the epoch.
    pub created_ms: i64,
    /// Shards ever created and not yet expired, by index.
    pub shards: Vec<ShardRecord>,
    /// Per-stream settings, with Kafka's config names as keys (`retention.ms`, …). Only
    /// values set explicitly are stored; the broker fills in defaults.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// Kinesis stream tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Time of each of the last resharding operations, ms since the epoch, for the
    /// UpdateShardCount rate limit (at most N per rolling 24 hours).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scalings_ms: Vec<i64>,
}

/// The whole metadata document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// See [`FORMAT_VERSION`].
    pub format_version: u32,
    /// A stable id for this cluster (Kafka's cluster id), chosen when the data dir is new.
    pub cluster_id: String,
    /// Streams by name.
    pub streams: BTreeMap<String, StreamRecord>,
    /// Producer ids below this value may have been handed out already.
    pub producer_id_reserved_until: i64,
}

/// Loads, holds and saves the metadata document. Not thread-safe: the broker keeps it
/// behind a mutex and calls [`MetaStore::save`] after each change.
#[derive(Debug)]
pub struct MetaStore {
    dir: PathBuf,
    metadata: Metadata,
    next_producer_id: i64,
}

impl MetaStore {
    /// Opens the store under `data_dir/meta`, creating a fresh document with
    /// `new_cluster_id` if there is none.
    pub fn open(data_dir: &Path, new_cluster_id: &str) -> Result<MetaStore, Error> {
        let dir = data_dir.join("meta");
        shardline_durable::create_dir(&dir)?;
        let tmp = shardline_durable::tmp_path(&dir.join(DOCUMENT_FILE));
        if tmp.exists() {
            // A crash between write and rename: the old document is still whole.
            fs::remove_file(&tmp).map_err(|source| Error::Io {
                path: tmp.clone(),
                source,
            })?;
        }
        let metadata = read_document(data_dir)?.unwrap_or_else(|| Metadata {
            format_version: FORMAT_VERSION,
            cluster_id: new_cluster_id.to_owned(),
            streams: BTreeMap::new(),
            producer_id_reserved_until: 0,
        });
        // Ids up to the reserved mark may have been given out before a crash: skip them.
        let next_producer_id = metadata.producer_id_reserved_until;
        let mut store = MetaStore {
            dir,
            metadata,
            next_producer_id,
        };
        store.save()?;
        Ok(store)
    }

    /// The current document.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Applies `change` to a copy of the document and saves the copy; only once it is
    /// durable does it replace the document in memory. A failed save leaves memory as
    /// the disk has it, so a later save can never make a refused change durable.
    pub fn update<T>(&mut self, change: impl FnOnce(&mut Metadata) -> T) -> Result<T, Error> {
        let mut next = self.metadata.clone();
        let out = change(&mut next);
        save_document(&self.dir, &next)?;
        self.metadata = next;
        Ok(out)
    }

    /// Hands out a new producer id, durably reserving a block of ids when needed.
    pub fn allocate_producer_id(&mut self) -> Result<i64, Error> {
        if self.next_producer_id >= self.metadata.producer_id_reserved_until {
            let reserved_until = self.next_producer_id + PRODUCER_ID_BLOCK;
            self.update(|metadata| metadata.producer_id_reserved_until = reserved_until)?;
        }
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        Ok(id)
    }

    /// Writes the document durably: temp file, fsync, rename, fsync the directory.
    fn save(&mut self) -> Result<(), Error> {
        save_document(&self.dir, &self.metadata)
    }
}

fn save_document(dir: &Path, metadata: &Metadata) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(metadata).map_err(|source| Error::Corrupt {
        path: dir.join(DOCUMENT_FILE),
        source,
    })?;
    write_atomically(dir, &bytes)
}

/// Name of the metadata document in `data_dir/meta`.
const DOCUMENT_FILE: &str = "metadata.json";

/// Where the metadata document of `data_dir` lives.
pub fn document_path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join(DOCUMENT_FILE)
}

/// This data directory's identity as an owner of remote logs (what tier manifests name
/// as their owner): read from `meta/tier-owner`, or `fresh` written there durably the
/// first time. Not part of the metadata document on purpose: a data directory restored
/// from the bucket must get an identity of its own.
pub fn tier_owner(data_dir: &Path, fresh: &str) -> Result<String, Error> {
    let path = data_dir.join("meta").join("tier-owner");
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { path, source }),
    }
    shardline_durable::create_dir(&data_dir.join("meta"))
        .and_then(|()| {
            shardline_durable::replace(&path, fresh.as_bytes(), shardline_durable::DirSync::Yes)
        })
        .map_err(|error| Error::Io {
            path: error.path,
            source: error.source,
        })?;
    Ok(fresh.to_owned())
}

/// The metadata document of `data_dir`, if it has one, checked for its format version.
pub fn read_document(data_dir: &Path) -> Result<Option<Metadata>, Error> {
    let path = document_path(data_dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let metadata: Metadata = serde_json::from_slice(&bytes).map_err(|source| Error::Corrupt {
        path: path.clone(),
        source,
    })?;
    if metadata.format_version != FORMAT_VERSION {
        return Err(Error::UnknownVersion {
            path,
            found: metadata.format_version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(Some(metadata))
}

/// Installs `bytes` (a snapshot of another node's document, say) as the metadata
/// document of `data_dir`, durably and atomically, after checking that it is one.
pub fn install_document(data_dir: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = data_dir.join("meta");
    let metadata: Metadata = serde_json::from_slice(bytes).map_err(|source| Error::Corrupt {
        path: dir.join(DOCUMENT_FILE),
        source,
    })?;
    if metadata.format_version != FORMAT_VERSION {
        return Err(Error::UnknownVersion {
            path: dir.join(DOCUMENT_FILE),
            found: metadata.format_version,
            supported: FORMAT_VERSION,
        });
    }
    shardline_durable::create_dir(&dir)?;
    write_atomically(&dir, bytes)
}

/// Writes the document in `dir` durably (`shardline_durable::replace`: temp file, fsync,
/// rename, fsync the directory), so a crash leaves the old document or the new one,
/// never a torn one.
fn write_atomically(dir: &Path, bytes: &[u8]) -> Result<(), Error> {
    shardline_durable::replace(&dir.join(DOCUMENT_FILE), bytes, DirSync::Yes).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> StreamRecord {
        StreamRecord {
            name: name.to_owned(),
            topic_id: "0123456789abcdef0123456789abcdef".to_owned(),
            created_ms: 1,
            shards: vec![ShardRecord {
                index: 0,
                starting_hash_key: "0".to_owned(),
                ending_hash_key: u128::MAX.to_string(),
                parent: None,
                adjacent_parent: None,
                created_ms: 1,
                ending_offset: None,
                closed_ms: None,
            }],
            configs: BTreeMap::from([("retention.ms".to_owned(), "86400000".to_owned())]),
            tags: BTreeMap::new(),
            scalings_ms: Vec::new(),
        }
    }

    #[test]
    fn a_failed_update_leaves_memory_as_the_disk_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(dir.path(), "cluster-a").unwrap();
        // A directory where the temp file goes: a real I/O failure, even for root.
        let blocker = dir.path().join("meta/metadata.json.tmp/x");
        fs::create_dir_all(&blocker).unwrap();
        let failed = store.update(|metadata| {
            metadata
                .streams
                .insert("orders".to_owned(), stream("orders"))
        });
        assert!(failed.is_err());
        assert!(
            store.metadata().streams.is_empty(),
            "memory kept the old document"
        );
        fs::remove_dir_all(blocker.parent().unwrap()).unwrap();
        // A later unrelated save must not make the refused change durable.
        store
            .update(|metadata| metadata.producer_id_reserved_until += 1)
            .unwrap();
        drop(store);
        let store = MetaStore::open(dir.path(), "cluster-a").unwrap();
        assert!(store.metadata().streams.is_empty());
    }

    #[test]
    fn saved_streams_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(dir.path(), "cluster-a").unwrap();
        store
            .update(|metadata| {
                metadata
                    .streams
                    .insert("orders".to_owned(), stream("orders"))
            })
            .unwrap();
        drop(store);
        let store = MetaStore::open(dir.path(), "cluster-b").unwrap();
        assert_eq!(store.metadata().cluster_id, "cluster-a");
        assert_eq!(store.metadata().streams["orders"], stream("orders"));
    }

    #[test]
    fn an_installed_snapshot_opens_as_the_document_and_garbage_is_refused() {
        let source = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(source.path(), "cluster-a").unwrap();
        store
            .update(|metadata| {
                metadata
                    .streams
                    .insert("orders".to_owned(), stream("orders"))
            })
            .unwrap();
        let snapshot = fs::read(document_path(source.path())).unwrap();

        let target = tempfile::tempdir().unwrap();
        assert!(install_document(target.path(), b"{\"half\": ").is_err());
        assert!(
            read_document(target.path()).unwrap().is_none(),
            "nothing written"
        );
        install_document(target.path(), &snapshot).unwrap();
        let store = MetaStore::open(target.path(), "cluster-b").unwrap();
        assert_eq!(store.metadata().cluster_id, "cluster-a");
        assert_eq!(store.metadata().streams["orders"], stream("orders"));
    }

    #[test]
    fn producer_ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(dir.path(), "c").unwrap();
        let first = store.allocate_producer_id().unwrap();
        let second = store.allocate_producer_id().unwrap();
        assert_eq!(second, first + 1);
        drop(store);
        let mut store = MetaStore::open(dir.path(), "c").unwrap();
        assert!(store.allocate_producer_id().unwrap() > second);
    }

    #[test]
    fn a_leftover_temp_file_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        drop(MetaStore::open(dir.path(), "c").unwrap());
        let tmp = dir.path().join("meta/metadata.json.tmp");
        fs::write(&tmp, b"{ half a docu").unwrap();
        let store = MetaStore::open(dir.path(), "d").unwrap();
        assert_eq!(store.metadata().cluster_id, "c");
        assert!(!tmp.exists());
    }

    #[test]
    fn a_corrupt_document_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("meta")).unwrap();
        fs::write(dir.path().join("meta/metadata.json"), b"not json").unwrap();
        assert!(matches!(
            MetaStore::open(dir.path(), "c"),
            Err(Error::Corrupt { .. })
        ));
    }
}
