//! Committed offsets of consumer groups: OffsetCommit, OffsetFetch (single-group v1-7 and
//! multi-group v8+) and OffsetDelete. The coordinator validates members and generations;
//! the broker stores the offsets durably.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiKey, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use shardline_broker::CommittedOffset;

use crate::Context;
use crate::codes;
use crate::connection::{Pending, encode_reply};
use crate::handlers::str_bytes;

/// Per topic, each partition's error code, or `None` while it waits for the outcome of
/// the store call shared by the whole request.
type TopicAnswers = (TopicName, Vec<(i32, Option<i16>)>);

/// Whether `stream` has a partition `partition`.
fn partition_exists(context: &Context, stream: &str, partition: i32) -> bool {
    context.broker.has_shard(stream, i64::from(partition))
}

pub(crate) fn offset_commit(
    context: Arc<Context>,
    request: OffsetCommitRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let group_id = request.group_id.0.to_string();
        let metadata_bytes_max = context.groups.config().offset_metadata_bytes_max;
        // Unknown partitions are answered first and never reach the coordinator, as in
        // Kafka; the group is validated only if something is left to commit.
        let mut answers: Vec<TopicAnswers> = Vec::new();
        let mut to_commit = Vec::new();
        let commit_timestamp_ms = context.broker.now_ms();
        for topic in request.topics {
            let stream = topic.name.0.to_string();
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for partition in topic.partitions {
                let index = partition.partition_index;
                let metadata_bytes = partition.committed_metadata.as_ref().map_or(0, |m| m.len());
                let code = if !partition_exists(&context, &stream, index) {
                    Some(codes::UNKNOWN_TOPIC_OR_PARTITION)
                } else if metadata_bytes > metadata_bytes_max {
                    Some(codes::OFFSET_METADATA_TOO_LARGE)
                } else {
                    to_commit.push((
                        stream.clone(),
                        index as u32,
                        CommittedOffset {
                            offset: partition.committed_offset,
                            leader_epoch: if version >= 6 {
                                partition.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: partition.committed_metadata.map(|m| m.to_string()),
                            commit_timestamp_ms,
                        },
                    ));
                    None
                };
                partitions.push((index, code));
            }
            answers.push((topic.name, partitions));
        }
        let outcome = if to_commit.is_empty() {
            codes::NONE
        } else {
            let instance = request.group_instance_id.as_ref().map(StrBytes::as_str);
            match context.groups.validate_offset_commit(
                &group_id,
                request.member_id.as_str(),
                if version >= 7 { instance } else { None },
                request.generation_id_or_member_epoch,
                version,
            ) {
                Err(code) => code,
                Ok(()) => match context.broker.commit_offsets(&group_id, to_commit).await {
                    Ok(()) => codes::NONE,
                    Err(error) => codes::for_offsets_error(&error),
                },
            }
        };
        let topics = answers
            .into_iter()
            .map(|(name, partitions)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, code)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(code.unwrap_or(outcome))
                            })
                            .collect(),
                    )
            })
            .collect();
        let response = OffsetCommitResponse::default().with_topics(topics);
        encode_reply(ApiKey::OffsetCommit, version, correlation_id, &response)
    })
}

/// One fetched position: offset -1, epoch -1 and empty metadata when nothing is committed.
struct Fetched {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
}

/// The committed positions of `group_id`, for the named topics and partitions or, with
/// `None`, for everything the group has committed.
fn fetch_group(
    context: &Context,
    group_id: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Vec<(TopicName, Vec<Fetched>)> {
    let fetched = |committed: Option<CommittedOffset>, partition: i32| match committed {
        Some(committed) => Fetched {
            partition,
            offset: committed.offset,
            leader_epoch: committed.leader_epoch,
            // Kafka answers a null metadata as empty.
            metadata: committed.metadata.unwrap_or_default(),
        },
        None => Fetched {
            partition,
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
        },
    };
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(name, partitions)| {
                let stream = name.0.to_string();
                let answers = partitions
                    .into_iter()
                    .map(|partition| {
                        let committed = u32::try_from(partition).ok().and_then(|shard| {
                            context.broker.committed_offset(group_id, &stream, shard)
                        });
                        fetched(committed, partition)
                    })
                    .collect();
                (name, answers)
            })
            .collect(),
        None => {
            let mut by_stream: BTreeMap<String, Vec<Fetched>> = BTreeMap::new();
            for (stream, shard, committed) in context.broker.committed_offsets(group_id) {
                by_stream
                    .entry(stream)
                    .or_default()
                    .push(fetched(Some(committed), shard as i32));
            }
            by_stream
                .into_iter()
                .map(|(stream, answers)| (TopicName(str_bytes(stream)), answers))
                .collect()
        }
    }
}

pub(crate) fn offset_fetch(
    context: Arc<Context>,
    request: OffsetFetchRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    // require_stable is accepted and ignored: without transactions nothing is pending.
    Box::pin(async move {
        let response = if version >= 8 {
            let groups = request
                .groups
                .into_iter()
                .map(|group| {
                    let topics = group.topics.map(|topics| {
                        topics
                            .into_iter()
                            .map(|topic| (topic.name, topic.partition_indexes))
                            .collect()
                    });
                    let answers = fetch_group(&context, group.group_id.as_str(), topics)
                        .into_iter()
                        .map(|(name, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(name)
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|f| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(f.partition)
                                                .with_committed_offset(f.offset)
                                                .with_committed_leader_epoch(f.leader_epoch)
                                                .with_metadata(Some(str_bytes(f.metadata)))
                                                .with_error_code(codes::NONE)
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    OffsetFetchResponseGroup::default()
                        .with_group_id(group.group_id)
                        .with_topics(answers)
                        .with_error_code(codes::NONE)
                })
                .collect();
            OffsetFetchResponse::default().with_groups(groups)
        } else {
            let topics = request.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|topic| (topic.name, topic.partition_indexes))
                    .collect()
            });
            let answers = fetch_group(&context, request.group_id.as_str(), topics)
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|f| {
                                    let partition = OffsetFetchResponsePartition::default()
                                        .with_partition_index(f.partition)
                                        .with_committed_offset(f.offset)
                                        .with_metadata(Some(str_bytes(f.metadata)))
                                        .with_error_code(codes::NONE);
                                    if version >= 5 {
                                        partition.with_committed_leader_epoch(f.leader_epoch)
                                    } else {
                                        partition
                                    }
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetFetchResponse::default()
                .with_topics(answers)
                .with_error_code(codes::NONE)
        };
        encode_reply(ApiKey::OffsetFetch, version, correlation_id, &response)
    })
}

pub(crate) fn offset_delete(
    context: Arc<Context>,
    request: OffsetDeleteRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let group_id = request.group_id.0.to_string();
        let names: Vec<String> = request
            .topics
            .iter()
            .map(|topic| topic.name.0.to_string())
            .collect();
        let subscribed = match context.groups.offset_delete_check(&group_id, &names) {
            Ok(subscribed) => subscribed,
            Err(code) => {
                let response = OffsetDeleteResponse::default().with_error_code(code);
                return encode_reply(ApiKey::OffsetDelete, version, correlation_id, &response);
            }
        };
        let mut answers: Vec<TopicAnswers> = Vec::new();
        let mut to_delete = Vec::new();
        for ((topic, stream), is_subscribed) in
            request.topics.into_iter().zip(names).zip(subscribed)
        {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let index = partition.partition_index;
                    let code = if !partition_exists(&context, &stream, index) {
                        Some(codes::UNKNOWN_TOPIC_OR_PARTITION)
                    } else if is_subscribed {
                        Some(codes::GROUP_SUBSCRIBED_TO_TOPIC)
                    } else {
                        to_delete.push((stream.clone(), index as u32));
                        None
                    };
                    (index, code)
                })
                .collect();
            answers.push((topic.name, partitions));
        }
        let outcome = match context
            .broker
            .delete_committed_offsets(&group_id, to_delete)
            .await
        {
            Ok(()) => codes::NONE,
            Err(error) => codes::for_offsets_error(&error),
        };
        let topics = answers
            .into_iter()
            .map(|(name, partitions)| {
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, code)| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(code.unwrap_or(outcome))
                            })
                            .collect(),
                    )
            })
            .collect();
        let response = OffsetDeleteResponse::default()
            .with_error_code(codes::NONE)
            .with_topics(topics);
        encode_reply(ApiKey::OffsetDelete, version, correlation_id, &response)
    })
}
