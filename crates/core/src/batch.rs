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
//!     61     …  records (compressed or not; never touched by Shardline)
//! ```
//!
//! All integers are big-endian. Parsing never allocates, and "the buffer ends before the
//! batch does" is reported as [`BatchError::Incomplete`] so that callers reading a log
//! tail can tell a torn write from corruption.
//!
//! [`build_batch`] goes the other way for records that do not arrive as Kafka batches
//! (Kinesis puts): it encodes keyed records into an uncompressed batch the log and every
//! Kafka consumer accept.

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

/// A record header (Kafka's `Header`): a UTF-8 key and a value that may be null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader<'a> {
    /// Header key.
    pub key: &'a str,
    /// Header value; `None` is Kafka's null.
    pub value: Option<&'a [u8]>,
}

/// One record for [`build_batch`]. `None` key or value is Kafka's null (a null value is a
/// tombstone to Kafka consumers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// Record key.
    pub key: Option<&'a [u8]>,
    /// Record value.
    pub value: Option<&'a [u8]>,
    /// Record headers, in order.
    pub headers: &'a [RecordHeader<'a>],
}

/// Bytes of a zigzag varint.
fn varint_len(value: i64) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let mut len = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        len += 1;
    }
    len
}

/// Bytes of a nullable byte string with its varint length (-1 for null).
fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        Some(bytes) => varint_len(bytes.len() as i64) + bytes.len(),
        None => varint_len(-1),
    }
}

/// Bytes of a record's body: everything after its own length varint.
fn record_body_len(record: &NewRecord<'_>, offset_delta: i32) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|header| {
            varint_len(header.key.len() as i64) + header.key.len() + nullable_len(header.value)
        })
        .sum();
    1 // attributes
        + varint_len(0) // timestamp delta
        + varint_len(i64::from(offset_delta))
        + nullable_len(record.key)
        + nullable_len(record.value)
        + varint_len(record.headers.len() as i64)
        + headers
}

/// Bytes `record` takes in a batch built by [`build_batch`] at `offset_delta` (its index
/// in the batch), length prefix included. Lets callers size batches before building them.
pub fn record_len(record: &NewRecord<'_>, offset_delta: i32) -> usize {
    let body = record_body_len(record, offset_delta);
    varint_len(body as i64) + body
}

/// Bytes of the batch [`build_batch`] makes of `records`.
pub fn batch_len(records: &[NewRecord<'_>]) -> usize {
    HEADER_LEN
        + records
            .iter()
            .enumerate()
            .map(|(delta, record)| record_len(record, delta as i32))
            .sum::<usize>()
}

/// Builds a valid uncompressed v2 batch of `records` (offset deltas 0..n, every record
/// stamped with CreateTime `timestamp_ms`, no producer id, base offset 0 for the broker to
/// assign). This is how the server turns records that did not arrive as Kafka batches
/// (Kinesis puts) into what the log stores.
///
/// `records` should not be empty: Kafka has no empty batches, and
/// [`BatchHeader::parse_and_verify`] refuses the one this would build.
pub fn build_batch(timestamp_ms: i64, records: &[NewRecord<'_>]) -> Vec<u8> {
    let total = batch_len(records);
    let mut batch = Vec::with_capacity(total);
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&((total - LOG_OVERHEAD) as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    batch.push(MAGIC_V2 as u8);
    batch.extend_from_slice(&[0u8; 4]); // crc, written below
    batch.extend_from_slice(&0i16.to_be_bytes()); // attributes: no codec, CreateTime
    let count = records.len() as i32;
    batch.extend_from_slice(&(count - 1).max(0).to_be_bytes());
    batch.extend_from_slice(&timestamp_ms.to_be_bytes()); // base timestamp
    batch.extend_from_slice(&timestamp_ms.to_be_bytes()); // max timestamp
    batch.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    batch.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    batch.extend_from_slice(&count.to_be_bytes());
    for (delta, record) in records.iter().enumerate() {
        let delta = delta as i32;
        put_varint(&mut batch, record_body_len(record, delta) as i64);
        batch.push(0); // attributes
        put_varint(&mut batch, 0); // timestamp delta
        put_varint(&mut batch, i64::from(delta));
        put_nullable(&mut batch, record.key);
        put_nullable(&mut batch, record.value);
        put_varint(&mut batch, record.headers.len() as i64);
        for header in record.headers {
            put_varint(&mut batch, header.key.len() as i64);
            batch.extend_from_slice(header.key.as_bytes());
            put_nullable(&mut batch, header.value);
        }
    }
    debug_assert_eq!(batch.len(), total, "batch_len disagrees with build_batch");
    write_crc(&mut batch);
    batch
}

/// Test and tooling helper: builds a valid uncompressed v2 batch of `values` with
/// CreateTime `timestamp_ms`, no keys and no headers.
pub fn build_simple_batch(timestamp_ms: i64, values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<NewRecord<'_>> = values
        .iter()
        .map(|value| NewRecord {
            value: Some(value),
            ..NewRecord::default()
        })
        .collect();
    build_batch(timestamp_ms, &records)
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
        None => put_varint(out, -1),
    }
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if zigzag < 0x80 {
            out.push(zigzag as u8);
            return;
        }
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    /// One record decoded back from an uncompressed batch: key, value, headers.
    type Decoded = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    /// Reads a zigzag varint at `*at`, advancing it.
    fn get_varint(bytes: &[u8], at: &mut usize) -> i64 {
        let mut raw = 0u64;
        let mut shift = 0;
        loop {
            let byte = bytes[*at];
            *at += 1;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return (raw >> 1) as i64 ^ -((raw & 1) as i64);
            }
            shift += 7;
        }
    }

    fn get_nullable(bytes: &[u8], at: &mut usize) -> Option<Vec<u8>> {
        let len = get_varint(bytes, at);
        (len >= 0).then(|| {
            let value = bytes[*at..*at + len as usize].to_vec();
            *at += len as usize;
            value
        })
    }

    /// Decodes the records of an uncompressed batch, checking offset deltas and framing.
    fn decode_records(batch: &[u8]) -> Vec<Decoded> {
        let header = BatchHeader::parse_and_verify(batch).unwrap();
        let mut at = HEADER_LEN;
        let mut records = Vec::new();
        for delta in 0..header.record_count {
            let len = get_varint(batch, &mut at) as usize;
            let end = at + len;
            assert_eq!(batch[at], 0, "record attributes");
            at += 1;
            assert_eq!(get_varint(batch, &mut at), 0, "timestamp delta");
            assert_eq!(get_varint(batch, &mut at), i64::from(delta), "offset delta");
            let key = get_nullable(batch, &mut at);
            let value = get_nullable(batch, &mut at);
            let headers = (0..get_varint(batch, &mut at))
                .map(|_| {
                    let key = get_nullable(batch, &mut at).unwrap();
                    (
                        String::from_utf8(key).unwrap(),
                        get_nullable(batch, &mut at),
                    )
                })
                .collect();
            assert_eq!(at, end, "record length prefix");
            records.push((key, value, headers));
        }
        assert_eq!(at, batch.len(), "trailing bytes after the last record");
        records
    }

    #[test]
    fn keyed_batch_round_trips_keys_values_and_headers() {
        let headers = [
            RecordHeader {
                key: "trace",
                value: Some(b"abc"),
            },
            RecordHeader {
                key: "empty",
                value: None,
            },
        ];
        let records = [
            NewRecord {
                key: Some(b"partition-key"),
                value: Some(&[7u8; 300]),
                headers: &headers,
            },
            NewRecord {
                key: None,
                value: None,
                headers: &[],
            },
        ];
        let batch = build_batch(1_700_000_000_123, &records);
        let header = BatchHeader::parse_and_verify(&batch).unwrap();
        assert_eq!(header.record_count, 2);
        assert_eq!(header.base_timestamp, 1_700_000_000_123);
        assert!(!header.has_producer_id());
        assert!(!header.is_log_append_time());
        assert_eq!(batch.len(), batch_len(&records));
        let decoded = decode_records(&batch);
        assert_eq!(decoded[0].0.as_deref(), Some(&b"partition-key"[..]));
        assert_eq!(decoded[0].1.as_deref(), Some(&[7u8; 300][..]));
        assert_eq!(
            decoded[0].2,
            vec![
                ("trace".to_owned(), Some(b"abc".to_vec())),
                ("empty".to_owned(), None)
            ]
        );
        assert_eq!(decoded[1], (None, None, Vec::new()));
    }

    #[test]
    fn varint_lengths_match_the_encoder() {
        for value in [0, 1, -1, 63, 64, -64, -65, 8191, 8192, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(varint_len(value), out.len(), "{value}");
        }
    }

    fn arbitrary_record() -> impl Strategy<Value = Decoded> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300));
        (
            bytes(),
            bytes(),
            proptest::collection::vec(("[a-z]{0,12}", bytes()), 0..3),
        )
    }

    proptest! {
        #[test]
        fn built_batches_verify_and_hold_what_was_put(
            timestamp_ms in any::<i64>(),
            owned in proptest::collection::vec(arbitrary_record(), 1..200),
        ) {
            let headers: Vec<Vec<RecordHeader<'_>>> = owned
                .iter()
                .map(|(_, _, headers)| {
                    headers
                        .iter()
                        .map(|(key, value)| RecordHeader { key, value: value.as_deref() })
                        .collect()
                })
                .collect();
            let records: Vec<NewRecord<'_>> = owned
                .iter()
                .zip(&headers)
                .map(|((key, value, _), headers)| NewRecord {
                    key: key.as_deref(),
                    value: value.as_deref(),
                    headers,
                })
                .collect();
            let batch = build_batch(timestamp_ms, &records);
            let header = BatchHeader::parse_and_verify(&batch).unwrap();
            prop_assert_eq!(header.record_count as usize, records.len());
            prop_assert_eq!(header.total_len(), batch.len());
            prop_assert_eq!(batch_len(&records), batch.len());
            prop_assert_eq!(header.max_timestamp, timestamp_ms);
            prop_assert_eq!(decode_records(&batch), owned);
        }

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
