//! librdkafka (through the `rdkafka` crate) against a real server on 127.0.0.1:0:
//! produce with every codec and idempotence on, consume from earliest, latest and a
//! timestamp, and read everything back after a restart.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{consume, consumer, create_topic, drain, producer};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use shardline_testkit::TestServer;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// Produces `count` keyed records to explicit partitions (i % partitions) and returns the
/// acknowledged (partition, offset) of each, keyed by payload.
async fn produce_keyed(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    codec: &str,
    count: usize,
) -> BTreeMap<Vec<u8>, (i32, i64)> {
    let producer = producer(bootstrap, &[("compression.type", codec)]);
    let mut deliveries = Vec::with_capacity(count);
    for i in 0..count {
        let key = format!("key-{i}");
        // Repetitive payloads so every codec actually compresses something.
        let payload = format!("{codec}-record-{i}-{}", "x".repeat(100));
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .partition((i as i32) % partitions);
        let delivery = producer.send_result(record).expect("queued");
        deliveries.push((payload.clone(), delivery));
    }
    let mut acknowledged = BTreeMap::new();
    for (payload, delivery) in deliveries {
        let delivery = delivery
            .await
            .expect("delivery future")
            .expect("acknowledged");
        acknowledged.insert(payload.into_bytes(), (delivery.partition, delivery.offset));
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_at_the_acknowledged_offsets_and_survives_a_restart() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    create_topic(&bootstrap, "codecs", 3).await;

    let mut acknowledged = BTreeMap::new();
    for codec in CODECS {
        acknowledged.extend(produce_keyed(&bootstrap, "codecs", 3, codec, 200).await);
    }
    assert_eq!(acknowledged.len(), 1000);

    let check = |bootstrap: String, acknowledged: BTreeMap<Vec<u8>, (i32, i64)>| async move {
        let received = tokio::task::spawn_blocking(move || {
            consume(
                &bootstrap,
                "codecs",
                3,
                Offset::Beginning,
                1000,
                Duration::from_secs(30),
            )
        })
        .await
        .unwrap();
        assert_eq!(
            received.len(),
            1000,
            "every acknowledged record is read back"
        );
        let mut last_offset = BTreeMap::new();
        for record in &received {
            let payload = record.payload.clone().unwrap();
            let (partition, offset) = acknowledged[&payload];
            assert_eq!((record.partition, record.offset), (partition, offset));
            let index: usize = String::from_utf8_lossy(&payload)
                .split('-')
                .nth(2)
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                record.key.as_deref(),
                Some(format!("key-{index}").as_bytes())
            );
            let previous = last_offset.insert(record.partition, record.offset);
            assert!(
                previous.is_none_or(|previous| previous < record.offset),
                "in offset order"
            );
        }
        // Offsets are dense per partition: 0..n with nothing missing or repeated.
        for partition in 0..3 {
            let mut offsets: Vec<i64> = received
                .iter()
                .filter(|record| record.partition == partition)
                .map(|record| record.offset)
                .collect();
            offsets.sort_unstable();
            assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
        }
    };
    check(bootstrap.clone(), acknowledged.clone()).await;

    let data_dir = server.stop().await;
    let server = TestServer::start_in(data_dir, |_config| {}).await;
    check(server.bootstrap(), acknowledged).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_start_at_latest_or_at_a_timestamp() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    create_topic(&bootstrap, "positions", 1).await;

    let before = produce_keyed(&bootstrap, "positions", 1, "none", 50).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let boundary_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = produce_keyed(&bootstrap, "positions", 1, "none", 50).await;
    let first_after = after.values().map(|(_, offset)| *offset).min().unwrap();
    let last_before = before.values().map(|(_, offset)| *offset).max().unwrap();

    // By timestamp: the first offset whose record is at or after the boundary.
    let lookup_bootstrap = bootstrap.clone();
    let found = tokio::task::spawn_blocking(move || {
        let consumer = consumer(&lookup_bootstrap);
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset("positions", 0, Offset::Offset(boundary_ms))
            .unwrap();
        let answer = consumer
            .offsets_for_times(query, Timeout::After(Duration::from_secs(10)))
            .unwrap();
        answer.elements()[0].offset()
    })
    .await
    .unwrap();
    match found {
        Offset::Offset(offset) => assert!(
            last_before < offset && offset <= first_after,
            "timestamp lookup gave {offset}; expected ({last_before}, {first_after}]"
        ),
        other => panic!("timestamp lookup gave {other:?}"),
    }

    // Watermarks: earliest 0, latest after the 100 records.
    let watermark_bootstrap = bootstrap.clone();
    let (low, high) = tokio::task::spawn_blocking(move || {
        consumer(&watermark_bootstrap)
            .fetch_watermarks("positions", 0, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!((low, high), (0, 100));

    // From latest: only records produced after the consumer is positioned arrive.
    let latest_bootstrap = bootstrap.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let consumer = consumer(&latest_bootstrap);
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset("positions", 0, Offset::End)
            .unwrap();
        consumer.assign(&assignment).unwrap();
        // Give librdkafka time to resolve "end" before anything new is written.
        let early = drain(&consumer, 1, Duration::from_secs(2));
        assert!(early.is_empty(), "nothing new yet, got {early:?}");
        drain(&consumer, 10, Duration::from_secs(20))
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let newest = produce_keyed(&bootstrap, "positions", 1, "none", 10).await;
    let received = reader.await.unwrap();
    let mut offsets: Vec<i64> = received.iter().map(|record| record.offset).collect();
    offsets.sort_unstable();
    let mut expected: Vec<i64> = newest.values().map(|(_, offset)| *offset).collect();
    expected.sort_unstable();
    assert_eq!(offsets, expected);
    server.stop().await;
}
