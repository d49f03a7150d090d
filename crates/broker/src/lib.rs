//! The protocol-agnostic engine that both fronts (Kafka wire, Kinesis HTTP) call.
//!
//! It owns the streams and their shards, turns `append` calls into group-committed log
//! writes, serves reads below the durable high watermark, wakes long-polling readers on
//! append, keeps idempotent-producer state and consumer groups' committed offsets (group
//! committed too: see `offsets`), and persists both through `shardline-meta`. It knows
//! nothing of Kafka requests or Kinesis JSON: fronts convert their wire types into these
//! calls and map [`ErrorKind`] back to wire error codes.
//!
//! Layout under the data directory:
//! ```text
//! meta/metadata.json                     streams, shards, configs, producer-id counter
//! meta/offsets/                          committed offsets (shardline_meta::offsets)
//! streams/<name>-<topic id>/<shard>/     one shardline-log directory per shard
//! ```
//!
//! Depends on core, log and meta.

mod clock;
mod config;
mod error;
mod manage;
mod offsets;
mod producer;
mod reroute;
mod shard;
mod tiering;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use shardline_core::batch::BatchHeader;
use shardline_core::{HashKeyRange, StreamName};
use shardline_log::{LogConfig, ShardLog};
use shardline_meta::{MetaStore, OffsetStore, OffsetStoreConfig, ShardRecord, StreamRecord};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    BrokerConfig, CapacityMode, ConfigEntry, DECOMPRESSED_BATCH_BYTES_MAX_DEFAULT, FlushPolicy,
    MAX_MESSAGE_BYTES_DEFAULT, MAX_MESSAGE_BYTES_MAX, OnDemandConfig, RETENTION_MS_MAX,
    RETENTION_MS_MIN, StreamConfig,
};
pub use error::{Error, ErrorKind};
pub use manage::RetentionReport;
pub use offsets::{CommittedOffset, GROUP_ID_BYTES_MAX, OFFSET_METADATA_BYTES_MAX};
pub use reroute::Rerouted;
pub use shard::AppendOutcome;
pub use shardline_meta::document_path as metadata_document_path;
pub use tiering::{RemoteStorage, ShardStorage, TierBacklog, VerifyProgress};

use offsets::{OffsetRequest, Offsets};
use shard::{AppendRequest, Shard};

/// What a front needs to know about a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Index in the stream (Kafka partition).
    pub index: u32,
    /// Hash keys owned.
    pub range: HashKeyRange,
    /// Parent shard, for split and merge children.
    pub parent: Option<u32>,
    /// Second parent of a merge child.
    pub adjacent_parent: Option<u32>,
    /// When the shard was created.
    pub created_ms: i64,
    /// When a reshard closed the shard; `None` while it is open.
    pub closed_ms: Option<i64>,
    /// The offset after the shard's last record, once closed.
    pub ending_offset: Option<u64>,
}

impl ShardInfo {
    /// Whether the shard still takes writes.
    pub fn is_open(&self) -> bool {
        self.ending_offset.is_none()
    }
}

/// A stream's lifecycle state, as Kinesis reports it. Changes complete before the call
/// that makes them returns, so UPDATING and DELETING are seen only while one runs; a
/// stream is never left CREATING (creation is one durable step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// Serving, no change under way.
    Active,
    /// A reshard or settings change is under way; reads and writes go on.
    Updating,
    /// Being deleted.
    Deleting,
}

impl StreamStatus {
    /// The Kinesis name: `ACTIVE`, `UPDATING`, `DELETING`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Active => "ACTIVE",
            StreamStatus::Updating => "UPDATING",
            StreamStatus::Deleting => "DELETING",
        }
    }
}

/// Clears a stream's busy mark when a change ends, however it ends.
pub(crate) struct BusyGuard {
    inner: Arc<Inner>,
    stream: String,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        lock(&self.inner.busy).remove(&self.stream);
    }
}

fn with_status(mut info: StreamInfo, busy: &BTreeMap<String, StreamStatus>) -> StreamInfo {
    info.status = busy
        .get(&info.name)
        .copied()
        .unwrap_or(StreamStatus::Active);
    info
}

/// What a front needs to know about a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Stream / topic name.
    pub name: String,
    /// Stable 16-byte topic id.
    pub topic_id: [u8; 16],
    /// Creation time.
    pub created_ms: i64,
    /// Shards by index.
    pub shards: Vec<ShardInfo>,
    /// Effective settings.
    pub config: StreamConfig,
    /// Settings set explicitly on the stream.
    pub explicit_configs: BTreeMap<String, String>,
    /// Kinesis tags.
    pub tags: BTreeMap<String, String>,
    /// When the last reshards happened (for the rolling-24-hour scaling limit).
    pub scalings_ms: Vec<i64>,
    /// Lifecycle state.
    pub status: StreamStatus,
}

/// Records read from a shard.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    /// Whole record batches, verbatim.
    pub records: Bytes,
    /// Next offset to become readable.
    pub high_watermark: u64,
    /// First offset kept.
    pub log_start_offset: u64,
}

/// An append that has been queued in order and can be awaited.
#[derive(Debug)]
pub struct PendingAppend {
    reply: oneshot::Receiver<Result<AppendOutcome, Error>>,
    throttle_ms: u64,
}

impl PendingAppend {
    /// How long the caller should hold its answer to keep the shard within its write
    /// limits (0 when within them).
    pub fn throttle_ms(&self) -> u64 {
        self.throttle_ms
    }

    /// Waits until the append is durable (per the flush policy) or has failed.
    pub async fn wait(self) -> Result<AppendOutcome, Error> {
        self.reply.await.unwrap_or(Err(Error::ShuttingDown))
    }
}

/// A shard and its writer. Shared between successive versions of its [`Stream`], which
/// is replaced whole whenever the stream's metadata changes.
struct ShardSlot {
    shard: Arc<Shard>,
    queue: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Stream {
    info: StreamInfo,
    dir: PathBuf,
    shards: Vec<Arc<ShardSlot>>,
}

struct Inner {
    config: BrokerConfig,
    cluster_id: String,
    meta: Mutex<MetaStore>,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Serialises changes to stream metadata (create, delete, reshard, configs, tags), so
    /// each reads the stream it changes and saves it without a concurrent change between.
    admin: tokio::sync::Mutex<()>,
    /// Committed consumer-group offsets and their writer's state.
    offsets: Arc<Offsets>,
    /// The offsets writer's queue; `None` once shutdown has begun.
    offsets_queue: Mutex<Option<mpsc::Sender<OffsetRequest>>>,
    offsets_writer: Mutex<Option<JoinHandle<()>>>,
    shutting_down: AtomicBool,
    background: Mutex<Vec<JoinHandle<()>>>,
    appended_records: AtomicU64,
    appended_bytes: AtomicU64,
    throttled_writes: AtomicU64,
    throttled_reads: AtomicU64,
    /// Shards a background pass (tiering, retention) failed on and went past.
    pass_failures: AtomicU64,
    /// Turns true when shutdown begins: background passes stop between steps.
    stop: tokio::sync::watch::Sender<bool>,
    /// Whose turn it is among a stream's open shards for the next keyless batch sent to a
    /// closed shard.
    keyless_turn: AtomicUsize,
    /// Streams with a change under way (reshard, retention change: UPDATING; delete:
    /// DELETING). Kinesis answers ResourceInUse to a second change meanwhile.
    busy: Mutex<BTreeMap<String, StreamStatus>>,
    /// Tiered storage, when configured.
    tier: Option<shardline_tier::Tier>,
    /// What was last snapshotted to the object store, to skip unchanged documents.
    snapshots: Mutex<tiering::Snapshots>,
}

/// The engine. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex16(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// A fresh 16-byte id. Uniqueness, not secrecy, is what matters: MD5 over the name, the
/// clock in nanoseconds and the process id is plenty, and needs no random-number crate.
fn fresh_id(seed: &str) -> [u8; 16] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let mut id = md5::compute(format!("{seed}/{nanos}/{}", std::process::id())).0;
    // Kafka treats the all-zero UUID as "no id"; never produce it.
    id[0] |= 0x01;
    id
}

impl Inner {
    /// Whether `stream` exists and has a shard `shard` (closed shards count).
    fn check_shard(&self, stream: &str, shard: u32) -> Result<(), Error> {
        let streams = self
            .streams
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let found = streams
            .get(stream)
            .ok_or_else(|| Error::UnknownStream(stream.to_owned()))?;
        if shard as usize >= found.shards.len() {
            return Err(Error::UnknownShard {
                stream: stream.to_owned(),
                shard: i64::from(shard),
            });
        }
        Ok(())
    }
}

impl Broker {
    /// Opens the data directory, recovers every shard's log and the committed offsets
    /// (dropping offsets of streams that no longer exist), and starts the writers.
    pub async fn open(config: BrokerConfig) -> Result<Broker, Error> {
        // With tiering: probe the store (a bad bucket fails start-up here), restore the
        // metadata from it if the data directory is new, and learn where each shard's
        // remote data ends so that a rebuilt local log continues after it.
        let tier = match &config.tier {
            Some(tier_config) => Some(tiering::open_tier(tier_config, &config.data_dir).await?),
            None => None,
        };
        let remote = match &tier {
            Some(tier) => tiering::remote_ranges(tier, &config.data_dir).await?,
            None => tiering::RemoteRanges::default(),
        };
        let opening = config.clone();
        let opening_remote = remote.clone();
        let (meta, offset_store, streams) =
            tokio::task::spawn_blocking(move || open_blocking(&opening, &opening_remote))
                .await
                .map_err(|error| Error::Internal(format!("open task failed: {error}")))??;
        let cluster_id = meta.metadata().cluster_id.clone();
        let (offsets_sender, offsets_receiver) = mpsc::channel(offsets::OFFSET_QUEUE_DEPTH);
        let broker = Broker {
            inner: Arc::new(Inner {
                config,
                cluster_id,
                meta: Mutex::new(meta),
                streams: RwLock::new(BTreeMap::new()),
                admin: tokio::sync::Mutex::new(()),
                offsets: Arc::new(Offsets::new(offset_store)),
                offsets_queue: Mutex::new(Some(offsets_sender)),
                offsets_writer: Mutex::new(None),
                shutting_down: AtomicBool::new(false),
                background: Mutex::new(Vec::new()),
                appended_records: AtomicU64::new(0),
                appended_bytes: AtomicU64::new(0),
                throttled_writes: AtomicU64::new(0),
                throttled_reads: AtomicU64::new(0),
                pass_failures: AtomicU64::new(0),
                stop: tokio::sync::watch::Sender::new(false),
                keyless_turn: AtomicUsize::new(0),
                busy: Mutex::new(BTreeMap::new()),
                tier,
                snapshots: Mutex::new(tiering::Snapshots::default()),
            }),
        };
        {
            let mut map = broker.streams_mut();
            for (name, info, dir, shards) in streams {
                let stream = broker.start_stream(info, dir, shards);
                for slot in &stream.shards {
                    let key = tiering::shard_key(&stream.info, slot.shard.index);
                    if let Some(range) = remote.get(&key) {
                        slot.shard.set_remote_range(Some(*range));
                    }
                }
                map.insert(name, stream);
            }
        }
        let offsets_writer = tokio::spawn(offsets::run_writer(
            Arc::clone(&broker.inner.offsets),
            Arc::downgrade(&broker.inner),
            offsets_receiver,
        ));
        *lock(&broker.inner.offsets_writer) = Some(offsets_writer);
        // After the offsets writer runs: restoring commits needs it.
        if broker.inner.tier.is_some() {
            broker.restore_committed_offsets_if_new().await?;
            broker.spawn_periodic(
                broker.inner.config.tier_upload_interval_ms,
                "tiering",
                |broker, _| async move { broker.tier_pass(broker.now_ms()).await.map(drop) },
            );
        }
        if let FlushPolicy::Interval { interval_ms } = broker.inner.config.flush {
            broker.spawn_periodic(interval_ms, "flush", |broker, _| async move {
                broker.sync_all().await
            });
        }
        broker.spawn_periodic(
            broker.inner.config.retention_check_interval_ms,
            "retention",
            |broker, _| async move { broker.enforce_retention(broker.now_ms()).await.map(drop) },
        );
        broker.spawn_periodic(
            broker.inner.config.on_demand.window_ms,
            "on-demand scaling",
            |broker, elapsed_ms| async move { broker.autoscale(elapsed_ms).await.map(drop) },
        );
        info!(
            data_dir = %broker.inner.config.data_dir.display(),
            streams = broker.streams_ref().len(),
            "broker open"
        );
        Ok(broker)
    }

    /// Now, by the broker's clock ([`BrokerConfig::clock`]): what fronts use for
    /// timestamps and expiries, so that one clock rules everything time-dependent.
    pub fn now_ms(&self) -> i64 {
        self.inner.config.clock.now_ms()
    }

    fn streams_ref(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Stream>>> {
        self.inner
            .streams
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn streams_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Stream>>> {
        self.inner
            .streams
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start_stream(&self, info: StreamInfo, dir: PathBuf, shards: Vec<Shard>) -> Arc<Stream> {
        let slots = shards
            .into_iter()
            .map(|shard| self.start_shard(shard, &info))
            .collect();
        Arc::new(Stream {
            info,
            dir,
            shards: slots,
        })
    }

    /// Starts the writer of an open shard; a closed shard gets none (it takes no appends).
    fn start_shard(&self, shard: Shard, info: &StreamInfo) -> Arc<ShardSlot> {
        let shard = Arc::new(shard);
        let open = info
            .shards
            .get(shard.index as usize)
            .is_some_and(ShardInfo::is_open);
        let (queue, writer) = if open {
            let (sender, receiver) = mpsc::channel(self.inner.config.shard_queue_depth);
            let writer = tokio::spawn(shard::run_writer(Arc::clone(&shard), receiver));
            (Some(sender), Some(writer))
        } else {
            (None, None)
        };
        Arc::new(ShardSlot {
            shard,
            queue: Mutex::new(queue),
            writer: Mutex::new(writer),
        })
    }

    /// Gives an open shard whose writer was stopped a new queue and writer: how a close
    /// that could not be saved is undone.
    fn restart_writer(&self, slot: &ShardSlot) {
        let (sender, receiver) = mpsc::channel(self.inner.config.shard_queue_depth);
        let writer = tokio::spawn(shard::run_writer(Arc::clone(&slot.shard), receiver));
        *lock(&slot.queue) = Some(sender);
        *lock(&slot.writer) = Some(writer);
    }

    /// Runs `pass` every `interval_ms` (with the milliseconds since the previous pass)
    /// until the broker is dropped or shut down. A failed pass is logged and retried at
    /// the next tick: background work must never take the server down.
    fn spawn_periodic<F, Fut>(&self, interval_ms: u64, what: &'static str, pass: F)
    where
        F: Fn(Broker, u64) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), Error>> + Send,
    {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let mut stop = self.inner.stop.subscribe();
        let task = tokio::spawn(async move {
            let period = Duration::from_millis(interval_ms.max(1));
            let mut ticker = tokio::time::interval(period);
            // The first tick fires at once; the first pass should come one period in.
            ticker.tick().await;
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    // Shutdown: no new pass (one under way stops at its next step).
                    _ = stop.wait_for(|stopping| *stopping) => return,
                }
                let elapsed_ms = last.elapsed().as_millis() as u64;
                last = tokio::time::Instant::now();
                let Some(inner) = weak.upgrade() else { return };
                if let Err(error) = pass(Broker { inner }, elapsed_ms).await {
                    warn!(%error, task = what, "background pass failed; retrying at the next interval");
                }
            }
        });
        lock(&self.inner.background).push(task);
    }

    /// fsyncs every shard (the background flush of [`FlushPolicy::Interval`]).
    async fn sync_all(&self) -> Result<(), Error> {
        let shards: Vec<Arc<Shard>> = self
            .streams_ref()
            .values()
            .flat_map(|stream| stream.shards.iter().map(|slot| Arc::clone(&slot.shard)))
            .collect();
        tokio::task::spawn_blocking(move || {
            for shard in shards {
                shard.sync_now_blocking();
            }
        })
        .await
        .map_err(|error| Error::Internal(format!("flush task failed: {error}")))
    }

    /// The cluster id, stable across restarts.
    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// The settings the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// Every stream.
    pub fn streams(&self) -> Vec<StreamInfo> {
        let busy = lock(&self.inner.busy).clone();
        self.streams_ref()
            .values()
            .map(|stream| with_status(stream.info.clone(), &busy))
            .collect()
    }

    /// One stream, if it exists.
    pub fn stream(&self, name: &str) -> Option<StreamInfo> {
        let busy = lock(&self.inner.busy).clone();
        self.streams_ref()
            .get(name)
            .map(|stream| with_status(stream.info.clone(), &busy))
    }

    /// Marks `name` as under change until the guard drops; a second change meanwhile gets
    /// [`Error::StreamBusy`] (Kinesis: ResourceInUseException).
    pub(crate) fn begin_change(
        &self,
        name: &str,
        status: StreamStatus,
    ) -> Result<BusyGuard, Error> {
        let mut busy = lock(&self.inner.busy);
        if let Some(current) = busy.get(name) {
            return Err(Error::StreamBusy {
                stream: name.to_owned(),
                status: *current,
            });
        }
        busy.insert(name.to_owned(), status);
        Ok(BusyGuard {
            inner: Arc::clone(&self.inner),
            stream: name.to_owned(),
        })
    }

    /// Records and bytes appended since start (for metrics).
    pub fn appended_totals(&self) -> (u64, u64) {
        (
            self.inner.appended_records.load(Ordering::Relaxed),
            self.inner.appended_bytes.load(Ordering::Relaxed),
        )
    }

    /// Appends and reads slowed or refused by shard limits since start (Kinesis'
    /// WriteProvisionedThroughputExceeded and ReadProvisionedThroughputExceeded).
    pub fn throttled_totals(&self) -> (u64, u64) {
        (
            self.inner.throttled_writes.load(Ordering::Relaxed),
            self.inner.throttled_reads.load(Ordering::Relaxed),
        )
    }

    /// The stream, creating it with defaults when auto-creation is on.
    pub async fn stream_or_auto_create(&self, name: &str) -> Result<StreamInfo, Error> {
        if let Some(info) = self.stream(name) {
            return Ok(info);
        }
        if !self.inner.config.auto_create_streams {
            return Err(Error::UnknownStream(name.to_owned()));
        }
        match self
            .create_stream(
                name,
                self.inner.config.default_shard_count as i64,
                BTreeMap::new(),
                false,
            )
            .await
        {
            Ok(info) => Ok(info),
            // Two requests raced to create it: fine.
            Err(Error::StreamExists(_)) => self
                .stream(name)
                .ok_or_else(|| Error::UnknownStream(name.to_owned())),
            Err(error) => Err(error),
        }
    }

    /// Creates a stream of `shard_count` shards splitting the hash space evenly.
    /// `shard_count == -1` means the configured default. With `validate_only`, checks
    /// everything and creates nothing.
    pub async fn create_stream(
        &self,
        name: &str,
        shard_count: i64,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<StreamInfo, Error> {
        self.check_running()?;
        let name = StreamName::new(name)?;
        let shard_count = if shard_count == -1 {
            i64::from(self.inner.config.default_shard_count)
        } else {
            shard_count
        };
        if shard_count < 1 || shard_count > i64::from(self.inner.config.shard_count_max) {
            return Err(Error::InvalidShardCount {
                count: shard_count,
                reason: format!(
                    "must be between 1 and {} (broker setting shard_count_max)",
                    self.inner.config.shard_count_max
                ),
            });
        }
        let config = StreamConfig::resolve(&self.inner.config.stream_defaults, &configs)?;
        let _admin = self.inner.admin.lock().await;
        if self.streams_ref().contains_key(name.as_str()) {
            return Err(Error::StreamExists(name.to_string()));
        }
        let created_ms = self.now_ms();
        let topic_id = fresh_id(name.as_str());
        let shards: Vec<ShardInfo> = HashKeyRange::even_split(shard_count as u32)
            .into_iter()
            .enumerate()
            .map(|(index, range)| ShardInfo {
                index: index as u32,
                range,
                parent: None,
                adjacent_parent: None,
                created_ms,
                closed_ms: None,
                ending_offset: None,
            })
            .collect();
        let info = StreamInfo {
            name: name.to_string(),
            topic_id,
            created_ms,
            shards,
            config,
            explicit_configs: configs,
            tags: BTreeMap::new(),
            scalings_ms: Vec::new(),
            status: StreamStatus::Active,
        };
        if validate_only {
            return Ok(info);
        }
        let broker = self.clone();
        let creating = info.clone();
        let (dir, shards) = tokio::task::spawn_blocking(move || broker.create_blocking(&creating))
            .await
            .map_err(|error| Error::Internal(format!("create task failed: {error}")))??;
        let stream = self.start_stream(info.clone(), dir, shards);
        {
            let mut map = self.streams_mut();
            map.insert(info.name.clone(), stream);
        }
        info!(stream = %info.name, shards = info.shards.len(), "stream created");
        Ok(info)
    }

    fn create_blocking(&self, info: &StreamInfo) -> Result<(PathBuf, Vec<Shard>), Error> {
        let mut meta = lock(&self.inner.meta);
        // Checked again under the metadata lock: two creates may have raced.
        if meta.metadata().streams.contains_key(&info.name) {
            return Err(Error::StreamExists(info.name.clone()));
        }
        let dir = stream_dir(&self.inner.config.data_dir, &info.name, &info.topic_id);
        let shards = open_shards(
            &self.inner.config,
            info,
            &dir,
            &tiering::RemoteRanges::default(),
        )?;
        meta.update(|metadata| {
            metadata
                .streams
                .insert(info.name.clone(), stream_record(info))
        })?;
        Ok((dir, shards))
    }

    /// Deletes a stream and all its data.
    pub async fn delete_stream(&self, name: &str) -> Result<(), Error> {
        self.check_running()?;
        let _busy = self.begin_change(name, StreamStatus::Deleting)?;
        let _admin = self.inner.admin.lock().await;
        let stream = self
            .streams_mut()
            .remove(name)
            .ok_or_else(|| Error::UnknownStream(name.to_owned()))?;
        let broker = self.clone();
        let removing = name.to_owned();
        let saved = tokio::task::spawn_blocking(move || {
            // On failure the document in memory keeps the stream, as the disk does.
            lock(&broker.inner.meta)
                .update(|metadata| metadata.streams.remove(&removing))
                .map(drop)
        })
        .await
        .map_err(|error| Error::Internal(format!("delete task failed: {error}")))
        .and_then(|saved| saved.map_err(Error::from));
        if let Err(error) = saved {
            // The stream stays, serving as before; the caller may try again.
            self.streams_mut().insert(name.to_owned(), stream);
            return Err(error);
        }
        // After the stream left the map, so no commit to it can be written after this.
        if let Err(error) = self
            .submit_offsets(offsets::Change::DropStream {
                stream: name.to_owned(),
            })
            .await
        {
            warn!(stream = name, %error, "could not drop the deleted stream's committed offsets; the next start drops them");
        }
        stop_writers(&stream).await;
        if let Err(error) = self.delete_remote_stream(&stream.info).await {
            warn!(stream = name, %error, "could not delete the stream's objects; they are orphaned in the bucket");
        }
        let dir = stream.dir.clone();
        drop(stream);
        let doomed = dir.with_extension("deleting");
        let _ = tokio::task::spawn_blocking(move || {
            // Rename first so a crash mid-delete leaves a directory the next start sweeps.
            if std::fs::rename(&dir, &doomed).is_ok()
                && let Err(error) = std::fs::remove_dir_all(&doomed)
            {
                warn!(%error, dir = %doomed.display(), "could not remove deleted stream's data");
            }
        })
        .await;
        info!(stream = name, "stream deleted");
        Ok(())
    }

    fn shard(&self, stream: &str, shard: i64) -> Result<(Arc<Stream>, usize), Error> {
        let streams = self.streams_ref();
        let found = streams
            .get(stream)
            .ok_or_else(|| Error::UnknownStream(stream.to_owned()))?;
        if shard < 0 || shard as usize >= found.shards.len() {
            return Err(Error::UnknownShard {
                stream: stream.to_owned(),
                shard,
            });
        }
        Ok((Arc::clone(found), shard as usize))
    }

    /// Sends a change to the offsets writer and waits until it is durable or has failed.
    async fn submit_offsets(&self, change: offsets::Change) -> Result<usize, Error> {
        self.check_running()?;
        self.inner.offsets.check_failed()?;
        let sender = lock(&self.inner.offsets_queue)
            .clone()
            .ok_or(Error::ShuttingDown)?;
        let (reply, receiver) = oneshot::channel();
        sender
            .send(OffsetRequest { change, reply })
            .await
            .map_err(|_closed| Error::ShuttingDown)?;
        receiver.await.unwrap_or(Err(Error::ShuttingDown))
    }

    /// Whether shutdown has begun: long passes check it between their steps.
    pub(crate) fn stopping(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Shards that background passes (tiering, retention) failed on and went past,
    /// since start (for metrics).
    pub fn pass_failures(&self) -> u64 {
        self.inner.pass_failures.load(Ordering::Relaxed)
    }

    fn check_running(&self) -> Result<(), Error> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Validates one record batch and queues it for `shard`. Calls made in order from one
    /// task are stored in that order; await the returned [`PendingAppend`] for the result.
    /// The `await` here only waits for room in the shard's queue (backpressure).
    ///
    /// Over the shard's write limits the append is still taken, and
    /// [`PendingAppend::throttle_ms`] says how long the caller should hold its answer
    /// (Kafka's way). An append to a closed shard fails with [`Error::ShardClosed`]: route
    /// its records with [`Broker::route`] instead.
    pub async fn append(
        &self,
        stream: &str,
        shard: i64,
        batch: BytesMut,
    ) -> Result<PendingAppend, Error> {
        self.append_limited(stream, shard, batch, false).await
    }

    /// As [`Broker::append`], but an append over the shard's write limits is refused with
    /// [`Error::Throttled`] and nothing is stored (Kinesis' way).
    pub async fn append_or_refuse(
        &self,
        stream: &str,
        shard: i64,
        batch: BytesMut,
    ) -> Result<PendingAppend, Error> {
        self.append_limited(stream, shard, batch, true).await
    }

    async fn append_limited(
        &self,
        stream: &str,
        shard: i64,
        batch: BytesMut,
        refuse: bool,
    ) -> Result<PendingAppend, Error> {
        self.check_running()?;
        let (stream, index) = self.shard(stream, shard)?;
        if !stream.info.shards[index].is_open() {
            return Err(Error::ShardClosed {
                stream: stream.info.name.clone(),
                shard: index as u32,
            });
        }
        let limit = stream.info.config.max_message_bytes;
        if batch.len() > limit as usize {
            return Err(Error::BatchTooLarge {
                size: batch.len(),
                limit,
            });
        }
        let header = BatchHeader::parse_and_verify(&batch)?;
        if header.total_len() != batch.len() {
            return Err(Error::InvalidBatch(
                "exactly one record batch per partition is allowed".to_owned(),
            ));
        }
        if header.is_control() || header.is_transactional() {
            return Err(Error::InvalidBatch(
                "transactional and control batches are not supported".to_owned(),
            ));
        }
        let slot = &stream.shards[index];
        slot.shard.check_failed()?;
        let sender = lock(&slot.queue).clone();
        let Some(sender) = sender else {
            return Err(self.closed_queue(&stream.info.name, index as u32).await);
        };
        let now = self.now_ms();
        let throttle_ms = slot
            .shard
            .charge_write(batch.len() as u64, header.record_count as u64, now, refuse)
            .map_err(|wait_ms| Error::Throttled {
                stream: stream.info.name.clone(),
                shard: index as u32,
                wait_ms,
            })?;
        if throttle_ms > 0 {
            self.inner.throttled_writes.fetch_add(1, Ordering::Relaxed);
        }
        self.inner
            .appended_records
            .fetch_add(header.record_count as u64, Ordering::Relaxed);
        self.inner
            .appended_bytes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let (reply, receiver) = oneshot::channel();
        sender
            .send(AppendRequest {
                batch,
                header,
                now_ms: now,
                reply,
            })
            .await
            // Our clone of the sender keeps the queue open through a reshard (the writer
            // drains every sender's appends), so only a dead writer gets here.
            .map_err(|_writer_gone| Error::ShardFailed {
                stream: stream.info.name.clone(),
                shard: index as u32,
                reason: "the shard's writer stopped".to_owned(),
            })?;
        Ok(PendingAppend {
            reply: receiver,
            throttle_ms,
        })
    }

    /// The error for an append that found its shard's queue closed. Outside shutdown that
    /// means a reshard (or a delete) is closing the shard under the admin lock, while the
    /// published layout still shows it open; waiting for the lock means the caller's next
    /// `route` sees the children, so callers never need to poll for the layout.
    /// (`store_rerouted` appends while holding that lock, but only to children it found
    /// open under it, whose queues nothing else can close meanwhile, so it never gets here.)
    async fn closed_queue(&self, stream: &str, shard: u32) -> Error {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Error::ShuttingDown;
        }
        drop(self.inner.admin.lock().await);
        Error::ShardClosed {
            stream: stream.to_owned(),
            shard,
        }
    }

    /// Reads whole batches from `offset` (see [`ReadOutcome`]); what is answered is
    /// charged to the shard's read limit with [`Broker::charge_read`].
    pub async fn read(
        &self,
        stream: &str,
        shard: i64,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadOutcome, Error> {
        let (stream, index) = self.shard(stream, shard)?;
        let shard = Arc::clone(&stream.shards[index].shard);
        if offset < 0 {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: shard.first_offset(),
                high_watermark: shard.high_watermark(),
            });
        }
        let high_watermark = shard.high_watermark();
        if offset as u64 == high_watermark {
            // The common long-poll case: nothing new, no need to leave the runtime.
            return Ok(ReadOutcome {
                records: Bytes::new(),
                high_watermark,
                log_start_offset: shard.first_offset(),
            });
        }
        // Below the local log: the object store may hold it (tiered segments).
        let local_start = shard.log_start_offset();
        if (offset as u64) < local_start
            && let Some(records) = self
                .read_remote(
                    &stream.info,
                    index as u32,
                    offset as u64,
                    local_start,
                    max_bytes,
                )
                .await?
        {
            return Ok(ReadOutcome {
                records,
                high_watermark,
                log_start_offset: shard.first_offset(),
            });
        }
        tokio::task::spawn_blocking(move || {
            let records = shard.read_blocking(offset as u64, max_bytes)?;
            Ok(ReadOutcome {
                records,
                high_watermark: shard.high_watermark(),
                log_start_offset: shard.first_offset(),
            })
        })
        .await
        .map_err(|error| Error::Internal(format!("read task failed: {error}")))?
    }

    /// Charges `bytes` being answered from a shard to its read limit (Kinesis' 2 MiB/s)
    /// and returns how long the answer should be held to keep the shard at that rate (0
    /// when within it). Separate from [`Broker::read`] so that a long poll, which may
    /// read a shard several times before it answers, pays once for what it sends.
    pub fn charge_read(&self, stream: &str, shard: i64, bytes: u64) -> u64 {
        let Ok((stream, index)) = self.shard(stream, shard) else {
            return 0;
        };
        let throttle_ms = stream.shards[index].shard.charge_read(bytes, self.now_ms());
        if throttle_ms > 0 {
            self.inner.throttled_reads.fetch_add(1, Ordering::Relaxed);
        }
        throttle_ms
    }

    /// Whether `stream` has a shard (Kafka partition) `shard`; cheaper than
    /// [`Broker::stream`], which copies the stream's description.
    pub fn has_shard(&self, stream: &str, shard: i64) -> bool {
        self.shard(stream, shard).is_ok()
    }

    /// `(log start offset, high watermark)` of a shard.
    pub fn offsets(&self, stream: &str, shard: i64) -> Result<(u64, u64), Error> {
        let (stream, index) = self.shard(stream, shard)?;
        let shard = &stream.shards[index].shard;
        Ok((shard.first_offset(), shard.high_watermark()))
    }

    /// The first offset whose batch holds a timestamp at or after `timestamp_ms`, if any
    /// readable one does. Batch granularity: the offset may point at the start of a batch
    /// that also holds earlier records, which consumers skip.
    pub async fn offset_for_timestamp(
        &self,
        stream: &str,
        shard: i64,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, Error> {
        let (stream, index) = self.shard(stream, shard)?;
        let shard = Arc::clone(&stream.shards[index].shard);
        tokio::task::spawn_blocking(move || {
            let high_watermark = shard.high_watermark();
            let found = shard
                .log
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .offset_for_timestamp(timestamp_ms)?;
            Ok(found.filter(|offset| *offset < high_watermark))
        })
        .await
        .map_err(|error| Error::Internal(format!("lookup task failed: {error}")))?
    }

    /// Returns a notifier that fires at the next append to any of `targets` (unknown ones
    /// are skipped). Register before reading, then await, so no append is missed.
    pub fn watch(&self, targets: &[(&str, i64)]) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        for (stream, shard) in targets {
            if let Ok((stream, index)) = self.shard(stream, *shard) {
                stream.shards[index].shard.register_waiter(&notify);
            }
        }
        notify
    }

    /// Hands out an idempotent-producer id and epoch. With `current`, a client asks for
    /// its epoch to be bumped (KIP-360); a bump past the epoch range gets a fresh id.
    pub async fn init_producer_id(&self, current: Option<(i64, i16)>) -> Result<(i64, i16), Error> {
        if let Some((producer_id, epoch)) = current
            && producer_id >= 0
            && (0..i16::MAX - 1).contains(&epoch)
        {
            return Ok((producer_id, epoch + 1));
        }
        let broker = self.clone();
        let producer_id =
            tokio::task::spawn_blocking(move || lock(&broker.inner.meta).allocate_producer_id())
                .await
                .map_err(|error| Error::Internal(format!("producer id task failed: {error}")))??;
        Ok((producer_id, 0))
    }

    /// Stops taking appends, lets every queued append finish and fsync, and closes every
    /// log cleanly. Reads already running finish on their own.
    pub async fn shutdown(&self) {
        if self.inner.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // Background passes stop between steps (a shard, an upload), never inside one;
        // one that does not get there within the grace period is cut.
        self.inner.stop.send_replace(true);
        let grace = Duration::from_millis(self.inner.config.shutdown_grace_ms);
        let background = std::mem::take(&mut *lock(&self.inner.background));
        for mut task in background {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                warn!("a background pass did not stop within the grace period; cutting it");
                task.abort();
            }
        }
        let streams: Vec<Arc<Stream>> = self.streams_ref().values().cloned().collect();
        for stream in &streams {
            stop_writers(stream).await;
        }
        // Dropping the sender ends the offsets writer once its queue is drained.
        drop(lock(&self.inner.offsets_queue).take());
        let offsets_writer = lock(&self.inner.offsets_writer).take();
        if let Some(offsets_writer) = offsets_writer {
            let _ = offsets_writer.await;
        }
        let offsets = Arc::clone(&self.inner.offsets);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(store) = offsets.take_store()
                && let Err(error) = store.close()
            {
                warn!(%error, "syncing committed offsets at shutdown failed");
            }
            for stream in streams {
                for slot in &stream.shards {
                    let mut log = slot
                        .shard
                        .log
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Err(error) = log.close() {
                        warn!(stream = %stream.info.name, shard = slot.shard.index, %error, "clean close failed; recovery will scan on next start");
                    }
                }
            }
        })
        .await;
        info!("broker stopped");
    }
}

async fn stop_writers(stream: &Stream) {
    for slot in &stream.shards {
        // Dropping the sender ends the writer once the queue is drained.
        drop(lock(&slot.queue).take());
        let writer = lock(&slot.writer).take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

fn stream_dir(data_dir: &Path, name: &str, topic_id: &[u8; 16]) -> PathBuf {
    data_dir
        .join("streams")
        .join(format!("{name}-{}", hex(&topic_id[..4])))
}

fn stream_record(info: &StreamInfo) -> StreamRecord {
    StreamRecord {
        name: info.name.clone(),
        topic_id: hex(&info.topic_id),
        created_ms: info.created_ms,
        shards: info
            .shards
            .iter()
            .map(|shard| ShardRecord {
                index: shard.index,
                starting_hash_key: shard.range.start.to_string(),
                ending_hash_key: shard.range.end.to_string(),
                parent: shard.parent,
                adjacent_parent: shard.adjacent_parent,
                created_ms: shard.created_ms,
                ending_offset: shard.ending_offset,
                closed_ms: shard.closed_ms,
            })
            .collect(),
        configs: info.explicit_configs.clone(),
        tags: info.tags.clone(),
        scalings_ms: info.scalings_ms.clone(),
    }
}

fn log_config(config: &BrokerConfig, stream: &StreamConfig) -> LogConfig {
    LogConfig {
        segment_bytes_max: stream.segment_bytes,
        segment_ms_max: stream.segment_ms,
        index_interval_bytes: config.index_interval_bytes,
        verify_crc_on_read: config.verify_crc_on_read,
    }
}

fn open_shards(
    config: &BrokerConfig,
    info: &StreamInfo,
    dir: &Path,
    remote: &tiering::RemoteRanges,
) -> Result<Vec<Shard>, Error> {
    info.shards
        .iter()
        .map(|shard| {
            // A shard rebuilt from the bucket continues after its remote data.
            let first_offset = remote
                .get(&tiering::shard_key(info, shard.index))
                .map_or(0, |range| range.1);
            open_shard(config, info, dir, shard, first_offset)
        })
        .collect()
}

/// The directory of shard `index` under its stream's directory.
fn shard_dir(stream_dir: &Path, index: u32) -> PathBuf {
    stream_dir.join(format!("{index:06}"))
}

/// Opens (creating if new) the log of one shard of `info`, recovering it if needed.
fn open_shard(
    config: &BrokerConfig,
    info: &StreamInfo,
    dir: &Path,
    shard: &ShardInfo,
    first_offset: u64,
) -> Result<Shard, Error> {
    let now = config.clock.now_ms();
    let log = ShardLog::open_starting_at(
        &shard_dir(dir, shard.index),
        log_config(config, &info.config),
        now,
        first_offset,
    )?;
    Ok(Shard::new(
        info.name.clone(),
        shard.index,
        log,
        config.flush,
        &info.config,
        now,
    ))
}

type OpenedStream = (String, StreamInfo, PathBuf, Vec<Shard>);

fn open_blocking(
    config: &BrokerConfig,
    remote: &tiering::RemoteRanges,
) -> Result<(MetaStore, OffsetStore, Vec<OpenedStream>), Error> {
    let streams_dir = config.data_dir.join("streams");
    std::fs::create_dir_all(&streams_dir).map_err(|source| {
        Error::Meta(shardline_meta::Error::Io {
            path: streams_dir.clone(),
            source,
        })
    })?;
    sweep_deleted(&streams_dir);
    let cluster_id = hex(&fresh_id("cluster"));
    let meta = MetaStore::open(&config.data_dir, &cluster_id)?;
    let mut opened = Vec::new();
    for record in meta.metadata().streams.values() {
        let info = stream_info(config, record)?;
        let dir = stream_dir(&config.data_dir, &info.name, &info.topic_id);
        let shards = open_shards(config, &info, &dir, remote)?;
        opened.push((record.name.clone(), info, dir, shards));
    }
    let mut offset_store = OffsetStore::open(&config.data_dir, OffsetStoreConfig::default())?;
    // A stream deleted by a run that stopped before dropping its offsets.
    let orphans = offsets::orphans(offset_store.offsets(), |stream, shard| {
        opened
            .iter()
            .any(|(name, info, _, _)| name == stream && (shard as usize) < info.shards.len())
    });
    if !orphans.is_empty() {
        offset_store.append(&orphans)?;
        offset_store.sync_handle().sync()?;
        info!(
            offsets = orphans.len(),
            "dropped committed offsets of deleted streams"
        );
    }
    Ok((meta, offset_store, opened))
}

fn sweep_deleted(streams_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(streams_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "deleting")
            && let Err(error) = std::fs::remove_dir_all(&path)
        {
            warn!(%error, dir = %path.display(), "could not sweep a deleted stream");
        }
    }
}

fn stream_info(config: &BrokerConfig, record: &StreamRecord) -> Result<StreamInfo, Error> {
    let corrupt =
        |what: String| Error::Internal(format!("metadata for stream {}: bad {what}", record.name));
    let topic_id = parse_hex16(&record.topic_id).ok_or_else(|| corrupt("topic id".to_owned()))?;
    let shards = record
        .shards
        .iter()
        .map(|shard| {
            Ok(ShardInfo {
                index: shard.index,
                range: HashKeyRange {
                    start: shard
                        .starting_hash_key
                        .parse()
                        .map_err(|error| corrupt(format!("hash key: {error}")))?,
                    end: shard
                        .ending_hash_key
                        .parse()
                        .map_err(|error| corrupt(format!("hash key: {error}")))?,
                },
                parent: shard.parent,
                adjacent_parent: shard.adjacent_parent,
                created_ms: shard.created_ms,
                closed_ms: shard.closed_ms,
                ending_offset: shard.ending_offset,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(StreamInfo {
        name: record.name.clone(),
        topic_id,
        created_ms: record.created_ms,
        shards,
        config: StreamConfig::resolve(&config.stream_defaults, &record.configs)?,
        explicit_configs: record.configs.clone(),
        tags: record.tags.clone(),
        scalings_ms: record.scalings_ms.clone(),
        status: StreamStatus::Active,
    })
}
