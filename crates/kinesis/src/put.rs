//! The write half of the data plane: PutRecord and PutRecords.
//!
//! A Kinesis record is stored as one Kafka record: key = the partition key's UTF-8 bytes,
//! value = the data, CreateTime = arrival time, so Kafka consumers read what Kinesis
//! producers wrote. It goes to the open shard that owns its hash key (the ExplicitHashKey,
//! else the MD5 of the partition key), the rule the KPL predicts shards with.
//!
//! Appends go through `Broker::append_or_refuse`: over a shard's write limit nothing is
//! stored and the record fails with `ProvisionedThroughputExceededException` at once, as on
//! Kinesis (Kafka producers are slowed down instead). Answers wait until the records are
//! durable.
//!
//! Sequence numbers are minted from (shard creation second, shard index, offset, arrival
//! second) by `core::sequence`, so they grow within a shard and decode back to the offset.
//! The arrival second is the batch timestamp / 1000, so a reader can mint the same number
//! again from the stored batch.
//!
//! Checks run in AWS's order: blobs are decoded first (bad base64 is a
//! `SerializationException`), then every schema constraint (one `ValidationException`
//! listing all of them), then the stream is looked up, then what depends on it: record
//! sizes against the stream's `max.message.bytes`, hash-key range, request size.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use shardline_broker::{ErrorKind, PendingAppend, StreamInfo};
use shardline_core::batch::{HEADER_LEN, LOG_OVERHEAD};
use shardline_core::sequence::SequenceNumber;
use shardline_core::{HashKey, ShardId};
use shardline_records::NewRecord;
use tracing::{debug, warn};

use crate::model::{
    PutRecordInput, PutRecordOutput, PutRecordsInput, PutRecordsOutput, PutRecordsResultEntry,
    StreamRef,
};
use crate::validate::{HASH_KEY_PATTERN, SEQUENCE_NUMBER_PATTERN, Violations, is_decimal};
use crate::{Answer, ApiError, Kinesis, base64, ops};

/// Most entries in one PutRecords request.
const ENTRIES_MAX: usize = 500;
/// Most bytes of data plus partition keys in one PutRecords request (AWS: 5 MiB), unless
/// the stream takes larger single records.
const REQUEST_BYTES_MAX: usize = 5 * 1024 * 1024;
/// Longest partition key, in UTF-16 code units.
const PARTITION_KEY_UNITS_MAX: usize = 256;
/// Largest `Data` the newest AWS model allows ("large records"). The limit that applies
/// is the stream's (see [`record_bytes_max`]); this one is the schema's.
const DATA_BYTES_MAX: usize = 10 * 1024 * 1024;
/// Longest hash key and sequence number, in decimal digits.
const HASH_KEY_DIGITS_MAX: usize = 39;
const SEQUENCE_NUMBER_DIGITS_MAX: usize = 129;
/// Routing attempts when a reshard closes the target shard between routing and appending.
const ROUTE_ATTEMPTS: usize = 3;
/// Values longer than this are cut in error messages: AWS echoes them whole, but megabytes
/// of base64 in an error message help nobody.
const ECHO_CHARS_MAX: usize = 128;
/// Records are stored as written; at-rest encryption is the disk's business.
const ENCRYPTION_TYPE: &str = "NONE";
/// The message of a PutRecords entry that failed for a reason other than throttling.
const INTERNAL_FAILURE_MESSAGE: &str = "Internal Service Failure";

/// A record whose members passed the schema checks.
#[derive(Debug)]
struct Record {
    data: Vec<u8>,
    partition_key: String,
    explicit_hash_key: Option<String>,
}

impl Record {
    fn as_new_record(&self) -> NewRecord<'_> {
        NewRecord {
            key: Some(self.partition_key.as_bytes()),
            value: Some(&self.data),
            headers: &[],
        }
    }

    /// What Kinesis counts toward the record size limit: data plus partition key.
    fn size_bytes(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// The ExplicitHashKey if given (its pattern already checked), else the MD5 of the
    /// partition key.
    fn hash_key(&self) -> Result<HashKey, ApiError> {
        match &self.explicit_hash_key {
            None => Ok(HashKey::of_partition_key(self.partition_key.as_bytes())),
            Some(text) => text.parse::<u128>().map(HashKey).map_err(|_above_max| {
                ApiError::invalid_argument(format!(
                    "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {text}"
                ))
            }),
        }
    }
}

fn echo(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(ECHO_CHARS_MAX) {
        Some((cut, _)) => Cow::Owned(format!("{}...", &text[..cut])),
        None => Cow::Borrowed(text),
    }
}

/// Decodes a `Data` member; bad base64 fails the request as AWS fails it.
fn decode_data(text: &str) -> Result<Vec<u8>, ApiError> {
    base64::decode(text).map_err(|error| {
        ApiError::serialization(format!(
            "'{}' can not be converted to a Blob: {error}",
            echo(text)
        ))
    })
}

/// Checks one record's members against the schema, naming them under `prefix` (`""` for
/// PutRecord, `records.N.member.` for PutRecords). `None` when a required one is missing.
fn check_record(
    data: Option<Vec<u8>>,
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
    prefix: &str,
    violations: &mut Violations,
) -> Option<Record> {
    match &data {
        None => violations.null(&format!("{prefix}data")),
        Some(data) if data.len() > DATA_BYTES_MAX => {
            violations.too_long(&format!("{prefix}data"), DATA_BYTES_MAX);
        }
        Some(_) => {}
    }
    match &partition_key {
        None => violations.null(&format!("{prefix}partitionKey")),
        Some(key) => violations.string_length(
            key,
            &format!("{prefix}partitionKey"),
            1,
            PARTITION_KEY_UNITS_MAX,
        ),
    }
    if let Some(key) = &explicit_hash_key
        && !is_decimal(key, HASH_KEY_DIGITS_MAX)
    {
        violations.pattern(key, &format!("{prefix}explicitHashKey"), HASH_KEY_PATTERN);
    }
    Some(Record {
        data: data?,
        partition_key: partition_key?,
        explicit_hash_key,
    })
}

/// The largest record (data plus partition key) `stream` takes: its `max.message.bytes`
/// less Kafka's 12-byte log overhead, which is Kinesis' 1 MiB by default.
fn record_bytes_max(stream: &StreamInfo) -> usize {
    (stream.config.max_message_bytes as usize).saturating_sub(LOG_OVERHEAD)
}

/// Checks each record's size against the stream. Over the record limit is a
/// `ValidationException` naming every such record, as AWS reports its 1 MiB limit. A
/// record within it whose batch framing (about 80 bytes) still overflows
/// `max.message.bytes` cannot be stored either: that is an `InvalidArgumentException`.
fn check_sizes(
    records: &[Record],
    stream: &StreamInfo,
    data_path: impl Fn(usize) -> String,
) -> Result<(), ApiError> {
    let max = record_bytes_max(stream);
    let mut violations = Violations::default();
    for (index, record) in records.iter().enumerate() {
        if record.size_bytes() > max {
            violations.too_long(&data_path(index), max);
        }
    }
    violations.finish()?;
    let batch_max = stream.config.max_message_bytes as usize;
    for record in records {
        let batch_bytes = shardline_records::batch_len(&[record.as_new_record()]);
        if batch_bytes > batch_max {
            return Err(ApiError::invalid_argument(format!(
                "A record of {} bytes (data plus partition key) takes {batch_bytes} bytes as a record batch, more than the max.message.bytes ({batch_max}) of stream {}.",
                record.size_bytes(),
                stream.name
            )));
        }
    }
    Ok(())
}

fn stream_of(
    front: &Kinesis,
    stream_name: Option<String>,
    stream_arn: Option<String>,
) -> Result<StreamInfo, ApiError> {
    ops::stream(
        front,
        &StreamRef {
            stream_name,
            stream_arn,
        },
    )
}

/// One uncompressed batch of `records`, stamped `timestamp_ms`.
fn batch_of<'a>(records: impl Iterator<Item = &'a Record>, timestamp_ms: i64) -> BytesMut {
    let parts: Vec<NewRecord<'_>> = records.map(Record::as_new_record).collect();
    // Vec -> Bytes -> BytesMut hands the buffer over without copying it.
    BytesMut::from(Bytes::from(shardline_records::build_batch(
        timestamp_ms,
        &parts,
    )))
}

/// Creation second of each shard of `stream` (the first field of its sequence numbers),
/// read after the appends so children born meanwhile are included.
fn shard_created_secs(front: &Kinesis, stream: &StreamInfo) -> BTreeMap<u32, u64> {
    let current = front.broker().stream(&stream.name);
    current
        .as_ref()
        .unwrap_or(stream)
        .shards
        .iter()
        .map(|shard| (shard.index, (shard.created_ms / 1000) as u64))
        .collect()
}

fn sequence_number(created_secs: u64, shard: u32, offset: u64, timestamp_ms: i64) -> String {
    SequenceNumber {
        shard_created_secs: created_secs,
        shard_index: shard,
        counter: offset,
        record_secs: (timestamp_ms / 1000) as u64,
    }
    .to_string()
}

/// SequenceNumberForOrdering: the new record's number must be greater. Numbers grow with
/// the offset within a shard, so any number the target shard issued is already below the
/// next one, and order across shards is not defined; what is left to refuse is a number
/// that does not decode, or one claiming the target shard that it cannot have issued.
fn check_ordering(
    front: &Kinesis,
    stream: &str,
    shard: u32,
    ordering: &str,
) -> Result<(), ApiError> {
    let invalid = || {
        ApiError::invalid_argument(format!(
            "ExclusiveMinimumSequenceNumber {ordering} used in PutRecord on stream {stream} under account {} is invalid.",
            front.config().account_id
        ))
    };
    let number: SequenceNumber = ordering.parse().map_err(|_undecodable| invalid())?;
    if number.shard_index != shard {
        return Ok(());
    }
    let created_ms = front
        .broker()
        .stream(stream)
        .and_then(|info| info.shards.into_iter().find(|info| info.index == shard))
        .map(|info| info.created_ms)
        .ok_or_else(invalid)?;
    let (_, high_watermark) = front
        .broker()
        .offsets(stream, i64::from(shard))
        .map_err(ops::broker_error(front))?;
    if number.shard_created_secs != (created_ms / 1000) as u64 || number.counter >= high_watermark {
        return Err(invalid());
    }
    Ok(())
}

pub(crate) async fn put_record(front: &Kinesis, input: PutRecordInput) -> Result<Answer, ApiError> {
    let data = input.data.as_deref().map(decode_data).transpose()?;
    let mut violations = Violations::default();
    let record = check_record(
        data,
        input.partition_key,
        input.explicit_hash_key,
        "",
        &mut violations,
    );
    let ordering = input.sequence_number_for_ordering;
    if let Some(text) = &ordering
        && !is_decimal(text, SEQUENCE_NUMBER_DIGITS_MAX)
    {
        violations.pattern(text, "sequenceNumberForOrdering", SEQUENCE_NUMBER_PATTERN);
    }
    violations.finish()?;
    let record =
        record.ok_or_else(|| ApiError::internal("a record passed validation without members"))?;
    let stream = stream_of(front, input.stream_name, input.stream_arn)?;
    check_sizes(std::slice::from_ref(&record), &stream, |_| {
        "data".to_owned()
    })?;
    let hash_key = record.hash_key()?;
    let timestamp_ms = front.broker().now_ms();
    for _ in 0..ROUTE_ATTEMPTS {
        let shard = front
            .broker()
            .route(&stream.name, hash_key)
            .map_err(ops::broker_error(front))?;
        if let Some(ordering) = &ordering {
            check_ordering(front, &stream.name, shard, ordering)?;
        }
        let batch = batch_of(std::iter::once(&record), timestamp_ms);
        let pending = match front
            .broker()
            .append_or_refuse(&stream.name, i64::from(shard), batch)
            .await
        {
            Ok(pending) => pending,
            Err(error) if error.kind() == ErrorKind::ShardClosed => {
                // The broker returns this once the reshard has published the children.
                debug!(stream = %stream.name, shard, "shard closed under a PutRecord; routing again");
                continue;
            }
            Err(error) => return Err(ops::broker_error(front)(error)),
        };
        let outcome = pending.wait().await.map_err(ops::broker_error(front))?;
        let created_secs = shard_created_secs(front, &stream)
            .get(&shard)
            .copied()
            .ok_or_else(|| {
                ApiError::internal(format!("shard {shard} of {} vanished", stream.name))
            })?;
        return Ok(Answer::ok(&PutRecordOutput {
            shard_id: ShardId(shard).to_string(),
            sequence_number: sequence_number(
                created_secs,
                shard,
                outcome.base_offset,
                timestamp_ms,
            ),
            encryption_type: ENCRYPTION_TYPE,
        }));
    }
    Err(ApiError::internal(format!(
        "the shards owning hash key {hash_key} in stream {} closed {ROUTE_ATTEMPTS} times in a row",
        stream.name
    )))
}

pub(crate) async fn put_records(
    front: &Kinesis,
    input: PutRecordsInput,
) -> Result<Answer, ApiError> {
    let mut violations = Violations::default();
    let mut checked = Vec::new();
    match input.records {
        None => violations.null("records"),
        Some(entries) => {
            if entries.is_empty() {
                violations.too_short("records", 1);
            } else if entries.len() > ENTRIES_MAX {
                violations.too_long("records", ENTRIES_MAX);
            }
            for (index, entry) in entries.into_iter().enumerate() {
                let data = entry.data.as_deref().map(decode_data).transpose()?;
                checked.push(check_record(
                    data,
                    entry.partition_key,
                    entry.explicit_hash_key,
                    &format!("records.{}.member.", index + 1),
                    &mut violations,
                ));
            }
        }
    }
    violations.finish()?;
    let records: Vec<Record> = checked
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| ApiError::internal("a record passed validation without members"))?;
    let stream = stream_of(front, input.stream_name, input.stream_arn)?;
    check_sizes(&records, &stream, |index| {
        format!("records.{}.member.data", index + 1)
    })?;
    let request_max = REQUEST_BYTES_MAX.max(record_bytes_max(&stream));
    if records.iter().map(Record::size_bytes).sum::<usize>() > request_max {
        return Err(ApiError::invalid_argument(format!(
            "Records size exceeds {} MB limit",
            request_max / (1024 * 1024)
        )));
    }
    let hash_keys = records
        .iter()
        .map(Record::hash_key)
        .collect::<Result<Vec<_>, _>>()?;

    let mut writer = Writer {
        front,
        stream: &stream,
        records: &records,
        timestamp_ms: front.broker().now_ms(),
        fates: records.iter().map(|_| Fate::Unsent).collect(),
        appends: Vec::new(),
    };
    let mut unrouted: Vec<usize> = (0..records.len()).collect();
    for _ in 0..ROUTE_ATTEMPTS {
        if unrouted.is_empty() {
            break;
        }
        // Entries back from closed shards arrive shard by shard; request order first.
        unrouted.sort_unstable();
        let mut by_shard: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for index in std::mem::take(&mut unrouted) {
            match front.broker().route(&stream.name, hash_keys[index]) {
                Ok(shard) => by_shard.entry(shard).or_default().push(index),
                Err(error) => {
                    warn!(stream = %stream.name, %error, "cannot route a PutRecords entry");
                }
            }
        }
        // The broker returns a closed shard's entries only once the reshard that closed
        // it has published the children, so the next pass routes them there.
        for (shard, indexes) in by_shard {
            unrouted.extend(writer.append_to_shard(shard, indexes).await);
        }
    }
    writer.finish().await
}

/// What became of one PutRecords entry so far.
#[derive(Debug, Clone)]
enum Fate {
    /// Not stored: never routed, or its shard kept closing. Reported as InternalFailure.
    Unsent,
    /// Queued as record `delta` of `Writer::appends[append]`.
    Queued { append: usize, delta: u64 },
    /// Refused by the shard's write limit; the message names the shard as AWS does.
    Throttled(String),
    /// The append failed otherwise.
    Failed,
}

/// The appends of one PutRecords request and what became of each entry.
struct Writer<'a> {
    front: &'a Kinesis,
    stream: &'a StreamInfo,
    records: &'a [Record],
    timestamp_ms: i64,
    fates: Vec<Fate>,
    appends: Vec<(u32, PendingAppend)>,
}

impl Writer<'_> {
    /// Splits `indexes` (request order) into runs whose batches fit `max.message.bytes`.
    fn runs(&self, indexes: Vec<usize>) -> Vec<Vec<usize>> {
        let limit = self.stream.config.max_message_bytes as usize;
        let mut runs = Vec::new();
        let mut run: Vec<usize> = Vec::new();
        let mut run_bytes = HEADER_LEN;
        for index in indexes {
            let record = self.records[index].as_new_record();
            let mut record_bytes = shardline_records::record_len(&record, run.len() as i32);
            if !run.is_empty() && run_bytes + record_bytes > limit {
                runs.push(std::mem::take(&mut run));
                run_bytes = HEADER_LEN;
                record_bytes = shardline_records::record_len(&record, 0);
            }
            run_bytes += record_bytes;
            run.push(index);
        }
        if !run.is_empty() {
            runs.push(run);
        }
        runs
    }

    /// Appends the entries `indexes` (request order) to `shard`: one batch per run that
    /// fits `max.message.bytes`, normally a single batch. A batch over the shard's write
    /// limit is halved until the part that fits is found and stored, since AWS takes the
    /// records that fit one by one; from the first single record refused on, the shard's
    /// remaining entries are refused, so what is stored keeps request order. Returns the
    /// entries to route again because the shard was closed under them.
    async fn append_to_shard(&mut self, shard: u32, indexes: Vec<usize>) -> Vec<usize> {
        let mut pieces: VecDeque<Vec<usize>> = self.runs(indexes).into();
        while let Some(mut piece) = pieces.pop_front() {
            let batch = batch_of(
                piece.iter().map(|index| &self.records[*index]),
                self.timestamp_ms,
            );
            let error = match self
                .front
                .broker()
                .append_or_refuse(&self.stream.name, i64::from(shard), batch)
                .await
            {
                Ok(pending) => {
                    let append = self.appends.len();
                    self.appends.push((shard, pending));
                    for (delta, index) in piece.iter().enumerate() {
                        self.fates[*index] = Fate::Queued {
                            append,
                            delta: delta as u64,
                        };
                    }
                    continue;
                }
                Err(error) => error,
            };
            match error.kind() {
                ErrorKind::Throttled if piece.len() > 1 => {
                    let rest = piece.split_off(piece.len() / 2);
                    pieces.push_front(rest);
                    pieces.push_front(piece);
                }
                ErrorKind::ShardClosed => {
                    debug!(stream = %self.stream.name, shard, "shard closed under PutRecords; routing again");
                    return piece
                        .into_iter()
                        .chain(pieces.into_iter().flatten())
                        .collect();
                }
                kind => {
                    let fate = if kind == ErrorKind::Throttled {
                        Fate::Throttled(
                            ApiError::from_broker(&error, &self.front.config().account_id).message,
                        )
                    } else {
                        warn!(stream = %self.stream.name, shard, %error, "PutRecords append failed");
                        Fate::Failed
                    };
                    for index in piece.iter().chain(pieces.iter().flatten()) {
                        self.fates[*index] = fate.clone();
                    }
                    return Vec::new();
                }
            }
        }
        Vec::new()
    }

    /// Waits for every append to be durable and answers, entry by entry in request order.
    async fn finish(self) -> Result<Answer, ApiError> {
        let mut stored: Vec<Option<(u32, u64)>> = Vec::with_capacity(self.appends.len());
        // Every append is already queued; waiting in turn costs only the slowest one.
        for (shard, pending) in self.appends {
            match pending.wait().await {
                Ok(outcome) => stored.push(Some((shard, outcome.base_offset))),
                Err(error) => {
                    warn!(stream = %self.stream.name, shard, %error, "PutRecords append failed");
                    stored.push(None);
                }
            }
        }
        let created_secs = shard_created_secs(self.front, self.stream);
        let failed = || PutRecordsResultEntry::Failed {
            error_code: "InternalFailure",
            error_message: INTERNAL_FAILURE_MESSAGE.to_owned(),
        };
        let records: Vec<PutRecordsResultEntry> = self
            .fates
            .into_iter()
            .map(|fate| match fate {
                Fate::Queued { append, delta } => {
                    let Some((shard, base_offset)) = stored[append] else {
                        return failed();
                    };
                    let Some(created_secs) = created_secs.get(&shard) else {
                        return failed();
                    };
                    PutRecordsResultEntry::Stored {
                        sequence_number: sequence_number(
                            *created_secs,
                            shard,
                            base_offset + delta,
                            self.timestamp_ms,
                        ),
                        shard_id: ShardId(shard).to_string(),
                    }
                }
                Fate::Throttled(message) => PutRecordsResultEntry::Failed {
                    error_code: "ProvisionedThroughputExceededException",
                    error_message: message,
                },
                Fate::Unsent | Fate::Failed => failed(),
            })
            .collect();
        let failed_record_count = records
            .iter()
            .filter(|entry| matches!(entry, PutRecordsResultEntry::Failed { .. }))
            .count();
        Ok(Answer::ok(&PutRecordsOutput {
            failed_record_count,
            records,
            encryption_type: ENCRYPTION_TYPE,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};
    use shardline_broker::{Broker, BrokerConfig};
    use shardline_core::BatchHeader;
    use shardline_core::sequence::SequenceNumber;

    use super::*;
    use crate::KinesisConfig;
    use crate::base64::encode;

    const MIB: usize = 1024 * 1024;

    struct Fixture {
        front: Kinesis,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let broker = Broker::open(BrokerConfig::with_data_dir(dir.path().to_path_buf()))
                .await
                .unwrap();
            Fixture {
                front: Kinesis::new(broker, KinesisConfig::default()),
                _dir: dir,
            }
        }

        async fn call(&self, operation: &str, body: Value) -> (u16, Value) {
            call(&self.front, operation, body).await
        }

        async fn ok(&self, operation: &str, body: Value) -> Value {
            let (status, answer) = self.call(operation, body).await;
            assert_eq!(status, 200, "{operation}: {answer}");
            answer
        }

        /// The `(__type, message)` of a call expected to fail.
        async fn error(&self, operation: &str, body: Value) -> (String, String) {
            let (status, answer) = self.call(operation, body).await;
            assert_eq!(status, 400, "{operation}: {answer}");
            (
                answer["__type"].as_str().unwrap().to_owned(),
                answer["message"].as_str().unwrap().to_owned(),
            )
        }

        /// A stream without throughput limits, so tests can write as fast as they like.
        async fn unlimited_stream(&self, name: &str, shards: i64) {
            let configs = BTreeMap::from([("capacity.mode".to_owned(), "unlimited".to_owned())]);
            self.front
                .broker()
                .create_stream(name, shards, configs, false)
                .await
                .unwrap();
        }

        /// Every (key, value, batch timestamp) stored in `shard`, read the way the Kafka
        /// front reads: whole batches from the broker.
        async fn stored(&self, stream: &str, shard: i64) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
            let read = self
                .front
                .broker()
                .read(stream, shard, 0, 16 * MIB)
                .await
                .unwrap();
            let mut out = Vec::new();
            for item in shardline_core::batch::Batches::new(&read.records, true) {
                let (header, range) = item.unwrap();
                for (key, value) in decode_records(&read.records[range], &header) {
                    out.push((key, value, header.base_timestamp));
                }
            }
            out
        }

        async fn stop(self) {
            self.front.broker().shutdown().await;
        }
    }

    /// Calls `operation`; the answer's status and JSON body.
    async fn call(front: &Kinesis, operation: &str, body: Value) -> (u16, Value) {
        let target = format!("{}{operation}", crate::TARGET_PREFIX);
        let answer = front
            .handle(Some(&target), &serde_json::to_vec(&body).unwrap())
            .await;
        (answer.status, serde_json::from_slice(&answer.body).unwrap())
    }

    fn get_varint(bytes: &[u8], at: &mut usize) -> i64 {
        let mut raw = 0u64;
        let mut shift = 0;
        loop {
            let byte = bytes[*at];
            *at += 1;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return (raw >> 1) as i64 ^ -((raw & 1) as i64);
            }
            shift += 7;
        }
    }

    /// Key and value of each record of an uncompressed batch with no headers.
    fn decode_records(batch: &[u8], header: &BatchHeader) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut at = HEADER_LEN;
        let mut records = Vec::new();
        for delta in 0..header.record_count {
            let end = get_varint(batch, &mut at) as usize + at;
            at += 1; // attributes
            assert_eq!(get_varint(batch, &mut at), 0, "timestamp delta");
            assert_eq!(get_varint(batch, &mut at), i64::from(delta), "offset delta");
            let mut field = || {
                let len = get_varint(batch, &mut at) as usize;
                let value = batch[at..at + len].to_vec();
                at += len;
                value
            };
            let key = field();
            let value = field();
            assert_eq!(get_varint(batch, &mut at), 0, "header count");
            assert_eq!(at, end);
            records.push((key, value));
        }
        records
    }

    fn decode_sequence(answer: &Value) -> SequenceNumber {
        let text = answer["SequenceNumber"].as_str().unwrap();
        assert_eq!(text.len(), 56, "{text}");
        text.parse().unwrap()
    }

    fn entry(key: &str, data: &[u8]) -> Value {
        json!({ "PartitionKey": key, "Data": encode(data) })
    }

    #[tokio::test]
    async fn a_put_record_is_stored_as_a_kafka_record_and_numbered_by_its_offset() {
        let fixture = Fixture::new().await;
        fixture
            .ok(
                "CreateStream",
                json!({ "StreamName": "orders", "ShardCount": 2 }),
            )
            .await;
        let first = fixture
            .ok(
                "PutRecord",
                json!({ "StreamName": "orders", "PartitionKey": "a", "Data": encode(b"hello") }),
            )
            .await;
        assert_eq!(first["ShardId"], "shardId-000000000000");
        assert_eq!(first["EncryptionType"], "NONE");
        let second = fixture
            .ok(
                "PutRecord",
                json!({ "StreamName": "orders", "PartitionKey": "a", "Data": encode(b"again"),
                        "SequenceNumberForOrdering": first["SequenceNumber"] }),
            )
            .await;
        let other = fixture
            .ok(
                "PutRecord",
                json!({ "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/orders",
                        "PartitionKey": "0", "Data": encode(b"") }),
            )
            .await;
        assert_eq!(other["ShardId"], "shardId-000000000001");

        let (first_number, second_number) = (decode_sequence(&first), decode_sequence(&second));
        assert_eq!((first_number.shard_index, first_number.counter), (0, 0));
        assert_eq!((second_number.shard_index, second_number.counter), (0, 1));
        assert!(
            second["SequenceNumber"].as_str().unwrap() > first["SequenceNumber"].as_str().unwrap()
        );
        let stream = fixture.front.broker().stream("orders").unwrap();
        assert_eq!(
            first_number.shard_created_secs,
            (stream.shards[0].created_ms / 1000) as u64
        );

        let stored = fixture.stored("orders", 0).await;
        assert_eq!(stored.len(), 2);
        assert_eq!(
            (stored[0].0.as_slice(), stored[0].1.as_slice()),
            (&b"a"[..], &b"hello"[..])
        );
        assert_eq!(
            (stored[1].0.as_slice(), stored[1].1.as_slice()),
            (&b"a"[..], &b"again"[..])
        );
        // The record time in the sequence number is the batch's CreateTime, in seconds.
        assert_eq!(first_number.record_secs, (stored[0].2 / 1000) as u64);
        let stored = fixture.stored("orders", 1).await;
        assert_eq!(
            (stored[0].0.as_slice(), stored[0].1.as_slice()),
            (&b"0"[..], &b""[..])
        );
        fixture.stop().await;
    }

    #[tokio::test]
    async fn explicit_hash_keys_override_the_partition_key() {
        let fixture = Fixture::new().await;
        fixture.unlimited_stream("keys", 3).await;
        for (hash_key, shard) in [
            ("0".to_owned(), "shardId-000000000000"),
            (u128::MAX.to_string(), "shardId-000000000002"),
            (
                "113427455640312821154458202477256070485".to_owned(),
                "shardId-000000000001",
            ),
        ] {
            let answer = fixture
                .ok(
                    "PutRecord",
                    json!({ "StreamName": "keys", "PartitionKey": "0", "Data": encode(b"x"),
                            "ExplicitHashKey": hash_key }),
                )
                .await;
            assert_eq!(answer["ShardId"], shard, "{hash_key}");
        }
        fixture.stop().await;
    }

    #[tokio::test]
    async fn put_records_answers_every_entry_in_request_order() {
        let fixture = Fixture::new().await;
        fixture.unlimited_stream("many", 2).await;
        let keys: Vec<String> = (0..10).map(|i| format!("key-{i}")).collect();
        let mut entries: Vec<Value> = keys.iter().map(|key| entry(key, key.as_bytes())).collect();
        entries.push(json!({ "PartitionKey": "a", "Data": encode(b"last"),
                              "ExplicitHashKey": u128::MAX.to_string() }));
        let answer = fixture
            .ok(
                "PutRecords",
                json!({ "StreamName": "many", "Records": entries }),
            )
            .await;
        assert_eq!(answer["FailedRecordCount"], 0);
        assert_eq!(answer["EncryptionType"], "NONE");
        let results = answer["Records"].as_array().unwrap();
        assert_eq!(results.len(), 11);
        let half = 1u128 << 127;
        let mut expected: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for (key, result) in keys.iter().zip(results) {
            let hash = HashKey::of_partition_key(key.as_bytes()).0;
            let shard = if hash < half { 0 } else { 1 };
            assert_eq!(result["ShardId"], ShardId(shard).to_string(), "{key}");
            expected
                .entry(ShardId(shard).to_string())
                .or_default()
                .push(key.as_bytes().to_vec());
        }
        assert_eq!(results[10]["ShardId"], "shardId-000000000001");
        // Within a shard, entries are stored in request order, numbered one after another.
        for (shard, values) in &expected {
            let index: i64 = shard.parse::<ShardId>().unwrap().0.into();
            let stored: Vec<Vec<u8>> = fixture
                .stored("many", index)
                .await
                .into_iter()
                .map(|(_, value, _)| value)
                .take(values.len())
                .collect();
            assert_eq!(&stored, values);
            let counters: Vec<u64> = results
                .iter()
                .filter(|result| result["ShardId"] == *shard)
                .map(|result| decode_sequence(result).counter)
                .collect();
            assert_eq!(counters, (0..counters.len() as u64).collect::<Vec<_>>());
        }
        fixture.stop().await;
    }

    #[tokio::test]
    async fn over_the_write_limit_the_part_that_fits_is_stored_and_the_rest_refused() {
        let fixture = Fixture::new().await;
        fixture
            .ok(
                "CreateStream",
                json!({ "StreamName": "slow", "ShardCount": 1,
                        "StreamModeDetails": { "StreamMode": "PROVISIONED" } }),
            )
            .await;
        let data = vec![7u8; 3000];
        let entries: Vec<Value> = (0..500).map(|i| entry(&format!("k{i}"), &data)).collect();
        let body = json!({ "StreamName": "slow", "Records": entries });
        let answer = fixture.ok("PutRecords", body.clone()).await;
        let results = answer["Records"].as_array().unwrap();
        assert_eq!(results.len(), 500);
        let failed = answer["FailedRecordCount"].as_u64().unwrap() as usize;
        // 1 MiB/s with a one-second burst: a full bucket holds about 340 of these 3 kB
        // records, and refilling the rest would take half a second.
        assert!((300..500).contains(&(500 - failed)), "{failed} failed");
        // What was stored is a prefix of the request, numbered in order.
        let stored = 500 - failed;
        for (position, result) in results.iter().enumerate() {
            if position < stored {
                assert_eq!(decode_sequence(result).counter, position as u64);
            } else {
                assert_eq!(
                    result["ErrorCode"], "ProvisionedThroughputExceededException",
                    "{result}"
                );
                assert_eq!(
                    result["ErrorMessage"],
                    "Rate exceeded for shard shardId-000000000000 in stream slow under account 000000000000."
                );
            }
        }
        assert_eq!(fixture.stored("slow", 0).await.len(), stored);
        let again = fixture.ok("PutRecords", body).await;
        assert!(again["FailedRecordCount"].as_u64().unwrap() > 0, "{again}");
        fixture.stop().await;
    }

    #[tokio::test]
    async fn writes_go_to_the_children_of_a_split_shard() {
        let fixture = Fixture::new().await;
        fixture.unlimited_stream("split", 1).await;
        fixture
            .ok(
                "SplitShard",
                json!({ "StreamName": "split", "ShardToSplit": "shardId-000000000000",
                        "NewStartingHashKey": (1u128 << 127).to_string() }),
            )
            .await;
        let answer = fixture
            .ok(
                "PutRecord",
                json!({ "StreamName": "split", "PartitionKey": "a", "Data": encode(b"x") }),
            )
            .await;
        assert_eq!(answer["ShardId"], "shardId-000000000001");
        let answer = fixture
            .ok(
                "PutRecords",
                json!({ "StreamName": "split", "Records": [entry("0", b"y"), entry("a", b"z")] }),
            )
            .await;
        assert_eq!(answer["Records"][0]["ShardId"], "shardId-000000000002");
        assert_eq!(answer["Records"][1]["ShardId"], "shardId-000000000001");
        assert!(fixture.stored("split", 0).await.is_empty());
        fixture.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn puts_racing_reshards_all_land_once_on_open_shards() {
        let fixture = Fixture::new().await;
        fixture.unlimited_stream("race", 1).await;
        let rounds = 60;
        let front = fixture.front.clone();
        let writer = tokio::spawn(async move {
            let mut shards = Vec::new();
            for round in 0..rounds {
                let entries: Vec<Value> = (0..20)
                    .map(|i| entry(&format!("k{round}-{i}"), b"v"))
                    .collect();
                let body = json!({ "StreamName": "race", "Records": entries });
                let (status, answer) = call(&front, "PutRecords", body).await;
                assert_eq!(status, 200, "{answer}");
                assert_eq!(answer["FailedRecordCount"], 0, "{answer}");
                let body = json!({ "StreamName": "race", "PartitionKey": format!("p{round}"),
                                   "Data": encode(b"single") });
                let (status, answer) = call(&front, "PutRecord", body).await;
                assert_eq!(status, 200, "{answer}");
                shards.push(answer["ShardId"].as_str().unwrap().to_owned());
            }
            shards
        });
        for (shard, key) in [
            ("shardId-000000000000", 1u128 << 127),
            ("shardId-000000000001", 1 << 126),
        ] {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            fixture
                .ok(
                    "SplitShard",
                    json!({ "StreamName": "race", "ShardToSplit": shard,
                            "NewStartingHashKey": key.to_string() }),
                )
                .await;
        }
        writer.await.unwrap();
        let mut stored = 0;
        for shard in 0..5 {
            stored += fixture.stored("race", shard).await.len();
        }
        assert_eq!(stored, rounds * 21);
        fixture.stop().await;
    }

    #[tokio::test]
    async fn schema_violations_are_reported_as_aws_words_them() {
        let fixture = Fixture::new().await;
        fixture.unlimited_stream("checked", 1).await;
        let long_key = "k".repeat(257);
        let cases = [
            (
                "PutRecord",
                json!({ "StreamName": "checked" }),
                "2 validation errors detected: Value null at 'data' failed to satisfy constraint: Member must not be null; \
                 Value null at 'partitionKey' failed to satisfy constraint: Member must not be null"
                    .to_owned(),
            ),
            (
                "PutRecord",
                json!({ "StreamName": "checked", "Data": "", "PartitionKey": long_key }),
                format!(
                    "1 validation error detected: Value '{long_key}' at 'partitionKey' failed to satisfy constraint: Member must have length less than or equal to 256"
                ),
            ),
            (
                "PutRecord",
                json!({ "StreamName": "checked", "Data": "", "PartitionKey": "",
                        "ExplicitHashKey": "12a", "SequenceNumberForOrdering": "01" }),
                "3 validation errors detected: Value '' at 'partitionKey' failed to satisfy constraint: Member must have length greater than or equal to 1; \
                 Value '12a' at 'explicitHashKey' failed to satisfy constraint: Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38}); \
                 Value '01' at 'sequenceNumberForOrdering' failed to satisfy constraint: Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})"
                    .to_owned(),
            ),
            (
                "PutRecords",
                json!({ "StreamName": "checked", "Records": [] }),
                "1 validation error detected: Value at 'records' failed to satisfy constraint: Member must have length greater than or equal to 1"
                    .to_owned(),
            ),
            (
                "PutRecords",
                json!({ "StreamName": "checked" }),
                "1 validation error detected: Value null at 'records' failed to satisfy constraint: Member must not be null"
                    .to_owned(),
            ),
            (
                "PutRecords",
                json!({ "StreamName": "checked",
                        "Records": (0..501).map(|_| entry("k", b"v")).collect::<Vec<_>>() }),
                "1 validation error detected: Value at 'records' failed to satisfy constraint: Member must have length less than or equal to 500"
                    .to_owned(),
            ),
            (
                "PutRecords",
                json!({ "StreamName": "checked",
                        "Records": [entry("k", b"v"), { "Data": "", "PartitionKey": "k", "ExplicitHashKey": "x" }] }),
                "1 validation error detected: Value 'x' at 'records.2.member.explicitHashKey' failed to satisfy constraint: Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})"
                    .to_owned(),
            ),
        ];
        for (operation, body, message) in cases {
            let (kind, got) = fixture.error(operation, body).await;
            assert_eq!(kind, "ValidationException");
            assert_eq!(got, message);
        }
        fixture.stop().await;
    }

    #[tokio::test]
    async fn semantic_errors_use_aws_exception_names() {
        let fixture = Fixture::new().await;
        fixture.unlimited_stream("sem", 1).await;
        // 2^128: the pattern's 39 digits, one past the hash-key space.
        let too_big = "340282366920938463463374607431768211456";
        let (kind, message) = fixture
            .error(
                "PutRecord",
                json!({ "StreamName": "sem", "PartitionKey": "k", "Data": "",
                        "ExplicitHashKey": too_big }),
            )
            .await;
        assert_eq!(kind, "InvalidArgumentException");
        assert_eq!(
            message,
            format!(
                "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {too_big}"
            )
        );
        let (kind, _) = fixture
            .error(
                "PutRecords",
                json!({ "StreamName": "sem",
                        "Records": [{ "PartitionKey": "k", "Data": "", "ExplicitHashKey": too_big }] }),
            )
            .await;
        assert_eq!(kind, "InvalidArgumentException");

        let (kind, message) = fixture
            .error(
                "PutRecord",
                json!({ "StreamName": "sem", "PartitionKey": "k", "Data": "Zm9v-A==" }),
            )
            .await;
        assert_eq!(kind, "SerializationException");
        assert_eq!(
            message,
            "'Zm9v-A==' can not be converted to a Blob: Invalid Base64 character: '-'"
        );

        let (kind, message) = fixture
            .error(
                "PutRecord",
                json!({ "StreamName": "nope", "PartitionKey": "k", "Data": "" }),
            )
            .await;
        assert_eq!(kind, "ResourceNotFoundException");
        assert_eq!(message, "Stream nope under account 000000000000 not found.");

        // A number this shard cannot have issued (counter 2^63 - 1) is not an order.
        let created_secs =
            (fixture.front.broker().stream("sem").unwrap().shards[0].created_ms / 1000) as u64;
        let ending = SequenceNumber {
            shard_created_secs: created_secs,
            shard_index: 0,
            counter: shardline_core::sequence::ENDING_COUNTER,
            record_secs: created_secs,
        };
        let (kind, message) = fixture
            .error(
                "PutRecord",
                json!({ "StreamName": "sem", "PartitionKey": "k", "Data": "",
                        "SequenceNumberForOrdering": ending.to_string() }),
            )
            .await;
        assert_eq!(kind, "InvalidArgumentException");
        assert!(
            message.starts_with("ExclusiveMinimumSequenceNumber "),
            "{message}"
        );
        let (kind, _) = fixture
            .error(
                "PutRecord",
                json!({ "StreamName": "sem", "PartitionKey": "k", "Data": "",
                        "SequenceNumberForOrdering": "12345" }),
            )
            .await;
        assert_eq!(kind, "InvalidArgumentException");
        fixture.stop().await;
    }

    #[tokio::test]
    async fn records_and_requests_over_the_size_limits_are_refused() {
        let fixture = Fixture::new().await;
        fixture.unlimited_stream("big", 1).await;
        let over = fixture
            .error(
                "PutRecord",
                json!({ "StreamName": "big", "PartitionKey": "k", "Data": encode(&vec![0; MIB + 1]) }),
            )
            .await;
        assert_eq!(
            over,
            (
                "ValidationException".to_owned(),
                "1 validation error detected: Value at 'data' failed to satisfy constraint: Member must have length less than or equal to 1048576".to_owned()
            )
        );
        // The partition key counts toward the limit.
        let (kind, message) = fixture
            .error(
                "PutRecords",
                json!({ "StreamName": "big",
                        "Records": [entry("k", b"v"), entry("ab", &vec![0; MIB - 1])] }),
            )
            .await;
        assert_eq!(kind, "ValidationException");
        assert!(message.contains("'records.2.member.data'"), "{message}");
        // Within 1 MiB, but not once framed as a batch under max.message.bytes.
        let (kind, _) = fixture
            .error(
                "PutRecord",
                json!({ "StreamName": "big", "PartitionKey": "k", "Data": encode(&vec![0; MIB - 1]) }),
            )
            .await;
        assert_eq!(kind, "InvalidArgumentException");
        let largest = MIB - 100;
        fixture
            .ok(
                "PutRecord",
                json!({ "StreamName": "big", "PartitionKey": "k", "Data": encode(&vec![0; largest]) }),
            )
            .await;
        let six: Vec<Value> = (0..6).map(|_| entry("k", &vec![0; MIB - 100])).collect();
        let (kind, message) = fixture
            .error("PutRecords", json!({ "StreamName": "big", "Records": six }))
            .await;
        assert_eq!(
            (kind.as_str(), message.as_str()),
            (
                "InvalidArgumentException",
                "Records size exceeds 5 MB limit"
            )
        );
        // 5 MiB in one request, over several batches of one shard.
        let five: Vec<Value> = (0..5).map(|_| entry("k", &vec![1; MIB - 100])).collect();
        let answer = fixture
            .ok(
                "PutRecords",
                json!({ "StreamName": "big", "Records": five }),
            )
            .await;
        assert_eq!(answer["FailedRecordCount"], 0);
        fixture.stop().await;
    }
}
