//! Modes.

use super::*;

pub(crate) fn default_topic(args: &Args, suffix: &str) -> String {
    let base = args.topic.clone().unwrap_or_else(|| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("bench-{}-{}-{ms}", args.mode.name(), std::process::id())
    });
    format!("{base}{suffix}")
}

pub(crate) fn consume_thread(
    label: &'static str,
    args: &Args,
    bootstrap: &str,
    topic: &str,
    per_producer: Vec<u64>,
    control: Arc<ConsumeControl>,
    measure_e2e: bool,
) -> anyhow::Result<std::thread::JoinHandle<ConsumeOutcome>> {
    let consumer = new_consumer(bootstrap, &consumer_settings(args), topic, args.partitions)?;
    let (partitions, record_bytes) = (args.partitions, args.record_bytes);
    let progress = Duration::from_secs_f64(args.progress_secs);
    Ok(std::thread::Builder::new()
        .name(label.to_string())
        .spawn(move || {
            consume_and_verify(
                label,
                consumer,
                partitions,
                &per_producer,
                record_bytes,
                &control,
                measure_e2e,
                Duration::from_secs(30),
                progress,
            )
        })?)
}

/// Waits for a consumer thread without blocking the runtime.
pub(crate) async fn join_consumer(
    handle: std::thread::JoinHandle<ConsumeOutcome>,
) -> anyhow::Result<ConsumeOutcome> {
    while !handle.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle
        .join()
        .map_err(|_| anyhow!("the consumer thread panicked"))
}

/// Produce mode. Returns the mode's JSON fields and whether everything checked out.
pub(crate) async fn produce_mode(
    args: &Args,
    bootstrap: &str,
    server_pid: Option<u32>,
) -> anyhow::Result<(serde_json::Map<String, Value>, bool)> {
    let mut fields = serde_json::Map::new();
    let total_bytes = args.records * args.record_bytes as u64;
    let progress = Duration::from_secs_f64(args.progress_secs);

    let disk_mb_s = if args.skip_disk_baseline {
        None
    } else {
        eprintln!(
            "disk baseline: writing {:.0} MB in 1 MiB chunks with fdatasync after each",
            total_bytes as f64 / 1e6
        );
        let sequential = disk_sequential(&args.data_dir_root, total_bytes, progress)?;
        let fsync = disk_fsync_latency(&args.data_dir_root, args.fsync_writes)?;
        let mb_s = sequential["mb_s"].as_f64();
        fields.insert(
            "disk".into(),
            json!({ "sequential_1mib_fdatasync": sequential, "write_4kib_fdatasync": fsync }),
        );
        mb_s
    };

    let topic = default_topic(args, "");
    create_topic(bootstrap, &topic, args.partitions).await?;
    eprintln!(
        "produce: topic {topic}, {} partitions, {} records of {} bytes, {} producer(s)",
        args.partitions, args.records, args.record_bytes, args.producers
    );
    let per_producer = split_counts(args.records, args.producers);
    let pacings = per_producer
        .iter()
        .map(|&count| Pacing::Flat { count })
        .collect();
    let before = Samples::take(server_pid);
    let mut produced =
        produce_phase("produce", args, bootstrap, &topic, pacings, server_pid).await?;
    let after_produce = Samples::take(server_pid);
    if let Some(summary) = LatencySummary::from_unsorted(&mut produced.ack_us) {
        eprintln!("produce: ack latency {}", summary.brief());
    }
    let produce_mb_s = mb_per_s(produced.bytes, produced.elapsed);

    eprintln!("consume: reading all {} records back", produced.records);
    let control = Arc::new(ConsumeControl {
        expected: AtomicU64::new(args.records),
        warmup_seen: AtomicU64::new(0),
        received: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let handle = consume_thread(
        "consume",
        args,
        bootstrap,
        &topic,
        per_producer,
        control,
        false,
    )?;
    let consumed = join_consumer(handle).await?;
    let after_consume = Samples::take(server_pid);
    eprintln!(
        "consume: {} records in {:.2} s: {:.1} MB/s, verified: {}{}",
        consumed.received,
        consumed.elapsed.as_secs_f64(),
        mb_per_s(consumed.bytes, consumed.elapsed),
        consumed.verified(),
        consumed
            .first_problem
            .as_ref()
            .map(|p| format!(" (first problem: {p})"))
            .unwrap_or_default()
    );

    let ok = produced.errors == 0 && produced.records == args.records && consumed.verified();
    let produced_bytes = produced.bytes.max(1);
    let mut produce_json = produced.json();
    produce_json["resources"] = phase_resources(before, after_produce, produced.elapsed);
    let write_amplification = produce_json["resources"]["server_storage_write_mb"]
        .as_f64()
        .map(|mb| round3(mb * 1e6 / produced_bytes as f64));
    let mut consume_json = consumed.json();
    consume_json["resources"] = phase_resources(after_produce, after_consume, consumed.elapsed);
    let ratio = disk_mb_s.map(|disk| round3(produce_mb_s / disk));
    let server_cpu_per_gb = cpu_between(before.server, after_produce.server)
        .as_f64()
        .map(|cpu| round3(cpu / (produced.bytes as f64 / 1e9)));
    fields.insert("topic".into(), json!(topic));
    fields.insert("produce".into(), produce_json);
    fields.insert("consume".into(), consume_json);
    fields.insert(
        "ratios".into(),
        json!({
            "produce_vs_disk_ratio": ratio,
            "consume_vs_disk_ratio": disk_mb_s.map(|disk| round3(mb_per_s(consumed.bytes, consumed.elapsed) / disk)),
            "server_cpu_s_per_gb_produced": server_cpu_per_gb,
            "server_storage_writes_vs_payload": write_amplification,
        }),
    );
    fields.insert(
        "targets".into(),
        json!({
            "produce_vs_disk_ratio_min": TARGET_PRODUCE_VS_DISK,
            "produce_vs_disk_met": ratio.map(|r| r >= TARGET_PRODUCE_VS_DISK),
        }),
    );
    Ok((fields, ok))
}

/// Latency mode. Returns the mode's JSON fields and whether everything checked out.
pub(crate) async fn latency_mode(
    args: &Args,
    bootstrap: &str,
    server_pid: Option<u32>,
) -> anyhow::Result<(serde_json::Map<String, Value>, bool)> {
    let mut fields = serde_json::Map::new();
    let rate = match args.rate {
        Some(rate) => {
            fields.insert("rate_source".into(), json!("--rate"));
            rate
        }
        None => {
            let topic = default_topic(args, "-peak");
            create_topic(bootstrap, &topic, args.partitions).await?;
            eprintln!(
                "peak: producing {} records to {topic} to find the peak rate",
                args.peak_records
            );
            let pacings = split_counts(args.peak_records, args.producers)
                .into_iter()
                .map(|count| Pacing::Flat { count })
                .collect();
            let mut peak =
                produce_phase("peak", args, bootstrap, &topic, pacings, server_pid).await?;
            let peak_rate = peak.records_per_s();
            fields.insert("peak".into(), peak.json());
            fields.insert(
                "rate_source".into(),
                json!(format!("{} x measured peak", args.peak_fraction)),
            );
            peak_rate * args.peak_fraction
        }
    };
    ensure!(rate > 0.0, "the produce rate must be positive");
    let total = (rate * args.seconds).round().max(1.0) as u64;
    let per_producer = split_counts(total, args.producers);

    let topic = default_topic(args, "");
    create_topic(bootstrap, &topic, args.partitions).await?;
    let control = Arc::new(ConsumeControl {
        expected: AtomicU64::new(u64::MAX),
        warmup_seen: AtomicU64::new(0),
        received: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let handle = consume_thread(
        "latency-consume",
        args,
        bootstrap,
        &topic,
        per_producer.clone(),
        Arc::clone(&control),
        true,
    )?;

    // Warm up: one record per partition, so connections, metadata and fetch sessions
    // exist before anything is timed.
    let warmup = new_producer(bootstrap, &producer_settings(args))?;
    for partition in 0..args.partitions {
        send_warmup(
            &warmup,
            &topic,
            args.record_bytes,
            partition as u64,
            Some(partition),
        )
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while control.warmup_seen.load(Ordering::Acquire) < args.partitions as u64 {
        if Instant::now() > deadline || handle.is_finished() {
            control.stop.store(true, Ordering::Relaxed);
            bail!("the consumer did not see the warm-up records within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(warmup);

    eprintln!(
        "latency: producing {total} records at {rate:.0} rec/s for {:.1} s to {topic} while consuming it",
        args.seconds
    );
    let pacings = per_producer
        .iter()
        .map(|&count| Pacing::Rate {
            count,
            per_second: rate / args.producers as f64,
        })
        .collect();
    let before = Samples::take(server_pid);
    let produced = produce_phase("latency", args, bootstrap, &topic, pacings, server_pid).await;
    let produced = match produced {
        Ok(produced) => produced,
        Err(error) => {
            control.stop.store(true, Ordering::Relaxed);
            return Err(error);
        }
    };
    let after_produce = Samples::take(server_pid);
    control
        .expected
        .store(produced.records + produced.errors, Ordering::Release);
    let mut consumed = join_consumer(handle).await?;
    let after = Samples::take(server_pid);
    let mut ack = produced.ack_us.clone();
    let ack_summary = LatencySummary::from_unsorted(&mut ack);
    let e2e_summary = LatencySummary::from_unsorted(&mut consumed.e2e_us);
    if let Some(summary) = &ack_summary {
        eprintln!("latency: ack {}", summary.brief());
    }
    if let Some(summary) = &e2e_summary {
        eprintln!("latency: end-to-end {}", summary.brief());
    }
    eprintln!(
        "latency: consumer got {} of {}, verified: {}",
        consumed.received,
        produced.records,
        consumed.verified()
    );
    let ok = produced.errors == 0 && produced.records == total && consumed.verified();
    let achieved = produced.records_per_s();
    let mut produce_json = {
        let mut produced = produced;
        produced.json()
    };
    produce_json["resources"] =
        phase_resources(before, after_produce, Duration::from_secs_f64(args.seconds));
    fields.insert("topic".into(), json!(topic));
    fields.insert("rate_target_records_s".into(), json!(round3(rate)));
    fields.insert("rate_achieved_records_s".into(), json!(round3(achieved)));
    fields.insert(
        "rate_achieved_mb_s".into(),
        json!(round3(achieved * args.record_bytes as f64 / 1e6)),
    );
    fields.insert("produce".into(), produce_json);
    let mut consume_json = consumed.json();
    consume_json["resources"] =
        phase_resources(before, after, Duration::from_secs_f64(args.seconds));
    fields.insert("consume".into(), consume_json);
    fields.insert(
        "ack_latency".into(),
        ack_summary.map_or(Value::Null, |s| s.to_json()),
    );
    fields.insert(
        "e2e_latency".into(),
        e2e_summary.map_or(Value::Null, |s| s.to_json()),
    );
    fields.insert(
        "targets".into(),
        json!({
            "ack_p99_us_max": TARGET_ACK_P99_US,
            "ack_p99_met": ack_summary.map(|s| s.p99_us < TARGET_ACK_P99_US),
            "e2e_p50_us_max": TARGET_E2E_P50_US,
            "e2e_p50_met": e2e_summary.map(|s| s.p50_us < TARGET_E2E_P50_US),
        }),
    );
    Ok((fields, ok))
}
