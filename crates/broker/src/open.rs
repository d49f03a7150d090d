//! Opening the data directory: recovering every shard's log and the committed offsets,
//! rebuilding from the bucket when the directory is new, and starting writers and
//! background passes. Also the on-disk names of streams and shards, and the conversion
//! between the engine's stream description and `meta`'s record of it.

use super::*;

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
        let reshard_rate = shardline_core::throttle::TokenBucket::new(
            u64::from(config.reshards_per_second_max),
            u64::from(config.reshards_per_second_max),
            config.clock.now_ms(),
        );
        let (offsets_sender, offsets_receiver) = mpsc::channel(offsets::OFFSET_QUEUE_DEPTH);
        let broker = Broker {
            inner: Arc::new(Inner {
                config,
                cluster_id,
                meta: Mutex::new(meta),
                streams: arc_swap::ArcSwap::from_pointee(BTreeMap::new()),
                streams_edit: Mutex::new(()),
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
                reshard_rate: Mutex::new(reshard_rate),
                busy: Mutex::new(BTreeMap::new()),
                tier,
                snapshots: Mutex::new(tiering::Snapshots::default()),
            }),
        };
        broker.edit_streams(|map| {
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
        });
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
}

pub(crate) fn stream_dir(data_dir: &Path, name: &str, topic_id: &[u8; 16]) -> PathBuf {
    data_dir
        .join("streams")
        .join(format!("{name}-{}", hex(&topic_id[..4])))
}

pub(crate) fn stream_record(info: &StreamInfo) -> StreamRecord {
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

pub(crate) fn open_shards(
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
pub(crate) fn shard_dir(stream_dir: &Path, index: u32) -> PathBuf {
    stream_dir.join(format!("{index:06}"))
}

/// Opens (creating if new) the log of one shard of `info`, recovering it if needed.
pub(crate) fn open_shard(
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
