//! Tiered storage end to end, against a real S3 HTTP endpoint (s3s in-process): with
//! 1 MiB segments and no local retention, what librdkafka produces moves to the bucket
//! and leaves the local disk, is consumed back from offset 0 byte for byte, and survives
//! the loss of the whole data directory (rebuilt from the bucket, original offsets and
//! committed group offsets intact, by `serve` and by `shardline restore`); a store outage
//! and a kill -9 mid-upload lose nothing; a damaged object fails only its own range, with
//! KAFKA_STORAGE_ERROR.

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

/// A topic of 1 MiB segments whose sealed segments leave local disk once uploaded.
async fn create_tiered_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create().unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1))
        .set("segment.bytes", "1048576")
        .set("local.retention.ms", "0");
    for result in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

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
    create_tiered_topic(&bootstrap, "cold", PARTITIONS).await;

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
    // Wait for the snapshot of offsets to reach the bucket, then lose the whole data
    // directory.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s3
        .objects("bucket", "cluster-1", "offsets.json")
        .iter()
        .any(|path| std::fs::read_to_string(path).is_ok_and(|text| text.contains("archivist")))
    {
        assert!(
            Instant::now() < deadline,
            "offsets never reached the bucket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

    // The same rebuild done explicitly by `shardline restore`, which also checks that
    // every segment the manifests list is in the bucket.
    let restore = |s3: &S3Server| {
        let target = data_dir();
        let output = std::process::Command::new(shardline_testkit::shardline_binary().unwrap())
            .args([
                "restore",
                "--object-store",
                "s3://bucket/cluster-1",
                "--data-dir",
            ])
            .arg(target.path())
            .envs(s3.env())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (status, stderr) = restore(&s3);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("verifying tiered segments ["), "{stderr}");
    assert!(stderr.contains("100%"), "{stderr}");
    let row: Vec<&str> = stderr
        .lines()
        .find(|line| line.starts_with("cold "))
        .map(|line| line.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        row,
        ["cold", &PARTITIONS.to_string(), &tiered.to_string()],
        "{stderr}"
    );
    assert!(stderr.contains("committed offsets of 1 groups"), "{stderr}");
    // A segment lost from the bucket is named, and the restore fails.
    let lost = &s3.objects("bucket", "cluster-1", ".log")[0];
    std::fs::remove_file(lost).unwrap();
    let (status, stderr) = restore(&s3);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("unreadable: remote object"), "{stderr}");
    assert!(stderr.contains("1 tiered segments are missing"), "{stderr}");
}

/// A committed offset as the broker stores it.
fn shardline_broker_offset(offset: i64) -> shardline_testkit::CommittedOffset {
    shardline_testkit::CommittedOffset {
        offset,
        leader_epoch: 0,
        metadata: None,
        // Now: an old timestamp would let the offsets expiry remove it mid-test.
        commit_timestamp_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_delays_uploads_and_loses_nothing() {
    let s3 = S3Server::start("bucket").await;
    let configure = |config: &mut shardline::config::ServeConfig| {
        s3.configure(config, "bucket", "outage");
        config.tier.upload_interval_ms = 200;
    };
    let server = TestServer::start_in(data_dir(), configure).await;
    let bootstrap = server.bootstrap();
    create_tiered_topic(&bootstrap, "flaky", 1).await;
    let producer = producer(&bootstrap, &[("linger.ms", "5")]);
    let mut placed = BTreeMap::new();
    let mut produce = async |range: std::ops::Range<usize>| {
        let mut deliveries = Vec::new();
        for index in range {
            let value = payload(index);
            let record = FutureRecord::<(), [u8]>::to("flaky")
                .payload(&value)
                .partition(0);
            deliveries.push((index, producer.send_result(record).expect("queued")));
        }
        for (index, delivery) in deliveries {
            let delivery = delivery
                .await
                .unwrap()
                .expect("producing goes on while the store is down");
            placed.insert((delivery.partition, delivery.offset), index);
        }
    };
    produce(0..640).await; // 5 MiB
    s3.stop();
    produce(640..1920).await; // 10 MiB more, with the store down
    tokio::time::sleep(Duration::from_secs(2)).await;
    let backlog = server.broker().tier_backlog().unwrap();
    assert!(
        backlog.segments > 0,
        "segments wait while the store is down: {backlog:?}"
    );
    // What `shardline stream describe` shows during the outage.
    let storage = server.broker().stream_storage("flaky").await.unwrap();
    assert_eq!(storage[0].backlog, backlog, "{storage:?}");
    s3.restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.broker().tier_backlog().unwrap().segments > 0 {
        assert!(
            Instant::now() < deadline,
            "the backlog did not drain after the store came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = server.broker().tier_stats().unwrap();
    assert!(
        stats.retries + stats.upload_failures > 0,
        "the outage was noticed: {stats:?}"
    );
    // Everything, once: from the bucket for the old part, from disk for the newest.
    let received = tokio::task::spawn_blocking(move || {
        consume(
            &bootstrap,
            "flaky",
            1,
            Offset::Beginning,
            1920,
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    assert_eq!(received.len(), 1920);
    for (position, record) in received.iter().enumerate() {
        assert_eq!(
            record.offset, position as i64,
            "dense offsets, no duplicates"
        );
        let index = placed[&(record.partition, record.offset)];
        assert_eq!(record.payload.as_deref(), Some(payload(index).as_slice()));
    }
    server.stop().await;
}

/// Reads a Prometheus gauge from the server's /metrics.
fn metric(http: std::net::SocketAddr, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(http).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_uploads_leaves_manifest_and_bucket_consistent() {
    let s3 = S3Server::start("bucket").await;
    let dir = data_dir();
    let args = ["--object-store", "s3://bucket/crash"];
    let server =
        shardline_testkit::ServerProcess::spawn_with_env(dir.path(), &args, &s3.env()).unwrap();
    let bootstrap = server.bootstrap();
    create_tiered_topic(&bootstrap, "crashy", 1).await;
    let producer = producer(&bootstrap, &[("linger.ms", "5")]);
    let mut placed = BTreeMap::new();
    let mut deliveries = Vec::new();
    for index in 0..2560 {
        let value = payload(index); // 20 MiB in all
        let record = FutureRecord::<(), [u8]>::to("crashy")
            .payload(&value)
            .partition(0);
        deliveries.push((index, producer.send_result(record).expect("queued")));
    }
    for (index, delivery) in deliveries {
        let delivery = delivery.await.unwrap().expect("acknowledged");
        placed.insert(delivery.offset, index);
    }
    // Kill the server as soon as some segments are in the bucket and others still go up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3.objects("bucket", "crash", ".log").len() < 3 {
        assert!(Instant::now() < deadline, "no upload started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    drop(producer);

    let server =
        shardline_testkit::ServerProcess::spawn_with_env(dir.path(), &args, &s3.env()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let backlog = metric(server.http_addr, "shardline_tier_upload_backlog_segments");
        if backlog == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlog {backlog:?} did not drain after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The manifest lists exactly the segment objects in the bucket, contiguously.
    let manifests = s3.objects("bucket", "crash", "manifest.json");
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    let segments = manifest["segments"].as_array().unwrap();
    let mut next = segments[0]["base_offset"].as_u64().unwrap();
    for segment in segments {
        assert_eq!(
            segment["base_offset"].as_u64().unwrap(),
            next,
            "contiguous manifest"
        );
        next = segment["next_offset"].as_u64().unwrap();
    }
    assert_eq!(
        s3.objects("bucket", "crash", ".log").len(),
        segments.len(),
        "no orphan segment objects"
    );
    // Every acknowledged record is there, once, in order.
    let restarted = server.bootstrap();
    let received = tokio::task::spawn_blocking(move || {
        consume(
            &restarted,
            "crashy",
            1,
            Offset::Beginning,
            2560,
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    assert_eq!(received.len(), 2560);
    for (position, record) in received.iter().enumerate() {
        assert_eq!(record.offset, position as i64);
        assert_eq!(
            record.payload.as_deref(),
            Some(payload(placed[&record.offset]).as_slice())
        );
    }
    server.terminate().unwrap();
}

/// Fetch v4 of one partition at `offset`: (error code, record bytes).
fn fetch(addr: std::net::SocketAddr, topic: &str, offset: i64) -> (i16, usize) {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{
        ApiKey, FetchRequest, FetchResponse, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable as _, Encodable as _, StrBytes};
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let mut body = BytesMut::new();
    request.encode(&mut body, 4).unwrap();
    let mut client = shardline_testkit::RawClient::connect(addr).unwrap();
    client
        .send_request(ApiKey::Fetch as i16, 4, 7, &body)
        .unwrap();
    let mut frame = Bytes::from(client.read_frame().unwrap().expect("a fetch answer"));
    ResponseHeader::decode(&mut frame, 0).unwrap();
    let response = FetchResponse::decode(&mut frame, 4).unwrap();
    let partition = &response.responses[0].partitions[0];
    (
        partition.error_code,
        partition.records.as_ref().map_or(0, Bytes::len),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_object_fails_only_its_own_range_with_a_storage_error() {
    const KAFKA_STORAGE_ERROR: i16 = 56;
    let s3 = S3Server::start("bucket").await;
    let configure = |config: &mut shardline::config::ServeConfig| {
        s3.configure(config, "bucket", "damage");
        config.tier.upload_interval_ms = 200;
    };
    let server = TestServer::start_in(data_dir(), configure).await;
    let bootstrap = server.bootstrap();
    create_tiered_topic(&bootstrap, "damaged", 1).await;
    let producer = producer(&bootstrap, &[("linger.ms", "5")]);
    let mut deliveries = Vec::new();
    for index in 0..512 {
        let value = payload(index); // 4 MiB in all: three or four 1 MiB segments
        let record = FutureRecord::<(), [u8]>::to("damaged")
            .payload(&value)
            .partition(0);
        deliveries.push(producer.send_result(record).expect("queued"));
    }
    for delivery in deliveries {
        delivery.await.unwrap().expect("acknowledged");
    }
    // Wait until at least two segments are only in the bucket.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let storage = server.broker().stream_storage("damaged").await.unwrap();
        let remote = storage[0].remote.clone().unwrap();
        if remote.segments >= 2 && storage[0].local_start >= remote.range.unwrap().1 {
            break;
        }
        assert!(Instant::now() < deadline, "not tiered: {storage:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Truncate the second segment's .log in the bucket (its name starts with its base
    // offset, then the uploading writer's token).
    let mut objects = s3.objects("bucket", "damage", ".log");
    objects.sort();
    let damaged = &objects[1];
    let base: i64 = damaged
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.split('-').next())
        .and_then(|digits| digits.parse().ok())
        .unwrap();
    let length = std::fs::metadata(damaged).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(damaged)
        .unwrap()
        .set_len(length / 2)
        .unwrap();

    let addr: std::net::SocketAddr = bootstrap.parse().unwrap();
    let (error, _) = tokio::task::spawn_blocking(move || fetch(addr, "damaged", base))
        .await
        .unwrap();
    assert_eq!(error, KAFKA_STORAGE_ERROR, "the damaged range");
    // The first segment reads as before, and the server goes on serving.
    let (error, bytes) = tokio::task::spawn_blocking(move || fetch(addr, "damaged", 0))
        .await
        .unwrap();
    assert_eq!((error, bytes > 0), (0, true), "an intact range");
    server.stop().await;
}
