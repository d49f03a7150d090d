//! Where the engine's "now" comes from. Everything that depends on wall time —
//! throttles, retention, tiering ages, on-demand scaling windows, Kinesis timestamps,
//! commit times — reads [`BrokerConfig::clock`](crate::BrokerConfig), so tests can move
//! time with a [`ManualClock`] instead of sleeping. (Timers that only wait, such as a long
//! poll's deadline, use tokio's time, which tests can pause.)

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock: what a server runs with.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
            })
    }
}

/// A clock that moves only when told: for tests of anything time-dependent.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: i64) -> ManualClock {
        ManualClock {
            now_ms: AtomicI64::new(start_ms),
        }
    }

    /// A clock reading the system time now (then moving only when told).
    pub fn starting_now() -> ManualClock {
        ManualClock::new(SystemClock.now_ms())
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `now_ms`.
    pub fn set(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use bytes::BytesMut;
    use shardline_records::build_simple_batch;

    use super::*;
    use crate::{Broker, BrokerConfig};

    async fn broker_with(clock: &Arc<ManualClock>, dir: &std::path::Path) -> Broker {
        let mut config = BrokerConfig::with_data_dir(dir.to_path_buf());
        config.clock = Arc::clone(clock) as Arc<dyn Clock>;
        Broker::open(config).await.unwrap()
    }

    /// Appends `kib` KiB and returns the throttle the broker asked for.
    async fn throttle_of(broker: &Broker, kib: usize) -> u64 {
        let value = vec![b'x'; kib * 1024];
        let batch = BytesMut::from(&build_simple_batch(broker.now_ms(), &[&value])[..]);
        let pending = broker.append("t", 0, batch).await.unwrap();
        let throttle_ms = pending.throttle_ms();
        pending.wait().await.unwrap();
        throttle_ms
    }

    /// Kinesis allows five SplitShard / MergeShards calls per second per account.
    #[tokio::test]
    async fn splits_and_merges_are_rate_limited_by_the_broker_clock() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(&clock, dir.path()).await;
        broker
            .create_stream("t", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        // The middle of an open shard's range: where it is split.
        let middle_of = |shard: u32| {
            let range = broker
                .open_shards("t")
                .unwrap()
                .into_iter()
                .find(|open| open.index == shard)
                .unwrap()
                .range;
            range.start + (range.end - range.start) / 2 + 1
        };
        // Five splits in one instant: each splits the newest child's range again.
        let mut shard = 0;
        for _ in 0..5 {
            shard = broker
                .split_shard("t", shard, middle_of(shard))
                .await
                .unwrap()
                .1;
        }
        let middle = middle_of(shard);
        let refused = broker.split_shard("t", shard, middle).await.unwrap_err();
        assert_eq!(refused.kind(), crate::ErrorKind::LimitExceeded);
        assert!(
            refused.to_string().contains("reshards_per_second_max"),
            "{refused}"
        );
        assert_eq!(broker.open_shards("t").unwrap().len(), 6, "nothing changed");
        // A second later of broker time, not of wall time, there is room again.
        clock.advance(1_000);
        broker.split_shard("t", shard, middle).await.unwrap();
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn write_throttles_follow_the_broker_clock_not_the_wall() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(&clock, dir.path()).await;
        broker
            .create_stream("t", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        // 1 MiB/s with a 1 MiB burst: 3 MiB at one instant leaves about 2 s of debt.
        let mut last = 0;
        for _ in 0..3 {
            last = throttle_of(&broker, 1000).await;
        }
        assert!((1500..=2500).contains(&last), "throttle {last} ms");
        // No wall time passes, so the debt stays; clock time pays it off.
        assert!(throttle_of(&broker, 1).await >= last);
        clock.advance(10_000);
        assert_eq!(throttle_of(&broker, 1).await, 0);
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn a_closed_shard_expires_when_the_clock_says_so() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(&clock, dir.path()).await;
        broker
            .create_stream("e", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        broker.split_shard("e", 0, 1u128 << 127).await.unwrap();
        let info = broker.stream("e").unwrap();
        assert_eq!(info.shards[0].closed_ms, Some(1_700_000_000_000));
        assert!(!broker.is_expired("e", 0, broker.now_ms()).unwrap());
        clock.advance(info.config.retention_ms + 1);
        assert!(broker.is_expired("e", 0, broker.now_ms()).unwrap());
        broker.shutdown().await;
    }
}
