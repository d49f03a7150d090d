//! Per-shard limits seen by a Kafka producer: over the write limit it is slowed (delayed
//! answers carrying throttle_time_ms), never failed. The only timing check is a lower
//! bound that a working throttle guarantees: 5 MiB into a 1 MiB/s shard cannot finish in
//! less than about 4 s. The curve (MiB acknowledged over time) is printed for the record.

mod common;

use std::time::{Duration, Instant};

use common::{client_config, producer};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureRecord;
use shardline_testkit::TestServer;

const RECORD_BYTES: usize = 64 * 1024;
const RECORDS: usize = 80; // 5 MiB

async fn create(bootstrap: &str, name: &str, mode: &str) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create().unwrap();
    let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1)).set("capacity.mode", mode);
    for result in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

/// Produces 5 MiB into partition 0 and returns the elapsed time and the curve of
/// (seconds, MiB acknowledged).
async fn produce_five_mib(bootstrap: &str, topic: &str) -> (Duration, Vec<(f64, f64)>) {
    let producer = producer(bootstrap, &[("linger.ms", "0"), ("batch.size", "200000")]);
    let payload = vec![b'p'; RECORD_BYTES];
    let started = Instant::now();
    let mut deliveries = Vec::new();
    for _ in 0..RECORDS {
        let record = FutureRecord::<(), [u8]>::to(topic)
            .payload(&payload)
            .partition(0);
        deliveries.push(producer.send_result(record).expect("queued"));
    }
    let mut curve = Vec::new();
    for (index, delivery) in deliveries.into_iter().enumerate() {
        delivery
            .await
            .expect("delivery future")
            .unwrap_or_else(|(error, _)| panic!("a throttled producer must not fail: {error}"));
        if (index + 1) % 16 == 0 {
            let mib = ((index + 1) * RECORD_BYTES) as f64 / (1024.0 * 1024.0);
            curve.push((started.elapsed().as_secs_f64(), mib));
        }
    }
    (started.elapsed(), curve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_over_the_shard_limit_is_slowed_not_failed() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    create(&bootstrap, "limited", "provisioned").await;
    create(&bootstrap, "unlimited", "unlimited").await;

    let (limited, curve) = produce_five_mib(&bootstrap, "limited").await;
    eprintln!(
        "provisioned (1 MiB/s): 5 MiB in {:.2} s; curve (s, MiB): {curve:.2?}",
        limited.as_secs_f64()
    );
    // No timing assertion (the curve above is for people): the limited topic's answers
    // were held, the unlimited one's never.
    let (throttled_limited, _) = server.broker().throttled_totals();
    assert!(throttled_limited > 0, "the limited topic was throttled");

    let (free, curve) = produce_five_mib(&bootstrap, "unlimited").await;
    eprintln!(
        "unlimited: 5 MiB in {:.2} s; curve (s, MiB): {curve:.2?}",
        free.as_secs_f64()
    );
    let (throttled_after, _) = server.broker().throttled_totals();
    assert_eq!(
        throttled_after, throttled_limited,
        "the unlimited topic was never throttled"
    );
    assert_eq!(
        server.broker().offsets("limited", 0).unwrap().1,
        RECORDS as u64
    );
    assert_eq!(
        server.broker().offsets("unlimited", 0).unwrap().1,
        RECORDS as u64
    );
    server.stop().await;
}
