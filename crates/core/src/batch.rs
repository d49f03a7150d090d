//! The Kafka v2 record-batch header, the unit the log stores.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset            written by the broker, not covered by the CRC
//!      8     4  batch_length           bytes after this field
//!     12     4  partition_leader_epoch written by the broker (0), not covered by the CRC
//!     16     1  magic                  must be 2
//!     17     4  crc                    CRC-32C of bytes 21..end
//!     21     2  attributes             bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control
//!     23     4  last_offset_delta
//!     27     8  base_timestamp
//!     35     8  max_timestamp
//!     43     8  producer_id
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  record_count
//!     61     …  records (compressed or not; the log never looks inside)
//! ```
//!
//! All integers are big-endian. Parsing never allocates, and "the buffer ends before the
//! batch does" is reported as [`BatchError::Incomplete`] so that callers reading a log
//! tail can tell a torn write from corruption.
//!
//! What is inside the records section (records, codecs) is `shardline-records`' business.

/// Bytes before `batch_length` counts: base offset (8) and the length itself (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 header, up to and including `record_count`.
pub const HEADER_LEN: usize = 61;
/// Where the CRC-covered part of a batch starts.
const CRC_START: usize = 21;
/// The only record-batch format Shardline accepts.
pub const MAGIC_V2: i8 = 2;

/// A batch's header failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The buffer holds fewer bytes than the batch needs; more may arrive (a torn tail).
    #[error("batch incomplete: need {needed} bytes, have {available}")]
    Incomplete {
        /// Bytes the batch needs in total.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// `batch_length` is too small to hold a v2 header.
    #[error("batch length {0} is smaller than a v2 header")]
    LengthTooSmall(i32),
    /// The magic byte is not 2 (message sets v0/v1 are not supported).
    #[error("unsupported record batch magic {0}; only v2 batches are accepted")]
    UnsupportedMagic(i8),
    /// The stored CRC does not match the bytes.
    #[error("record batch CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        expected: u32,
        /// CRC computed over the bytes.
        actual: u32,
    },
    /// `record_count` disagrees with `last_offset_delta + 1`, or is negative.
    #[error("record batch claims {record_count} records but last offset delta {last_offset_delta}")]
    CountMismatch {
        /// `record_count` field.
        record_count: i32,
        /// `last_offset_delta` field.
        last_offset_delta: i32,
    },
}

/// Compression codec named in a batch's attributes. Shardline stores every codec verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy (Xerial framing or raw).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
    /// A codec id Kafka does not define (5, 6 or 7).
    Unknown(u8),
}

/// The decoded fixed header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (as written by the broker, or by the client before that).
    pub base_offset: i64,
    /// Bytes after the length field.
    pub batch_length: i32,
    /// Leader epoch (always 0 once stored).
    pub partition_leader_epoch: i32,
    /// Format version; 2.
    pub magic: i8,
    /// CRC-32C of bytes 21..end.
    pub crc: u32,
    /// Codec, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}

fn be_i32(bytes: &[u8], at: usize) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(raw)
}

fn be_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

impl BatchHeader {
    /// Parses the fixed header at the start of `bytes`, checking only what the header
    /// alone can tell: enough bytes for the whole batch, a sane length, and the magic.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < LOG_OVERHEAD {
            return Err(BatchError::Incomplete {
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        }
        let batch_length = be_i32(bytes, 8);
        // The length counts everything after itself, so a v2 header needs at least 49.
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::LengthTooSmall(batch_length));
        }
        if bytes.len() < 17 {
            return Err(BatchError::Incomplete {
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        }
        let magic = bytes[16] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::Incomplete {
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        }
        let header = BatchHeader {
            base_offset: be_i64(bytes, 0),
            batch_length,
            partition_leader_epoch: be_i32(bytes, 12),
            magic,
            crc: be_i32(bytes, 17) as u32,
            attributes: be_i16(bytes, 21),
            last_offset_delta: be_i32(bytes, 23),
            base_timestamp: be_i64(bytes, 27),
            max_timestamp: be_i64(bytes, 35),
            producer_id: be_i64(bytes, 43),
            producer_epoch: be_i16(bytes, 51),
            base_sequence: be_i32(bytes, 53),
            record_count: be_i32(bytes, 57),
        };
        if bytes.len() < header.total_len() {
            return Err(BatchError::Incomplete {
                needed: header.total_len(),
                available: bytes.len(),
            });
        }
        Ok(header)
    }

    /// Parses the header and verifies the CRC and the record count: what a batch must
    /// pass before it is stored, and again whenever it is read back from disk.
    pub fn parse_and_verify(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let header = BatchHeader::parse(bytes)?;
        let actual = crc32c::crc32c(&bytes[CRC_START..header.total_len()]);
        if actual != header.crc {
            return Err(BatchError::CrcMismatch {
                expected: header.crc,
                actual,
            });
        }
        if header.record_count < 0
            || header.last_offset_delta < 0
            || header.record_count != header.last_offset_delta.saturating_add(1)
        {
            return Err(BatchError::CountMismatch {
                record_count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        Ok(header)
    }

    /// Size of the whole batch in bytes, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Sequence number of the last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }

    /// The compression codec.
    pub fn compression(&self) -> Compression {
        match self.attributes & 0x07 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other as u8),
        }
    }

    /// Whether timestamps are LogAppendTime (bit 3) rather than CreateTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & 0x08 != 0
    }

    /// Whether the batch belongs to a transaction (bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// Whether the batch is a control batch (bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Whether the batch was written by an idempotent producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Writes the broker-assigned base offset and leader epoch 0 into a batch in place.
///
/// Neither field is covered by the CRC, so the client's checksum stays valid.
pub fn assign_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&0i32.to_be_bytes());
}

/// Computes and writes the CRC of a batch whose other fields are final (for batches the
/// server builds itself and for tests).
pub fn write_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates over the batches in a buffer of concatenated batches, yielding each header
/// with the byte range it occupies. Stops at the first error, which it yields.
#[derive(Debug)]
pub struct Batches<'a> {
    bytes: &'a [u8],
    position: usize,
    verify: bool,
    failed: bool,
}

impl<'a> Batches<'a> {
    /// Walks `bytes`; with `verify`, each batch's CRC and count are checked too.
    pub fn new(bytes: &'a [u8], verify: bool) -> Batches<'a> {
        Batches {
            bytes,
            position: 0,
            verify,
            failed: false,
        }
    }

    /// Where the next batch starts (after iteration: the end of the last good batch).
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<(BatchHeader, std::ops::Range<usize>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.position..];
        let parsed = if self.verify {
            BatchHeader::parse_and_verify(rest)
        } else {
            BatchHeader::parse(rest)
        };
        match parsed {
            Ok(header) => {
                let range = self.position..self.position + header.total_len();
                self.position = range.end;
                Some(Ok((header, range)))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A batch whose header is valid and whose records section is just `values` end to
    /// end: enough for header tests, which never look inside records (real record
    /// encoding is `shardline-records`, which depends on this crate).
    fn build_simple_batch(timestamp_ms: i64, values: &[&[u8]]) -> Vec<u8> {
        let section: usize = values.iter().map(|value| value.len()).sum();
        let mut batch = vec![0u8; HEADER_LEN + section];
        let count = values.len() as i32;
        batch[8..12].copy_from_slice(&((HEADER_LEN + section - LOG_OVERHEAD) as i32).to_be_bytes());
        batch[16] = MAGIC_V2 as u8;
        batch[23..27].copy_from_slice(&(count - 1).max(0).to_be_bytes());
        batch[27..35].copy_from_slice(&timestamp_ms.to_be_bytes());
        batch[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
        batch[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        batch[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        batch[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        batch[57..61].copy_from_slice(&count.to_be_bytes());
        let mut at = HEADER_LEN;
        for value in values {
            batch[at..at + value.len()].copy_from_slice(value);
            at += value.len();
        }
        write_crc(&mut batch);
        batch
    }

    #[test]
    fn simple_batch_parses_and_verifies() {
        let batch = build_simple_batch(1_700_000_000_000, &[b"one", b"two", b"three"]);
        let header = BatchHeader::parse_and_verify(&batch).unwrap();
        assert_eq!(header.record_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.total_len(), batch.len());
        assert_eq!(header.max_timestamp, 1_700_000_000_000);
        assert_eq!(header.compression(), Compression::None);
    }

    #[test]
    fn assigning_an_offset_keeps_the_crc_valid() {
        let mut batch = build_simple_batch(5, &[b"x", b"y"]);
        assign_base_offset(&mut batch, 5000);
        let header = BatchHeader::parse_and_verify(&batch).unwrap();
        assert_eq!(header.base_offset, 5000);
        assert_eq!(header.last_offset(), 5001);
    }

    #[test]
    fn a_flipped_payload_bit_is_a_crc_mismatch() {
        let mut batch = build_simple_batch(5, &[b"payload"]);
        let last = batch.len() - 2;
        batch[last] ^= 0x01;
        assert!(matches!(
            BatchHeader::parse_and_verify(&batch),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn wrong_magic_and_tiny_length_are_rejected() {
        let mut batch = build_simple_batch(5, &[b"v"]);
        batch[16] = 1;
        assert_eq!(
            BatchHeader::parse(&batch),
            Err(BatchError::UnsupportedMagic(1))
        );
        let mut short = build_simple_batch(5, &[b"v"]);
        short[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(
            BatchHeader::parse(&short),
            Err(BatchError::LengthTooSmall(10))
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut batch = build_simple_batch(5, &[b"a", b"b", b"c"]);
        batch[53..57].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.last_sequence(), 0);
    }

    proptest! {
        #[test]
        fn every_truncation_is_incomplete_never_a_panic(cut in 0usize..200) {
            let batch = build_simple_batch(42, &[b"hello", b"world", &[7u8; 64]]);
            let cut = cut.min(batch.len() - 1);
            let result = BatchHeader::parse_and_verify(&batch[..cut]);
            prop_assert!(
                matches!(result, Err(BatchError::Incomplete { .. })),
                "unexpected result {:?}",
                result
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = BatchHeader::parse_and_verify(&bytes);
            for item in Batches::new(&bytes, true) {
                let _ = item;
            }
        }

        #[test]
        fn batches_walks_concatenations(sizes in proptest::collection::vec(1usize..5, 1..8)) {
            let mut buffer = Vec::new();
            let mut expected = Vec::new();
            for (index, count) in sizes.iter().enumerate() {
                let values: Vec<Vec<u8>> = (0..*count).map(|v| vec![v as u8; index + 1]).collect();
                let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
                buffer.extend_from_slice(&build_simple_batch(index as i64, &refs));
                expected.push(*count as i32);
            }
            let counts: Vec<i32> = Batches::new(&buffer, true)
                .map(|item| item.unwrap().0.record_count)
                .collect();
            prop_assert_eq!(counts, expected);
        }
    }
}
