//! The operations: parse the JSON input, call the broker, shape the JSON answer.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shardline_broker::{CapacityMode, ShardInfo, StreamInfo};
use shardline_core::ShardId;
use shardline_core::sequence::{ENDING_COUNTER, SequenceNumber};

use crate::model::{
    AddTagsInput, CreateStreamInput, DescribeStreamInput, HashKeyRangeJson, ListShardsInput,
    ListStreamsInput, ListTagsInput, MergeShardsInput, RemoveTagsInput, RetentionInput,
    SequenceNumberRangeJson, ShardJson, SplitShardInput, StreamRef, UpdateShardCountInput,
    UpdateStreamModeInput,
};
use crate::validate::{HASH_KEY_PATTERN, Violations, is_decimal};
use crate::{Answer, ApiError, Kinesis};

/// Most shards one DescribeStream or ListShards page returns (AWS: 100 and 1000).
const DESCRIBE_SHARDS_MAX: usize = 100;
const LIST_SHARDS_MAX: usize = 1000;
/// Most stream names one ListStreams page returns.
const LIST_STREAMS_MAX: usize = 100;
/// How long a ListShards NextToken stays valid, as on AWS.
const NEXT_TOKEN_LIFETIME_MS: i64 = 300_000;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::serialization(format!("cannot read the request: {error}")))
}

pub(crate) async fn dispatch(
    front: &Kinesis,
    operation: &str,
    body: &[u8],
) -> Result<Answer, ApiError> {
    match operation {
        "CreateStream" => create_stream(front, parse(body)?).await,
        "DeleteStream" => delete_stream(front, parse(body)?).await,
        "ListStreams" => list_streams(front, parse(body)?),
        "DescribeStream" => describe_stream(front, parse(body)?),
        "DescribeStreamSummary" => describe_stream_summary(front, parse(body)?),
        "ListShards" => list_shards(front, parse(body)?),
        "SplitShard" => split_shard(front, parse(body)?).await,
        "MergeShards" => merge_shards(front, parse(body)?).await,
        "UpdateShardCount" => update_shard_count(front, parse(body)?).await,
        "UpdateStreamMode" => update_stream_mode(front, parse(body)?).await,
        "IncreaseStreamRetentionPeriod" => change_retention(front, parse(body)?, true).await,
        "DecreaseStreamRetentionPeriod" => change_retention(front, parse(body)?, false).await,
        "AddTagsToStream" => add_tags(front, parse(body)?).await,
        "RemoveTagsFromStream" => remove_tags(front, parse(body)?).await,
        "ListTagsForStream" => list_tags(front, parse(body)?),
        "PutRecord" => crate::put::put_record(front, parse(body)?).await,
        "PutRecords" => crate::put::put_records(front, parse(body)?).await,
        other => Err(ApiError::unknown_operation(format!(
            "operation {other} is not supported by this server"
        ))),
    }
}

/// The stream a request names, by StreamName or StreamARN.
fn stream_name(reference: &StreamRef) -> Result<String, ApiError> {
    match (&reference.stream_name, &reference.stream_arn) {
        (Some(name), _) => Ok(name.clone()),
        (None, Some(arn)) => arn
            .rsplit_once(":stream/")
            .map(|(_, name)| name.to_owned())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                ApiError::invalid_argument(format!("{arn} is not a Kinesis stream ARN"))
            }),
        (None, None) => Err(ApiError::invalid_argument(
            "either StreamName or StreamARN must be given",
        )),
    }
}

/// The published layout of the stream a request names, or AWS's not-found error.
pub(crate) fn stream(front: &Kinesis, reference: &StreamRef) -> Result<StreamInfo, ApiError> {
    let name = stream_name(reference)?;
    front.broker().stream(&name).ok_or_else(|| {
        ApiError::not_found(format!(
            "Stream {name} under account {} not found.",
            front.config().account_id
        ))
    })
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn shard_json(shard: &ShardInfo) -> ShardJson {
    let created_secs = (shard.created_ms / 1000) as u64;
    let starting = SequenceNumber {
        shard_created_secs: created_secs,
        shard_index: shard.index,
        counter: 0,
        record_secs: created_secs,
    };
    let ending = shard.closed_ms.map(|closed_ms| {
        SequenceNumber {
            shard_created_secs: created_secs,
            shard_index: shard.index,
            counter: ENDING_COUNTER,
            record_secs: (closed_ms / 1000) as u64,
        }
        .to_string()
    });
    ShardJson {
        shard_id: ShardId(shard.index).to_string(),
        parent_shard_id: shard.parent.map(|parent| ShardId(parent).to_string()),
        adjacent_parent_shard_id: shard
            .adjacent_parent
            .map(|parent| ShardId(parent).to_string()),
        hash_key_range: HashKeyRangeJson {
            starting_hash_key: shard.range.start.to_string(),
            ending_hash_key: shard.range.end.to_string(),
        },
        sequence_number_range: SequenceNumberRangeJson {
            starting_sequence_number: starting.to_string(),
            ending_sequence_number: ending,
        },
    }
}

fn mode_name(stream: &StreamInfo) -> &'static str {
    match stream.config.capacity_mode {
        CapacityMode::OnDemand => "ON_DEMAND",
        CapacityMode::Provisioned | CapacityMode::Unlimited => "PROVISIONED",
    }
}

fn mode_json(stream: &StreamInfo) -> Value {
    json!({ "StreamMode": mode_name(stream) })
}

/// Shards Kinesis would list: every shard but closed ones whose data has all expired.
fn live_shards<'a>(front: &Kinesis, stream: &'a StreamInfo) -> Vec<&'a ShardInfo> {
    stream
        .shards
        .iter()
        .filter(|shard| {
            !front
                .broker()
                .is_expired(&stream.name, shard.index, front.broker().now_ms())
                .unwrap_or(false)
        })
        .collect()
}

pub(crate) fn broker_error(front: &Kinesis) -> impl Fn(shardline_broker::Error) -> ApiError + '_ {
    move |error| ApiError::from_broker(&error, &front.config().account_id)
}

/// Shards created by CreateStream with ON_DEMAND and no ShardCount, as AWS does.
const ON_DEMAND_INITIAL_SHARDS: i64 = 4;
/// Most tags one AddTagsToStream call may add.
const TAGS_PER_CALL_MAX: usize = 10;
/// Most tags a stream may carry.
const TAGS_PER_STREAM_MAX: usize = 50;

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 {
            return Err(ApiError::invalid_argument(format!(
                "tag key {key:?} must be 1 to 128 characters"
            )));
        }
        if value.chars().count() > 256 {
            return Err(ApiError::invalid_argument(format!(
                "tag value for {key:?} must be at most 256 characters"
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::invalid_argument(format!(
                "tag key {key:?} uses the reserved prefix aws:"
            )));
        }
    }
    Ok(())
}

fn parse_mode(mode: &str) -> Result<CapacityMode, ApiError> {
    match mode {
        "PROVISIONED" => Ok(CapacityMode::Provisioned),
        "ON_DEMAND" => Ok(CapacityMode::OnDemand),
        other => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'streamModeDetails.streamMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]"
        ))),
    }
}

async fn create_stream(front: &Kinesis, input: CreateStreamInput) -> Result<Answer, ApiError> {
    let mode = input
        .stream_mode_details
        .as_ref()
        .map(|details| parse_mode(&details.stream_mode))
        .transpose()?;
    let tags = input.tags.unwrap_or_default();
    if tags.len() > TAGS_PER_STREAM_MAX {
        return Err(ApiError::invalid_argument(format!(
            "at most {TAGS_PER_STREAM_MAX} tags per stream"
        )));
    }
    check_tags(&tags)?;
    let shard_count = match (input.shard_count, mode) {
        (Some(count), _) => count,
        (None, Some(CapacityMode::OnDemand)) => ON_DEMAND_INITIAL_SHARDS,
        (None, _) => {
            return Err(ApiError::invalid_argument(
                "ShardCount is required for a PROVISIONED stream",
            ));
        }
    };
    if shard_count < 1 {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{shard_count}' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1"
        )));
    }
    let mut configs = BTreeMap::new();
    if let Some(mode) = mode {
        configs.insert("capacity.mode".to_owned(), mode.as_str().to_owned());
    }
    front
        .broker()
        .create_stream(&input.stream_name, shard_count, configs, false)
        .await
        .map_err(broker_error(front))?;
    if !tags.is_empty() {
        front
            .broker()
            .change_tags(&input.stream_name, tags, Vec::new())
            .await
            .map_err(broker_error(front))?;
    }
    Ok(Answer::ok(&json!({})))
}

async fn delete_stream(front: &Kinesis, input: StreamRef) -> Result<Answer, ApiError> {
    // A missing stream is the broker's UnknownStream, mapped to AWS's not-found below.
    let name = stream_name(&input)?;
    front
        .broker()
        .delete_stream(&name)
        .await
        .map_err(|error| ApiError::from_broker(&error, &front.config().account_id))?;
    Ok(Answer::ok(&json!({})))
}

fn list_streams(front: &Kinesis, input: ListStreamsInput) -> Result<Answer, ApiError> {
    let limit = input.limit.unwrap_or(LIST_STREAMS_MAX as i64);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value between 1 and 10000"
        )));
    }
    let limit = (limit as usize).min(LIST_STREAMS_MAX);
    let start_after = input
        .next_token
        .as_deref()
        .map(|token| decode_token(token, front.broker().now_ms()))
        .transpose()?
        .map(|(name, _)| name)
        .or(input.exclusive_start_stream_name);
    let mut streams = front.broker().streams();
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    let remaining: Vec<StreamInfo> = streams
        .into_iter()
        .filter(|stream| {
            start_after
                .as_ref()
                .is_none_or(|after| stream.name > *after)
        })
        .collect();
    let page = &remaining[..remaining.len().min(limit)];
    let has_more = remaining.len() > page.len();
    let mut answer = json!({
        "StreamNames": page.iter().map(|stream| stream.name.clone()).collect::<Vec<_>>(),
        "HasMoreStreams": has_more,
        "StreamSummaries": page.iter().map(|stream| json!({
            "StreamName": stream.name,
            "StreamARN": front.arn(&stream.name),
            "StreamStatus": stream.status.as_str(),
            "StreamModeDetails": mode_json(stream),
            "StreamCreationTimestamp": seconds(stream.created_ms),
        })).collect::<Vec<_>>(),
    });
    if has_more && let Some(last) = page.last() {
        answer["NextToken"] = json!(encode_token(&last.name, front.broker().now_ms()));
    }
    Ok(Answer::ok(&answer))
}

fn retention_hours(stream: &StreamInfo) -> i64 {
    stream.config.retention_ms / 3_600_000
}

fn describe_stream(front: &Kinesis, input: DescribeStreamInput) -> Result<Answer, ApiError> {
    let stream = stream(front, &input.stream)?;
    let limit = input.limit.unwrap_or(DESCRIBE_SHARDS_MAX as i64);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value between 1 and 10000"
        )));
    }
    let after = input
        .exclusive_start_shard_id
        .as_deref()
        .map(parse_shard_id)
        .transpose()?;
    let shards: Vec<&ShardInfo> = live_shards(front, &stream)
        .into_iter()
        .filter(|shard| after.is_none_or(|after| shard.index > after))
        .collect();
    let page = &shards[..shards.len().min((limit as usize).min(DESCRIBE_SHARDS_MAX))];
    Ok(Answer::ok(&json!({
        "StreamDescription": {
            "StreamName": stream.name,
            "StreamARN": front.arn(&stream.name),
            "StreamStatus": stream.status.as_str(),
            "StreamModeDetails": mode_json(&stream),
            "Shards": page.iter().map(|shard| shard_json(shard)).collect::<Vec<_>>(),
            "HasMoreShards": shards.len() > page.len(),
            "RetentionPeriodHours": retention_hours(&stream),
            "StreamCreationTimestamp": seconds(stream.created_ms),
            "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
            "EncryptionType": "NONE",
        }
    })))
}

fn describe_stream_summary(front: &Kinesis, input: StreamRef) -> Result<Answer, ApiError> {
    let stream = stream(front, &input)?;
    Ok(Answer::ok(&json!({
        "StreamDescriptionSummary": {
            "StreamName": stream.name,
            "StreamARN": front.arn(&stream.name),
            "StreamStatus": stream.status.as_str(),
            "StreamModeDetails": mode_json(&stream),
            "RetentionPeriodHours": retention_hours(&stream),
            "StreamCreationTimestamp": seconds(stream.created_ms),
            "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
            "EncryptionType": "NONE",
            "OpenShardCount": stream.shards.iter().filter(|shard| shard.is_open()).count(),
            "ConsumerCount": 0,
        }
    })))
}

fn parse_shard_id(text: &str) -> Result<u32, ApiError> {
    text.parse::<ShardId>()
        .map(|id| id.0)
        .map_err(ApiError::invalid_argument)
}

/// NextToken: opaque to clients; here the hex of "<created ms>/<key>" so it can expire.
fn encode_token(key: &str, issued_ms: i64) -> String {
    format!("{issued_ms}/{key}")
        .bytes()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn decode_token(token: &str, now_ms: i64) -> Result<(String, i64), ApiError> {
    let invalid = || ApiError::invalid_argument(format!("invalid NextToken {token:?}"));
    // Non-ASCII text would put a two-byte slice inside a character (a panic).
    if !token.is_ascii() || !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&token[at..at + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_not_hex| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_not_utf8| invalid())?;
    let (issued, key) = text.split_once('/').ok_or_else(invalid)?;
    let issued: i64 = issued.parse().map_err(|_not_a_number| invalid())?;
    if now_ms.saturating_sub(issued) > NEXT_TOKEN_LIFETIME_MS {
        return Err(ApiError::expired_next_token(format!(
            "The timestamp sent ({issued}) is expired; NextToken is valid for 300 seconds."
        )));
    }
    Ok((key.to_owned(), issued))
}

fn list_shards(front: &Kinesis, input: ListShardsInput) -> Result<Answer, ApiError> {
    let has_stream = input.stream.stream_name.is_some() || input.stream.stream_arn.is_some();
    let (stream, after) = match &input.next_token {
        Some(token) => {
            if has_stream
                || input.exclusive_start_shard_id.is_some()
                || input.shard_filter.is_some()
            {
                return Err(ApiError::invalid_argument(
                    "NextToken and StreamName/StreamARN, ExclusiveStartShardId or ShardFilter cannot be given together",
                ));
            }
            let (key, _) = decode_token(token, front.broker().now_ms())?;
            let (name, last) = key
                .rsplit_once('/')
                .ok_or_else(|| ApiError::invalid_argument("invalid NextToken"))?;
            let stream = stream(
                front,
                &StreamRef {
                    stream_name: Some(name.to_owned()),
                    stream_arn: None,
                },
            )?;
            (stream, Some(parse_shard_id(last)?))
        }
        None => {
            let stream = stream(front, &input.stream)?;
            let after = input
                .exclusive_start_shard_id
                .as_deref()
                .map(parse_shard_id)
                .transpose()?;
            (stream, after)
        }
    };
    if let Some(created) = input.stream_creation_timestamp
        && (created * 1000.0) as i64 / 1000 != stream.created_ms / 1000
    {
        return Err(ApiError::not_found(format!(
            "Stream {} with creation timestamp {created} not found.",
            stream.name
        )));
    }
    let max_results = input.max_results.unwrap_or(LIST_SHARDS_MAX as i64);
    if !(1..=10_000).contains(&max_results) {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 10000"
        )));
    }
    let filter_after = match &input.shard_filter {
        Some(filter) if filter.kind == "AFTER_SHARD_ID" => {
            Some(parse_shard_id(filter.shard_id.as_deref().ok_or_else(
                || ApiError::invalid_argument("ShardFilter AFTER_SHARD_ID needs a ShardId"),
            )?)?)
        }
        _ => None,
    };
    let live = live_shards(front, &stream);
    let live_indexes: Vec<u32> = live.iter().map(|shard| shard.index).collect();
    let timestamp_ms = input
        .shard_filter
        .as_ref()
        .and_then(|filter| filter.timestamp)
        .map(|seconds| (seconds * 1000.0) as i64);
    let kind = input
        .shard_filter
        .as_ref()
        .map(|filter| filter.kind.as_str());
    let keep: Box<dyn Fn(&ShardInfo) -> bool> = match kind {
        None | Some("FROM_TRIM_HORIZON" | "AFTER_SHARD_ID") => Box::new(|_| true),
        Some("AT_LATEST") => Box::new(ShardInfo::is_open),
        // The oldest generation still holding data: shards none of whose parents remain.
        Some("AT_TRIM_HORIZON") => Box::new(|shard: &ShardInfo| {
            [shard.parent, shard.adjacent_parent]
                .into_iter()
                .flatten()
                .all(|parent| !live_indexes.contains(&parent))
        }),
        Some(kind @ ("AT_TIMESTAMP" | "FROM_TIMESTAMP")) => {
            let at = timestamp_ms.ok_or_else(|| {
                ApiError::invalid_argument(format!("ShardFilter {kind} needs a Timestamp"))
            })?;
            if kind == "AT_TIMESTAMP" {
                Box::new(move |shard: &ShardInfo| {
                    shard.created_ms <= at && shard.closed_ms.is_none_or(|closed| closed > at)
                })
            } else {
                Box::new(move |shard: &ShardInfo| shard.closed_ms.is_none_or(|closed| closed >= at))
            }
        }
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'shardFilter.type' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]"
            )));
        }
    };
    let shards: Vec<&ShardInfo> = live
        .iter()
        .copied()
        .filter(|shard| after.is_none_or(|after| shard.index > after))
        .filter(|shard| filter_after.is_none_or(|after| shard.index > after))
        .filter(|shard| keep(shard))
        .collect();
    let page = &shards[..shards
        .len()
        .min((max_results as usize).min(LIST_SHARDS_MAX))];
    let mut answer = json!({
        "Shards": page.iter().map(|shard| shard_json(shard)).collect::<Vec<_>>(),
    });
    if shards.len() > page.len()
        && let Some(last) = page.last()
    {
        answer["NextToken"] = json!(encode_token(
            &format!("{}/{}", stream.name, ShardId(last.index)),
            front.broker().now_ms()
        ));
    }
    Ok(Answer::ok(&answer))
}

fn parse_hash_key(text: &str) -> Result<u128, ApiError> {
    if !is_decimal(text, 39) {
        let mut violations = Violations::default();
        violations.pattern(text, "newStartingHashKey", HASH_KEY_PATTERN);
        violations.finish()?;
    }
    text.parse::<u128>().map_err(|error| {
        ApiError::invalid_argument(format!("hash key {text} is larger than 2^128 - 1: {error}"))
    })
}

fn check_provisioned(stream: &StreamInfo, operation: &str) -> Result<(), ApiError> {
    if stream.config.capacity_mode == CapacityMode::OnDemand {
        return Err(ApiError::invalid_argument(format!(
            "{operation} is not supported for stream {} in ON_DEMAND mode",
            stream.name
        )));
    }
    Ok(())
}

async fn split_shard(front: &Kinesis, input: SplitShardInput) -> Result<Answer, ApiError> {
    let stream = stream(front, &input.stream)?;
    check_provisioned(&stream, "SplitShard")?;
    let shard = parse_shard_id(&input.shard_to_split)?;
    let key = parse_hash_key(&input.new_starting_hash_key)?;
    front
        .broker()
        .split_shard(&stream.name, shard, key)
        .await
        .map_err(broker_error(front))?;
    Ok(Answer::ok(&json!({})))
}

async fn merge_shards(front: &Kinesis, input: MergeShardsInput) -> Result<Answer, ApiError> {
    let stream = stream(front, &input.stream)?;
    check_provisioned(&stream, "MergeShards")?;
    let shard = parse_shard_id(&input.shard_to_merge)?;
    let adjacent = parse_shard_id(&input.adjacent_shard_to_merge)?;
    front
        .broker()
        .merge_shards(&stream.name, shard, adjacent)
        .await
        .map_err(broker_error(front))?;
    Ok(Answer::ok(&json!({})))
}

async fn update_shard_count(
    front: &Kinesis,
    input: UpdateShardCountInput,
) -> Result<Answer, ApiError> {
    if input.scaling_type != "UNIFORM_SCALING" {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{}' at 'scalingType' failed to satisfy constraint: Member must satisfy enum value set: [UNIFORM_SCALING]",
            input.scaling_type
        )));
    }
    let stream = stream(front, &input.stream)?;
    check_provisioned(&stream, "UpdateShardCount")?;
    let target = u32::try_from(input.target_shard_count)
        .ok()
        .filter(|target| *target >= 1)
        .ok_or_else(|| {
            ApiError::validation(format!(
                "1 validation error detected: Value '{}' at 'targetShardCount' failed to satisfy constraint: Member must have value greater than or equal to 1",
                input.target_shard_count
            ))
        })?;
    let (current, target) = front
        .broker()
        .update_shard_count(&stream.name, target)
        .await
        .map_err(broker_error(front))?;
    Ok(Answer::ok(&json!({
        "StreamName": stream.name,
        "StreamARN": front.arn(&stream.name),
        "CurrentShardCount": current,
        "TargetShardCount": target,
    })))
}

async fn update_stream_mode(
    front: &Kinesis,
    input: UpdateStreamModeInput,
) -> Result<Answer, ApiError> {
    let reference = StreamRef {
        stream_name: None,
        stream_arn: Some(input.stream_arn),
    };
    let stream = stream(front, &reference)?;
    let mode = parse_mode(&input.stream_mode_details.stream_mode)?;
    front
        .broker()
        .alter_stream_configs(
            &stream.name,
            BTreeMap::from([("capacity.mode".to_owned(), mode.as_str().to_owned())]),
            Vec::new(),
            false,
        )
        .await
        .map_err(broker_error(front))?;
    Ok(Answer::ok(&json!({})))
}

async fn change_retention(
    front: &Kinesis,
    input: RetentionInput,
    increase: bool,
) -> Result<Answer, ApiError> {
    let stream = stream(front, &input.stream)?;
    let hours = input.retention_period_hours;
    let current = retention_hours(&stream);
    if hours < 24 {
        return Err(ApiError::invalid_argument(format!(
            "Minimum allowed retention period is 24 hours. Requested retention period ({hours} hours) is too short."
        )));
    }
    if hours > 8760 {
        return Err(ApiError::invalid_argument(format!(
            "Maximum allowed retention period is 8760 hours. Requested retention period ({hours} hours) is too long."
        )));
    }
    if increase && hours < current {
        return Err(ApiError::invalid_argument(format!(
            "Requested retention period ({hours} hours) for stream {} can not be shorter than existing retention period ({current} hours). Use DecreaseRetentionPeriod API.",
            stream.name
        )));
    }
    if !increase && hours > current {
        return Err(ApiError::invalid_argument(format!(
            "Requested retention period ({hours} hours) for stream {} can not be longer than existing retention period ({current} hours). Use IncreaseRetentionPeriod API.",
            stream.name
        )));
    }
    front
        .broker()
        .alter_stream_configs(
            &stream.name,
            BTreeMap::from([("retention.ms".to_owned(), (hours * 3_600_000).to_string())]),
            Vec::new(),
            false,
        )
        .await
        .map_err(broker_error(front))?;
    Ok(Answer::ok(&json!({})))
}

async fn add_tags(front: &Kinesis, input: AddTagsInput) -> Result<Answer, ApiError> {
    let stream = stream(front, &input.stream)?;
    if input.tags.is_empty() || input.tags.len() > TAGS_PER_CALL_MAX {
        return Err(ApiError::invalid_argument(format!(
            "AddTagsToStream takes 1 to {TAGS_PER_CALL_MAX} tags"
        )));
    }
    check_tags(&input.tags)?;
    let after = stream
        .tags
        .keys()
        .chain(input.tags.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if after > TAGS_PER_STREAM_MAX {
        return Err(ApiError::limit_exceeded(format!(
            "stream {} would have {after} tags; the limit is {TAGS_PER_STREAM_MAX}",
            stream.name
        )));
    }
    front
        .broker()
        .change_tags(&stream.name, input.tags, Vec::new())
        .await
        .map_err(broker_error(front))?;
    Ok(Answer::ok(&json!({})))
}

async fn remove_tags(front: &Kinesis, input: RemoveTagsInput) -> Result<Answer, ApiError> {
    let stream = stream(front, &input.stream)?;
    if input.tag_keys.is_empty() || input.tag_keys.len() > TAGS_PER_STREAM_MAX {
        return Err(ApiError::invalid_argument(format!(
            "RemoveTagsFromStream takes 1 to {TAGS_PER_STREAM_MAX} keys"
        )));
    }
    front
        .broker()
        .change_tags(&stream.name, BTreeMap::new(), input.tag_keys)
        .await
        .map_err(broker_error(front))?;
    Ok(Answer::ok(&json!({})))
}

fn list_tags(front: &Kinesis, input: ListTagsInput) -> Result<Answer, ApiError> {
    let stream = stream(front, &input.stream)?;
    let limit = input
        .limit
        .unwrap_or(TAGS_PER_STREAM_MAX as i64)
        .clamp(1, TAGS_PER_STREAM_MAX as i64) as usize;
    let tags: Vec<(&String, &String)> = stream
        .tags
        .iter()
        .filter(|(key, _)| {
            input
                .exclusive_start_tag_key
                .as_ref()
                .is_none_or(|after| *key > after)
        })
        .collect();
    let page = &tags[..tags.len().min(limit)];
    Ok(Answer::ok(&json!({
        "Tags": page.iter().map(|(key, value)| json!({ "Key": key, "Value": value })).collect::<Vec<_>>(),
        "HasMoreTags": tags.len() > page.len(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn next_tokens_round_trip_and_reject_garbage() {
        let token = encode_token("orders/shardId-000000000004", NOW);
        assert_eq!(
            decode_token(&token, NOW).unwrap().0,
            "orders/shardId-000000000004"
        );
        for garbage in ["zz", "abc", "éé", "0é", "ab\u{1F600}"] {
            assert_eq!(
                decode_token(garbage, NOW).unwrap_err().kind,
                "InvalidArgumentException",
                "{garbage:?}"
            );
        }
        // An issue time far in the past or future neither overflows nor panics.
        for issued in [i64::MIN, i64::MAX] {
            let token = encode_token("orders/shardId-000000000004", issued);
            let _ = decode_token(&token, NOW);
        }
    }

    #[test]
    fn next_tokens_expire_after_300_seconds() {
        let token = encode_token("orders/shardId-000000000004", NOW);
        assert!(decode_token(&token, NOW + NEXT_TOKEN_LIFETIME_MS).is_ok());
        assert_eq!(
            decode_token(&token, NOW + NEXT_TOKEN_LIFETIME_MS + 1)
                .unwrap_err()
                .kind,
            "ExpiredNextTokenException"
        );
    }

    #[test]
    fn errors_serialise_as_aws_does() {
        let error = ApiError::not_found("Stream x under account 000000000000 not found.");
        let value: Value = serde_json::from_slice(&error.to_json()).unwrap();
        assert_eq!(value["__type"], "ResourceNotFoundException");
        assert_eq!(
            value["message"],
            "Stream x under account 000000000000 not found."
        );
        assert_eq!(error.status, 400);
        assert_eq!(ApiError::internal("boom").status, 500);
    }
}
