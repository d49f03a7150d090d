//! Group mode: the member process.

use super::*;

/// Set (to the member's settings, as JSON) when this program runs as one consumer-group
/// member, a child process of a group-mode run. See `member_main`.
pub(crate) const MEMBER_ENV: &str = "SHARDLINE_BENCH_MEMBER";
/// Producer index of the records written while members leave and die.
pub(crate) const REBALANCE_PRODUCER: u32 = 1_000_000;
/// Producer index a member reports for a record whose header does not parse.
pub(crate) const BAD_PRODUCER: u32 = u32::MAX - 1;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// librdkafka settings of a group member.
pub(crate) fn member_settings(
    args: &Args,
    group: &str,
    from_latest: bool,
) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = [
        ("group.id", group.to_string()),
        ("enable.auto.commit", "false".to_string()),
        ("enable.auto.offset.store", "false".to_string()),
        ("enable.partition.eof", "false".to_string()),
        (
            "auto.offset.reset",
            if from_latest { "latest" } else { "earliest" }.to_string(),
        ),
        ("session.timeout.ms", args.session_timeout_ms.to_string()),
        (
            "heartbeat.interval.ms",
            args.heartbeat_interval_ms().to_string(),
        ),
        (
            "max.poll.interval.ms",
            args.max_poll_interval_ms.to_string(),
        ),
        ("fetch.wait.max.ms", "100".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    settings.extend(args.consumer_config.iter().cloned());
    settings
}

/// The server settings that keep a benchmark of the write and read paths to those paths,
/// as `config/bench.toml` has them: no tiering (a second copy of every rolled segment on
/// the same disk). Topics are created with `capacity.mode=unlimited` anyway.
pub(crate) const BENCH_SERVER_CONFIG: &str = "[tier]\nenabled = false\n";

/// The server's settings for a group-mode run: the initial rebalance delay asked for, and
/// a session-timeout floor that admits the members' timeout.
pub(crate) fn group_server_config(args: &Args) -> String {
    format!(
        "# Written by shardline-bench --mode group.\n{BENCH_SERVER_CONFIG}[groups]\ninitial_rebalance_delay_ms = {}\nsession_timeout_ms_min = {}\n",
        args.initial_rebalance_delay_ms,
        args.session_timeout_ms.min(6000)
    )
}

/// What a member is told on its stdin.
#[derive(Debug)]
pub(crate) enum MemberCommand {
    /// Close the consumer (LeaveGroup) and exit.
    Leave,
    /// Commit asynchronously in a loop for `seconds`, `window` commits in flight.
    Commit { seconds: f64, window: u64 },
}

/// State of a member process shared by its poll loop and its rebalance and commit
/// callbacks.
pub(crate) struct MemberShared {
    pub(crate) out: Mutex<std::io::BufWriter<std::io::Stdout>>,
    pub(crate) topic: String,
    /// Next offset per partition of the records processed but not committed yet.
    pub(crate) pending: Mutex<BTreeMap<i32, i64>>,
    pub(crate) assigned: Mutex<Vec<i32>>,
    /// Asynchronous commits that failed, from librdkafka's COMMITFAIL log lines.
    pub(crate) async_commit_failures: AtomicU64,
}

impl MemberShared {
    pub(crate) fn emit(&self, event: &MemberEvent) {
        let mut out = lock(&self.out);
        let _ = writeln!(out, "{event}");
    }

    pub(crate) fn flush(&self) {
        let _ = lock(&self.out).flush();
    }

    /// Commits the pending offsets with one synchronous OffsetCommit and reports it.
    ///
    /// The records are reported (flushed) before the commit is sent, so a member killed
    /// at any moment has reported every record whose offset it committed: the load
    /// generator can tell a record redelivered because its commit never happened from a
    /// real duplicate.
    pub(crate) fn commit_pending(&self, consumer: &BaseConsumer<MemberContext>) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        if pending.is_empty() {
            return;
        }
        self.flush();
        let mut offsets = TopicPartitionList::with_capacity(pending.len());
        for (&partition, &next) in &pending {
            if let Err(error) =
                offsets.add_partition_offset(&self.topic, partition, Offset::Offset(next))
            {
                self.emit(&MemberEvent::CommitFailed {
                    at_ns: wall_ns(),
                    error: error.to_string(),
                });
                return;
            }
        }
        let event = match consumer.commit(&offsets, CommitMode::Sync) {
            Ok(()) => MemberEvent::Committed {
                at_ns: wall_ns(),
                offsets: pending.into_iter().collect(),
            },
            Err(error) => MemberEvent::CommitFailed {
                at_ns: wall_ns(),
                error: error.to_string(),
            },
        };
        self.emit(&event);
    }
}

pub(crate) struct MemberContext {
    pub(crate) shared: Arc<MemberShared>,
}

impl ClientContext for MemberContext {
    /// librdkafka's own log lines (warnings and errors; everything with
    /// `--consumer-config debug=cgrp` and the like) on the member's stderr, which the
    /// load generator echoes.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // Without a result callback (see `member_commit_loop`), librdkafka logs each
        // failed asynchronous commit.
        if facility == "COMMITFAIL" {
            let failures = self
                .shared
                .async_commit_failures
                .fetch_add(1, Ordering::Relaxed);
            if failures >= 5 {
                return;
            }
        }
        eprintln!("librdkafka {level:?} {facility}: {message}");
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // The usual place to commit what was processed before partitions go to another
        // member. Normally empty: every poll batch is committed as it ends.
        if let Rebalance::Revoke(_) = rebalance {
            self.shared.commit_pending(consumer);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let at_ns = wall_ns();
        let event = match rebalance {
            Rebalance::Assign(assignment) => {
                let mut partitions: Vec<i32> = assignment
                    .elements()
                    .iter()
                    .map(|element| element.partition())
                    .collect();
                partitions.sort_unstable();
                lock(&self.shared.assigned).clone_from(&partitions);
                MemberEvent::Assigned { at_ns, partitions }
            }
            Rebalance::Revoke(_) => {
                lock(&self.shared.assigned).clear();
                MemberEvent::Revoked { at_ns }
            }
            Rebalance::Error(error) => MemberEvent::Error {
                at_ns,
                error: format!("rebalance: {error}"),
            },
        };
        self.shared.emit(&event);
        self.shared.flush();
    }
}

/// Entry point of a member process: `spec` holds the bootstrap address, topic, record
/// size, batch cap and librdkafka settings. Reports go to stdout as [`MemberEvent`]
/// lines; commands come on stdin, and its end means leave.
pub(crate) fn member_main(spec: &str) -> ExitCode {
    match run_member(spec) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("member error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn run_member(spec: &str) -> anyhow::Result<()> {
    let spec: Value = serde_json::from_str(spec).context("parsing the member settings")?;
    let text = |key: &str| {
        spec[key]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("member settings lack {key}"))
    };
    let number = |key: &str| {
        spec[key]
            .as_u64()
            .with_context(|| format!("member settings lack {key}"))
    };
    let (bootstrap, topic) = (text("bootstrap")?, text("topic")?);
    let record_bytes = number("record_bytes")? as usize;
    let batch_max = number("batch_max")?.max(1) as usize;
    let shared = Arc::new(MemberShared {
        out: Mutex::new(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        )),
        topic: topic.clone(),
        pending: Mutex::default(),
        assigned: Mutex::default(),
        async_commit_failures: AtomicU64::new(0),
    });
    let mut config = client_config(&bootstrap);
    for (key, value) in spec["settings"].as_object().into_iter().flatten() {
        config.set(key, value.as_str().unwrap_or_default());
    }
    // rdkafka passes its own level (from the `log` crate, which nothing here sets up) to
    // librdkafka after creating the client: ask for warnings, or everything when a
    // `debug` context was set.
    config.set_log_level(if spec["settings"].get("debug").is_some() {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    });
    let consumer: BaseConsumer<MemberContext> = config
        .create_with_context(MemberContext {
            shared: Arc::clone(&shared),
        })
        .context("creating the consumer")?;
    consumer.subscribe(&[&topic]).context("subscribing")?;

    let (command_tx, commands) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let command = match words[..] {
                ["leave"] => MemberCommand::Leave,
                ["commit", seconds, window] => match (seconds.parse(), window.parse()) {
                    (Ok(seconds), Ok(window)) => MemberCommand::Commit { seconds, window },
                    _ => continue,
                },
                _ => continue,
            };
            if command_tx.send(command).is_err() {
                return;
            }
        }
        // End of stdin (the load generator is gone): leave.
        let _ = command_tx.send(MemberCommand::Leave);
    });

    let mut scratch = Vec::with_capacity(record_bytes);
    loop {
        match commands.try_recv() {
            Ok(MemberCommand::Leave) | Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            Ok(MemberCommand::Commit { seconds, window }) => {
                member_commit_loop(&consumer, &shared, seconds, window);
                continue;
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        // One poll batch: what librdkafka has already fetched when asked, up to
        // batch_max records; then one commit for the batch.
        let mut records = 0usize;
        let mut next = consumer.poll(Duration::from_millis(100));
        while let Some(result) = next {
            match result {
                Ok(message) => {
                    member_record(&shared, &message, &mut scratch);
                    records += 1;
                }
                Err(error) => {
                    shared.emit(&MemberEvent::Error {
                        at_ns: wall_ns(),
                        error: error.to_string(),
                    });
                    break;
                }
            }
            if records >= batch_max {
                break;
            }
            next = consumer.poll(Duration::ZERO);
        }
        if records > 0 {
            shared.commit_pending(&consumer);
        }
        shared.flush();
    }
    shared.flush();
    let started_ns = wall_ns();
    // Closes the consumer: revokes (committing anything pending), sends LeaveGroup.
    drop(consumer);
    let done_ns = wall_ns();
    shared.emit(&MemberEvent::Left {
        started_ns,
        done_ns,
    });
    shared.flush();
    Ok(())
}

/// Checks and reports one record, and notes its offset as pending commit.
pub(crate) fn member_record(
    shared: &MemberShared,
    message: &BorrowedMessage<'_>,
    scratch: &mut Vec<u8>,
) {
    let (partition, offset) = (message.partition(), message.offset());
    lock(&shared.pending).insert(partition, offset + 1);
    let payload = message.payload().unwrap_or_default();
    let at_ns = wall_ns();
    let (producer, seq, intact) = match read_header(payload) {
        Ok(header) if header.producer == WARMUP_PRODUCER => return,
        Ok(header) => (
            header.producer,
            header.seq,
            check_payload(payload, scratch).is_ok(),
        ),
        Err(_) => (BAD_PRODUCER, offset as u64, false),
    };
    shared.emit(&MemberEvent::Record {
        at_ns,
        partition,
        offset,
        producer,
        seq,
        len: payload.len(),
        intact,
    });
}

/// Commits the assigned partitions in a loop for `seconds`, then reports the counts. Each
/// commit stores a new offset (a counter) for every assigned partition.
///
/// The commits go in rounds of `round`: `round - 1` with `CommitMode::Async`, then one
/// with `CommitMode::Sync`. rust-rdkafka never hands the results of asynchronous commits
/// to the application (its `BaseConsumer` uses librdkafka's event API without an
/// offset-commit callback; rust-rdkafka issue #856), so the synchronous one is the fence:
/// librdkafka sends a member's commits in order on its one coordinator connection and the
/// answers come back in order, so when it returns, every commit before it was answered.
/// Failed asynchronous commits are counted from librdkafka's COMMITFAIL log lines.
pub(crate) fn member_commit_loop(
    consumer: &BaseConsumer<MemberContext>,
    shared: &MemberShared,
    seconds: f64,
    round: u64,
) {
    let failures_before = shared.async_commit_failures.load(Ordering::Relaxed);
    let started_ns = wall_ns();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut accepted, mut failed, mut offsets, mut counter) = (0u64, 0u64, 0u64, 0i64);
    let mut last_partitions = 0u64;
    while Instant::now() < deadline {
        let partitions = lock(&shared.assigned).clone();
        if partitions.is_empty() {
            let _ = consumer.poll(Duration::from_millis(10));
            continue;
        }
        last_partitions = partitions.len() as u64;
        for i in 0..round.max(1) {
            counter += 1;
            let mut list = TopicPartitionList::with_capacity(partitions.len());
            for &partition in &partitions {
                let _ =
                    list.add_partition_offset(&shared.topic, partition, Offset::Offset(counter));
            }
            let mode = if i + 1 == round.max(1) {
                CommitMode::Sync
            } else {
                CommitMode::Async
            };
            match consumer.commit(&list, mode) {
                Ok(()) => {
                    accepted += 1;
                    offsets += last_partitions;
                }
                Err(error) => {
                    if failed == 0 {
                        shared.emit(&MemberEvent::CommitFailed {
                            at_ns: wall_ns(),
                            error: error.to_string(),
                        });
                    }
                    failed += 1;
                }
            }
        }
        // Serves what is queued: log lines (COMMITFAIL), a rebalance.
        for _ in 0..16 {
            let _ = consumer.poll(Duration::ZERO);
        }
    }
    let done_ns = wall_ns();
    // Log lines of the last round.
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        let _ = consumer.poll(Duration::from_millis(20));
    }
    let async_failed = shared.async_commit_failures.load(Ordering::Relaxed) - failures_before;
    shared.emit(&MemberEvent::CommitLoop {
        ok: accepted.saturating_sub(async_failed),
        failed: failed + async_failed,
        partition_offsets: offsets.saturating_sub(async_failed * last_partitions),
        started_ns,
        done_ns,
    });
    shared.flush();
}
