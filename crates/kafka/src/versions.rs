//! Which Kafka APIs this front serves, at which versions.
//!
//! The ranges are chosen so that librdkafka (including the 2.0.2 in Debian's kcat, which
//! checks for exact versions), kafka-python, kafkajs and the Java 3.x/4.x clients all find
//! what they need; see `shared/spec/KAFKA_COMPAT.md` §2. Each range is also clipped to
//! what the `kafka-protocol` crate can decode, so nothing is advertised that would fail
//! to parse.

use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest, HeartbeatRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::Message;

/// One advertised API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Supported {
    pub(crate) key: ApiKey,
    /// Lowest version advertised.
    pub(crate) min: i16,
    /// Highest version advertised.
    pub(crate) max: i16,
    /// Lowest version actually served (Produce advertises 0 but serves 3+).
    pub(crate) served_min: i16,
}

const fn clip<M: Message>(key: ApiKey, min: i16, max: i16) -> Supported {
    let crate_min = M::VERSIONS.min;
    let crate_max = M::VERSIONS.max;
    let served_min = if min > crate_min { min } else { crate_min };
    let max = if max < crate_max { max } else { crate_max };
    Supported {
        key,
        min: served_min,
        max,
        served_min,
    }
}

/// `entry`, advertised from version 0 while served only from its `served_min`.
const fn advertise_from_v0(mut entry: Supported) -> Supported {
    entry.min = 0;
    entry
}

/// The advertised table, in ApiVersions order; built at compile time, as every request
/// looks its API up here.
pub(crate) const TABLE: &[Supported] = &[
    // librdkafka < 2.11.1 enables gzip/snappy/lz4 only if Produce v0 is advertised, so
    // Kafka 4 still advertises 0 and refuses 0-2 (KAFKA-18659). We do the same.
    advertise_from_v0(clip::<ProduceRequest>(ApiKey::Produce, 3, 12)),
    clip::<FetchRequest>(ApiKey::Fetch, 4, 12),
    clip::<ListOffsetsRequest>(ApiKey::ListOffsets, 1, 7),
    clip::<MetadataRequest>(ApiKey::Metadata, 0, 12),
    clip::<ApiVersionsRequest>(ApiKey::ApiVersions, 0, 4),
    clip::<CreateTopicsRequest>(ApiKey::CreateTopics, 2, 7),
    clip::<DeleteTopicsRequest>(ApiKey::DeleteTopics, 1, 6),
    clip::<InitProducerIdRequest>(ApiKey::InitProducerId, 0, 4),
    clip::<OffsetForLeaderEpochRequest>(ApiKey::OffsetForLeaderEpoch, 2, 4),
    clip::<DescribeConfigsRequest>(ApiKey::DescribeConfigs, 1, 4),
    clip::<DescribeClusterRequest>(ApiKey::DescribeCluster, 0, 2),
    clip::<CreatePartitionsRequest>(ApiKey::CreatePartitions, 0, 3),
    clip::<AlterConfigsRequest>(ApiKey::AlterConfigs, 0, 2),
    clip::<IncrementalAlterConfigsRequest>(ApiKey::IncrementalAlterConfigs, 0, 1),
    // Consumer groups, classic protocol (KIP-848's ConsumerGroupHeartbeat is not served).
    clip::<FindCoordinatorRequest>(ApiKey::FindCoordinator, 0, 4),
    clip::<JoinGroupRequest>(ApiKey::JoinGroup, 0, 9),
    clip::<SyncGroupRequest>(ApiKey::SyncGroup, 0, 5),
    clip::<HeartbeatRequest>(ApiKey::Heartbeat, 0, 4),
    clip::<LeaveGroupRequest>(ApiKey::LeaveGroup, 0, 5),
    clip::<OffsetCommitRequest>(ApiKey::OffsetCommit, 2, 9),
    clip::<OffsetFetchRequest>(ApiKey::OffsetFetch, 1, 9),
    clip::<OffsetDeleteRequest>(ApiKey::OffsetDelete, 0, 0),
    clip::<ListGroupsRequest>(ApiKey::ListGroups, 0, 5),
    clip::<DescribeGroupsRequest>(ApiKey::DescribeGroups, 0, 6),
    clip::<DeleteGroupsRequest>(ApiKey::DeleteGroups, 0, 2),
];

/// The advertised entry for `key`, if any.
pub(crate) fn lookup(key: ApiKey) -> Option<Supported> {
    TABLE.iter().find(|entry| entry.key == key).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_exact_version_checks_are_satisfied() {
        // Debian's kcat (librdkafka 2.0.2) needs these exact versions inside the ranges.
        let needs = [
            (ApiKey::Produce, 0),
            (ApiKey::Produce, 3),
            (ApiKey::Produce, 7),
            (ApiKey::Fetch, 4),
            (ApiKey::Fetch, 10),
            (ApiKey::ListOffsets, 1),
            (ApiKey::InitProducerId, 0),
            // The balanced consumer (and LZ4 detection, which checks FindCoordinator 0).
            (ApiKey::FindCoordinator, 0),
            (ApiKey::OffsetCommit, 2),
            (ApiKey::OffsetFetch, 1),
            (ApiKey::JoinGroup, 0),
            (ApiKey::SyncGroup, 0),
            (ApiKey::Heartbeat, 0),
            (ApiKey::LeaveGroup, 0),
        ];
        for (key, version) in needs {
            let entry = lookup(key).unwrap();
            assert!(
                entry.min <= version && version <= entry.max,
                "{key:?} v{version}"
            );
        }
    }

    #[test]
    fn every_advertised_api_has_a_guard_walker() {
        for entry in TABLE {
            if entry.key == ApiKey::ApiVersions {
                continue; // decoded directly, before the walker (KIP-511)
            }
            for version in entry.served_min..=entry.max {
                let walked = crate::guard::check(entry.key, version, &[]);
                assert!(
                    walked != Err(crate::guard::GuardError::NoWalker),
                    "{:?} v{version} has no walker",
                    entry.key
                );
            }
        }
    }

    #[test]
    fn java_4_minimums_are_met() {
        for (key, java_min) in [
            (ApiKey::Produce, 3),
            (ApiKey::Fetch, 4),
            (ApiKey::ListOffsets, 1),
            (ApiKey::CreateTopics, 2),
            (ApiKey::DeleteTopics, 1),
            (ApiKey::DescribeConfigs, 1),
            (ApiKey::OffsetCommit, 2),
            (ApiKey::OffsetFetch, 1),
        ] {
            assert!(lookup(key).unwrap().max >= java_min);
        }
    }
}
