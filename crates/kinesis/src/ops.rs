//! The operations: parse the JSON input, call the broker, shape the JSON answer.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shardline_broker::{ShardInfo, StreamInfo};
use shardline_core::ShardId;
use shardline_core::sequence::{ENDING_COUNTER, SequenceNumber};

use crate::model::{
    CreateStreamInput, DescribeStreamInput, HashKeyRangeJson, ListShardsInput, ListStreamsInput,
    SequenceNumberRangeJson, ShardJson, StreamRef,
};
use crate::{Answer, ApiError, Kinesis};

/// Most shards one DescribeStream or ListShards page returns (AWS: 100 and 1000).
const DESCRIBE_SHARDS_MAX: usize = 100;
const LIST_SHARDS_MAX: usize = 1000;
/// Most stream names one ListStreams page returns.
const LIST_STREAMS_MAX: usize = 100;
/// How long a ListShards NextToken stays valid, as on AWS.
const NEXT_TOKEN_LIFETIME_MS: i64 = 300_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

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
        other => Err(ApiError::unknown_operation(format!(
            "operation {other} is not supported by this server"
        ))),
    }
}

/// The stream a request names, by StreamName or StreamARN.
fn stream_name(front: &Kinesis, reference: &StreamRef) -> Result<String, ApiError> {
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
    .and_then(|name| {
        if front.broker().stream(&name).is_some() {
            Ok(name)
        } else {
            Err(ApiError::not_found(format!(
                "Stream {name} under account {} not found.",
                front.config().account_id
            )))
        }
    })
}

fn stream(front: &Kinesis, reference: &StreamRef) -> Result<StreamInfo, ApiError> {
    let name = stream_name(front, reference)?;
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

fn shard_json(stream: &StreamInfo, shard: &ShardInfo) -> ShardJson {
    let created_secs = (stream.created_ms / 1000) as u64;
    let starting = SequenceNumber {
        shard_created_secs: created_secs,
        shard_index: shard.index,
        counter: 0,
        record_secs: created_secs,
    };
    let ending = shard.closed.then(|| {
        SequenceNumber {
            shard_created_secs: created_secs,
            shard_index: shard.index,
            counter: ENDING_COUNTER,
            record_secs: created_secs,
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

fn mode_json() -> Value {
    json!({ "StreamMode": "PROVISIONED" })
}

async fn create_stream(front: &Kinesis, input: CreateStreamInput) -> Result<Answer, ApiError> {
    if let Some(details) = &input.stream_mode_details
        && details.stream_mode != "PROVISIONED"
    {
        return Err(ApiError::invalid_argument(format!(
            "StreamMode {} is not supported yet; use PROVISIONED",
            details.stream_mode
        )));
    }
    if input.tags.as_ref().is_some_and(|tags| !tags.is_empty()) {
        return Err(ApiError::invalid_argument("tags are not supported yet"));
    }
    let shard_count = input.shard_count.ok_or_else(|| {
        ApiError::invalid_argument("ShardCount is required for a PROVISIONED stream")
    })?;
    if shard_count < 1 {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{shard_count}' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1"
        )));
    }
    front
        .broker()
        .create_stream(&input.stream_name, shard_count, BTreeMap::new(), false)
        .await
        .map_err(|error| ApiError::from_broker(&error, &front.config().account_id))?;
    Ok(Answer::ok(&json!({})))
}

async fn delete_stream(front: &Kinesis, input: StreamRef) -> Result<Answer, ApiError> {
    let name = stream_name(front, &input)?;
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
        .map(decode_token)
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
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": mode_json(),
            "StreamCreationTimestamp": seconds(stream.created_ms),
        })).collect::<Vec<_>>(),
    });
    if has_more && let Some(last) = page.last() {
        answer["NextToken"] = json!(encode_token(&last.name, now_ms()));
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
    let shards: Vec<&ShardInfo> = stream
        .shards
        .iter()
        .filter(|shard| after.is_none_or(|after| shard.index > after))
        .collect();
    let page = &shards[..shards.len().min((limit as usize).min(DESCRIBE_SHARDS_MAX))];
    Ok(Answer::ok(&json!({
        "StreamDescription": {
            "StreamName": stream.name,
            "StreamARN": front.arn(&stream.name),
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": mode_json(),
            "Shards": page.iter().map(|shard| shard_json(&stream, shard)).collect::<Vec<_>>(),
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
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": mode_json(),
            "RetentionPeriodHours": retention_hours(&stream),
            "StreamCreationTimestamp": seconds(stream.created_ms),
            "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
            "EncryptionType": "NONE",
            "OpenShardCount": stream.shards.iter().filter(|shard| !shard.closed).count(),
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

fn decode_token(token: &str) -> Result<(String, i64), ApiError> {
    let invalid = || ApiError::invalid_argument(format!("invalid NextToken {token:?}"));
    if !token.len().is_multiple_of(2) {
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
    if now_ms() - issued > NEXT_TOKEN_LIFETIME_MS {
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
            let (key, _) = decode_token(token)?;
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
    let open_only = match input
        .shard_filter
        .as_ref()
        .map(|filter| filter.kind.as_str())
    {
        None
        | Some(
            "FROM_TRIM_HORIZON" | "AT_TRIM_HORIZON" | "AFTER_SHARD_ID" | "FROM_TIMESTAMP"
            | "AT_TIMESTAMP",
        ) => false,
        Some("AT_LATEST") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'shardFilter.type' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]"
            )));
        }
    };
    let shards: Vec<&ShardInfo> = stream
        .shards
        .iter()
        .filter(|shard| after.is_none_or(|after| shard.index > after))
        .filter(|shard| filter_after.is_none_or(|after| shard.index > after))
        .filter(|shard| !open_only || !shard.closed)
        .collect();
    let page = &shards[..shards
        .len()
        .min((max_results as usize).min(LIST_SHARDS_MAX))];
    let mut answer = json!({
        "Shards": page.iter().map(|shard| shard_json(&stream, shard)).collect::<Vec<_>>(),
    });
    if shards.len() > page.len()
        && let Some(last) = page.last()
    {
        answer["NextToken"] = json!(encode_token(
            &format!("{}/{}", stream.name, ShardId(last.index)),
            now_ms()
        ));
    }
    Ok(Answer::ok(&answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_tokens_round_trip_and_reject_garbage() {
        let token = encode_token("orders/shardId-000000000004", now_ms());
        assert_eq!(
            decode_token(&token).unwrap().0,
            "orders/shardId-000000000004"
        );
        assert_eq!(
            decode_token("zz").unwrap_err().kind,
            "InvalidArgumentException"
        );
        assert_eq!(
            decode_token("abc").unwrap_err().kind,
            "InvalidArgumentException"
        );
    }

    #[test]
    fn old_next_tokens_expire() {
        let token = encode_token(
            "orders/shardId-000000000004",
            now_ms() - NEXT_TOKEN_LIFETIME_MS - 1,
        );
        assert_eq!(
            decode_token(&token).unwrap_err().kind,
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
