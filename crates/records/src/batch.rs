//! Whole v2 batches: decoding a batch into its records (decompressing within a limit),
//! checking one without keeping its records, and encoding records into a batch with any
//! codec. The 61-byte header itself is `shardline_core::batch`.

use bytes::Bytes;
use shardline_core::batch::{self, BatchHeader, Compression, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2};

use crate::RecordsError;
use crate::codec;
use crate::record::{self, EncodeRecord, RECORD_LEN_MIN, Record};

/// Bounds on what decoding may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most bytes a compressed records section may inflate to.
    pub decompressed_bytes_max: usize,
}

/// A decoded batch: its header and its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    /// The fixed header, as sent.
    pub header: BatchHeader,
    /// The records, in offset order.
    pub records: Vec<Record>,
}

/// What [`check_batch`] found in a batch it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    /// The fixed header.
    pub header: BatchHeader,
    /// Records really present (equal to the header's count).
    pub records: usize,
    /// Size of the records section after decompression.
    pub uncompressed_bytes: usize,
}

/// The records section of `bytes` (one whole batch), decompressed within `limits`.
fn section(
    bytes: &Bytes,
    header: &BatchHeader,
    limits: DecodeLimits,
) -> Result<Bytes, RecordsError> {
    let raw = bytes.slice(HEADER_LEN..header.total_len());
    match header.compression() {
        Compression::None => Ok(raw),
        Compression::Unknown(id) => Err(RecordsError::UnknownCodec(id)),
        codec => {
            refuse_count_past_limit(header, limits)?;
            Ok(Bytes::from(codec::decompress(
                codec,
                &raw,
                limits.decompressed_bytes_max,
            )?))
        }
    }
}

/// A compressed section cannot hold more records than its limit allows, so a lying count
/// fails before anything is inflated.
fn refuse_count_past_limit(header: &BatchHeader, limits: DecodeLimits) -> Result<(), RecordsError> {
    let most = limits.decompressed_bytes_max / RECORD_LEN_MIN;
    if usize::try_from(header.record_count).is_ok_and(|count| count > most) {
        return Err(RecordsError::CountMismatch {
            claimed: header.record_count,
            found: most,
        });
    }
    Ok(())
}

/// Decodes the one batch at the start of `bytes`: header, CRC, then every record,
/// checked against the header's count and numbered 0, 1, 2, … by offset delta.
pub fn decode_batch(bytes: &Bytes, limits: DecodeLimits) -> Result<DecodedBatch, RecordsError> {
    let header = BatchHeader::parse_and_verify(bytes)?;
    let section = section(bytes, &header, limits)?;
    let capacity = usize::try_from(header.record_count).unwrap_or(0);
    let mut records = Vec::with_capacity(capacity.min(section.len() / RECORD_LEN_MIN));
    record::walk(
        &section,
        header.record_count,
        header.base_timestamp,
        |record| records.push(record),
    )?;
    Ok(DecodedBatch { header, records })
}

/// Checks the one batch at the start of `bytes` as [`decode_batch`] does, keeping none
/// of its records and copying nothing of an uncompressed batch: what a write path runs
/// before storing a batch verbatim.
pub fn check_batch(bytes: &[u8], limits: DecodeLimits) -> Result<BatchSummary, RecordsError> {
    let header = BatchHeader::parse_and_verify(bytes)?;
    let raw = &bytes[HEADER_LEN..header.total_len()];
    let inflated;
    let section = match header.compression() {
        Compression::None => raw,
        Compression::Unknown(id) => return Err(RecordsError::UnknownCodec(id)),
        codec => {
            refuse_count_past_limit(&header, limits)?;
            inflated = codec::decompress(codec, raw, limits.decompressed_bytes_max)?;
            &inflated[..]
        }
    };
    let records = record::check(section, header.record_count, header.base_timestamp)?;
    Ok(BatchSummary {
        header,
        records,
        uncompressed_bytes: section.len(),
    })
}

/// Batch-level fields of a batch to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpec {
    /// Codec for the records section.
    pub compression: Compression,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Part of a transaction (attributes bit 4).
    pub transactional: bool,
    /// A control batch (attributes bit 5).
    pub control: bool,
}

impl Default for BatchSpec {
    /// Uncompressed, no producer id, not transactional.
    fn default() -> BatchSpec {
        BatchSpec {
            compression: Compression::None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
        }
    }
}

fn codec_bits(compression: Compression) -> i16 {
    match compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
        Compression::Unknown(id) => i16::from(id & 0x07),
    }
}

/// Encodes `records` into one v2 batch with base offset 0 (the broker assigns offsets),
/// CreateTime timestamps (base = the first record's, max = the largest), offset deltas
/// 0, 1, 2, …, and a valid CRC.
pub fn encode_batch<R: EncodeRecord>(
    spec: &BatchSpec,
    records: &[R],
) -> Result<Vec<u8>, RecordsError> {
    let Some(first) = records.first() else {
        return Err(RecordsError::Empty);
    };
    if let Compression::Unknown(id) = spec.compression {
        return Err(RecordsError::UnknownCodec(id));
    }
    let base_timestamp = first.timestamp();
    let max_timestamp = records
        .iter()
        .map(EncodeRecord::timestamp)
        .max()
        .unwrap_or(base_timestamp);
    let mut out = Vec::with_capacity(HEADER_LEN + section_len(records, base_timestamp));
    out.resize(HEADER_LEN, 0);
    if spec.compression == Compression::None {
        put_records(&mut out, records, base_timestamp);
    } else {
        let mut plain = Vec::with_capacity(section_len(records, base_timestamp));
        put_records(&mut plain, records, base_timestamp);
        out.extend_from_slice(&codec::compress(spec.compression, &plain)?);
    }
    let count = records.len() as i32;
    let mut attributes = codec_bits(spec.compression);
    if spec.transactional {
        attributes |= 0x10;
    }
    if spec.control {
        attributes |= 0x20;
    }
    let length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[16] = MAGIC_V2 as u8;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    out[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
    out[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    out[43..51].copy_from_slice(&spec.producer_id.to_be_bytes());
    out[51..53].copy_from_slice(&spec.producer_epoch.to_be_bytes());
    out[53..57].copy_from_slice(&spec.base_sequence.to_be_bytes());
    out[57..61].copy_from_slice(&count.to_be_bytes());
    batch::write_crc(&mut out);
    Ok(out)
}

fn section_len<R: EncodeRecord>(records: &[R], base_timestamp: i64) -> usize {
    records
        .iter()
        .enumerate()
        .map(|(delta, record)| {
            let body = record::body_len(
                record,
                record.timestamp().wrapping_sub(base_timestamp),
                delta as i32,
            );
            crate::varint::len(body as i64) + body
        })
        .sum()
}

fn put_records<R: EncodeRecord>(out: &mut Vec<u8>, records: &[R], base_timestamp: i64) {
    for (delta, record) in records.iter().enumerate() {
        record::put(
            out,
            record,
            record.timestamp().wrapping_sub(base_timestamp),
            delta as i32,
        );
    }
}

/// A record header for [`NewRecord`]: a UTF-8 key and a value that may be null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader<'a> {
    /// Header key.
    pub key: &'a str,
    /// Header value; `None` is Kafka's null.
    pub value: Option<&'a [u8]>,
}

/// A record the server builds (Kinesis puts, tools, tests), borrowed from the caller.
/// `None` key or value is Kafka's null (a null value is a tombstone to Kafka consumers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// Record key.
    pub key: Option<&'a [u8]>,
    /// Record value.
    pub value: Option<&'a [u8]>,
    /// Record headers, in order.
    pub headers: &'a [RecordHeader<'a>],
}

/// A [`NewRecord`] with the batch's one timestamp.
struct Stamped<'a> {
    timestamp: i64,
    record: &'a NewRecord<'a>,
}

impl EncodeRecord for Stamped<'_> {
    fn timestamp(&self) -> i64 {
        self.timestamp
    }
    fn key(&self) -> Option<&[u8]> {
        self.record.key
    }
    fn value(&self) -> Option<&[u8]> {
        self.record.value
    }
    fn header_count(&self) -> usize {
        self.record.headers.len()
    }
    fn header(&self, index: usize) -> (&[u8], Option<&[u8]>) {
        let header = &self.record.headers[index];
        (header.key.as_bytes(), header.value)
    }
}

/// Bytes `record` takes in a batch built by [`build_batch`] at `offset_delta` (its index
/// in the batch), length prefix included. Lets callers size batches before building them.
pub fn record_len(record: &NewRecord<'_>, offset_delta: i32) -> usize {
    let stamped = Stamped {
        timestamp: 0,
        record,
    };
    let body = record::body_len(&stamped, 0, offset_delta);
    crate::varint::len(body as i64) + body
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

/// Builds an uncompressed v2 batch of `records`, all stamped with CreateTime
/// `timestamp_ms`, with no producer id: how records that did not arrive as Kafka batches
/// (Kinesis puts) become what the log stores.
///
/// `records` should not be empty: Kafka has no empty batches, and
/// [`BatchHeader::parse_and_verify`] refuses the one this would build.
pub fn build_batch(timestamp_ms: i64, records: &[NewRecord<'_>]) -> Vec<u8> {
    if records.is_empty() {
        // The header alone, count 0: kept buildable for tests of the refusal.
        let mut out = vec![0u8; HEADER_LEN];
        out[8..12].copy_from_slice(&((HEADER_LEN - LOG_OVERHEAD) as i32).to_be_bytes());
        out[16] = MAGIC_V2 as u8;
        out[27..35].copy_from_slice(&timestamp_ms.to_be_bytes());
        out[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
        out[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        out[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        out[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        batch::write_crc(&mut out);
        return out;
    }
    let stamped: Vec<Stamped<'_>> = records
        .iter()
        .map(|record| Stamped {
            timestamp: timestamp_ms,
            record,
        })
        .collect();
    let built = encode_batch(&BatchSpec::default(), &stamped)
        .expect("an uncompressed batch of at least one record always encodes");
    debug_assert_eq!(
        built.len(),
        batch_len(records),
        "batch_len disagrees with build_batch"
    );
    built
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
