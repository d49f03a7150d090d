//! Kafka clients across a reshard: producers keep writing keyed records while a shard is
//! split and the children merged again. Nothing acknowledged may be lost or duplicated,
//! no producer may see an error, and within each shard every key's records stay in the
//! order they were sent. Records sent to a closed partition are re-routed by key.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{consume, create_topic, producer};
use rdkafka::Offset;
use rdkafka::producer::FutureRecord;
use shardline_testkit::TestServer;

/// Checks what a consumer read back against what producers had acknowledged: nothing
/// missing, nothing twice, each key's records in send order within every partition.
fn check_exactly_once_in_order(received: &[common::Received], acknowledged: &[String]) {
    let mut seen = BTreeMap::new();
    for record in received {
        let payload = String::from_utf8(record.payload.clone().unwrap()).unwrap();
        seen.entry(payload)
            .or_insert_with(Vec::new)
            .push((record.partition, record.offset));
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, places)| places.len() > 1).collect();
    assert!(
        duplicates.is_empty(),
        "duplicated (partition, offset): {duplicates:?}"
    );
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|payload| !seen.contains_key(*payload))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let mut last: BTreeMap<(i32, String, String), u64> = BTreeMap::new();
    for record in received {
        let payload = String::from_utf8(record.payload.clone().unwrap()).unwrap();
        let mut fields = payload.split(':');
        let (client, key, sequence) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        let sequence: u64 = sequence.parse().unwrap();
        let slot = (record.partition, client.to_owned(), key.to_owned());
        if let Some(previous) = last.insert(slot, sequence) {
            assert!(
                previous < sequence,
                "{client} key {key} out of order in partition {}",
                record.partition
            );
        }
    }
}

const KEYS: u64 = 40;

/// Produces `count` records round-robin over `KEYS` keys, pausing a little between sends so
/// that the reshard lands mid-stream; returns the acknowledged payloads.
async fn produce_keyed(
    bootstrap: String,
    topic: &'static str,
    count: u64,
    tag: &'static str,
) -> Vec<String> {
    let producer = producer(
        &bootstrap,
        &[
            ("topic.metadata.refresh.interval.ms", "500"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "60000"),
        ],
    );
    let mut acknowledged = Vec::new();
    let mut in_flight = Vec::new();
    for i in 0..count {
        let key = format!("key-{}", i % KEYS);
        let payload = format!("{tag}:{key}:{i:06}");
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        in_flight.push((
            payload.clone(),
            producer.send_result(record).expect("queued"),
        ));
        if i % 20 == 19 {
            for (payload, delivery) in in_flight.drain(..) {
                delivery
                    .await
                    .expect("delivery future")
                    .unwrap_or_else(|(error, _)| panic!("producer saw an error: {error}"));
                acknowledged.push(payload);
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    for (payload, delivery) in in_flight {
        delivery
            .await
            .expect("delivery future")
            .unwrap_or_else(|(error, _)| panic!("producer saw an error: {error}"));
        acknowledged.push(payload);
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_survive_split_and_merge_exactly_once_in_order() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    create_topic(&bootstrap, "reshard", 2).await;

    let writer = tokio::spawn(produce_keyed(bootstrap.clone(), "reshard", 3000, "rdkafka"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (low, high) = server
        .broker()
        .split_shard("reshard", 0, 1u128 << 126)
        .await
        .expect("split shard 0");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let merged = server
        .broker()
        .merge_shards("reshard", low, high)
        .await
        .expect("merge the children again");
    assert_eq!((low, high, merged), (2, 3, 4));
    let acknowledged = writer.await.expect("producer task");
    assert_eq!(acknowledged.len(), 3000);

    let partitions = server.broker().stream("reshard").unwrap().shards.len() as i32;
    assert_eq!(
        partitions, 5,
        "2 original + 2 split children + 1 merge child"
    );
    let consume_bootstrap = bootstrap.clone();
    let received = tokio::task::spawn_blocking(move || {
        consume(
            &consume_bootstrap,
            "reshard",
            partitions,
            Offset::Beginning,
            3000,
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();

    let mut seen = BTreeMap::new();
    for record in &received {
        let payload = String::from_utf8(record.payload.clone().unwrap()).unwrap();
        *seen.entry(payload).or_insert(0) += 1;
    }
    let duplicates: Vec<_> = seen
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(payload, _)| {
            let places: Vec<(i32, i64)> = received
                .iter()
                .filter(|record| record.payload.as_deref() == Some(payload.as_bytes()))
                .map(|record| (record.partition, record.offset))
                .collect();
            (payload.clone(), places)
        })
        .collect();
    if !duplicates.is_empty() {
        for (_, places) in &duplicates {
            for (partition, offset) in places {
                let read = server
                    .broker()
                    .read("reshard", i64::from(*partition), *offset, 1)
                    .await
                    .unwrap();
                let header = shardline_core::batch::BatchHeader::parse(&read.records).unwrap();
                eprintln!("p{partition} o{offset}: {header:?}");
            }
        }
    }
    assert!(
        duplicates.is_empty(),
        "duplicated (partition, offset): {duplicates:?}"
    );
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|payload| !seen.contains_key(*payload))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );

    // Within each shard, each key's records appear in the order they were sent.
    let mut last: BTreeMap<(i32, String), u64> = BTreeMap::new();
    for record in &received {
        let payload = String::from_utf8(record.payload.clone().unwrap()).unwrap();
        let mut fields = payload.split(':');
        let (_, key, sequence) = (
            fields.next(),
            fields.next().unwrap().to_owned(),
            fields.next().unwrap(),
        );
        let sequence: u64 = sequence.parse().unwrap();
        if let Some(previous) = last.insert((record.partition, key.clone()), sequence) {
            assert!(
                previous < sequence,
                "key {key} out of order in partition {}",
                record.partition
            );
        }
    }
    // Re-routing really happened: the closed parent ended, and children received records.
    let info = server.broker().stream("reshard").unwrap();
    assert!(!info.shards[0].is_open() && !info.shards[2].is_open() && !info.shards[3].is_open());
    let partitions_used: BTreeSet<i32> = received.iter().map(|record| record.partition).collect();
    assert!(
        partitions_used.contains(&4),
        "the merge child took writes: {partitions_used:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_producer_survives_split_and_merge() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    create_topic(&bootstrap, "reshard-kpy", 2).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop");
    let python = dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "run `bash scripts/install-test-deps.sh` first"
    );
    let child = std::process::Command::new(&python)
        .args([
            "kafka_python_reshard_producer.py",
            "--bootstrap",
            &bootstrap,
            "--topic",
            "reshard-kpy",
            "--count",
            "2000",
        ])
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the kafka-python producer");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (low, high) = server
        .broker()
        .split_shard("reshard-kpy", 1, 3u128 << 126)
        .await
        .expect("split shard 1");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server
        .broker()
        .merge_shards("reshard-kpy", low, high)
        .await
        .expect("merge the children again");
    let output = output.await.unwrap().expect("producer output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kafka-python producer failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let acknowledged: Vec<String> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("acked ").map(str::to_owned))
        .collect();
    assert_eq!(
        acknowledged.len(),
        2000,
        "{}",
        stdout.lines().next().unwrap_or("")
    );
    let partitions = server.broker().stream("reshard-kpy").unwrap().shards.len() as i32;
    let consume_bootstrap = bootstrap.clone();
    let received = tokio::task::spawn_blocking(move || {
        consume(
            &consume_bootstrap,
            "reshard-kpy",
            partitions,
            Offset::Beginning,
            2000,
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    check_exactly_once_in_order(&received, &acknowledged);
    server.stop().await;
}
