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
//! Where things are:
//! - this file: the types fronts see, the engine's shared state, writers and background
//!   tasks, shutdown;
//! - `open`: opening and recovering the data directory, on-disk names;
//! - `streams`: creating and deleting streams; `manage`: changing them (reshards,
//!   settings, tags, retention, on-demand scaling); `reroute`: records sent to a closed
//!   shard;
//! - `data`: appends, reads, offsets, long-poll wake-ups, producer ids; `shard`: one
//!   shard's writer, idempotence state and limits; `producer`: sequence checks;
//! - `offsets`: committed group offsets; `tiering`: the object store; `clock`: time.
//!
//! Depends on core, records, log, meta and tier.

mod clock;
mod config;
mod data;
mod error;
mod manage;
mod offsets;
mod open;
mod producer;
mod reroute;
mod shard;
mod streams;
mod tiering;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
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
use open::{open_shard, open_shards, shard_dir, stream_dir, stream_record};
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
    /// The writer's queue; `None` while the shard has no writer. Loaded without a lock
    /// on every append; a loaded sender keeps the queue open until it is dropped.
    queue: arc_swap::ArcSwapOption<mpsc::Sender<AppendRequest>>,
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
    /// Every stream, as one immutable map that readers load without a lock; a change
    /// edits a copy and swaps it in (see [`Broker::edit_streams`]).
    streams: arc_swap::ArcSwap<BTreeMap<String, Arc<Stream>>>,
    /// Serialises edits of `streams` (readers never take it).
    streams_edit: Mutex<()>,
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
    /// SplitShard / MergeShards calls allowed (`reshards_per_second_max`).
    reshard_rate: Mutex<shardline_core::throttle::TokenBucket>,
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
        let streams = self.streams.load();
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
    /// Now, by the broker's clock ([`BrokerConfig::clock`]): what fronts use for
    /// timestamps and expiries, so that one clock rules everything time-dependent.
    pub fn now_ms(&self) -> i64 {
        self.inner.config.clock.now_ms()
    }

    /// Every stream as of now: no lock, no waiting for a change in progress.
    fn streams_ref(&self) -> Arc<BTreeMap<String, Arc<Stream>>> {
        self.inner.streams.load_full()
    }

    /// Applies `edit` to a copy of the stream map and swaps the copy in. The copy costs
    /// one reference count per stream, paid only by metadata changes.
    fn edit_streams<R>(&self, edit: impl FnOnce(&mut BTreeMap<String, Arc<Stream>>) -> R) -> R {
        let _one_edit_at_a_time = lock(&self.inner.streams_edit);
        let mut streams = BTreeMap::clone(&self.inner.streams.load());
        let result = edit(&mut streams);
        self.inner.streams.store(Arc::new(streams));
        result
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
            queue: arc_swap::ArcSwapOption::from(queue.map(Arc::new)),
            writer: Mutex::new(writer),
        })
    }

    /// Gives an open shard whose writer was stopped a new queue and writer: how a close
    /// that could not be saved is undone.
    fn restart_writer(&self, slot: &ShardSlot) {
        let (sender, receiver) = mpsc::channel(self.inner.config.shard_queue_depth);
        let writer = tokio::spawn(shard::run_writer(Arc::clone(&slot.shard), receiver));
        slot.queue.store(Some(Arc::new(sender)));
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
                    match slot.shard.with_log(ShardLog::close) {
                        Ok(()) => {}
                        Err(shardline_log::Error::Failed { .. }) => {
                            warn!(stream = %stream.info.name, shard = slot.shard.index, "shard had a storage failure: not marked clean, its next start scans it");
                        }
                        Err(error) => {
                            warn!(stream = %stream.info.name, shard = slot.shard.index, %error, "clean close failed; recovery will scan on next start");
                        }
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
        drop(slot.queue.swap(None));
        let writer = lock(&slot.writer).take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}
