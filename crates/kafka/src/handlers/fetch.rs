//! Fetch: read whole stored batches for each requested partition, long-polling until
//! `min_bytes` are available, any partition errors, or `max_wait_ms` passes. Waiting is
//! woken by appends, not by a timer, so a consumer sees a record as soon as it is durable.
//!
//! Limits (KIP-74): `max_bytes` bounds the response and `partition_max_bytes` each
//! partition, except that the first batch of the first partition with data is returned
//! whole even when larger, so a consumer can always make progress. Every requested
//! partition is listed in the answer, with or without data, because fetch sessions are
//! not used (session id 0) and Java checks full responses for that. The broker caps
//! `max_bytes` at `fetch_bytes_max` (Kafka's `fetch.max.bytes`), and a partition listed
//! more than once is read and answered once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use tokio::time::Instant;

use crate::Context;
use crate::codes;
use crate::connection::{Pending, encode_reply};
use crate::handlers::str_bytes;

/// Upper bound on how long one fetch may be held, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

struct Wanted {
    topic: String,
    partition: i32,
    offset: i64,
    partition_max_bytes: usize,
}

pub(crate) fn handle(
    context: Arc<Context>,
    request: FetchRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
        let deadline = Instant::now() + max_wait;
        let min_bytes = request.min_bytes.max(0) as usize;
        let cap = context.config.fetch_bytes_max;
        let max_bytes = usize::try_from(request.max_bytes)
            .ok()
            .filter(|&asked| asked > 0)
            .map_or(cap, |asked| asked.min(cap));
        // A partition listed twice is fetched once, at its first listing's offset (as
        // Kafka's broker keys a fetch by partition); otherwise one request naming one
        // partition 100,000 times would read it that often and register as many waiters.
        let mut seen = HashSet::new();
        let wanted: Vec<Wanted> = request
            .topics
            .iter()
            .flat_map(|topic| {
                topic.partitions.iter().map(move |partition| Wanted {
                    topic: topic.topic.0.to_string(),
                    partition: partition.partition,
                    offset: partition.fetch_offset,
                    partition_max_bytes: partition.partition_max_bytes.max(0) as usize,
                })
            })
            .filter(|want| seen.insert((want.topic.clone(), want.partition)))
            .collect();
        let targets: Vec<(&str, i64)> = wanted
            .iter()
            .map(|want| (want.topic.as_str(), i64::from(want.partition)))
            .collect();
        loop {
            // Register for wake-ups before reading, so an append between the read and the
            // wait is not missed.
            let woken = context.broker.watch(&targets);
            let pass = read_all(&context, &wanted, max_bytes, version).await;
            let now = Instant::now();
            if pass.total_bytes >= min_bytes || pass.any_error || now >= deadline {
                // Only the pass that is answered is charged to the shards' read limits.
                // Over one: hold the answer (and say so), the Kafka way; clients that
                // honour KIP-219 also wait before their next fetch.
                let throttle_ms = wanted
                    .iter()
                    .zip(&pass.results)
                    .filter_map(|(want, data)| {
                        let bytes = data.records.as_ref().map_or(0, Bytes::len);
                        (bytes > 0).then(|| {
                            context.broker.charge_read(
                                &want.topic,
                                i64::from(want.partition),
                                bytes as u64,
                            )
                        })
                    })
                    .max()
                    .unwrap_or(0);
                if throttle_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(throttle_ms)).await;
                }
                let response = build_response(&wanted, pass.results)
                    .with_throttle_time_ms(i32::try_from(throttle_ms).unwrap_or(i32::MAX));
                return encode_reply(ApiKey::Fetch, version, correlation_id, &response);
            }
            tokio::select! {
                () = woken.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    })
}

/// `log_start_offset` is part of Fetch responses from v5.
const LOG_START_OFFSET_VERSION_MIN: i16 = 5;

/// What one pass over the requested partitions found.
struct Pass {
    results: Vec<PartitionData>,
    total_bytes: usize,
    any_error: bool,
}

async fn read_all(context: &Context, wanted: &[Wanted], max_bytes: usize, version: i16) -> Pass {
    let mut remaining = max_bytes;
    let mut total = 0usize;
    let mut any_error = false;
    let mut results = Vec::with_capacity(wanted.len());
    for want in wanted {
        let data = PartitionData::default()
            .with_partition_index(want.partition)
            .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1));
        // Once the response is full, later partitions are listed without data; the first
        // batch read always fits (KIP-74), so a 1-byte limit still returns one batch.
        let limit = if total == 0 {
            want.partition_max_bytes.min(remaining).max(1)
        } else {
            want.partition_max_bytes.min(remaining)
        };
        let read = if limit == 0 {
            context
                .broker
                .offsets(&want.topic, i64::from(want.partition))
                .map(
                    |(log_start_offset, high_watermark)| shardline_broker::ReadOutcome {
                        records: Bytes::new(),
                        high_watermark,
                        log_start_offset,
                    },
                )
        } else {
            context
                .broker
                .read(&want.topic, i64::from(want.partition), want.offset, limit)
                .await
        };
        let read = match read {
            // Only the response's first batch may exceed its limit (KIP-74); a later
            // partition whose first batch does not fit is listed without data, as
            // Kafka's broker does once `minOneMessage` no longer applies.
            Ok(mut outcome) if total > 0 && outcome.records.len() > limit => {
                outcome.records = Bytes::new();
                Ok(outcome)
            }
            other => other,
        };
        let data = match read {
            Ok(outcome) => {
                let length = outcome.records.len();
                total += length;
                remaining = remaining.saturating_sub(length);
                data.with_error_code(codes::NONE)
                    .with_high_watermark(outcome.high_watermark as i64)
                    // No transactions: the last stable offset is the high watermark, which
                    // read_committed consumers (librdkafka, kafkajs default) stop at.
                    .with_last_stable_offset(outcome.high_watermark as i64)
                    .with_log_start_offset(if version >= LOG_START_OFFSET_VERSION_MIN {
                        outcome.log_start_offset as i64
                    } else {
                        -1
                    })
                    .with_records(Some(outcome.records))
            }
            Err(error) => {
                any_error = true;
                let (log_start_offset, high_watermark) = context
                    .broker
                    .offsets(&want.topic, i64::from(want.partition))
                    .map_or((-1, -1), |(start, high)| (start as i64, high as i64));
                data.with_error_code(codes::for_error(&error))
                    .with_high_watermark(high_watermark)
                    .with_last_stable_offset(high_watermark)
                    .with_log_start_offset(if version >= LOG_START_OFFSET_VERSION_MIN {
                        log_start_offset
                    } else {
                        -1
                    })
                    .with_records(Some(Bytes::new()))
            }
        };
        results.push(data);
    }
    Pass {
        results,
        total_bytes: total,
        any_error,
    }
}

fn build_response(wanted: &[Wanted], results: Vec<PartitionData>) -> FetchResponse {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for (want, data) in wanted.iter().zip(results) {
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == want.topic => last.partitions.push(data),
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes(want.topic.clone())))
                    .with_partitions(vec![data]),
            ),
        }
    }
    FetchResponse::default()
        .with_error_code(codes::NONE)
        .with_session_id(0)
        .with_responses(topics)
}
