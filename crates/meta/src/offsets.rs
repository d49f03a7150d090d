//! Committed consumer-group offsets: where each group has read to in each shard. This
//! module is the one owner of their file format, from encoding to crash recovery.
//!
//! Offsets change far more often than stream metadata (every consumer commits every few
//! seconds), so they do not live in `metadata.json`. They go to an append-only log of
//! small checksummed records; the caller decides when to fsync (through an
//! [`OffsetSyncHandle`], so that one fsync covers many commits), and once the log has grown
//! well past the live entries it is compacted into a snapshot.
//!
//! ```text
//! meta/offsets/
//!   00000000000000000007.snapshot       every live entry as of the end of log 6
//!   00000000000000000007.log            changes since; the only file appended to
//!   00000000000000000008.snapshot.tmp   a compaction cut short by a crash; removed at open
//!
//! file    := header record*
//! header  := magic "SLOFFSET" (8) | format_version u32 | kind u32 (1 = log, 2 = snapshot)
//!            | record_count u64 (snapshot: exact; log: 0) | crc32c u32 of the 24 bytes before
//! record  := length u32 | crc32c u32 of payload | payload (1..=RECORD_BYTES_MAX bytes)
//! payload := 1 (Commit)        | group str | stream str | shard u32 | offset i64
//!                              | leader_epoch i32 | commit_timestamp_ms i64 | metadata nstr
//!          | 2 (DeleteOffsets) | group str | stream str | shard u32
//!          | 3 (DeleteGroup)   | group str
//! str     := length u32 | UTF-8 bytes          nstr: length 0xFFFF_FFFF means None
//! ```
//! Integers are big-endian, as on the Kafka wire. The payload is a hand-written binary
//! encoding rather than JSON: every field is fixed-width or length-prefixed, so decoding
//! is a total function that is easy to round-trip and fuzz, a commit costs about 50 bytes
//! instead of about 150 (this log is the write-heavy one), and arbitrary metadata strings
//! need no escaping.
//!
//! Generations. Log `N` and snapshot `N` share a generation number. Snapshot `N` holds the
//! whole state as of the end of log `N - 1`, so opening starts from the newest snapshot (or
//! from nothing), replays every log of that generation or later in order, and deletes
//! whatever is older. Only the newest log is ever appended to, so only its tail can be torn:
//! a short, zero-length, oversized or checksum-failing record there is truncated away with
//! a warning, exactly as the segment log recovers. The same damage anywhere else (a
//! snapshot, an older log, a header) was fsynced before it mattered, so it is reported as
//! [`Error::CorruptOffsets`] instead of silently losing offsets.
//!
//! Compaction from generation `G` to `G + 1`, and what a crash after each step leaves:
//! 1. write every live entry to `G+1.snapshot.tmp` and fsync it: the stray `.tmp` is
//!    removed at open; `G` is still complete.
//! 2. rename it to `G+1.snapshot`: opening uses the snapshot and finds no log `G + 1`,
//!    so it creates one; log `G` is ignored (its content is in the snapshot) and removed.
//! 3. create `G+1.log` holding only a header, fsync it and the directory: a header torn by
//!    the crash is rewritten at open (nothing can have been appended yet).
//! 4. delete log `G` and snapshot `G`: leftovers are deleted at open.
//!
//! From step 2 on, nothing more may be appended to log `G` (replay would skip it), so a
//! failure in step 3 fails the store (one in step 4 only leaves garbage for the next open).
//! The store is not thread-safe; the broker drives it from one writer task.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use crate::Error;
use codec::*;
pub use codec::{CorruptReason, DecodeError};
use files::*;

/// The offsets file format this build reads and writes.
pub const OFFSETS_FORMAT_VERSION: u32 = 1;

/// Largest payload of one record. Checked before encoding and before allocating on read,
/// so a corrupt length can never size an allocation.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;

const MAGIC: [u8; 8] = *b"SLOFFSET";
/// Bytes of a file header.
const HEADER_BYTES: usize = 28;
/// Bytes in front of each payload: length and checksum.
const FRAME_HEADER_BYTES: usize = 8;
/// Name digits, so that names sort like generation numbers.
const GENERATION_DIGITS: usize = 20;
const LOG_EXTENSION: &str = "log";
const SNAPSHOT_EXTENSION: &str = "snapshot";
use shardline_durable::TMP_SUFFIX;
/// Length value that encodes a `None` metadata string.
const NULL_LENGTH: u32 = u32::MAX;

const TAG_COMMIT: u8 = 1;
const TAG_DELETE_OFFSETS: u8 = 2;
const TAG_DELETE_GROUP: u8 = 3;

/// One group's committed position in one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// Leader epoch of the record before `offset`, as the client sent it (-1 if unknown).
    pub leader_epoch: i32,
    /// Free-form client metadata; `None` is distinct from empty.
    pub metadata: Option<String>,
    /// When the commit was made, ms since the epoch; offsets expire from this.
    pub commit_timestamp_ms: i64,
}

/// Every live committed offset: group -> (stream, shard) -> offset.
pub type OffsetMap = BTreeMap<String, BTreeMap<(String, u32), CommittedOffset>>;

/// One change to the committed offsets, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetRecord {
    /// Sets the offset of `group` in one shard.
    Commit {
        /// Consumer group id.
        group: String,
        /// Stream (topic) name.
        stream: String,
        /// Shard (partition) index.
        shard: u32,
        /// The position committed.
        committed: CommittedOffset,
    },
    /// Forgets the offset of `group` in one shard.
    DeleteOffsets {
        /// Consumer group id.
        group: String,
        /// Stream (topic) name.
        stream: String,
        /// Shard (partition) index.
        shard: u32,
    },
    /// Forgets every offset of `group`.
    DeleteGroup {
        /// Consumer group id.
        group: String,
    },
}

impl OffsetRecord {
    /// Applies the change to `map`. Groups left without offsets are removed, so every group
    /// in a map has at least one offset.
    pub fn apply_to(&self, map: &mut OffsetMap) {
        let _ = apply_counting(map, self);
    }
}

/// Applies `record` and returns `(frame bytes added, frame bytes removed)` among the live
/// entries, which is what the compaction threshold needs.
fn apply_counting(map: &mut OffsetMap, record: &OffsetRecord) -> (u64, u64) {
    match record {
        OffsetRecord::Commit {
            group,
            stream,
            shard,
            committed,
        } => {
            let entries = map.entry(group.clone()).or_default();
            let added = live_entry_bytes(group, stream, committed);
            let removed = entries
                .insert((stream.clone(), *shard), committed.clone())
                .map_or(0, |old| live_entry_bytes(group, stream, &old));
            (added, removed)
        }
        OffsetRecord::DeleteOffsets {
            group,
            stream,
            shard,
        } => {
            let Some(entries) = map.get_mut(group) else {
                return (0, 0);
            };
            let removed = entries
                .remove(&(stream.clone(), *shard))
                .map_or(0, |old| live_entry_bytes(group, stream, &old));
            if entries.is_empty() {
                map.remove(group);
            }
            (0, removed)
        }
        OffsetRecord::DeleteGroup { group } => {
            let removed = map.remove(group).map_or(0, |entries| {
                entries
                    .iter()
                    .map(|((stream, _), committed)| live_entry_bytes(group, stream, committed))
                    .sum()
            });
            (0, removed)
        }
    }
}

/// Size of the frame a snapshot spends on one entry.
fn live_entry_bytes(group: &str, stream: &str, committed: &CommittedOffset) -> u64 {
    (FRAME_HEADER_BYTES + commit_payload_bytes(group, stream, committed.metadata.as_deref())) as u64
}

fn commit_payload_bytes(group: &str, stream: &str, metadata: Option<&str>) -> usize {
    1 + 4 + group.len() + 4 + stream.len() + 4 + 8 + 4 + 8 + 4 + metadata.map_or(0, str::len)
}

fn payload_bytes(record: &OffsetRecord) -> usize {
    match record {
        OffsetRecord::Commit {
            group,
            stream,
            committed,
            ..
        } => commit_payload_bytes(group, stream, committed.metadata.as_deref()),
        OffsetRecord::DeleteOffsets { group, stream, .. } => {
            1 + 4 + group.len() + 4 + stream.len() + 4
        }
        OffsetRecord::DeleteGroup { group } => 1 + 4 + group.len(),
    }
}

/// When [`OffsetStore`] compacts its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetStoreConfig {
    /// Compact once the log reaches this size, however much of it is live.
    pub log_bytes_max: u64,
    /// Also compact once the log is this many times the size of the live entries...
    pub log_to_live_ratio_max: u64,
    /// ...but not while the log is smaller than this, so that a small store is not
    /// rewritten after every few commits. Also how much the log must grow after a failed
    /// compaction before the next try.
    pub log_bytes_min: u64,
}

impl Default for OffsetStoreConfig {
    fn default() -> OffsetStoreConfig {
        OffsetStoreConfig {
            log_bytes_max: 64 * 1024 * 1024,
            log_to_live_ratio_max: 10,
            log_bytes_min: 1024 * 1024,
        }
    }
}

/// Everything needed to fsync what was appended before it was taken, without the store:
/// take it under the writer's lock, drop the lock, then [`sync`](OffsetSyncHandle::sync).
#[derive(Debug)]
#[must_use = "an OffsetSyncHandle does nothing until sync() is called"]
pub struct OffsetSyncHandle {
    file: Arc<File>,
    path: PathBuf,
}

impl OffsetSyncHandle {
    /// Fsyncs the log that was current when the handle was taken. Appends to an older log
    /// need nothing more: a compaction put them in an fsynced snapshot.
    ///
    /// After an error, treat the store as failed and reopen it: a failed fsync can drop
    /// dirty pages, so a retry proves nothing.
    pub fn sync(self) -> Result<(), Error> {
        self.file.sync_data().map_err(Error::io(&self.path))
    }
}

/// The committed-offsets store: an in-memory [`OffsetMap`] backed by the log and snapshot
/// files described in the module docs.
#[derive(Debug)]
pub struct OffsetStore {
    dir: PathBuf,
    config: OffsetStoreConfig,
    /// Generation of the current log.
    generation: u64,
    log_path: PathBuf,
    /// Opened for appending; shared with sync handles.
    log: Arc<File>,
    /// Length of the current log, header included.
    log_bytes: u64,
    /// Bytes a snapshot of the live entries would take, without its header.
    live_bytes: u64,
    /// No compaction is tried while the log is shorter than this (set after a failure).
    compaction_retry_bytes: u64,
    offsets: OffsetMap,
    /// Set when a write failed part-way: the log may end in a partial record, and anything
    /// appended after it would be lost at replay, so the store takes no more writes.
    failure: Option<String>,
}

/// How far [`OffsetStore::compact_steps`] goes; the steps are listed in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CompactionStep {
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only tests stop a compaction this early")
    )]
    WriteSnapshot,
    RenameSnapshot,
    CreateLog,
    RemoveOld,
}

impl OffsetStore {
    /// Opens the store in `data_dir/meta/offsets`, creating it if needed, and replays it
    /// (see the module docs): leftovers of an interrupted compaction are removed, a torn
    /// tail is truncated, and damage that recovery must not repair is an error.
    pub fn open(data_dir: &Path, config: OffsetStoreConfig) -> Result<OffsetStore, Error> {
        let dir = data_dir.join("meta").join("offsets");
        shardline_durable::create_dir(&dir)?;
        let listing = list(&dir)?;
        for tmp in &listing.tmp_files {
            warn!(file = %tmp.display(), "removing leftover temporary offsets file");
            remove_file(tmp)?;
        }
        let base_generation = listing.snapshots.last().copied();
        let mut offsets = OffsetMap::new();
        let mut live_bytes = 0;
        if let Some(generation) = base_generation {
            live_bytes = replay_snapshot(&FileKind::Snapshot.path(&dir, generation), &mut offsets)?;
        }
        let first_live = base_generation.unwrap_or(0);
        let live_logs: Vec<u64> = listing
            .logs
            .iter()
            .copied()
            .filter(|generation| *generation >= first_live)
            .collect();
        let mut current = None;
        for (number, &generation) in live_logs.iter().enumerate() {
            let path = FileKind::Log.path(&dir, generation);
            let newest = number + 1 == live_logs.len();
            let replay = replay_log(&path, newest, &mut offsets, &mut live_bytes)?;
            if !newest {
                continue;
            }
            current = Some(match replay {
                LogReplay::Replayed { valid_bytes } => {
                    (generation, open_for_append(&path)?, valid_bytes)
                }
                LogReplay::TornHeader => {
                    warn!(file = %path.display(), "rewriting the torn header of a new offsets log");
                    (generation, create_log(&path)?, HEADER_BYTES as u64)
                }
            });
        }
        let mut created = false;
        let (generation, log, log_bytes) = match current {
            Some(current) => current,
            None => {
                // A fresh store, or a crash between a snapshot's rename and its log's creation.
                let generation = base_generation.unwrap_or(0);
                created = true;
                let log = create_log(&FileKind::Log.path(&dir, generation))?;
                (generation, log, HEADER_BYTES as u64)
            }
        };
        let mut removed = false;
        let garbage = listing
            .logs
            .iter()
            .map(|&generation| (FileKind::Log, generation))
            .chain(
                listing
                    .snapshots
                    .iter()
                    .map(|&generation| (FileKind::Snapshot, generation)),
            )
            .filter(|(_, file_generation)| *file_generation < first_live);
        for (kind, file_generation) in garbage {
            let path = kind.path(&dir, file_generation);
            info!(file = %path.display(), "removing offsets file superseded by a snapshot");
            remove_file(&path)?;
            removed = true;
        }
        if created || removed || !listing.tmp_files.is_empty() {
            sync_dir(&dir)?;
        }
        let log_path = FileKind::Log.path(&dir, generation);
        Ok(OffsetStore {
            dir,
            config,
            generation,
            log_path,
            log: Arc::new(log),
            log_bytes,
            live_bytes,
            compaction_retry_bytes: 0,
            offsets,
            failure: None,
        })
    }

    /// Every live committed offset, including appended ones not yet synced.
    pub fn offsets(&self) -> &OffsetMap {
        &self.offsets
    }

    /// Why the store stopped taking writes, if it has.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Size of the current log file, header included.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Writes `records` to the log (no fsync: see [`OffsetStore::sync_handle`]) and applies
    /// them to the map. Every record's size is checked before anything is written, so
    /// [`Error::RecordTooLarge`] leaves the store unchanged. Any other error fails the store.
    pub fn append(&mut self, records: &[OffsetRecord]) -> Result<(), Error> {
        self.check_not_failed()?;
        let mut frames = Vec::new();
        for record in records {
            encode_frame(record, &mut frames)?;
        }
        if let Err(source) = (&*self.log).write_all(&frames) {
            // Part of the frames may be in the file; a record appended after them would be
            // cut off by the next replay, so stop here. Reopening truncates the partial tail.
            self.failure = Some(format!("writing {}: {source}", self.log_path.display()));
            return Err(Error::io(&self.log_path)(source));
        }
        self.log_bytes += frames.len() as u64;
        for record in records {
            let (added, removed) = apply_counting(&mut self.offsets, record);
            self.live_bytes = (self.live_bytes + added).saturating_sub(removed);
        }
        Ok(())
    }

    /// A handle that makes everything appended so far durable, usable without `&mut self`.
    pub fn sync_handle(&self) -> OffsetSyncHandle {
        OffsetSyncHandle {
            file: Arc::clone(&self.log),
            path: self.log_path.clone(),
        }
    }

    /// Whether the log has outgrown the live entries (see [`OffsetStoreConfig`]).
    pub fn needs_compaction(&self) -> bool {
        if self.failure.is_some() || self.log_bytes < self.compaction_retry_bytes {
            return false;
        }
        let config = &self.config;
        self.log_bytes >= config.log_bytes_max
            || (self.log_bytes >= config.log_bytes_min
                && self.log_bytes >= self.live_bytes.saturating_mul(config.log_to_live_ratio_max))
    }

    /// Writes a snapshot of the live entries and starts a new, empty log, crash-safely
    /// (see the module docs). Everything appended before is durable afterwards. A failure
    /// before the snapshot is renamed into place leaves the store as it was (and delays
    /// the next try); a failure after fails the store.
    pub fn compact(&mut self) -> Result<(), Error> {
        self.compact_steps(CompactionStep::RemoveOld)
    }

    /// Runs compaction up to and including `last`, so that tests can stop as a crash would.
    fn compact_steps(&mut self, last: CompactionStep) -> Result<(), Error> {
        self.check_not_failed()?;
        let next = self.generation + 1;
        let snapshot_path = FileKind::Snapshot.path(&self.dir, next);
        let tmp_path = shardline_durable::tmp_path(&snapshot_path);
        let written = self.write_snapshot(&tmp_path).and_then(|()| match last {
            CompactionStep::WriteSnapshot => Ok(()),
            _ => fs::rename(&tmp_path, &snapshot_path).map_err(Error::io(&snapshot_path)),
        });
        if let Err(error) = written {
            if let Err(cleanup) = remove_file(&tmp_path) {
                warn!(file = %tmp_path.display(), error = %cleanup, "could not remove a failed offsets snapshot; it is removed at the next open");
            }
            self.compaction_retry_bytes = self.log_bytes + self.config.log_bytes_min;
            return Err(error);
        }
        if last <= CompactionStep::RenameSnapshot {
            return Ok(());
        }
        let new_log_path = FileKind::Log.path(&self.dir, next);
        let new_log = match create_log(&new_log_path).and_then(|log| {
            sync_dir(&self.dir)?;
            Ok(log)
        }) {
            Ok(log) => log,
            Err(error) => {
                // The snapshot is in place, so replay would now skip the old log.
                self.failure = Some(format!("compacting offsets: {error}"));
                return Err(error);
            }
        };
        let old_generation = self.generation;
        self.generation = next;
        self.log = Arc::new(new_log);
        self.log_path = new_log_path;
        self.log_bytes = HEADER_BYTES as u64;
        self.compaction_retry_bytes = 0;
        if last <= CompactionStep::CreateLog {
            return Ok(());
        }
        for kind in [FileKind::Log, FileKind::Snapshot] {
            let path = kind.path(&self.dir, old_generation);
            if let Err(error) = remove_file(&path) {
                // Harmless: the file is superseded and removed at the next open.
                warn!(file = %path.display(), %error, "could not remove a superseded offsets file");
            }
        }
        info!(
            generation = next,
            live_bytes = self.live_bytes,
            "compacted committed offsets"
        );
        Ok(())
    }

    fn write_snapshot(&self, path: &Path) -> Result<(), Error> {
        let entries: u64 = self.offsets.values().map(|group| group.len() as u64).sum();
        let file = File::create(path).map_err(Error::io(path))?;
        let mut writer = BufWriter::new(file);
        writer
            .write_all(&encode_header(FileKind::Snapshot, entries))
            .map_err(Error::io(path))?;
        let mut frame = Vec::new();
        for (group, entries) in &self.offsets {
            for ((stream, shard), committed) in entries {
                frame.clear();
                encode_frame(
                    &OffsetRecord::Commit {
                        group: group.clone(),
                        stream: stream.clone(),
                        shard: *shard,
                        committed: committed.clone(),
                    },
                    &mut frame,
                )?;
                writer.write_all(&frame).map_err(Error::io(path))?;
            }
        }
        let file = writer
            .into_inner()
            .map_err(|error| Error::io(path)(error.into_error()))?;
        file.sync_all().map_err(Error::io(path))
    }

    /// Fsyncs the log and closes the store.
    pub fn close(self) -> Result<(), Error> {
        self.sync_handle().sync()
    }

    fn check_not_failed(&self) -> Result<(), Error> {
        match &self.failure {
            Some(reason) => Err(Error::OffsetsFailed {
                path: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

mod codec;
mod files;

#[cfg(test)]
mod tests;
