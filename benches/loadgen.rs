//! `shardline-bench`: an end-to-end load generator for a Kafka-wire server, driving it with
//! librdkafka (the `rdkafka` crate) the way real clients do.
//!
//! Modes:
//! - `produce`: produce N records with acks=all, measure throughput and ack latency, read
//!   them all back and verify every byte; in the same run, measure the disk with
//!   sequential 1 MiB writes + fdatasync (the baseline the produce rate is compared to)
//!   and with 4 KiB writes + fdatasync (fsync latency).
//! - `latency`: produce at a fixed rate (default: a quarter of the peak measured by a
//!   short produce phase) while a consumer reads the same topic; report ack and
//!   end-to-end latency.
//! - `group`: a consumer group of G members (each its own process) reading a topic of P
//!   partitions: throughput with one synchronous commit per poll batch and an
//!   exactly-once check; the time until a member's partitions are consumed again after it
//!   leaves and after it is SIGKILLed; and the coordinator's OffsetCommit rate, from
//!   librdkafka members and from raw pipelined requests.
//! - `cold`: produce into a topic whose segments are all uploaded to the object store and
//!   deleted locally, then read it with a fresh consumer (cold) and again (warm block
//!   cache), against sequential 1 MiB ranged GETs and whole-object PUTs of the same
//!   objects with the same client library (`object_store`). The store is the embedded
//!   `file://` default, or with `--cold-store s3` a real S3 HTTP endpoint (testkit's
//!   in-process s3s server) that the server reaches over loopback.
//!
//! Progress goes to stderr; exactly one JSON line with every figure goes to stdout.
//! See benches/README.md.
//!
//! This file holds the arguments and `main`; each concern is a module under `loadgen/`:
//! `sys` (clock, /proc sampling, machine facts), `server` (the spawned server), `disk`
//! (baselines), `clients` (librdkafka settings), `produce`, `consume`, `modes` (produce
//! and latency), `group_member` (the member process), `group` (trackers and the mode),
//! `group_rebalance`, `group_commits`, and `cold`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{
    Decodable as _, Encodable as _, HeaderVersion as _, Request as _, StrBytes,
};
use object_store::{ObjectStore, ObjectStoreExt as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer as _, ProducerContext,
    ThreadedProducer,
};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use shardline_bench::{
    LatencySummary, Ledger, MemberEvent, PAYLOAD_HEADER_BYTES, PayloadHeader, Receipt, Sighting,
    assignment_complete, check_payload, fill_payload, longest_stall, mb_per_s, mount_for_path,
    proc_field, read_header, resumed_at, round3, set_sent_ns, stat_cpu_ticks, summary_json,
    wall_ns,
};
use shardline_testkit::S3Server;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;

/// Producer index marking warm-up records, which consumers skip.
const WARMUP_PRODUCER: u32 = u32::MAX;
/// The targets, echoed in the JSON next to the measured figures.
const TARGET_PRODUCE_VS_DISK: f64 = 0.5;
const TARGET_RSS_MIB: f64 = 512.0;
const TARGET_ACK_P99_US: u64 = 10_000;
const TARGET_E2E_P50_US: u64 = 5_000;
/// Group mode: OffsetCommit requests per second the coordinator should sustain.
const TARGET_COMMITS_PER_S: f64 = 20_000.0;
/// Group mode: a rebalance should complete within this many times the clients' timeout.
const TARGET_REBALANCE_FACTOR: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Throughput and ack latency of acks=all produce, then a verified read-back, plus the
    /// disk baselines.
    Produce,
    /// Ack and end-to-end latency at a fixed produce rate.
    Latency,
    /// A consumer group: throughput, rebalance times after a leave and a crash, and the
    /// coordinator's commit rate.
    Group,
    /// Kafka consumption of a stream whose data is all in the object store (cold, then
    /// warm through the block cache), against reading and writing the same objects
    /// directly.
    Cold,
}

/// Where cold mode's server tiers its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColdStore {
    /// The embedded default, `file://<data_dir>/objects`.
    File,
    /// An S3 HTTP endpoint served by this process (s3s over a local directory).
    S3,
}

impl ColdStore {
    fn name(self) -> &'static str {
        match self {
            ColdStore::File => "file",
            ColdStore::S3 => "s3",
        }
    }
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Latency => "latency",
            Mode::Group => "group",
            Mode::Cold => "cold",
        }
    }
}

/// Which rdkafka producer API drives the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientApi {
    /// `FutureProducer`: each delivery is a future, awaited by its own tokio task.
    Future,
    /// `ThreadedProducer` with a delivery callback: less client CPU per record.
    Threaded,
}

impl ClientApi {
    fn name(self) -> &'static str {
        match self {
            ClientApi::Future => "future",
            ClientApi::Threaded => "threaded",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "shardline-bench",
    about = "End-to-end load generator for shardline (librdkafka clients). One JSON line on stdout."
)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Produce)]
    mode: Mode,
    /// HOST:PORT of a running server.
    #[arg(long, required_unless_present = "spawn_server")]
    bootstrap: Option<String>,
    /// Path of a `shardline` binary to start (and stop) for this run, on a fresh data dir
    /// under --data-dir-root with ephemeral ports.
    #[arg(long, conflicts_with = "bootstrap")]
    spawn_server: Option<PathBuf>,
    /// PID of the server given with --bootstrap, to report its RSS and CPU time.
    #[arg(long, requires = "bootstrap")]
    server_pid: Option<u32>,
    /// Where the spawned server's data dir and the disk-baseline file go (created if
    /// missing); both are deleted afterwards. Keep it on the filesystem you want measured.
    #[arg(long, default_value = "target/bench-data")]
    data_dir_root: PathBuf,
    /// Records to produce [default: 200 000; in cold mode --cold-bytes / --record-bytes].
    #[arg(long = "records")]
    records_flag: Option<u64>,
    /// `--records` or the mode's default (filled in after parsing).
    #[arg(skip)]
    records: u64,
    /// Payload bytes per record (at least 24: a header carries producer, sequence number
    /// and send time) [default: 1024; 16384 in cold mode].
    #[arg(long = "record-bytes")]
    record_bytes_flag: Option<usize>,
    /// `--record-bytes` or the mode's default (filled in after parsing).
    #[arg(skip)]
    record_bytes: usize,
    /// Partitions of the topic created for the run [default: 8; 6 in group mode; 4 in
    /// cold mode].
    #[arg(long = "partitions")]
    partitions_flag: Option<i32>,
    /// `--partitions` or the mode's default (filled in after parsing).
    #[arg(skip)]
    partitions: i32,
    /// Independent producer instances (each its own librdkafka client and connection).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// rdkafka producer API: `future` (FutureProducer) or `threaded` (ThreadedProducer with
    /// a delivery callback, which costs the client less CPU on a small machine).
    #[arg(long, value_enum, default_value_t = ClientApi::Future)]
    client: ClientApi,
    /// Producer linger.ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Records each producer may have sent but not yet seen acknowledged.
    #[arg(long, default_value_t = 16_384)]
    max_inflight: usize,
    /// Latency mode: records per second over all producers. Default: --peak-fraction of
    /// the peak rate measured by a short produce phase in the same run.
    #[arg(long)]
    rate: Option<f64>,
    /// Latency mode: fraction of the measured peak to produce at when --rate is not given.
    #[arg(long, default_value_t = 0.25)]
    peak_fraction: f64,
    /// Latency mode: records of the peak-measuring produce phase.
    #[arg(long, default_value_t = 200_000)]
    peak_records: u64,
    /// Latency mode: how long to produce at the fixed rate.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Produce mode: skip both disk baselines.
    #[arg(long)]
    skip_disk_baseline: bool,
    /// Writes of the 4 KiB write + fdatasync latency baseline.
    #[arg(long, default_value_t = 2000)]
    fsync_writes: usize,
    /// Topic name (default: bench-MODE-PID-UNIXMS, created for the run).
    #[arg(long)]
    topic: Option<String>,
    /// Extra librdkafka producer setting KEY=VALUE (repeatable; overrides the defaults).
    #[arg(long = "producer-config", value_parser = parse_key_value)]
    producer_config: Vec<(String, String)>,
    /// Extra librdkafka consumer setting KEY=VALUE (repeatable; overrides the defaults).
    #[arg(long = "consumer-config", value_parser = parse_key_value)]
    consumer_config: Vec<(String, String)>,
    /// Seconds between progress lines on stderr.
    #[arg(long, default_value_t = 2.0)]
    progress_secs: f64,
    /// Group mode: consumer-group members, each a child process of its own.
    #[arg(long, default_value_t = 3)]
    group_members: usize,
    /// Group mode: the members' session.timeout.ms (the server accepts 6000 and more
    /// unless --spawn-server lowers its minimum to this).
    #[arg(long, default_value_t = 6000)]
    session_timeout_ms: u32,
    /// Group mode: the members' heartbeat.interval.ms [default: session timeout / 3].
    #[arg(long)]
    heartbeat_interval_ms: Option<u32>,
    /// Group mode: the members' max.poll.interval.ms, which librdkafka also sends as the
    /// rebalance timeout.
    #[arg(long, default_value_t = 10_000)]
    max_poll_interval_ms: u32,
    /// Group mode with --spawn-server: the server's [groups] initial_rebalance_delay_ms.
    #[arg(long, default_value_t = 500)]
    initial_rebalance_delay_ms: u32,
    /// Group mode: most records a member processes between two commits (one poll batch).
    #[arg(long, default_value_t = 5000)]
    commit_batch_max: usize,
    /// Group mode: records per second produced while members leave and die.
    #[arg(long, default_value_t = 2000.0)]
    rebalance_rate: f64,
    /// Group mode: seconds of undisturbed consuming before each leave or kill and after.
    #[arg(long, default_value_t = 3.0)]
    steady_secs: f64,
    /// Group mode: numbers of librdkafka members committing in a loop, one measurement
    /// each, on a topic with one partition per member (comma-separated; 0 alone skips).
    #[arg(long, value_delimiter = ',', default_values_t = [4, 16])]
    commit_members: Vec<usize>,
    /// Group mode: commits per round of those members: this many minus one with
    /// CommitMode::Async, then one with CommitMode::Sync that waits for them all.
    #[arg(long, default_value_t = 32)]
    commit_window: u64,
    /// Group mode: numbers of connections sending raw OffsetCommit requests, one
    /// measurement each (comma-separated; 0 alone skips them).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16, 64])]
    commit_connections: Vec<usize>,
    /// Group mode: raw OffsetCommit requests in flight per connection (the server reads
    /// at most 64 ahead).
    #[arg(long, default_value_t = 8)]
    commit_pipeline: usize,
    /// Group mode: seconds each commit-rate measurement lasts.
    #[arg(long, default_value_t = 5.0)]
    commit_seconds: f64,
    /// Cold mode: the object store the server tiers to.
    #[arg(long, value_enum, default_value_t = ColdStore::File)]
    cold_store: ColdStore,
    /// Cold mode: payload bytes to produce when --records is not given.
    #[arg(long, default_value_t = 256 << 20)]
    cold_bytes: u64,
    /// Cold mode: the server's [tier] cache_bytes_max.
    #[arg(long, default_value_t = 512 << 20)]
    cold_cache_bytes: u64,
    /// Cold mode: the server's [tier] upload_interval_ms.
    #[arg(long, default_value_t = 200)]
    cold_upload_interval_ms: u64,
    /// Cold mode: the topic's segment.bytes.
    #[arg(long, default_value_t = 8 << 20)]
    cold_segment_bytes: u64,
    /// Cold mode: longest wait for every segment to be uploaded and deleted locally.
    #[arg(long, default_value_t = 600.0)]
    cold_wait_secs: f64,
}

impl Args {
    fn heartbeat_interval_ms(&self) -> u32 {
        self.heartbeat_interval_ms
            .unwrap_or((self.session_timeout_ms / 3).max(1))
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

#[path = "loadgen/clients.rs"]
mod clients;
#[path = "loadgen/cold.rs"]
mod cold;
#[path = "loadgen/consume.rs"]
mod consume;
#[path = "loadgen/disk.rs"]
mod disk;
#[path = "loadgen/group.rs"]
mod group;
#[path = "loadgen/group_commits.rs"]
mod group_commits;
#[path = "loadgen/group_member.rs"]
mod group_member;
#[path = "loadgen/group_rebalance.rs"]
mod group_rebalance;
#[path = "loadgen/modes.rs"]
mod modes;
#[path = "loadgen/produce.rs"]
mod produce;
#[path = "loadgen/server.rs"]
mod server;
#[path = "loadgen/sys.rs"]
mod sys;

use clients::*;
use cold::*;
use consume::*;
use disk::*;
use group::*;
use group_commits::*;
use group_member::*;
use group_rebalance::*;
use modes::*;
use produce::*;
use server::*;
use sys::*;

// ---------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------

fn params_json(args: &Args) -> Value {
    json!({
        "mode": args.mode.name(),
        "records": args.records,
        "record_bytes": args.record_bytes,
        "partitions": args.partitions,
        "producers": args.producers,
        "client": args.client.name(),
        "linger_ms": args.linger_ms,
        "max_inflight_per_producer": args.max_inflight,
        "rate": args.rate,
        "peak_fraction": args.peak_fraction,
        "peak_records": args.peak_records,
        "seconds": args.seconds,
        "skip_disk_baseline": args.skip_disk_baseline,
        "fsync_writes": args.fsync_writes,
        "group_members": args.group_members,
        "session_timeout_ms": args.session_timeout_ms,
        "heartbeat_interval_ms": args.heartbeat_interval_ms(),
        "max_poll_interval_ms": args.max_poll_interval_ms,
        "initial_rebalance_delay_ms": args.initial_rebalance_delay_ms,
        "commit_batch_max": args.commit_batch_max,
        "rebalance_rate": args.rebalance_rate,
        "steady_secs": args.steady_secs,
        "commit_members": args.commit_members,
        "commit_window": args.commit_window,
        "commit_connections": args.commit_connections,
        "commit_pipeline": args.commit_pipeline,
        "commit_seconds": args.commit_seconds,
        "cold_store": args.cold_store.name(),
        "cold_bytes": args.cold_bytes,
        "cold_cache_bytes": args.cold_cache_bytes,
        "cold_upload_interval_ms": args.cold_upload_interval_ms,
        "cold_segment_bytes": args.cold_segment_bytes,
        "member_config": settings_json(&member_settings(args, "TOPIC-group", false)),
        "producer_config": settings_json(&producer_settings(args)),
        "consumer_config": settings_json(&consumer_settings(args)),
        "spawn_server": args.spawn_server,
        "bootstrap": args.bootstrap,
    })
}

async fn run(args: &Args) -> anyhow::Result<(Value, bool)> {
    ensure!(
        args.record_bytes >= PAYLOAD_HEADER_BYTES,
        "--record-bytes must be at least {PAYLOAD_HEADER_BYTES}"
    );
    ensure!(args.partitions >= 1, "--partitions must be at least 1");
    ensure!(args.producers >= 1, "--producers must be at least 1");
    ensure!(args.max_inflight >= 1, "--max-inflight must be at least 1");
    ensure!(args.progress_secs > 0.0, "--progress-secs must be positive");
    ensure!(args.seconds > 0.0, "--seconds must be positive");
    if args.mode == Mode::Group {
        ensure!(
            (1..=1000).contains(&args.group_members),
            "--group-members must be 1 to 1000"
        );
        ensure!(
            args.commit_batch_max >= 1,
            "--commit-batch-max must be at least 1"
        );
        ensure!(
            args.rebalance_rate > 0.0,
            "--rebalance-rate must be positive"
        );
        ensure!(
            args.steady_secs >= 0.0,
            "--steady-secs must not be negative"
        );
        ensure!(
            args.commit_seconds > 0.0,
            "--commit-seconds must be positive"
        );
        ensure!(
            (1..=64).contains(&args.commit_pipeline),
            "--commit-pipeline must be 1 to 64"
        );
        ensure!(
            args.commit_window >= 1,
            "--commit-window must be at least 1"
        );
        ensure!(
            args.commit_members.iter().all(|&n| n <= 1000),
            "--commit-members: at most 1000 each"
        );
        ensure!(
            args.commit_connections.iter().all(|&n| n <= 1024),
            "--commit-connections: at most 1024 each"
        );
        ensure!(
            args.max_poll_interval_ms >= args.session_timeout_ms,
            "librdkafka wants --max-poll-interval-ms >= --session-timeout-ms"
        );
    }
    std::fs::create_dir_all(&args.data_dir_root)
        .with_context(|| format!("creating {}", args.data_dir_root.display()))?;
    let _ = epoch();

    let mut report = serde_json::Map::new();
    report.insert("tool".into(), json!("shardline-bench"));
    report.insert(
        "timestamp_unix".into(),
        json!(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ),
    );
    report.insert("params".into(), params_json(args));
    report.insert("machine".into(), machine_info(&args.data_dir_root));
    report.insert("load_average_before".into(), load_average());

    if args.mode == Mode::Cold {
        ensure!(
            args.spawn_server.is_some(),
            "--mode cold needs --spawn-server (it reads the server's data dir and /metrics)"
        );
    }
    // Cold mode on S3: the endpoint lives in this process, on loopback, for the run.
    let s3 = if args.mode == Mode::Cold && args.cold_store == ColdStore::S3 {
        let s3 = S3Server::start_in(&args.data_dir_root, COLD_BUCKET).await;
        eprintln!(
            "s3: endpoint http://{} (s3s over {})",
            s3.addr,
            s3.root.path().display()
        );
        Some(s3)
    } else {
        None
    };
    // A server config file with the settings the mode needs.
    let server_config = match &args.spawn_server {
        Some(_) => {
            let text = match args.mode {
                Mode::Cold => cold_server_config(args, s3.as_ref()),
                Mode::Group => group_server_config(args),
                Mode::Produce | Mode::Latency => format!(
                    "# Written by shardline-bench --mode {}.\n{BENCH_SERVER_CONFIG}",
                    args.mode.name()
                ),
            };
            let path = args
                .data_dir_root
                .join(format!("server-config-{}.toml", std::process::id()));
            std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
            report.insert("server_config".into(), json!(text));
            Some(RemoveOnDrop(path))
        }
        None => None,
    };
    let mut server = match &args.spawn_server {
        Some(binary) => {
            let extra_args: Vec<OsString> = server_config
                .iter()
                .flat_map(|config| [OsString::from("--config"), config.0.clone().into()])
                .collect();
            let server = ServerProcess::start(binary, &args.data_dir_root, &extra_args)?;
            eprintln!(
                "server: pid {} kafka={} http={} data={}",
                server.pid,
                server.kafka_addr,
                server.http_addr,
                server.data_dir.path().display()
            );
            Some(server)
        }
        None => None,
    };
    let bootstrap = match (&server, &args.bootstrap) {
        (Some(server), _) => server.kafka_addr.clone(),
        (None, Some(bootstrap)) => bootstrap.clone(),
        (None, None) => bail!("give --bootstrap HOST:PORT or --spawn-server PATH"),
    };
    let server_pid = server.as_ref().map(|s| s.pid).or(args.server_pid);
    let start_samples = Samples::take(server_pid);

    let measured = tokio::select! {
        result = async {
            match args.mode {
                Mode::Produce => produce_mode(args, &bootstrap, server_pid).await,
                Mode::Latency => latency_mode(args, &bootstrap, server_pid).await,
                Mode::Group => group_mode(args, &bootstrap, server_pid).await,
                Mode::Cold => {
                    let server = server.as_ref().context("cold mode needs --spawn-server")?;
                    cold_mode(args, &bootstrap, server, s3.as_ref()).await
                }
            }
        } => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let end_samples = Samples::take(server_pid);
    let shutdown = server.as_mut().and_then(ServerProcess::stop);
    let (fields, ok) = measured?;
    report.extend(fields);

    let hwm_mib = end_samples
        .server
        .map(|s| round3(s.hwm_kib as f64 / 1024.0));
    report.insert(
        "server".into(),
        json!({
            "spawned": server.is_some(),
            "pid": server_pid,
            "kafka_addr": bootstrap,
            "start": start_samples.server.map(|s| s.json()),
            "end": end_samples.server.map(|s| s.json()),
            "cpu_s_total": cpu_between(start_samples.server, end_samples.server),
            "max_rss_mib": hwm_mib,
            "rss_target_mib": TARGET_RSS_MIB,
            "rss_target_met": hwm_mib.map(|h| h < TARGET_RSS_MIB),
            "shutdown_exit": shutdown.map(|(status, _)| status.to_string()),
            "shutdown_ms": shutdown.map(|(_, took)| took.as_millis() as u64),
        }),
    );
    report.insert(
        "loadgen".into(),
        json!({
            "start": start_samples.loadgen.map(|s| s.json()),
            "end": end_samples.loadgen.map(|s| s.json()),
            "cpu_s_total": cpu_between(start_samples.loadgen, end_samples.loadgen),
        }),
    );
    report.insert("load_average_after".into(), load_average());
    report.insert("ok".into(), json!(ok));
    drop(server);
    drop(server_config);
    Ok((Value::Object(report), ok))
}

fn main() -> ExitCode {
    // A child of a group-mode run: one consumer-group member.
    if let Ok(spec) = std::env::var(MEMBER_ENV) {
        return member_main(&spec);
    }
    let mut args = Args::parse();
    args.partitions = args.partitions_flag.unwrap_or(match args.mode {
        Mode::Group => 6,
        Mode::Cold => 4,
        Mode::Produce | Mode::Latency => 8,
    });
    args.record_bytes = args.record_bytes_flag.unwrap_or(match args.mode {
        Mode::Cold => 16 << 10,
        Mode::Produce | Mode::Latency | Mode::Group => 1024,
    });
    args.records = args.records_flag.unwrap_or(match args.mode {
        Mode::Cold => (args.cold_bytes / args.record_bytes.max(1) as u64).max(1),
        Mode::Produce | Mode::Latency | Mode::Group => 200_000,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok((report, ok)) => {
            println!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: some records were lost, duplicated or corrupted (see the JSON)");
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
