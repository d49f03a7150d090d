//! Committed consumer-group offsets at run time: the group-committing writer in front of
//! [`shardline_meta::OffsetStore`], and the map that readers see.
//!
//! Every change (commit, delete, expiry, a deleted stream's cleanup) goes through a bounded
//! queue to one writer task. The writer takes everything queued (up to a cap), turns each
//! request into store records against the store's current state, appends them all, then
//! fsyncs once for the whole group in `spawn_blocking`, so N concurrent commits from
//! different groups and connections share one fsync. Requests arriving during the fsync
//! form the next group.
//!
//! Visibility: readers ([`Broker::committed_offset`] and friends) read a separate map that
//! the writer updates only after the fsync succeeded. A commit is therefore never visible
//! before it is durable, and a reader never waits for an fsync. The store's own map runs
//! ahead of it by at most the group being written. Keeping two maps doubles the memory of
//! the offsets, which is small (about 100 bytes per group and partition).
//!
//! Failure: after a failed write or fsync the state of the file is unknown (fsyncgate), so
//! every request of that group fails, nothing of it becomes visible, and every later
//! request fails too, until a restart replays the file. A failure is never reported as
//! success; a request reported as failed may still turn out to be stored.
//!
//! [`Broker::committed_offset`]: crate::Broker::committed_offset

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock, Weak};

use shardline_meta::{OffsetMap, OffsetRecord, OffsetStore};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use crate::{Broker, Error, Inner, lock};

/// Requests queued for the writer before callers wait (backpressure).
pub(crate) const OFFSET_QUEUE_DEPTH: usize = 1024;
/// Most requests folded into one group commit.
const GROUP_REQUESTS_MAX: usize = 1024;
/// Longest group id accepted: Kafka's own string limit.
pub const GROUP_ID_BYTES_MAX: usize = i16::MAX as usize;
/// Largest commit metadata accepted. Kafka's `offset.metadata.max.bytes` defaults to 4096
/// and is the coordinator's to enforce per partition; this is the engine's backstop, well
/// under the store's record limit.
pub const OFFSET_METADATA_BYTES_MAX: usize = 64 * 1024;

/// One group's committed position in one shard: the store's own type.
pub use shardline_meta::CommittedOffset;

/// A change asked of the writer. Deletions are planned against the store's state when the
/// writer gets to them, so they see every change queued before them.
#[derive(Debug)]
pub(crate) enum Change {
    Commit {
        group: String,
        offsets: Vec<(String, u32, CommittedOffset)>,
    },
    Delete {
        group: String,
        partitions: Vec<(String, u32)>,
    },
    DeleteGroup {
        group: String,
    },
    Expire {
        group: String,
        now_ms: i64,
        retention_ms: i64,
    },
    /// Drops every group's offsets in a deleted stream.
    DropStream {
        stream: String,
    },
}

/// A change and where to send its result: the number of offsets written or removed.
#[derive(Debug)]
pub(crate) struct OffsetRequest {
    pub(crate) change: Change,
    pub(crate) reply: oneshot::Sender<Result<usize, Error>>,
}

/// Run-time state of the committed offsets.
#[derive(Debug)]
pub(crate) struct Offsets {
    /// What readers see: only changes whose fsync succeeded.
    durable: RwLock<OffsetMap>,
    /// Used by the writer only (and by shutdown, after the writer has stopped); the mutex
    /// lets the writer hand it to `spawn_blocking`. `None` once closed.
    store: Mutex<Option<OffsetStore>>,
    /// Set after a storage failure; every later request fails with it.
    failure: Mutex<Option<String>>,
    /// Group commits done, so tests can see that concurrent commits share fsyncs.
    #[cfg(test)]
    pub(crate) syncs: std::sync::atomic::AtomicU64,
}

impl Offsets {
    pub(crate) fn new(store: OffsetStore) -> Offsets {
        Offsets {
            durable: RwLock::new(store.offsets().clone()),
            store: Mutex::new(Some(store)),
            failure: Mutex::new(None),
            #[cfg(test)]
            syncs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The durable map, for reading.
    pub(crate) fn durable(&self) -> std::sync::RwLockReadGuard<'_, OffsetMap> {
        self.durable
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store, to close it once the writer has stopped.
    pub(crate) fn take_store(&self) -> Option<OffsetStore> {
        lock(&self.store).take()
    }

    pub(crate) fn check_failed(&self) -> Result<(), Error> {
        match lock(&self.failure).as_ref() {
            Some(reason) => Err(failed_error(reason)),
            None => Ok(()),
        }
    }

    pub(crate) fn fail(&self, reason: String) {
        error!(%reason, "committed-offsets storage failed; offset commits are unavailable until restart");
        lock(&self.failure).get_or_insert(reason);
    }

    /// Writes one group of requests, fsyncs once, publishes, answers. Blocking: call off
    /// the runtime. `inner` is used to check that committed-to shards still exist.
    fn write_group_blocking(&self, inner: &Weak<Inner>, group: Vec<OffsetRequest>) {
        if let Some(reason) = lock(&self.failure).clone() {
            for request in group {
                let _ = request.reply.send(Err(failed_error(&reason)));
            }
            return;
        }
        let mut store_slot = lock(&self.store);
        let Some(store) = store_slot.as_mut() else {
            for request in group {
                let _ = request.reply.send(Err(Error::ShuttingDown));
            }
            return;
        };
        let mut written = Vec::with_capacity(group.len());
        let mut appended_any = false;
        let mut failure: Option<String> = None;
        for request in group {
            if let Some(reason) = &failure {
                let _ = request.reply.send(Err(failed_error(reason)));
                continue;
            }
            let (records, count) = match plan(store.offsets(), inner, request.change) {
                Ok(planned) => planned,
                Err(error) => {
                    let _ = request.reply.send(Err(error));
                    continue;
                }
            };
            if records.is_empty() {
                written.push((request.reply, records, count));
                continue;
            }
            match store.append(&records) {
                Ok(()) => {
                    appended_any = true;
                    written.push((request.reply, records, count));
                }
                Err(error) => {
                    // A record too large leaves the store untouched and fails this request
                    // alone; any other error failed the store, and with it the whole group.
                    if store.failure().is_some() {
                        failure = Some(error.to_string());
                    }
                    let _ = request.reply.send(Err(error.into()));
                }
            }
        }
        let sync_handle = appended_any.then(|| store.sync_handle());
        drop(store_slot);
        if failure.is_none()
            && let Some(sync_handle) = sync_handle
        {
            #[cfg(test)]
            self.syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(error) = sync_handle.sync() {
                failure = Some(error.to_string());
            }
        }
        if let Some(reason) = failure {
            self.fail(reason.clone());
            for (reply, _, _) in written {
                let _ = reply.send(Err(failed_error(&reason)));
            }
            return;
        }
        {
            let mut durable = self
                .durable
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (_, records, _) in &written {
                for record in records {
                    record.apply_to(&mut durable);
                }
            }
        }
        for (reply, _, count) in written {
            // A caller that went away (a dropped connection) is fine.
            let _ = reply.send(Ok(count));
        }
        self.compact_if_needed_blocking();
    }

    /// Compacts after the group was answered, so that no caller waits for it.
    fn compact_if_needed_blocking(&self) {
        let mut store_slot = lock(&self.store);
        let Some(store) = store_slot.as_mut() else {
            return;
        };
        if !store.needs_compaction() {
            return;
        }
        if let Err(error) = store.compact() {
            if store.failure().is_some() {
                drop(store_slot);
                self.fail(error.to_string());
            } else {
                warn!(%error, "compacting committed offsets failed; will retry after more commits");
            }
        }
    }
}

fn failed_error(reason: &str) -> Error {
    Error::OffsetsFailed {
        reason: reason.to_owned(),
    }
}

/// Turns a change into store records against the current state `offsets`; also returns
/// the number of offsets the change writes or removes.
fn plan(
    offsets: &OffsetMap,
    inner: &Weak<Inner>,
    change: Change,
) -> Result<(Vec<OffsetRecord>, usize), Error> {
    let records: Vec<OffsetRecord> = match change {
        Change::Commit {
            group,
            offsets: commits,
        } => {
            // Checked again here, in queue order: a stream deleted after the caller's check
            // has had its offsets dropped by a request queued before this one, so writing
            // these would leave offsets nothing ever deletes.
            let inner = inner.upgrade().ok_or(Error::ShuttingDown)?;
            for (stream, shard, _) in &commits {
                inner.check_shard(stream, *shard)?;
            }
            commits
                .into_iter()
                .map(|(stream, shard, committed)| OffsetRecord::Commit {
                    group: group.clone(),
                    stream,
                    shard,
                    committed,
                })
                .collect()
        }
        Change::Delete { group, partitions } => {
            let Some(entries) = offsets.get(&group) else {
                return Ok((Vec::new(), 0));
            };
            // A set, so that a partition named twice is deleted (and counted) once.
            let partitions: BTreeSet<(String, u32)> = partitions.into_iter().collect();
            partitions
                .into_iter()
                .filter(|key| entries.contains_key(key))
                .map(|(stream, shard)| OffsetRecord::DeleteOffsets {
                    group: group.clone(),
                    stream,
                    shard,
                })
                .collect()
        }
        Change::DeleteGroup { group } => match offsets.get(&group) {
            Some(entries) => {
                let count = entries.len();
                return Ok((vec![OffsetRecord::DeleteGroup { group }], count));
            }
            None => Vec::new(),
        },
        Change::Expire {
            group,
            now_ms,
            retention_ms,
        } => offsets
            .get(&group)
            .into_iter()
            .flatten()
            .filter(|(_, committed)| {
                committed.commit_timestamp_ms.saturating_add(retention_ms) <= now_ms
            })
            .map(|((stream, shard), _)| OffsetRecord::DeleteOffsets {
                group: group.clone(),
                stream: stream.clone(),
                shard: *shard,
            })
            .collect(),
        Change::DropStream { stream } => offsets
            .iter()
            .flat_map(|(group, entries)| {
                entries
                    .keys()
                    .filter(|(entry_stream, _)| *entry_stream == stream)
                    .map(|(entry_stream, shard)| OffsetRecord::DeleteOffsets {
                        group: group.clone(),
                        stream: entry_stream.clone(),
                        shard: *shard,
                    })
            })
            .collect(),
    };
    let count = records.len();
    Ok((records, count))
}

/// Records that drop offsets of shards that no longer exist, according to `shard_exists`.
/// Used at open, for streams deleted by a run that crashed before dropping their offsets.
pub(crate) fn orphans(
    offsets: &OffsetMap,
    shard_exists: impl Fn(&str, u32) -> bool,
) -> Vec<OffsetRecord> {
    offsets
        .iter()
        .flat_map(|(group, entries)| {
            entries
                .keys()
                .filter(|(stream, shard)| !shard_exists(stream, *shard))
                .map(|(stream, shard)| OffsetRecord::DeleteOffsets {
                    group: group.clone(),
                    stream: stream.clone(),
                    shard: *shard,
                })
        })
        .collect()
}

/// The writer task: drains the queue into groups and commits each group. `inner` is only
/// used to check that shards still exist; the writer does not keep the broker alive.
pub(crate) async fn run_writer(
    offsets: Arc<Offsets>,
    inner: Weak<Inner>,
    mut queue: mpsc::Receiver<OffsetRequest>,
) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_REQUESTS_MAX {
            match queue.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let worker = Arc::clone(&offsets);
        let inner = inner.clone();
        if let Err(error) =
            tokio::task::spawn_blocking(move || worker.write_group_blocking(&inner, group)).await
        {
            offsets.fail(format!("offsets writer panicked: {error}"));
        }
    }
}

impl Broker {
    /// Durably stores the offsets (fsync'd, group-committed with concurrent commits from
    /// other groups and connections) before returning; they are visible to
    /// [`Broker::committed_offset`] from the moment they are durable. An unknown stream or
    /// shard fails the whole call with [`Error::UnknownStream`] / [`Error::UnknownShard`],
    /// and so does a group id or metadata over the limits
    /// ([`Error::OffsetCommitTooLarge`]); nothing is written then. A shard named twice
    /// ends with the later offset.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, u32, CommittedOffset)>,
    ) -> Result<(), Error> {
        self.check_running()?;
        check_group(group)?;
        for (stream, shard, committed) in &offsets {
            self.inner.check_shard(stream, *shard)?;
            let metadata_bytes = committed.metadata.as_ref().map_or(0, String::len);
            if metadata_bytes > OFFSET_METADATA_BYTES_MAX {
                return Err(Error::OffsetCommitTooLarge {
                    field: "metadata",
                    size_bytes: metadata_bytes,
                    limit_bytes: OFFSET_METADATA_BYTES_MAX,
                });
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        self.submit_offsets(Change::Commit {
            group: group.to_owned(),
            offsets,
        })
        .await
        .map(|_committed| ())
    }

    /// The durable committed offset of `group` in one shard, if any.
    pub fn committed_offset(
        &self,
        group: &str,
        stream: &str,
        shard: u32,
    ) -> Option<CommittedOffset> {
        self.inner
            .offsets
            .durable()
            .get(group)?
            .get(&(stream.to_owned(), shard))
            .cloned()
    }

    /// Every durable committed offset of `group`, sorted by stream, then shard.
    pub fn committed_offsets(&self, group: &str) -> Vec<(String, u32, CommittedOffset)> {
        self.inner
            .offsets
            .durable()
            .get(group)
            .into_iter()
            .flatten()
            .map(|((stream, shard), committed)| (stream.clone(), *shard, committed.clone()))
            .collect()
    }

    /// Every group with at least one durable committed offset, sorted.
    pub fn groups_with_committed_offsets(&self) -> Vec<String> {
        self.inner.offsets.durable().keys().cloned().collect()
    }

    /// Whether `group` has any durable committed offset (without copying them).
    pub fn has_committed_offsets(&self, group: &str) -> bool {
        self.inner
            .offsets
            .durable()
            .get(group)
            .is_some_and(|offsets| !offsets.is_empty())
    }

    /// Durably deletes the offsets of `group` in the given shards. Shards without an offset
    /// are skipped; streams and shards need not exist any more.
    pub async fn delete_committed_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, u32)>,
    ) -> Result<(), Error> {
        if partitions.is_empty() {
            return self.check_running();
        }
        self.submit_offsets(Change::Delete {
            group: group.to_owned(),
            partitions,
        })
        .await
        .map(|_deleted| ())
    }

    /// Durably deletes every offset of `group`.
    pub async fn delete_group_offsets(&self, group: &str) -> Result<(), Error> {
        self.submit_offsets(Change::DeleteGroup {
            group: group.to_owned(),
        })
        .await
        .map(|_deleted| ())
    }

    /// Durably deletes the offsets of `group` whose `commit_timestamp_ms + retention_ms <=
    /// now_ms` (Kafka's `offsets.retention.minutes` rule; the coordinator calls this only
    /// for empty groups) and returns how many were removed. The check runs in order with
    /// other changes, so a commit made just before is never expired by its old timestamp.
    pub async fn expire_committed_offsets(
        &self,
        group: &str,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<usize, Error> {
        self.submit_offsets(Change::Expire {
            group: group.to_owned(),
            now_ms,
            retention_ms,
        })
        .await
    }
}

fn check_group(group: &str) -> Result<(), Error> {
    if group.len() > GROUP_ID_BYTES_MAX {
        return Err(Error::OffsetCommitTooLarge {
            field: "group id",
            size_bytes: group.len(),
            limit_bytes: GROUP_ID_BYTES_MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
