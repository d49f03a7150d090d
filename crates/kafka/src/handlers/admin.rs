//! Admin APIs: CreateTopics, DeleteTopics, DescribeConfigs, DescribeCluster, and
//! InitProducerId for idempotent producers.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use shardline_broker::{ConfigEntry, Error, StreamInfo};

use crate::Context;
use crate::codes;
use crate::connection::{Pending, encode_reply};
use crate::handlers::str_bytes;

/// DescribeConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// DescribeConfigs resource type of a broker.
const RESOURCE_BROKER: i8 = 4;
/// ConfigSource: set on the topic.
const SOURCE_TOPIC: i8 = 1;
/// ConfigSource: from the broker's static configuration.
const SOURCE_STATIC_BROKER: i8 = 4;
/// ConfigSource: a default.
const SOURCE_DEFAULT: i8 = 5;

pub(crate) fn create_topics(
    context: Arc<Context>,
    request: CreateTopicsRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let mut results = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let result = CreatableTopicResult::default().with_name(topic.name.clone());
            // Durability comes from fsync (and object storage), not replicas: accept any
            // replication factor a client may ask for, as a single-node Kafka cannot.
            if topic.replication_factor == 0 || topic.replication_factor < -1 {
                results.push(error_result(
                    result,
                    version,
                    codes::INVALID_REPLICATION_FACTOR,
                    format!("replication factor {} is invalid", topic.replication_factor),
                ));
                continue;
            }
            let shard_count = if topic.assignments.is_empty() {
                i64::from(topic.num_partitions)
            } else {
                topic.assignments.len() as i64
            };
            let mut configs = BTreeMap::new();
            for config in &topic.configs {
                if let Some(value) = &config.value {
                    configs.insert(config.name.to_string(), value.to_string());
                }
            }
            match context
                .broker
                .create_stream(&name, shard_count, configs, request.validate_only)
                .await
            {
                Ok(info) => results.push(created_result(result, version, &info)),
                Err(error) => results.push(error_result(
                    result,
                    version,
                    codes::for_error(&error),
                    error.to_string(),
                )),
            }
        }
        let response = CreateTopicsResponse::default().with_topics(results);
        encode_reply(ApiKey::CreateTopics, version, correlation_id, &response)
    })
}

fn error_result(
    result: CreatableTopicResult,
    version: i16,
    code: i16,
    message: String,
) -> CreatableTopicResult {
    let result = result.with_error_code(code);
    // error_message exists from v1; configs and counts from v5.
    let result = if version >= 1 {
        result.with_error_message(Some(str_bytes(message)))
    } else {
        result
    };
    if version >= 5 {
        result.with_num_partitions(-1).with_replication_factor(-1)
    } else {
        result
    }
}

fn created_result(
    result: CreatableTopicResult,
    version: i16,
    info: &StreamInfo,
) -> CreatableTopicResult {
    let result = result.with_error_code(codes::NONE);
    if version < 5 {
        return result;
    }
    let configs = info
        .config
        .describe(&info.explicit_configs)
        .into_iter()
        .map(|entry| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(entry.name))
                .with_value(Some(str_bytes(entry.value)))
                .with_config_source(if entry.is_explicit {
                    SOURCE_TOPIC
                } else {
                    SOURCE_DEFAULT
                })
        })
        .collect();
    let result = result
        .with_num_partitions(info.shards.len() as i32)
        .with_replication_factor(1)
        .with_configs(Some(configs));
    if version >= 7 {
        result.with_topic_id(uuid::Uuid::from_bytes(info.topic_id))
    } else {
        result
    }
}

pub(crate) fn delete_topics(
    context: Arc<Context>,
    request: DeleteTopicsRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
        let mut targets: Vec<(Option<String>, uuid::Uuid)> = request
            .topic_names
            .iter()
            .map(|name| (Some(name.0.to_string()), uuid::Uuid::nil()))
            .collect();
        targets.extend(request.topics.iter().map(|state| {
            (
                state.name.as_ref().map(|name| name.0.to_string()),
                state.topic_id,
            )
        }));
        let mut results = Vec::with_capacity(targets.len());
        for (name, topic_id) in targets {
            let resolved = match &name {
                Some(name) => Ok(name.clone()),
                None => context
                    .broker
                    .streams()
                    .into_iter()
                    .find(|info| uuid::Uuid::from_bytes(info.topic_id) == topic_id)
                    .map(|info| info.name)
                    .ok_or(codes::UNKNOWN_TOPIC_ID),
            };
            let mut result = DeletableTopicResult::default()
                .with_name(name.clone().map(|name| TopicName(str_bytes(name))));
            if version >= 6 {
                result = result.with_topic_id(topic_id);
            }
            let outcome = match resolved {
                Ok(stream) => context
                    .broker
                    .delete_stream(&stream)
                    .await
                    .map_err(|error| (codes::for_error(&error), error.to_string())),
                Err(code) => Err((code, "no topic with this id".to_owned())),
            };
            result = match outcome {
                Ok(()) => result.with_error_code(codes::NONE),
                Err((code, message)) if version >= 5 => result
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message))),
                Err((code, _)) => result.with_error_code(code),
            };
            results.push(result);
        }
        let response = DeleteTopicsResponse::default().with_responses(results);
        encode_reply(ApiKey::DeleteTopics, version, correlation_id, &response)
    })
}

/// ConfigType (DescribeConfigs v3+) of the configs we report.
fn config_type(name: &str) -> i8 {
    match name {
        "retention.ms"
        | "segment.ms"
        | "retention.bytes"
        | "local.retention.ms"
        | "local.retention.bytes"
        | "log.retention.ms" => 5, // LONG
        "segment.bytes"
        | "max.message.bytes"
        | "min.insync.replicas"
        | "num.partitions"
        | "message.max.bytes" => 3, // INT
        "unclean.leader.election.enable"
        | "message.downconversion.enable"
        | "auto.create.topics.enable" => 1, // BOOLEAN
        "cleanup.policy" => 7, // LIST
        _ => 2,                // STRING
    }
}

pub(crate) fn describe_configs(
    context: Arc<Context>,
    request: DescribeConfigsRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let mut results = Vec::with_capacity(request.resources.len());
        for resource in request.resources {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entries: Result<Vec<(ConfigEntry, i8)>, (i16, String)> = match resource
                .resource_type
            {
                RESOURCE_TOPIC => match context.broker.stream(resource.resource_name.as_str()) {
                    Some(info) => Ok(info
                        .config
                        .describe(&info.explicit_configs)
                        .into_iter()
                        .map(|entry| {
                            let source = if entry.is_explicit {
                                SOURCE_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            (entry, source)
                        })
                        .collect()),
                    None => {
                        let error = Error::UnknownStream(resource.resource_name.to_string());
                        Err((codes::for_error(&error), error.to_string()))
                    }
                },
                RESOURCE_BROKER => Ok(broker_entries(&context)),
                other => Err((
                    codes::INVALID_REQUEST,
                    format!("resource type {other} is not supported"),
                )),
            };
            let result = match entries {
                Ok(entries) => {
                    let wanted = resource.configuration_keys.as_ref();
                    let configs = entries
                        .into_iter()
                        .filter(|(entry, _)| {
                            wanted.is_none_or(|keys| {
                                keys.iter().any(|key| key.as_str() == entry.name)
                            })
                        })
                        .map(|(entry, source)| {
                            let read_only = resource.resource_type == RESOURCE_BROKER;
                            let item = DescribeConfigsResourceResult::default()
                                .with_value(Some(str_bytes(entry.value)))
                                .with_read_only(read_only)
                                .with_config_source(source);
                            let item = if version >= 3 {
                                item.with_config_type(config_type(&entry.name))
                            } else {
                                item
                            };
                            item.with_name(str_bytes(entry.name))
                        })
                        .collect();
                    result.with_error_code(codes::NONE).with_configs(configs)
                }
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message))),
            };
            results.push(result);
        }
        let response = DescribeConfigsResponse::default().with_results(results);
        encode_reply(ApiKey::DescribeConfigs, version, correlation_id, &response)
    })
}

fn broker_entries(context: &Context) -> Vec<(ConfigEntry, i8)> {
    let config = context.broker.config();
    let defaults = config.stream_defaults;
    [
        (
            "auto.create.topics.enable",
            config.auto_create_streams.to_string(),
        ),
        ("num.partitions", config.default_shard_count.to_string()),
        ("log.retention.ms", defaults.retention_ms.to_string()),
        ("log.segment.bytes", defaults.segment_bytes.to_string()),
        ("message.max.bytes", defaults.max_message_bytes.to_string()),
        (
            "socket.request.max.bytes",
            context.config.frame_bytes_max.to_string(),
        ),
    ]
    .into_iter()
    .map(|(name, value)| {
        (
            ConfigEntry {
                name: name.to_owned(),
                value,
                is_explicit: false,
            },
            SOURCE_STATIC_BROKER,
        )
    })
    .collect()
}

pub(crate) fn describe_cluster(
    context: Arc<Context>,
    _request: DescribeClusterRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let node = BrokerId(context.config.node_id);
        let broker = DescribeClusterBroker::default()
            .with_broker_id(node)
            .with_host(str_bytes(context.config.advertised_host.clone()))
            .with_port(i32::from(context.config.advertised_port));
        let response = DescribeClusterResponse::default()
            .with_error_code(codes::NONE)
            .with_cluster_id(str_bytes(context.broker.cluster_id()))
            .with_controller_id(node)
            .with_brokers(vec![broker]);
        encode_reply(ApiKey::DescribeCluster, version, correlation_id, &response)
    })
}

pub(crate) fn init_producer_id(
    context: Arc<Context>,
    request: InitProducerIdRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let response = InitProducerIdResponse::default();
        let response = if request.transactional_id.is_some() {
            // Transactions are not implemented; say so rather than half-support them.
            response
                .with_error_code(codes::UNSUPPORTED_VERSION)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        } else {
            let current = (request.producer_id.0 >= 0)
                .then_some((request.producer_id.0, request.producer_epoch));
            match context.broker.init_producer_id(current).await {
                Ok((producer_id, epoch)) => response
                    .with_error_code(codes::NONE)
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(epoch),
                Err(error) => response
                    .with_error_code(codes::for_error(&error))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            }
        };
        encode_reply(ApiKey::InitProducerId, version, correlation_id, &response)
    })
}

/// CreatePartitions is Kinesis' UpdateShardCount with uniform scaling: the requested
/// count becomes the number of *open* shards. Kafka's rule that the count only grows is
/// kept (it must exceed the current partition count), and the resulting partition count
/// also counts the shards the scaling closed, so it is larger than the count asked for.
pub(crate) fn create_partitions(
    context: Arc<Context>,
    request: CreatePartitionsRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let mut results = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let outcome = match context.broker.stream(&name) {
                None => {
                    let error = Error::UnknownStream(name.clone());
                    Err((codes::for_error(&error), error.to_string()))
                }
                Some(_) if topic.assignments.is_some() => Err((
                    codes::INVALID_REQUEST,
                    "manual replica assignments are not supported: shards are placed by hash range"
                        .to_owned(),
                )),
                Some(info) if topic.count <= info.shards.len() as i32 => Err((
                    codes::INVALID_PARTITIONS,
                    format!(
                        "topic {name} has {} partitions, which is not fewer than the requested {}",
                        info.shards.len(),
                        topic.count
                    ),
                )),
                Some(_) if request.validate_only => Ok(()),
                Some(_) => context
                    .broker
                    .update_shard_count(&name, topic.count as u32)
                    .await
                    .map(drop)
                    .map_err(|error| (codes::for_error(&error), error.to_string())),
            };
            let result = CreatePartitionsTopicResult::default().with_name(topic.name);
            results.push(match outcome {
                Ok(()) => result.with_error_code(codes::NONE),
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message))),
            });
        }
        let response = CreatePartitionsResponse::default().with_results(results);
        encode_reply(ApiKey::CreatePartitions, version, correlation_id, &response)
    })
}

/// One resource's changes: settings to set, settings back to their defaults, and
/// whether the old explicit settings not named are dropped (AlterConfigs replaces the
/// whole set; IncrementalAlterConfigs changes only what it names).
struct ConfigChange {
    resource_type: i8,
    resource_name: StrBytes,
    set: BTreeMap<String, String>,
    remove: Vec<String>,
    replace_all: bool,
    refused: Option<String>,
}

async fn apply_config_change(
    context: &Context,
    change: ConfigChange,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    if let Some(reason) = change.refused {
        return Err((codes::INVALID_CONFIG, reason));
    }
    match change.resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return Err((
                codes::INVALID_REQUEST,
                "broker settings are static: change the server's config file".to_owned(),
            ));
        }
        other => {
            return Err((
                codes::INVALID_REQUEST,
                format!("resource type {other} is not supported"),
            ));
        }
    }
    let name = change.resource_name.to_string();
    let info = context.broker.stream(&name).ok_or_else(|| {
        let error = Error::UnknownStream(name.clone());
        (codes::for_error(&error), error.to_string())
    })?;
    let mut remove = change.remove;
    if change.replace_all {
        remove.extend(
            info.explicit_configs
                .keys()
                .filter(|key| !change.set.contains_key(*key))
                .cloned(),
        );
    }
    context
        .broker
        .alter_stream_configs(&name, change.set, remove, validate_only)
        .await
        .map(drop)
        .map_err(|error| (codes::for_error(&error), error.to_string()))
}

fn alter_result(
    resource_type: i8,
    resource_name: StrBytes,
    outcome: Result<(), (i16, String)>,
) -> AlterConfigsResourceResponse {
    let result = AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(resource_name);
    match outcome {
        Ok(()) => result.with_error_code(codes::NONE),
        Err((code, message)) => result
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message))),
    }
}

/// AlterConfigs (the old, replace-everything form).
pub(crate) fn alter_configs(
    context: Arc<Context>,
    request: AlterConfigsRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let mut responses = Vec::with_capacity(request.resources.len());
        for resource in request.resources {
            let mut set = BTreeMap::new();
            let mut remove = Vec::new();
            for config in resource.configs {
                match config.value {
                    Some(value) => {
                        set.insert(config.name.to_string(), value.to_string());
                    }
                    None => remove.push(config.name.to_string()),
                }
            }
            let change = ConfigChange {
                resource_type: resource.resource_type,
                resource_name: resource.resource_name.clone(),
                set,
                remove,
                replace_all: true,
                refused: None,
            };
            let outcome = apply_config_change(&context, change, request.validate_only).await;
            responses.push(alter_result(
                resource.resource_type,
                resource.resource_name,
                outcome,
            ));
        }
        let response = AlterConfigsResponse::default().with_responses(responses);
        encode_reply(ApiKey::AlterConfigs, version, correlation_id, &response)
    })
}

/// IncrementalAlterConfig operations.
const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;

/// IncrementalAlterConfigs: SET and DELETE; APPEND and SUBTRACT apply to list-valued
/// configs, and the only one here (cleanup.policy) accepts a single value.
pub(crate) fn incremental_alter_configs(
    context: Arc<Context>,
    request: IncrementalAlterConfigsRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let mut responses = Vec::with_capacity(request.resources.len());
        for resource in request.resources {
            let mut set = BTreeMap::new();
            let mut remove = Vec::new();
            let mut refused = None;
            for config in resource.configs {
                let name = config.name.to_string();
                match (config.config_operation, config.value) {
                    (OPERATION_SET, Some(value)) => {
                        set.insert(name, value.to_string());
                    }
                    (OPERATION_SET, None) => {
                        refused.get_or_insert(format!("SET of {name} needs a value"));
                    }
                    (OPERATION_DELETE, _) => remove.push(name),
                    (operation, _) => {
                        refused.get_or_insert(format!(
                            "operation {operation} (APPEND/SUBTRACT) on {name} is not supported: no list-valued config takes more than one value here"
                        ));
                    }
                }
            }
            let change = ConfigChange {
                resource_type: resource.resource_type,
                resource_name: resource.resource_name.clone(),
                set,
                remove,
                replace_all: false,
                refused,
            };
            let outcome = apply_config_change(&context, change, request.validate_only).await;
            // The incremental response has its own (identical) resource type.
            let result =
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name);
            responses.push(match outcome {
                Ok(()) => result.with_error_code(codes::NONE),
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message))),
            });
        }
        let response = IncrementalAlterConfigsResponse::default().with_responses(responses);
        encode_reply(
            ApiKey::IncrementalAlterConfigs,
            version,
            correlation_id,
            &response,
        )
    })
}
