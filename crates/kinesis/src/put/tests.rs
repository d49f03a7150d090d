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
    assert!(second["SequenceNumber"].as_str().unwrap() > first["SequenceNumber"].as_str().unwrap());
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
