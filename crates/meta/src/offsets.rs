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

/// Appends one framed record to `out`. The size is checked before anything is copied.
fn encode_frame(record: &OffsetRecord, out: &mut Vec<u8>) -> Result<(), Error> {
    let payload_len = payload_bytes(record);
    if payload_len > RECORD_BYTES_MAX {
        return Err(Error::RecordTooLarge {
            record_bytes: payload_len,
            limit_bytes: RECORD_BYTES_MAX,
        });
    }
    out.reserve(FRAME_HEADER_BYTES + payload_len);
    let frame_start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    let payload_start = out.len();
    match record {
        OffsetRecord::Commit {
            group,
            stream,
            shard,
            committed,
        } => {
            out.push(TAG_COMMIT);
            put_str(out, group);
            put_str(out, stream);
            out.extend_from_slice(&shard.to_be_bytes());
            out.extend_from_slice(&committed.offset.to_be_bytes());
            out.extend_from_slice(&committed.leader_epoch.to_be_bytes());
            out.extend_from_slice(&committed.commit_timestamp_ms.to_be_bytes());
            match &committed.metadata {
                Some(metadata) => put_str(out, metadata),
                None => out.extend_from_slice(&NULL_LENGTH.to_be_bytes()),
            }
        }
        OffsetRecord::DeleteOffsets {
            group,
            stream,
            shard,
        } => {
            out.push(TAG_DELETE_OFFSETS);
            put_str(out, group);
            put_str(out, stream);
            out.extend_from_slice(&shard.to_be_bytes());
        }
        OffsetRecord::DeleteGroup { group } => {
            out.push(TAG_DELETE_GROUP);
            put_str(out, group);
        }
    }
    let payload = &out[payload_start..];
    // Paired with payload_bytes: the size checked above is the size written.
    assert_eq!(payload.len(), payload_len, "payload size mismatch");
    let checksum = crc32c::crc32c(payload);
    out[frame_start..frame_start + 4].copy_from_slice(&(payload_len as u32).to_be_bytes());
    out[frame_start + 4..payload_start].copy_from_slice(&checksum.to_be_bytes());
    Ok(())
}

/// Strings here are bounded by RECORD_BYTES_MAX (checked by the caller), so `as u32` holds.
fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Why a payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first byte names no record type.
    #[error("unknown record tag {0}")]
    UnknownTag(u8),
    /// The payload ends inside a field.
    #[error("payload ends inside field {field}")]
    Short {
        /// The field being read.
        field: &'static str,
    },
    /// A string field is not UTF-8.
    #[error("field {field} is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// Bytes remain after the last field.
    #[error("{0} bytes after the last field")]
    TrailingBytes(usize),
}

/// Reads fields off a payload, front to back.
struct FieldReader<'a> {
    bytes: &'a [u8],
}

impl<'a> FieldReader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Short { field });
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    /// The length is checked against what is left before anything is copied.
    fn string_of_len(&mut self, len: u32, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.take(len as usize, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_not_utf8| DecodeError::NotUtf8 { field })
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u32(field)?;
        self.string_of_len(len, field)
    }

    fn nullable_string(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.u32(field)? {
            NULL_LENGTH => Ok(None),
            len => self.string_of_len(len, field).map(Some),
        }
    }
}

fn decode_payload(payload: &[u8]) -> Result<OffsetRecord, DecodeError> {
    let mut reader = FieldReader { bytes: payload };
    let [tag] = reader.array("tag")?;
    let record = match tag {
        TAG_COMMIT => OffsetRecord::Commit {
            group: reader.string("group")?,
            stream: reader.string("stream")?,
            shard: reader.u32("shard")?,
            committed: CommittedOffset {
                offset: reader.i64("offset")?,
                leader_epoch: reader.i32("leader_epoch")?,
                commit_timestamp_ms: reader.i64("commit_timestamp_ms")?,
                metadata: reader.nullable_string("metadata")?,
            },
        },
        TAG_DELETE_OFFSETS => OffsetRecord::DeleteOffsets {
            group: reader.string("group")?,
            stream: reader.string("stream")?,
            shard: reader.u32("shard")?,
        },
        TAG_DELETE_GROUP => OffsetRecord::DeleteGroup {
            group: reader.string("group")?,
        },
        unknown => return Err(DecodeError::UnknownTag(unknown)),
    };
    if !reader.bytes.is_empty() {
        return Err(DecodeError::TrailingBytes(reader.bytes.len()));
    }
    Ok(record)
}

/// Why bytes in an offsets file were judged not to be what the store wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptReason {
    /// The file is shorter than its header.
    #[error("file header is incomplete")]
    ShortHeader,
    /// The file does not start with the magic bytes.
    #[error("file does not start with the offsets magic")]
    BadMagic,
    /// The header's checksum does not match it.
    #[error("file header checksum mismatch")]
    HeaderChecksum,
    /// The header names a kind other than the one the file name says.
    #[error("file header says kind {found}, the file name says {expected}")]
    WrongKind {
        /// Kind from the file name.
        expected: u32,
        /// Kind in the header.
        found: u32,
    },
    /// The file ends inside a record.
    #[error("record runs past the end of the file")]
    Truncated,
    /// A record claims an empty payload, as a zero-filled tail does.
    #[error("record has length zero")]
    ZeroLength,
    /// A record claims a payload larger than [`RECORD_BYTES_MAX`].
    #[error("record length {0} exceeds the limit")]
    LengthTooLarge(u32),
    /// A record's payload does not match its checksum.
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// Checksum in the frame.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// A record passes its checksum but does not decode.
    #[error("record does not decode")]
    Decode(#[source] DecodeError),
    /// A snapshot holds a different number of records than its header says.
    #[error("snapshot header says {expected} records, found {found}")]
    CountMismatch {
        /// Count in the header.
        expected: u64,
        /// Records read.
        found: u64,
    },
}

/// Whether a file is a log or a snapshot; stored in the header and in the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Log,
    Snapshot,
}

impl FileKind {
    fn code(self) -> u32 {
        match self {
            FileKind::Log => 1,
            FileKind::Snapshot => 2,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            FileKind::Log => LOG_EXTENSION,
            FileKind::Snapshot => SNAPSHOT_EXTENSION,
        }
    }

    fn path(self, dir: &Path, generation: u64) -> PathBuf {
        dir.join(format!(
            "{generation:0GENERATION_DIGITS$}.{}",
            self.extension()
        ))
    }
}

fn encode_header(kind: FileKind, record_count: u64) -> [u8; HEADER_BYTES] {
    let mut header = [0; HEADER_BYTES];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&OFFSETS_FORMAT_VERSION.to_be_bytes());
    header[12..16].copy_from_slice(&kind.code().to_be_bytes());
    header[16..24].copy_from_slice(&record_count.to_be_bytes());
    let checksum = crc32c::crc32c(&header[..24]);
    header[24..].copy_from_slice(&checksum.to_be_bytes());
    header
}

/// What a valid header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    format_version: u32,
    kind: u32,
    record_count: u64,
}

fn decode_header(bytes: &[u8]) -> Result<Header, CorruptReason> {
    let Some(bytes) = bytes.get(..HEADER_BYTES) else {
        return Err(CorruptReason::ShortHeader);
    };
    if bytes[..8] != MAGIC {
        return Err(CorruptReason::BadMagic);
    }
    let field = |range: std::ops::Range<usize>| {
        let mut out = [0; 4];
        out.copy_from_slice(&bytes[range]);
        u32::from_be_bytes(out)
    };
    if crc32c::crc32c(&bytes[..24]) != field(24..28) {
        return Err(CorruptReason::HeaderChecksum);
    }
    let mut record_count = [0; 8];
    record_count.copy_from_slice(&bytes[16..24]);
    Ok(Header {
        format_version: field(8..12),
        kind: field(12..16),
        record_count: u64::from_be_bytes(record_count),
    })
}

/// One step of reading records off a file.
#[derive(Debug)]
enum Step {
    /// A whole, valid record of `frame_bytes` bytes.
    Record {
        record: OffsetRecord,
        frame_bytes: u64,
    },
    /// The file ends cleanly here.
    End,
    /// The bytes here are not a valid record.
    Damaged(CorruptReason),
}

/// Fills `buf` as far as the reader allows; fewer bytes than asked means end of file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Reads the next record, reusing `payload` as the buffer. Never allocates more than
/// [`RECORD_BYTES_MAX`], whatever the length field says.
fn read_record(reader: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Step> {
    let mut frame_header = [0; FRAME_HEADER_BYTES];
    match read_full(reader, &mut frame_header)? {
        0 => return Ok(Step::End),
        FRAME_HEADER_BYTES => {}
        _ => return Ok(Step::Damaged(CorruptReason::Truncated)),
    }
    let [l0, l1, l2, l3, c0, c1, c2, c3] = frame_header;
    let length = u32::from_be_bytes([l0, l1, l2, l3]);
    let stored = u32::from_be_bytes([c0, c1, c2, c3]);
    if length == 0 {
        return Ok(Step::Damaged(CorruptReason::ZeroLength));
    }
    if length as usize > RECORD_BYTES_MAX {
        return Ok(Step::Damaged(CorruptReason::LengthTooLarge(length)));
    }
    payload.clear();
    payload.resize(length as usize, 0);
    if read_full(reader, payload)? < payload.len() {
        return Ok(Step::Damaged(CorruptReason::Truncated));
    }
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Ok(Step::Damaged(CorruptReason::ChecksumMismatch {
            stored,
            computed,
        }));
    }
    Ok(match decode_payload(payload) {
        Ok(record) => Step::Record {
            record,
            frame_bytes: (FRAME_HEADER_BYTES + payload.len()) as u64,
        },
        Err(error) => Step::Damaged(CorruptReason::Decode(error)),
    })
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

/// Files of the offsets directory, sorted out by role.
#[derive(Debug, Default)]
struct Listing {
    logs: Vec<u64>,
    snapshots: Vec<u64>,
    tmp_files: Vec<PathBuf>,
}

fn list(dir: &Path) -> Result<Listing, Error> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
            listing.tmp_files.push(entry.path());
            continue;
        }
        let Some((digits, extension)) = name.split_once('.') else {
            continue;
        };
        if digits.len() != GENERATION_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            continue;
        }
        let Ok(generation) = digits.parse::<u64>() else {
            continue;
        };
        match extension {
            LOG_EXTENSION => listing.logs.push(generation),
            SNAPSHOT_EXTENSION => listing.snapshots.push(generation),
            _ => {}
        }
    }
    listing.logs.sort_unstable();
    listing.snapshots.sort_unstable();
    Ok(listing)
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    shardline_durable::sync_dir(dir).map_err(Error::from)
}

/// Creates (or empties) a log holding only a header, and fsyncs it.
fn create_log(path: &Path) -> Result<File, Error> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(Error::io(path))?;
    file.write_all(&encode_header(FileKind::Log, 0))
        .and_then(|()| file.sync_all())
        .map_err(Error::io(path))?;
    drop(file);
    open_for_append(path)
}

fn open_for_append(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(Error::io(path))
}

/// Checks a header read from `path` against the kind its name promises.
fn check_header(path: &Path, bytes: &[u8], kind: FileKind) -> Result<Header, Error> {
    let corrupt = |reason| Error::CorruptOffsets {
        path: path.to_path_buf(),
        position: 0,
        reason,
    };
    let header = decode_header(bytes).map_err(corrupt)?;
    if header.format_version != OFFSETS_FORMAT_VERSION {
        return Err(Error::UnknownVersion {
            path: path.to_path_buf(),
            found: header.format_version,
            supported: OFFSETS_FORMAT_VERSION,
        });
    }
    if header.kind != kind.code() {
        return Err(corrupt(CorruptReason::WrongKind {
            expected: kind.code(),
            found: header.kind,
        }));
    }
    Ok(header)
}

/// Replays a snapshot into an empty `map`; returns the live bytes it holds. Any damage is
/// an error: a snapshot is fsynced before it is renamed into place, so it cannot be torn.
fn replay_snapshot(path: &Path, map: &mut OffsetMap) -> Result<u64, Error> {
    let file = File::open(path).map_err(Error::io(path))?;
    let mut reader = BufReader::new(file);
    let mut header = [0; HEADER_BYTES];
    let header_len = read_full(&mut reader, &mut header).map_err(Error::io(path))?;
    let header = check_header(path, &header[..header_len], FileKind::Snapshot)?;
    let mut payload = Vec::new();
    let mut position = HEADER_BYTES as u64;
    let mut found = 0;
    let mut live_bytes = 0;
    loop {
        match read_record(&mut reader, &mut payload).map_err(Error::io(path))? {
            Step::Record {
                record,
                frame_bytes,
            } => {
                let (added, removed) = apply_counting(map, &record);
                live_bytes = (live_bytes + added).saturating_sub(removed);
                position += frame_bytes;
                found += 1;
            }
            Step::End => break,
            Step::Damaged(reason) => {
                return Err(Error::CorruptOffsets {
                    path: path.to_path_buf(),
                    position,
                    reason,
                });
            }
        }
    }
    if found != header.record_count {
        return Err(Error::CorruptOffsets {
            path: path.to_path_buf(),
            position,
            reason: CorruptReason::CountMismatch {
                expected: header.record_count,
                found,
            },
        });
    }
    Ok(live_bytes)
}

/// What replaying a log found.
#[derive(Debug)]
enum LogReplay {
    /// Records up to `valid_bytes` were applied; anything after was truncated.
    Replayed { valid_bytes: u64 },
    /// The newest log's header was torn while it was being created: it holds nothing.
    TornHeader,
}

/// Replays a log into `map`. Only the newest log (`newest`) may have a torn tail, which is
/// truncated; damage in an older one is an error.
fn replay_log(
    path: &Path,
    newest: bool,
    map: &mut OffsetMap,
    live_bytes: &mut u64,
) -> Result<LogReplay, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(newest)
        .open(path)
        .map_err(Error::io(path))?;
    let file_bytes = file.metadata().map_err(Error::io(path))?.len();
    let mut reader = BufReader::new(&file);
    let mut header = [0; HEADER_BYTES];
    let header_len = read_full(&mut reader, &mut header).map_err(Error::io(path))?;
    if newest && file_bytes <= HEADER_BYTES as u64 && decode_header(&header[..header_len]).is_err()
    {
        // The header is fsynced before any record is written, so a bad header with nothing
        // after it is a creation cut short, not lost data.
        return Ok(LogReplay::TornHeader);
    }
    check_header(path, &header[..header_len], FileKind::Log)?;
    let mut payload = Vec::new();
    let mut position = HEADER_BYTES as u64;
    loop {
        match read_record(&mut reader, &mut payload).map_err(Error::io(path))? {
            Step::Record {
                record,
                frame_bytes,
            } => {
                let (added, removed) = apply_counting(map, &record);
                *live_bytes = (*live_bytes + added).saturating_sub(removed);
                position += frame_bytes;
            }
            Step::End => break,
            Step::Damaged(reason) if newest => {
                warn!(
                    file = %path.display(),
                    position,
                    bytes_dropped = file_bytes - position,
                    %reason,
                    "truncating torn or corrupt tail of the offsets log"
                );
                drop(reader);
                file.set_len(position)
                    .and_then(|()| file.sync_all())
                    .map_err(Error::io(path))?;
                break;
            }
            Step::Damaged(reason) => {
                return Err(Error::CorruptOffsets {
                    path: path.to_path_buf(),
                    position,
                    reason,
                });
            }
        }
    }
    Ok(LogReplay::Replayed {
        valid_bytes: position,
    })
}

fn remove_file(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(Error::io(path)(error)),
        _ => Ok(()),
    }
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

#[cfg(test)]
mod tests;
