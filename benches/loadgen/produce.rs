//! Producing.

use super::*;

/// How a producer task paces its sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pacing {
    /// `count` records as fast as the in-flight window allows.
    Flat { count: u64 },
    /// `count` records at `per_second`, evenly spread.
    Rate { count: u64, per_second: f64 },
}

/// Counters shared by the producer tasks and the progress reporter.
#[derive(Debug, Default)]
pub(crate) struct ProduceShared {
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) first_error: Mutex<Option<String>>,
    pub(crate) ack_us: Mutex<Vec<u64>>,
}

impl ProduceShared {
    pub(crate) fn record_error(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(error);
    }
}

/// Sends records of producer `id` to `topic`; each send's delivery is awaited by its own
/// task, which records the ack latency (send to delivery report).
pub(crate) async fn run_producer(
    producer: Arc<FutureProducer>,
    id: u32,
    topic: Arc<str>,
    record_bytes: usize,
    max_inflight: usize,
    pacing: Pacing,
    shared: Arc<ProduceShared>,
) -> anyhow::Result<()> {
    let window = Arc::new(Semaphore::new(max_inflight));
    let mut payload = vec![0u8; record_bytes];
    let (count, per_second) = match pacing {
        Pacing::Flat { count } => (count, None),
        Pacing::Rate { count, per_second } => (count, Some(per_second)),
    };
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    while seq < count {
        if let Some(per_second) = per_second {
            let due = ((start.elapsed().as_secs_f64() * per_second) as u64).min(count);
            if seq >= due {
                ticks.tick().await;
                continue;
            }
        }
        let permit = Arc::clone(&window).acquire_owned().await?;
        fill_payload(
            &mut payload,
            PayloadHeader {
                producer: id,
                seq,
                sent_ns: 0,
            },
        );
        let mut key = [0u8; 12];
        key[..4].copy_from_slice(&id.to_be_bytes());
        key[4..].copy_from_slice(&seq.to_be_bytes());
        let delivery = loop {
            let sent = Instant::now();
            set_sent_ns(&mut payload, sent.duration_since(epoch()).as_nanos() as u64);
            let record = FutureRecord::to(&topic).key(&key[..]).payload(&payload[..]);
            match producer.send_result(record) {
                Ok(delivery) => break (sent, delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => bail!("producer {id}: enqueueing record {seq}: {error}"),
            }
        };
        let (sent, delivery) = delivery;
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let result = delivery.await;
            let micros = sent.elapsed().as_micros() as u64;
            drop(permit);
            match result {
                Ok(Ok(_)) => {
                    shared.acked.fetch_add(1, Ordering::Relaxed);
                    shared
                        .ack_us
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(micros);
                }
                Ok(Err((error, _))) => shared.record_error(format!("delivery failed: {error}")),
                Err(_) => shared.record_error("delivery future cancelled".to_string()),
            }
        });
        seq += 1;
    }
    // Every delivery task returns its permit when its delivery report arrived.
    let _all = window.acquire_many(max_inflight as u32).await?;
    Ok(())
}

/// Prints produce progress every `every` until aborted.
pub(crate) fn spawn_produce_progress(
    label: &'static str,
    shared: Arc<ProduceShared>,
    target: u64,
    record_bytes: usize,
    server_pid: Option<u32>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_acked = 0u64;
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let acked = shared.acked.load(Ordering::Relaxed);
            let sent = shared.sent.load(Ordering::Relaxed);
            let secs = last.elapsed().as_secs_f64();
            let rate = (acked - last_acked) as f64 / secs;
            let rss = server_pid
                .and_then(|pid| ProcSample::take(Some(pid)))
                .map(|s| format!(", server RSS {:.0} MiB", s.rss_kib as f64 / 1024.0))
                .unwrap_or_default();
            eprintln!(
                "{label}: sent {sent} acked {acked} of {target}: {rate:.0} rec/s, {:.1} MB/s{rss}",
                rate * record_bytes as f64 / 1e6
            );
            last_acked = acked;
            last = Instant::now();
        }
    })
}

/// Result of one produce phase over all producers.
#[derive(Debug)]
pub(crate) struct ProduceOutcome {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    pub(crate) ack_us: Vec<u64>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

impl ProduceOutcome {
    pub(crate) fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn json(&mut self) -> Value {
        json!({
            "records": self.records,
            "payload_bytes": self.bytes,
            "seconds": round3(self.elapsed.as_secs_f64()),
            "mb_s": round3(mb_per_s(self.bytes, self.elapsed)),
            "records_s": round3(self.records_per_s()),
            "ack_latency": summary_json(&mut self.ack_us),
            "delivery_errors": self.errors,
            "first_error": self.first_error,
        })
    }
}

/// Runs `args.producers` producers with `pacing` each; returns once every record is
/// acknowledged (or failed).
pub(crate) async fn produce_phase(
    label: &'static str,
    args: &Args,
    bootstrap: &str,
    topic: &str,
    pacings: Vec<Pacing>,
    server_pid: Option<u32>,
) -> anyhow::Result<ProduceOutcome> {
    let target: u64 = pacings
        .iter()
        .map(|p| match p {
            Pacing::Flat { count } | Pacing::Rate { count, .. } => *count,
        })
        .sum();
    let shared = Arc::new(ProduceShared {
        ack_us: Mutex::new(Vec::with_capacity(target as usize)),
        ..ProduceShared::default()
    });
    let settings = producer_settings(args);
    let topic: Arc<str> = Arc::from(topic);
    let mut progress = None;
    let start_progress = || {
        spawn_produce_progress(
            label,
            Arc::clone(&shared),
            target,
            args.record_bytes,
            server_pid,
            Duration::from_secs_f64(args.progress_secs),
        )
    };
    let timed = match args.client {
        ClientApi::Future => {
            run_future_producers(args, bootstrap, &settings, &topic, pacings, &shared, || {
                progress = Some(start_progress());
            })
            .await
        }
        ClientApi::Threaded => {
            run_threaded_producers(args, bootstrap, &settings, &topic, pacings, &shared, || {
                progress = Some(start_progress());
            })
            .await
        }
    };
    if let Some(progress) = progress {
        progress.abort();
    }
    let elapsed = timed?;
    let records = shared.acked.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let ack_us = std::mem::take(&mut *shared.ack_us.lock().unwrap_or_else(|e| e.into_inner()));
    let outcome = ProduceOutcome {
        records,
        bytes: records * args.record_bytes as u64,
        elapsed,
        ack_us,
        errors,
        first_error,
    };
    eprintln!(
        "{label}: {} records acked in {:.2} s: {:.0} rec/s, {:.1} MB/s, {} errors",
        outcome.records,
        elapsed.as_secs_f64(),
        outcome.records_per_s(),
        mb_per_s(outcome.bytes, elapsed),
        errors
    );
    Ok(outcome)
}

/// `FutureProducer`s, one tokio task per producer, each delivery awaited by its own task.
/// Returns the timed duration: first send to last acknowledgement (warm-up excluded).
pub(crate) async fn run_future_producers(
    args: &Args,
    bootstrap: &str,
    settings: &[(String, String)],
    topic: &Arc<str>,
    pacings: Vec<Pacing>,
    shared: &Arc<ProduceShared>,
    on_start: impl FnOnce(),
) -> anyhow::Result<Duration> {
    let producers = pacings
        .iter()
        .map(|_| new_producer(bootstrap, settings).map(Arc::new))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The first send of a fresh idempotent producer waits for metadata and a producer
    // id; keep that out of the figures with one untimed (and unverified) record each.
    for (id, producer) in producers.iter().enumerate() {
        send_warmup(producer, topic, args.record_bytes, id as u64, None).await?;
    }
    on_start();
    let start = Instant::now();
    let tasks: Vec<_> = producers
        .iter()
        .zip(pacings)
        .enumerate()
        .map(|(id, (producer, pacing))| {
            tokio::spawn(run_producer(
                Arc::clone(producer),
                id as u32,
                Arc::clone(topic),
                args.record_bytes,
                args.max_inflight,
                pacing,
                Arc::clone(shared),
            ))
        })
        .collect();
    let mut failure = None;
    for task in tasks {
        if let Err(error) = task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            failure.get_or_insert(error);
        }
    }
    let elapsed = start.elapsed();
    failure.map_or(Ok(elapsed), Err)
}

/// Delivery reports of a `ThreadedProducer`, handled on its polling thread: the opaque
/// value of each record is its send time (`now_ns`), so no allocation, channel or task
/// is needed per record.
#[derive(Debug)]
pub(crate) struct AckContext {
    pub(crate) shared: Arc<ProduceShared>,
    /// Records acknowledged or failed (warm-up records not counted).
    pub(crate) done: AtomicU64,
    pub(crate) warmups_done: AtomicU64,
}

/// Opaque value marking a warm-up record.
pub(crate) const WARMUP_OPAQUE: usize = usize::MAX;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        if sent_ns == WARMUP_OPAQUE {
            self.warmups_done.fetch_add(1, Ordering::Release);
            return;
        }
        let micros = now_ns().saturating_sub(sent_ns as u64) / 1000;
        match result {
            Ok(_) => {
                self.shared.acked.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .ack_us
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(micros);
            }
            Err((error, _)) => self
                .shared
                .record_error(format!("delivery failed: {error}")),
        }
        self.done.fetch_add(1, Ordering::Release);
    }
}

/// `ThreadedProducer`s, each sending from its own OS thread. Returns the timed duration:
/// first send to last acknowledgement (warm-up excluded).
pub(crate) async fn run_threaded_producers(
    args: &Args,
    bootstrap: &str,
    settings: &[(String, String)],
    topic: &Arc<str>,
    pacings: Vec<Pacing>,
    shared: &Arc<ProduceShared>,
    on_start: impl FnOnce(),
) -> anyhow::Result<Duration> {
    let mut producers = Vec::new();
    for id in 0..pacings.len() {
        let mut config = client_config(bootstrap);
        for (key, value) in settings {
            config.set(key, value);
        }
        let producer: ThreadedProducer<AckContext> = config
            .create_with_context(AckContext {
                shared: Arc::clone(shared),
                done: AtomicU64::new(0),
                warmups_done: AtomicU64::new(0),
            })
            .context("creating a producer")?;
        let mut payload = vec![0u8; args.record_bytes];
        fill_payload(
            &mut payload,
            PayloadHeader {
                producer: WARMUP_PRODUCER,
                seq: id as u64,
                sent_ns: now_ns(),
            },
        );
        producer
            .send(
                BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, WARMUP_OPAQUE)
                    .payload(&payload[..]),
            )
            .map_err(|(error, _)| anyhow!("warm-up record: {error}"))?;
        producers.push(producer);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for producer in &producers {
        while producer.context().warmups_done.load(Ordering::Acquire) == 0 {
            ensure!(
                Instant::now() < deadline,
                "warm-up record not acknowledged within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    on_start();
    let start = Instant::now();
    let threads = producers
        .into_iter()
        .zip(pacings)
        .enumerate()
        .map(|(id, (producer, pacing))| {
            let topic = Arc::clone(topic);
            let (record_bytes, max_inflight) = (args.record_bytes, args.max_inflight);
            std::thread::Builder::new()
                .name(format!("producer-{id}"))
                .spawn(move || {
                    let result = send_threaded(
                        &producer,
                        id as u32,
                        &topic,
                        record_bytes,
                        max_inflight,
                        pacing,
                    );
                    (result, Instant::now())
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut failure = None;
    let mut end = start;
    for thread in threads {
        while !thread.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match thread.join() {
            Ok((Ok(()), finished)) => end = end.max(finished),
            Ok((Err(error), _)) => {
                failure.get_or_insert(error);
            }
            Err(_) => {
                failure.get_or_insert(anyhow!("a producer thread panicked"));
            }
        }
    }
    failure.map_or(Ok(end - start), Err)
}

/// The send loop of one `ThreadedProducer`; returns once every record is acknowledged or
/// failed.
pub(crate) fn send_threaded(
    producer: &ThreadedProducer<AckContext>,
    id: u32,
    topic: &str,
    record_bytes: usize,
    max_inflight: usize,
    pacing: Pacing,
) -> anyhow::Result<()> {
    let context = producer.context();
    let mut payload = vec![0u8; record_bytes];
    let (count, per_second) = match pacing {
        Pacing::Flat { count } => (count, None),
        Pacing::Rate { count, per_second } => (count, Some(per_second)),
    };
    let start = Instant::now();
    for seq in 0..count {
        if let Some(per_second) = per_second {
            let due = start + Duration::from_secs_f64(seq as f64 / per_second);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        while seq - context.done.load(Ordering::Acquire) >= max_inflight as u64 {
            std::thread::sleep(Duration::from_micros(200));
        }
        fill_payload(
            &mut payload,
            PayloadHeader {
                producer: id,
                seq,
                sent_ns: 0,
            },
        );
        let mut key = [0u8; 12];
        key[..4].copy_from_slice(&id.to_be_bytes());
        key[4..].copy_from_slice(&seq.to_be_bytes());
        loop {
            let sent_ns = now_ns();
            set_sent_ns(&mut payload, sent_ns);
            let record = BaseRecord::with_opaque_to(topic, sent_ns as usize)
                .key(&key[..])
                .payload(&payload[..]);
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((error, _)) => bail!("producer {id}: enqueueing record {seq}: {error}"),
            }
        }
        context.shared.sent.fetch_add(1, Ordering::Relaxed);
    }
    while context.done.load(Ordering::Acquire) < count {
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Sends one warm-up record (skipped by consumers) and waits for its acknowledgement.
pub(crate) async fn send_warmup(
    producer: &FutureProducer,
    topic: &str,
    record_bytes: usize,
    seq: u64,
    partition: Option<i32>,
) -> anyhow::Result<()> {
    let mut payload = vec![0u8; record_bytes];
    fill_payload(
        &mut payload,
        PayloadHeader {
            producer: WARMUP_PRODUCER,
            seq,
            sent_ns: now_ns(),
        },
    );
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(&payload[..]);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(error, _)| anyhow!("warm-up record: {error}"))?;
    Ok(())
}

/// Splits `total` records over `producers` as evenly as possible.
pub(crate) fn split_counts(total: u64, producers: usize) -> Vec<u64> {
    let n = producers as u64;
    (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect()
}
