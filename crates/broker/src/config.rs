//! Broker settings and per-stream settings (with Kafka's own config names).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};

use crate::Error;

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync before any `acks=1`/`acks=all` produce is answered, shared by every append
    /// that arrived meanwhile (group commit). Consumers see only fsynced records.
    EveryAppend,
    /// Answer after `write(2)`; fsync in the background every `interval_ms`. Faster, but a
    /// power loss can drop the last interval of acknowledged records (a process crash
    /// cannot: the page cache survives it).
    Interval {
        /// How often to fsync.
        interval_ms: u64,
    },
}

/// Engine-wide settings; built and validated by the binary from its config file.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Root of all local state.
    pub data_dir: PathBuf,
    /// Create a stream on the first produce or metadata request naming it.
    pub auto_create_streams: bool,
    /// Shards of an auto-created stream, and of CreateTopics asking for `-1` partitions.
    pub default_shard_count: u32,
    /// Largest shard count one create may ask for.
    pub shard_count_max: u32,
    /// Most open shards over all streams (Kinesis' per-account shard quota): creates,
    /// splits and scalings past it are refused with [`Error::LimitExceeded`](crate::Error).
    pub open_shards_total_max: u32,
    /// When appends are durable.
    pub flush: FlushPolicy,
    /// Sparse index density.
    pub index_interval_bytes: u32,
    /// Defaults for per-stream settings not set on the stream itself.
    pub stream_defaults: StreamConfig,
    /// Appends queued per shard before producers wait (backpressure).
    pub shard_queue_depth: usize,
    /// Check each batch's CRC again when it is read back from disk (hardware CRC-32C
    /// makes this cheap, and it turns silent disk corruption into a clear error).
    pub verify_crc_on_read: bool,
    /// Most bytes a compressed batch may inflate to when the engine looks inside it
    /// (every append is checked record by record; records sent to a closed shard are
    /// decoded to be re-routed). A batch over it is refused whole, having cost at most
    /// this much memory.
    pub decompressed_batch_bytes_max: usize,
    /// UpdateShardCount may change the open shard count by at most this factor up or down
    /// (Kinesis: 2).
    pub scaling_factor_max: u32,
    /// Most uniform scalings per stream in a rolling 24 hours (Kinesis: 10).
    pub scalings_per_day_max: u32,
    /// Most SplitShard and MergeShards calls per second over all streams (Kinesis: 5
    /// transactions per second per account); more get [`Error::LimitExceeded`](crate::Error).
    pub reshards_per_second_max: u32,
    /// How often the background task deletes expired segments.
    pub retention_check_interval_ms: u64,
    /// How on-demand streams are scaled.
    pub on_demand: OnDemandConfig,
    /// Tiered storage: sealed segments go to this object store, and reads below the
    /// local start offset come from it. `None`: local disk only.
    pub tier: Option<shardline_tier::TierConfig>,
    /// How often sealed segments are looked for to upload (and uploaded local copies
    /// past local retention deleted).
    pub tier_upload_interval_ms: u64,
    /// Where "now" comes from: [`SystemClock`](crate::SystemClock) in a server, a
    /// [`ManualClock`](crate::ManualClock) in tests that move time.
    pub clock: Arc<dyn Clock>,
    /// How long shutdown waits for a background pass to reach its next step.
    pub shutdown_grace_ms: u64,
}

/// Default of [`BrokerConfig::decompressed_batch_bytes_max`]: 32 MiB, 32 times a
/// default-sized (1 MiB) batch, well past what real producers' codecs achieve on
/// records, while bounding what one hostile batch can make the server allocate.
pub const DECOMPRESSED_BATCH_BYTES_MAX_DEFAULT: usize = 32 << 20;

/// Automatic scaling of `capacity.mode = on_demand` streams: every window, a shard whose
/// writes used at least `hot_percent` of its limit is split, and two adjacent shards that
/// both used at most `cold_percent` are merged, within the shard-count bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDemandConfig {
    /// Length of the measuring window.
    pub window_ms: u64,
    /// Split a shard whose write bytes reached this share of its limit.
    pub hot_percent: u32,
    /// Merge neighbours whose write bytes both stayed at or below this share.
    pub cold_percent: u32,
    /// Never merge below this many open shards.
    pub shards_min: u32,
    /// Never split above this many open shards.
    pub shards_max: u32,
}

impl Default for OnDemandConfig {
    fn default() -> OnDemandConfig {
        OnDemandConfig {
            window_ms: 60_000,
            hot_percent: 80,
            cold_percent: 10,
            shards_min: 1,
            shards_max: 64,
        }
    }
}

impl BrokerConfig {
    /// Settings for tests and the embedded default, rooted at `data_dir`.
    pub fn with_data_dir(data_dir: PathBuf) -> BrokerConfig {
        BrokerConfig {
            data_dir,
            auto_create_streams: false,
            default_shard_count: 1,
            shard_count_max: 500,
            open_shards_total_max: 500,
            flush: FlushPolicy::EveryAppend,
            index_interval_bytes: 4096,
            stream_defaults: StreamConfig::default(),
            shard_queue_depth: 1024,
            verify_crc_on_read: true,
            decompressed_batch_bytes_max: DECOMPRESSED_BATCH_BYTES_MAX_DEFAULT,
            scaling_factor_max: 2,
            scalings_per_day_max: 10,
            reshards_per_second_max: 5,
            retention_check_interval_ms: 60_000,
            on_demand: OnDemandConfig::default(),
            tier: None,
            tier_upload_interval_ms: 1000,
            clock: Arc::new(SystemClock),
            shutdown_grace_ms: 10_000,
        }
    }
}

/// How a stream's capacity is managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityMode {
    /// A fixed number of shards, each held to its write and read limits (Kinesis
    /// PROVISIONED).
    Provisioned,
    /// The broker splits shards that run hot and merges cold neighbours, within the
    /// broker's shard bounds; per-shard limits still apply (Kinesis ON_DEMAND).
    OnDemand,
    /// No per-shard throughput limits at all (for benchmarks and trusted producers).
    Unlimited,
}

impl CapacityMode {
    /// The config value: `provisioned`, `on_demand` or `unlimited`.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityMode::Provisioned => "provisioned",
            CapacityMode::OnDemand => "on_demand",
            CapacityMode::Unlimited => "unlimited",
        }
    }

    /// Parses a config value.
    pub fn parse(text: &str) -> Option<CapacityMode> {
        match text {
            "provisioned" => Some(CapacityMode::Provisioned),
            "on_demand" => Some(CapacityMode::OnDemand),
            "unlimited" => Some(CapacityMode::Unlimited),
            _ => None,
        }
    }
}

/// Per-stream settings. Keys are Kafka's topic-config names so that CreateTopics,
/// DescribeConfigs and AlterConfigs speak them unchanged; Shardline's own settings use
/// the same style (`capacity.mode`, `shard.write.bytes.per.second`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// `retention.ms`: how long records are kept (24 h to 8760 h, as Kinesis allows).
    pub retention_ms: i64,
    /// `segment.bytes`: roll the active segment at this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment at this age.
    pub segment_ms: i64,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: u32,
    /// `capacity.mode`.
    pub capacity_mode: CapacityMode,
    /// `shard.write.bytes.per.second`: Kinesis' 1 MiB/s per shard.
    pub shard_write_bytes_per_second: u64,
    /// `shard.write.records.per.second`: Kinesis' 1,000 records/s per shard.
    pub shard_write_records_per_second: u64,
    /// `shard.read.bytes.per.second`: Kinesis' 2 MiB/s per shard.
    pub shard_read_bytes_per_second: u64,
    /// `retention.bytes`: the size past which a shard's oldest segments are deleted, by
    /// Kafka's rule (a segment goes only while what remains is at least this much, so a
    /// shard keeps up to one segment more); -1 for no bound (Kafka's default). With
    /// tiering, as in Kafka's tiered storage, it counts the whole log: remote segments
    /// plus local ones not uploaded yet.
    pub retention_bytes: i64,
    /// `local.retention.ms`: with tiering, how long an uploaded segment's local copy is
    /// kept (by its newest record's age); -2 means as long as `retention.ms`.
    pub local_retention_ms: i64,
    /// `local.retention.bytes`: with tiering, most bytes of uploaded segments kept locally
    /// per shard; -2 means no byte bound.
    pub local_retention_bytes: i64,
}

/// Shortest retention Kinesis allows: 24 hours.
pub const RETENTION_MS_MIN: i64 = 24 * 3600 * 1000;
/// Longest retention Kinesis allows: 8760 hours (365 days).
pub const RETENTION_MS_MAX: i64 = 8760 * 3600 * 1000;
/// Kafka's default `max.message.bytes`: 1 MiB of records plus the 12-byte log overhead.
pub const MAX_MESSAGE_BYTES_DEFAULT: u32 = 1_048_588;
/// Kinesis allows records up to 10 MiB when configured; so do we.
pub const MAX_MESSAGE_BYTES_MAX: u32 = 10 * 1024 * 1024 + 12;

impl Default for StreamConfig {
    fn default() -> StreamConfig {
        StreamConfig {
            // Kafka's default of 7 days: Kafka users expect it, and it lies inside the
            // Kinesis range. Kinesis' own default (24 h) is one setting away.
            retention_ms: 7 * 24 * 3600 * 1000,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            capacity_mode: CapacityMode::Provisioned,
            shard_write_bytes_per_second: 1024 * 1024,
            shard_write_records_per_second: 1000,
            shard_read_bytes_per_second: 2 * 1024 * 1024,
            retention_bytes: -1,
            local_retention_ms: 24 * 3600 * 1000,
            local_retention_bytes: -2,
        }
    }
}

/// Kafka topic configs that are accepted and reported but change nothing here, because a
/// single node with durable fsync and object storage has no replicas or compaction.
const INERT_TOPIC_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("compression.type", "producer"),
    ("min.insync.replicas", "1"),
    ("unclean.leader.election.enable", "false"),
    ("message.timestamp.type", "CreateTime"),
    ("message.downconversion.enable", "true"),
];

/// One config entry as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Kafka config name.
    pub name: String,
    /// Current value.
    pub value: String,
    /// Whether the stream sets it (true) or it comes from the broker default (false).
    pub is_explicit: bool,
}

impl StreamConfig {
    /// Applies explicit per-stream settings over `defaults`, validating each.
    pub fn resolve(
        defaults: &StreamConfig,
        explicit: &BTreeMap<String, String>,
    ) -> Result<StreamConfig, Error> {
        let mut config = *defaults;
        for (name, value) in explicit {
            config.apply(name, value)?;
        }
        Ok(config)
    }

    fn apply(&mut self, name: &str, value: &str) -> Result<(), Error> {
        let invalid = |reason: String| Error::InvalidConfig {
            name: name.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let number = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|error| invalid(format!("not an integer: {error}")))
        };
        match name {
            "retention.ms" => {
                let ms = number()?;
                if !(RETENTION_MS_MIN..=RETENTION_MS_MAX).contains(&ms) {
                    return Err(invalid(format!(
                        "retention must be between {RETENTION_MS_MIN} ms (24 hours) and {RETENTION_MS_MAX} ms (8760 hours)"
                    )));
                }
                self.retention_ms = ms;
            }
            "segment.bytes" => {
                let bytes = number()?;
                if !(1024..=i64::from(i32::MAX)).contains(&bytes) {
                    return Err(invalid(
                        "segment.bytes must be between 1024 and 2147483647".to_owned(),
                    ));
                }
                self.segment_bytes = bytes as u64;
            }
            "segment.ms" => {
                let ms = number()?;
                if ms < 1 {
                    return Err(invalid("segment.ms must be at least 1".to_owned()));
                }
                self.segment_ms = ms;
            }
            "max.message.bytes" => {
                let bytes = number()?;
                if !(0..=i64::from(MAX_MESSAGE_BYTES_MAX)).contains(&bytes) {
                    return Err(invalid(format!(
                        "max.message.bytes must be between 0 and {MAX_MESSAGE_BYTES_MAX}"
                    )));
                }
                self.max_message_bytes = bytes as u32;
            }
            "retention.bytes" => {
                let value = number()?;
                if value < -1 {
                    return Err(invalid(
                        "retention.bytes must be -1 (no bound), 0 or more".to_owned(),
                    ));
                }
                self.retention_bytes = value;
            }
            "local.retention.ms" | "local.retention.bytes" => {
                let value = number()?;
                if value < -2 {
                    return Err(invalid(format!(
                        "{name} must be -2 (as retention), 0 or more"
                    )));
                }
                if name == "local.retention.ms" {
                    self.local_retention_ms = value;
                } else {
                    self.local_retention_bytes = value;
                }
            }
            "capacity.mode" => {
                self.capacity_mode = CapacityMode::parse(value.trim()).ok_or_else(|| {
                    invalid("capacity.mode must be provisioned, on_demand or unlimited".to_owned())
                })?;
            }
            "shard.write.bytes.per.second"
            | "shard.write.records.per.second"
            | "shard.read.bytes.per.second" => {
                let rate = number()?;
                if rate < 1 {
                    return Err(invalid(format!(
                        "{name} must be at least 1 (use capacity.mode=unlimited to lift limits)"
                    )));
                }
                let rate = rate as u64;
                match name {
                    "shard.write.bytes.per.second" => self.shard_write_bytes_per_second = rate,
                    "shard.write.records.per.second" => self.shard_write_records_per_second = rate,
                    _ => self.shard_read_bytes_per_second = rate,
                }
            }
            "cleanup.policy" if value != "delete" => {
                return Err(invalid(
                    "only cleanup.policy=delete is supported; log compaction is not".to_owned(),
                ));
            }
            "message.timestamp.type" if value != "CreateTime" => {
                return Err(invalid(
                    "only CreateTime timestamps are supported".to_owned(),
                ));
            }
            _ if INERT_TOPIC_CONFIGS.iter().any(|(inert, _)| *inert == name) => {}
            _ => return Err(invalid("unknown topic config".to_owned())),
        }
        Ok(())
    }

    /// Every config of a stream, explicit ones marked, for DescribeConfigs.
    pub fn describe(&self, explicit: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
        let mut entries = vec![
            ("retention.ms".to_owned(), self.retention_ms.to_string()),
            ("segment.bytes".to_owned(), self.segment_bytes.to_string()),
            ("segment.ms".to_owned(), self.segment_ms.to_string()),
            (
                "max.message.bytes".to_owned(),
                self.max_message_bytes.to_string(),
            ),
            (
                "capacity.mode".to_owned(),
                self.capacity_mode.as_str().to_owned(),
            ),
            (
                "shard.write.bytes.per.second".to_owned(),
                self.shard_write_bytes_per_second.to_string(),
            ),
            (
                "shard.write.records.per.second".to_owned(),
                self.shard_write_records_per_second.to_string(),
            ),
            (
                "shard.read.bytes.per.second".to_owned(),
                self.shard_read_bytes_per_second.to_string(),
            ),
            (
                "retention.bytes".to_owned(),
                self.retention_bytes.to_string(),
            ),
            (
                "local.retention.ms".to_owned(),
                self.local_retention_ms.to_string(),
            ),
            (
                "local.retention.bytes".to_owned(),
                self.local_retention_bytes.to_string(),
            ),
        ];
        for (name, default) in INERT_TOPIC_CONFIGS {
            let value = explicit
                .get(*name)
                .cloned()
                .unwrap_or_else(|| (*default).to_owned());
            entries.push(((*name).to_owned(), value));
        }
        entries
            .into_iter()
            .map(|(name, value)| ConfigEntry {
                is_explicit: explicit.contains_key(&name),
                name,
                value,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn retention_outside_the_kinesis_range_is_refused() {
        let defaults = StreamConfig::default();
        for bad in ["3600000", "31536000001", "-1", "soon"] {
            let result = StreamConfig::resolve(&defaults, &explicit(&[("retention.ms", bad)]));
            assert!(matches!(result, Err(Error::InvalidConfig { .. })), "{bad}");
        }
        let ok =
            StreamConfig::resolve(&defaults, &explicit(&[("retention.ms", "86400000")])).unwrap();
        assert_eq!(ok.retention_ms, 86_400_000);
    }

    #[test]
    fn unknown_and_unsupported_configs_are_refused_inert_ones_accepted() {
        let defaults = StreamConfig::default();
        assert!(StreamConfig::resolve(&defaults, &explicit(&[("no.such", "1")])).is_err());
        assert!(
            StreamConfig::resolve(&defaults, &explicit(&[("cleanup.policy", "compact")])).is_err()
        );
        assert!(
            StreamConfig::resolve(&defaults, &explicit(&[("min.insync.replicas", "2")])).is_ok()
        );
    }

    #[test]
    fn describe_marks_explicit_entries() {
        let set = explicit(&[("segment.bytes", "4096")]);
        let config = StreamConfig::resolve(&StreamConfig::default(), &set).unwrap();
        let entries = config.describe(&set);
        let segment = entries.iter().find(|e| e.name == "segment.bytes").unwrap();
        assert!(segment.is_explicit);
        assert_eq!(segment.value, "4096");
        assert!(
            !entries
                .iter()
                .find(|e| e.name == "retention.ms")
                .unwrap()
                .is_explicit
        );
    }
}
