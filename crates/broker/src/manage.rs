//! Changing streams after creation: resharding (split, merge, uniform scaling), routing
//! by hash key, per-stream settings, tags, and retention.
//!
//! Every change runs under the broker's admin lock, builds the stream's next version
//! (metadata and shard slots), saves the metadata durably, and only then swaps the new
//! version into the stream map, so readers see either the old or the new stream whole.
//!
//! A reshard closes its parents first: the parent's queue is closed, its writer drains
//! and fsyncs what was queued, and the offset after its last record becomes its ending
//! offset. The parent's log is then rolled so that retention can later delete all of it.
//! Children take the next free shard indexes, exactly as Kinesis numbers them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use shardline_core::reshard;
use shardline_core::{HashKey, HashKeyRange};
use tracing::{info, warn};

use crate::{
    Broker, CapacityMode, Error, ShardInfo, ShardSlot, Stream, StreamConfig, StreamInfo, lock,
    open_shard, shard_dir, stream_record,
};

/// A rolling day, for the scaling-rate limit.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Whole segments deleted.
    pub segments_deleted: usize,
    /// Shards whose log start offset moved.
    pub shards_trimmed: usize,
}

/// Kafka's `retention.bytes` rule, oldest segment first: with `over` bytes above the
/// limit (`None`: no limit), a segment of `size` bytes may go only if at least that many
/// are over, so what remains never drops below the limit.
pub(crate) fn over_by_at_least(over: Option<u64>, size: u64) -> bool {
    over.is_some_and(|over| over >= size)
}

impl Broker {
    pub(crate) fn current(&self, name: &str) -> Result<Arc<Stream>, Error> {
        self.streams_ref()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownStream(name.to_owned()))
    }

    /// Saves `info` as the stream's metadata, then publishes it with `slots`.
    async fn publish(
        &self,
        info: StreamInfo,
        dir: PathBuf,
        slots: Vec<Arc<ShardSlot>>,
    ) -> Result<Arc<Stream>, Error> {
        let record = stream_record(&info);
        let broker = self.clone();
        tokio::task::spawn_blocking(move || {
            lock(&broker.inner.meta)
                .update(|metadata| metadata.streams.insert(record.name.clone(), record))
                .map(drop)
        })
        .await
        .map_err(|error| Error::Internal(format!("metadata task failed: {error}")))??;
        let stream = Arc::new(Stream {
            info,
            dir,
            shards: slots,
        });
        self.edit_streams(|map| map.insert(stream.info.name.clone(), Arc::clone(&stream)));
        Ok(stream)
    }

    /// The open shard of `stream` that owns `key` (MD5 of a partition key, or an explicit
    /// hash key).
    pub fn route(&self, stream: &str, key: HashKey) -> Result<u32, Error> {
        let stream = self.current(stream)?;
        stream
            .info
            .shards
            .iter()
            .find(|shard| shard.is_open() && shard.range.contains(key))
            .map(|shard| shard.index)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "no open shard of {} owns hash key {key}",
                    stream.info.name
                ))
            })
    }

    /// The open shards of `stream`, in hash-key order.
    pub fn open_shards(&self, stream: &str) -> Result<Vec<ShardInfo>, Error> {
        let current = self.current(stream)?;
        Ok(open_by_range(&current))
    }

    /// Changes per-stream settings: `set` values (validated like CreateTopics configs)
    /// and `remove` names back to the broker default. With `validate_only`, checks and
    /// returns the result without changing anything.
    pub async fn alter_stream_configs(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
        validate_only: bool,
    ) -> Result<StreamInfo, Error> {
        self.check_running()?;
        let _busy = self.begin_change(name, crate::StreamStatus::Updating)?;
        let _admin = self.inner.admin.lock().await;
        let current = self.current(name)?;
        let mut explicit = current.info.explicit_configs.clone();
        for key in remove {
            explicit.remove(&key);
        }
        explicit.extend(set);
        let config = StreamConfig::resolve(&self.inner.config.stream_defaults, &explicit)?;
        let mut info = current.info.clone();
        info.config = config;
        info.explicit_configs = explicit;
        if validate_only {
            return Ok(info);
        }
        let now = self.now_ms();
        let stream = self
            .publish(info, current.dir.clone(), current.shards.clone())
            .await?;
        // Only once saved: a failed save leaves the old limits in force, as on disk.
        for slot in &current.shards {
            slot.shard.set_limits(&config, now);
        }
        info!(stream = name, "stream settings changed");
        Ok(stream.info.clone())
    }

    /// Adds and removes tags.
    pub async fn change_tags(
        &self,
        name: &str,
        add: BTreeMap<String, String>,
        remove: Vec<String>,
    ) -> Result<StreamInfo, Error> {
        self.check_running()?;
        let _admin = self.inner.admin.lock().await;
        let current = self.current(name)?;
        let mut info = current.info.clone();
        for key in remove {
            info.tags.remove(&key);
        }
        info.tags.extend(add);
        let stream = self
            .publish(info, current.dir.clone(), current.shards.clone())
            .await?;
        Ok(stream.info.clone())
    }

    /// Splits open shard `shard` at `new_starting_hash_key` (Kinesis SplitShard). Returns
    /// the two children's indexes, lower range first.
    pub async fn split_shard(
        &self,
        name: &str,
        shard: u32,
        new_starting_hash_key: u128,
    ) -> Result<(u32, u32), Error> {
        self.check_running()?;
        let _busy = self.begin_change(name, crate::StreamStatus::Updating)?;
        let _admin = self.inner.admin.lock().await;
        let current = self.current(name)?;
        let parent = open_shard_info(&current, shard)?;
        let (low, high) = reshard::split(parent.range, new_starting_hash_key)
            .map_err(|error| Error::InvalidReshard(error.to_string()))?;
        self.check_shard_budget(&current, 1)?;
        self.take_reshard_turn("SplitShard")?;
        let plan = vec![
            Child {
                range: low,
                parent: shard,
                adjacent_parent: None,
            },
            Child {
                range: high,
                parent: shard,
                adjacent_parent: None,
            },
        ];
        let children = self.reshard(&current, &[shard], plan, false).await?;
        Ok((children[0], children[1]))
    }

    /// Merges two adjacent open shards (Kinesis MergeShards). Returns the child's index.
    pub async fn merge_shards(&self, name: &str, shard: u32, adjacent: u32) -> Result<u32, Error> {
        self.check_running()?;
        let _busy = self.begin_change(name, crate::StreamStatus::Updating)?;
        let _admin = self.inner.admin.lock().await;
        let current = self.current(name)?;
        let first = open_shard_info(&current, shard)?;
        let second = open_shard_info(&current, adjacent)?;
        if shard == adjacent {
            return Err(Error::InvalidReshard(format!(
                "cannot merge shard {shard} with itself"
            )));
        }
        let range = reshard::merge(first.range, second.range)
            .map_err(|error| Error::InvalidReshard(error.to_string()))?;
        self.take_reshard_turn("MergeShards")?;
        let plan = vec![Child {
            range,
            parent: shard,
            adjacent_parent: Some(adjacent),
        }];
        let children = self
            .reshard(&current, &[shard, adjacent], plan, false)
            .await?;
        Ok(children[0])
    }

    /// Scales the stream to `target` open shards of equal hash ranges (Kinesis
    /// UpdateShardCount with UNIFORM_SCALING), by splitting and merging as AWS does, so
    /// that every child keeps at most two parents. Returns (open shards before, after).
    pub async fn update_shard_count(&self, name: &str, target: u32) -> Result<(u32, u32), Error> {
        self.check_running()?;
        let _busy = self.begin_change(name, crate::StreamStatus::Updating)?;
        let _admin = self.inner.admin.lock().await;
        let current = self.current(name)?;
        let open = open_by_range(&current);
        let count = open.len() as u32;
        let factor = self.inner.config.scaling_factor_max.max(1);
        if target == 0
            || target > count.saturating_mul(factor)
            || target.saturating_mul(factor) < count
        {
            return Err(Error::LimitExceeded(format!(
                "UpdateShardCount from {count} to {target} shards: the target must be between 1/{factor} and {factor} times the current open shard count"
            )));
        }
        if target > self.inner.config.shard_count_max {
            return Err(Error::LimitExceeded(format!(
                "UpdateShardCount to {target} exceeds the shard limit of {} (shard_count_max)",
                self.inner.config.shard_count_max
            )));
        }
        self.check_total_shard_budget(target.saturating_sub(count))?;
        let now = self.now_ms();
        let recent = current
            .info
            .scalings_ms
            .iter()
            .filter(|at| now - **at < DAY_MS)
            .count() as u32;
        if recent >= self.inner.config.scalings_per_day_max {
            return Err(Error::LimitExceeded(format!(
                "stream {name} was scaled {recent} times in the last 24 hours; the limit is {} (scalings_per_day_max)",
                self.inner.config.scalings_per_day_max
            )));
        }
        if target == count
            && open
                .iter()
                .map(|shard| shard.range)
                .eq(HashKeyRange::even_split(target))
        {
            return Ok((count, target));
        }
        let mut working = current;
        // Phase 1: split wherever a target boundary falls inside a shard.
        for boundary in HashKeyRange::even_split(target)
            .iter()
            .skip(1)
            .map(|range| range.start)
        {
            let owner = working
                .info
                .shards
                .iter()
                .find(|shard| {
                    shard.is_open()
                        && shard.range.contains(HashKey(boundary))
                        && shard.range.start != boundary
                })
                .cloned();
            if let Some(owner) = owner {
                let (low, high) = reshard::split(owner.range, boundary).map_err(|error| {
                    Error::InvalidReshard(format!(
                        "uniform scaling cannot split shard {}: {error}",
                        owner.index
                    ))
                })?;
                let plan = vec![
                    Child {
                        range: low,
                        parent: owner.index,
                        adjacent_parent: None,
                    },
                    Child {
                        range: high,
                        parent: owner.index,
                        adjacent_parent: None,
                    },
                ];
                self.reshard(&working, &[owner.index], plan, true).await?;
                working = self.current(name)?;
            }
        }
        // Phase 2: within each target range, merge neighbours until one shard is left.
        for target_range in HashKeyRange::even_split(target) {
            loop {
                let mut inside: Vec<ShardInfo> = working
                    .info
                    .shards
                    .iter()
                    .filter(|shard| {
                        shard.is_open()
                            && target_range.start <= shard.range.start
                            && shard.range.end <= target_range.end
                    })
                    .cloned()
                    .collect();
                if inside.len() < 2 {
                    break;
                }
                inside.sort_by_key(|shard| shard.range.start);
                let range = reshard::merge(inside[0].range, inside[1].range)
                    .map_err(|error| Error::InvalidReshard(error.to_string()))?;
                let plan = vec![Child {
                    range,
                    parent: inside[0].index,
                    adjacent_parent: Some(inside[1].index),
                }];
                self.reshard(&working, &[inside[0].index, inside[1].index], plan, true)
                    .await?;
                working = self.current(name)?;
            }
        }
        // Count the whole scaling once against the daily limit.
        let mut info = working.info.clone();
        info.scalings_ms.retain(|at| now - *at < DAY_MS);
        info.scalings_ms.push(now);
        self.publish(info, working.dir.clone(), working.shards.clone())
            .await?;
        info!(stream = name, from = count, to = target, "stream scaled");
        Ok((count, target))
    }

    /// Takes one of the `reshards_per_second_max` splits and merges a second allows.
    fn take_reshard_turn(&self, operation: &str) -> Result<(), Error> {
        let now = self.now_ms();
        lock(&self.inner.reshard_rate)
            .try_take(now, 1)
            .map_err(|wait_ms| {
                Error::LimitExceeded(format!(
                    "Rate exceeded for {operation}: at most {} splits and merges per second (reshards_per_second_max); try again in {wait_ms} ms",
                    self.inner.config.reshards_per_second_max
                ))
            })
    }

    /// Refuses `extra` more open shards past [`BrokerConfig::open_shards_total_max`]
    /// (counted over every stream). Call under the admin lock, so no other change can
    /// take the same room meanwhile.
    pub(crate) fn check_total_shard_budget(&self, extra: u32) -> Result<(), Error> {
        let open: usize = self
            .streams_ref()
            .values()
            .map(|stream| {
                stream
                    .info
                    .shards
                    .iter()
                    .filter(|shard| shard.is_open())
                    .count()
            })
            .sum();
        let limit = self.inner.config.open_shards_total_max;
        let wanted = (open as u64).saturating_add(u64::from(extra));
        if wanted > u64::from(limit) {
            return Err(Error::LimitExceeded(format!(
                "this would make {wanted} open shards over all streams; the limit is {limit} (open_shards_total_max)"
            )));
        }
        Ok(())
    }

    fn check_shard_budget(&self, stream: &Stream, extra: u32) -> Result<(), Error> {
        self.check_total_shard_budget(extra)?;
        let open = stream
            .info
            .shards
            .iter()
            .filter(|shard| shard.is_open())
            .count() as u32;
        if open + extra > self.inner.config.shard_count_max {
            return Err(Error::LimitExceeded(format!(
                "the stream would have {} open shards; the limit is {} (shard_count_max)",
                open + extra,
                self.inner.config.shard_count_max
            )));
        }
        Ok(())
    }

    /// Closes `parents`, creates `plan`'s children with the next free indexes, saves and
    /// publishes the new layout. Returns the children's indexes. `internal` steps of a
    /// uniform scaling skip nothing but the log line.
    ///
    /// All or nothing: the children are opened before any parent is touched, and if the
    /// new layout cannot be saved the parents get their writers back and the children
    /// are removed, so memory and disk keep the old layout and every shard it shows open
    /// takes appends.
    async fn reshard(
        &self,
        current: &Arc<Stream>,
        parents: &[u32],
        plan: Vec<Child>,
        internal: bool,
    ) -> Result<Vec<u32>, Error> {
        let now = self.now_ms();
        let mut info = current.info.clone();
        let first_index = info.shards.len() as u32;
        let mut children = Vec::with_capacity(plan.len());
        for (offset, child) in plan.into_iter().enumerate() {
            let index = first_index + offset as u32;
            info.shards.push(ShardInfo {
                index,
                range: child.range,
                parent: Some(child.parent),
                adjacent_parent: child.adjacent_parent,
                created_ms: now,
                closed_ms: None,
                ending_offset: None,
            });
            children.push(index);
        }
        let opened = self.open_children(&info, &current.dir, &children).await?;
        let mut slots = current.shards.clone();
        for shard in opened {
            slots.push(self.start_shard(shard, &info));
        }
        // Close the parents: no more appends, drain what is queued, note where they end.
        for parent in parents {
            let slot = Arc::clone(&current.shards[*parent as usize]);
            drop(slot.queue.swap(None));
            let writer = lock(&slot.writer).take();
            if let Some(writer) = writer {
                let _ = writer.await;
            }
            let shard = Arc::clone(&slot.shard);
            let ending = tokio::task::spawn_blocking(move || {
                shard.with_log(|log| {
                    // Seal everything so retention can delete the whole shard later.
                    if let Err(error) = log.roll_now(now) {
                        warn!(%error, "could not seal a closed shard's active segment");
                    }
                    log.next_offset()
                })
            })
            .await;
            let ending = match ending {
                Ok(ending) => ending,
                Err(error) => {
                    self.undo_reshard(current, parents, &slots, &children).await;
                    return Err(Error::Internal(format!("close task failed: {error}")));
                }
            };
            let record = &mut info.shards[*parent as usize];
            record.ending_offset = Some(ending);
            record.closed_ms = Some(now);
        }
        let name = info.name.clone();
        if let Err(error) = self.publish(info, current.dir.clone(), slots.clone()).await {
            warn!(stream = %name, %error, "reshard could not be saved; the old layout stays");
            self.undo_reshard(current, parents, &slots, &children).await;
            return Err(error);
        }
        if !internal {
            info!(stream = %name, parents = ?parents, children = ?children, "resharded");
        }
        Ok(children)
    }

    /// Opens the logs of new shards `children` of `info`. If one fails, the ones already
    /// made are removed again and nothing is left behind.
    async fn open_children(
        &self,
        info: &StreamInfo,
        dir: &std::path::Path,
        children: &[u32],
    ) -> Result<Vec<crate::shard::Shard>, Error> {
        let config = self.inner.config.clone();
        let opening = info.clone();
        let dir = dir.to_path_buf();
        let children = children.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut opened = Vec::with_capacity(children.len());
            for index in &children {
                match open_shard(&config, &opening, &dir, &opening.shards[*index as usize], 0) {
                    Ok(shard) => opened.push(shard),
                    Err(error) => {
                        drop(opened);
                        for index in &children {
                            remove_shard_dir(&dir, *index);
                        }
                        return Err(error);
                    }
                }
            }
            Ok(opened)
        })
        .await
        .map_err(|error| Error::Internal(format!("open task failed: {error}")))?
    }

    /// Undoes a reshard that could not be saved: the parents take appends again and the
    /// children's writers and directories go.
    async fn undo_reshard(
        &self,
        current: &Arc<Stream>,
        parents: &[u32],
        slots: &[Arc<ShardSlot>],
        children: &[u32],
    ) {
        for parent in parents {
            let slot = &current.shards[*parent as usize];
            if slot.queue.load().is_none() {
                self.restart_writer(slot);
            }
        }
        for child in children {
            let Some(slot) = slots.get(*child as usize) else {
                continue;
            };
            drop(slot.queue.swap(None));
            let writer = lock(&slot.writer).take();
            if let Some(writer) = writer {
                let _ = writer.await;
            }
        }
        let dir = current.dir.clone();
        let children = children.to_vec();
        // Unlinking files that are still open is fine; the children's last handles (in
        // the caller's `slots`) go when the reshard returns.
        let _ = tokio::task::spawn_blocking(move || {
            for child in children {
                remove_shard_dir(&dir, child);
            }
        })
        .await;
    }

    /// Deletes every whole segment whose newest record is older than its stream's
    /// retention at `now_ms`, and the oldest segments of a shard larger than its
    /// `retention.bytes`, moving log start offsets. A segment still taking appends is
    /// sealed first when all it holds has expired. Returns what was removed.
    ///
    /// The size rule is Kafka's: the oldest segment goes only while what remains is
    /// still at least `retention.bytes`, so a shard keeps between `retention.bytes` and
    /// that plus one segment. With tiering it counts local and remote bytes together and
    /// is applied to the remote segments (see `enforce_remote_retention`).
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport, Error> {
        let streams: Vec<Arc<Stream>> = self.streams_ref().values().cloned().collect();
        let mut report = RetentionReport::default();
        let mut first_error = None;
        for stream in streams {
            if self.stopping() {
                break;
            }
            let cutoff = now_ms.saturating_sub(stream.info.config.retention_ms);
            let bytes_max = u64::try_from(stream.info.config.retention_bytes).ok();
            // With tiering the local log alone never deletes by size: a segment deleted
            // before its upload would leave a gap in the remote copy.
            let local_bytes_max = if self.inner.tier.is_some() {
                None
            } else {
                bytes_max
            };
            for slot in &stream.shards {
                let _tiering = slot.shard.tiering.lock().await;
                let shard = Arc::clone(&slot.shard);
                let deleted = tokio::task::spawn_blocking(move || -> Result<usize, Error> {
                    shard.with_log(|log| {
                        let segments = log.segments();
                        let expired = |max: Option<i64>| max.is_some_and(|max| max < cutoff);
                        if let Some(active) = segments.last()
                            && active.size_bytes > 0
                            && expired(active.max_timestamp)
                        {
                            match log.roll_now(now_ms) {
                                Ok(_) => {}
                                // A closed log (shutdown under way): leave it for the next pass.
                                Err(shardline_log::Error::Closed { .. }) => return Ok(0),
                                // A failed log is never sealed (its next open scans it), but
                                // its sealed segments may still expire below.
                                Err(shardline_log::Error::Failed { .. }) => {}
                                Err(error) => return Err(error.into()),
                            }
                        }
                        let segments = log.segments();
                        let total: u64 = segments.iter().map(|segment| segment.size_bytes).sum();
                        let mut over = local_bytes_max.map(|max| total.saturating_sub(max));
                        // Oldest first, by age or size; the active segment always stays.
                        let keep_from = segments
                            .iter()
                            .take_while(|segment| {
                                let go = !segment.active
                                    && (expired(segment.max_timestamp)
                                        || over_by_at_least(over, segment.size_bytes));
                                if go {
                                    over = over.map(|over| over.saturating_sub(segment.size_bytes));
                                }
                                go
                            })
                            .last()
                            .map(|segment| segment.next_offset);
                        match keep_from {
                            Some(offset) => Ok(log.delete_segments_before(offset)?),
                            None => Ok(0),
                        }
                    })
                })
                .await
                .map_err(|error| Error::Internal(format!("retention task failed: {error}")))
                .and_then(|deleted| deleted);
                // One shard's failure must not stop retention of the others.
                let deleted = match deleted {
                    Ok(deleted) => deleted,
                    Err(error) => {
                        warn!(stream = %stream.info.name, shard = slot.shard.index, %error, "retention of a shard failed; the others go on");
                        self.inner
                            .pass_failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        first_error.get_or_insert(error);
                        continue;
                    }
                };
                if deleted > 0 {
                    report.segments_deleted += deleted;
                    report.shards_trimmed += 1;
                    info!(stream = %stream.info.name, shard = slot.shard.index, segments = deleted, "expired segments deleted");
                }
            }
            // Remote copies expire by the same age rule, and by retention.bytes. A store
            // that cannot be reached now must not stop the other streams' retention.
            match self
                .enforce_remote_retention(&stream, cutoff, bytes_max)
                .await
            {
                Ok(remote) => {
                    report.segments_deleted += remote.segments_deleted;
                    report.shards_trimmed += remote.shards_trimmed;
                }
                Err(error) => {
                    warn!(stream = %stream.info.name, %error, "remote retention failed; retrying at the next pass");
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// One pass of on-demand scaling over the last `elapsed_ms`: in each `on_demand`
    /// stream, split every open shard whose write rate reached the hot share of its limit
    /// (while under the shard maximum), else merge one pair of adjacent shards that both
    /// stayed cold (while above the minimum). Returns how many reshards it made.
    pub async fn autoscale(&self, elapsed_ms: u64) -> Result<usize, Error> {
        let policy = self.inner.config.on_demand;
        let elapsed_ms = elapsed_ms.max(1);
        let streams: Vec<Arc<Stream>> = self.streams_ref().values().cloned().collect();
        let mut reshards = 0;
        for stream in streams {
            if self.stopping() {
                break;
            }
            // Read (and reset) every shard's counter, so the next window starts clean.
            let rates: Vec<(ShardInfo, u64)> = stream
                .info
                .shards
                .iter()
                .filter(|shard| shard.is_open())
                .map(|shard| {
                    let bytes = stream.shards[shard.index as usize]
                        .shard
                        .window_bytes
                        .swap(0, std::sync::atomic::Ordering::Relaxed);
                    (shard.clone(), bytes.saturating_mul(1000) / elapsed_ms)
                })
                .collect();
            if stream.info.config.capacity_mode != CapacityMode::OnDemand {
                continue;
            }
            let limit = stream.info.config.shard_write_bytes_per_second;
            let hot = |rate: u64| {
                rate.saturating_mul(100) >= limit.saturating_mul(u64::from(policy.hot_percent))
            };
            let cold = |rate: u64| {
                rate.saturating_mul(100) <= limit.saturating_mul(u64::from(policy.cold_percent))
            };
            let mut open_count = rates.len() as u32;
            let mut split_any = false;
            for (shard, rate) in &rates {
                if hot(*rate) && open_count < policy.shards_max {
                    let Some(middle) = reshard::midpoint(shard.range) else {
                        continue;
                    };
                    self.split_shard(&stream.info.name, shard.index, middle)
                        .await?;
                    info!(stream = %stream.info.name, shard = shard.index, rate_bytes_per_second = rate, "on-demand split of a hot shard");
                    open_count += 1;
                    reshards += 1;
                    split_any = true;
                }
            }
            if split_any || open_count <= policy.shards_min {
                continue;
            }
            let mut by_range = rates.clone();
            by_range.sort_by_key(|(shard, _)| shard.range.start);
            if let Some(pair) = by_range.windows(2).find(|pair| {
                cold(pair[0].1)
                    && cold(pair[1].1)
                    && pair[0].0.range.end.checked_add(1) == Some(pair[1].0.range.start)
            }) {
                self.merge_shards(&stream.info.name, pair[0].0.index, pair[1].0.index)
                    .await?;
                info!(stream = %stream.info.name, shards = ?(pair[0].0.index, pair[1].0.index), "on-demand merge of cold neighbours");
                reshards += 1;
            }
        }
        Ok(reshards)
    }

    /// Whether a closed shard has expired at `now_ms`: every record it held is deleted,
    /// and a retention period has passed since it closed (so a shard closed empty does
    /// not vanish at once). Kinesis then drops it from ListShards; Kafka keeps the
    /// partition, empty, because partitions never disappear.
    pub fn is_expired(&self, stream: &str, shard: u32, now_ms: i64) -> Result<bool, Error> {
        let current = self.current(stream)?;
        let info = current
            .info
            .shards
            .get(shard as usize)
            .ok_or_else(|| Error::UnknownShard {
                stream: stream.to_owned(),
                shard: i64::from(shard),
            })?;
        Ok(match (info.ending_offset, info.closed_ms) {
            (Some(ending), Some(closed_ms)) => {
                current.shards[shard as usize].shard.first_offset() >= ending
                    && now_ms.saturating_sub(closed_ms) >= current.info.config.retention_ms
            }
            _ => false,
        })
    }

    /// Whether the stream's capacity is managed by the broker (on-demand scaling).
    pub fn capacity_mode(&self, stream: &str) -> Result<CapacityMode, Error> {
        Ok(self.current(stream)?.info.config.capacity_mode)
    }
}

/// A child shard to create.
struct Child {
    range: HashKeyRange,
    parent: u32,
    adjacent_parent: Option<u32>,
}

/// The open shards of `stream`, in hash-key order.
/// Removes a shard directory made for a reshard that did not happen (best effort: an
/// empty leftover would only be opened again by the next reshard taking that index).
fn remove_shard_dir(stream_dir: &std::path::Path, index: u32) {
    let dir = shard_dir(stream_dir, index);
    if let Err(error) = std::fs::remove_dir_all(&dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        warn!(%error, dir = %dir.display(), "could not remove an abandoned shard directory");
    }
}

fn open_by_range(stream: &Stream) -> Vec<ShardInfo> {
    let mut open: Vec<ShardInfo> = stream
        .info
        .shards
        .iter()
        .filter(|shard| shard.is_open())
        .cloned()
        .collect();
    open.sort_by_key(|shard| shard.range.start);
    open
}

fn open_shard_info(stream: &Stream, shard: u32) -> Result<ShardInfo, Error> {
    let info = stream
        .info
        .shards
        .get(shard as usize)
        .ok_or_else(|| Error::UnknownShard {
            stream: stream.info.name.clone(),
            shard: i64::from(shard),
        })?;
    if !info.is_open() {
        return Err(Error::InvalidReshard(format!(
            "shard {} in stream {} has already been merged or split, and thus is not eligible for merging or splitting",
            shardline_core::ShardId(shard),
            stream.info.name
        )));
    }
    Ok(info.clone())
}

#[cfg(test)]
mod tests;
