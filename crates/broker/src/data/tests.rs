//! Storage faults on the data plane, injected under one shard's directory with
//! `shardline_log::faults`: a failed fsync (fsyncgate) and a full disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use shardline_log::faults::{self, Fault};
use shardline_records::build_simple_batch;

use crate::{Broker, BrokerConfig, Error, ErrorKind};

async fn open(data_dir: &Path) -> Broker {
    let broker = Broker::open(BrokerConfig::with_data_dir(data_dir.to_path_buf()))
        .await
        .unwrap();
    if broker.stream("f").is_none() {
        broker
            .create_stream("f", 1, BTreeMap::new(), false)
            .await
            .unwrap();
    }
    broker
}

/// The only shard directory of stream "f".
fn shard_dir(data_dir: &Path) -> PathBuf {
    let stream = std::fs::read_dir(data_dir.join("streams"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("f-")
        })
        .unwrap();
    stream.join("000000")
}

async fn append(broker: &Broker, value: &[u8]) -> Result<u64, Error> {
    let batch = BytesMut::from(&build_simple_batch(1, &[value])[..]);
    let pending = broker.append("f", 0, batch).await?;
    Ok(pending.wait().await?.base_offset)
}

#[tokio::test]
async fn a_shard_whose_fsync_failed_is_never_sealed_or_marked_clean() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    assert_eq!(append(&broker, b"acked").await.unwrap(), 0);
    let shard = shard_dir(dir.path());

    faults::inject(&shard, Fault::SyncFails);
    let failed = append(&broker, b"never acked").await;
    faults::clear(&shard);
    assert_eq!(failed.unwrap_err().kind(), ErrorKind::Storage);
    // Out of service even with the disk healthy: a retried fsync proves nothing.
    let refused = append(&broker, b"after").await;
    assert!(
        matches!(refused, Err(Error::ShardFailed { .. })),
        "{refused:?}"
    );

    // Retention (which rolls idle shards) and shutdown (which seals and marks logs
    // clean) both leave it alone, so the next open must scan it.
    broker.enforce_retention(i64::MAX / 2).await.unwrap();
    broker.shutdown().await;
    drop(broker);
    assert!(!shard.join(".clean_shutdown").exists());
    let segments = std::fs::read_dir(&shard)
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "log"))
        .count();
    assert_eq!(segments, 1, "never rolled");

    // Reopened (and scanned), it serves the acknowledged record and takes appends.
    let broker = open(dir.path()).await;
    let (start, high) = broker.offsets("f", 0).unwrap();
    assert_eq!(start, 0);
    assert!(high >= 1, "the acknowledged record is there");
    assert_eq!(append(&broker, b"healed").await.unwrap(), high);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_full_disk_refuses_appends_with_a_storage_error_and_heals_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    assert_eq!(append(&broker, b"first").await.unwrap(), 0);
    let shard = shard_dir(dir.path());

    faults::inject(&shard, Fault::DiskFull);
    let full = append(&broker, b"no room").await;
    let full_again = append(&broker, b"still no room").await;
    // Reads go on meanwhile.
    let read = broker.read("f", 0, 0, 1 << 20).await;
    faults::clear(&shard);
    for outcome in [full, full_again] {
        let error = outcome.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Storage, "{error}");
        assert!(
            matches!(error, Error::Log(shardline_log::Error::NoSpace { .. })),
            "{error:?}"
        );
    }
    assert!(read.is_ok(), "{read:?}");

    // Space is back: the next append lands right after the first.
    assert_eq!(append(&broker, b"second").await.unwrap(), 1);
    broker.shutdown().await;
    drop(broker);
    let broker = open(dir.path()).await;
    assert_eq!(broker.offsets("f", 0).unwrap(), (0, 2));
    broker.shutdown().await;
}
