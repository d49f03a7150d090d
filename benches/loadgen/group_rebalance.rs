//! Group mode: members leaving (LeaveGroup or SIGKILL) and the time until their
//! partitions are consumed again.

use super::*;

/// How a member is taken out of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Departure {
    /// It closes its consumer: LeaveGroup.
    Leave,
    /// Its process is SIGKILLed: nothing tells the coordinator.
    Death,
}

/// One departure: who, when, which partitions it had, and when the rest had settled.
#[derive(Debug)]
pub(crate) struct DepartureRecord {
    pub(crate) how: Departure,
    pub(crate) member: u16,
    pub(crate) partitions: Vec<i32>,
    pub(crate) at_ns: u64,
    /// Whether every one of its partitions was consumed again before the timeout.
    pub(crate) resumed: bool,
    /// Whether the survivors settled on a complete assignment afterwards.
    pub(crate) settled: bool,
}

/// Takes `members[position]` out of the group and waits until its partitions are consumed
/// again by the others (bounded by `timeout`) and the survivors have settled.
pub(crate) async fn depart(
    how: Departure,
    members: &mut Vec<GroupMember>,
    position: usize,
    tracker: &Mutex<GroupTracker>,
    partitions: i32,
    timeout: Duration,
    progress: Duration,
) -> anyhow::Result<DepartureRecord> {
    let member = members[position].index;
    let (name, owned, cursor) = {
        let tracker = lock(tracker);
        let state = &tracker.members[usize::from(member)];
        (
            state.name.clone(),
            state.assignment.clone(),
            tracker.receipts.len(),
        )
    };
    eprintln!(
        "rebalance: {} {name} (partitions {owned:?})",
        match how {
            Departure::Leave => "closing (LeaveGroup)",
            Departure::Death => "SIGKILLing",
        }
    );
    let at_ns = wall_ns();
    match how {
        Departure::Leave => members[position].send("leave")?,
        Departure::Death => members[position].kill9()?,
    }
    let start = Instant::now();
    let mut ticker = Ticker::new(progress);
    let mut waiting: Vec<i32> = owned.clone();
    let mut cursor = cursor;
    while !waiting.is_empty() && start.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let tracker = lock(tracker);
        for receipt in &tracker.receipts[cursor..] {
            if receipt.member != member && receipt.at_ns > at_ns {
                waiting.retain(|&p| p != receipt.partition);
            }
        }
        cursor = tracker.receipts.len();
        drop(tracker);
        if ticker.due() {
            eprintln!(
                "rebalance: {:.1} s after {name} went, partitions {waiting:?} not consumed yet",
                start.elapsed().as_secs_f64()
            );
        }
    }
    let resumed = waiting.is_empty();
    if resumed {
        eprintln!(
            "rebalance: {name}'s partitions consumed again after {:.0} ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
    } else {
        eprintln!("rebalance: partitions {waiting:?} still not consumed after {timeout:?}");
    }
    let mut departed = members.remove(position);
    if how == Departure::Leave && !departed.wait_exit(Duration::from_secs(15)).await {
        eprintln!("rebalance: {name} did not exit within 15 s of leaving");
    }
    if how == Departure::Death {
        departed.wait_exit(Duration::from_secs(5)).await;
    }
    drop(departed);
    let live: Vec<u16> = members.iter().map(|m| m.index).collect();
    let settled = wait_settled(tracker, &live, partitions, timeout).await;
    Ok(DepartureRecord {
        how,
        member,
        partitions: owned,
        at_ns,
        resumed,
        settled,
    })
}

pub(crate) fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    round3(to_ns.saturating_sub(from_ns) as f64 / 1e6)
}

/// The figures of one departure, from the receipts (sorted by time).
pub(crate) fn departure_json(
    args: &Args,
    record: &DepartureRecord,
    tracker: &GroupTracker,
    receipts: &[Receipt],
) -> (Value, Option<f64>) {
    let resumed = resumed_at(receipts, &record.partitions, record.member, record.at_ns);
    let per_partition: serde_json::Map<String, Value> = resumed
        .iter()
        .map(|(partition, at)| {
            (
                partition.to_string(),
                at.map_or(Value::Null, |at| json!(ms_between(record.at_ns, at))),
            )
        })
        .collect();
    let all_resumed = resumed.iter().all(|(_, at)| at.is_some());
    let last_resumed = resumed.iter().filter_map(|(_, at)| *at).max();
    let rebalance_ms = last_resumed
        .filter(|_| all_resumed && !resumed.is_empty())
        .map(|at| ms_between(record.at_ns, at));
    // The survivors' new assignment: the last of their first assignments after the event.
    let assigned_ms = tracker
        .members
        .iter()
        .enumerate()
        .filter(|(i, m)| *i != usize::from(record.member) && !m.assignments.is_empty())
        .filter_map(|(_, m)| {
            m.assignments
                .iter()
                .find(|(at, _)| *at > record.at_ns)
                .map(|(at, _)| *at)
        })
        .max()
        .map(|at| ms_between(record.at_ns, at));
    let window_end = last_resumed.unwrap_or(record.at_ns) + 1_000_000_000;
    let all_partitions: Vec<i32> = (0..args.partitions).collect();
    let stall = longest_stall(receipts, &all_partitions, record.at_ns, window_end);
    let state = &tracker.members[usize::from(record.member)];
    let session = f64::from(args.session_timeout_ms);
    let max_poll = f64::from(args.max_poll_interval_ms);
    let limit_ms = TARGET_REBALANCE_FACTOR as f64 * session.min(max_poll);
    let json = json!({
        "member": state.name,
        "how": match record.how {
            Departure::Leave => "closed its consumer: LeaveGroup",
            Departure::Death => "SIGKILL of its process: no LeaveGroup, no more heartbeats",
        },
        "partitions": record.partitions,
        "resumed_ms": per_partition,
        "rebalance_ms": rebalance_ms,
        "survivors_assigned_ms": assigned_ms,
        "longest_stall_any_partition": stall.map(|(partition, ns)| json!({
            "partition": partition,
            "ms": round3(ns as f64 / 1e6),
            "window": "from the event to 1 s after the last of its partitions resumed",
        })),
        "close_ms": state.left.map(|(started, done)| ms_between(started, done)),
        "survivors_settled": record.settled,
        "session_timeout_ms": args.session_timeout_ms,
        "heartbeat_interval_ms": args.heartbeat_interval_ms(),
        "max_poll_interval_ms": args.max_poll_interval_ms,
        "vs_session_timeout": rebalance_ms.map(|ms| round3(ms / session)),
        "vs_max_poll_interval": rebalance_ms.map(|ms| round3(ms / max_poll)),
        "limit_ms": limit_ms,
        "met": rebalance_ms.map(|ms| ms <= limit_ms),
    });
    (json, rebalance_ms)
}

/// Runs the rebalance phase's departures while the producer writes: waits until every
/// partition is being consumed and the group has settled, then (after `steady` each
/// time) closes the second member and SIGKILLs the next.
pub(crate) async fn rebalance_departures(
    args: &Args,
    tracker: &Mutex<GroupTracker>,
    members: &mut Vec<GroupMember>,
    start_ns: u64,
    timeout: Duration,
) -> anyhow::Result<Vec<DepartureRecord>> {
    let partitions = args.partitions;
    let progress = Duration::from_secs_f64(args.progress_secs);
    let steady = Duration::from_secs_f64(args.steady_secs);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let flowing = {
            let tracker = lock(tracker);
            let mut seen = vec![false; partitions as usize];
            for receipt in tracker.receipts.iter().filter(|r| r.at_ns > start_ns) {
                if let Some(seen) = seen.get_mut(receipt.partition as usize) {
                    *seen = true;
                }
            }
            seen.iter().all(|&s| s)
        };
        if flowing {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the new records did not reach every partition's consumer within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live: Vec<u16> = members.iter().map(|m| m.index).collect();
    ensure!(
        wait_settled(tracker, &live, partitions, Duration::from_secs(30)).await,
        "the group did not settle on one assignment within 30 s"
    );
    // The members' heartbeats keep the phase they got at the last rebalance, and how long
    // a departure goes unnoticed depends on where in that cycle it falls: a pseudo-random
    // extra wait of up to one heartbeat interval keeps runs from all landing on the same
    // spot of it.
    let heartbeat_ms = u64::from(args.heartbeat_interval_ms()).max(1);
    let jitter = || Duration::from_millis(wall_ns() / 1_000 % heartbeat_ms);
    tokio::time::sleep(steady + jitter()).await;
    let mut departures = Vec::new();
    departures.push(
        depart(
            Departure::Leave,
            members,
            1,
            tracker,
            partitions,
            timeout,
            progress,
        )
        .await?,
    );
    if members.len() >= 2 {
        tokio::time::sleep(steady + jitter()).await;
        departures.push(
            depart(
                Departure::Death,
                members,
                1,
                tracker,
                partitions,
                timeout,
                progress,
            )
            .await?,
        );
    }
    tokio::time::sleep(steady).await;
    Ok(departures)
}

/// Phase 2: produce at a moderate rate while one member leaves and another dies; the
/// figures of both, and whether every record still arrived (exactly once, except those
/// the dead member had received but not committed). Returns (JSON, verified, leave ms,
/// death ms).
pub(crate) async fn rebalance_phase(
    args: &Args,
    bootstrap: &str,
    topic: &str,
    tracker: &Mutex<GroupTracker>,
    members: &mut Vec<GroupMember>,
    server_pid: Option<u32>,
) -> anyhow::Result<(Value, bool, Option<f64>, Option<f64>)> {
    let partitions = args.partitions;
    let longest_timeout = args.session_timeout_ms.max(args.max_poll_interval_ms);
    let timeout = Duration::from_millis(u64::from(longest_timeout) * 3) + Duration::from_secs(30);
    eprintln!(
        "rebalance: producing {:.0} rec/s round-robin over {partitions} partitions",
        args.rebalance_rate
    );
    let producer = Arc::new(new_producer(bootstrap, &producer_settings(args))?);
    for partition in 0..partitions {
        send_warmup(
            &producer,
            topic,
            args.record_bytes,
            partition as u64,
            Some(partition),
        )
        .await?;
    }
    let shared = Arc::new(ProduceShared::default());
    let stop = Arc::new(AtomicBool::new(false));
    let before = Samples::take(server_pid);
    let started = Instant::now();
    let start_ns = wall_ns();
    let task = tokio::spawn(paced_partition_producer(
        Arc::clone(&producer),
        Arc::from(topic),
        partitions,
        args.rebalance_rate,
        args.record_bytes,
        Arc::clone(&stop),
        Arc::clone(&shared),
    ));
    let departures = rebalance_departures(args, tracker, members, start_ns, timeout).await;
    stop.store(true, Ordering::Relaxed);
    let sent = task.await??;
    let departures = departures?;
    let produce_seconds = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = || shared.acked.load(Ordering::Relaxed) + shared.errors.load(Ordering::Relaxed);
    while delivered() < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (acked, errors) = (
        shared.acked.load(Ordering::Relaxed),
        shared.errors.load(Ordering::Relaxed),
    );
    eprintln!(
        "rebalance: produced {sent} records ({acked} acknowledged); waiting for the rest to be consumed"
    );
    // Everything acknowledged should arrive; give up after 15 s without progress.
    let mut last = (Instant::now(), 0u64);
    loop {
        let unique = lock(tracker).ledger.unique(REBALANCE_PRODUCER);
        if unique >= acked || last.0.elapsed() > Duration::from_secs(15) {
            break;
        }
        if unique != last.1 {
            last = (Instant::now(), unique);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let after = Samples::take(server_pid);

    let tracker = lock(tracker);
    let mut receipts = tracker.receipts.clone();
    receipts.sort_by_key(|r| r.at_ns);
    let mut json = serde_json::Map::new();
    let (mut leave_ms, mut death_ms) = (None, None);
    for departure in &departures {
        let (figures, ms) = departure_json(args, departure, &tracker, &receipts);
        match departure.how {
            Departure::Leave => {
                json.insert("leave".into(), figures);
                leave_ms = ms;
            }
            Departure::Death => {
                json.insert("death".into(), figures);
                death_ms = ms;
            }
        }
    }
    // A record the dead member received but had not committed is delivered again to its
    // partition's next owner: expected (at-least-once). Any other repeat is not.
    let victim = departures
        .iter()
        .find(|d| d.how == Departure::Death)
        .map(|d| d.member);
    let (mut expected, mut unexpected, mut first_unexpected) = (0u64, 0u64, None);
    for duplicate in tracker
        .duplicates
        .iter()
        .filter(|d| d.producer == REBALANCE_PRODUCER)
    {
        let redelivered = victim.is_some_and(|victim| {
            duplicate.first_member == victim
                && tracker.members[usize::from(victim)]
                    .committed
                    .get(&duplicate.partition)
                    .is_none_or(|&next| duplicate.offset >= next)
        });
        if redelivered {
            expected += 1;
        } else {
            unexpected += 1;
            first_unexpected.get_or_insert_with(|| {
                format!(
                    "seq {} (partition {} offset {}) to {} and again to {}",
                    duplicate.seq,
                    duplicate.partition,
                    duplicate.offset,
                    tracker.members[usize::from(duplicate.first_member)].name,
                    tracker.members[usize::from(duplicate.member)].name
                )
            });
        }
    }
    let consumed = tracker.ledger.unique(REBALANCE_PRODUCER);
    let missing = tracker.ledger.missing(REBALANCE_PRODUCER, sent);
    let verified = errors == 0 && missing == 0 && unexpected == 0;
    let all_measured = departures.iter().all(|d| d.resumed);
    eprintln!(
        "rebalance: consumed {consumed} of {sent}, {missing} missing, {expected} redelivered after the kill, {unexpected} other duplicates"
    );
    json.insert(
        "produce_rate_records_s".into(),
        json!(round3(sent as f64 / produce_seconds.as_secs_f64())),
    );
    json.insert("records_sent".into(), json!(sent));
    json.insert("records_acked".into(), json!(acked));
    json.insert("delivery_errors".into(), json!(errors));
    json.insert("records_consumed".into(), json!(consumed));
    json.insert("missing".into(), json!(missing));
    json.insert("redelivered_after_death".into(), json!(expected));
    json.insert("duplicates_unexpected".into(), json!(unexpected));
    json.insert("first_unexpected_duplicate".into(), json!(first_unexpected));
    json.insert("verified".into(), json!(verified));
    json.insert("resources".into(), phase_resources(before, after, elapsed));
    Ok((
        Value::Object(json),
        verified && all_measured,
        leave_ms,
        death_ms,
    ))
}
