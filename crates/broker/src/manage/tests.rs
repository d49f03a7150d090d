use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use shardline_core::{HashKey, HashKeyRange};
use shardline_records::build_simple_batch;

use crate::{Broker, BrokerConfig, ErrorKind};

async fn open(data_dir: &Path) -> Broker {
    Broker::open(BrokerConfig::with_data_dir(data_dir.to_path_buf()))
        .await
        .unwrap()
}

/// A broker tiering to an in-memory store, its passes driven by hand.
async fn open_tiered(data_dir: &Path) -> Broker {
    let mut config = BrokerConfig::with_data_dir(data_dir.to_path_buf());
    config.tier = Some(shardline_tier::TierConfig::new("memory://"));
    config.tier_upload_interval_ms = 3_600_000;
    Broker::open(config).await.unwrap()
}

async fn restart(broker: Broker, data_dir: &Path) -> Broker {
    broker.shutdown().await;
    drop(broker);
    open(data_dir).await
}

async fn append(
    broker: &Broker,
    stream: &str,
    shard: u32,
    timestamp_ms: i64,
    values: &[&[u8]],
) -> u64 {
    let batch = BytesMut::from(&build_simple_batch(timestamp_ms, values)[..]);
    let pending = broker
        .append(stream, i64::from(shard), batch)
        .await
        .unwrap();
    pending.wait().await.unwrap().base_offset
}

fn open_ranges(broker: &Broker, stream: &str) -> Vec<HashKeyRange> {
    broker
        .open_shards(stream)
        .unwrap()
        .iter()
        .map(|shard| shard.range)
        .collect()
}

#[tokio::test]
async fn split_closes_the_parent_and_routes_keys_to_the_children() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_stream("s", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    append(&broker, "s", 0, 1, &[b"a", b"b", b"c"]).await;
    let middle = 1u128 << 127;
    let (low, high) = broker.split_shard("s", 0, middle).await.unwrap();
    assert_eq!(
        (low, high),
        (1, 2),
        "children take the next indexes, lower range first"
    );

    let info = broker.stream("s").unwrap();
    assert_eq!(info.shards[0].ending_offset, Some(3));
    assert!(info.shards[0].closed_ms.is_some());
    assert_eq!(info.shards[1].parent, Some(0));
    assert_eq!(info.shards[2].parent, Some(0));
    assert_eq!(open_ranges(&broker, "s"), HashKeyRange::even_split(2));

    let refused = broker
        .append(
            "s",
            0,
            BytesMut::from(&build_simple_batch(1, &[b"late"])[..]),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ShardClosed);
    // "a" hashes into the lower half, "0" into the upper (see core's vectors).
    assert_eq!(
        broker.route("s", HashKey::of_partition_key(b"a")).unwrap(),
        1
    );
    assert_eq!(
        broker.route("s", HashKey::of_partition_key(b"0")).unwrap(),
        2
    );
    // The closed parent stays readable.
    let read = broker.read("s", 0, 0, 1 << 20).await.unwrap();
    assert!(!read.records.is_empty());
    assert_eq!(read.high_watermark, 3);

    // Splitting again, or at a key outside the range, is refused as Kinesis does.
    let again = broker.split_shard("s", 0, middle).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::InvalidReshard);
    let outside = broker.split_shard("s", 1, middle + 5).await.unwrap_err();
    assert_eq!(outside.kind(), ErrorKind::InvalidReshard);

    // The layout survives a restart, and children take appends.
    let broker = restart(broker, dir.path()).await;
    let info = broker.stream("s").unwrap();
    assert_eq!(info.shards.len(), 3);
    assert!(!info.shards[0].is_open());
    assert_eq!(append(&broker, "s", 2, 1, &[b"x"]).await, 0);
    let refused = broker
        .append(
            "s",
            0,
            BytesMut::from(&build_simple_batch(1, &[b"late"])[..]),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ShardClosed);
    broker.shutdown().await;
}

#[tokio::test]
async fn merge_needs_adjacent_open_shards_and_restores_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_stream("m", 3, BTreeMap::new(), false)
        .await
        .unwrap();
    let not_adjacent = broker.merge_shards("m", 0, 2).await.unwrap_err();
    assert_eq!(not_adjacent.kind(), ErrorKind::InvalidReshard);
    let child = broker.merge_shards("m", 1, 0).await.unwrap();
    assert_eq!(child, 3);
    let info = broker.stream("m").unwrap();
    assert_eq!(info.shards[3].parent, Some(1));
    assert_eq!(info.shards[3].adjacent_parent, Some(0));
    let three = HashKeyRange::even_split(3);
    assert_eq!(
        info.shards[3].range,
        HashKeyRange {
            start: 0,
            end: three[1].end
        }
    );
    let closed = broker.merge_shards("m", 0, 3).await.unwrap_err();
    assert_eq!(closed.kind(), ErrorKind::InvalidReshard);
    broker.shutdown().await;
}

#[tokio::test]
async fn uniform_scaling_reaches_even_ranges_within_kinesis_limits() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_stream("u", 3, BTreeMap::new(), false)
        .await
        .unwrap();
    assert_eq!(broker.update_shard_count("u", 5).await.unwrap(), (3, 5));
    assert_eq!(open_ranges(&broker, "u"), HashKeyRange::even_split(5));
    assert_eq!(broker.update_shard_count("u", 3).await.unwrap(), (5, 3));
    assert_eq!(open_ranges(&broker, "u"), HashKeyRange::even_split(3));
    // Every child has at most two parents, and every parent is closed.
    let info = broker.stream("u").unwrap();
    for shard in &info.shards {
        for parent in [shard.parent, shard.adjacent_parent].into_iter().flatten() {
            assert!(!info.shards[parent as usize].is_open());
        }
    }
    let too_far = broker.update_shard_count("u", 7).await.unwrap_err();
    assert_eq!(too_far.kind(), ErrorKind::LimitExceeded);
    let too_low = broker.update_shard_count("u", 1).await.unwrap_err();
    assert_eq!(too_low.kind(), ErrorKind::LimitExceeded);
    broker.shutdown().await;
}

#[tokio::test]
async fn scalings_per_day_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::with_data_dir(dir.path().to_path_buf());
    config.scalings_per_day_max = 2;
    let broker = Broker::open(config).await.unwrap();
    broker
        .create_stream("d", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    broker.update_shard_count("d", 2).await.unwrap();
    broker.update_shard_count("d", 1).await.unwrap();
    let third = broker.update_shard_count("d", 2).await.unwrap_err();
    assert_eq!(third.kind(), ErrorKind::LimitExceeded);
    broker.shutdown().await;
}

#[tokio::test]
async fn retention_deletes_expired_segments_and_keeps_newer_ones() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let day = 24 * 3600 * 1000;
    let configs = BTreeMap::from([
        ("retention.ms".to_owned(), day.to_string()),
        ("segment.bytes".to_owned(), "1024".to_owned()),
    ]);
    broker.create_stream("r", 1, configs, false).await.unwrap();
    let now = 100 * day;
    // Old records (3 days before `now`), in several segments, then new ones.
    let old_value = vec![b'o'; 600];
    for _ in 0..4 {
        append(&broker, "r", 0, now - 3 * day, &[&old_value]).await;
    }
    let first_new = append(&broker, "r", 0, now - 1000, &[b"new-1"]).await;
    append(&broker, "r", 0, now - 500, &[b"new-2"]).await;

    let report = broker.enforce_retention(now).await.unwrap();
    assert!(report.segments_deleted >= 3, "{report:?}");
    let (start, high) = broker.offsets("r", 0).unwrap();
    assert_eq!(high, first_new + 2);
    assert!(start <= first_new, "newer records stay");
    let read = broker
        .read("r", 0, first_new as i64, 1 << 20)
        .await
        .unwrap();
    assert!(!read.records.is_empty());
    let gone = broker.read("r", 0, 0, 1 << 20).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::OffsetOutOfRange);

    // A day later everything has expired, including the segment that took appends.
    broker.enforce_retention(now + 2 * day).await.unwrap();
    let (start, high) = broker.offsets("r", 0).unwrap();
    assert_eq!(start, high);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_closed_shard_whose_data_expired_is_reported_expired() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_stream("e", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    append(&broker, "e", 0, 1_000, &[b"old"]).await;
    broker.split_shard("e", 0, 1u128 << 127).await.unwrap();
    let later = broker.now_ms() + 400 * 24 * 3600 * 1000;
    assert!(
        !broker.is_expired("e", 0, later).unwrap(),
        "its data is still there"
    );
    broker.enforce_retention(later).await.unwrap();
    assert!(
        !broker.is_expired("e", 0, broker.now_ms()).unwrap(),
        "closed just now"
    );
    assert!(broker.is_expired("e", 0, later).unwrap());
    assert!(
        !broker.is_expired("e", 1, later).unwrap(),
        "open shards never expire"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn altered_settings_are_validated_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_stream("c", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let bad = broker
        .alter_stream_configs(
            "c",
            BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]),
            vec![],
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidConfig);
    let week = (7 * 24 * 3600 * 1000i64).to_string();
    broker
        .alter_stream_configs(
            "c",
            BTreeMap::from([("retention.ms".to_owned(), week.clone())]),
            vec![],
            false,
        )
        .await
        .unwrap();
    broker
        .change_tags(
            "c",
            BTreeMap::from([("team".to_owned(), "data".to_owned())]),
            vec![],
        )
        .await
        .unwrap();
    let broker = restart(broker, dir.path()).await;
    let info = broker.stream("c").unwrap();
    assert_eq!(info.config.retention_ms.to_string(), week);
    assert_eq!(info.tags["team"], "data");
    broker.shutdown().await;
}

#[tokio::test]
async fn writes_over_the_shard_limit_are_delayed_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let configs = BTreeMap::from([("capacity.mode".to_owned(), "provisioned".to_owned())]);
    broker.create_stream("t", 1, configs, false).await.unwrap();
    // 5 MiB into a 1 MiB/s shard: the delays add up to about 4 s (some refill happens
    // while the appends run, so allow a generous margin).
    let value = vec![b'v'; 256 * 1024];
    let mut last_delay = 0;
    for _ in 0..20 {
        let batch = BytesMut::from(&build_simple_batch(1, &[&value])[..]);
        let pending = broker.append("t", 0, batch).await.unwrap();
        last_delay = pending.throttle_ms();
        pending.wait().await.unwrap();
    }
    assert!(last_delay >= 2_500, "delay {last_delay} ms");
    // The Kinesis way refuses instead, storing nothing.
    let (_, before) = broker.offsets("t", 0).unwrap();
    let refused = broker
        .append_or_refuse(
            "t",
            0,
            BytesMut::from(&build_simple_batch(1, &[&value])[..]),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Throttled);
    assert_eq!(broker.offsets("t", 0).unwrap().1, before);
    broker.shutdown().await;
}

#[tokio::test]
async fn on_demand_streams_split_hot_shards_and_merge_cold_ones() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let configs = BTreeMap::from([
        ("capacity.mode".to_owned(), "on_demand".to_owned()),
        (
            "shard.write.bytes.per.second".to_owned(),
            "10000".to_owned(),
        ),
    ]);
    broker.create_stream("od", 2, configs, false).await.unwrap();
    broker
        .create_stream("fixed", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    // 20 KB into shard 0 over a 1 s window: twice its 10 KB/s limit, so it is hot.
    let value = vec![b'h'; 4000];
    for _ in 0..5 {
        append(&broker, "od", 0, 1, &[&value]).await;
        append(&broker, "fixed", 0, 1, &[&value]).await;
    }
    assert_eq!(broker.autoscale(1000).await.unwrap(), 1);
    let info = broker.stream("od").unwrap();
    assert!(!info.shards[0].is_open(), "the hot shard was split");
    assert_eq!(broker.open_shards("od").unwrap().len(), 3);
    assert_eq!(
        broker.stream("fixed").unwrap().shards.len(),
        1,
        "provisioned streams are left alone"
    );
    // An idle window: cold neighbours merge, one pair per pass, down to the minimum.
    assert_eq!(broker.autoscale(1000).await.unwrap(), 1);
    assert_eq!(broker.open_shards("od").unwrap().len(), 2);
    assert_eq!(broker.autoscale(1000).await.unwrap(), 1);
    assert_eq!(broker.open_shards("od").unwrap().len(), 1);
    assert_eq!(
        broker.autoscale(1000).await.unwrap(),
        0,
        "never below shards_min"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_second_change_during_a_reshard_is_refused_and_status_shows_updating() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_stream("busy", 2, BTreeMap::new(), false)
        .await
        .unwrap();
    let guard = broker
        .begin_change("busy", crate::StreamStatus::Updating)
        .unwrap();
    assert_eq!(
        broker.stream("busy").unwrap().status,
        crate::StreamStatus::Updating
    );
    let refused = broker
        .split_shard("busy", 0, 1u128 << 126)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::StreamBusy);
    drop(guard);
    assert_eq!(
        broker.stream("busy").unwrap().status,
        crate::StreamStatus::Active
    );
    broker.split_shard("busy", 0, 1u128 << 126).await.unwrap();
    broker.shutdown().await;
}

#[tokio::test]
async fn retention_bytes_bounds_the_local_log_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let configs = BTreeMap::from([
        ("segment.bytes".to_owned(), "1024".to_owned()),
        ("retention.bytes".to_owned(), "3000".to_owned()),
    ]);
    broker.create_stream("b", 1, configs, false).await.unwrap();
    let value = vec![b'b'; 600];
    let now = broker.now_ms();
    for _ in 0..8 {
        append(&broker, "b", 0, now, &[&value]).await;
    }
    broker.enforce_retention(now).await.unwrap();
    let (stream, index) = broker.shard("b", 0).unwrap();
    let segments = stream.shards[index].shard.view().segments();
    let total: u64 = segments.iter().map(|segment| segment.size_bytes).sum();
    // Kafka's rule: never below the limit, and not one whole segment above it.
    assert!(
        total >= 3000 && total - segments[0].size_bytes < 3000,
        "{total} bytes kept"
    );
    let (start, high) = broker.offsets("b", 0).unwrap();
    assert!(
        start > 0 && high == 8,
        "oldest records went first: [{start}, {high})"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn retention_bytes_with_tiering_bounds_local_and_remote_together() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_tiered(dir.path()).await;
    // One ~670-byte batch per 1 KiB segment; uploaded segments keep their local copies.
    let configs = BTreeMap::from([
        ("segment.bytes".to_owned(), "1024".to_owned()),
        ("retention.bytes".to_owned(), "3000".to_owned()),
        ("local.retention.ms".to_owned(), "86400000".to_owned()),
    ]);
    broker.create_stream("t", 1, configs, false).await.unwrap();
    let value = vec![b't'; 600];
    let now = broker.now_ms();
    for _ in 0..8 {
        append(&broker, "t", 0, now, &[&value]).await;
    }
    let (stream, index) = broker.shard("t", 0).unwrap();
    let shard = Arc::clone(&stream.shards[index].shard);
    let local = || shard.view().segments();

    // Nothing uploaded yet: the size bound may not delete what only the disk holds.
    broker.enforce_retention(now).await.unwrap();
    assert_eq!(broker.offsets("t", 0).unwrap(), (0, 8));

    // Seven sealed segments uploaded (local copies kept), then three more sealed that
    // wait for the next upload, and an active one.
    assert_eq!(broker.tier_pass(now).await.unwrap(), 7);
    assert_eq!(shard.remote_range(), Some((0, 7)));
    for _ in 0..3 {
        append(&broker, "t", 0, now, &[&value]).await;
    }
    let key = crate::tiering::shard_key(&stream.info, 0);
    let tier = broker.inner.tier.as_ref().unwrap();
    let remote_sizes: Vec<u64> = tier
        .manifest(&key)
        .await
        .unwrap()
        .segments
        .iter()
        .map(|segment| segment.size_bytes)
        .collect();
    let waiting: u64 = local()
        .iter()
        .filter(|segment| segment.base_offset >= 7)
        .map(|segment| segment.size_bytes)
        .sum();
    // What Kafka's rule must keep: drop the oldest remote segments while the rest is
    // still at least 3000 bytes, counting the waiting local bytes too.
    let mut total = remote_sizes.iter().sum::<u64>() + waiting;
    let mut expected_start = 0;
    for size in &remote_sizes {
        if total - size < 3000 {
            break;
        }
        total -= size;
        expected_start += 1;
    }
    assert!(expected_start > 0 && expected_start < 7);

    broker.enforce_retention(now).await.unwrap();
    assert_eq!(broker.offsets("t", 0).unwrap(), (expected_start, 11));
    assert_eq!(shard.remote_range(), Some((expected_start, 7)));
    // The local copies of what went are gone too; the segments not uploaded all stay.
    assert_eq!(local()[0].base_offset, expected_start);
    assert!(local().iter().any(|segment| segment.base_offset == 7));
    // What is kept reads back from the bucket; what went is out of range.
    let read = broker
        .read("t", 0, expected_start as i64, 1 << 20)
        .await
        .unwrap();
    assert!(!read.records.is_empty());
    assert!(broker.read("t", 0, 0, 1 << 20).await.is_err());
    broker.shutdown().await;
}

#[tokio::test]
async fn long_polls_of_an_idle_shard_do_not_pile_up_registrations() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_stream("idle", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let waiting = broker.watch(&[("idle", 0)]);
    for _ in 0..1000 {
        // One fetch pass each: register, find nothing, give up.
        drop(broker.watch(&[("idle", 0)]));
    }
    let (stream, index) = broker.shard("idle", 0).unwrap();
    let shard = &stream.shards[index].shard;
    assert_eq!(shard.waiters_registered(), 2, "the live one and the last");
    // The fetch still waiting is woken by the next append.
    append(&broker, "idle", 0, broker.now_ms(), &[b"x"]).await;
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting.notified())
        .await
        .expect("woken");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_batch_larger_than_a_segment_is_refused_and_the_shard_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let configs = BTreeMap::from([("segment.bytes".to_owned(), "1024".to_owned())]);
    broker
        .create_stream("small", 1, configs, false)
        .await
        .unwrap();
    let now = broker.now_ms();
    let big = BytesMut::from(&build_simple_batch(now, &[&[b'x'; 2048]])[..]);
    let refused = match broker.append("small", 0, big).await {
        Ok(pending) => pending.wait().await.unwrap_err(),
        Err(error) => error,
    };
    assert_eq!(refused.kind(), ErrorKind::BatchTooLarge, "{refused}");
    // Not a storage failure: the next append is stored.
    assert_eq!(append(&broker, "small", 0, now, &[b"fits"]).await, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn reads_are_charged_to_the_read_limit_only_when_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_stream("polled", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let now = broker.now_ms();
    let value = vec![b'p'; 500 * 1024];
    append(&broker, "polled", 0, now, &[&value]).await;
    append(&broker, "polled", 0, now, &[&value]).await;
    // A long poll may read the same bytes many times before it answers...
    for _ in 0..5 {
        let read = broker.read("polled", 0, 0, 4 << 20).await.unwrap();
        assert!(read.records.len() > 1000 * 1024);
    }
    // ...and pays once: 1 MiB is within the 2 MiB/s limit, 5 MiB would not be.
    assert_eq!(broker.charge_read("polled", 0, 1000 * 1024), 0);
    assert!(
        broker.charge_read("polled", 0, 4 << 20) > 0,
        "the limit holds"
    );
    broker.shutdown().await;
}

/// The directory of stream `name` under `data_dir`.
fn stream_dir(data_dir: &Path, name: &str) -> std::path::PathBuf {
    std::fs::read_dir(data_dir.join("streams"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|file| file.to_str())
                .is_some_and(|file| file.starts_with(&format!("{name}-")))
        })
        .unwrap()
}

/// After a reshard that failed, the old layout is what memory and disk both show, every
/// shard it shows open takes appends (the answer comes: no deadlock), and admin calls
/// work once the fault is gone.
async fn assert_unchanged_and_serving(broker: &Broker, dir: &Path, next_offset: u64) {
    let info = broker.stream("f").unwrap();
    assert_eq!(info.shards.len(), 1);
    assert!(info.shards[0].is_open());
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        append(broker, "f", 0, 1, &[b"after"]),
    )
    .await
    .expect("a produce to the parent is answered");
    assert_eq!(answered, next_offset);
    assert!(!shard_dir_exists(dir, 1) && !shard_dir_exists(dir, 2));
}

fn shard_dir_exists(dir: &Path, index: u32) -> bool {
    stream_dir(dir, "f").join(format!("{index:06}")).is_dir()
}

#[tokio::test]
async fn a_reshard_whose_child_cannot_open_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_stream("f", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    append(&broker, "f", 0, 1, &[b"before"]).await;
    // A file where the second child's directory would go.
    let blocker = stream_dir(dir.path(), "f").join("000002");
    std::fs::write(&blocker, b"in the way").unwrap();
    let middle = 1u128 << 127;
    assert!(broker.split_shard("f", 0, middle).await.is_err());
    std::fs::remove_file(&blocker).unwrap();
    assert_unchanged_and_serving(&broker, dir.path(), 1).await;
    assert_eq!(broker.split_shard("f", 0, middle).await.unwrap(), (1, 2));
    let broker = restart(broker, dir.path()).await;
    assert_eq!(broker.stream("f").unwrap().shards.len(), 3);
    assert_eq!(broker.offsets("f", 0).unwrap().1, 2);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_reshard_that_cannot_be_saved_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_stream("f", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    append(&broker, "f", 0, 1, &[b"before"]).await;
    // A directory where the metadata's temp file goes: the save fails, for root too.
    let blocker = dir.path().join("meta/metadata.json.tmp/x");
    std::fs::create_dir_all(&blocker).unwrap();
    let middle = 1u128 << 127;
    assert!(broker.split_shard("f", 0, middle).await.is_err());
    std::fs::remove_dir_all(blocker.parent().unwrap()).unwrap();
    assert_unchanged_and_serving(&broker, dir.path(), 1).await;
    // A restart in between shows the old layout too.
    let broker = restart(broker, dir.path()).await;
    assert_unchanged_and_serving(&broker, dir.path(), 2).await;
    assert_eq!(broker.split_shard("f", 0, middle).await.unwrap(), (1, 2));
    assert_eq!(append(&broker, "f", 1, 1, &[b"child"]).await, 0);
    broker.shutdown().await;
}

/// One shard that cannot be tiered (its sealed segment's file is gone) must not stop
/// the other streams' uploads: the pass goes on, counts the failure and reports it.
#[tokio::test]
async fn a_tiering_pass_goes_on_past_a_failing_shard() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_tiered(dir.path()).await;
    let configs = BTreeMap::from([("segment.bytes".to_owned(), "1024".to_owned())]);
    let value = vec![b'v'; 600];
    let now = broker.now_ms();
    // "a" sorts first, so a pass that stopped at the first failure would skip "b".
    for name in ["a", "b"] {
        broker
            .create_stream(name, 1, configs.clone(), false)
            .await
            .unwrap();
        for _ in 0..4 {
            append(&broker, name, 0, now, &[&value]).await;
        }
    }
    let broken = stream_dir(dir.path(), "a").join("000000/00000000000000000000.log");
    std::fs::remove_file(&broken).unwrap();
    assert!(
        broker.tier_pass(now).await.is_err(),
        "the failure is reported"
    );
    let (stream, index) = broker.shard("b", 0).unwrap();
    assert_eq!(
        stream.shards[index].shard.remote_range(),
        Some((0, 3)),
        "the healthy stream was tiered all the same"
    );
    assert_eq!(broker.pass_failures(), 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn open_shards_over_all_streams_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::with_data_dir(dir.path().to_path_buf());
    config.open_shards_total_max = 4;
    let broker = Broker::open(config).await.unwrap();
    broker
        .create_stream("a", 3, BTreeMap::new(), false)
        .await
        .unwrap();
    let refused = broker
        .create_stream("b", 2, BTreeMap::new(), false)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::LimitExceeded);
    assert!(
        refused.to_string().contains("open_shards_total_max"),
        "{refused}"
    );
    assert!(broker.stream("b").is_none(), "nothing was created");
    broker
        .create_stream("b", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    // Full: a split (one more open shard) and a scaling up are refused ...
    let split = broker.split_shard("a", 0, 1u128 << 100).await.unwrap_err();
    assert_eq!(split.kind(), ErrorKind::LimitExceeded);
    let scaled = broker.update_shard_count("b", 2).await.unwrap_err();
    assert_eq!(scaled.kind(), ErrorKind::LimitExceeded);
    // ... until a merge makes room; closed shards do not count.
    broker.merge_shards("a", 0, 1).await.unwrap();
    broker.split_shard("a", 3, 1u128 << 100).await.unwrap();
    broker.shutdown().await;
}

/// Issue 10 item 9: a fetch that chose the local log just before the tiering pass
/// deleted that segment's local copy must read it from the tier, not answer
/// OFFSET_OUT_OF_RANGE (which makes consumers reset their position).
/// A tiered broker with stream "t" of 1 KiB segments holding one ~670-byte batch each,
/// timestamped `now + delta` for each of `deltas_ms`, then a tier pass two days later:
/// all but the last segment uploaded and their local copies deleted (local retention:
/// 24 hours). Returns the broker, the stream, the shard's index and `now`.
async fn tiered_and_trimmed(
    data_dir: &Path,
    deltas_ms: &[i64],
) -> (Broker, Arc<crate::Stream>, usize, i64) {
    let broker = open_tiered(data_dir).await;
    let configs = BTreeMap::from([("segment.bytes".to_owned(), "1024".to_owned())]);
    broker.create_stream("t", 1, configs, false).await.unwrap();
    let value = vec![b't'; 600];
    let now = broker.now_ms();
    for delta in deltas_ms {
        append(&broker, "t", 0, now + delta, &[&value]).await;
    }
    let sealed = deltas_ms.len() - 1;
    assert_eq!(
        broker.tier_pass(now + 2 * 86_400_000).await.unwrap(),
        sealed
    );
    let (stream, index) = broker.shard("t", 0).unwrap();
    assert_eq!(stream.shards[index].shard.log_start_offset(), sealed as u64);
    (broker, stream, index, now)
}

#[tokio::test]
async fn a_read_that_lost_its_local_segment_to_the_tier_reads_the_tier() {
    let dir = tempfile::tempdir().unwrap();
    // The read decided "local" when the local log still started at 0 ...
    let seen_local_start = 0;
    // ... then the tiering pass uploaded the sealed segments and deleted their local
    // copies ...
    let (broker, stream, index, _) = tiered_and_trimmed(dir.path(), &[0; 4]).await;
    // ... and the read goes on with what it saw.
    let outcome = broker
        .read_from(&stream, index, 0, 1 << 20, seen_local_start)
        .await
        .expect("read from the tier, not OFFSET_OUT_OF_RANGE");
    let first = shardline_core::batch::BatchHeader::parse(&outcome.records).unwrap();
    assert_eq!(first.base_offset, 0);
    broker.shutdown().await;
}

/// ListOffsets by timestamp finds records that only the tier holds any more.
#[tokio::test]
async fn offsets_by_timestamp_are_found_in_tiered_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _, _, now) = tiered_and_trimmed(dir.path(), &[0, 1_000, 2_000, 3_000]).await;
    for (timestamp, expected) in [
        (now - 1, Some(0)),
        (now + 1, Some(1)),
        (now + 2_000, Some(2)),
        (now + 2_500, Some(3)),
        (now + 10_000, None),
    ] {
        assert_eq!(
            broker
                .offset_for_timestamp("t", 0, timestamp)
                .await
                .unwrap(),
            expected,
            "timestamp {timestamp}"
        );
    }
    broker.shutdown().await;
}

async fn open_on_bucket(data_dir: &Path, url: &str) -> Broker {
    let mut config = BrokerConfig::with_data_dir(data_dir.to_path_buf());
    config.tier = Some(shardline_tier::TierConfig::new(url));
    config.tier_upload_interval_ms = 3_600_000;
    Broker::open(config).await.unwrap()
}

/// Issue 10 item 12: a server restored from the bucket while the original still runs.
/// The restored one takes every shard's remote log over; the original, fenced, stops
/// tiering those shards, and nothing either manifest lists is overwritten or deleted.
#[tokio::test]
async fn a_server_restored_from_the_bucket_fences_the_original() {
    let url = "memory://fencing-test";
    let first_dir = tempfile::tempdir().unwrap();
    let first = open_on_bucket(first_dir.path(), url).await;
    let configs = BTreeMap::from([("segment.bytes".to_owned(), "1024".to_owned())]);
    first.create_stream("t", 1, configs, false).await.unwrap();
    let value = vec![b't'; 600];
    let now = first.now_ms();
    for _ in 0..4 {
        append(&first, "t", 0, now, &[&value]).await;
    }
    // Uploads [0, 3) and snapshots the metadata into the bucket.
    assert_eq!(first.tier_pass(now).await.unwrap(), 3);

    let second_dir = tempfile::tempdir().unwrap();
    let second = open_on_bucket(second_dir.path(), url).await;
    assert_eq!(
        second.offsets("t", 0).unwrap(),
        (0, 3),
        "restored from the bucket"
    );
    let (stream, index) = first.shard("t", 0).unwrap();
    let key = crate::tiering::shard_key(&stream.info, index as u32);
    let tier = second.inner.tier.as_ref().unwrap();
    assert_eq!(
        tier.manifest(&key).await.unwrap().owner.as_deref(),
        Some(tier.owner())
    );

    // The original goes on writing; its next upload is refused, and it stops tiering
    // the shard instead of failing every pass.
    for _ in 0..2 {
        append(&first, "t", 0, now, &[&value]).await;
    }
    assert_eq!(first.tier_pass(now).await.unwrap(), 0);
    assert!(
        stream.shards[index]
            .shard
            .tier_stopped
            .load(Ordering::Acquire)
    );
    assert_eq!(first.tier_pass(now).await.unwrap(), 0, "and stays out");
    // Remote retention of the fenced server leaves the remote log alone too.
    first
        .enforce_retention(now + 400 * 86_400_000)
        .await
        .unwrap();

    // The manifest still lists exactly what was uploaded, every object is there, and
    // the restored server reads it all from the bucket.
    tier.sync_cache().await;
    let manifest = tier.manifest(&key).await.unwrap();
    assert_eq!(
        (manifest.start_offset(), manifest.next_offset()),
        (Some(0), Some(3))
    );
    for offset in 0..3 {
        let outcome = second.read("t", 0, offset, 1 << 20).await.unwrap();
        let header = shardline_core::batch::BatchHeader::parse(&outcome.records).unwrap();
        assert_eq!(header.base_offset, offset);
    }
    // The new owner tiers as usual.
    for _ in 0..2 {
        append(&second, "t", 0, now, &[&value]).await;
    }
    assert_eq!(second.tier_pass(now).await.unwrap(), 1);
    // Deleting the stream on the fenced server leaves the new owner's objects alone.
    first.delete_stream("t").await.unwrap();
    tier.sync_cache().await;
    assert!(second.read("t", 0, 0, 1 << 20).await.is_ok());
    first.shutdown().await;
    second.shutdown().await;
}

/// Issue 10 item 9: a tiering pass that took the stream before `delete_stream` removed
/// it must not upload afterwards (the objects would be orphaned in the bucket).
#[tokio::test]
async fn a_pass_holding_a_deleted_stream_uploads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_tiered(dir.path()).await;
    let configs = BTreeMap::from([("segment.bytes".to_owned(), "1024".to_owned())]);
    broker.create_stream("d", 1, configs, false).await.unwrap();
    let value = vec![b'd'; 600];
    let now = broker.now_ms();
    for _ in 0..4 {
        append(&broker, "d", 0, now, &[&value]).await;
    }
    // What a pass that started just before the delete holds.
    let (stale, _) = broker.shard("d", 0).unwrap();
    let key = crate::tiering::shard_key(&stale.info, 0);
    broker.delete_stream("d").await.unwrap();
    let tier = broker.inner.tier.clone().unwrap();
    let uploaded = broker.tier_shard(&tier, &stale, 0, now).await.unwrap();
    assert_eq!(uploaded, 0);
    assert!(tier.manifest(&key).await.unwrap().segments.is_empty());
    broker.shutdown().await;
}
