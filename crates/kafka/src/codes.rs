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
/// A committed offset's metadata string is longer than allowed.
pub(crate) const OFFSET_METADATA_TOO_LARGE: i16 = 12;
/// The group coordinator cannot serve right now; clients look it up again.
pub(crate) const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// This node is no longer the coordinator (it is shutting down); clients look it up again.
pub(crate) const NOT_COORDINATOR: i16 = 16;
/// The member's generation is not the group's.
pub(crate) const ILLEGAL_GENERATION: i16 = 22;
/// The member's protocol type or protocols do not fit the group's.
pub(crate) const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
/// The group id is empty.
pub(crate) const INVALID_GROUP_ID: i16 = 24;
/// The member is not (or no longer) in the group.
pub(crate) const UNKNOWN_MEMBER_ID: i16 = 25;
/// The session timeout is outside the range the coordinator allows.
pub(crate) const INVALID_SESSION_TIMEOUT: i16 = 26;
/// The group is rebalancing: the member must rejoin.
pub(crate) const REBALANCE_IN_PROGRESS: i16 = 27;
/// The group still has members.
pub(crate) const NON_EMPTY_GROUP: i16 = 68;
/// No such group.
pub(crate) const GROUP_ID_NOT_FOUND: i16 = 69;
/// First JoinGroup (v4+): rejoin with the member id in this answer (KIP-394).
pub(crate) const MEMBER_ID_REQUIRED: i16 = 79;
/// The group has as many members as allowed.
pub(crate) const GROUP_MAX_SIZE_REACHED: i16 = 81;
/// A newer member took over this static instance id.
pub(crate) const FENCED_INSTANCE_ID: i16 = 82;
/// OffsetDelete of a topic the group's consumers subscribe to.
pub(crate) const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

/// The Kafka error code for an engine error met while storing or deleting committed
/// offsets: clients retry those against a (re)discovered coordinator, as Kafka maps its
/// own offsets-log write failures.
pub(crate) fn for_offsets_error(error: &Error) -> i16 {
    match error.kind() {
        ErrorKind::UnknownStream | ErrorKind::UnknownShard => UNKNOWN_TOPIC_OR_PARTITION,
        ErrorKind::ShuttingDown => COORDINATOR_NOT_AVAILABLE,
        // The engine's size backstop (group id or metadata too long).
        ErrorKind::BatchTooLarge => OFFSET_METADATA_TOO_LARGE,
        _ => NOT_COORDINATOR,
    }
}

/// A partition reassignment (here: a reshard) is under way.
pub(crate) const REASSIGNMENT_IN_PROGRESS: i16 = 60;
/// A request over a quota (Kafka's KIP-599 code).
pub(crate) const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
/// A request the broker's policy refuses.
pub(crate) const POLICY_VIOLATION: i16 = 44;

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
        // Produce re-routes records of closed shards before this can reach a client;
        // elsewhere a refresh shows the children.
        ErrorKind::ShardClosed => NOT_LEADER_OR_FOLLOWER,
        // Kafka requests are delayed, never refused, for throughput; this is unreachable
        // from the Kafka front but mapped to Kafka's own quota error for completeness.
        ErrorKind::Throttled => THROTTLING_QUOTA_EXCEEDED,
        ErrorKind::InvalidReshard => INVALID_PARTITIONS,
        ErrorKind::LimitExceeded => POLICY_VIOLATION,
        // The closest Kafka says to "another change of this topic is under way".
        ErrorKind::StreamBusy => REASSIGNMENT_IN_PROGRESS,
    }
}
