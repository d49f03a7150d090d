//! The bytes of the offsets store: record frames (length, CRC, payload), their payload
//! encoding, and the file header.

use super::*;

/// Appends one framed record to `out`. The size is checked before anything is copied.
pub(super) fn encode_frame(record: &OffsetRecord, out: &mut Vec<u8>) -> Result<(), Error> {
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
pub(super) fn put_str(out: &mut Vec<u8>, text: &str) {
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
pub(super) struct FieldReader<'a> {
    pub(super) bytes: &'a [u8],
}

impl<'a> FieldReader<'a> {
    pub(super) fn take(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Short { field });
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    pub(super) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    pub(super) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    /// The length is checked against what is left before anything is copied.
    pub(super) fn string_of_len(
        &mut self,
        len: u32,
        field: &'static str,
    ) -> Result<String, DecodeError> {
        let bytes = self.take(len as usize, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_not_utf8| DecodeError::NotUtf8 { field })
    }

    pub(super) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u32(field)?;
        self.string_of_len(len, field)
    }

    pub(super) fn nullable_string(
        &mut self,
        field: &'static str,
    ) -> Result<Option<String>, DecodeError> {
        match self.u32(field)? {
            NULL_LENGTH => Ok(None),
            len => self.string_of_len(len, field).map(Some),
        }
    }
}

pub(super) fn decode_payload(payload: &[u8]) -> Result<OffsetRecord, DecodeError> {
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
pub(super) enum FileKind {
    Log,
    Snapshot,
}

impl FileKind {
    pub(super) fn code(self) -> u32 {
        match self {
            FileKind::Log => 1,
            FileKind::Snapshot => 2,
        }
    }

    pub(super) fn extension(self) -> &'static str {
        match self {
            FileKind::Log => LOG_EXTENSION,
            FileKind::Snapshot => SNAPSHOT_EXTENSION,
        }
    }

    pub(super) fn path(self, dir: &Path, generation: u64) -> PathBuf {
        dir.join(format!(
            "{generation:0GENERATION_DIGITS$}.{}",
            self.extension()
        ))
    }
}

pub(super) fn encode_header(kind: FileKind, record_count: u64) -> [u8; HEADER_BYTES] {
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
pub(super) struct Header {
    pub(super) format_version: u32,
    pub(super) kind: u32,
    pub(super) record_count: u64,
}

pub(super) fn decode_header(bytes: &[u8]) -> Result<Header, CorruptReason> {
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
pub(super) enum Step {
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
pub(super) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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
pub(super) fn read_record(reader: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Step> {
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
