//! The server's configuration file (TOML), its defaults, and its validation.
//!
//! Loading goes file → command-line overrides → [`ServeConfig::validate`], and only a
//! validated config reaches the server. Unknown keys are an error (a typo must not be
//! silently ignored). Every key is documented in `config/embedded.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use shardline_broker::{
    BrokerConfig, CapacityMode, FlushPolicy, MAX_MESSAGE_BYTES_DEFAULT, RETENTION_MS_MAX,
    RETENTION_MS_MIN, StreamConfig,
};
use shardline_kafka::{GroupConfig, KafkaConfig};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Root of all local state.
    pub data_dir: PathBuf,
    /// The Kafka listener.
    pub kafka: KafkaSection,
    /// The HTTP listener (health, metrics; the Kinesis API later).
    pub http: HttpSection,
    /// Local log storage.
    pub storage: StorageSection,
    /// Stream defaults and limits.
    pub streams: StreamsSection,
    /// Tiered storage.
    pub tier: TierSection,
    /// Shutdown behaviour.
    pub shutdown: ShutdownSection,
    /// Consumer groups and their committed offsets.
    pub groups: GroupsSection,
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Address to bind.
    pub listen: String,
    /// `host:port` returned to clients in Metadata; defaults to the bound address.
    pub advertised_listener: Option<String>,
    /// Largest request accepted, in bytes.
    pub frame_bytes_max: usize,
    /// Most client connections at once.
    pub connections_max: usize,
    /// Most request bytes one connection may have in flight.
    pub inflight_bytes_per_connection_max: usize,
    /// Most record bytes in one Fetch answer.
    pub fetch_bytes_max: usize,
    /// Idle connections are closed after this many ms.
    pub connections_idle_ms: u64,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address to bind.
    pub listen: String,
    /// Region named in Kinesis ARNs.
    pub region: String,
    /// 12-digit account id named in Kinesis ARNs and messages.
    pub account_id: String,
    /// Most open HTTP connections.
    pub connections_max: usize,
    /// Time a client has to send a request's headers once it has started it.
    pub header_timeout_ms: u64,
    /// A connection with no request under way for this long is closed.
    pub idle_timeout_ms: u64,
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `"every_append"` (fsync before acknowledging, shared by concurrent appends) or
    /// `"interval"` (acknowledge after write, fsync every `flush_interval_ms`).
    pub flush: String,
    /// fsync period for `flush = "interval"`.
    pub flush_interval_ms: u64,
    /// Sparse index density.
    pub index_interval_bytes: u32,
    /// Verify each batch's CRC when read back from disk.
    pub verify_crc_on_read: bool,
    /// Appends queued per shard before producers wait.
    pub shard_queue_depth: usize,
    /// Most bytes a compressed batch may inflate to when the server must look inside it.
    pub decompressed_batch_bytes_max: usize,
}

/// `[streams]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsSection {
    /// Create unknown topics on first use.
    pub auto_create: bool,
    /// Shards of an auto-created stream.
    pub default_shard_count: u32,
    /// Largest shard count one create may ask for.
    pub shard_count_max: u32,
    /// Most open shards over all streams.
    pub open_shards_total_max: u32,
    /// Default retention, 24 to 8760.
    pub retention_hours: u32,
    /// Default segment size.
    pub segment_bytes: u64,
    /// Default segment age before it rolls.
    pub segment_ms: i64,
    /// Default largest record batch.
    pub max_message_bytes: u32,
    /// Default capacity mode: `provisioned`, `on_demand` or `unlimited`.
    pub capacity_mode: String,
    /// Default per-shard write limit in bytes per second.
    pub shard_write_bytes_per_second: u64,
    /// Default per-shard write limit in records per second.
    pub shard_write_records_per_second: u64,
    /// Default per-shard read limit in bytes per second.
    pub shard_read_bytes_per_second: u64,
    /// UpdateShardCount may change the open shard count by at most this factor.
    pub scaling_factor_max: u32,
    /// Most uniform scalings per stream in a rolling 24 hours.
    pub scalings_per_day_max: u32,
    /// Most splits and merges per second over all streams.
    pub reshards_per_second_max: u32,
    /// How often expired segments are looked for, in ms.
    pub retention_check_interval_ms: u64,
    /// On-demand scaling: the measuring window, in ms.
    pub on_demand_window_ms: u64,
    /// On-demand scaling: split a shard that used this share (%) of its write limit.
    pub on_demand_hot_percent: u32,
    /// On-demand scaling: merge neighbours that both used at most this share (%).
    pub on_demand_cold_percent: u32,
    /// On-demand scaling: never fewer open shards than this.
    pub on_demand_shards_min: u32,
    /// On-demand scaling: never more open shards than this.
    pub on_demand_shards_max: u32,
    /// Size past which a shard's oldest segments go, Kafka's way (per topic
    /// `retention.bytes`), local and remote together with tiering; -1 for no bound.
    pub retention_bytes: i64,
    /// With tiering: hours an uploaded segment's local copy is kept (by its newest
    /// record's age); per topic `local.retention.ms`. -1: as long as the retention.
    pub local_retention_hours: i64,
    /// With tiering: most bytes of uploaded segments kept locally per shard; per topic
    /// `local.retention.bytes`. -1: no byte bound.
    pub local_retention_bytes: i64,
}

/// `[groups]`: Kafka's `group.*` and `offsets.*` broker settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsSection {
    /// Smallest session timeout a consumer may ask for.
    pub session_timeout_ms_min: i32,
    /// Largest session timeout a consumer may ask for.
    pub session_timeout_ms_max: i32,
    /// How long the first rebalance of an empty group waits for more members.
    pub initial_rebalance_delay_ms: i32,
    /// Most members one group may have.
    pub group_size_max: usize,
    /// Most protocols one JoinGroup may offer.
    pub member_protocols_max: usize,
    /// Most groups kept by the coordinator.
    pub groups_max: usize,
    /// How long a new member's JoinGroup may wait before the member is dropped.
    pub new_member_join_timeout_ms: i32,
    /// How long committed offsets of a group without members are kept.
    pub offsets_retention_ms: i64,
    /// How often expired offsets are looked for.
    pub offsets_retention_check_interval_ms: u64,
    /// Longest metadata string a committed offset may carry.
    pub offset_metadata_bytes_max: usize,
}

impl Default for GroupsSection {
    fn default() -> GroupsSection {
        let defaults = GroupConfig::default();
        GroupsSection {
            session_timeout_ms_min: defaults.session_timeout_ms_min,
            session_timeout_ms_max: defaults.session_timeout_ms_max,
            initial_rebalance_delay_ms: defaults.initial_rebalance_delay_ms,
            group_size_max: defaults.group_size_max,
            member_protocols_max: defaults.member_protocols_max,
            groups_max: defaults.groups_max,
            new_member_join_timeout_ms: defaults.new_member_join_timeout_ms,
            offsets_retention_ms: defaults.offsets_retention_ms,
            offsets_retention_check_interval_ms: defaults.offsets_retention_check_interval_ms,
            offset_metadata_bytes_max: defaults.offset_metadata_bytes_max,
        }
    }
}

/// `[tier]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierSection {
    /// Move sealed segments to object storage.
    pub enabled: bool,
    /// `s3://bucket/prefix`, `file:///absolute/dir` or `memory://`; empty means
    /// `file://<data_dir>/objects`.
    pub url: String,
    /// S3 endpoint (MinIO, Ceph, moto…); unset: `AWS_ENDPOINT_URL` or AWS itself.
    pub endpoint: Option<String>,
    /// S3 region; unset: `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// S3 access key; unset: `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// S3 secret key; unset: `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Allow plain-HTTP endpoints; unset: `AWS_ALLOW_HTTP`.
    pub allow_http: Option<bool>,
    /// Segments above this size go up as multipart uploads.
    pub multipart_threshold_bytes: u64,
    /// Size of each part of a multipart upload (5 MiB to 5 GiB, S3's limits).
    pub multipart_part_bytes: u64,
    /// Size of the blocks cold reads fetch and cache.
    pub block_bytes: u64,
    /// Memory for cached blocks.
    pub cache_bytes_max: u64,
    /// Blocks fetched ahead of a sequential reader.
    pub readahead_blocks: u32,
    /// How often sealed segments are looked for and uploaded.
    pub upload_interval_ms: u64,
}

impl Default for TierSection {
    fn default() -> TierSection {
        let defaults = shardline_tier::TierConfig::new(String::new());
        TierSection {
            enabled: true,
            url: String::new(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: None,
            multipart_threshold_bytes: defaults.multipart_threshold_bytes,
            multipart_part_bytes: defaults.multipart_part_bytes,
            block_bytes: defaults.block_bytes,
            cache_bytes_max: defaults.cache_bytes_max,
            readahead_blocks: defaults.readahead_blocks,
            upload_interval_ms: 1000,
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// How long in-flight requests may take to finish.
    pub grace_ms: u64,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            data_dir: PathBuf::from("./data"),
            kafka: KafkaSection::default(),
            http: HttpSection::default(),
            storage: StorageSection::default(),
            streams: StreamsSection::default(),
            tier: TierSection::default(),
            shutdown: ShutdownSection::default(),
            groups: GroupsSection::default(),
        }
    }
}

impl Default for KafkaSection {
    fn default() -> KafkaSection {
        KafkaSection {
            listen: "127.0.0.1:9092".to_owned(),
            advertised_listener: None,
            frame_bytes_max: 100 * 1024 * 1024,
            connections_max: 10_000,
            inflight_bytes_per_connection_max: 100 * 1024 * 1024,
            fetch_bytes_max: shardline_kafka::FETCH_BYTES_MAX_DEFAULT,
            connections_idle_ms: shardline_kafka::CONNECTIONS_IDLE_MS_DEFAULT,
        }
    }
}

impl Default for HttpSection {
    fn default() -> HttpSection {
        HttpSection {
            listen: "127.0.0.1:4567".to_owned(),
            region: "us-east-1".to_owned(),
            account_id: "000000000000".to_owned(),
            connections_max: 1024,
            header_timeout_ms: 30_000,
            idle_timeout_ms: 600_000,
        }
    }
}

impl Default for StorageSection {
    fn default() -> StorageSection {
        StorageSection {
            flush: "every_append".to_owned(),
            flush_interval_ms: 1000,
            index_interval_bytes: 4096,
            verify_crc_on_read: true,
            shard_queue_depth: 1024,
            decompressed_batch_bytes_max: shardline_broker::DECOMPRESSED_BATCH_BYTES_MAX_DEFAULT,
        }
    }
}

impl Default for StreamsSection {
    fn default() -> StreamsSection {
        let defaults = StreamConfig::default();
        StreamsSection {
            auto_create: false,
            default_shard_count: 1,
            shard_count_max: 500,
            open_shards_total_max: 500,
            retention_hours: (defaults.retention_ms / 3_600_000) as u32,
            segment_bytes: defaults.segment_bytes,
            segment_ms: defaults.segment_ms,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            capacity_mode: defaults.capacity_mode.as_str().to_owned(),
            shard_write_bytes_per_second: defaults.shard_write_bytes_per_second,
            shard_write_records_per_second: defaults.shard_write_records_per_second,
            shard_read_bytes_per_second: defaults.shard_read_bytes_per_second,
            scaling_factor_max: 2,
            scalings_per_day_max: 10,
            reshards_per_second_max: 5,
            retention_check_interval_ms: 60_000,
            on_demand_window_ms: 60_000,
            on_demand_hot_percent: 80,
            on_demand_cold_percent: 10,
            on_demand_shards_min: 1,
            on_demand_shards_max: 64,
            retention_bytes: -1,
            local_retention_hours: 24,
            local_retention_bytes: -1,
        }
    }
}

impl Default for ShutdownSection {
    fn default() -> ShutdownSection {
        ShutdownSection { grace_ms: 10_000 }
    }
}

/// A config that passed validation, split into what each part of the server takes.
#[derive(Debug, Clone)]
pub struct Validated {
    /// Kafka bind address.
    pub kafka_listen: SocketAddr,
    /// Advertised `host:port`, if set; else the bound address is used.
    pub advertised: Option<(String, u16)>,
    /// HTTP bind address.
    pub http_listen: SocketAddr,
    /// Engine settings.
    pub broker: BrokerConfig,
    /// Kafka front settings (the advertised address is filled in after binding).
    pub kafka: KafkaConfig,
    /// Kinesis front settings.
    pub kinesis: shardline_kinesis::KinesisConfig,
    /// HTTP listener limits.
    pub http: crate::http::HttpSettings,
}

impl ServeConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<ServeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Checks every value and builds the settings of each part.
    pub fn validate(&self) -> anyhow::Result<Validated> {
        let kafka_listen: SocketAddr = self.kafka.listen.parse().with_context(|| {
            format!(
                "kafka.listen {:?} is not an ip:port address",
                self.kafka.listen
            )
        })?;
        let http_listen: SocketAddr = self.http.listen.parse().with_context(|| {
            format!(
                "http.listen {:?} is not an ip:port address",
                self.http.listen
            )
        })?;
        let advertised = match &self.kafka.advertised_listener {
            None => None,
            Some(text) => Some(parse_host_port(text)?),
        };
        if self.kafka.frame_bytes_max < 1024 {
            bail!("kafka.frame_bytes_max must be at least 1024");
        }
        if self.kafka.frame_bytes_max > self.kafka.inflight_bytes_per_connection_max {
            bail!("kafka.frame_bytes_max must not exceed kafka.inflight_bytes_per_connection_max");
        }
        if self.kafka.inflight_bytes_per_connection_max > u32::MAX as usize {
            bail!("kafka.inflight_bytes_per_connection_max must be below 4 GiB");
        }
        if self.streams.reshards_per_second_max == 0 {
            bail!("streams.reshards_per_second_max must be at least 1");
        }
        if self.kafka.fetch_bytes_max == 0 || self.kafka.fetch_bytes_max > i32::MAX as usize {
            bail!("kafka.fetch_bytes_max must be between 1 and 2147483647");
        }
        if self.kafka.connections_idle_ms == 0 {
            bail!("kafka.connections_idle_ms must be at least 1");
        }
        if self.kafka.connections_max == 0 {
            bail!("kafka.connections_max must be at least 1");
        }
        let flush = match self.storage.flush.as_str() {
            "every_append" => FlushPolicy::EveryAppend,
            "interval" => {
                if self.storage.flush_interval_ms == 0 {
                    bail!("storage.flush_interval_ms must be at least 1");
                }
                FlushPolicy::Interval {
                    interval_ms: self.storage.flush_interval_ms,
                }
            }
            other => bail!("storage.flush must be \"every_append\" or \"interval\", not {other:?}"),
        };
        if self.storage.index_interval_bytes == 0 {
            bail!("storage.index_interval_bytes must be at least 1");
        }
        if self.storage.shard_queue_depth == 0 {
            bail!("storage.shard_queue_depth must be at least 1");
        }
        if self.storage.decompressed_batch_bytes_max < self.streams.max_message_bytes as usize {
            bail!(
                "storage.decompressed_batch_bytes_max is {}; it must be at least streams.max_message_bytes ({})",
                self.storage.decompressed_batch_bytes_max,
                self.streams.max_message_bytes
            );
        }
        let retention_ms = i64::from(self.streams.retention_hours) * 3_600_000;
        if !(RETENTION_MS_MIN..=RETENTION_MS_MAX).contains(&retention_ms) {
            bail!(
                "streams.retention_hours is {}; it must be between 24 and 8760",
                self.streams.retention_hours
            );
        }
        if !(1024..=u64::from(u32::MAX)).contains(&self.streams.segment_bytes) {
            bail!("streams.segment_bytes must be between 1024 and 4294967295");
        }
        if self.streams.segment_ms < 1 {
            bail!("streams.segment_ms must be at least 1");
        }
        if self.streams.default_shard_count == 0
            || self.streams.default_shard_count > self.streams.shard_count_max
            || self.streams.shard_count_max > self.streams.open_shards_total_max
        {
            bail!(
                "streams.default_shard_count must be between 1 and streams.shard_count_max, which must not exceed streams.open_shards_total_max"
            );
        }
        let capacity_mode = CapacityMode::parse(&self.streams.capacity_mode).with_context(|| {
            format!(
                "streams.capacity_mode must be \"provisioned\", \"on_demand\" or \"unlimited\", not {:?}",
                self.streams.capacity_mode
            )
        })?;
        for (key, rate) in [
            (
                "shard_write_bytes_per_second",
                self.streams.shard_write_bytes_per_second,
            ),
            (
                "shard_write_records_per_second",
                self.streams.shard_write_records_per_second,
            ),
            (
                "shard_read_bytes_per_second",
                self.streams.shard_read_bytes_per_second,
            ),
        ] {
            if rate == 0 {
                bail!(
                    "streams.{key} must be at least 1 (use capacity_mode = \"unlimited\" to lift limits)"
                );
            }
        }
        if self.streams.scaling_factor_max < 2 {
            bail!("streams.scaling_factor_max must be at least 2");
        }
        let on_demand = &self.streams;
        if on_demand.on_demand_window_ms == 0
            || on_demand.on_demand_cold_percent >= on_demand.on_demand_hot_percent
            || on_demand.on_demand_shards_min == 0
            || on_demand.on_demand_shards_min > on_demand.on_demand_shards_max
            || on_demand.on_demand_shards_max > self.streams.shard_count_max
        {
            bail!(
                "streams.on_demand_*: the window must be at least 1 ms, cold_percent below hot_percent, and 1 <= shards_min <= shards_max <= shard_count_max"
            );
        }
        if self.streams.retention_check_interval_ms == 0 {
            bail!("streams.retention_check_interval_ms must be at least 1");
        }
        let stream_defaults = StreamConfig {
            retention_ms,
            segment_bytes: self.streams.segment_bytes,
            segment_ms: self.streams.segment_ms,
            max_message_bytes: self.streams.max_message_bytes,
            capacity_mode,
            shard_write_bytes_per_second: self.streams.shard_write_bytes_per_second,
            shard_write_records_per_second: self.streams.shard_write_records_per_second,
            shard_read_bytes_per_second: self.streams.shard_read_bytes_per_second,
            retention_bytes: match self.streams.retention_bytes {
                bytes if bytes >= -1 => bytes,
                bytes => bail!("streams.retention_bytes is {bytes}; use -1 (no bound) or 0 and up"),
            },
            local_retention_ms: match self.streams.local_retention_hours {
                -1 => -2,
                hours if hours >= 0 => hours * 3_600_000,
                hours => bail!(
                    "streams.local_retention_hours is {hours}; use -1 (as retention) or 0 and up"
                ),
            },
            local_retention_bytes: match self.streams.local_retention_bytes {
                -1 => -2,
                bytes if bytes >= 0 => bytes,
                bytes => {
                    bail!("streams.local_retention_bytes is {bytes}; use -1 (no bound) or 0 and up")
                }
            },
        };
        let tier = if self.tier.enabled {
            let url = if self.tier.url.is_empty() {
                // The embedded default: objects next to the data, on the same disk. (The
                // directory is created at start-up, not here: validating has no effects.)
                let objects = std::path::absolute(self.data_dir.join("objects"))
                    .with_context(|| format!("resolving {}", self.data_dir.display()))?;
                format!("file://{}", objects.display())
            } else {
                self.tier.url.clone()
            };
            let mut tier = shardline_tier::TierConfig::new(url);
            tier.s3.endpoint = self.tier.endpoint.clone();
            tier.s3.region = self.tier.region.clone();
            tier.s3.access_key_id = self.tier.access_key_id.clone();
            tier.s3.secret_access_key = self.tier.secret_access_key.clone();
            tier.s3.allow_http = self.tier.allow_http;
            tier.multipart_threshold_bytes = self.tier.multipart_threshold_bytes;
            tier.multipart_part_bytes = self.tier.multipart_part_bytes;
            tier.block_bytes = self.tier.block_bytes;
            tier.cache_bytes_max = self.tier.cache_bytes_max;
            tier.readahead_blocks = self.tier.readahead_blocks;
            tier.validate().context("invalid [tier] settings")?;
            if self.tier.upload_interval_ms == 0 {
                bail!("tier.upload_interval_ms must be at least 1");
            }
            Some(tier)
        } else {
            None
        };
        let broker = BrokerConfig {
            data_dir: self.data_dir.clone(),
            auto_create_streams: self.streams.auto_create,
            default_shard_count: self.streams.default_shard_count,
            shard_count_max: self.streams.shard_count_max,
            open_shards_total_max: self.streams.open_shards_total_max,
            flush,
            index_interval_bytes: self.storage.index_interval_bytes,
            stream_defaults,
            shard_queue_depth: self.storage.shard_queue_depth,
            verify_crc_on_read: self.storage.verify_crc_on_read,
            decompressed_batch_bytes_max: self.storage.decompressed_batch_bytes_max,
            scaling_factor_max: self.streams.scaling_factor_max,
            scalings_per_day_max: self.streams.scalings_per_day_max,
            reshards_per_second_max: self.streams.reshards_per_second_max,
            retention_check_interval_ms: self.streams.retention_check_interval_ms,
            tier,
            tier_upload_interval_ms: self.tier.upload_interval_ms,
            clock: std::sync::Arc::new(shardline_broker::SystemClock),
            shutdown_grace_ms: self.shutdown.grace_ms,
            on_demand: shardline_broker::OnDemandConfig {
                window_ms: self.streams.on_demand_window_ms,
                hot_percent: self.streams.on_demand_hot_percent,
                cold_percent: self.streams.on_demand_cold_percent,
                shards_min: self.streams.on_demand_shards_min,
                shards_max: self.streams.on_demand_shards_max,
            },
        };
        let mut kafka = KafkaConfig::new(String::new(), 0);
        kafka.frame_bytes_max = self.kafka.frame_bytes_max;
        kafka.connections_max = self.kafka.connections_max;
        kafka.inflight_bytes_per_connection_max = self.kafka.inflight_bytes_per_connection_max;
        kafka.fetch_bytes_max = self.kafka.fetch_bytes_max;
        kafka.connections_idle = std::time::Duration::from_millis(self.kafka.connections_idle_ms);
        kafka.shutdown_grace = std::time::Duration::from_millis(self.shutdown.grace_ms);
        kafka.groups = GroupConfig {
            session_timeout_ms_min: self.groups.session_timeout_ms_min,
            session_timeout_ms_max: self.groups.session_timeout_ms_max,
            initial_rebalance_delay_ms: self.groups.initial_rebalance_delay_ms,
            group_size_max: self.groups.group_size_max,
            member_protocols_max: self.groups.member_protocols_max,
            groups_max: self.groups.groups_max,
            new_member_join_timeout_ms: self.groups.new_member_join_timeout_ms,
            offsets_retention_ms: self.groups.offsets_retention_ms,
            offsets_retention_check_interval_ms: self.groups.offsets_retention_check_interval_ms,
            offset_metadata_bytes_max: self.groups.offset_metadata_bytes_max,
        };
        if let Err(problem) = kafka.groups.validate() {
            bail!("groups.{problem}");
        }
        if self.http.account_id.len() != 12
            || !self.http.account_id.bytes().all(|b| b.is_ascii_digit())
        {
            bail!("http.account_id must be 12 digits, as in an AWS ARN");
        }
        if self.http.region.is_empty() {
            bail!("http.region must not be empty");
        }
        if self.http.connections_max == 0 {
            bail!("http.connections_max must be at least 1");
        }
        if self.http.header_timeout_ms == 0 || self.http.idle_timeout_ms == 0 {
            bail!("http.header_timeout_ms and http.idle_timeout_ms must be at least 1");
        }
        let http = crate::http::HttpSettings {
            connections_max: self.http.connections_max,
            header_timeout: std::time::Duration::from_millis(self.http.header_timeout_ms),
            idle_timeout: std::time::Duration::from_millis(self.http.idle_timeout_ms),
            shutdown_grace: std::time::Duration::from_millis(self.shutdown.grace_ms),
        };
        let kinesis = shardline_kinesis::KinesisConfig {
            region: self.http.region.clone(),
            account_id: self.http.account_id.clone(),
        };
        Ok(Validated {
            kafka_listen,
            advertised,
            http_listen,
            broker,
            kafka,
            kinesis,
            http,
        })
    }
}

fn parse_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = text
        .rsplit_once(':')
        .with_context(|| format!("advertised listener {text:?} must be host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("advertised listener {text:?} has a bad port"))?;
    if host.is_empty() || port == 0 {
        bail!("advertised listener {text:?} must name a host and a non-zero port");
    }
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/embedded.toml");
        let loaded = ServeConfig::load(&path).unwrap();
        loaded.validate().unwrap();
        let defaults = ServeConfig::default();
        assert_eq!(format!("{loaded:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn every_shipped_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                let loaded = ServeConfig::load(&path).unwrap();
                loaded
                    .validate()
                    .unwrap_or_else(|error| panic!("{}: {error:#}", path.display()));
            }
        }
    }

    #[test]
    fn unknown_keys_and_out_of_range_values_are_refused() {
        assert!(toml::from_str::<ServeConfig>("no_such_key = 1").is_err());
        let mut config = ServeConfig::default();
        config.streams.retention_hours = 12;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("retention_hours"), "{error}");
        let mut config = ServeConfig::default();
        config.storage.flush = "sometimes".to_owned();
        assert!(config.validate().is_err());
        let mut config = ServeConfig::default();
        config.kafka.advertised_listener = Some("nohost".to_owned());
        assert!(config.validate().is_err());
        let mut config = ServeConfig::default();
        config.groups.session_timeout_ms_max = 1;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("groups.session_timeout_ms_max"), "{error}");
    }
}
