//! Interop with independent Kafka clients over real sockets: kafka-python, kafkajs and
//! Debian's kcat (librdkafka 2.0.2, the old exact-version ApiVersions checks). The
//! clients are installed by `scripts/install-test-deps.sh`, which the README's test
//! command runs first; a missing client fails the test with that instruction rather than
//! skipping silently. Each script prints `ok <check>` lines and exits non-zero on the
//! first failure (see tests/interop/README.md).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use shardline_testkit::{RawClient, TestServer, data_dir, request_frame, run_client_check};

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Runs one client check script from the interop directory (see
/// `shardline_testkit::run_client_check`).
fn run_check(name: &str, program: &Path, args: &[&str], timeout: Duration) {
    run_client_check(name, &interop_dir(), program, args, timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_produces_and_consumes_with_every_codec() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    tokio::task::spawn_blocking(move || {
        let python = interop_dir().join(".venv/bin/python");
        run_check(
            "kafka-python",
            &python,
            &[
                "kafka_python_check.py",
                "--bootstrap",
                &bootstrap,
                "--topic-prefix",
                "kpy",
            ],
            Duration::from_secs(120),
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_admin_and_idempotent_producer_work() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    tokio::task::spawn_blocking(move || {
        assert!(
            interop_dir().join("node_modules/kafkajs").exists(),
            "kafkajs is not installed; run `bash scripts/install-test-deps.sh` first"
        );
        run_check(
            "kafkajs",
            Path::new("node"),
            &[
                "kafkajs_check.js",
                "--bootstrap",
                &bootstrap,
                "--topic-prefix",
                "kjs",
            ],
            Duration::from_secs(120),
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_kcat_on_librdkafka_2_0_2_lists_produces_and_consumes() {
    let server = TestServer::start().await;
    server
        .broker()
        .create_stream("kcat-kcat", 1, Default::default(), false)
        .await
        .unwrap();
    let bootstrap = server.bootstrap();
    tokio::task::spawn_blocking(move || {
        let script = interop_dir().join("kcat_check.sh");
        run_check(
            "kcat",
            Path::new("bash"),
            &[script.to_str().unwrap(), &bootstrap, "kcat"],
            Duration::from_secs(120),
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

/// A server whose new groups rebalance at once (no initial delay), to keep group tests short.
async fn group_server() -> TestServer {
    TestServer::start_in(data_dir(), |config| {
        config.groups.initial_rebalance_delay_ms = 0;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_group_member_commits_and_a_new_member_resumes() {
    let server = group_server().await;
    let bootstrap = server.bootstrap();
    tokio::task::spawn_blocking(move || {
        let python = interop_dir().join(".venv/bin/python");
        run_check(
            "kafka-python group",
            &python,
            &[
                "kafka_python_check.py",
                "--bootstrap",
                &bootstrap,
                "--topic-prefix",
                "kpyg",
                "--group-consumer-only",
            ],
            Duration::from_secs(120),
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_group_consumer_reads_everything_once() {
    let server = group_server().await;
    let bootstrap = server.bootstrap();
    tokio::task::spawn_blocking(move || {
        assert!(
            interop_dir().join("node_modules/kafkajs").exists(),
            "kafkajs is not installed; run `bash scripts/install-test-deps.sh` first"
        );
        run_check(
            "kafkajs group",
            Path::new("node"),
            &[
                "kafkajs_check.js",
                "--bootstrap",
                &bootstrap,
                "--topic-prefix",
                "kjsg",
                "--with-group-consumer",
            ],
            Duration::from_secs(120),
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

/// (member, partition, offset, value) of each record a group member processed.
type RecordLog = Arc<Mutex<Vec<(String, i32, i64, String)>>>;

/// (state, member count) of `group`, by DescribeGroups v4 over a raw socket.
fn group_state(addr: std::net::SocketAddr, group: &str) -> (String, usize) {
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
    let mut body = BytesMut::new();
    request.encode(&mut body, 4).unwrap();
    let mut client = RawClient::connect(addr).unwrap();
    client
        .send_raw(&request_frame(
            ApiKey::DescribeGroups as i16,
            4,
            1,
            false,
            &body,
        ))
        .unwrap();
    let mut answer = Bytes::from(client.read_frame().unwrap().expect("an answer"));
    ResponseHeader::decode(&mut answer, 0).unwrap();
    let response = DescribeGroupsResponse::decode(&mut answer, 4).unwrap();
    let group = &response.groups[0];
    (group.group_state.to_string(), group.members.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_and_kafka_python_members_share_one_group() {
    const TOPIC: &str = "mixed";
    const GROUP: &str = "mixed-group";
    let server = group_server().await;
    let bootstrap = server.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 4).await;
    // (member, partition, offset, value) of every record processed and committed.
    let log: RecordLog = Arc::default();

    let python = interop_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing; run `bash scripts/install-test-deps.sh` first",
        python.display()
    );
    let mut python_member = Command::new(&python)
        .args(["kafka_python_check.py", "--bootstrap", &bootstrap])
        .args([
            "--group-member",
            GROUP,
            "--topic",
            TOPIC,
            "--deadline",
            "100",
        ])
        .current_dir(interop_dir())
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the kafka-python member");
    // Shown with the test's own output, that is only if it fails.
    let stderr = python_member.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("kafka-python member: {line}");
        }
    });
    let stdout = python_member.stdout.take().unwrap();
    let python_log = Arc::clone(&log);
    let python_reader = std::thread::spawn(move || {
        let mut left_cleanly = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ok group-member" {
                left_cleanly = true;
            }
            let Some(record) = line.strip_prefix("processed-record: ") else {
                continue;
            };
            let mut words = record.splitn(3, ' ');
            let (Some(partition), Some(offset), Some(value)) =
                (words.next(), words.next(), words.next())
            else {
                continue;
            };
            python_log.lock().unwrap().push((
                "kafka-python".to_owned(),
                partition.parse().unwrap(),
                offset.parse().unwrap(),
                value.to_owned(),
            ));
        }
        left_cleanly
    });

    let stop = Arc::new(AtomicBool::new(false));
    let rdkafka_member = {
        let (bootstrap, stop, log) = (bootstrap.clone(), Arc::clone(&stop), Arc::clone(&log));
        std::thread::spawn(move || {
            let consumer: rdkafka::consumer::BaseConsumer = common::client_config(&bootstrap)
                .set("group.id", GROUP)
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "500")
                .set("fetch.wait.max.ms", "100")
                .create()
                .expect("consumer");
            consumer.subscribe(&[TOPIC]).expect("subscribe");
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                    consumer
                        .commit_message(&message, CommitMode::Sync)
                        .expect("commit");
                    log.lock().unwrap().push((
                        "librdkafka".to_owned(),
                        message.partition(),
                        message.offset(),
                        String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
                    ));
                }
            }
        })
    };

    let addr = server.kafka_addr;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (state, members) = tokio::task::spawn_blocking(move || group_state(addr, GROUP))
            .await
            .unwrap();
        if state == "Stable" && members == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two members never formed a Stable group: {state}, {members}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let producer = common::producer(&bootstrap, &[]);
    let mut acked = BTreeMap::new();
    let mut send = async |range: std::ops::Range<usize>| {
        for i in range {
            let value = format!("mixed-{i}");
            let record = FutureRecord::to(TOPIC)
                .key("k")
                .payload(&value)
                .partition(i as i32 % 4);
            let delivery = producer
                .send(record, Duration::from_secs(10))
                .await
                .expect("acknowledged");
            acked.insert(value, (delivery.partition, delivery.offset));
        }
    };
    send(0..200).await;
    let wait_for = async |count: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while log.lock().unwrap().len() < count {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {count} records",
                log.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_for(200, "two members").await;
    {
        let log = log.lock().unwrap();
        let members: std::collections::BTreeSet<&str> =
            log.iter().map(|(member, ..)| member.as_str()).collect();
        assert_eq!(members.len(), 2, "both clients own partitions");
    }

    // The kafka-python member leaves (stdin closes); librdkafka takes over everything.
    drop(python_member.stdin.take());
    let exited = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = python_member.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > exited {
            let _ = python_member.kill();
            panic!("the kafka-python member did not leave");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "kafka-python member exited with {status}");
    assert!(
        python_reader.join().unwrap(),
        "kafka-python member left cleanly"
    );
    send(200..260).await;
    wait_for(260, "after kafka-python left").await;
    stop.store(true, Ordering::Relaxed);
    rdkafka_member.join().unwrap();

    {
        let log = log.lock().unwrap();
        let mut seen = BTreeMap::new();
        for (member, partition, offset, value) in log.iter() {
            assert_eq!(
                acked.get(value),
                Some(&(*partition, *offset)),
                "{value} read by {member}"
            );
            assert!(
                seen.insert(value.clone(), member.clone()).is_none(),
                "{value} read twice"
            );
        }
        assert_eq!(seen.len(), acked.len());
        assert!(
            log.iter()
                .skip(200)
                .all(|(member, ..)| member == "librdkafka"),
            "after the leave only librdkafka reads"
        );
    }
    server.stop().await;
}
