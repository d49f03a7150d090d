//! The engine's error type. Fronts map [`ErrorKind`] to their own wire codes (Kafka error
//! codes, Kinesis exception names); the engine never knows either.

use shardline_core::{BatchError, StreamNameError};
use shardline_records::RecordsError;

/// What went wrong, in terms a front can map to its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such stream.
    UnknownStream,
    /// No such shard in the stream.
    UnknownShard,
    /// A stream of that name exists.
    StreamExists,
    /// The name breaks the naming rules.
    InvalidStreamName,
    /// A setting is unknown or out of range.
    InvalidConfig,
    /// The shard count asked for is not allowed.
    InvalidShardCount,
    /// The batch fails its CRC or its lengths disagree.
    CorruptBatch,
    /// The batch is well-formed but not acceptable (wrong magic, several batches, …).
    InvalidBatch,
    /// The batch exceeds `max.message.bytes`.
    BatchTooLarge,
    /// An idempotent producer's sequence does not follow its last one.
    OutOfOrderSequence,
    /// An idempotent producer's epoch is older than one already seen.
    StaleProducerEpoch,
    /// A read asked for an offset outside `[log start, high watermark]`.
    OffsetOutOfRange,
    /// Local storage failed; the shard is unavailable.
    Storage,
    /// The broker is shutting down.
    ShuttingDown,
    /// The shard was closed by a reshard; its records belong to its open children.
    ShardClosed,
    /// A write or read over the shard's throughput limits was refused.
    Throttled,
    /// A reshard that the rules do not allow (bad key, not adjacent, closed shard, …).
    InvalidReshard,
    /// A rate or count limit of the control plane (scalings per day, shard bounds).
    LimitExceeded,
    /// Another change of the stream is under way.
    StreamBusy,
}

/// An engine error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// See [`ErrorKind::UnknownStream`].
    #[error("stream {0:?} does not exist")]
    UnknownStream(String),
    /// See [`ErrorKind::UnknownShard`].
    #[error("stream {stream:?} has no shard {shard}")]
    UnknownShard {
        /// Stream name.
        stream: String,
        /// Shard index asked for.
        shard: i64,
    },
    /// See [`ErrorKind::StreamExists`].
    #[error("stream {0:?} already exists")]
    StreamExists(String),
    /// See [`ErrorKind::InvalidStreamName`].
    #[error(transparent)]
    InvalidStreamName(#[from] StreamNameError),
    /// See [`ErrorKind::InvalidConfig`].
    #[error("invalid value {value:?} for {name}: {reason}")]
    InvalidConfig {
        /// Config name.
        name: String,
        /// Refused value.
        value: String,
        /// Why.
        reason: String,
    },
    /// See [`ErrorKind::InvalidShardCount`].
    #[error("invalid shard count {count}: {reason}")]
    InvalidShardCount {
        /// Count asked for.
        count: i64,
        /// Why.
        reason: String,
    },
    /// See [`ErrorKind::CorruptBatch`] and [`ErrorKind::InvalidBatch`].
    #[error("record batch rejected: {0}")]
    Batch(#[from] BatchError),
    /// See [`ErrorKind::InvalidBatch`].
    #[error("record batch rejected: {0}")]
    InvalidBatch(String),
    /// The records inside a batch the engine decoded are bad (count, lengths, codec, or
    /// inflating past [`BrokerConfig::decompressed_batch_bytes_max`](crate::BrokerConfig)):
    /// [`ErrorKind::InvalidBatch`], or [`ErrorKind::CorruptBatch`] for a bad header.
    #[error("record batch rejected: {0}")]
    Records(#[from] RecordsError),
    /// See [`ErrorKind::BatchTooLarge`].
    #[error("record batch of {size} bytes exceeds max.message.bytes {limit}")]
    BatchTooLarge {
        /// Batch size.
        size: usize,
        /// The stream's limit.
        limit: u32,
    },
    /// See [`ErrorKind::OutOfOrderSequence`].
    #[error("producer {producer_id}: expected sequence {expected}, got {found}")]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: i64,
        /// Sequence expected next.
        expected: i32,
        /// Sequence received.
        found: i32,
    },
    /// See [`ErrorKind::StaleProducerEpoch`].
    #[error("producer {producer_id}: epoch {found} is older than {current}")]
    StaleProducerEpoch {
        /// Producer id.
        producer_id: i64,
        /// Current epoch.
        current: i16,
        /// Epoch received.
        found: i16,
    },
    /// See [`ErrorKind::OffsetOutOfRange`].
    #[error("offset {offset} is outside [{log_start_offset}, {high_watermark}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        offset: i64,
        /// First offset kept.
        log_start_offset: u64,
        /// Next offset to be written and made durable.
        high_watermark: u64,
    },
    /// See [`ErrorKind::Storage`].
    #[error("storage: {0}")]
    Log(#[from] shardline_log::Error),
    /// See [`ErrorKind::Storage`].
    #[error("metadata: {0}")]
    Meta(#[from] shardline_meta::Error),
    /// See [`ErrorKind::Storage`].
    #[error("shard {stream}/{shard} is unavailable after a storage failure: {reason}")]
    ShardFailed {
        /// Stream name.
        stream: String,
        /// Shard index.
        shard: u32,
        /// The first failure.
        reason: String,
    },
    /// A group id or commit metadata is over the engine's limit
    /// ([`GROUP_ID_BYTES_MAX`](crate::GROUP_ID_BYTES_MAX),
    /// [`OFFSET_METADATA_BYTES_MAX`](crate::OFFSET_METADATA_BYTES_MAX)); nothing was
    /// stored. Reported as [`ErrorKind::BatchTooLarge`], the one size-limit kind.
    #[error("offset commit rejected: {field} of {size_bytes} bytes exceeds {limit_bytes} bytes")]
    OffsetCommitTooLarge {
        /// `"group id"` or `"metadata"`.
        field: &'static str,
        /// Its size.
        size_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// See [`ErrorKind::Storage`]: writing or fsyncing committed offsets failed, now or
    /// earlier; offsets cannot be changed until a restart.
    #[error("committed offsets are unavailable after a storage failure: {reason}")]
    OffsetsFailed {
        /// The first failure.
        reason: String,
    },
    /// See [`ErrorKind::ShuttingDown`].
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// See [`ErrorKind::ShardClosed`].
    #[error("shard {shard} of stream {stream:?} is closed")]
    ShardClosed {
        /// Stream name.
        stream: String,
        /// Shard index.
        shard: u32,
    },
    /// See [`ErrorKind::Throttled`].
    #[error("rate exceeded for shard {shard} in stream {stream}; retry in {wait_ms} ms")]
    Throttled {
        /// Stream name.
        stream: String,
        /// Shard index.
        shard: u32,
        /// How long until the capacity is there.
        wait_ms: u64,
    },
    /// See [`ErrorKind::InvalidReshard`].
    #[error("{0}")]
    InvalidReshard(String),
    /// Another change of the stream is under way. Kind [`ErrorKind::StreamBusy`].
    #[error("stream {stream} is {}: another change is under way", status.as_str())]
    StreamBusy {
        /// Stream name.
        stream: String,
        /// What is under way.
        status: crate::StreamStatus,
    },
    /// A re-routed append named a shard that a reshard closed meanwhile: route again.
    /// Nothing was stored. Kind [`ErrorKind::ShardClosed`].
    #[error("shard {shard} of stream {stream:?} closed while records were re-routed to it")]
    RerouteStale {
        /// Stream name.
        stream: String,
        /// The shard that closed.
        shard: u32,
    },
    /// See [`ErrorKind::LimitExceeded`].
    #[error("{0}")]
    LimitExceeded(String),
    /// See [`ErrorKind::Storage`]: the object store failed or holds damaged data.
    #[error("object store: {0}")]
    Tier(#[from] shardline_tier::Error),
    /// A background task failed or stored metadata is inconsistent; reported as storage.
    #[error("internal: {0}")]
    Internal(String),
}

fn batch_kind(error: &BatchError) -> ErrorKind {
    match error {
        BatchError::CrcMismatch { .. }
        | BatchError::Incomplete { .. }
        | BatchError::LengthTooSmall(_)
        | BatchError::CountMismatch { .. } => ErrorKind::CorruptBatch,
        BatchError::UnsupportedMagic(_) => ErrorKind::InvalidBatch,
    }
}

impl Error {
    /// The protocol-neutral category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnknownStream(_) => ErrorKind::UnknownStream,
            Error::UnknownShard { .. } => ErrorKind::UnknownShard,
            Error::StreamExists(_) => ErrorKind::StreamExists,
            Error::InvalidStreamName(_) => ErrorKind::InvalidStreamName,
            Error::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            Error::InvalidShardCount { .. } => ErrorKind::InvalidShardCount,
            Error::Batch(error) | Error::Records(RecordsError::Batch(error)) => batch_kind(error),
            Error::InvalidBatch(_) | Error::Records(_) => ErrorKind::InvalidBatch,
            Error::BatchTooLarge { .. }
            | Error::OffsetCommitTooLarge { .. }
            | Error::Log(shardline_log::Error::BatchTooLarge { .. }) => ErrorKind::BatchTooLarge,
            Error::OutOfOrderSequence { .. } => ErrorKind::OutOfOrderSequence,
            Error::StaleProducerEpoch { .. } => ErrorKind::StaleProducerEpoch,
            Error::OffsetOutOfRange { .. } => ErrorKind::OffsetOutOfRange,
            Error::Log(_)
            | Error::Tier(_)
            | Error::Meta(_)
            | Error::ShardFailed { .. }
            | Error::OffsetsFailed { .. }
            | Error::Internal(_) => ErrorKind::Storage,
            Error::ShuttingDown => ErrorKind::ShuttingDown,
            Error::ShardClosed { .. } | Error::RerouteStale { .. } => ErrorKind::ShardClosed,
            Error::Throttled { .. } => ErrorKind::Throttled,
            Error::InvalidReshard(_) => ErrorKind::InvalidReshard,
            Error::LimitExceeded(_) => ErrorKind::LimitExceeded,
            Error::StreamBusy { .. } => ErrorKind::StreamBusy,
        }
    }
}
