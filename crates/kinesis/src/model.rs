//! JSON shapes of the Kinesis API (names exactly as the AWS service model spells them).

use serde::{Deserialize, Serialize};

/// Addresses a stream by name or ARN (every stream-addressed call accepts either).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StreamRef {
    pub(crate) stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub(crate) stream_arn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StreamModeDetails {
    pub(crate) stream_mode: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateStreamInput {
    pub(crate) stream_name: String,
    pub(crate) shard_count: Option<i64>,
    pub(crate) stream_mode_details: Option<StreamModeDetails>,
    pub(crate) tags: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListStreamsInput {
    pub(crate) limit: Option<i64>,
    pub(crate) exclusive_start_stream_name: Option<String>,
    pub(crate) next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeStreamInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) limit: Option<i64>,
    pub(crate) exclusive_start_shard_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ShardFilter {
    #[serde(rename = "Type")]
    pub(crate) kind: String,
    pub(crate) shard_id: Option<String>,
    pub(crate) timestamp: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListShardsInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) next_token: Option<String>,
    pub(crate) exclusive_start_shard_id: Option<String>,
    pub(crate) max_results: Option<i64>,
    pub(crate) stream_creation_timestamp: Option<f64>,
    pub(crate) shard_filter: Option<ShardFilter>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HashKeyRangeJson {
    pub(crate) starting_hash_key: String,
    pub(crate) ending_hash_key: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SequenceNumberRangeJson {
    pub(crate) starting_sequence_number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ending_sequence_number: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ShardJson {
    pub(crate) shard_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parent_shard_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) adjacent_parent_shard_id: Option<String>,
    pub(crate) hash_key_range: HashKeyRangeJson,
    pub(crate) sequence_number_range: SequenceNumberRangeJson,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SplitShardInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) shard_to_split: String,
    pub(crate) new_starting_hash_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MergeShardsInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) shard_to_merge: String,
    pub(crate) adjacent_shard_to_merge: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateShardCountInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) target_shard_count: i64,
    pub(crate) scaling_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateStreamModeInput {
    #[serde(rename = "StreamARN")]
    pub(crate) stream_arn: String,
    pub(crate) stream_mode_details: StreamModeDetails,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RetentionInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) retention_period_hours: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AddTagsInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) tags: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RemoveTagsInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) tag_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListTagsInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) exclusive_start_tag_key: Option<String>,
    pub(crate) limit: Option<i64>,
}

// The data-plane inputs name StreamName and StreamARN themselves instead of flattening
// `StreamRef`: serde's flatten buffers the whole body in an intermediate tree first, and
// these bodies carry megabytes of base64. Members AWS requires are `Option` so that a
// missing one is reported as AWS does ("Value null at …"), not as unreadable JSON.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutRecordInput {
    pub(crate) stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub(crate) stream_arn: Option<String>,
    pub(crate) data: Option<String>,
    pub(crate) partition_key: Option<String>,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) sequence_number_for_ordering: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutRecordsEntry {
    pub(crate) data: Option<String>,
    pub(crate) partition_key: Option<String>,
    pub(crate) explicit_hash_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutRecordsInput {
    pub(crate) stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub(crate) stream_arn: Option<String>,
    pub(crate) records: Option<Vec<PutRecordsEntry>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutRecordOutput {
    pub(crate) shard_id: String,
    pub(crate) sequence_number: String,
    pub(crate) encryption_type: &'static str,
}

/// One entry of a PutRecords answer: where the record went, or why it did not.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum PutRecordsResultEntry {
    #[serde(rename_all = "PascalCase")]
    Stored {
        sequence_number: String,
        shard_id: String,
    },
    #[serde(rename_all = "PascalCase")]
    Failed {
        error_code: &'static str,
        error_message: String,
    },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutRecordsOutput {
    pub(crate) failed_record_count: usize,
    pub(crate) records: Vec<PutRecordsResultEntry>,
    pub(crate) encryption_type: &'static str,
}
