use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::*;
use crate::{BrokerConfig, ErrorKind};

async fn open(data_dir: &Path) -> Broker {
    Broker::open(BrokerConfig::with_data_dir(data_dir.to_path_buf()))
        .await
        .unwrap()
}

/// A broker with stream `orders` (3 shards) and `clicks` (1 shard).
async fn broker_with_streams(data_dir: &Path) -> Broker {
    let broker = open(data_dir).await;
    broker
        .create_stream("orders", 3, BTreeMap::new(), false)
        .await
        .unwrap();
    broker
        .create_stream("clicks", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    broker
}

/// Shuts down and drops the broker (releasing its shard locks), then opens it again.
async fn restart(broker: Broker, data_dir: &Path) -> Broker {
    broker.shutdown().await;
    drop(broker);
    open(data_dir).await
}

fn at(offset: i64, commit_timestamp_ms: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: 7,
        metadata: Some(format!("m{offset}")),
        commit_timestamp_ms,
    }
}

fn entry(stream: &str, shard: u32, committed: CommittedOffset) -> (String, u32, CommittedOffset) {
    (stream.to_owned(), shard, committed)
}

#[tokio::test]
async fn commits_are_readable_sorted_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_streams(dir.path()).await;
    broker
        .commit_offsets(
            "g1",
            vec![
                entry("orders", 2, at(20, 1)),
                entry("clicks", 0, at(5, 1)),
                entry("orders", 0, at(10, 1)),
            ],
        )
        .await
        .unwrap();
    let no_metadata = CommittedOffset {
        metadata: None,
        ..at(3, 2)
    };
    broker
        .commit_offsets("g0", vec![entry("orders", 1, no_metadata.clone())])
        .await
        .unwrap();
    // A later commit replaces the earlier one.
    broker
        .commit_offsets("g1", vec![entry("orders", 0, at(11, 3))])
        .await
        .unwrap();
    let expected_g1 = vec![
        entry("clicks", 0, at(5, 1)),
        entry("orders", 0, at(11, 3)),
        entry("orders", 2, at(20, 1)),
    ];
    assert_eq!(broker.committed_offsets("g1"), expected_g1);
    assert_eq!(broker.committed_offset("g1", "orders", 0), Some(at(11, 3)));
    assert_eq!(broker.committed_offset("g1", "orders", 1), None);
    assert_eq!(broker.committed_offset("nobody", "orders", 0), None);
    assert_eq!(broker.groups_with_committed_offsets(), vec!["g0", "g1"]);

    let broker = restart(broker, dir.path()).await;
    assert_eq!(broker.committed_offsets("g1"), expected_g1);
    assert_eq!(
        broker.committed_offset("g0", "orders", 1),
        Some(no_metadata)
    );
    assert_eq!(broker.groups_with_committed_offsets(), vec!["g0", "g1"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn an_unknown_stream_or_shard_fails_the_whole_call() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_streams(dir.path()).await;
    let error = broker
        .commit_offsets(
            "g",
            vec![entry("orders", 0, at(1, 1)), entry("orders", 3, at(1, 1))],
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::UnknownShard { shard: 3, .. }));
    assert_eq!(error.kind(), ErrorKind::UnknownShard);
    let error = broker
        .commit_offsets(
            "g",
            vec![entry("orders", 0, at(1, 1)), entry("nope", 0, at(1, 1))],
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownStream);
    let huge = CommittedOffset {
        metadata: Some("x".repeat(OFFSET_METADATA_BYTES_MAX + 1)),
        ..at(1, 1)
    };
    let error = broker
        .commit_offsets(
            "g",
            vec![entry("orders", 0, at(1, 1)), entry("orders", 1, huge)],
        )
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        Error::OffsetCommitTooLarge {
            field: "metadata",
            ..
        }
    ));
    assert_eq!(error.kind(), ErrorKind::BatchTooLarge);
    let error = broker
        .commit_offsets(&"g".repeat(GROUP_ID_BYTES_MAX + 1), vec![])
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        Error::OffsetCommitTooLarge {
            field: "group id",
            ..
        }
    ));
    assert_eq!(broker.committed_offset("g", "orders", 0), None);
    assert!(broker.groups_with_committed_offsets().is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn deletes_remove_offsets_durably() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_streams(dir.path()).await;
    for group in ["g1", "g2"] {
        broker
            .commit_offsets(
                group,
                vec![
                    entry("orders", 0, at(1, 1)),
                    entry("orders", 1, at(2, 1)),
                    entry("clicks", 0, at(3, 1)),
                ],
            )
            .await
            .unwrap();
    }
    broker
        .delete_committed_offsets(
            "g1",
            vec![
                ("orders".to_owned(), 1),
                ("orders".to_owned(), 1),
                ("clicks".to_owned(), 0),
                ("gone".to_owned(), 9),
            ],
        )
        .await
        .unwrap();
    broker.delete_group_offsets("g2").await.unwrap();
    broker.delete_group_offsets("never-existed").await.unwrap();
    broker
        .delete_committed_offsets("never-existed", vec![("orders".to_owned(), 0)])
        .await
        .unwrap();
    let expected = vec![entry("orders", 0, at(1, 1))];
    assert_eq!(broker.committed_offsets("g1"), expected);
    assert!(broker.committed_offsets("g2").is_empty());
    assert_eq!(broker.groups_with_committed_offsets(), vec!["g1"]);

    let broker = restart(broker, dir.path()).await;
    assert_eq!(broker.committed_offsets("g1"), expected);
    assert_eq!(broker.groups_with_committed_offsets(), vec!["g1"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn expiry_removes_offsets_at_or_past_retention() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_streams(dir.path()).await;
    broker
        .commit_offsets(
            "g",
            vec![
                entry("orders", 0, at(1, 1_000)),
                entry("orders", 1, at(2, 4_000)),
                entry("orders", 2, at(3, 5_000)),
            ],
        )
        .await
        .unwrap();
    broker
        .commit_offsets("other", vec![entry("orders", 0, at(1, 1_000))])
        .await
        .unwrap();
    // Retention "forever" must not overflow into expiring everything.
    assert_eq!(
        broker
            .expire_committed_offsets("g", 6_000, i64::MAX)
            .await
            .unwrap(),
        0
    );
    // 1_000 + 2_000 < 6_000 and 4_000 + 2_000 == 6_000 expire; 5_000 + 2_000 does not.
    assert_eq!(
        broker
            .expire_committed_offsets("g", 6_000, 2_000)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        broker.committed_offsets("g"),
        vec![entry("orders", 2, at(3, 5_000))]
    );
    assert_eq!(broker.committed_offsets("other").len(), 1);
    assert_eq!(
        broker
            .expire_committed_offsets("nobody", 6_000, 2_000)
            .await
            .unwrap(),
        0
    );
    let broker = restart(broker, dir.path()).await;
    assert_eq!(
        broker.committed_offsets("g"),
        vec![entry("orders", 2, at(3, 5_000))]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn deleting_a_stream_drops_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_streams(dir.path()).await;
    broker
        .commit_offsets(
            "g",
            vec![entry("orders", 0, at(1, 1)), entry("clicks", 0, at(2, 1))],
        )
        .await
        .unwrap();
    broker
        .commit_offsets("only-orders", vec![entry("orders", 1, at(1, 1))])
        .await
        .unwrap();
    broker.delete_stream("orders").await.unwrap();
    assert_eq!(
        broker.committed_offsets("g"),
        vec![entry("clicks", 0, at(2, 1))]
    );
    assert_eq!(broker.groups_with_committed_offsets(), vec!["g"]);
    // A stream of the same name starts without offsets, also after a restart.
    broker
        .create_stream("orders", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let broker = restart(broker, dir.path()).await;
    assert_eq!(broker.committed_offset("g", "orders", 0), None);
    assert_eq!(broker.groups_with_committed_offsets(), vec!["g"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn offsets_of_streams_gone_before_a_restart_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_streams(dir.path()).await;
    broker.shutdown().await;
    drop(broker);
    // As if a run deleted stream "ghost" and crashed before dropping its offsets.
    let mut store =
        OffsetStore::open(dir.path(), shardline_meta::OffsetStoreConfig::default()).unwrap();
    let ghost = |stream: &str, shard| OffsetRecord::Commit {
        group: "g".to_owned(),
        stream: stream.to_owned(),
        shard,
        committed: at(1, 1),
    };
    store
        .append(&[ghost("ghost", 0), ghost("clicks", 5), ghost("clicks", 0)])
        .unwrap();
    store.close().unwrap();
    let broker = open(dir.path()).await;
    assert_eq!(
        broker.committed_offsets("g"),
        vec![entry("clicks", 0, at(1, 1))]
    );
    let broker = restart(broker, dir.path()).await;
    assert_eq!(
        broker.committed_offsets("g"),
        vec![entry("clicks", 0, at(1, 1))]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn concurrent_commits_share_fsyncs_and_are_all_durable() {
    const COMMITS: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_streams(dir.path()).await;
    let syncs_before = broker.inner.offsets.syncs.load(Ordering::Relaxed);
    let mut tasks = tokio::task::JoinSet::new();
    for number in 0..COMMITS {
        let broker = broker.clone();
        tasks.spawn(async move {
            broker
                .commit_offsets(
                    &format!("group-{number:03}"),
                    vec![entry("orders", number % 3, at(i64::from(number), 1))],
                )
                .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    let syncs = broker.inner.offsets.syncs.load(Ordering::Relaxed) - syncs_before;
    assert!(
        syncs < u64::from(COMMITS),
        "{COMMITS} commits took {syncs} fsyncs"
    );
    let broker = restart(broker, dir.path()).await;
    assert_eq!(
        broker.groups_with_committed_offsets().len(),
        COMMITS as usize
    );
    for number in 0..COMMITS {
        assert_eq!(
            broker.committed_offset(&format!("group-{number:03}"), "orders", number % 3),
            Some(at(i64::from(number), 1))
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn after_a_storage_failure_nothing_is_reported_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_streams(dir.path()).await;
    broker
        .commit_offsets("g", vec![entry("orders", 0, at(1, 1))])
        .await
        .unwrap();
    broker.inner.offsets.fail("injected".to_owned());
    let error = broker
        .commit_offsets("g", vec![entry("orders", 0, at(2, 1))])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::OffsetsFailed { .. }));
    assert_eq!(error.kind(), ErrorKind::Storage);
    assert_eq!(
        broker.delete_group_offsets("g").await.unwrap_err().kind(),
        ErrorKind::Storage
    );
    // The last durable state is still served.
    assert_eq!(broker.committed_offset("g", "orders", 0), Some(at(1, 1)));
    broker.shutdown().await;
}

#[tokio::test]
async fn changes_after_shutdown_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_streams(dir.path()).await;
    broker
        .commit_offsets("g", vec![entry("orders", 0, at(1, 1))])
        .await
        .unwrap();
    broker.shutdown().await;
    let error = broker
        .commit_offsets("g", vec![entry("orders", 0, at(2, 1))])
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ShuttingDown);
    assert_eq!(
        broker
            .expire_committed_offsets("g", i64::MAX, 0)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::ShuttingDown
    );
    assert_eq!(broker.committed_offset("g", "orders", 0), Some(at(1, 1)));
}
