//! Creating and deleting streams, and finding a stream's shard by index.

use super::*;

impl Broker {
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
        self.check_total_shard_budget(shard_count as u32)?;
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
        self.edit_streams(|map| map.insert(info.name.clone(), stream));
        info!(stream = %info.name, shards = info.shards.len(), "stream created");
        Ok(info)
    }

    pub(crate) fn create_blocking(
        &self,
        info: &StreamInfo,
    ) -> Result<(PathBuf, Vec<Shard>), Error> {
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
            .edit_streams(|map| map.remove(name))
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
            self.edit_streams(|map| map.insert(name.to_owned(), stream));
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
        // A tiering pass may hold this stream from before it left the map: wait for any
        // upload in flight, and stop the shards so that none starts after the objects
        // are deleted (it would leave them orphaned in the bucket).
        for slot in &stream.shards {
            let _tiering = slot.shard.tiering.lock().await;
            slot.shard.tier_stopped.store(true, Ordering::Release);
        }
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

    pub(crate) fn shard(&self, stream: &str, shard: i64) -> Result<(Arc<Stream>, usize), Error> {
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
}
