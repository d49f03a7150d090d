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
/// The issue's targets, echoed in the JSON next to the measured figures.
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

// ---------------------------------------------------------------------------------------
// Clock, /proc, machine
// ---------------------------------------------------------------------------------------

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process' epoch on the monotonic clock.
fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// Memory and CPU time of a process at one moment.
#[derive(Debug, Clone, Copy)]
struct ProcSample {
    rss_kib: u64,
    hwm_kib: u64,
    cpu_ticks: u64,
    /// Bytes the process caused to be written to storage (`/proc/PID/io`), if readable.
    write_bytes: Option<u64>,
    /// write-like system calls (`syscw`).
    write_calls: Option<u64>,
}

impl ProcSample {
    /// `pid` None: this process.
    fn take(pid: Option<u32>) -> Option<ProcSample> {
        let dir = match pid {
            Some(pid) => format!("/proc/{pid}"),
            None => "/proc/self".to_string(),
        };
        let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
        let (utime, stime) = stat_cpu_ticks(&stat)?;
        let io = std::fs::read_to_string(format!("{dir}/io")).ok();
        let io_field = |field| io.as_deref().and_then(|io| proc_field(io, field));
        Some(ProcSample {
            write_bytes: io_field("write_bytes"),
            write_calls: io_field("syscw"),
            rss_kib: proc_field(&status, "VmRSS")?,
            hwm_kib: proc_field(&status, "VmHWM")?,
            cpu_ticks: utime + stime,
        })
    }

    fn json(&self) -> Value {
        json!({
            "rss_mib": round3(self.rss_kib as f64 / 1024.0),
            "hwm_mib": round3(self.hwm_kib as f64 / 1024.0),
            "cpu_s": round3(self.cpu_seconds()),
        })
    }

    fn cpu_seconds(&self) -> f64 {
        self.cpu_ticks as f64 / clock_ticks_per_second() as f64
    }
}

/// CPU seconds between two samples.
fn cpu_between(before: Option<ProcSample>, after: Option<ProcSample>) -> Value {
    match (before, after) {
        (Some(b), Some(a)) => json!(round3(a.cpu_seconds() - b.cpu_seconds())),
        _ => Value::Null,
    }
}

/// Samples of the server (if its PID is known) and of this process, taken together.
#[derive(Debug, Clone, Copy)]
struct Samples {
    server: Option<ProcSample>,
    loadgen: Option<ProcSample>,
}

impl Samples {
    fn take(server_pid: Option<u32>) -> Samples {
        Samples {
            server: server_pid.and_then(|pid| ProcSample::take(Some(pid))),
            loadgen: ProcSample::take(None),
        }
    }
}

/// Server and load-generator CPU seconds spent in a phase, and the server's memory after it.
fn phase_resources(before: Samples, after: Samples, elapsed: Duration) -> Value {
    let per_wall = |cpu: &Value| {
        cpu.as_f64().map_or(Value::Null, |cpu| {
            json!(round3(cpu / elapsed.as_secs_f64()))
        })
    };
    let server_io = |get: fn(&ProcSample) -> Option<u64>| match (before.server, after.server) {
        (Some(b), Some(a)) => get(&a).zip(get(&b)).map(|(a, b)| a.saturating_sub(b)),
        _ => None,
    };
    let server_cpu = cpu_between(before.server, after.server);
    let loadgen_cpu = cpu_between(before.loadgen, after.loadgen);
    json!({
        "server_cpu_s": server_cpu,
        "server_cores_busy": per_wall(&server_cpu),
        "loadgen_cpu_s": loadgen_cpu,
        "loadgen_cores_busy": per_wall(&loadgen_cpu),
        "server_storage_write_mb": server_io(|s| s.write_bytes).map(|b| round3(b as f64 / 1e6)),
        "server_write_syscalls": server_io(|s| s.write_calls),
        "server_rss_mib_after": after.server.map(|s| round3(s.rss_kib as f64 / 1024.0)),
        "server_hwm_mib_after": after.server.map(|s| round3(s.hwm_kib as f64 / 1024.0)),
    })
}

fn load_average() -> Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            let loads: Vec<f64> = text
                .split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect();
            json!(loads)
        })
        .unwrap_or(Value::Null)
}

fn machine_info(data_root: &Path) -> Value {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cpu_model = read("/proc/cpuinfo").and_then(|text| {
        text.lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map(|(_, model)| model.trim().to_string())
    });
    let mem_total_mib = read("/proc/meminfo")
        .and_then(|text| proc_field(&text, "MemTotal"))
        .map(|kib| kib / 1024);
    let mount = std::fs::canonicalize(data_root)
        .ok()
        .zip(read("/proc/mounts"))
        .and_then(|(path, mounts)| mount_for_path(&mounts, &path));
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": read("/proc/sys/kernel/osrelease").map(|k| k.trim().to_string()),
        "cpu_model": cpu_model,
        "mem_total_mib": mem_total_mib,
        "data_dir_root": std::fs::canonicalize(data_root).ok(),
        "data_fs": mount.map(|(device, mount_point, fs_type)| json!({
            "device": device, "mount_point": mount_point, "type": fs_type,
        })),
    })
}

/// Prints a progress line on stderr at most every `every`.
struct Ticker {
    every: Duration,
    last: Instant,
}

impl Ticker {
    fn new(every: Duration) -> Ticker {
        Ticker {
            every,
            last: Instant::now(),
        }
    }

    fn due(&mut self) -> bool {
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            true
        } else {
            false
        }
    }
}

// ---------------------------------------------------------------------------------------
// The spawned server
// ---------------------------------------------------------------------------------------

/// A `shardline serve` child process on a temporary data dir. Dropping it stops the server
/// (SIGTERM, then SIGKILL if it does not exit) and then removes the data dir.
struct ServerProcess {
    child: Child,
    pid: u32,
    kafka_addr: String,
    http_addr: String,
    stopped: Option<(ExitStatus, Duration)>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    // Declared last: dropped (deleted) after the process is gone.
    data_dir: tempfile::TempDir,
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("pid", &self.pid)
            .field("kafka_addr", &self.kafka_addr)
            .finish_non_exhaustive()
    }
}

impl ServerProcess {
    fn start(
        binary: &Path,
        data_root: &Path,
        extra_args: &[OsString],
    ) -> anyhow::Result<ServerProcess> {
        let data_dir = tempfile::Builder::new()
            .prefix("server-")
            .tempdir_in(data_root)
            .with_context(|| format!("creating a data dir under {}", data_root.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: Ctrl-C reaches only us, and we stop the server cleanly.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let mut server = ServerProcess {
            pid: child.id(),
            child,
            kafka_addr: String::new(),
            http_addr: String::new(),
            stopped: None,
            stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
            data_dir,
        };
        // From here on, `server` going out of scope stops the process.
        let tail = Arc::clone(&server.stderr_tail);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") || line.contains("panicked") {
                    eprintln!("[server] {line}");
                }
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = line_tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let first = match line_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => bail!(
                "the server exited before announcing its ports; its stderr ended with:\n{}",
                server.stderr_text()
            ),
            Err(_) => bail!("no `shardline listening` line from the server within 30 s"),
        };
        let field = |name: &str| {
            first
                .split_whitespace()
                .find_map(|word| word.strip_prefix(name))
                .map(str::to_string)
        };
        match (field("kafka="), field("http=")) {
            (Some(kafka), Some(http)) if first.starts_with("shardline listening") => {
                server.kafka_addr = kafka;
                server.http_addr = http;
            }
            _ => bail!("unexpected first line from the server: {first:?}"),
        }
        Ok(server)
    }

    fn stderr_text(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, wait up to 30 s for a clean exit, then SIGKILL. Idempotent.
    fn stop(&mut self) -> Option<(ExitStatus, Duration)> {
        if self.stopped.is_some() {
            return self.stopped;
        }
        let start = Instant::now();
        if let Ok(Some(status)) = self.child.try_wait() {
            self.stopped = Some((status, Duration::ZERO));
            return self.stopped;
        }
        // No `unsafe` libc::kill in this workspace: kill(1) sends the signal by PID.
        let signalled = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        let deadline = start + Duration::from_secs(30);
        while signalled && Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.stopped = Some((status, start.elapsed()));
                    return self.stopped;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        eprintln!("server {} did not exit after SIGTERM; killing it", self.pid);
        let _ = self.child.kill();
        self.stopped = self
            .child
            .wait()
            .ok()
            .map(|status| (status, start.elapsed()));
        self.stopped
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Disk baselines
// ---------------------------------------------------------------------------------------

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sequential 1 MiB writes with an fdatasync after each, `total` bytes in all.
fn disk_sequential(root: &Path, total: u64, progress: Duration) -> anyhow::Result<Value> {
    const CHUNK: usize = 1 << 20;
    let path = root.join(format!("disk-baseline-{}.tmp", std::process::id()));
    let _remove = RemoveOnDrop(path.clone());
    let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut chunk = vec![0u8; CHUNK];
    fill_payload(
        &mut chunk,
        PayloadHeader {
            producer: 0,
            seq: 0,
            sent_ns: 0,
        },
    );
    let mut ticker = Ticker::new(progress);
    let start = Instant::now();
    let mut written = 0u64;
    while written < total {
        let len = (total - written).min(CHUNK as u64) as usize;
        file.write_all(&chunk[..len])?;
        file.sync_data()?;
        written += len as u64;
        if ticker.due() {
            eprintln!(
                "disk baseline: {:.0} MB of {:.0} MB, {:.1} MB/s",
                written as f64 / 1e6,
                total as f64 / 1e6,
                mb_per_s(written, start.elapsed())
            );
        }
    }
    let elapsed = start.elapsed();
    let mb_s = mb_per_s(written, elapsed);
    eprintln!("disk baseline: 1 MiB writes + fdatasync: {mb_s:.1} MB/s");
    Ok(json!({
        "bytes": written,
        "chunk_bytes": CHUNK,
        "seconds": round3(elapsed.as_secs_f64()),
        "mb_s": round3(mb_s),
    }))
}

/// `writes` appends of 4 KiB, each followed by fdatasync; the latency of write + sync.
fn disk_fsync_latency(root: &Path, writes: usize) -> anyhow::Result<Value> {
    let path = root.join(format!("fsync-baseline-{}.tmp", std::process::id()));
    let _remove = RemoveOnDrop(path.clone());
    let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0x5au8; 4096];
    let mut latencies = Vec::with_capacity(writes);
    let start = Instant::now();
    for _ in 0..writes {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        latencies.push(t.elapsed().as_micros() as u64);
    }
    let elapsed = start.elapsed();
    let summary = LatencySummary::from_unsorted(&mut latencies);
    if let Some(summary) = &summary {
        eprintln!(
            "disk baseline: 4 KiB write + fdatasync: {}",
            summary.brief()
        );
    }
    Ok(json!({
        "writes": writes,
        "seconds": round3(elapsed.as_secs_f64()),
        "syncs_per_s": round3(writes as f64 / elapsed.as_secs_f64()),
        "latency": summary.map_or(Value::Null, |s| s.to_json()),
    }))
}

// ---------------------------------------------------------------------------------------
// Kafka clients
// ---------------------------------------------------------------------------------------

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "4");
    config
}

fn producer_settings(args: &Args) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = [
        ("acks", "all".to_string()),
        ("enable.idempotence", "true".to_string()),
        ("linger.ms", args.linger_ms.to_string()),
        ("batch.size", "1000000".to_string()),
        ("batch.num.messages", "10000".to_string()),
        ("compression.type", "none".to_string()),
        (
            "queue.buffering.max.messages",
            (args.max_inflight * 2).max(100_000).to_string(),
        ),
        ("queue.buffering.max.kbytes", "1048576".to_string()),
        ("message.timeout.ms", "120000".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    settings.extend(args.producer_config.iter().cloned());
    settings
}

fn consumer_settings(args: &Args) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = [
        ("group.id", "shardline-bench"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "false"),
        ("auto.offset.reset", "earliest"),
        ("fetch.wait.max.ms", "100"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    settings.extend(args.consumer_config.iter().cloned());
    settings
}

fn settings_json(settings: &[(String, String)]) -> Value {
    Value::Object(
        settings
            .iter()
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect(),
    )
}

fn new_producer(bootstrap: &str, settings: &[(String, String)]) -> anyhow::Result<FutureProducer> {
    let mut config = client_config(bootstrap);
    for (key, value) in settings {
        config.set(key, value);
    }
    config.create().context("creating a producer")
}

fn new_consumer(
    bootstrap: &str,
    settings: &[(String, String)],
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BaseConsumer> {
    let mut config = client_config(bootstrap);
    for (key, value) in settings {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create().context("creating a consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    create_topic_with(bootstrap, name, partitions, &[]).await
}

/// CreateTopics with `capacity.mode=unlimited` and the given extra topic configs.
async fn create_topic_with(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap)
        .create()
        .context("creating an admin client")?;
    // The benchmark measures the server, not Kinesis' per-shard limits (1 MiB/s by
    // default), so its topic is created with those limits lifted.
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1))
        .set("capacity.mode", "unlimited");
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &options).await? {
        result.map_err(|(topic, code)| anyhow!("creating topic {topic}: {code}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Producing
// ---------------------------------------------------------------------------------------

/// How a producer task paces its sends.
#[derive(Debug, Clone, Copy)]
enum Pacing {
    /// `count` records as fast as the in-flight window allows.
    Flat { count: u64 },
    /// `count` records at `per_second`, evenly spread.
    Rate { count: u64, per_second: f64 },
}

/// Counters shared by the producer tasks and the progress reporter.
#[derive(Debug, Default)]
struct ProduceShared {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    ack_us: Mutex<Vec<u64>>,
}

impl ProduceShared {
    fn record_error(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(error);
    }
}

/// Sends records of producer `id` to `topic`; each send's delivery is awaited by its own
/// task, which records the ack latency (send to delivery report).
async fn run_producer(
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
fn spawn_produce_progress(
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
struct ProduceOutcome {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    ack_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl ProduceOutcome {
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    fn json(&mut self) -> Value {
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
async fn produce_phase(
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
async fn run_future_producers(
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
struct AckContext {
    shared: Arc<ProduceShared>,
    /// Records acknowledged or failed (warm-up records not counted).
    done: AtomicU64,
    warmups_done: AtomicU64,
}

/// Opaque value marking a warm-up record.
const WARMUP_OPAQUE: usize = usize::MAX;

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
async fn run_threaded_producers(
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
fn send_threaded(
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
async fn send_warmup(
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
fn split_counts(total: u64, producers: usize) -> Vec<u64> {
    let n = producers as u64;
    (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Consuming
// ---------------------------------------------------------------------------------------

/// What a verifying read-back found.
#[derive(Debug, Default)]
struct ConsumeOutcome {
    received: u64,
    bytes: u64,
    /// First record to last record.
    elapsed: Duration,
    /// From creating the consumer to the first record.
    first_record_after: Duration,
    bad_payloads: u64,
    wrong_size: u64,
    duplicates: u64,
    unexpected: u64,
    order_violations: u64,
    missing: u64,
    first_problem: Option<String>,
    /// Latency mode: consumer receive time minus the send time in the payload.
    e2e_us: Vec<u64>,
}

impl ConsumeOutcome {
    fn verified(&self) -> bool {
        self.bad_payloads == 0
            && self.wrong_size == 0
            && self.duplicates == 0
            && self.unexpected == 0
            && self.order_violations == 0
            && self.missing == 0
    }

    fn problem(&mut self, what: String) {
        self.first_problem.get_or_insert(what);
    }

    fn json(&self) -> Value {
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
struct ConsumeControl {
    expected: AtomicU64,
    warmup_seen: AtomicU64,
    received: AtomicU64,
    stop: AtomicBool,
}

/// Reads `topic` from the beginning until `control.expected` records (not counting
/// warm-up ones) arrived, or nothing arrived for `idle_timeout`. Checks every payload,
/// duplicates, per-producer order within each partition, and sizes.
#[allow(clippy::too_many_arguments)]
fn consume_and_verify(
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

// ---------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------

fn default_topic(args: &Args, suffix: &str) -> String {
    let base = args.topic.clone().unwrap_or_else(|| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("bench-{}-{}-{ms}", args.mode.name(), std::process::id())
    });
    format!("{base}{suffix}")
}

fn consume_thread(
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
async fn join_consumer(
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
async fn produce_mode(
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
async fn latency_mode(
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

// ---------------------------------------------------------------------------------------
// Group mode: the member process
// ---------------------------------------------------------------------------------------

/// Set (to the member's settings, as JSON) when this program runs as one consumer-group
/// member, a child process of a group-mode run. See `member_main`.
const MEMBER_ENV: &str = "SHARDLINE_BENCH_MEMBER";
/// Producer index of the records written while members leave and die.
const REBALANCE_PRODUCER: u32 = 1_000_000;
/// Producer index a member reports for a record whose header does not parse.
const BAD_PRODUCER: u32 = u32::MAX - 1;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// librdkafka settings of a group member.
fn member_settings(args: &Args, group: &str, from_latest: bool) -> Vec<(String, String)> {
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
const BENCH_SERVER_CONFIG: &str = "[tier]\nenabled = false\n";

/// The server's settings for a group-mode run: the initial rebalance delay asked for, and
/// a session-timeout floor that admits the members' timeout.
fn group_server_config(args: &Args) -> String {
    format!(
        "# Written by shardline-bench --mode group.\n{BENCH_SERVER_CONFIG}[groups]\ninitial_rebalance_delay_ms = {}\nsession_timeout_ms_min = {}\n",
        args.initial_rebalance_delay_ms,
        args.session_timeout_ms.min(6000)
    )
}

/// What a member is told on its stdin.
#[derive(Debug)]
enum MemberCommand {
    /// Close the consumer (LeaveGroup) and exit.
    Leave,
    /// Commit asynchronously in a loop for `seconds`, `window` commits in flight.
    Commit { seconds: f64, window: u64 },
}

/// State of a member process shared by its poll loop and its rebalance and commit
/// callbacks.
struct MemberShared {
    out: Mutex<std::io::BufWriter<std::io::Stdout>>,
    topic: String,
    /// Next offset per partition of the records processed but not committed yet.
    pending: Mutex<BTreeMap<i32, i64>>,
    assigned: Mutex<Vec<i32>>,
    /// Asynchronous commits that failed, from librdkafka's COMMITFAIL log lines.
    async_commit_failures: AtomicU64,
}

impl MemberShared {
    fn emit(&self, event: &MemberEvent) {
        let mut out = lock(&self.out);
        let _ = writeln!(out, "{event}");
    }

    fn flush(&self) {
        let _ = lock(&self.out).flush();
    }

    /// Commits the pending offsets with one synchronous OffsetCommit and reports it.
    ///
    /// The records are reported (flushed) before the commit is sent, so a member killed
    /// at any moment has reported every record whose offset it committed: the load
    /// generator can tell a record redelivered because its commit never happened from a
    /// real duplicate.
    fn commit_pending(&self, consumer: &BaseConsumer<MemberContext>) {
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

struct MemberContext {
    shared: Arc<MemberShared>,
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
fn member_main(spec: &str) -> ExitCode {
    match run_member(spec) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("member error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_member(spec: &str) -> anyhow::Result<()> {
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
fn member_record(shared: &MemberShared, message: &BorrowedMessage<'_>, scratch: &mut Vec<u8>) {
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
fn member_commit_loop(
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

// ---------------------------------------------------------------------------------------
// Group mode: the load generator's side
// ---------------------------------------------------------------------------------------

/// What the load generator knows of one member, from its reports.
#[derive(Debug, Default)]
struct MemberState {
    name: String,
    pid: u32,
    /// Its partitions, as of its last rebalance event.
    assignment: Vec<i32>,
    /// Whether its last rebalance event was an assignment (not a revocation).
    assigned: bool,
    /// Every assignment: when, and which partitions.
    assignments: Vec<(u64, Vec<i32>)>,
    revocations: u64,
    last_rebalance_ns: u64,
    /// Per partition, the next offset of its last successful commit.
    committed: HashMap<i32, i64>,
    commits: u64,
    commit_failures: u64,
    first_commit_failure: Option<String>,
    records: u64,
    errors: u64,
    left: Option<(u64, u64)>,
    commit_loop: Option<MemberEvent>,
    exited: bool,
}

/// A record delivered more than once.
#[derive(Debug, Clone, Copy)]
struct Duplicate {
    producer: u32,
    seq: u64,
    partition: i32,
    offset: i64,
    first_member: u16,
    member: u16,
}

/// Everything the members reported, folded as it arrives.
#[derive(Debug, Default)]
struct GroupTracker {
    record_bytes: usize,
    members: Vec<MemberState>,
    ledger: Ledger,
    /// Producers of the throughput phase are `0..phase1_producers`.
    phase1_producers: u32,
    phase1_first_ns: Option<u64>,
    phase1_last_ns: u64,
    /// Records reported, duplicates included.
    received: u64,
    bad_payloads: u64,
    wrong_size: u64,
    unexpected: u64,
    duplicates: Vec<Duplicate>,
    /// Receipts of the rebalance phase's records, in arrival order.
    receipts: Vec<Receipt>,
    first_problem: Option<String>,
}

impl GroupTracker {
    fn problem(&mut self, what: String) {
        self.first_problem.get_or_insert(what);
    }

    fn apply(&mut self, member: u16, event: MemberEvent) {
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
    fn commit_counts(&self) -> (u64, u64) {
        self.members.iter().fold((0, 0), |(ok, failed), m| {
            (ok + m.commits, failed + m.commit_failures)
        })
    }

    /// Whether the `live` members hold one complete assignment and none of them has seen
    /// a rebalance event for `quiet`.
    fn settled(&self, live: &[u16], partitions: i32, quiet: Duration) -> bool {
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
struct GroupMember {
    index: u16,
    pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl GroupMember {
    fn spawn(
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

    fn send(&mut self, command: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("member stdin already closed")?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        Ok(())
    }

    /// SIGKILL: no LeaveGroup, no more heartbeats, connections reset by the kernel.
    fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("killing a member")?;
        self.child.wait().context("reaping a member")?;
        Ok(())
    }

    /// Waits (without blocking the runtime) until the process exited and its reports are
    /// all read.
    async fn wait_exit(&mut self, timeout: Duration) -> bool {
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
fn members_cpu_s(members: &[GroupMember]) -> f64 {
    members
        .iter()
        .filter_map(|m| ProcSample::take(Some(m.pid)))
        .map(|s| s.cpu_seconds())
        .sum()
}

/// The JSON spec a member process gets in `MEMBER_ENV`.
fn member_spec(args: &Args, bootstrap: &str, topic: &str, group: &str, from_latest: bool) -> Value {
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
async fn wait_settled(
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
async fn paced_partition_producer(
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

/// How a member is taken out of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    /// It closes its consumer: LeaveGroup.
    Leave,
    /// Its process is SIGKILLed: nothing tells the coordinator.
    Death,
}

/// One departure: who, when, which partitions it had, and when the rest had settled.
#[derive(Debug)]
struct DepartureRecord {
    how: Departure,
    member: u16,
    partitions: Vec<i32>,
    at_ns: u64,
    /// Whether every one of its partitions was consumed again before the timeout.
    resumed: bool,
    /// Whether the survivors settled on a complete assignment afterwards.
    settled: bool,
}

/// Takes `members[position]` out of the group and waits until its partitions are consumed
/// again by the others (bounded by `timeout`) and the survivors have settled.
async fn depart(
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

fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    round3(to_ns.saturating_sub(from_ns) as f64 / 1e6)
}

/// The figures of one departure, from the receipts (sorted by time).
fn departure_json(
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
async fn rebalance_departures(
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
async fn rebalance_phase(
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

/// Phase 3a: `count` librdkafka members of a fresh group, on an empty topic of `count`
/// partitions (one each), commit their partition in a loop (see `member_commit_loop`).
/// Returns the JSON and the OffsetCommit requests per second.
async fn commit_rate_rdkafka(
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
const RAW_COMMIT_VERSION: i16 = 8;

/// What one raw connection got back.
#[derive(Debug)]
struct RawCommitOutcome {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u64>,
    first_error: Option<String>,
    last_answer: Instant,
}

/// Appends one framed OffsetCommit request (standalone: generation -1, no member id)
/// for one partition.
fn encode_offset_commit(
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
async fn raw_commit_connection(
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
async fn commit_rate_raw(
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

/// Group mode. Returns the mode's JSON fields and whether everything checked out.
async fn group_mode(
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

// ---------------------------------------------------------------------------------------
// Cold mode
// ---------------------------------------------------------------------------------------

/// Cold mode: a Kafka consumer should read tiered data at least this fraction of the
/// speed of reading the same objects directly (sequential 1 MiB ranged GETs)...
const TARGET_COLD_VS_DIRECT: f64 = 0.8;
/// ...a second pass through the warm block cache at least this many times the cold one...
const TARGET_WARM_VS_COLD: f64 = 5.0;
/// ...and the server's peak RSS within the cache size plus this much.
const TARGET_COLD_RSS_OVERHEAD_MIB: f64 = 256.0;

/// Cold mode with `--cold-store s3`: the bucket and prefix the server tiers to.
const COLD_BUCKET: &str = "shardline-bench";
const COLD_PREFIX: &str = "cold";

/// The server's `[tier]` settings for a cold-mode run: the default object store,
/// `file://<data_dir>/objects`, or the S3 endpoint `s3` under `COLD_BUCKET/COLD_PREFIX`.
fn cold_server_config(args: &Args, s3: Option<&S3Server>) -> String {
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
struct BaselineStore {
    store: Arc<dyn ObjectStore>,
    prefix: object_store::path::Path,
    url: String,
}

impl BaselineStore {
    fn open(data_dir: &Path, s3: Option<&S3Server>) -> anyhow::Result<BaselineStore> {
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
    async fn segment_objects(&self) -> anyhow::Result<Vec<object_store::ObjectMeta>> {
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
    async fn read_objects(
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
    async fn put_objects(
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
async fn fetch_metrics(http_addr: &str) -> anyhow::Result<String> {
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
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Every file under `dir` (recursively) whose name ends with `suffix`, sorted, with sizes.
fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<(PathBuf, u64)> {
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
async fn cold_consume_pass(
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
fn tier_counters(text: &str) -> Value {
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
fn counters_delta(before: &Value, after: &Value) -> Value {
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
async fn cold_mode(
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
