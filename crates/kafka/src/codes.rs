//! Kafka error codes used by this front, and the one place engine errors become codes.

use shardline_broker::{Error, ErrorKind};

/// No error.
pub(crate) const NONE: i16 = 0;
/// The requested offset is outside the range kept.
pub(crate) const OFFSET_OUT_OF_RANGE: i16 = 1;
/// A record batch failed its CRC or its lengths disagree.
pub(crate) const CORRUPT_MESSAGE: i16 = 2;
/// Unknown topic or partition.
pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// A record batch exceeds the topic's `max.message.bytes`.
pub(crate) const MESSAGE_TOO_LARGE: i16 = 10;
/// Topic name is not valid.
pub(crate) const INVALID_TOPIC_EXCEPTION: i16 = 17;
/// The client asked for an unsupported API version or feature.
pub(crate) const UNSUPPORTED_VERSION: i16 = 35;
/// The topic exists.
pub(crate) const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Partition count is not valid.
pub(crate) const INVALID_PARTITIONS: i16 = 37;
/// Replication factor is not valid.
pub(crate) const INVALID_REPLICATION_FACTOR: i16 = 38;
/// A config is unknown or out of range.
pub(crate) const INVALID_CONFIG: i16 = 40;
/// The request is malformed in a way the schema cannot express.
pub(crate) const INVALID_REQUEST: i16 = 42;
/// An idempotent producer's sequence is out of order.
pub(crate) const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// An idempotent producer has been fenced by a newer epoch.
pub(crate) const INVALID_PRODUCER_EPOCH: i16 = 47;
/// The local storage behind the partition failed.
pub(crate) const KAFKA_STORAGE_ERROR: i16 = 56;
/// The compression codec is not allowed at this request version.
pub(crate) const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
/// A record batch is well-formed but not acceptable.
pub(crate) const INVALID_RECORD: i16 = 87;
/// No topic with this topic id.
pub(crate) const UNKNOWN_TOPIC_ID: i16 = 100;
/// The server is shutting down or could not serve; clients retry.
pub(crate) const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// The Kafka error code for an engine error.
pub(crate) fn for_error(error: &Error) -> i16 {
    match error.kind() {
        ErrorKind::UnknownStream | ErrorKind::UnknownShard => UNKNOWN_TOPIC_OR_PARTITION,
        ErrorKind::StreamExists => TOPIC_ALREADY_EXISTS,
        ErrorKind::InvalidStreamName => INVALID_TOPIC_EXCEPTION,
        ErrorKind::InvalidConfig => INVALID_CONFIG,
        ErrorKind::InvalidShardCount => INVALID_PARTITIONS,
        ErrorKind::CorruptBatch => CORRUPT_MESSAGE,
        ErrorKind::InvalidBatch => INVALID_RECORD,
        ErrorKind::BatchTooLarge => MESSAGE_TOO_LARGE,
        ErrorKind::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
        ErrorKind::StaleProducerEpoch => INVALID_PRODUCER_EPOCH,
        ErrorKind::OffsetOutOfRange => OFFSET_OUT_OF_RANGE,
        ErrorKind::Storage => KAFKA_STORAGE_ERROR,
        // Retriable with a metadata refresh: clients come back after the restart.
        ErrorKind::ShuttingDown => NOT_LEADER_OR_FOLLOWER,
    }
}
