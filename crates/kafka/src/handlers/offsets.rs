//! ListOffsets (earliest, latest, by timestamp) and OffsetForLeaderEpoch (always epoch 0).

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ApiKey, ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use crate::Context;
use crate::codes;
use crate::connection::{Pending, encode_reply};

/// ListOffsets timestamp meaning "the next offset to be written".
const LATEST: i64 = -1;
/// ListOffsets timestamp meaning "the first offset kept".
const EARLIEST: i64 = -2;

pub(crate) fn list_offsets(
    context: Arc<Context>,
    request: ListOffsetsRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for partition in topic.partitions {
                let index = i64::from(partition.partition_index);
                let found = match partition.timestamp {
                    LATEST => context
                        .broker
                        .offsets(&name, index)
                        .map(|(_, high)| Some(high)),
                    EARLIEST => context
                        .broker
                        .offsets(&name, index)
                        .map(|(start, _)| Some(start)),
                    timestamp if timestamp >= 0 => {
                        context
                            .broker
                            .offset_for_timestamp(&name, index, timestamp)
                            .await
                    }
                    // -3 (max timestamp) and the tiered specials are not served yet.
                    _ => {
                        partitions.push(
                            ListOffsetsPartitionResponse::default()
                                .with_partition_index(partition.partition_index)
                                .with_error_code(codes::UNSUPPORTED_VERSION)
                                .with_timestamp(-1)
                                .with_offset(-1),
                        );
                        continue;
                    }
                };
                let response = ListOffsetsPartitionResponse::default()
                    .with_partition_index(partition.partition_index)
                    .with_timestamp(-1);
                partitions.push(match found {
                    // leader_epoch exists from v4; elsewhere it must keep its default.
                    Ok(Some(offset)) if version >= 4 => response
                        .with_error_code(codes::NONE)
                        .with_offset(offset as i64)
                        .with_leader_epoch(0),
                    Ok(Some(offset)) => response
                        .with_error_code(codes::NONE)
                        .with_offset(offset as i64),
                    // No record at or after the timestamp: Kafka answers offset -1.
                    Ok(None) => response.with_error_code(codes::NONE).with_offset(-1),
                    Err(error) => response
                        .with_error_code(codes::for_error(&error))
                        .with_offset(-1),
                });
            }
            topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        let response = ListOffsetsResponse::default().with_topics(topics);
        encode_reply(ApiKey::ListOffsets, version, correlation_id, &response)
    })
}

pub(crate) fn offset_for_leader_epoch(
    context: Arc<Context>,
    request: OffsetForLeaderEpochRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let name = topic.topic.0.to_string();
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        let answer = EpochEndOffset::default().with_partition(partition.partition);
                        match context
                            .broker
                            .offsets(&name, i64::from(partition.partition))
                        {
                            // The only epoch there has ever been is 0, so it ends at the
                            // high watermark.
                            Ok((_, high_watermark)) => answer
                                .with_error_code(codes::NONE)
                                .with_leader_epoch(0)
                                .with_end_offset(high_watermark as i64),
                            Err(error) => answer
                                .with_error_code(codes::for_error(&error))
                                .with_leader_epoch(-1)
                                .with_end_offset(-1),
                        }
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic.topic)
                    .with_partitions(partitions)
            })
            .collect();
        let response = OffsetForLeaderEpochResponse::default().with_topics(topics);
        encode_reply(
            ApiKey::OffsetForLeaderEpoch,
            version,
            correlation_id,
            &response,
        )
    })
}
