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
//!
//! Progress goes to stderr; exactly one JSON line with every figure goes to stdout.
//! See benches/README.md.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer as _, ProducerContext,
    ThreadedProducer,
};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use shardline_bench::{
    LatencySummary, PAYLOAD_HEADER_BYTES, PayloadHeader, check_payload, fill_payload, mb_per_s,
    mount_for_path, proc_field, read_header, round3, set_sent_ns, stat_cpu_ticks, summary_json,
};
use tokio::sync::Semaphore;

/// Producer index marking warm-up records, which consumers skip.
const WARMUP_PRODUCER: u32 = u32::MAX;
/// The targets, echoed in the JSON next to the measured figures.
const TARGET_PRODUCE_VS_DISK: f64 = 0.5;
const TARGET_RSS_MIB: f64 = 512.0;
const TARGET_ACK_P99_US: u64 = 10_000;
const TARGET_E2E_P50_US: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Throughput and ack latency of acks=all produce, then a verified read-back, plus the
    /// disk baselines.
    Produce,
    /// Ack and end-to-end latency at a fixed produce rate.
    Latency,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Latency => "latency",
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
    /// Records to produce (produce mode).
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Payload bytes per record (at least 24: a header carries producer, sequence number
    /// and send time).
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Partitions of the topic created for the run.
    #[arg(long, default_value_t = 8)]
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
    fn start(binary: &Path, data_root: &Path) -> anyhow::Result<ServerProcess> {
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
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap)
        .create()
        .context("creating an admin client")?;
    // The benchmark measures the server, not Kinesis' per-shard limits (1 MiB/s by
    // default), so its topic is created with those limits lifted.
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1))
        .set("capacity.mode", "unlimited");
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

    let mut server = match &args.spawn_server {
        Some(binary) => {
            let server = ServerProcess::start(binary, &args.data_dir_root)?;
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
    Ok((Value::Object(report), ok))
}

fn main() -> ExitCode {
    let args = Args::parse();
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
