//! Consumer groups end to end: librdkafka members sharing a topic through joins, a
//! graceful leave, a SIGKILLed member and a server restart; every group API's errors over
//! raw sockets; and the `shardline group` CLI.
//!
//! The member that is killed runs in a child process: this test binary re-executed with
//! `child_group_member` and its settings in an environment variable, printing one line per
//! record it has processed and committed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{client_config, create_topic, producer};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use shardline_testkit::{RawClient, TestServer, data_dir, request_frame};

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 6;
const GROUP: &str = "billing";
/// Settings passed to the child member: bootstrap, group, topic, name.
const CHILD_ENV: &str = "SHARDLINE_GROUPS_TEST_CHILD";
/// Starts each line the child prints per record: `<prefix><partition> <offset> <payload>`.
const RECORD_PREFIX: &str = "processed-record: ";

/// One record as a member processed it.
#[derive(Debug, Clone)]
struct Seen {
    member: String,
    partition: i32,
    offset: i64,
    payload: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn group_consumer(bootstrap: &str, group: &str, name: &str) -> BaseConsumer {
    client_config(bootstrap)
        .set("group.id", group)
        .set("client.id", name)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // The server is configured to allow this short session (see the tests).
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("group consumer")
}

/// Polls until `stop`, recording each record and then committing it synchronously, so
/// that whoever owns the partition next starts right after it.
fn consume_loop(
    consumer: &BaseConsumer,
    name: &str,
    stop: &AtomicBool,
    mut on_record: impl FnMut(Seen),
) {
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let seen = Seen {
                    member: name.to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    payload: String::from_utf8_lossy(message.payload().unwrap_or_default())
                        .into_owned(),
                };
                if let Err(error) = consumer.commit_message(&message, CommitMode::Sync) {
                    panic!(
                        "{name}: commit of {}/{} failed: {error}",
                        seen.partition, seen.offset
                    );
                }
                on_record(seen);
            }
            // Transient (a rebalance, a reconnect): librdkafka recovers by itself.
            Some(Err(error)) => eprintln!("# {name}: {error}"),
            None => {}
        }
    }
}

/// A member on a thread of this process; stopping it closes the consumer, which sends
/// LeaveGroup.
struct ThreadMember {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl ThreadMember {
    fn start(bootstrap: &str, group: &str, name: &str, log: &Log) -> ThreadMember {
        let stop = Arc::new(AtomicBool::new(false));
        let (bootstrap, group, name, log) = (
            bootstrap.to_owned(),
            group.to_owned(),
            name.to_owned(),
            Arc::clone(log),
        );
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let consumer = group_consumer(&bootstrap, &group, &name);
            consumer.subscribe(&[TOPIC]).expect("subscribe");
            consume_loop(&consumer, &name, &stopping, |seen| {
                log.lock().unwrap().push(seen)
            });
            drop(consumer);
        });
        ThreadMember { stop, thread }
    }

    fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("member thread");
    }
}

/// A member in a child process, so that it can die by SIGKILL (no LeaveGroup, no more
/// heartbeats).
struct ChildMember {
    child: Child,
    reader: Option<JoinHandle<()>>,
}

impl Drop for ChildMember {
    /// A failing test must not leave the child running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildMember {
    fn start(bootstrap: &str, group: &str, name: &str, log: &Log) -> ChildMember {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "child_group_member",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, format!("{bootstrap}|{group}|{TOPIC}|{name}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the child member");
        // Shown with the test's own output, that is only if it fails.
        let stderr = child.stderr.take().expect("child stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("child member: {line}");
            }
        });
        let stdout = child.stdout.take().expect("child stdout");
        let (name, log) = (name.to_owned(), Arc::clone(log));
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest's "test child_group_member ... " shares the first line.
                let Some((_, record)) = line.split_once(RECORD_PREFIX) else {
                    continue;
                };
                let mut words = record.split(' ');
                let (Some(partition), Some(offset), Some(payload)) =
                    (words.next(), words.next(), words.next())
                else {
                    continue;
                };
                log.lock().unwrap().push(Seen {
                    member: name.clone(),
                    partition: partition.parse().unwrap(),
                    offset: offset.parse().unwrap(),
                    payload: payload.to_owned(),
                });
            }
        });
        ChildMember {
            child,
            reader: Some(reader),
        }
    }

    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("reader");
        }
    }
}

/// The child side of [`ChildMember`], run only by it (ignored, so that a run of the suite
/// does not list it as a test that passed).
#[test]
#[ignore = "the child process of the group tests; started by ChildMember"]
fn child_group_member() {
    let Ok(settings) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = settings.split('|').collect();
    let [bootstrap, group, topic, name] = parts[..] else {
        panic!("bad {CHILD_ENV}: {settings}");
    };
    let consumer = group_consumer(bootstrap, group, name);
    consumer.subscribe(&[topic]).expect("subscribe");
    let never = AtomicBool::new(false);
    consume_loop(&consumer, name, &never, |seen| {
        println!(
            "{RECORD_PREFIX}{} {} {}",
            seen.partition, seen.offset, seen.payload
        );
    });
}

/// Produces `payloads` round-robin over the partitions; returns payload -> (partition, offset).
async fn produce(
    bootstrap: &str,
    payloads: impl IntoIterator<Item = String>,
) -> BTreeMap<String, (i32, i64)> {
    let producer = producer(bootstrap, &[]);
    let mut pending = Vec::new();
    for (i, payload) in payloads.into_iter().enumerate() {
        let record = FutureRecord::to(TOPIC)
            .key("k")
            .payload(&payload)
            .partition(i as i32 % PARTITIONS);
        pending.push((
            payload.clone(),
            producer.send_result(record).expect("queued"),
        ));
    }
    let mut acked = BTreeMap::new();
    for (payload, delivery) in pending {
        let delivery = delivery.await.expect("delivery").expect("acknowledged");
        acked.insert(payload, (delivery.partition, delivery.offset));
    }
    acked
}

/// Waits (bounded) until every payload in `expected` has been seen.
async fn wait_for_all(log: &Log, expected: &BTreeMap<String, (i32, i64)>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: BTreeSet<String> = log
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.payload.clone())
            .collect();
        let missing: Vec<(&String, &(i32, i64))> = expected
            .iter()
            .filter(|(p, _)| !seen.contains(*p))
            .collect();
        if missing.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let partition = missing[0].1.0;
            let history: Vec<(String, i64)> = log
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.partition == partition)
                .map(|s| (s.member.clone(), s.offset))
                .collect();
            panic!(
                "{what}: {} records never arrived, first {:?}; partition {partition} was read as {history:?}",
                missing.len(),
                missing[0]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every produced record was processed exactly once, at its acknowledged position.
fn assert_exactly_once(log: &Log, produced: &BTreeMap<String, (i32, i64)>) {
    let log = log.lock().unwrap();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for seen in log.iter() {
        *count.entry(&seen.payload).or_default() += 1;
        assert_eq!(
            produced.get(&seen.payload),
            Some(&(seen.partition, seen.offset)),
            "{seen:?} is not where it was acknowledged"
        );
    }
    let repeated: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "read more than once: {repeated:?}");
    assert_eq!(count.len(), produced.len(), "every record arrives");
}

fn members_seen(
    log: &Log,
    payloads: &BTreeMap<String, (i32, i64)>,
) -> BTreeMap<String, BTreeSet<i32>> {
    let mut members: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for seen in log.lock().unwrap().iter() {
        if payloads.contains_key(&seen.payload) {
            members
                .entry(seen.member.clone())
                .or_default()
                .insert(seen.partition);
        }
    }
    members
}

fn batch(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_a_topic_exactly_once_through_leave_kill_and_restart() {
    let server = TestServer::start_in(data_dir(), |config| {
        config.groups.initial_rebalance_delay_ms = 0;
    })
    .await;
    let bootstrap = server.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS).await;
    let log: Log = Arc::default();
    let mut produced = BTreeMap::new();

    // Three members join while a producer writes.
    let first = ThreadMember::start(&bootstrap, GROUP, "first", &log);
    let second = ThreadMember::start(&bootstrap, GROUP, "second", &log);
    let third = ChildMember::start(&bootstrap, GROUP, "third", &log);
    for round in 0..6 {
        produced.extend(produce(&bootstrap, batch(&format!("join{round}"), 60)).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for_all(&log, &produced, "while joining").await;
    assert_exactly_once(&log, &produced);
    // Once the group has settled, all three share the partitions.
    wait_for_members(&server, GROUP, 3).await;
    let shared = produce(&bootstrap, batch("shared", 60)).await;
    produced.extend(shared.clone());
    wait_for_all(&log, &produced, "three members").await;
    assert_exactly_once(&log, &produced);
    let owners = members_seen(&log, &shared);
    assert_eq!(owners.len(), 3, "each member owns partitions: {owners:?}");
    let owned: usize = owners.values().map(BTreeSet::len).sum();
    assert_eq!(
        owned, PARTITIONS as usize,
        "no partition has two owners: {owners:?}"
    );

    // A graceful leave: the others take over its partitions without a gap or a repeat.
    second.close();
    let after_leave = produce(&bootstrap, batch("leave", 60)).await;
    produced.extend(after_leave.clone());
    wait_for_all(&log, &produced, "after a leave").await;
    assert_exactly_once(&log, &produced);
    assert!(!members_seen(&log, &after_leave).contains_key("second"));

    // A crash: nothing tells the group, so the dead member's partitions stall until its
    // 6 s session times out; then the survivor takes them over.
    wait_for_members(&server, GROUP, 2).await;
    third.kill9();
    let after_kill = produce(&bootstrap, batch("kill", 60)).await;
    produced.extend(after_kill.clone());
    wait_for_all(&log, &produced, "after a kill").await;
    assert_exactly_once(&log, &produced);
    let owners = members_seen(&log, &after_kill);
    assert_eq!(
        owners.get("first").map(BTreeSet::len),
        Some(PARTITIONS as usize),
        "the survivor owns everything: {owners:?}"
    );

    // A restart: a new member of the group resumes exactly after the committed offsets.
    first.close();
    let data = server.stop().await;
    let server = TestServer::start_in(data, |config| {
        config.groups.initial_rebalance_delay_ms = 0;
    })
    .await;
    let bootstrap = server.bootstrap();
    let after_restart = produce(&bootstrap, batch("restart", 60)).await;
    produced.extend(after_restart.clone());
    let fourth = ThreadMember::start(&bootstrap, GROUP, "fourth", &log);
    wait_for_all(&log, &produced, "after a restart").await;
    // Give a wrongly rewound member time to re-read old records before checking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly_once(&log, &produced);
    fourth.close();

    // The CLI sees the committed offsets, all caught up.
    let detail = run_cli(&bootstrap, &["describe", GROUP]);
    assert!(detail.contains("\"state\": \"Empty\""), "{detail}");
    let per_partition = produced
        .values()
        .fold(BTreeMap::new(), |mut ends, (partition, offset)| {
            let end: &mut i64 = ends.entry(*partition).or_default();
            *end = (*end).max(offset + 1);
            ends
        });
    for (partition, end) in per_partition {
        let expected = format!(
            "\"topic\": \"{TOPIC}\",\n      \"partition\": {partition},\n      \"committed_offset\": {end},\n      \"log_end_offset\": {end},\n      \"lag\": 0"
        );
        assert!(
            detail.contains(&expected),
            "partition {partition} at {end}:\n{detail}"
        );
    }
    let listed = run_cli(&bootstrap, &["list"]);
    assert!(
        listed.contains(&format!("\"group\": \"{GROUP}\"")),
        "{listed}"
    );
    server.stop().await;
}

/// Waits (bounded) until DescribeGroups shows `group` Stable with `count` members.
async fn wait_for_members(server: &TestServer, group: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let addr = server.kafka_addr;
        let group_id = group.to_owned();
        let described = tokio::task::spawn_blocking(move || {
            let mut raw = Raw::connect(addr);
            let request = DescribeGroupsRequest::default().with_groups(vec![gid(&group_id)]);
            let response: DescribeGroupsResponse = raw.call(ApiKey::DescribeGroups, 5, &request);
            response.groups.into_iter().next().expect("one group")
        })
        .await
        .unwrap();
        if described.group_state.as_str() == "Stable" && described.members.len() == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} never became Stable with {count} members: {} with {}",
            described.group_state.as_str(),
            described.members.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `shardline group ARGS --json` and returns its output.
fn run_cli(bootstrap: &str, args: &[&str]) -> String {
    let binary = shardline_testkit::shardline_binary().expect("the shardline binary");
    let output = Command::new(binary)
        .arg("group")
        .args(args)
        .args(["--bootstrap", bootstrap, "--json"])
        .output()
        .expect("running shardline group");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "shardline group {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

// ---- raw-socket checks of every group API's errors --------------------------------------

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn gid(text: &str) -> GroupId {
    GroupId(s(text))
}

/// A blocking client that speaks one request at a time.
struct Raw {
    client: RawClient,
    correlation_id: i32,
}

impl Raw {
    fn connect(addr: std::net::SocketAddr) -> Raw {
        Raw {
            client: RawClient::connect(addr).expect("connect"),
            correlation_id: 0,
        }
    }

    fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        self.correlation_id += 1;
        let mut body = BytesMut::new();
        request.encode(&mut body, version).expect("encodable");
        let flexible = Req::header_version(version) >= 2;
        let frame = request_frame(key as i16, version, self.correlation_id, flexible, &body);
        self.client.send_raw(&frame).expect("sent");
        let answer = self
            .client
            .read_frame()
            .expect("read")
            .expect("an answer, not a close");
        let mut answer = Bytes::from(answer);
        let header =
            ResponseHeader::decode(&mut answer, Resp::header_version(version)).expect("header");
        assert_eq!(header.correlation_id, self.correlation_id);
        Resp::decode(&mut answer, version).expect("response decodes")
    }
}

fn subscription(topics: &[&str]) -> Bytes {
    let subscription =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| s(t)).collect());
    let mut out = BytesMut::new();
    out.put_i16(1);
    subscription.encode(&mut out, 1).unwrap();
    out.freeze()
}

fn join(
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    protocol: &str,
    session_timeout_ms: i32,
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            join_group_request::JoinGroupRequestProtocol::default()
                .with_name(s(protocol))
                .with_metadata(subscription(&[TOPIC])),
        ])
}

fn sync(group: &str, member_id: &str, instance: Option<&str>, generation: i32) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_assignments(vec![
            sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(s(member_id))
                .with_assignment(Bytes::from_static(b"everything")),
        ])
}

fn heartbeat(
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
}

fn commit(
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
    topic: &str,
    partition: i32,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(42)
                        .with_committed_metadata(Some(s("note"))),
                ]),
        ])
}

fn commit_code(response: &OffsetCommitResponse) -> i16 {
    response.topics[0].partitions[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_api_answers_bad_requests_with_kafka_errors() {
    let server = TestServer::start_in(data_dir(), |config| {
        config.groups.initial_rebalance_delay_ms = 0;
    })
    .await;
    server
        .broker()
        .create_stream(TOPIC, 2, Default::default(), false)
        .await
        .unwrap();
    let addr = server.kafka_addr;
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(addr);
        // FindCoordinator: this node, for one key (v3) or a batch (v4).
        let found: FindCoordinatorResponse = raw.call(
            ApiKey::FindCoordinator,
            3,
            &FindCoordinatorRequest::default().with_key(s("g")),
        );
        assert_eq!(
            (found.error_code, found.port),
            (NONE, i32::from(addr.port()))
        );
        let found: FindCoordinatorResponse = raw.call(
            ApiKey::FindCoordinator,
            4,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b")]),
        );
        assert_eq!(found.coordinators.len(), 2);
        assert!(
            found
                .coordinators
                .iter()
                .all(|c| c.error_code == NONE && c.port == i32::from(addr.port()))
        );

        // JoinGroup errors.
        let joined: JoinGroupResponse =
            raw.call(ApiKey::JoinGroup, 5, &join("g", "", None, "range", 10));
        assert_eq!(joined.error_code, INVALID_SESSION_TIMEOUT);
        let joined: JoinGroupResponse =
            raw.call(ApiKey::JoinGroup, 5, &join("", "", None, "range", 10_000));
        assert_eq!(joined.error_code, INVALID_GROUP_ID);
        let joined: JoinGroupResponse = raw.call(
            ApiKey::JoinGroup,
            5,
            &join("g", "nobody", None, "range", 10_000),
        );
        assert_eq!(joined.error_code, UNKNOWN_MEMBER_ID);
        // KIP-394 round trip, then a group of one.
        let joined: JoinGroupResponse =
            raw.call(ApiKey::JoinGroup, 5, &join("g", "", None, "range", 10_000));
        assert_eq!(joined.error_code, MEMBER_ID_REQUIRED);
        let member = joined.member_id.to_string();
        let joined: JoinGroupResponse = raw.call(
            ApiKey::JoinGroup,
            7,
            &join("g", &member, None, "range", 10_000),
        );
        assert_eq!((joined.error_code, joined.generation_id), (NONE, 1));
        assert_eq!(joined.leader.as_str(), member);
        assert_eq!(
            joined.protocol_type.as_deref(),
            Some("consumer"),
            "v7 echoes the protocol type"
        );
        let other: JoinGroupResponse =
            raw.call(ApiKey::JoinGroup, 5, &join("g", "", None, "sticky", 10_000));
        assert_eq!(other.error_code, INCONSISTENT_GROUP_PROTOCOL);
        // SyncGroup and Heartbeat.
        let synced: SyncGroupResponse =
            raw.call(ApiKey::SyncGroup, 5, &sync("g", &member, None, 1));
        assert_eq!(
            (synced.error_code, synced.protocol_name.as_deref()),
            (NONE, Some("range"))
        );
        assert_eq!(synced.assignment, &b"everything"[..]);
        let wrong_name: SyncGroupResponse = raw.call(
            ApiKey::SyncGroup,
            5,
            &sync("g", &member, None, 1)
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("roundrobin"))),
        );
        assert_eq!(wrong_name.error_code, INCONSISTENT_GROUP_PROTOCOL);
        let beat: HeartbeatResponse =
            raw.call(ApiKey::Heartbeat, 3, &heartbeat("g", &member, None, 1));
        assert_eq!(beat.error_code, NONE);
        let beat: HeartbeatResponse =
            raw.call(ApiKey::Heartbeat, 4, &heartbeat("g", &member, None, 9));
        assert_eq!(beat.error_code, ILLEGAL_GENERATION);
        let beat: HeartbeatResponse =
            raw.call(ApiKey::Heartbeat, 3, &heartbeat("g", "nobody", None, 1));
        assert_eq!(beat.error_code, UNKNOWN_MEMBER_ID);
        let beat: HeartbeatResponse =
            raw.call(ApiKey::Heartbeat, 3, &heartbeat("nothing", "m", None, 1));
        assert_eq!(beat.error_code, UNKNOWN_MEMBER_ID);

        // OffsetCommit: member and generation checks, unknown partitions, standalone.
        let code = |raw: &mut Raw, mut request: OffsetCommitRequest, version: i16| {
            if version >= 6 {
                request.topics[0].partitions[0].committed_leader_epoch = 0;
            }
            let response: OffsetCommitResponse = raw.call(ApiKey::OffsetCommit, version, &request);
            commit_code(&response)
        };
        assert_eq!(
            code(&mut raw, commit("g", "nobody", None, 1, TOPIC, 0), 7),
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            code(&mut raw, commit("g", &member, None, 5, TOPIC, 0), 7),
            ILLEGAL_GENERATION
        );
        assert_eq!(
            code(&mut raw, commit("g", "", None, -1, TOPIC, 0), 7),
            UNKNOWN_MEMBER_ID,
            "group has members"
        );
        assert_eq!(
            code(&mut raw, commit("g", &member, None, 1, "missing", 0), 7),
            UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            code(&mut raw, commit("g", &member, None, 1, TOPIC, 99), 7),
            UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            code(&mut raw, commit("g", &member, None, 1, TOPIC, 1), 8),
            NONE
        );
        assert_eq!(
            code(&mut raw, commit("nothing", "m", None, 3, TOPIC, 0), 7),
            ILLEGAL_GENERATION
        );
        assert_eq!(
            code(&mut raw, commit("nothing", "m", None, 3, TOPIC, 0), 9),
            GROUP_ID_NOT_FOUND
        );
        assert_eq!(
            code(&mut raw, commit("solo", "", None, -1, TOPIC, 0), 2),
            NONE,
            "standalone commit"
        );

        // OffsetFetch: single group (v5), several groups (v8), -1 where nothing was committed.
        let fetched: OffsetFetchResponse = raw.call(
            ApiKey::OffsetFetch,
            5,
            &OffsetFetchRequest::default()
                .with_group_id(gid("g"))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s(TOPIC)))
                        .with_partition_indexes(vec![0, 1]),
                ])),
        );
        let partitions = &fetched.topics[0].partitions;
        assert_eq!(
            (
                partitions[0].committed_offset,
                partitions[1].committed_offset
            ),
            (-1, 42)
        );
        assert_eq!(partitions[1].metadata.as_deref(), Some("note"));
        assert_eq!(partitions[1].committed_leader_epoch, 0);
        let fetched: OffsetFetchResponse = raw.call(
            ApiKey::OffsetFetch,
            8,
            &OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(gid("solo"))
                    .with_topics(None),
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(gid("unknown"))
                    .with_topics(None),
            ]),
        );
        assert_eq!(fetched.groups.len(), 2);
        assert_eq!(
            fetched.groups[0].topics[0].partitions[0].committed_offset,
            42
        );
        assert!(fetched.groups[1].topics.is_empty());

        // OffsetDelete: not while the members subscribe to the topic.
        let deleted: OffsetDeleteResponse = raw.call(
            ApiKey::OffsetDelete,
            0,
            &OffsetDeleteRequest::default()
                .with_group_id(gid("g"))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(TopicName(s(TOPIC)))
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(1),
                        ]),
                ]),
        );
        assert_eq!(
            deleted.topics[0].partitions[0].error_code,
            GROUP_SUBSCRIBED_TO_TOPIC
        );
        let deleted: OffsetDeleteResponse = raw.call(
            ApiKey::OffsetDelete,
            0,
            &OffsetDeleteRequest::default().with_group_id(gid("nothing")),
        );
        assert_eq!(deleted.error_code, GROUP_ID_NOT_FOUND);

        // Static membership: a restarted instance takes over, the old one is fenced.
        let joined: JoinGroupResponse = raw.call(
            ApiKey::JoinGroup,
            5,
            &join("static", "", Some("host-1"), "range", 10_000),
        );
        assert_eq!(
            joined.error_code, NONE,
            "no MEMBER_ID_REQUIRED for static members"
        );
        let old = joined.member_id.to_string();
        let synced: SyncGroupResponse = raw.call(
            ApiKey::SyncGroup,
            3,
            &sync("static", &old, Some("host-1"), 1),
        );
        assert_eq!(synced.error_code, NONE);
        let again: JoinGroupResponse = raw.call(
            ApiKey::JoinGroup,
            5,
            &join("static", "", Some("host-1"), "range", 10_000),
        );
        assert_eq!(
            (again.error_code, again.generation_id),
            (NONE, 1),
            "no rebalance"
        );
        let new = again.member_id.to_string();
        assert_ne!(new, old);
        let beat: HeartbeatResponse = raw.call(
            ApiKey::Heartbeat,
            3,
            &heartbeat("static", &old, Some("host-1"), 1),
        );
        assert_eq!(beat.error_code, FENCED_INSTANCE_ID);
        assert_eq!(
            code(
                &mut raw,
                commit("static", &old, Some("host-1"), 1, TOPIC, 0),
                7
            ),
            FENCED_INSTANCE_ID
        );
        let synced: SyncGroupResponse = raw.call(
            ApiKey::SyncGroup,
            3,
            &sync("static", &new, Some("host-1"), 1),
        );
        assert_eq!(
            synced.assignment,
            &b"everything"[..],
            "the assignment carried over"
        );

        // ListGroups (state filter) and DescribeGroups.
        let listed: ListGroupsResponse = raw.call(
            ApiKey::ListGroups,
            4,
            &ListGroupsRequest::default().with_states_filter(vec![s("stable")]),
        );
        let mut names: Vec<&str> = listed.groups.iter().map(|g| g.group_id.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["g", "static"]);
        let listed: ListGroupsResponse =
            raw.call(ApiKey::ListGroups, 5, &ListGroupsRequest::default());
        assert!(
            listed
                .groups
                .iter()
                .any(|g| g.group_id.as_str() == "solo" && g.group_state.as_str() == "Empty")
        );
        assert!(
            listed
                .groups
                .iter()
                .all(|g| g.group_type.as_str() == "classic")
        );
        let described: DescribeGroupsResponse = raw.call(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![gid("static"), gid("nothing")]),
        );
        let group = &described.groups[0];
        assert_eq!(
            (group.group_state.as_str(), group.protocol_data.as_str()),
            ("Stable", "range")
        );
        assert_eq!(
            group.members[0].group_instance_id.as_deref(),
            Some("host-1")
        );
        assert_eq!(group.members[0].client_id.as_str(), "raw");
        assert_eq!(group.members[0].member_assignment, &b"everything"[..]);
        assert_eq!(
            (
                described.groups[1].error_code,
                described.groups[1].group_state.as_str()
            ),
            (NONE, "Dead")
        );
        let described: DescribeGroupsResponse = raw.call(
            ApiKey::DescribeGroups,
            6,
            &DescribeGroupsRequest::default().with_groups(vec![gid("nothing")]),
        );
        assert_eq!(described.groups[0].error_code, GROUP_ID_NOT_FOUND);

        // LeaveGroup (v3 batch, by instance id) and DeleteGroups.
        let deleted: DeleteGroupsResponse = raw.call(
            ApiKey::DeleteGroups,
            2,
            &DeleteGroupsRequest::default().with_groups_names(vec![gid("static"), gid("nothing")]),
        );
        assert_eq!(deleted.results[0].error_code, NON_EMPTY_GROUP);
        assert_eq!(deleted.results[1].error_code, GROUP_ID_NOT_FOUND);
        let left: LeaveGroupResponse = raw.call(
            ApiKey::LeaveGroup,
            3,
            &LeaveGroupRequest::default()
                .with_group_id(gid("static"))
                .with_members(vec![
                    leave_group_request::MemberIdentity::default()
                        .with_member_id(s(""))
                        .with_group_instance_id(Some(s("host-1"))),
                    leave_group_request::MemberIdentity::default().with_member_id(s("nobody")),
                ]),
        );
        assert_eq!(
            left.members
                .iter()
                .map(|m| m.error_code)
                .collect::<Vec<_>>(),
            vec![NONE, UNKNOWN_MEMBER_ID]
        );
        let left: LeaveGroupResponse = raw.call(
            ApiKey::LeaveGroup,
            1,
            &LeaveGroupRequest::default()
                .with_group_id(gid("g"))
                .with_member_id(s(&member)),
        );
        assert_eq!(left.error_code, NONE);
        let beat: HeartbeatResponse =
            raw.call(ApiKey::Heartbeat, 3, &heartbeat("g", &member, None, 1));
        assert_eq!(beat.error_code, UNKNOWN_MEMBER_ID);
        let deleted: DeleteGroupsResponse = raw.call(
            ApiKey::DeleteGroups,
            1,
            &DeleteGroupsRequest::default().with_groups_names(vec![gid("g"), gid("solo")]),
        );
        assert!(
            deleted.results.iter().all(|r| r.error_code == NONE),
            "{deleted:?}"
        );
        let fetched: OffsetFetchResponse = raw.call(
            ApiKey::OffsetFetch,
            8,
            &OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(gid("solo"))
                    .with_topics(None),
            ]),
        );
        assert!(
            fetched.groups[0].topics.is_empty(),
            "offsets went with the group"
        );

        // A rebalance in progress: a second member joins; the first learns from Heartbeat.
        let first: JoinGroupResponse = raw.call(
            ApiKey::JoinGroup,
            3,
            &join("pair", "", None, "range", 10_000),
        );
        let first_id = first.member_id.to_string();
        raw.call::<_, SyncGroupResponse>(ApiKey::SyncGroup, 3, &sync("pair", &first_id, None, 1));
        let mut second = Raw::connect(addr);
        let joining = std::thread::spawn(move || {
            let joined: JoinGroupResponse = second.call(
                ApiKey::JoinGroup,
                3,
                &join("pair", "", None, "range", 10_000),
            );
            joined
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let beat: HeartbeatResponse =
                raw.call(ApiKey::Heartbeat, 3, &heartbeat("pair", &first_id, None, 1));
            if beat.error_code == REBALANCE_IN_PROGRESS {
                break;
            }
            assert!(Instant::now() < deadline, "no rebalance signalled");
            std::thread::sleep(Duration::from_millis(20));
        }
        let rejoined: JoinGroupResponse = raw.call(
            ApiKey::JoinGroup,
            3,
            &join("pair", &first_id, None, "range", 10_000),
        );
        let joined = joining.join().unwrap();
        assert_eq!((rejoined.generation_id, joined.generation_id), (2, 2));
        assert_eq!(rejoined.leader, joined.leader);
    })
    .await
    .unwrap();
    server.stop().await;
}
