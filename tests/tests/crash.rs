//! Crash safety: SIGKILL the server while an `acks=all` producer is writing, restart it on
//! the same data directory, and check that every acknowledged record is there, at its
//! acknowledged offset, in order, and that the log is consistent (dense offsets, readable
//! to the end, appendable again).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{consume, create_topic, producer};
use rdkafka::Offset;
use rdkafka::producer::FutureRecord;
use shardline_testkit::{ServerProcess, data_dir};

const PARTITIONS: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_acks_all_writes_loses_no_acknowledged_record() {
    let dir = data_dir();
    let server = ServerProcess::spawn(dir.path(), &[]).expect("server starts");
    let bootstrap = server.bootstrap();
    create_topic(&bootstrap, "crash", PARTITIONS).await;

    // payload index -> (partition, offset), for acknowledged records only.
    let acknowledged: Arc<Mutex<BTreeMap<u64, (i32, i64)>>> = Arc::default();
    let writer = {
        let acknowledged = Arc::clone(&acknowledged);
        let bootstrap = bootstrap.clone();
        tokio::spawn(async move {
            let producer = producer(
                &bootstrap,
                &[("message.timeout.ms", "5000"), ("linger.ms", "1")],
            );
            let mut in_flight = Vec::new();
            for i in 0u64.. {
                let payload = format!("record-{i:08}");
                let record = FutureRecord::<str, str>::to("crash")
                    .payload(&payload)
                    .partition((i % PARTITIONS as u64) as i32);
                match producer.send_result(record) {
                    Ok(delivery) => in_flight.push((i, delivery)),
                    Err(_) => break,
                }
                if in_flight.len() >= 64 {
                    let mut failed = false;
                    for (index, delivery) in in_flight.drain(..) {
                        match delivery.await {
                            Ok(Ok(delivery)) => {
                                acknowledged
                                    .lock()
                                    .unwrap()
                                    .insert(index, (delivery.partition, delivery.offset));
                            }
                            _ => failed = true,
                        }
                    }
                    if failed {
                        break;
                    }
                }
            }
            for (index, delivery) in in_flight {
                if let Ok(Ok(delivery)) = delivery.await {
                    acknowledged
                        .lock()
                        .unwrap()
                        .insert(index, (delivery.partition, delivery.offset));
                }
            }
        })
    };

    // Let a few thousand records be acknowledged, then pull the plug mid-stream.
    for _ in 0..600 {
        if acknowledged.lock().unwrap().len() >= 3000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let acked_before_kill = acknowledged.lock().unwrap().len();
    assert!(
        acked_before_kill > 0,
        "the producer made progress before the kill"
    );
    server.kill9();
    writer.await.unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();

    let restarted = ServerProcess::spawn(dir.path(), &[]).expect("server restarts after kill -9");
    let bootstrap = restarted.bootstrap();
    let total_expected = acknowledged.len();
    let received = tokio::task::spawn_blocking(move || {
        // Read until idle: the log may hold more than was acknowledged (written, not yet
        // answered at the kill), never less.
        consume(
            &bootstrap,
            "crash",
            PARTITIONS,
            Offset::Beginning,
            usize::MAX,
            Duration::from_secs(8),
        )
    })
    .await
    .unwrap();

    let mut by_position = BTreeMap::new();
    for record in &received {
        let previous =
            by_position.insert((record.partition, record.offset), record.payload.clone());
        assert!(previous.is_none(), "offset {} read twice", record.offset);
    }
    for (index, (partition, offset)) in &acknowledged {
        let stored = by_position.get(&(*partition, *offset)).unwrap_or_else(|| {
            panic!("acknowledged record {index} at {partition}/{offset} is missing")
        });
        assert_eq!(
            stored.as_deref(),
            Some(format!("record-{index:08}").as_bytes())
        );
    }
    for partition in 0..PARTITIONS {
        let offsets: Vec<i64> = by_position
            .keys()
            .filter(|(p, _)| *p == partition)
            .map(|(_, offset)| *offset)
            .collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "dense offsets in partition {partition}"
        );
        // Within a partition the payload indexes rise with the offsets: order held.
        let indexes: Vec<u64> = offsets
            .iter()
            .map(|offset| {
                let payload = by_position[&(partition, *offset)].clone().unwrap();
                String::from_utf8(payload).unwrap()[7..].parse().unwrap()
            })
            .collect();
        assert!(
            indexes.windows(2).all(|pair| pair[0] < pair[1]),
            "order in partition {partition}"
        );
    }
    eprintln!(
        "acknowledged {total_expected} records ({acked_before_kill} before the kill); {} found after restart",
        received.len()
    );

    // The recovered log accepts new writes after its old tail.
    let producer = producer(&restarted.bootstrap(), &[]);
    let delivery = producer
        .send(
            FutureRecord::<str, str>::to("crash")
                .payload("after")
                .partition(0),
            Duration::from_secs(10),
        )
        .await
        .expect("write after recovery");
    let partition_zero = by_position.keys().filter(|(p, _)| *p == 0).count() as i64;
    assert_eq!(delivery.offset, partition_zero);
    let status = restarted.terminate().expect("graceful stop");
    assert!(status.success(), "SIGTERM exits 0, got {status}");
}
