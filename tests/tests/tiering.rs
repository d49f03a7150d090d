//! Tiered storage end to end, against a real S3 HTTP endpoint (s3s in-process): with
//! 1 MiB segments and no local retention, what librdkafka produces moves to the bucket
//! and leaves the local disk, is consumed back from offset 0 byte for byte, and survives
//! the loss of the whole data directory (rebuilt from the bucket, original offsets and
//! committed group offsets intact).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{client_config, consume, producer};
use rdkafka::Offset;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureRecord;
use shardline_testkit::{S3Server, TestServer, data_dir};

const PARTITIONS: i32 = 2;
const RECORD_BYTES: usize = 8 * 1024;
const RECORDS: usize = 6400; // 50 MiB

fn payload(index: usize) -> Vec<u8> {
    // Every byte depends on the index, so a record read back at the wrong place or with
    // damaged bytes is caught.
    let mut bytes = format!("{index:08}:").into_bytes();
    bytes.extend((0..RECORD_BYTES - 9).map(|position| (index.wrapping_mul(31) + position) as u8));
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_tier_to_s3_and_come_back_after_losing_the_disk() {
    let s3 = S3Server::start("bucket").await;
    let configure = |config: &mut shardline::config::ServeConfig| {
        s3.configure(config, "bucket", "cluster-1");
        config.tier.upload_interval_ms = 200;
    };
    let dir = data_dir();
    let server = TestServer::start_in(dir, configure).await;
    let bootstrap = server.bootstrap();
    let admin: AdminClient<DefaultClientContext> = client_config(&bootstrap).create().unwrap();
    let topic = NewTopic::new("cold", PARTITIONS, TopicReplication::Fixed(1))
        .set("segment.bytes", "1048576")
        .set("local.retention.ms", "0");
    for result in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }

    let producer = producer(&bootstrap, &[("linger.ms", "5")]);
    let mut deliveries = Vec::with_capacity(RECORDS);
    for index in 0..RECORDS {
        let value = payload(index);
        let record = FutureRecord::<(), [u8]>::to("cold")
            .payload(&value)
            .partition((index % PARTITIONS as usize) as i32);
        deliveries.push(producer.send_result(record).expect("queued"));
    }
    let mut placed = BTreeMap::new();
    for (index, delivery) in deliveries.into_iter().enumerate() {
        let delivery = delivery.await.unwrap().expect("acknowledged");
        placed.insert((delivery.partition, delivery.offset), index);
    }

    // The uploader moves sealed segments to the bucket and, with no local retention,
    // drops their local copies: wait (bounded) until both shards start past offset 0
    // locally and nothing sealed is waiting.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let backlog = server.broker().tier_backlog().unwrap();
        let tiered = server.broker().tier_stats().unwrap().segments_uploaded;
        if backlog.segments == 0 && tiered >= 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "uploads did not finish: {backlog:?}, {tiered} uploaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let segments_in_bucket = s3.objects("bucket", "cluster-1", ".log").len();
    assert!(
        segments_in_bucket >= 40,
        "{segments_in_bucket} segments in the bucket"
    );
    let local_logs: usize = std::fs::read_dir(server.data_dir.path().join("streams"))
        .unwrap()
        .flatten()
        .flat_map(|stream| std::fs::read_dir(stream.path()).unwrap().flatten())
        .flat_map(|shard| std::fs::read_dir(shard.path()).unwrap().flatten())
        .filter(|file| file.path().extension().is_some_and(|ext| ext == "log"))
        .count();
    assert!(
        local_logs <= 2 * PARTITIONS as usize,
        "{local_logs} segments still local"
    );

    let check = |bootstrap: String, placed: BTreeMap<(i32, i64), usize>, must_have: usize| async move {
        let received = tokio::task::spawn_blocking(move || {
            consume(
                &bootstrap,
                "cold",
                PARTITIONS,
                Offset::Beginning,
                must_have,
                Duration::from_secs(90),
            )
        })
        .await
        .unwrap();
        assert!(
            received.len() >= must_have,
            "read back {} of {must_have}",
            received.len()
        );
        for record in &received {
            let index = placed[&(record.partition, record.offset)];
            assert_eq!(
                record.payload.as_deref(),
                Some(payload(index).as_slice()),
                "record {index}"
            );
        }
        received.len()
    };
    let read = check(bootstrap.clone(), placed.clone(), RECORDS).await;
    assert_eq!(
        read, RECORDS,
        "every record, from offset 0, across bucket and disk"
    );

    // A committed group offset, to be found again after the disk is lost.
    server
        .broker()
        .commit_offsets(
            "archivist",
            vec![("cold".to_owned(), 0, shardline_broker_offset(1234))],
        )
        .await
        .unwrap();
    // Let the snapshot of offsets reach the bucket, then lose the whole data directory.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let old_dir = server.stop().await;
    drop(old_dir);

    let server = TestServer::start_in(data_dir(), configure).await;
    let info = server
        .broker()
        .stream("cold")
        .expect("stream restored from the bucket");
    assert_eq!(info.shards.len(), PARTITIONS as usize);
    let committed = server
        .broker()
        .committed_offset("archivist", "cold", 0)
        .expect("committed offset restored");
    assert_eq!(committed.offset, 1234);
    // Records in the segments that were still open (never sealed, so never tiered) are
    // not in the bucket; everything tiered is back at its original offset.
    let tiered: usize = (0..PARTITIONS)
        .map(|partition| {
            server
                .broker()
                .offsets("cold", i64::from(partition))
                .unwrap()
                .1 as usize
        })
        .sum();
    assert!(
        tiered >= RECORDS - 2 * (1_048_576 / RECORD_BYTES + 1),
        "{tiered} records tiered"
    );
    let read = check(server.bootstrap(), placed, tiered).await;
    assert_eq!(read, tiered);
    server.stop().await;
}

/// A committed offset as the broker stores it.
fn shardline_broker_offset(offset: i64) -> shardline_testkit::CommittedOffset {
    shardline_testkit::CommittedOffset {
        offset,
        leader_epoch: 0,
        metadata: None,
        commit_timestamp_ms: 1,
    }
}
