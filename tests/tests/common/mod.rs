//! Helpers shared by the end-to-end tests: librdkafka clients pointed at a test server.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub timestamp_ms: Option<i64>,
}

pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "4");
    config
}

pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap).create().expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics request");
    for result in results {
        result.expect("topic created");
    }
}

pub fn producer(bootstrap: &str, settings: &[(&str, &str)]) -> FutureProducer {
    let mut config = client_config(bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config.create().expect("producer")
}

/// A consumer that only uses assign(): librdkafka insists on a group.id, but with explicit
/// start offsets and no commits it never needs the group coordinator.
pub fn consumer(bootstrap: &str) -> BaseConsumer {
    client_config(bootstrap)
        .set("group.id", "assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

/// Reads from `start` on every partition of `topic` until `expected` records arrived or
/// `timeout` passed; returns what arrived.
pub fn consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    start: Offset,
    expected: usize,
    timeout: Duration,
) -> Vec<Received> {
    let consumer = consumer(bootstrap);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, start)
            .expect("add partition");
    }
    consumer.assign(&assignment).expect("assign");
    drain(&consumer, expected, timeout)
}

pub fn drain(consumer: &BaseConsumer, expected: usize, timeout: Duration) -> Vec<Received> {
    let deadline = std::time::Instant::now() + timeout;
    let mut received = Vec::new();
    while received.len() < expected && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => received.push(Received {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
                timestamp_ms: message.timestamp().to_millis(),
            }),
            Some(Err(error)) => panic!("consumer error: {error}"),
            None => {}
        }
    }
    received
}
