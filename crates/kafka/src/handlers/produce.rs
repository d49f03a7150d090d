//! Produce: validate each partition's record batch, queue it with the broker in request
//! order, and answer once every partition's append is durable (or at once for acks=0).
//!
//! A Kafka partition never becomes unwritable, even after a reshard closed its shard:
//! clients refresh metadata lazily and must not lose records or see fatal errors. The
//! broker re-routes records sent to a closed shard by key (`Broker::append_to_closed`),
//! and the answer is error NONE with base offset -1 — the records were stored, but not at
//! offsets of the partition the client named.

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use shardline_broker::{Error, ErrorKind, PendingAppend};
use shardline_core::batch::{BatchHeader, Compression};

use crate::Context;
use crate::codes;
use crate::connection::{Pending, Reply, encode_reply, ready};
use crate::handlers::str_bytes;

/// Zstandard batches need Produce v7 or later (KIP-110).
const ZSTD_PRODUCE_VERSION_MIN: i16 = 7;

enum Outcome {
    Queued(PendingAppend),
    /// Stored in the open shards that own the records' keys.
    Rerouted {
        throttle_ms: u64,
    },
    Failed(i16, String),
}

fn failed(error: &Error) -> Outcome {
    Outcome::Failed(codes::for_error(error), error.to_string())
}

pub(crate) async fn handle(
    context: Arc<Context>,
    request: ProduceRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    let acks = request.acks;
    if !matches!(acks, -1..=1) {
        return ready(Reply::Close(format!("produce with invalid acks {acks}")));
    }
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let known = context.broker.stream_or_auto_create(&name).await;
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let outcome = match (&known, partition.records) {
                (Err(error), _) => failed(error),
                (Ok(_), None) => Outcome::Failed(codes::INVALID_RECORD, "no records".to_owned()),
                (Ok(_), Some(records)) => {
                    queue(&context, &name, partition.index, records, version).await
                }
            };
            partitions.push((partition.index, outcome));
        }
        topics.push((name, partitions));
    }
    // Over a shard's write limit the records are still taken; the answer is held long
    // enough to bring the producer back to the shard's rate (Kafka's quota behaviour).
    let throttle_ms = topics
        .iter()
        .flat_map(|(_, partitions)| partitions.iter())
        .filter_map(|(_, outcome)| match outcome {
            Outcome::Queued(pending) => Some(pending.throttle_ms()),
            Outcome::Rerouted { throttle_ms } => Some(*throttle_ms),
            Outcome::Failed(..) => None,
        })
        .max()
        .unwrap_or(0);
    if acks == 0 {
        // The client expects no answer; appends still complete in the background. To slow
        // it down all the same, stop reading its connection for the throttle time.
        if throttle_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(throttle_ms)).await;
        }
        return ready(Reply::Silent);
    }
    // The delay is the shard's whole debt as of this request, so it counts from now: a
    // reply queued behind earlier throttled replies on the connection must not wait its
    // delay again after theirs (that would throttle pipelined producers several times
    // over).
    let hold_until = tokio::time::Instant::now() + std::time::Duration::from_millis(throttle_ms);
    Box::pin(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for (index, outcome) in partitions {
                // (base offset, log start offset), or the error.
                let result: Result<(i64, i64), (i16, String)> = match outcome {
                    Outcome::Queued(pending) => pending
                        .wait()
                        .await
                        .map(|appended| {
                            (
                                appended.base_offset as i64,
                                appended.log_start_offset as i64,
                            )
                        })
                        .map_err(|error| (codes::for_error(&error), error.to_string())),
                    // Stored, but not at an offset of this partition: see the module docs.
                    Outcome::Rerouted { .. } => Ok((-1, -1)),
                    Outcome::Failed(code, message) => Err((code, message)),
                };
                let response = match result {
                    // log_start_offset is part of the response from v5.
                    Ok((base_offset, log_start_offset)) => PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(codes::NONE)
                        .with_base_offset(base_offset)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(if version >= 5 { log_start_offset } else { -1 }),
                    Err((code, message)) => {
                        let response = PartitionProduceResponse::default()
                            .with_index(index)
                            .with_error_code(code)
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1);
                        if version >= 8 {
                            response.with_error_message(Some(str_bytes(message)))
                        } else {
                            response
                        }
                    }
                };
                partition_responses.push(response);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(kafka_protocol::messages::TopicName(str_bytes(name)))
                    .with_partition_responses(partition_responses),
            );
        }
        if throttle_ms > 0 {
            tokio::time::sleep_until(hold_until).await;
        }
        let response = ProduceResponse::default()
            .with_responses(responses)
            .with_throttle_time_ms(i32::try_from(throttle_ms).unwrap_or(i32::MAX));
        encode_reply(ApiKey::Produce, version, correlation_id, &response)
    })
}

async fn queue(
    context: &Context,
    stream: &str,
    partition: i32,
    records: bytes::Bytes,
    version: i16,
) -> Outcome {
    if version < ZSTD_PRODUCE_VERSION_MIN
        && let Ok(header) = BatchHeader::parse(&records)
        && header.compression() == Compression::Zstd
    {
        return Outcome::Failed(
            codes::UNSUPPORTED_COMPRESSION_TYPE,
            "zstd needs Produce v7 or later".to_owned(),
        );
    }
    // The one copy on the write path: the request buffer is shared, and the broker writes
    // the assigned base offset into the batch.
    let batch = BytesMut::from(&records[..]);
    match context
        .broker
        .append(stream, i64::from(partition), batch)
        .await
    {
        Ok(pending) => Outcome::Queued(pending),
        Err(error) if error.kind() == ErrorKind::ShardClosed => {
            match context
                .broker
                .append_to_closed(stream, partition as u32, records)
                .await
            {
                Ok(rerouted) => Outcome::Rerouted {
                    throttle_ms: rerouted.throttle_ms,
                },
                Err(error) => failed(&error),
            }
        }
        Err(error) => failed(&error),
    }
}
