//! Group mode: the load generator's side.

use super::*;

/// What the load generator knows of one member, from its reports.
#[derive(Debug, Default)]
pub(crate) struct MemberState {
    pub(crate) name: String,
    pub(crate) pid: u32,
    /// Its partitions, as of its last rebalance event.
    pub(crate) assignment: Vec<i32>,
    /// Whether its last rebalance event was an assignment (not a revocation).
    pub(crate) assigned: bool,
    /// Every assignment: when, and which partitions.
    pub(crate) assignments: Vec<(u64, Vec<i32>)>,
    pub(crate) revocations: u64,
    pub(crate) last_rebalance_ns: u64,
    /// Per partition, the next offset of its last successful commit.
    pub(crate) committed: HashMap<i32, i64>,
    pub(crate) commits: u64,
    pub(crate) commit_failures: u64,
    pub(crate) first_commit_failure: Option<String>,
    pub(crate) records: u64,
    pub(crate) errors: u64,
    pub(crate) left: Option<(u64, u64)>,
    pub(crate) commit_loop: Option<MemberEvent>,
    pub(crate) exited: bool,
}

/// A record delivered more than once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Duplicate {
    pub(crate) producer: u32,
    pub(crate) seq: u64,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) first_member: u16,
    pub(crate) member: u16,
}

/// Everything the members reported, folded as it arrives.
#[derive(Debug, Default)]
pub(crate) struct GroupTracker {
    pub(crate) record_bytes: usize,
    pub(crate) members: Vec<MemberState>,
    pub(crate) ledger: Ledger,
    /// Producers of the throughput phase are `0..phase1_producers`.
    pub(crate) phase1_producers: u32,
    pub(crate) phase1_first_ns: Option<u64>,
    pub(crate) phase1_last_ns: u64,
    /// Records reported, duplicates included.
    pub(crate) received: u64,
    pub(crate) bad_payloads: u64,
    pub(crate) wrong_size: u64,
    pub(crate) unexpected: u64,
    pub(crate) duplicates: Vec<Duplicate>,
    /// Receipts of the rebalance phase's records, in arrival order.
    pub(crate) receipts: Vec<Receipt>,
    pub(crate) first_problem: Option<String>,
}

impl GroupTracker {
    pub(crate) fn problem(&mut self, what: String) {
        self.first_problem.get_or_insert(what);
    }

    pub(crate) fn apply(&mut self, member: u16, event: MemberEvent) {
        let index = usize::from(member);
        match event {
            MemberEvent::Record {
                at_ns,
                partition,
                offset,
                producer,
                seq,
                len,
                intact,
            } => {
                self.received += 1;
                self.members[index].records += 1;
                if len != self.record_bytes {
                    self.wrong_size += 1;
                    self.problem(format!(
                        "partition {partition} offset {offset}: {len} bytes"
                    ));
                }
                if !intact {
                    self.bad_payloads += 1;
                    self.problem(format!(
                        "partition {partition} offset {offset}: payload does not match"
                    ));
                    return;
                }
                match self.ledger.record(producer, seq, member) {
                    Sighting::First => {}
                    Sighting::Duplicate { first_member } => self.duplicates.push(Duplicate {
                        producer,
                        seq,
                        partition,
                        offset,
                        first_member,
                        member,
                    }),
                    Sighting::Unexpected => {
                        self.unexpected += 1;
                        self.problem(format!("unexpected producer {producer} seq {seq}"));
                    }
                }
                if producer < self.phase1_producers {
                    self.phase1_first_ns =
                        Some(self.phase1_first_ns.map_or(at_ns, |f| f.min(at_ns)));
                    self.phase1_last_ns = self.phase1_last_ns.max(at_ns);
                } else if producer == REBALANCE_PRODUCER {
                    self.receipts.push(Receipt {
                        at_ns,
                        partition,
                        member,
                    });
                }
            }
            MemberEvent::Assigned { at_ns, partitions } => {
                let state = &mut self.members[index];
                state.assignment.clone_from(&partitions);
                state.assigned = true;
                state.assignments.push((at_ns, partitions));
                state.last_rebalance_ns = at_ns;
            }
            MemberEvent::Revoked { at_ns } => {
                let state = &mut self.members[index];
                state.assignment.clear();
                state.assigned = false;
                state.revocations += 1;
                state.last_rebalance_ns = at_ns;
            }
            MemberEvent::Committed { offsets, .. } => {
                let state = &mut self.members[index];
                state.commits += 1;
                state.committed.extend(offsets);
            }
            MemberEvent::CommitFailed { error, .. } => {
                let state = &mut self.members[index];
                state.commit_failures += 1;
                state.first_commit_failure.get_or_insert(error);
            }
            MemberEvent::Error { .. } => self.members[index].errors += 1,
            MemberEvent::Left {
                started_ns,
                done_ns,
            } => self.members[index].left = Some((started_ns, done_ns)),
            event @ MemberEvent::CommitLoop { .. } => {
                self.members[index].commit_loop = Some(event);
            }
        }
    }

    /// Commits (successful, failed) reported by every member so far.
    pub(crate) fn commit_counts(&self) -> (u64, u64) {
        self.members.iter().fold((0, 0), |(ok, failed), m| {
            (ok + m.commits, failed + m.commit_failures)
        })
    }

    /// Whether the `live` members hold one complete assignment and none of them has seen
    /// a rebalance event for `quiet`.
    pub(crate) fn settled(&self, live: &[u16], partitions: i32, quiet: Duration) -> bool {
        let members: Vec<&MemberState> = live
            .iter()
            .map(|&i| &self.members[usize::from(i)])
            .collect();
        let last = members
            .iter()
            .map(|m| m.last_rebalance_ns)
            .max()
            .unwrap_or(0);
        members.iter().all(|m| m.assigned)
            && assignment_complete(members.iter().map(|m| m.assignment.as_slice()), partitions)
            && wall_ns().saturating_sub(last) >= quiet.as_nanos() as u64
    }
}

/// A member process, seen from the load generator. Dropping it closes its stdin (the
/// member leaves the group and exits), and kills it if it has not exited within 15 s.
pub(crate) struct GroupMember {
    pub(crate) index: u16,
    pub(crate) pid: u32,
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) reader: Option<std::thread::JoinHandle<()>>,
}

impl GroupMember {
    pub(crate) fn spawn(
        name: &str,
        spec: &Value,
        tracker: &Arc<Mutex<GroupTracker>>,
    ) -> anyhow::Result<GroupMember> {
        let mut spec = spec.clone();
        spec["settings"]["client.id"] = json!(name);
        let mut command = Command::new(std::env::current_exe().context("this program's path")?);
        command
            .env(MEMBER_ENV, spec.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, like the server: Ctrl-C reaches only us.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting member {name}"))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("member stdout")?;
        let stderr = child.stderr.take().context("member stderr")?;
        let stdin = child.stdin.take();
        let index = {
            let mut tracker = lock(tracker);
            tracker.members.push(MemberState {
                name: name.to_string(),
                pid,
                ..MemberState::default()
            });
            u16::try_from(tracker.members.len() - 1).context("too many members")?
        };
        let label = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{label}] {line}");
            }
        });
        let tracker = Arc::clone(tracker);
        let label = name.to_string();
        let reader = std::thread::spawn(move || {
            let mut shown = 0;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match MemberEvent::parse(&line) {
                    Some(event) => {
                        if let MemberEvent::Error { error, .. }
                        | MemberEvent::CommitFailed { error, .. } = &event
                            && shown < 20
                        {
                            shown += 1;
                            eprintln!("[{label}] {error}");
                        }
                        lock(&tracker).apply(index, event);
                    }
                    None => eprintln!("[{label}] {line}"),
                }
            }
            lock(&tracker).members[usize::from(index)].exited = true;
        });
        Ok(GroupMember {
            index,
            pid,
            child,
            stdin,
            reader: Some(reader),
        })
    }

    pub(crate) fn send(&mut self, command: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("member stdin already closed")?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        Ok(())
    }

    /// SIGKILL: no LeaveGroup, no more heartbeats, connections reset by the kernel.
    pub(crate) fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("killing a member")?;
        self.child.wait().context("reaping a member")?;
        Ok(())
    }

    /// Waits (without blocking the runtime) until the process exited and its reports are
    /// all read.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(reader) = self.reader.take() {
            while !reader.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = reader.join();
        }
        true
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() >= deadline {
                eprintln!(
                    "member pid {} did not leave within 15 s; killing it",
                    self.pid
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// CPU seconds used so far by the member processes still running.
pub(crate) fn members_cpu_s(members: &[GroupMember]) -> f64 {
    members
        .iter()
        .filter_map(|m| ProcSample::take(Some(m.pid)))
        .map(|s| s.cpu_seconds())
        .sum()
}

/// The JSON spec a member process gets in `MEMBER_ENV`.
pub(crate) fn member_spec(
    args: &Args,
    bootstrap: &str,
    topic: &str,
    group: &str,
    from_latest: bool,
) -> Value {
    json!({
        "bootstrap": bootstrap,
        "topic": topic,
        "record_bytes": args.record_bytes,
        "batch_max": args.commit_batch_max,
        "settings": settings_json(&member_settings(args, group, from_latest)),
    })
}

/// Waits until `live` members have settled on one assignment (see
/// [`GroupTracker::settled`]); false on timeout.
pub(crate) async fn wait_settled(
    tracker: &Mutex<GroupTracker>,
    live: &[u16],
    partitions: i32,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if lock(tracker).settled(live, partitions, Duration::from_millis(500)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Produces `rate` records per second, record `seq` to partition `seq % partitions`,
/// until `stop`; returns how many were sent. Deliveries are counted in `shared`.
pub(crate) async fn paced_partition_producer(
    producer: Arc<FutureProducer>,
    topic: Arc<str>,
    partitions: i32,
    rate: f64,
    record_bytes: usize,
    stop: Arc<AtomicBool>,
    shared: Arc<ProduceShared>,
) -> anyhow::Result<u64> {
    let mut payload = vec![0u8; record_bytes];
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if seq >= (start.elapsed().as_secs_f64() * rate) as u64 {
            ticks.tick().await;
            continue;
        }
        fill_payload(
            &mut payload,
            PayloadHeader {
                producer: REBALANCE_PRODUCER,
                seq,
                sent_ns: now_ns(),
            },
        );
        let key = seq.to_be_bytes();
        let record = FutureRecord::to(&topic)
            .key(&key[..])
            .payload(&payload[..])
            .partition((seq % partitions as u64) as i32);
        let delivery = match producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            Err((error, _)) => bail!("rebalance producer: enqueueing record {seq}: {error}"),
        };
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            match delivery.await {
                Ok(Ok(_)) => {
                    shared.acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err((error, _))) => shared.record_error(format!("delivery failed: {error}")),
                Err(_) => shared.record_error("delivery future cancelled".to_string()),
            }
        });
        seq += 1;
    }
    Ok(seq)
}

/// Group mode. Returns the mode's JSON fields and whether everything checked out.
pub(crate) async fn group_mode(
    args: &Args,
    bootstrap: &str,
    server_pid: Option<u32>,
) -> anyhow::Result<(serde_json::Map<String, Value>, bool)> {
    let mut fields = serde_json::Map::new();
    let progress = Duration::from_secs_f64(args.progress_secs);
    let partitions = args.partitions;
    let topic = default_topic(args, "");
    let group = format!("{topic}-group");
    create_topic(bootstrap, &topic, partitions).await?;
    fields.insert("topic".into(), json!(topic));
    fields.insert("group".into(), json!(group));

    // Phase 1: produce N records, then G members consume them all.
    let per_producer = split_counts(args.records, args.producers);
    let tracker = Arc::new(Mutex::new(GroupTracker {
        record_bytes: args.record_bytes,
        phase1_producers: per_producer.len() as u32,
        ..GroupTracker::default()
    }));
    {
        let mut tracker = lock(&tracker);
        for (id, &count) in per_producer.iter().enumerate() {
            tracker.ledger.expect(id as u32, count);
        }
        tracker
            .ledger
            .expect(REBALANCE_PRODUCER, u64::from(u32::MAX));
    }
    eprintln!(
        "produce: topic {topic}, {partitions} partitions, {} records of {} bytes, {} producer(s)",
        args.records, args.record_bytes, args.producers
    );
    let pacings = per_producer
        .iter()
        .map(|&count| Pacing::Flat { count })
        .collect();
    let before = Samples::take(server_pid);
    let mut produced =
        produce_phase("produce", args, bootstrap, &topic, pacings, server_pid).await?;
    let after_produce = Samples::take(server_pid);
    let mut produce_json = produced.json();
    produce_json["resources"] = phase_resources(before, after_produce, produced.elapsed);
    fields.insert("produce".into(), produce_json);

    eprintln!(
        "consume: {} members in group {group}, one synchronous commit per poll batch",
        args.group_members
    );
    let spec = member_spec(args, bootstrap, &topic, &group, false);
    let spawn_ns = wall_ns();
    let spawned = Instant::now();
    let mut members = Vec::new();
    for i in 0..args.group_members {
        members.push(GroupMember::spawn(&format!("member-{i}"), &spec, &tracker)?);
    }
    let phase1_unique = |tracker: &GroupTracker| -> u64 {
        (0..tracker.phase1_producers)
            .map(|p| tracker.ledger.unique(p))
            .sum()
    };
    let mut ticker = Ticker::new(progress);
    let mut last_change = (Instant::now(), 0u64);
    let mut last_report = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (unique, received, all_exited) = {
            let tracker = lock(&tracker);
            (
                phase1_unique(&tracker),
                tracker.received,
                tracker.members.iter().all(|m| m.exited),
            )
        };
        if unique >= args.records {
            break;
        }
        if received != last_change.1 {
            last_change = (Instant::now(), received);
        }
        if last_change.0.elapsed() > Duration::from_secs(30) {
            eprintln!("consume: nothing received for 30 s, giving up");
            break;
        }
        if all_exited {
            eprintln!("consume: every member exited");
            break;
        }
        if ticker.due() {
            let rate = (unique - last_report.1) as f64 / last_report.0.elapsed().as_secs_f64();
            eprintln!(
                "consume: {unique} of {}: {rate:.0} rec/s, {:.1} MB/s",
                args.records,
                rate * args.record_bytes as f64 / 1e6
            );
            last_report = (Instant::now(), unique);
        }
    }
    let consume_wall = spawned.elapsed();
    let after_consume = Samples::take(server_pid);
    let members_cpu = members_cpu_s(&members);
    let phase1_ok = {
        let tracker = lock(&tracker);
        let unique = phase1_unique(&tracker);
        let missing: u64 = per_producer
            .iter()
            .enumerate()
            .map(|(id, &count)| tracker.ledger.missing(id as u32, count))
            .sum();
        let duplicates = tracker.duplicates.len() as u64;
        let first_ns = tracker.phase1_first_ns.unwrap_or(spawn_ns);
        let elapsed = Duration::from_nanos(tracker.phase1_last_ns.saturating_sub(first_ns));
        let bytes = unique * args.record_bytes as u64;
        let (commits, commit_failures) = tracker.commit_counts();
        let verified = missing == 0
            && duplicates == 0
            && tracker.bad_payloads == 0
            && tracker.wrong_size == 0
            && tracker.unexpected == 0;
        let seconds = elapsed.as_secs_f64().max(1e-9);
        eprintln!(
            "consume: {unique} records in {seconds:.2} s: {:.1} MB/s, {commits} commits ({:.0}/s), verified: {verified}{}",
            mb_per_s(bytes, elapsed),
            commits as f64 / seconds,
            tracker
                .first_problem
                .as_ref()
                .map(|p| format!(" (first problem: {p})"))
                .unwrap_or_default()
        );
        let mut consume_json = json!({
            "members": args.group_members,
            "records": unique,
            "received": tracker.received,
            "payload_bytes": bytes,
            "seconds": round3(elapsed.as_secs_f64()),
            "first_record_after_s": round3(first_ns.saturating_sub(spawn_ns) as f64 / 1e9),
            "mb_s": round3(mb_per_s(bytes, elapsed)),
            "records_s": round3(unique as f64 / seconds),
            "commits": commits,
            "commit_failures": commit_failures,
            "commits_s": round3(commits as f64 / seconds),
            "records_per_commit": round3(unique as f64 / (commits.max(1)) as f64),
            "verified": verified,
            "missing": missing,
            "duplicates": duplicates,
            "bad_payloads": tracker.bad_payloads,
            "wrong_size": tracker.wrong_size,
            "unexpected": tracker.unexpected,
            "first_problem": tracker.first_problem,
            "per_member": tracker.members.iter().map(|m| json!({
                "name": m.name,
                "pid": m.pid,
                "records": m.records,
                "commits": m.commits,
                "commit_failures": m.commit_failures,
                "first_commit_failure": m.first_commit_failure,
                "assignments": m.assignments.len(),
                "partitions": m.assignment,
                "errors": m.errors,
            })).collect::<Vec<_>>(),
            "resources": phase_resources(after_produce, after_consume, consume_wall),
            "members_cpu_s": round3(members_cpu),
            "members_cores_busy": round3(members_cpu / consume_wall.as_secs_f64()),
        });
        consume_json["resources"]["wall_s"] = json!(round3(consume_wall.as_secs_f64()));
        fields.insert("consume".into(), consume_json);
        produced.errors == 0 && produced.records == args.records && verified
    };

    // Phase 2: a leave and a death while a producer writes.
    let (mut leave_ms, mut death_ms, mut phase2_ok) = (None, None, true);
    if members.len() >= 2 {
        let (json, ok, leave, death) =
            rebalance_phase(args, bootstrap, &topic, &tracker, &mut members, server_pid).await?;
        fields.insert("rebalance".into(), json);
        (leave_ms, death_ms, phase2_ok) = (leave, death, ok);
    } else {
        eprintln!("rebalance: skipped (needs at least 2 members; 3 for the kill)");
    }
    eprintln!("commit rate: closing the remaining members");
    for member in &mut members {
        let _ = member.send("leave");
    }
    for member in &mut members {
        member.wait_exit(Duration::from_secs(15)).await;
    }
    drop(members);

    // Phase 3: the coordinator's commit rate.
    let mut commits = serde_json::Map::new();
    let (mut rdkafka_s, mut fewest_members) = (None, None);
    let mut rdkafka = Vec::new();
    let mut rdkafka_by_members = serde_json::Map::new();
    for &count in args.commit_members.iter().filter(|&&c| c > 0) {
        let (json, per_s) =
            commit_rate_rdkafka(args, bootstrap, &topic, &group, count, &tracker, server_pid)
                .await?;
        rdkafka.push(json);
        rdkafka_by_members.insert(count.to_string(), json!(round3(per_s)));
        rdkafka_s = Some(rdkafka_s.map_or(per_s, |best: f64| best.max(per_s)));
        if per_s >= TARGET_COMMITS_PER_S {
            fewest_members = Some(fewest_members.map_or(count, |f: usize| f.min(count)));
        }
    }
    if !rdkafka.is_empty() {
        commits.insert("rdkafka".into(), json!(rdkafka));
    }
    let (mut raw_s, mut fewest_meeting) = (None, None);
    let mut raw = Vec::new();
    let mut raw_by_connections = serde_json::Map::new();
    for &connections in args.commit_connections.iter().filter(|&&c| c > 0) {
        let (json, per_s) =
            commit_rate_raw(args, bootstrap, &topic, &group, connections, server_pid).await?;
        raw.push(json);
        raw_by_connections.insert(connections.to_string(), json!(round3(per_s)));
        raw_s = Some(raw_s.map_or(per_s, |best: f64| best.max(per_s)));
        if per_s >= TARGET_COMMITS_PER_S {
            fewest_meeting =
                Some(fewest_meeting.map_or(connections, |f: usize| f.min(connections)));
        }
    }
    if !raw.is_empty() {
        commits.insert("raw".into(), json!(raw));
    }
    fields.insert("commits".into(), Value::Object(commits));

    let limit_ms = (TARGET_REBALANCE_FACTOR
        * u64::from(args.session_timeout_ms.min(args.max_poll_interval_ms)))
        as f64;
    fields.insert(
        "targets".into(),
        json!({
            "rebalance_limit_ms": limit_ms,
            "rebalance_limit": format!("{TARGET_REBALANCE_FACTOR} x min(session.timeout.ms, max.poll.interval.ms)"),
            "leave_rebalance_ms": leave_ms,
            "leave_met": leave_ms.map(|ms| ms <= limit_ms),
            "death_rebalance_ms": death_ms,
            "death_met": death_ms.map(|ms| ms <= limit_ms),
            "commits_s_min": TARGET_COMMITS_PER_S,
            "commits_rdkafka_s_by_members": rdkafka_by_members,
            "commits_rdkafka_best_s": rdkafka_s.map(round3),
            "commits_rdkafka_met": rdkafka_s.map(|s| s >= TARGET_COMMITS_PER_S),
            "commits_rdkafka_fewest_members_meeting": fewest_members,
            "commits_raw_s_by_connections": raw_by_connections,
            "commits_raw_best_s": raw_s.map(round3),
            "commits_raw_met": raw_s.map(|s| s >= TARGET_COMMITS_PER_S),
            "commits_raw_fewest_connections_meeting": fewest_meeting,
        }),
    );
    Ok((fields, phase1_ok && phase2_ok))
}
