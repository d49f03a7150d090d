//! Group mode: the coordinator's OffsetCommit rate, from librdkafka members and from
//! raw pipelined requests.

use super::*;

/// Phase 3a: `count` librdkafka members of a fresh group, on an empty topic of `count`
/// partitions (one each), commit their partition in a loop (see `member_commit_loop`).
/// Returns the JSON and the OffsetCommit requests per second.
pub(crate) async fn commit_rate_rdkafka(
    args: &Args,
    bootstrap: &str,
    base_topic: &str,
    base_group: &str,
    count: usize,
    tracker: &Arc<Mutex<GroupTracker>>,
    server_pid: Option<u32>,
) -> anyhow::Result<(Value, f64)> {
    let topic = format!("{base_topic}-commits-{count}");
    let group = format!("{base_group}-commits-{count}");
    let partitions = i32::try_from(count).context("too many committing members")?;
    create_topic(bootstrap, &topic, partitions).await?;
    eprintln!(
        "commit rate: {count} librdkafka members in group {group}, rounds of {} async + 1 sync commits, for {:.1} s",
        args.commit_window.saturating_sub(1),
        args.commit_seconds
    );
    let spec = member_spec(args, bootstrap, &topic, &group, true);
    let mut members = Vec::new();
    for i in 0..count {
        members.push(GroupMember::spawn(
            &format!("committer-{count}-{i}"),
            &spec,
            tracker,
        )?);
    }
    let live: Vec<u16> = members.iter().map(|m| m.index).collect();
    ensure!(
        wait_settled(tracker, &live, partitions, Duration::from_secs(60)).await,
        "the committing members did not settle on one assignment within 60 s"
    );
    let before = Samples::take(server_pid);
    let members_before = members_cpu_s(&members);
    let started = Instant::now();
    for member in &mut members {
        member.send(&format!(
            "commit {} {}",
            args.commit_seconds, args.commit_window
        ))?;
    }
    let deadline = started + Duration::from_secs_f64(args.commit_seconds + 60.0);
    loop {
        let done = {
            let tracker = lock(tracker);
            live.iter().all(|&i| {
                let state = &tracker.members[usize::from(i)];
                state.commit_loop.is_some() || state.exited
            })
        };
        if done {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the committing members did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let after = Samples::take(server_pid);
    let members_cpu = members_cpu_s(&members) - members_before;
    let (mut ok, mut failed, mut offsets) = (0u64, 0u64, 0u64);
    let (mut first_ns, mut last_ns) = (u64::MAX, 0u64);
    let mut per_member = Vec::new();
    {
        let tracker = lock(tracker);
        for &i in &live {
            let state = &tracker.members[usize::from(i)];
            if let Some(MemberEvent::CommitLoop {
                ok: member_ok,
                failed: member_failed,
                partition_offsets,
                started_ns,
                done_ns,
            }) = state.commit_loop
            {
                ok += member_ok;
                failed += member_failed;
                offsets += partition_offsets;
                first_ns = first_ns.min(started_ns);
                last_ns = last_ns.max(done_ns);
                per_member.push(json!({
                    "name": state.name,
                    "partitions": state.assignment,
                    "requests_ok": member_ok,
                    "requests_failed": member_failed,
                    "first_failure": state.first_commit_failure,
                }));
            }
        }
    }
    let seconds = last_ns.saturating_sub(first_ns) as f64 / 1e9;
    let per_s = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let requests_s = per_s(ok);
    eprintln!(
        "commit rate (librdkafka): {ok} commits ({offsets} partition offsets) in {seconds:.2} s: {requests_s:.0} commits/s, {failed} failed"
    );
    for member in &mut members {
        let _ = member.send("leave");
    }
    for member in &mut members {
        member.wait_exit(Duration::from_secs(15)).await;
    }
    let json = json!({
        "client": "librdkafka BaseConsumer::commit of the member's assigned partitions, in rounds of (in_flight_per_member - 1) CommitMode::Async then one CommitMode::Sync",
        "topic": topic,
        "group": group,
        "members": count,
        "in_flight_per_member": args.commit_window,
        "seconds": round3(seconds),
        "requests_ok": ok,
        "requests_failed": failed,
        "partition_offsets": offsets,
        "requests_s": round3(requests_s),
        "partition_offsets_s": round3(per_s(offsets)),
        "per_member": per_member,
        "members_cpu_s": round3(members_cpu),
        "members_cores_busy": round3(members_cpu / elapsed.as_secs_f64()),
        "resources": phase_resources(before, after, elapsed),
    });
    Ok((json, requests_s))
}

/// OffsetCommit version of the raw requests (flexible; v9 only adds member epochs).
pub(crate) const RAW_COMMIT_VERSION: i16 = 8;

/// What one raw connection got back.
#[derive(Debug)]
pub(crate) struct RawCommitOutcome {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) latencies_us: Vec<u64>,
    pub(crate) first_error: Option<String>,
    pub(crate) last_answer: Instant,
}

/// Appends one framed OffsetCommit request (standalone: generation -1, no member id)
/// for one partition.
pub(crate) fn encode_offset_commit(
    out: &mut bytes::BytesMut,
    correlation_id: i32,
    group: &GroupId,
    topic: &TopicName,
    partition: i32,
    offset: i64,
) -> anyhow::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(OffsetCommitRequest::KEY)
        .with_request_api_version(RAW_COMMIT_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("shardline-bench")))
        .encode(out, OffsetCommitRequest::header_version(RAW_COMMIT_VERSION))?;
    OffsetCommitRequest::default()
        .with_group_id(group.clone())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic.clone())
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(offset),
                ]),
        ])
        .encode(out, RAW_COMMIT_VERSION)?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// One connection sending OffsetCommit requests until `deadline`, `pipeline` in flight;
/// then it waits for every answer.
pub(crate) async fn raw_commit_connection(
    bootstrap: String,
    group: String,
    topic: String,
    partitions: i32,
    connection: usize,
    pipeline: usize,
    deadline: Instant,
) -> anyhow::Result<RawCommitOutcome> {
    let stream = tokio::net::TcpStream::connect(&bootstrap)
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<(i32, Instant)>();
    let window = Arc::new(Semaphore::new(pipeline));
    let writer_window = Arc::clone(&window);
    let group = GroupId(StrBytes::from_string(group));
    let topic = TopicName(StrBytes::from_string(topic));
    let writer_task = tokio::spawn(async move {
        let mut out = bytes::BytesMut::with_capacity(16 * 1024);
        let mut correlation = 0i32;
        while Instant::now() < deadline {
            let permit = writer_window.acquire().await?;
            permit.forget();
            let mut batch = 1;
            while batch < pipeline {
                match writer_window.try_acquire() {
                    Ok(permit) => {
                        permit.forget();
                        batch += 1;
                    }
                    Err(_) => break,
                }
            }
            out.clear();
            for _ in 0..batch {
                let partition =
                    ((connection as i64 + i64::from(correlation)) % i64::from(partitions)) as i32;
                encode_offset_commit(
                    &mut out,
                    correlation,
                    &group,
                    &topic,
                    partition,
                    i64::from(correlation),
                )?;
                let _ = sent_tx.send((correlation, Instant::now()));
                correlation = correlation.wrapping_add(1);
            }
            writer.write_all(&out).await?;
        }
        // The write half stays open until every answer has been read.
        anyhow::Ok(writer)
    });
    let mut outcome = RawCommitOutcome {
        ok: 0,
        failed: 0,
        latencies_us: Vec::new(),
        first_error: None,
        last_answer: Instant::now(),
    };
    let read = async {
        let mut length = [0u8; 4];
        let mut frame = Vec::new();
        while let Some((correlation, sent)) = sent_rx.recv().await {
            reader.read_exact(&mut length).await?;
            let len = i32::from_be_bytes(length);
            ensure!((0..1 << 20).contains(&len), "response of {len} bytes");
            frame.resize(len as usize, 0);
            reader.read_exact(&mut frame).await?;
            outcome.last_answer = Instant::now();
            outcome.latencies_us.push(sent.elapsed().as_micros() as u64);
            window.add_permits(1);
            let mut body = bytes::Bytes::copy_from_slice(&frame);
            let header = ResponseHeader::decode(
                &mut body,
                OffsetCommitResponse::header_version(RAW_COMMIT_VERSION),
            )?;
            ensure!(
                header.correlation_id == correlation,
                "answer {} where {correlation} was expected",
                header.correlation_id
            );
            let response = OffsetCommitResponse::decode(&mut body, RAW_COMMIT_VERSION)?;
            let error = response
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.error_code)
                .find(|&code| code != 0);
            match error {
                None => outcome.ok += 1,
                Some(code) => {
                    outcome.failed += 1;
                    outcome
                        .first_error
                        .get_or_insert_with(|| format!("error code {code}"));
                }
            }
        }
        anyhow::Ok(())
    };
    if let Err(error) = read.await {
        writer_task.abort();
        return Err(error.context("reading OffsetCommit answers"));
    }
    writer_task.await??;
    Ok(outcome)
}

/// Phase 3b: raw OffsetCommit requests over a few connections, no group member behind
/// them. Returns the JSON and the requests per second.
pub(crate) async fn commit_rate_raw(
    args: &Args,
    bootstrap: &str,
    topic: &str,
    group: &str,
    connections: usize,
    server_pid: Option<u32>,
) -> anyhow::Result<(Value, f64)> {
    let group = format!("{group}-raw-{connections}");
    eprintln!(
        "commit rate: raw OffsetCommit v{RAW_COMMIT_VERSION} requests over {connections} connections, {} in flight each, for {:.1} s",
        args.commit_pipeline, args.commit_seconds
    );
    let before = Samples::take(server_pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.commit_seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|connection| {
            tokio::spawn(raw_commit_connection(
                bootstrap.to_string(),
                group.clone(),
                topic.to_string(),
                args.partitions,
                connection,
                args.commit_pipeline,
                deadline,
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await??);
    }
    let after = Samples::take(server_pid);
    let end = outcomes
        .iter()
        .map(|o| o.last_answer)
        .max()
        .unwrap_or(start);
    let elapsed = end.saturating_duration_since(start);
    let ok: u64 = outcomes.iter().map(|o| o.ok).sum();
    let failed: u64 = outcomes.iter().map(|o| o.failed).sum();
    let first_error = outcomes.iter().find_map(|o| o.first_error.clone());
    let mut latencies: Vec<u64> = outcomes.into_iter().flat_map(|o| o.latencies_us).collect();
    let latency = LatencySummary::from_unsorted(&mut latencies);
    let requests_s = ok as f64 / elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "commit rate (raw): {ok} commits in {:.2} s: {requests_s:.0} commits/s, {failed} failed{}",
        elapsed.as_secs_f64(),
        latency
            .map(|l| format!(", latency {}", l.brief()))
            .unwrap_or_default()
    );
    let json = json!({
        "client": "raw OffsetCommit v8 requests, one partition each, generation -1 (a group without members)",
        "group": group,
        "connections": connections,
        "in_flight_per_connection": args.commit_pipeline,
        "seconds": round3(elapsed.as_secs_f64()),
        "requests_ok": ok,
        "requests_failed": failed,
        "first_error": first_error,
        "requests_s": round3(requests_s),
        "partition_offsets_s": round3(requests_s),
        "latency": latency.map_or(Value::Null, |l| l.to_json()),
        "resources": phase_resources(before, after, elapsed),
    });
    Ok((json, requests_s))
}
