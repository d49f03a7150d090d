//! One record of a v2 batch, after decompression:
//!
//! ```text
//! length           varint   bytes after this field
//! attributes       int8     unused (0)
//! timestampDelta   varlong  from the batch's base timestamp
//! offsetDelta      varint   from the batch's base offset
//! keyLength        varint   -1 for a null key
//! key              bytes
//! valueLength      varint   -1 for a null value (a tombstone)
//! value            bytes
//! headerCount      varint
//!   headerKeyLength varint, headerKey bytes, headerValueLength varint (-1 null), value
//! ```
//!
//! Parsing never trusts a length or a count: each is checked against the bytes left
//! before anything is sized from it.

use std::ops::Range;

use bytes::Bytes;

use crate::RecordsError;
use crate::varint::{self, VarintError};

/// The fewest bytes a record can take (a one-byte varint for each of its seven fields),
/// which bounds how many records a section of N bytes can really hold.
pub(crate) const RECORD_LEN_MIN: usize = 7;

/// A record header: Kafka's `Header`. The key is UTF-8 to Kafka clients; it is kept as
/// bytes, as Kafka's broker does, and not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: Bytes,
    /// Header value; `None` is Kafka's null.
    pub value: Option<Bytes>,
}

/// A decoded record. Key, value and header bytes share the batch's buffer (no copies
/// for uncompressed batches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's attributes byte (unused by Kafka; kept).
    pub attributes: i8,
    /// Absolute timestamp: the batch's base timestamp plus the record's delta.
    pub timestamp: i64,
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    /// Key; `None` is Kafka's null.
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

/// What an encoder needs of a record: implemented for decoded [`Record`]s (re-encoding)
/// and for [`crate::NewRecord`]s (records built by the server).
pub trait EncodeRecord {
    /// Absolute timestamp.
    fn timestamp(&self) -> i64;
    /// Key; `None` is null.
    fn key(&self) -> Option<&[u8]>;
    /// Value; `None` is null.
    fn value(&self) -> Option<&[u8]>;
    /// Number of headers.
    fn header_count(&self) -> usize;
    /// Header `index` as (key, value).
    fn header(&self, index: usize) -> (&[u8], Option<&[u8]>);
    /// The record's attributes byte; Kafka defines no bits in it, so 0 unless a decoded
    /// record carried something else (kept as sent).
    fn attributes(&self) -> i8 {
        0
    }
}

impl<R: EncodeRecord + ?Sized> EncodeRecord for &R {
    fn timestamp(&self) -> i64 {
        (**self).timestamp()
    }
    fn key(&self) -> Option<&[u8]> {
        (**self).key()
    }
    fn value(&self) -> Option<&[u8]> {
        (**self).value()
    }
    fn header_count(&self) -> usize {
        (**self).header_count()
    }
    fn header(&self, index: usize) -> (&[u8], Option<&[u8]>) {
        (**self).header(index)
    }
    fn attributes(&self) -> i8 {
        (**self).attributes()
    }
}

impl EncodeRecord for Record {
    fn timestamp(&self) -> i64 {
        self.timestamp
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn header_count(&self) -> usize {
        self.headers.len()
    }
    fn header(&self, index: usize) -> (&[u8], Option<&[u8]>) {
        let header = &self.headers[index];
        (&header.key, header.value.as_deref())
    }
    fn attributes(&self) -> i8 {
        self.attributes
    }
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        Some(bytes) => varint::len(bytes.len() as i64) + bytes.len(),
        None => varint::len(-1),
    }
}

/// Bytes of a record's body (everything after its length varint).
pub(crate) fn body_len<R: EncodeRecord + ?Sized>(
    record: &R,
    timestamp_delta: i64,
    offset_delta: i32,
) -> usize {
    let headers: usize = (0..record.header_count())
        .map(|index| {
            let (key, value) = record.header(index);
            varint::len(key.len() as i64) + key.len() + nullable_len(value)
        })
        .sum();
    1 + varint::len(timestamp_delta)
        + varint::len(i64::from(offset_delta))
        + nullable_len(record.key())
        + nullable_len(record.value())
        + varint::len(record.header_count() as i64)
        + headers
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            varint::put(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
        None => varint::put(out, -1),
    }
}

/// Appends `record`, length prefix included.
pub(crate) fn put<R: EncodeRecord + ?Sized>(
    out: &mut Vec<u8>,
    record: &R,
    timestamp_delta: i64,
    offset_delta: i32,
) {
    varint::put(out, body_len(record, timestamp_delta, offset_delta) as i64);
    out.push(record.attributes() as u8);
    varint::put(out, timestamp_delta);
    varint::put(out, i64::from(offset_delta));
    put_nullable(out, record.key());
    put_nullable(out, record.value());
    varint::put(out, record.header_count() as i64);
    for index in 0..record.header_count() {
        let (key, value) = record.header(index);
        varint::put(out, key.len() as i64);
        out.extend_from_slice(key);
        put_nullable(out, value);
    }
}

/// Where one record's fields lie within its section (byte ranges), as parsed and checked
/// by [`parse_one`]; a [`Record`] is built from it by slicing the section's buffer.
struct Spans {
    attributes: i8,
    timestamp: i64,
    offset_delta: i32,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// Walks a records section, checking every record and handing each to `each` in order.
/// `claimed` is the header's record count: the section must hold exactly that many
/// records, numbered 0, 1, 2, … by offset delta, with nothing after the last.
pub(crate) fn walk(
    section: &Bytes,
    claimed: i32,
    base_timestamp: i64,
    mut each: impl FnMut(Record),
) -> Result<(), RecordsError> {
    let mut headers = Vec::new();
    walk_spans(
        section,
        claimed,
        base_timestamp,
        Some(&mut headers),
        |spans, headers| {
            let slice = |range: Range<usize>| section.slice(range);
            each(Record {
                attributes: spans.attributes,
                timestamp: spans.timestamp,
                offset_delta: spans.offset_delta,
                key: spans.key.map(slice),
                value: spans.value.map(slice),
                headers: headers
                    .drain(..)
                    .map(|(key, value)| Header {
                        key: slice(key),
                        value: value.map(slice),
                    })
                    .collect(),
            })
        },
    )
}

/// Checks a records section as [`walk`] does, building nothing: the write path's check
/// of a batch it stores verbatim. Returns the number of records (the claimed count).
pub(crate) fn check(
    section: &[u8],
    claimed: i32,
    base_timestamp: i64,
) -> Result<usize, RecordsError> {
    let mut records = 0;
    walk_spans(section, claimed, base_timestamp, None, |_, _| records += 1)?;
    Ok(records)
}

type HeaderSpans = Vec<(Range<usize>, Option<Range<usize>>)>;

fn walk_spans(
    section: &[u8],
    claimed: i32,
    base_timestamp: i64,
    mut headers: Option<&mut HeaderSpans>,
    mut each: impl FnMut(Spans, &mut HeaderSpans),
) -> Result<(), RecordsError> {
    let claimed_count =
        usize::try_from(claimed).map_err(|_| RecordsError::CountMismatch { claimed, found: 0 })?;
    // A count the bytes cannot hold is refused before any record is looked at, so a
    // lying header costs nothing.
    if claimed_count > section.len() / RECORD_LEN_MIN {
        return Err(RecordsError::CountMismatch {
            claimed,
            found: section.len() / RECORD_LEN_MIN,
        });
    }
    let mut none = Vec::new();
    let mut at = 0;
    let mut index = 0;
    while at < section.len() {
        if index == claimed_count {
            return Err(RecordsError::CountMismatch {
                claimed,
                found: index + 1,
            });
        }
        let spans = parse_one(
            section,
            &mut at,
            index,
            base_timestamp,
            headers.as_deref_mut(),
        )?;
        if spans.offset_delta != index as i32 {
            return Err(RecordsError::OffsetDelta {
                index,
                found: spans.offset_delta,
            });
        }
        each(spans, headers.as_deref_mut().unwrap_or(&mut none));
        index += 1;
    }
    if index != claimed_count {
        return Err(RecordsError::CountMismatch {
            claimed,
            found: index,
        });
    }
    Ok(())
}

/// Parses the record at `*at`, checking every length against the bytes left; header
/// spans go to `headers` when given (a check keeps none).
fn parse_one(
    section: &[u8],
    at: &mut usize,
    index: usize,
    base_timestamp: i64,
    mut headers: Option<&mut HeaderSpans>,
) -> Result<Spans, RecordsError> {
    let malformed = |reason: &'static str| RecordsError::Malformed { index, reason };
    let varint_error = |error: VarintError| match error {
        VarintError::Truncated => malformed("truncated varint"),
        VarintError::Overlong => malformed("over-long varint"),
    };
    let length = varint::get_i32(section, at).map_err(varint_error)?;
    let length = usize::try_from(length).map_err(|_| malformed("negative record length"))?;
    if length > section.len() - *at {
        return Err(malformed("record length runs past the batch"));
    }
    let end = *at + length;
    let body = &section[..end];
    let attributes = *body.get(*at).ok_or_else(|| malformed("empty record"))? as i8;
    *at += 1;
    let timestamp_delta = varint::get_i64(body, at).map_err(varint_error)?;
    let timestamp = base_timestamp
        .checked_add(timestamp_delta)
        .ok_or_else(|| malformed("timestamp overflows"))?;
    let offset_delta = varint::get_i32(body, at).map_err(varint_error)?;
    let key = nullable(body, at, index)?;
    let value = nullable(body, at, index)?;
    let header_count = varint::get_i32(body, at).map_err(varint_error)?;
    let header_count =
        usize::try_from(header_count).map_err(|_| malformed("negative header count"))?;
    // Each header takes at least two bytes (two one-byte lengths).
    if header_count > (end - *at) / 2 {
        return Err(malformed("header count runs past the record"));
    }
    if let Some(headers) = headers.as_deref_mut() {
        headers.clear();
        headers.reserve(header_count);
    }
    for _ in 0..header_count {
        let key = nullable(body, at, index)?.ok_or_else(|| malformed("null header key"))?;
        let value = nullable(body, at, index)?;
        if let Some(headers) = headers.as_deref_mut() {
            headers.push((key, value));
        }
    }
    if *at != end {
        return Err(malformed("record length disagrees with its fields"));
    }
    Ok(Spans {
        attributes,
        timestamp,
        offset_delta,
        key,
        value,
    })
}

/// Reads a varint length and that many bytes' span; -1 is null.
fn nullable(
    body: &[u8],
    at: &mut usize,
    index: usize,
) -> Result<Option<Range<usize>>, RecordsError> {
    let malformed = |reason: &'static str| RecordsError::Malformed { index, reason };
    let length = varint::get_i32(body, at).map_err(|_| malformed("bad length varint"))?;
    if length == -1 {
        return Ok(None);
    }
    let length = usize::try_from(length).map_err(|_| malformed("negative length"))?;
    if length > body.len() - *at {
        return Err(malformed("field runs past the record"));
    }
    let span = *at..*at + length;
    *at += length;
    Ok(Some(span))
}
