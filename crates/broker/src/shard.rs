//! One shard at run time: its log, its writer task, its high watermark and its waiters.
//!
//! Appends go through a bounded queue to one writer task per shard. The writer takes
//! everything queued (up to a cap), appends it under the log's write lock, releases the
//! lock, fsyncs once for the whole group, then publishes the new high watermark and
//! answers every producer in the group. Producers arriving during the fsync queue up and
//! form the next group: that is group commit, and it is why an fsync per request is not
//! paid on a busy shard.
//!
//! The log itself is the writer's: it sits behind a mutex that only the writer and the
//! maintenance passes (rolls, retention, close) take, always off the runtime. Readers
//! never take it: after every change the owner publishes an immutable [`LogView`]
//! (`arc-swap`), which readers load without a lock and read with positioned reads, so no
//! read waits for an append or a roll's fsyncs. Readers see records only below the high
//! watermark, so a consumer never reads a record that a crash could still take back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use shardline_core::batch::BatchHeader;
use shardline_core::throttle::TokenBucket;
use shardline_log::{LogView, ShardLog};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{error, warn};

use crate::producer::{BatchMark, ProducerStates, Verdict};
use crate::{CapacityMode, Error, FlushPolicy, StreamConfig};

/// Most appends folded into one group commit.
const GROUP_APPENDS_MAX: usize = 1024;
/// Most bytes folded into one group commit.
const GROUP_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
    /// First offset still kept.
    pub log_start_offset: u64,
    /// True when an idempotent retry was recognised and nothing new was stored.
    pub duplicate: bool,
}

pub(crate) struct AppendRequest {
    pub(crate) batch: BytesMut,
    pub(crate) header: BatchHeader,
    pub(crate) now_ms: i64,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome, Error>>,
}

/// Runtime state of one shard.
pub(crate) struct Shard {
    pub(crate) stream: String,
    pub(crate) index: u32,
    /// The writer's side of the log (see the module docs): never locked on the runtime.
    log: Mutex<ShardLog>,
    /// What readers use: the log as of its last change.
    view: ArcSwap<LogView>,
    producers: Mutex<ProducerStates>,
    /// Next offset a consumer may not yet read: everything below is durable.
    high_watermark: AtomicU64,
    /// Fetch requests waiting for this shard to grow.
    waiters: Mutex<Vec<Arc<Notify>>>,
    /// Set after a storage failure; every later append and read fails with it.
    failure: std::sync::OnceLock<String>,
    flush: FlushPolicy,
    /// Per-shard throughput limits (Kinesis' 1 MiB/s and 1,000 records/s in, 2 MiB/s out).
    limits: Mutex<Limits>,
    /// Serialises re-routed appends of a closed shard, so that an idempotent producer's
    /// retry is checked against the outcome of the attempt before it.
    pub(crate) reroute: tokio::sync::Mutex<()>,
    /// Bytes appended since on-demand scaling last looked (it swaps this to 0).
    pub(crate) window_bytes: AtomicU64,
    /// With tiering: the first offset held in the object store (`u64::MAX`: none), and
    /// the offset after the last one uploaded.
    remote_start: AtomicU64,
    remote_next: AtomicU64,
    /// Serialises what changes this shard's tiered state — the upload pass and retention
    /// (local and remote) — so that neither acts on a remote range or segment list the
    /// other has just changed (an upload writing back a start offset retention moved, or
    /// re-uploading a segment retention is deleting).
    pub(crate) tiering: tokio::sync::Mutex<()>,
    /// Set when this server must no longer upload to the shard's remote log or delete
    /// from it: another server took it over (restored from the bucket), or the stream is
    /// being deleted (so a pass that started before cannot upload after the delete).
    pub(crate) tier_stopped: AtomicBool,
}

/// The token buckets of one shard. A rate of 0 means unlimited.
#[derive(Debug)]
struct Limits {
    write_bytes: TokenBucket,
    write_records: TokenBucket,
    read_bytes: TokenBucket,
}

impl Limits {
    fn new(config: &StreamConfig, now_ms: i64) -> Limits {
        let rate = |value: u64| {
            if config.capacity_mode == CapacityMode::Unlimited {
                0
            } else {
                value
            }
        };
        // Capacity of one second's worth: a shard may burst up to its per-second limit.
        let bucket = |value: u64| TokenBucket::new(rate(value), rate(value), now_ms);
        Limits {
            write_bytes: bucket(config.shard_write_bytes_per_second),
            write_records: bucket(config.shard_write_records_per_second),
            read_bytes: bucket(config.shard_read_bytes_per_second),
        }
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("stream", &self.stream)
            .field("index", &self.index)
            .field(
                "high_watermark",
                &self.high_watermark.load(Ordering::Acquire),
            )
            .finish_non_exhaustive()
    }
}

/// Lock poisoning means a thread panicked mid-update; the shard's in-memory state is then
/// suspect, but the data on disk is not, so we keep serving rather than cascade panics.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shard {
    pub(crate) fn new(
        stream: String,
        index: u32,
        log: ShardLog,
        flush: FlushPolicy,
        config: &StreamConfig,
        now_ms: i64,
    ) -> Shard {
        let high_watermark = log.next_offset();
        let producers = rebuild_producer_states(&log);
        Shard {
            stream,
            index,
            view: ArcSwap::from_pointee(log.view()),
            log: Mutex::new(log),
            producers: Mutex::new(producers),
            high_watermark: AtomicU64::new(high_watermark),
            waiters: Mutex::new(Vec::new()),
            failure: std::sync::OnceLock::new(),
            flush,
            limits: Mutex::new(Limits::new(config, now_ms)),
            reroute: tokio::sync::Mutex::new(()),
            window_bytes: AtomicU64::new(0),
            remote_start: AtomicU64::new(u64::MAX),
            remote_next: AtomicU64::new(0),
            tiering: tokio::sync::Mutex::new(()),
            tier_stopped: AtomicBool::new(false),
        }
    }

    /// The idempotence verdict for a batch re-routed away from this (closed) shard.
    pub(crate) fn check_rerouted(&self, header: &BatchHeader) -> Verdict {
        if !header.has_producer_id() || header.base_sequence < 0 {
            return Verdict::Append;
        }
        lock(&self.producers).check(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            header.last_sequence(),
        )
    }

    /// Records that a batch re-routed away from this shard was stored elsewhere, so its
    /// retries are recognised. Its offsets are unknown here (`u64::MAX`).
    pub(crate) fn record_rerouted(&self, header: &BatchHeader) {
        if header.has_producer_id() && header.base_sequence >= 0 {
            lock(&self.producers).record(
                header.producer_id,
                header.producer_epoch,
                BatchMark {
                    first_sequence: header.base_sequence,
                    last_sequence: header.last_sequence(),
                    base_offset: u64::MAX,
                    last_offset: u64::MAX,
                },
            );
        }
    }

    /// Applies changed limits (after the stream's configs change).
    pub(crate) fn set_limits(&self, config: &StreamConfig, now_ms: i64) {
        *lock(&self.limits) = Limits::new(config, now_ms);
    }

    /// Charges a write of `bytes` in `records`. With `refuse`, a write over the limit is
    /// refused with the wait in ms and charges nothing (Kinesis); otherwise it is always
    /// charged and the delay that keeps the shard at its rate is returned (Kafka).
    pub(crate) fn charge_write(
        &self,
        bytes: u64,
        records: u64,
        now_ms: i64,
        refuse: bool,
    ) -> Result<u64, u64> {
        let mut limits = lock(&self.limits);
        if refuse {
            limits.write_bytes.try_take(now_ms, bytes)?;
            if let Err(wait) = limits.write_records.try_take(now_ms, records) {
                // Give the bytes back: the write did not happen.
                limits.write_bytes.give_back(bytes);
                return Err(wait);
            }
            self.window_bytes.fetch_add(bytes, Ordering::Relaxed);
            return Ok(0);
        }
        self.window_bytes.fetch_add(bytes, Ordering::Relaxed);
        let by_bytes = limits.write_bytes.take_with_delay(now_ms, bytes);
        let by_records = limits.write_records.take_with_delay(now_ms, records);
        Ok(by_bytes.max(by_records))
    }

    /// Charges a read of `bytes`, returning the delay that keeps the shard at its rate.
    pub(crate) fn charge_read(&self, bytes: u64, now_ms: i64) -> u64 {
        lock(&self.limits).read_bytes.take_with_delay(now_ms, bytes)
    }

    pub(crate) fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Records the object store's range of this shard, `[start, next)`, or none.
    pub(crate) fn set_remote_range(&self, range: Option<(u64, u64)>) {
        let (start, next) = range.unwrap_or((u64::MAX, 0));
        self.remote_start.store(start, Ordering::Release);
        self.remote_next.store(next, Ordering::Release);
    }

    /// The object store's range of this shard, if it holds any of it.
    pub(crate) fn remote_range(&self) -> Option<(u64, u64)> {
        let start = self.remote_start.load(Ordering::Acquire);
        (start != u64::MAX).then(|| (start, self.remote_next.load(Ordering::Acquire)))
    }

    /// The first offset readable anywhere: remote if the object store holds older
    /// records than the local log, else local.
    pub(crate) fn first_offset(&self) -> u64 {
        let local = self.log_start_offset();
        match self.remote_range() {
            Some((start, _)) => start.min(local),
            None => local,
        }
    }

    /// The first offset held on local disk.
    pub(crate) fn log_start_offset(&self) -> u64 {
        self.view.load().log_start_offset()
    }

    /// The log as of its last change, for readers: no lock, no waiting.
    pub(crate) fn view(&self) -> Arc<LogView> {
        self.view.load_full()
    }

    /// Runs `change` on the log, then publishes the log's new state to readers. Blocking
    /// (it may wait for the writer's group, and `change` does I/O): call off the runtime.
    pub(crate) fn with_log<R>(&self, change: impl FnOnce(&mut ShardLog) -> R) -> R {
        let mut log = lock(&self.log);
        let result = change(&mut log);
        self.view.store(Arc::new(log.view()));
        result
    }

    pub(crate) fn check_failed(&self) -> Result<(), Error> {
        match self.failure.get() {
            Some(reason) => Err(self.failed_error(reason.clone())),
            None => Ok(()),
        }
    }

    fn failed_error(&self, reason: String) -> Error {
        Error::ShardFailed {
            stream: self.stream.clone(),
            shard: self.index,
            reason,
        }
    }

    fn fail(&self, reason: String) {
        error!(stream = %self.stream, shard = self.index, %reason, "shard storage failed; shard is now unavailable");
        let _first_reason_stays = self.failure.set(reason);
    }

    /// Registers `notify` to be woken at the next high-watermark change.
    pub(crate) fn register_waiter(&self, notify: &Arc<Notify>) {
        let mut waiters = lock(&self.waiters);
        // A long-poll re-registers on every pass and an idle shard never empties the list
        // by waking it: drop the registrations whose fetch has finished (the list holds
        // the only reference), so the list stays as long as the fetches still waiting.
        waiters.retain(|waiter| Arc::strong_count(waiter) > 1);
        waiters.push(Arc::clone(notify));
    }

    #[cfg(test)]
    pub(crate) fn waiters_registered(&self) -> usize {
        lock(&self.waiters).len()
    }

    fn publish_high_watermark(&self, offset: u64) {
        self.high_watermark.fetch_max(offset, Ordering::AcqRel);
        let waiters = std::mem::take(&mut *lock(&self.waiters));
        for waiter in waiters {
            // notify_one stores a permit when nobody is waiting yet, so a waiter that
            // registered but has not started awaiting does not miss this wake-up.
            waiter.notify_one();
        }
    }

    /// Reads whole batches from `offset`, at most `max_bytes` except for a first batch
    /// larger than that, never past the high watermark. Blocking: call off the runtime.
    pub(crate) fn read_blocking(&self, offset: u64, max_bytes: usize) -> Result<Bytes, Error> {
        self.check_failed()?;
        // The view is published before the high watermark moves, so one loaded after
        // reading the watermark holds everything below it.
        let high_watermark = self.high_watermark();
        let log = self.view();
        let log_start_offset = log.log_start_offset();
        if offset < log_start_offset || offset > high_watermark {
            let first = self
                .remote_range()
                .map_or(log_start_offset, |(start, _)| start.min(log_start_offset));
            return Err(Error::OffsetOutOfRange {
                offset: offset as i64,
                log_start_offset: first,
                high_watermark,
            });
        }
        if offset == high_watermark {
            return Ok(Bytes::new());
        }
        Ok(log.read(offset, high_watermark, max_bytes)?)
    }

    /// Appends one group of requests and answers them. Blocking: call off the runtime.
    pub(crate) fn write_group_blocking(&self, group: Vec<AppendRequest>) {
        if let Some(reason) = self.failure.get().cloned() {
            for request in group {
                let _ = request.reply.send(Err(self.failed_error(reason.clone())));
            }
            return;
        }
        let mut answered = Vec::with_capacity(group.len());
        let sync_handle = self.with_log(|log| {
            let mut producers = lock(&self.producers);
            for mut request in group {
                // After a fatal log error the rest of the group is refused, not written
                // to a log in an unknown state.
                let outcome = match self.failure.get().cloned() {
                    Some(reason) => Err(self.failed_error(reason)),
                    None => self.append_one(log, &mut producers, &mut request),
                };
                if let Err(Error::Log(error)) = &outcome
                    && error.is_fatal()
                {
                    // The log refuses to be sealed or marked clean from now on, whoever
                    // asks (shutdown, retention, a reshard), so its next open scans it.
                    log.mark_failed();
                    self.fail(error.to_string());
                }
                answered.push((request.reply, outcome));
            }
            log.sync_handle()
        });
        let durable_next_offset = match self.flush {
            FlushPolicy::EveryAppend => match sync_handle.sync() {
                Ok(offset) => offset,
                Err(error) => {
                    // After a failed fsync the page cache state is unknown (fsyncgate):
                    // never acknowledge, and take the shard out of service.
                    let reason = error.to_string();
                    self.fail(reason.clone());
                    for (reply, _) in answered {
                        let _ = reply.send(Err(self.failed_error(reason.clone())));
                    }
                    return;
                }
            },
            FlushPolicy::Interval { .. } => sync_handle.next_offset(),
        };
        self.publish_high_watermark(durable_next_offset);
        for (reply, outcome) in answered {
            // A producer that hung up (acks=0, or a dropped connection) is fine.
            let _ = reply.send(outcome);
        }
    }

    fn append_one(
        &self,
        log: &mut ShardLog,
        producers: &mut ProducerStates,
        request: &mut AppendRequest,
    ) -> Result<AppendOutcome, Error> {
        let header = request.header;
        if header.has_producer_id() && header.base_sequence >= 0 {
            let verdict = producers.check(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.last_sequence(),
            );
            if let Some(mark) = verdict.admit(header.producer_id)? {
                return Ok(AppendOutcome {
                    base_offset: mark.base_offset,
                    last_offset: mark.last_offset,
                    log_start_offset: log.log_start_offset(),
                    duplicate: true,
                });
            }
        }
        let info = log.append(&mut request.batch, request.now_ms)?;
        if header.has_producer_id() && header.base_sequence >= 0 {
            producers.record(
                header.producer_id,
                header.producer_epoch,
                BatchMark {
                    first_sequence: header.base_sequence,
                    last_sequence: header.last_sequence(),
                    base_offset: info.base_offset,
                    last_offset: info.last_offset,
                },
            );
        }
        Ok(AppendOutcome {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_start_offset: log.log_start_offset(),
            duplicate: false,
        })
    }

    /// fsyncs everything written so far (the background flush of [`FlushPolicy::Interval`]).
    pub(crate) fn sync_now_blocking(&self) {
        let handle = lock(&self.log).sync_handle();
        if let Err(error) = handle.sync() {
            self.fail(error.to_string());
        }
    }
}

/// Rebuilds idempotent-producer state by walking the batch headers of the newest segment,
/// as Kafka does after an unclean shutdown. A producer whose last batch lies in an older
/// segment starts with no state, which Kafka (>= 2.5) also accepts.
fn rebuild_producer_states(log: &ShardLog) -> ProducerStates {
    let mut states = ProducerStates::default();
    let Some(newest) = log.segments().last().map(|segment| segment.base_offset) else {
        return states;
    };
    let end = log.next_offset();
    let mut offset = newest.max(log.log_start_offset());
    while offset < end {
        let chunk = match log.read(offset, end, 8 * 1024 * 1024) {
            Ok(chunk) if !chunk.is_empty() => chunk,
            Ok(_) => break,
            Err(error) => {
                warn!(%error, offset, "could not rebuild producer state past this offset");
                break;
            }
        };
        let mut next = offset;
        for item in shardline_core::batch::Batches::new(&chunk, false) {
            let Ok((header, _)) = item else { break };
            if header.has_producer_id() && header.base_sequence >= 0 {
                states.record(
                    header.producer_id,
                    header.producer_epoch,
                    BatchMark {
                        first_sequence: header.base_sequence,
                        last_sequence: header.last_sequence(),
                        base_offset: header.base_offset as u64,
                        last_offset: header.last_offset() as u64,
                    },
                );
            }
            next = header.last_offset() as u64 + 1;
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    states
}

/// The writer task of one shard: drains the queue into groups and commits each group.
pub(crate) async fn run_writer(shard: Arc<Shard>, mut queue: mpsc::Receiver<AppendRequest>) {
    while let Some(first) = queue.recv().await {
        let mut bytes = first.batch.len();
        let mut group = vec![first];
        while group.len() < GROUP_APPENDS_MAX && bytes < GROUP_BYTES_MAX {
            match queue.try_recv() {
                Ok(request) => {
                    bytes += request.batch.len();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        let worker = Arc::clone(&shard);
        if let Err(error) =
            tokio::task::spawn_blocking(move || worker.write_group_blocking(group)).await
        {
            shard.fail(format!("writer task panicked: {error}"));
        }
    }
}
