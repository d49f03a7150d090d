//! Requests that would amplify a small frame into a lot of server work or memory, and
//! connections that would sit forever: each is capped, and the server says so by
//! answering within the cap (or closing an idle connection), never by falling over.

mod raw;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, FetchResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use raw::{assert_alive, encode, produce, produce_body};
use shardline_records::build_simple_batch;
use shardline_testkit::{RawClient, TestServer, data_dir};

const FETCH_VERSION: i16 = 11;

fn fetch(
    client: &mut RawClient,
    correlation_id: i32,
    max_bytes: i32,
    partitions: Vec<FetchPartition>,
) -> FetchResponse {
    let request = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(max_bytes)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("amp")))
                .with_partitions(partitions),
        ]);
    client
        .send_request(
            ApiKey::Fetch as i16,
            FETCH_VERSION,
            correlation_id,
            &encode(&request, FETCH_VERSION),
        )
        .unwrap();
    let frame = client.read_frame().unwrap().expect("a fetch answer");
    let mut bytes = Bytes::from(frame);
    let header = ResponseHeader::decode(&mut bytes, 0).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    FetchResponse::decode(&mut bytes, FETCH_VERSION).unwrap()
}

fn from_zero(partition: i32, partition_max_bytes: i32) -> FetchPartition {
    FetchPartition::default()
        .with_partition(partition)
        .with_fetch_offset(0)
        .with_partition_max_bytes(partition_max_bytes)
}

fn records_bytes(response: &FetchResponse) -> usize {
    response
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .map(|partition| partition.records.as_ref().map_or(0, Bytes::len))
        .sum()
}

/// Kafka's broker caps every fetch at `fetch.max.bytes`; here `kafka.fetch_bytes_max`.
/// A `max_bytes` of 0 or less used to mean "unlimited", and a partition listed 100,000
/// times was read (and registered for wake-ups) 100,000 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_are_capped_and_repeated_partitions_read_once() {
    const CAP: usize = 16 * 1024;
    let server = TestServer::start_in(data_dir(), |config| {
        config.kafka.fetch_bytes_max = CAP;
    })
    .await;
    server
        .broker()
        .create_stream("amp", 2, Default::default(), false)
        .await
        .unwrap();
    let addr = server.kafka_addr;
    tokio::task::spawn_blocking(move || {
        let mut client = RawClient::connect(addr).unwrap();
        let value = vec![b'v'; 4096];
        for round in 0..20 {
            let batches = vec![
                (0, build_simple_batch(1, &[&value])),
                (1, build_simple_batch(1, &[&value])),
            ];
            let answers = produce(&mut client, round, &produce_body("amp", batches));
            assert!(answers.iter().all(|answer| answer.1 == 0));
        }
        // 80 KiB stored per partition; every way of asking for "everything" gets the cap.
        for (correlation_id, max_bytes) in [(100, 0), (101, -1), (102, i32::MAX)] {
            let response = fetch(
                &mut client,
                correlation_id,
                max_bytes,
                vec![from_zero(0, i32::MAX), from_zero(1, i32::MAX)],
            );
            let got = records_bytes(&response);
            assert!(got > 0, "max_bytes {max_bytes}: some data");
            assert!(
                got <= CAP,
                "max_bytes {max_bytes}: {got} bytes over the cap"
            );
        }
        // One partition listed 100,000 times is read and answered once.
        let repeated = (0..100_000).map(|_| from_zero(0, 4200)).collect();
        let response = fetch(&mut client, 103, 1 << 20, repeated);
        let partitions: Vec<i32> = response.responses[0]
            .partitions
            .iter()
            .map(|partition| partition.partition_index)
            .collect();
        assert_eq!(partitions, vec![0]);
        assert!(records_bytes(&response) <= 4200 + 4200);
        assert_alive(addr);
    })
    .await
    .unwrap();
    server.stop().await;
}

/// Kafka's `connections.max.idle.ms`: a connection that sends nothing and has nothing
/// in flight is closed; one that keeps talking is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kafka_connections_are_closed_and_busy_ones_kept() {
    let server = TestServer::start_in(data_dir(), |config| {
        config.kafka.connections_idle_ms = 1_000;
    })
    .await;
    let addr = server.kafka_addr;
    tokio::task::spawn_blocking(move || {
        let mut idle = RawClient::connect(addr).unwrap();
        let mut busy = RawClient::connect(addr).unwrap();
        let versions = encode(&ApiVersionsRequest::default(), 0);
        // Three idle periods' worth of traffic on one connection.
        for correlation_id in 0..30 {
            busy.send_request(ApiKey::ApiVersions as i16, 0, correlation_id, &versions)
                .unwrap();
            assert!(
                busy.read_frame().unwrap().is_some(),
                "a busy connection stays open"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(idle.is_closed_by_server(), "the idle connection was closed");
    })
    .await
    .unwrap();
    server.stop().await;
}
