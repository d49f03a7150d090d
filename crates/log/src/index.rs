//! The sparse offset index and time index of one segment: the in-memory form used for
//! lookups and the one place that encodes and decodes their files.
//!
//! Both indexes get an entry for the same batches: the first batch written after at least
//! `index_interval_bytes` of batches since the previous entry. The batch at position 0
//! is never indexed; a lookup that finds no entry starts at the segment's beginning.
//!
//! ```text
//! .index / .timeindex file
//! offset  size  field
//!      0     4  magic            "SLOI" (offset index) or "SLTI" (time index)
//!      4     2  version          1
//!      6     2  flags            bit 0: max_timestamp is set
//!      8     8  base_offset      the segment's first offset
//!     16     8  next_offset      one past the segment's last offset
//!     24     8  log_size_bytes   length of the .log file these entries describe
//!     32     8  created_ms       when the segment's age started counting
//!     40     8  max_timestamp    largest batch max_timestamp in the segment
//!     48     8  checksum         FNV-1a 64 of every other byte of the file
//!     56     …  entries
//!
//! offset index entry (8 bytes)         time index entry (12 bytes)
//!      0     4  relative offset             0     8  max timestamp so far
//!      4     4  position in .log            8     4  relative offset
//! ```
//!
//! Integers are big-endian. A relative offset is the batch's base offset minus the
//! segment's. "Max timestamp so far" is the largest `max_timestamp` of the batches up to
//! and including the one indexed, so time entries never decrease.
//!
//! The files are written atomically when a segment is sealed (rolled) or the log is
//! closed, and also, best effort, when a segment is created: that header-only copy lets
//! `created_ms` survive a crash of the active segment.
//!
//! The header repeats the segment's summary so that a sealed segment opens without
//! reading its `.log`, and so that an index written for a different length of `.log`
//! (e.g. a crash after appends) is recognised as stale and rebuilt instead of trusted.

use std::fmt;

use crate::entries::Entries;

/// Size of the file header before the entries.
const FILE_HEADER_LEN: usize = 56;
const VERSION: u16 = 1;
const FLAG_HAS_MAX_TIMESTAMP: u16 = 1;
const CHECKSUM_AT: usize = 48;

/// One offset-index entry: the batch starting at `position` has base offset
/// `segment base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
}

/// One time-index entry: no batch before `relative_offset` (nor that batch itself) has a
/// timestamp above `timestamp_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp_ms: i64,
    pub(crate) relative_offset: u32,
}

/// What an index file's header records about its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub(crate) base_offset: u64,
    pub(crate) next_offset: u64,
    pub(crate) log_size_bytes: u64,
    pub(crate) created_ms: i64,
    pub(crate) max_timestamp: Option<i64>,
}

/// Why an index file was not usable (the log then rebuilds it; a remote reader reports
/// the remote copy as corrupt).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexFileError {
    #[error("index file is {0} bytes, shorter than its header")]
    Short(usize),
    #[error("index file has the wrong magic bytes")]
    BadMagic,
    #[error("index file version {0} is not supported")]
    UnsupportedVersion(u16),
    #[error("index file has unknown flags {0:#06x}")]
    UnknownFlags(u16),
    #[error("index file checksum mismatch")]
    ChecksumMismatch,
    #[error("index file entries are {0} bytes, not a whole number of entries")]
    PartialEntry(usize),
    #[error("index file summary is inconsistent")]
    BadSummary,
    #[error("index entry {0} is out of order or out of range")]
    BadEntry(usize),
}

/// The two entry formats, so that header handling and validation are written once.
trait Entry: Copy {
    const MAGIC: [u8; 4];
    const LEN: usize;
    fn relative_offset(&self) -> u32;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Self;
    /// Whether `self` may follow `previous` and belongs to a segment summarised by `summary`.
    fn follows(&self, previous: Option<&Self>, summary: &SegmentSummary) -> bool;
}

impl Entry for OffsetEntry {
    const MAGIC: [u8; 4] = *b"SLOI";
    const LEN: usize = 8;

    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> OffsetEntry {
        OffsetEntry {
            relative_offset: be_u32(&bytes[0..4]),
            position: be_u32(&bytes[4..8]),
        }
    }

    fn follows(&self, previous: Option<&OffsetEntry>, summary: &SegmentSummary) -> bool {
        u64::from(self.position) < summary.log_size_bytes
            && previous.is_none_or(|previous| previous.position < self.position)
    }
}

impl Entry for TimeEntry {
    const MAGIC: [u8; 4] = *b"SLTI";
    const LEN: usize = 12;

    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> TimeEntry {
        TimeEntry {
            timestamp_ms: be_i64(&bytes[0..8]),
            relative_offset: be_u32(&bytes[8..12]),
        }
    }

    fn follows(&self, previous: Option<&TimeEntry>, summary: &SegmentSummary) -> bool {
        summary
            .max_timestamp
            .is_some_and(|max| self.timestamp_ms <= max)
            && previous.is_none_or(|previous| previous.timestamp_ms <= self.timestamp_ms)
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(bytes);
    u32::from_be_bytes(raw)
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(bytes);
    u64::from_be_bytes(raw)
}

fn be_i64(bytes: &[u8]) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(bytes);
    i64::from_be_bytes(raw)
}

/// FNV-1a 64: no dependency, and enough to notice a damaged or half-written file
/// (the files are replaced atomically, so this guards against bit rot, not attacks).
fn checksum(bytes: &[u8]) -> u64 {
    let skipped = CHECKSUM_AT..CHECKSUM_AT + 8;
    bytes
        .iter()
        .enumerate()
        .filter(|(at, _)| !skipped.contains(at))
        .fold(0xcbf2_9ce4_8422_2325, |hash, (_, byte)| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

fn encode<E: Entry>(summary: &SegmentSummary, entries: &[E]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + entries.len() * E::LEN);
    out.extend_from_slice(&E::MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    let flags = if summary.max_timestamp.is_some() {
        FLAG_HAS_MAX_TIMESTAMP
    } else {
        0
    };
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&summary.base_offset.to_be_bytes());
    out.extend_from_slice(&summary.next_offset.to_be_bytes());
    out.extend_from_slice(&summary.log_size_bytes.to_be_bytes());
    out.extend_from_slice(&summary.created_ms.to_be_bytes());
    out.extend_from_slice(&summary.max_timestamp.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&[0u8; 8]);
    for entry in entries {
        entry.encode(&mut out);
    }
    let sum = checksum(&out);
    out[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&sum.to_be_bytes());
    out
}

fn decode<E: Entry>(bytes: &[u8]) -> Result<(SegmentSummary, Vec<E>), IndexFileError> {
    if bytes.len() < FILE_HEADER_LEN {
        return Err(IndexFileError::Short(bytes.len()));
    }
    if bytes[0..4] != E::MAGIC {
        return Err(IndexFileError::BadMagic);
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(IndexFileError::UnsupportedVersion(version));
    }
    let flags = u16::from_be_bytes([bytes[6], bytes[7]]);
    if flags & !FLAG_HAS_MAX_TIMESTAMP != 0 {
        return Err(IndexFileError::UnknownFlags(flags));
    }
    if be_u64(&bytes[CHECKSUM_AT..CHECKSUM_AT + 8]) != checksum(bytes) {
        return Err(IndexFileError::ChecksumMismatch);
    }
    let entry_bytes = bytes.len() - FILE_HEADER_LEN;
    if !entry_bytes.is_multiple_of(E::LEN) {
        return Err(IndexFileError::PartialEntry(entry_bytes));
    }
    let summary = SegmentSummary {
        base_offset: be_u64(&bytes[8..16]),
        next_offset: be_u64(&bytes[16..24]),
        log_size_bytes: be_u64(&bytes[24..32]),
        created_ms: be_i64(&bytes[32..40]),
        max_timestamp: (flags & FLAG_HAS_MAX_TIMESTAMP != 0).then(|| be_i64(&bytes[40..48])),
    };
    if !summary_is_sane(&summary) {
        return Err(IndexFileError::BadSummary);
    }
    let offsets_held = summary.next_offset - summary.base_offset;
    let mut entries: Vec<E> = Vec::with_capacity(entry_bytes / E::LEN);
    for (number, raw) in bytes[FILE_HEADER_LEN..].chunks_exact(E::LEN).enumerate() {
        let entry = E::decode(raw);
        let previous = entries.last();
        let in_range = u64::from(entry.relative_offset()) < offsets_held;
        let ascending =
            previous.is_none_or(|previous| previous.relative_offset() < entry.relative_offset());
        if !(in_range && ascending && entry.follows(previous, &summary)) {
            return Err(IndexFileError::BadEntry(number));
        }
        entries.push(entry);
    }
    Ok((summary, entries))
}

fn summary_is_sane(summary: &SegmentSummary) -> bool {
    let Some(offsets_held) = summary.next_offset.checked_sub(summary.base_offset) else {
        return false;
    };
    let empty = summary.log_size_bytes == 0;
    summary.log_size_bytes <= u64::from(u32::MAX)
        && offsets_held <= u64::from(u32::MAX) + 1
        && empty == (offsets_held == 0)
        && empty == summary.max_timestamp.is_none()
}

/// Encodes an `.index` file.
pub(crate) fn encode_offset_index(summary: &SegmentSummary, entries: &[OffsetEntry]) -> Vec<u8> {
    encode(summary, entries)
}

/// Decodes and validates an `.index` file.
pub(crate) fn decode_offset_index(
    bytes: &[u8],
) -> Result<(SegmentSummary, Vec<OffsetEntry>), IndexFileError> {
    decode(bytes)
}

/// Encodes a `.timeindex` file.
pub(crate) fn encode_time_index(summary: &SegmentSummary, entries: &[TimeEntry]) -> Vec<u8> {
    encode(summary, entries)
}

/// A validated `.index` file as seen by readers outside this crate (the tier reads the
/// remote copies of sealed segments): the header's summary of the segment and the
/// offset lookups the log itself uses. Decoding stays here, with the format's one owner.
#[derive(Clone, PartialEq, Eq)]
pub struct OffsetIndexFile {
    /// The segment's first offset.
    pub base_offset: u64,
    /// One past the segment's last offset.
    pub next_offset: u64,
    /// Length of the `.log` file the entries describe.
    pub log_size_bytes: u64,
    /// Largest batch `max_timestamp` in the segment; `None` if it is empty.
    pub max_timestamp: Option<i64>,
    entries: Vec<OffsetEntry>,
}

impl fmt::Debug for OffsetIndexFile {
    // Entry lists can be long; show their size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OffsetIndexFile")
            .field("base_offset", &self.base_offset)
            .field("next_offset", &self.next_offset)
            .field("log_size_bytes", &self.log_size_bytes)
            .field("max_timestamp", &self.max_timestamp)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl OffsetIndexFile {
    /// Decodes and validates the bytes of an `.index` file.
    pub fn decode(bytes: &[u8]) -> Result<OffsetIndexFile, IndexFileError> {
        let (summary, entries) = decode_offset_index(bytes)?;
        Ok(OffsetIndexFile {
            base_offset: summary.base_offset,
            next_offset: summary.next_offset,
            log_size_bytes: summary.log_size_bytes,
            max_timestamp: summary.max_timestamp,
            entries,
        })
    }

    /// Number of entries (indexed batches).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Where to start walking to find the batch holding `relative_offset`: the last
    /// indexed batch starting at or before it, as (relative offset, position).
    pub fn floor_of_offset(&self, relative_offset: u64) -> (u64, u64) {
        floor_of_offset(&self.entries[..], relative_offset)
    }

    /// A position from which on every batch has a relative offset of at least
    /// `relative_offset`, if the index knows one.
    pub fn position_bound(&self, relative_offset: u64) -> Option<u64> {
        position_bound(&self.entries[..], relative_offset)
    }
}

/// What the lookups need of a sorted entry list: a slice (a decoded file) or
/// [`Entries`] (a live index).
trait Sorted<T> {
    fn partition_point(&self, pred: impl FnMut(&T) -> bool) -> usize;
    fn get(&self, at: usize) -> Option<&T>;
}

impl<T> Sorted<T> for [T] {
    fn partition_point(&self, pred: impl FnMut(&T) -> bool) -> usize {
        <[T]>::partition_point(self, pred)
    }

    fn get(&self, at: usize) -> Option<&T> {
        <[T]>::get(self, at)
    }
}

impl<T: Copy> Sorted<T> for Entries<T> {
    fn partition_point(&self, pred: impl FnMut(&T) -> bool) -> usize {
        Entries::partition_point(self, pred)
    }

    fn get(&self, at: usize) -> Option<&T> {
        Entries::get(self, at)
    }
}

fn floor_of_offset(
    entries: &(impl Sorted<OffsetEntry> + ?Sized),
    relative_offset: u64,
) -> (u64, u64) {
    let after =
        entries.partition_point(|entry| u64::from(entry.relative_offset) <= relative_offset);
    match after.checked_sub(1).and_then(|at| entries.get(at)) {
        Some(entry) => (u64::from(entry.relative_offset), u64::from(entry.position)),
        None => (0, 0),
    }
}

fn position_bound(
    entries: &(impl Sorted<OffsetEntry> + ?Sized),
    relative_offset: u64,
) -> Option<u64> {
    let at = entries.partition_point(|entry| u64::from(entry.relative_offset) < relative_offset);
    entries.get(at).map(|entry| u64::from(entry.position))
}

/// Decodes and validates a `.timeindex` file.
pub(crate) fn decode_time_index(
    bytes: &[u8],
) -> Result<(SegmentSummary, Vec<TimeEntry>), IndexFileError> {
    decode(bytes)
}

/// A segment's two sparse indexes in memory, grown batch by batch as the segment is
/// written (or rebuilt by a scan, which uses the same rule, so both give equal indexes).
/// A clone is cheap and does not change when the original grows: it is what a reader's
/// snapshot of the log holds.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    interval_bytes: u64,
    offsets: Entries<OffsetEntry>,
    times: Entries<TimeEntry>,
    /// Bytes of batches since (and including) the last indexed batch.
    bytes_since_entry: u64,
    /// Largest batch `max_timestamp` seen so far.
    max_timestamp: Option<i64>,
}

impl fmt::Debug for SegmentIndex {
    // The entry lists can hold hundreds of thousands of entries; show their size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentIndex")
            .field("interval_bytes", &self.interval_bytes)
            .field("offset_entries", &self.offsets.len())
            .field("time_entries", &self.times.len())
            .field("max_timestamp", &self.max_timestamp)
            .finish()
    }
}

impl SegmentIndex {
    /// An index for an empty segment.
    pub(crate) fn new(interval_bytes: u32) -> SegmentIndex {
        SegmentIndex {
            interval_bytes: u64::from(interval_bytes),
            offsets: Entries::default(),
            times: Entries::default(),
            bytes_since_entry: 0,
            max_timestamp: None,
        }
    }

    /// An index loaded from files whose summaries were checked against the segment.
    pub(crate) fn from_entries(
        interval_bytes: u32,
        summary: &SegmentSummary,
        offsets: Vec<OffsetEntry>,
        times: Vec<TimeEntry>,
    ) -> SegmentIndex {
        // Appends after a reload must index as if the segment had been written in one go.
        let last_position = offsets.last().map_or(0, |entry| u64::from(entry.position));
        SegmentIndex {
            interval_bytes: u64::from(interval_bytes),
            offsets: Entries::from_vec(offsets),
            times: Entries::from_vec(times),
            bytes_since_entry: summary.log_size_bytes - last_position,
            max_timestamp: summary.max_timestamp,
        }
    }

    /// Records a batch just written at `position`.
    pub(crate) fn observe(
        &mut self,
        relative_offset: u32,
        position: u32,
        batch_bytes: u64,
        max_timestamp: i64,
    ) {
        let so_far = self
            .max_timestamp
            .map_or(max_timestamp, |max| max.max(max_timestamp));
        self.max_timestamp = Some(so_far);
        if position > 0 && self.bytes_since_entry >= self.interval_bytes {
            self.offsets.push(OffsetEntry {
                relative_offset,
                position,
            });
            self.times.push(TimeEntry {
                timestamp_ms: so_far,
                relative_offset,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += batch_bytes;
    }

    /// Largest batch `max_timestamp` in the segment, if it has batches.
    pub(crate) fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp
    }

    pub(crate) fn offset_entries(&self) -> Vec<OffsetEntry> {
        self.offsets.iter().copied().collect()
    }

    pub(crate) fn time_entries(&self) -> Vec<TimeEntry> {
        self.times.iter().copied().collect()
    }

    /// Where to start walking to find the batch holding `relative_offset`: the last
    /// indexed batch starting at or before it, as (relative offset, position).
    pub(crate) fn floor_of_offset(&self, relative_offset: u64) -> (u64, u64) {
        floor_of_offset(&self.offsets, relative_offset)
    }

    /// A position from which on every batch has a relative offset of at least
    /// `relative_offset`, if the index knows one: a read that stops before that offset
    /// need not look past it.
    pub(crate) fn position_bound(&self, relative_offset: u64) -> Option<u64> {
        position_bound(&self.offsets, relative_offset)
    }

    /// Where to start walking to find the first batch whose `max_timestamp >= timestamp_ms`,
    /// as (relative offset, position): every batch before it has a smaller timestamp.
    pub(crate) fn floor_of_timestamp(&self, timestamp_ms: i64) -> (u64, u64) {
        let after = self
            .times
            .partition_point(|entry| entry.timestamp_ms < timestamp_ms);
        match after.checked_sub(1).and_then(|at| self.times.get(at)) {
            Some(entry) => self.floor_of_offset(u64::from(entry.relative_offset)),
            None => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn summary() -> SegmentSummary {
        SegmentSummary {
            base_offset: 1000,
            next_offset: 1100,
            log_size_bytes: 50_000,
            created_ms: 1_700_000_000_000,
            max_timestamp: Some(1_700_000_000_500),
        }
    }

    fn offsets() -> Vec<OffsetEntry> {
        vec![
            OffsetEntry {
                relative_offset: 10,
                position: 4100,
            },
            OffsetEntry {
                relative_offset: 55,
                position: 20_000,
            },
        ]
    }

    fn times() -> Vec<TimeEntry> {
        vec![
            TimeEntry {
                timestamp_ms: 1_700_000_000_100,
                relative_offset: 10,
            },
            TimeEntry {
                timestamp_ms: 1_700_000_000_100,
                relative_offset: 55,
            },
        ]
    }

    #[test]
    fn offset_index_round_trips() {
        let bytes = encode_offset_index(&summary(), &offsets());
        assert_eq!(bytes.len(), FILE_HEADER_LEN + 2 * 8);
        assert_eq!(&bytes[0..4], b"SLOI");
        assert_eq!(decode_offset_index(&bytes), Ok((summary(), offsets())));
    }

    #[test]
    fn time_index_round_trips() {
        let bytes = encode_time_index(&summary(), &times());
        assert_eq!(bytes.len(), FILE_HEADER_LEN + 2 * 12);
        assert_eq!(&bytes[0..4], b"SLTI");
        assert_eq!(decode_time_index(&bytes), Ok((summary(), times())));
    }

    #[test]
    fn the_public_decoder_agrees_with_the_lookups() {
        let file = OffsetIndexFile::decode(&encode_offset_index(&summary(), &offsets())).unwrap();
        assert_eq!(
            (file.base_offset, file.next_offset, file.log_size_bytes),
            (1000, 1100, 50_000)
        );
        assert_eq!(file.max_timestamp, Some(1_700_000_000_500));
        assert_eq!(file.entry_count(), 2);
        assert_eq!(file.floor_of_offset(9), (0, 0));
        assert_eq!(file.floor_of_offset(10), (10, 4100));
        assert_eq!(file.floor_of_offset(99), (55, 20_000));
        assert_eq!(file.position_bound(11), Some(20_000));
        assert_eq!(file.position_bound(56), None);
        assert_eq!(
            OffsetIndexFile::decode(b"not an index"),
            Err(IndexFileError::Short(12))
        );
    }

    #[test]
    fn an_empty_segment_round_trips() {
        let empty = SegmentSummary {
            base_offset: 7,
            next_offset: 7,
            log_size_bytes: 0,
            created_ms: -5,
            max_timestamp: None,
        };
        let bytes = encode_offset_index(&empty, &[]);
        assert_eq!(decode_offset_index(&bytes), Ok((empty, vec![])));
    }

    #[test]
    fn the_two_formats_are_not_confused() {
        let bytes = encode_offset_index(&summary(), &offsets());
        assert_eq!(decode_time_index(&bytes), Err(IndexFileError::BadMagic));
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode_time_index(&summary(), &times());
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x20;
            assert!(decode_time_index(&damaged).is_err(), "flip at {at}");
        }
        for len in 0..bytes.len() {
            assert!(decode_time_index(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut newer = bytes.clone();
        newer[5] = 2;
        let sum = checksum(&newer);
        newer[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            decode_time_index(&newer),
            Err(IndexFileError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn entries_must_be_ordered_and_in_range() {
        let mut backwards = offsets();
        backwards.reverse();
        assert_eq!(
            decode_offset_index(&encode_offset_index(&summary(), &backwards)),
            Err(IndexFileError::BadEntry(1))
        );
        let past_end = [OffsetEntry {
            relative_offset: 1,
            position: 50_000,
        }];
        assert!(decode_offset_index(&encode_offset_index(&summary(), &past_end)).is_err());
        let too_new = [TimeEntry {
            timestamp_ms: 1_700_000_000_501,
            relative_offset: 3,
        }];
        assert!(decode_time_index(&encode_time_index(&summary(), &too_new)).is_err());
        let beyond_next = [TimeEntry {
            timestamp_ms: 0,
            relative_offset: 100,
        }];
        assert!(decode_time_index(&encode_time_index(&summary(), &beyond_next)).is_err());
    }

    #[test]
    fn observe_indexes_every_interval_and_lookups_floor() {
        let mut index = SegmentIndex::new(100);
        // Batches of 60 bytes and 2 offsets each; timestamps go up and down.
        let timestamps = [50, 40, 70, 60, 90, 80, 100, 10];
        for (number, timestamp) in timestamps.into_iter().enumerate() {
            index.observe(number as u32 * 2, number as u32 * 60, 60, timestamp);
        }
        // Entries at batches 2 (120 bytes since 0), 4 and 6.
        assert_eq!(
            index.offset_entries(),
            &[
                OffsetEntry {
                    relative_offset: 4,
                    position: 120
                },
                OffsetEntry {
                    relative_offset: 8,
                    position: 240
                },
                OffsetEntry {
                    relative_offset: 12,
                    position: 360
                },
            ]
        );
        let so_far: Vec<i64> = index
            .time_entries()
            .iter()
            .map(|e| e.timestamp_ms)
            .collect();
        assert_eq!(so_far, vec![70, 90, 100]);
        assert_eq!(index.max_timestamp(), Some(100));
        assert_eq!(index.floor_of_offset(3), (0, 0));
        assert_eq!(index.floor_of_offset(4), (4, 120));
        assert_eq!(index.floor_of_offset(11), (8, 240));
        assert_eq!(index.floor_of_offset(99), (12, 360));
        assert_eq!(index.position_bound(0), Some(120));
        assert_eq!(index.position_bound(5), Some(240));
        assert_eq!(index.position_bound(13), None);
        // First batch with max_timestamp >= 75 is batch 4 (90); start from entry at 4.
        assert_eq!(index.floor_of_timestamp(75), (4, 120));
        assert_eq!(index.floor_of_timestamp(70), (0, 0));
        assert_eq!(index.floor_of_timestamp(95), (8, 240));
        assert_eq!(index.floor_of_timestamp(1000), (12, 360));
    }

    #[test]
    fn a_reloaded_index_keeps_indexing_where_it_left_off() {
        let batches: Vec<(u32, u32, u64, i64)> =
            (0..20).map(|n| (n * 3, n * 45, 45, i64::from(n))).collect();
        let mut whole = SegmentIndex::new(128);
        for &(relative, position, len, ts) in &batches {
            whole.observe(relative, position, len, ts);
        }
        let mut first_half = SegmentIndex::new(128);
        for &(relative, position, len, ts) in &batches[..11] {
            first_half.observe(relative, position, len, ts);
        }
        let summary = SegmentSummary {
            base_offset: 0,
            next_offset: 33,
            log_size_bytes: 11 * 45,
            created_ms: 0,
            max_timestamp: first_half.max_timestamp(),
        };
        let mut reloaded = SegmentIndex::from_entries(
            128,
            &summary,
            first_half.offset_entries().to_vec(),
            first_half.time_entries().to_vec(),
        );
        for &(relative, position, len, ts) in &batches[11..] {
            reloaded.observe(relative, position, len, ts);
        }
        assert_eq!(reloaded, whole);
    }

    fn arbitrary_index() -> impl Strategy<Value = (SegmentSummary, Vec<OffsetEntry>, Vec<TimeEntry>)>
    {
        (
            0u64..1 << 40,
            (1u64 << 20)..=(1u64 << 32),
            64u64..u64::from(u32::MAX),
            any::<i64>(),
            proptest::collection::btree_set(0u32..1 << 20, 0..40),
            any::<i64>(),
        )
            .prop_map(|(base, held, size, created, relatives, max)| {
                let relatives: Vec<u32> = relatives.into_iter().collect();
                let count = relatives.len() as u64;
                let offsets = relatives
                    .iter()
                    .enumerate()
                    .map(|(n, &relative_offset)| OffsetEntry {
                        relative_offset,
                        position: ((n as u64 + 1) * (size / (count + 1))) as u32,
                    })
                    .collect();
                let times = relatives
                    .iter()
                    .enumerate()
                    .map(|(n, &relative_offset)| TimeEntry {
                        timestamp_ms: max.saturating_sub((count - n as u64) as i64),
                        relative_offset,
                    })
                    .collect();
                let summary = SegmentSummary {
                    base_offset: base,
                    next_offset: base + held,
                    log_size_bytes: size,
                    created_ms: created,
                    max_timestamp: Some(max),
                };
                (summary, offsets, times)
            })
    }

    proptest! {
        #[test]
        fn both_formats_round_trip((summary, offsets, times) in arbitrary_index()) {
            let offset_file = encode_offset_index(&summary, &offsets);
            prop_assert_eq!(decode_offset_index(&offset_file), Ok((summary, offsets)));
            let time_file = encode_time_index(&summary, &times);
            prop_assert_eq!(decode_time_index(&time_file), Ok((summary, times)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_offset_index(&bytes);
            let _ = decode_time_index(&bytes);
        }
    }
}
