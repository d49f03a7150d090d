//! Cold mode.

use super::*;

/// Cold mode: a Kafka consumer should read tiered data at least this fraction of the
/// speed of reading the same objects directly (sequential 1 MiB ranged GETs)...
pub(crate) const TARGET_COLD_VS_DIRECT: f64 = 0.8;
/// ...a second pass through the warm block cache at least this many times the cold one...
pub(crate) const TARGET_WARM_VS_COLD: f64 = 5.0;
/// ...and the server's peak RSS within the cache size plus this much.
pub(crate) const TARGET_COLD_RSS_OVERHEAD_MIB: f64 = 256.0;

/// Cold mode with `--cold-store s3`: the bucket and prefix the server tiers to.
pub(crate) const COLD_BUCKET: &str = "shardline-bench";
pub(crate) const COLD_PREFIX: &str = "cold";

/// The server's `[tier]` settings for a cold-mode run: the default object store,
/// `file://<data_dir>/objects`, or the S3 endpoint `s3` under `COLD_BUCKET/COLD_PREFIX`.
pub(crate) fn cold_server_config(args: &Args, s3: Option<&S3Server>) -> String {
    let mut text = format!(
        "# Written by shardline-bench --mode cold.\n[tier]\nenabled = true\nupload_interval_ms = {}\ncache_bytes_max = {}\n",
        args.cold_upload_interval_ms, args.cold_cache_bytes
    );
    if let Some(s3) = s3 {
        text.push_str(&format!(
            "url = \"s3://{COLD_BUCKET}/{COLD_PREFIX}\"\nendpoint = \"http://{}\"\nregion = \"us-east-1\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\n",
            s3.addr,
            S3Server::ACCESS_KEY,
            S3Server::SECRET_KEY
        ));
    }
    text
}

/// The store the server tiers to, opened by this process with the same client library
/// (`object_store`), for the baselines.
pub(crate) struct BaselineStore {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: object_store::path::Path,
    pub(crate) url: String,
}

impl BaselineStore {
    pub(crate) fn open(data_dir: &Path, s3: Option<&S3Server>) -> anyhow::Result<BaselineStore> {
        Ok(match s3 {
            None => {
                let dir = std::path::absolute(data_dir.join("objects"))?;
                BaselineStore {
                    store: Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir)?),
                    prefix: object_store::path::Path::default(),
                    url: format!("file://{}", dir.display()),
                }
            }
            Some(s3) => BaselineStore {
                store: Arc::new(
                    object_store::aws::AmazonS3Builder::new()
                        .with_bucket_name(COLD_BUCKET)
                        .with_endpoint(format!("http://{}", s3.addr))
                        .with_region("us-east-1")
                        .with_access_key_id(S3Server::ACCESS_KEY)
                        .with_secret_access_key(S3Server::SECRET_KEY)
                        .with_allow_http(true)
                        .with_virtual_hosted_style_request(false)
                        .build()?,
                ),
                prefix: object_store::path::Path::from(COLD_PREFIX),
                url: format!("s3://{COLD_BUCKET}/{COLD_PREFIX} at http://{}", s3.addr),
            },
        })
    }

    /// Every `.log` object (uploaded segment), in key order.
    pub(crate) async fn segment_objects(&self) -> anyhow::Result<Vec<object_store::ObjectMeta>> {
        use futures::TryStreamExt as _;
        let mut objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .context("listing the object store")?;
        objects.retain(|object| object.location.as_ref().ends_with(".log"));
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// Baseline A: every object read sequentially in 1 MiB ranged GETs, one at a time.
    /// Returns (bytes, time).
    pub(crate) async fn read_objects(
        &self,
        objects: &[object_store::ObjectMeta],
    ) -> anyhow::Result<(u64, Duration)> {
        const CHUNK: u64 = 1 << 20;
        let start = Instant::now();
        let mut total = 0u64;
        for object in objects {
            let mut offset = 0;
            while offset < object.size {
                let end = (offset + CHUNK).min(object.size);
                let bytes = self
                    .store
                    .get_range(&object.location, offset..end)
                    .await
                    .with_context(|| format!("GET {} {offset}..{end}", object.location))?;
                total += bytes.len() as u64;
                offset = end;
            }
        }
        Ok((total, start.elapsed()))
    }

    /// Baseline B: each object written again under a scratch key with one PUT (the
    /// server's segments are below its multipart threshold too), one at a time, then
    /// deleted. Only the PUTs are timed. Returns (bytes, time).
    pub(crate) async fn put_objects(
        &self,
        objects: &[object_store::ObjectMeta],
    ) -> anyhow::Result<(u64, Duration)> {
        let mut total = 0u64;
        let mut elapsed = Duration::ZERO;
        for (index, object) in objects.iter().enumerate() {
            let bytes = self.store.get(&object.location).await?.bytes().await?;
            let key = self
                .prefix
                .clone()
                .join("put-baseline")
                .join(format!("{index:06}"));
            total += bytes.len() as u64;
            let start = Instant::now();
            self.store
                .put(&key, bytes.into())
                .await
                .with_context(|| format!("PUT {key}"))?;
            elapsed += start.elapsed();
            self.store.delete(&key).await?;
        }
        Ok((total, elapsed))
    }
}

/// `GET http://ADDR/metrics` (HTTP/1.0, so the server closes the connection).
pub(crate) async fn fetch_metrics(http_addr: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(http_addr)
        .await
        .with_context(|| format!("connecting to {http_addr}"))?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {http_addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .context("GET /metrics timed out")??;
    let text = String::from_utf8_lossy(&response).into_owned();
    ensure!(
        text.starts_with("HTTP/1.") && text.split_whitespace().nth(1) == Some("200"),
        "GET /metrics: {}",
        text.lines().next().unwrap_or("")
    );
    Ok(text)
}

/// The value of an unlabelled metric line `NAME VALUE`.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Every file under `dir` (recursively) whose name ends with `suffix`, sorted, with sizes.
pub(crate) fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_file() && path.to_string_lossy().ends_with(suffix) => {
                    let size = entry.metadata().map_or(0, |m| m.len());
                    out.push((path, size));
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// One verifying pass over the whole topic by a fresh consumer without a group.
pub(crate) async fn cold_consume_pass(
    label: &'static str,
    args: &Args,
    bootstrap: &str,
    topic: &str,
    per_producer: &[u64],
    server_pid: u32,
) -> anyhow::Result<(ConsumeOutcome, Value)> {
    // rust-rdkafka's assign() wants a group.id; a fresh one per pass, never joined nor
    // committed to (offsets are assigned explicitly from the beginning).
    let mut settings = consumer_settings(args);
    settings.retain(|(key, _)| key != "group.id");
    settings.insert(0, ("group.id".into(), format!("{topic}-{label}")));
    let before = Samples::take(Some(server_pid));
    let wall = Instant::now();
    let consumer = new_consumer(bootstrap, &settings, topic, args.partitions)?;
    let control = Arc::new(ConsumeControl {
        expected: AtomicU64::new(args.records),
        warmup_seen: AtomicU64::new(0),
        received: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let (partitions, record_bytes) = (args.partitions, args.record_bytes);
    let progress = Duration::from_secs_f64(args.progress_secs);
    let per_producer = per_producer.to_vec();
    let handle = std::thread::Builder::new()
        .name(label.to_string())
        .spawn(move || {
            // consume_and_verify times the first record from its own start; add the time
            // since the consumer was created.
            let before_loop = wall.elapsed();
            let mut outcome = consume_and_verify(
                label,
                consumer,
                partitions,
                &per_producer,
                record_bytes,
                &control,
                false,
                Duration::from_secs(60),
                progress,
            );
            outcome.first_record_after += before_loop;
            outcome
        })?;
    let outcome = join_consumer(handle).await?;
    let after = Samples::take(Some(server_pid));
    eprintln!(
        "{label}: {} records in {:.2} s: {:.1} MB/s, first record after {:.3} s, verified: {}{}",
        outcome.received,
        outcome.elapsed.as_secs_f64(),
        mb_per_s(outcome.bytes, outcome.elapsed),
        outcome.first_record_after.as_secs_f64(),
        outcome.verified(),
        outcome
            .first_problem
            .as_ref()
            .map(|p| format!(" (first problem: {p})"))
            .unwrap_or_default()
    );
    let mut json = outcome.json();
    json["resources"] = phase_resources(before, after, wall.elapsed());
    Ok((outcome, json))
}

/// The tier counters of interest, from one /metrics scrape.
pub(crate) fn tier_counters(text: &str) -> Value {
    let names = [
        "upload_backlog_segments",
        "upload_backlog_bytes",
        "segments_uploaded_total",
        "uploaded_bytes_total",
        "upload_failures_total",
        "gets_total",
        "get_bytes_total",
        "cache_hits_total",
        "cache_misses_total",
    ];
    Value::Object(
        names
            .iter()
            .map(|name| {
                let value = metric(text, &format!("shardline_tier_{name}"));
                ((*name).to_string(), json!(value))
            })
            .collect(),
    )
}

/// Counter differences between two `tier_counters` values.
pub(crate) fn counters_delta(before: &Value, after: &Value) -> Value {
    let Some(after) = after.as_object() else {
        return Value::Null;
    };
    Value::Object(
        after
            .iter()
            .filter(|(name, _)| name.ends_with("_total"))
            .map(|(name, value)| {
                let delta = match (value.as_f64(), before[name].as_f64()) {
                    (Some(a), Some(b)) => json!(a - b),
                    _ => Value::Null,
                };
                (name.clone(), delta)
            })
            .collect(),
    )
}

/// Cold mode. Returns the mode's JSON fields and whether everything checked out.
pub(crate) async fn cold_mode(
    args: &Args,
    bootstrap: &str,
    server: &ServerProcess,
    s3: Option<&S3Server>,
) -> anyhow::Result<(serde_json::Map<String, Value>, bool)> {
    let mut fields = serde_json::Map::new();
    let server_pid = Some(server.pid);
    let data_dir = server.data_dir.path();
    let local_streams = data_dir.join("streams");
    let store = BaselineStore::open(data_dir, s3)?;
    let topic = default_topic(args, "");
    let segment_bytes = args.cold_segment_bytes.to_string();
    create_topic_with(
        bootstrap,
        &topic,
        args.partitions,
        &[
            ("segment.bytes", &segment_bytes),
            ("local.retention.ms", "0"),
        ],
    )
    .await?;
    fields.insert("topic".into(), json!(topic));
    fields.insert(
        "topic_config".into(),
        json!({
            "capacity.mode": "unlimited",
            "segment.bytes": args.cold_segment_bytes,
            "local.retention.ms": 0,
        }),
    );
    fields.insert("object_store".into(), json!(store.url));

    // Produce, watching the upload counters meanwhile.
    eprintln!(
        "produce: topic {topic}, {} partitions, {} records of {} bytes ({:.0} MB)",
        args.partitions,
        args.records,
        args.record_bytes,
        (args.records * args.record_bytes as u64) as f64 / 1e6
    );
    let per_producer = split_counts(args.records, args.producers);
    let pacings = per_producer
        .iter()
        .map(|&count| Pacing::Flat { count })
        .collect();
    let first_upload: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let watcher = {
        let http = server.http_addr.clone();
        let first_upload = Arc::clone(&first_upload);
        tokio::spawn(async move {
            loop {
                if let Ok(text) = fetch_metrics(&http).await
                    && metric(&text, "shardline_tier_uploaded_bytes_total").unwrap_or(0.0) > 0.0
                {
                    first_upload
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert_with(Instant::now);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let before = Samples::take(server_pid);
    let produce_start = Instant::now();
    let mut produced =
        produce_phase("produce", args, bootstrap, &topic, pacings, server_pid).await?;
    let produce_end = Instant::now();
    let after_produce = Samples::take(server_pid);
    let mut produce_json = produced.json();
    produce_json["resources"] = phase_resources(before, after_produce, produced.elapsed);
    fields.insert("produce".into(), produce_json);

    // Wait until every sealed segment is in the store and gone locally.
    eprintln!("upload: waiting for backlog 0 and at most one local segment per partition");
    let deadline = produce_end + Duration::from_secs_f64(args.cold_wait_secs);
    let mut ticker = Ticker::new(Duration::from_secs_f64(args.progress_secs));
    let (drained_at, metrics_text, local_left) = loop {
        let text = fetch_metrics(&server.http_addr).await?;
        let backlog = metric(&text, "shardline_tier_upload_backlog_segments");
        let local = files_with_suffix(&local_streams, ".log");
        if backlog == Some(0.0) && local.len() <= args.partitions as usize {
            break (Instant::now(), text, local);
        }
        if ticker.due() {
            eprintln!(
                "upload: backlog {:?} segments, {} local .log files, uploaded {:.0} MB",
                backlog,
                local.len(),
                metric(&text, "shardline_tier_uploaded_bytes_total").unwrap_or(0.0) / 1e6
            );
        }
        if Instant::now() > deadline {
            bail!(
                "upload: not done {:.0} s after producing (backlog {backlog:?}, {} local .log files)",
                args.cold_wait_secs,
                local.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    watcher.abort();
    let after_upload = Samples::take(server_pid);
    let objects = store.segment_objects().await?;
    let object_bytes: u64 = objects.iter().map(|object| object.size).sum();
    let local_bytes: u64 = local_left.iter().map(|(_, size)| size).sum();
    let uploaded_bytes = metric(&metrics_text, "shardline_tier_uploaded_bytes_total")
        .map_or(object_bytes, |b| b as u64);
    let upload_start = first_upload
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(produce_start);
    let upload_span = drained_at.saturating_duration_since(upload_start);
    let drain_after_produce = drained_at.saturating_duration_since(produce_end);
    let upload_mb_s = mb_per_s(uploaded_bytes, upload_span);
    eprintln!(
        "upload: {} objects, {:.0} MB, done {:.2} s after producing; first upload to last: {:.2} s, {upload_mb_s:.1} MB/s; {} local .log files left ({:.1} MB)",
        objects.len(),
        object_bytes as f64 / 1e6,
        drain_after_produce.as_secs_f64(),
        upload_span.as_secs_f64(),
        local_left.len(),
        local_bytes as f64 / 1e6
    );
    let tier_after_upload = tier_counters(&metrics_text);
    fields.insert(
        "upload".into(),
        json!({
            "log_objects": objects.len(),
            "log_object_bytes": object_bytes,
            "uploaded_bytes_metric": uploaded_bytes,
            "first_upload_after_produce_start_s": round3(upload_start.saturating_duration_since(produce_start).as_secs_f64()),
            "first_upload_to_drained_s": round3(upload_span.as_secs_f64()),
            "drained_after_produce_end_s": round3(drain_after_produce.as_secs_f64()),
            "mb_s": round3(upload_mb_s),
            "local_log_files_left": local_left.len(),
            "local_log_bytes_left": local_bytes,
            "tier_counters": tier_after_upload,
            "resources": phase_resources(after_produce, after_upload, drain_after_produce),
        }),
    );

    // Baselines on the same objects.
    let (read_bytes, read_time) = store.read_objects(&objects).await?;
    let direct_read_mb_s = mb_per_s(read_bytes, read_time);
    let (put_bytes, put_time) = store.put_objects(&objects).await?;
    let put_mb_s = mb_per_s(put_bytes, put_time);
    eprintln!(
        "baseline A: sequential 1 MiB ranged GETs of the objects: {direct_read_mb_s:.1} MB/s; baseline B: whole-object PUTs: {put_mb_s:.1} MB/s"
    );
    fields.insert(
        "baselines".into(),
        json!({
            "a_ranged_gets_1mib": {
                "bytes": read_bytes,
                "seconds": round3(read_time.as_secs_f64()),
                "mb_s": round3(direct_read_mb_s),
            },
            "b_whole_object_puts": {
                "bytes": put_bytes,
                "seconds": round3(put_time.as_secs_f64()),
                "mb_s": round3(put_mb_s),
            },
        }),
    );

    // Cold, then warm.
    let pid = server.pid;
    let hwm_before_reads = Samples::take(server_pid).server.map(|s| s.hwm_kib);
    let tier_before_cold = tier_counters(&fetch_metrics(&server.http_addr).await?);
    let (cold, mut cold_json) =
        cold_consume_pass("cold", args, bootstrap, &topic, &per_producer, pid).await?;
    let tier_after_cold = tier_counters(&fetch_metrics(&server.http_addr).await?);
    cold_json["tier_counters_delta"] = counters_delta(&tier_before_cold, &tier_after_cold);
    let (warm, mut warm_json) =
        cold_consume_pass("warm", args, bootstrap, &topic, &per_producer, pid).await?;
    let tier_after_warm = tier_counters(&fetch_metrics(&server.http_addr).await?);
    warm_json["tier_counters_delta"] = counters_delta(&tier_after_cold, &tier_after_warm);
    let end = Samples::take(server_pid).server;
    fields.insert("cold".into(), cold_json);
    fields.insert("warm".into(), warm_json);

    let cold_mb_s = mb_per_s(cold.bytes, cold.elapsed);
    let warm_mb_s = mb_per_s(warm.bytes, warm.elapsed);
    let cold_vs_direct = round3(cold_mb_s / direct_read_mb_s);
    let warm_vs_cold = round3(warm_mb_s / cold_mb_s);
    let upload_vs_put = round3(upload_mb_s / put_mb_s);
    let cache_mib = args.cold_cache_bytes as f64 / 1048576.0;
    let hwm_mib = end.map(|s| round3(s.hwm_kib as f64 / 1024.0));
    let rss_limit_mib = cache_mib + TARGET_COLD_RSS_OVERHEAD_MIB;
    eprintln!(
        "cold {cold_mb_s:.1} MB/s = {cold_vs_direct}x ranged GETs; warm {warm_mb_s:.1} MB/s = {warm_vs_cold}x cold; upload {upload_mb_s:.1} MB/s = {upload_vs_put}x PUTs; server VmHWM {hwm_mib:?} MiB (cache {cache_mib:.0} MiB)"
    );
    fields.insert(
        "memory".into(),
        json!({
            "cache_bytes_max": args.cold_cache_bytes,
            "server_hwm_mib_before_reads": hwm_before_reads.map(|k| round3(k as f64 / 1024.0)),
            "server_hwm_mib_end": hwm_mib,
            "server_rss_mib_end": end.map(|s| round3(s.rss_kib as f64 / 1024.0)),
            "hwm_minus_cache_mib": hwm_mib.map(|h| round3(h - cache_mib)),
        }),
    );
    fields.insert(
        "ratios".into(),
        json!({
            "cold_vs_ranged_gets": cold_vs_direct,
            "warm_vs_cold": warm_vs_cold,
            "upload_vs_puts": upload_vs_put,
        }),
    );
    fields.insert(
        "targets".into(),
        json!({
            "cold_vs_ranged_gets_min": TARGET_COLD_VS_DIRECT,
            "cold_vs_ranged_gets_met": cold_vs_direct >= TARGET_COLD_VS_DIRECT,
            "warm_vs_cold_min": TARGET_WARM_VS_COLD,
            "warm_vs_cold_met": warm_vs_cold >= TARGET_WARM_VS_COLD,
            "server_hwm_limit_mib": rss_limit_mib,
            "server_hwm_limit": format!("cache_bytes_max + {TARGET_COLD_RSS_OVERHEAD_MIB} MiB"),
            "server_hwm_met": hwm_mib.map(|h| h <= rss_limit_mib),
        }),
    );
    let ok = produced.errors == 0
        && produced.records == args.records
        && cold.verified()
        && warm.verified();
    produced.ack_us.clear();
    Ok((fields, ok))
}
