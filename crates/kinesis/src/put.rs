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
mod tests;
