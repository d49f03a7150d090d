//! Metadata: this node as the only broker, leader of every partition (a shard), with
//! stable topic ids. Unknown topics are created here when auto-creation is on and the
//! client allows it.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use shardline_broker::{Error, StreamInfo};

use crate::Context;
use crate::codes;
use crate::connection::{Pending, encode_reply};
use crate::handlers::str_bytes;

pub(crate) fn handle(
    context: Arc<Context>,
    request: MetadataRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let node = BrokerId(context.config.node_id);
        let requested: Option<Vec<String>> = request.topics.map(|topics| {
            topics
                .into_iter()
                .filter_map(|topic| topic.name.map(|name| name.0.to_string()))
                .collect()
        });
        let topics = match requested {
            // v0 uses an empty list for "all topics"; v1+ uses null.
            None => context
                .broker
                .streams()
                .iter()
                .map(|info| topic(info, node, version))
                .collect(),
            Some(names) if names.is_empty() && version == 0 => context
                .broker
                .streams()
                .iter()
                .map(|info| topic(info, node, version))
                .collect(),
            Some(names) => {
                let mut topics = Vec::with_capacity(names.len());
                for name in names {
                    let found = match context.broker.stream(&name) {
                        Some(info) => Ok(info),
                        // allow_auto_topic_creation exists from v4; older clients imply true.
                        None if version < 4 || request.allow_auto_topic_creation => {
                            context.broker.stream_or_auto_create(&name).await
                        }
                        None => Err(Error::UnknownStream(name.clone())),
                    };
                    topics.push(match found {
                        Ok(info) => topic(&info, node, version),
                        Err(error) => MetadataResponseTopic::default()
                            .with_name(Some(TopicName(str_bytes(name))))
                            .with_error_code(codes::for_error(&error)),
                    });
                }
                topics
            }
        };
        let broker = MetadataResponseBroker::default()
            .with_node_id(node)
            .with_host(str_bytes(context.config.advertised_host.clone()))
            .with_port(i32::from(context.config.advertised_port));
        let response = MetadataResponse::default()
            .with_brokers(vec![broker])
            .with_cluster_id(Some(str_bytes(context.broker.cluster_id())))
            .with_controller_id(node)
            .with_topics(topics);
        encode_reply(ApiKey::Metadata, version, correlation_id, &response)
    })
}

/// Leader epochs are reported from Metadata v7.
const LEADER_EPOCH_VERSION_MIN: i16 = 7;
/// Topic ids are reported from Metadata v10.
const TOPIC_ID_VERSION_MIN: i16 = 10;

fn topic(info: &StreamInfo, node: BrokerId, version: i16) -> MetadataResponseTopic {
    let partitions = info
        .shards
        .iter()
        .map(|shard| {
            let partition = MetadataResponsePartition::default()
                .with_error_code(codes::NONE)
                .with_partition_index(shard.index as i32)
                .with_leader_id(node)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node]);
            if version >= LEADER_EPOCH_VERSION_MIN {
                // One leader that never changes: epoch 0 everywhere (stored batches too).
                partition.with_leader_epoch(0)
            } else {
                partition
            }
        })
        .collect();
    let topic = MetadataResponseTopic::default()
        .with_error_code(codes::NONE)
        .with_name(Some(TopicName(str_bytes(info.name.clone()))))
        .with_partitions(partitions);
    if version >= TOPIC_ID_VERSION_MIN {
        topic.with_topic_id(uuid::Uuid::from_bytes(info.topic_id))
    } else {
        topic
    }
}
