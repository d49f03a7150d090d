//! Why a batch's records could not be decoded or encoded.

use shardline_core::BatchError;

/// A records-level failure. Every variant means the batch is refused whole; fronts map
/// [`RecordsError::Batch`] CRC failures to "corrupt" and everything else to "invalid".
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The fixed header is bad (length, magic, CRC, count against last offset delta).
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The attributes name a codec Kafka does not define.
    #[error("unknown compression codec id {0}")]
    UnknownCodec(u8),
    /// The compressed records do not decompress.
    #[error("{codec} records do not decompress: {reason}")]
    Decompress {
        /// Codec name.
        codec: &'static str,
        /// The codec library's message.
        reason: String,
    },
    /// The records inflate past the caller's limit; nothing past it was allocated.
    #[error("records decompress to more than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The header's record count is not what the records section holds.
    #[error("batch claims {claimed} records but holds {found}")]
    CountMismatch {
        /// `record_count` from the header.
        claimed: i32,
        /// Records actually found (a lower bound when the section ended in a bad record).
        found: usize,
    },
    /// A record's fields do not parse, or disagree with its length.
    #[error("record {index}: {reason}")]
    Malformed {
        /// Position of the record in the batch.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A record's offset delta is not its position (Kafka producers number records
    /// 0, 1, 2, … within a batch).
    #[error("record {index} has offset delta {found}")]
    OffsetDelta {
        /// Position of the record.
        index: usize,
        /// Its offset delta.
        found: i32,
    },
    /// Compression failed while encoding.
    #[error("cannot compress with {codec}: {reason}")]
    Compress {
        /// Codec name.
        codec: &'static str,
        /// The codec library's message.
        reason: String,
    },
    /// Nothing to encode: Kafka has no empty batches.
    #[error("a batch needs at least one record")]
    Empty,
}

impl RecordsError {
    /// Whether the batch failed its CRC (Kafka's CORRUPT_MESSAGE) rather than being
    /// well-checksummed but invalid (INVALID_RECORD).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, RecordsError::Batch(BatchError::CrcMismatch { .. }))
    }
}
