//! Consuming.

use super::*;

/// What a verifying read-back found.
#[derive(Debug, Default)]
pub(crate) struct ConsumeOutcome {
    pub(crate) received: u64,
    pub(crate) bytes: u64,
    /// First record to last record.
    pub(crate) elapsed: Duration,
    /// From creating the consumer to the first record.
    pub(crate) first_record_after: Duration,
    pub(crate) bad_payloads: u64,
    pub(crate) wrong_size: u64,
    pub(crate) duplicates: u64,
    pub(crate) unexpected: u64,
    pub(crate) order_violations: u64,
    pub(crate) missing: u64,
    pub(crate) first_problem: Option<String>,
    /// Latency mode: consumer receive time minus the send time in the payload.
    pub(crate) e2e_us: Vec<u64>,
}

impl ConsumeOutcome {
    pub(crate) fn verified(&self) -> bool {
        self.bad_payloads == 0
            && self.wrong_size == 0
            && self.duplicates == 0
            && self.unexpected == 0
            && self.order_violations == 0
            && self.missing == 0
    }

    pub(crate) fn problem(&mut self, what: String) {
        self.first_problem.get_or_insert(what);
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "records": self.received,
            "payload_bytes": self.bytes,
            "seconds": round3(self.elapsed.as_secs_f64()),
            "first_record_after_s": round3(self.first_record_after.as_secs_f64()),
            "mb_s": round3(mb_per_s(self.bytes, self.elapsed)),
            "records_s": round3(self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)),
            "verified": self.verified(),
            "bad_payloads": self.bad_payloads,
            "wrong_size": self.wrong_size,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "order_violations": self.order_violations,
            "missing": self.missing,
            "first_problem": self.first_problem,
        })
    }
}

/// Tells the consumer when to stop: `expected` is unknown (u64::MAX) until the producers
/// are done in latency mode.
#[derive(Debug)]
pub(crate) struct ConsumeControl {
    pub(crate) expected: AtomicU64,
    pub(crate) warmup_seen: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) stop: AtomicBool,
}

/// Reads `topic` from the beginning until `control.expected` records (not counting
/// warm-up ones) arrived, or nothing arrived for `idle_timeout`. Checks every payload,
/// duplicates, per-producer order within each partition, and sizes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn consume_and_verify(
    label: &'static str,
    consumer: BaseConsumer,
    partitions: i32,
    per_producer: &[u64],
    record_bytes: usize,
    control: &ConsumeControl,
    measure_e2e: bool,
    idle_timeout: Duration,
    progress: Duration,
) -> ConsumeOutcome {
    let mut out = ConsumeOutcome::default();
    let mut seen: Vec<Vec<bool>> = per_producer
        .iter()
        .map(|&n| vec![false; n as usize])
        .collect();
    let mut last_seq = vec![-1i64; per_producer.len() * partitions.max(1) as usize];
    let mut scratch = Vec::with_capacity(record_bytes);
    let mut ticker = Ticker::new(progress);
    let start = Instant::now();
    // Throughput is timed from the first record (not counting warm-up ones) to the last, so
    // client start-up (metadata, offsets, the first fetch) is reported apart.
    let mut first_record: Option<Instant> = None;
    let mut last_record = Instant::now();
    let mut last_report = (Instant::now(), 0u64);
    loop {
        let expected = control.expected.load(Ordering::Acquire);
        if out.received >= expected || control.stop.load(Ordering::Relaxed) {
            break;
        }
        if last_record.elapsed() > idle_timeout {
            eprintln!(
                "{label}: nothing received for {:.0} s, giving up",
                idle_timeout.as_secs_f64()
            );
            break;
        }
        if ticker.due() {
            let (at, count) = last_report;
            let rate = (out.received - count) as f64 / at.elapsed().as_secs_f64();
            eprintln!(
                "{label}: received {} of {}: {rate:.0} rec/s, {:.1} MB/s",
                out.received,
                if expected == u64::MAX {
                    "?".to_string()
                } else {
                    expected.to_string()
                },
                rate * record_bytes as f64 / 1e6
            );
            last_report = (Instant::now(), out.received);
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(error)) => {
                out.problem(format!("consumer error: {error}"));
                eprintln!("{label}: consumer error: {error}");
                continue;
            }
            Some(Ok(message)) => message,
        };
        let received_ns = now_ns();
        last_record = Instant::now();
        let payload = message.payload().unwrap_or_default();
        let header = match read_header(payload) {
            Ok(header) if header.producer == WARMUP_PRODUCER => {
                control.warmup_seen.fetch_add(1, Ordering::AcqRel);
                continue;
            }
            Ok(header) => header,
            Err(error) => {
                out.received += 1;
                out.bad_payloads += 1;
                out.problem(format!(
                    "partition {} offset {}: {error:?}",
                    message.partition(),
                    message.offset()
                ));
                continue;
            }
        };
        let first = *first_record.get_or_insert_with(|| {
            out.first_record_after = start.elapsed();
            last_record
        });
        out.received += 1;
        out.bytes += payload.len() as u64;
        control.received.fetch_add(1, Ordering::Relaxed);
        if measure_e2e {
            out.e2e_us
                .push(received_ns.saturating_sub(header.sent_ns) / 1000);
        }
        if payload.len() != record_bytes {
            out.wrong_size += 1;
            out.problem(format!("payload of {} bytes", payload.len()));
        }
        if check_payload(payload, &mut scratch).is_err() {
            out.bad_payloads += 1;
            out.problem(format!(
                "partition {} offset {}: payload does not match",
                message.partition(),
                message.offset()
            ));
            continue;
        }
        let producer = header.producer as usize;
        let Some(slot) = seen
            .get_mut(producer)
            .and_then(|s| s.get_mut(header.seq as usize))
        else {
            out.unexpected += 1;
            out.problem(format!(
                "unexpected producer {} seq {}",
                header.producer, header.seq
            ));
            continue;
        };
        if std::mem::replace(slot, true) {
            out.duplicates += 1;
            out.problem(format!(
                "duplicate producer {} seq {}",
                header.producer, header.seq
            ));
        }
        let partition = message.partition();
        if (0..partitions).contains(&partition) {
            let last = &mut last_seq[producer * partitions as usize + partition as usize];
            if header.seq as i64 <= *last {
                out.order_violations += 1;
                out.problem(format!(
                    "partition {partition}: producer {} seq {} after seq {}",
                    header.producer, header.seq, *last
                ));
            }
            *last = header.seq as i64;
        }
        out.elapsed = first.elapsed();
    }
    out.missing = seen
        .iter()
        .map(|s| s.iter().filter(|&&x| !x).count() as u64)
        .sum();
    if out.missing > 0 {
        out.problem(format!("{} records never arrived", out.missing));
    }
    out
}
