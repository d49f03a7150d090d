//! Clock, /proc, machine.

use super::*;

pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process' epoch on the monotonic clock.
pub(crate) fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

pub(crate) fn clock_ticks_per_second() -> u64 {
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
pub(crate) struct ProcSample {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
    pub(crate) cpu_ticks: u64,
    /// Bytes the process caused to be written to storage (`/proc/PID/io`), if readable.
    pub(crate) write_bytes: Option<u64>,
    /// write-like system calls (`syscw`).
    pub(crate) write_calls: Option<u64>,
}

impl ProcSample {
    /// `pid` None: this process.
    pub(crate) fn take(pid: Option<u32>) -> Option<ProcSample> {
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

    pub(crate) fn json(&self) -> Value {
        json!({
            "rss_mib": round3(self.rss_kib as f64 / 1024.0),
            "hwm_mib": round3(self.hwm_kib as f64 / 1024.0),
            "cpu_s": round3(self.cpu_seconds()),
        })
    }

    pub(crate) fn cpu_seconds(&self) -> f64 {
        self.cpu_ticks as f64 / clock_ticks_per_second() as f64
    }
}

/// CPU seconds between two samples.
pub(crate) fn cpu_between(before: Option<ProcSample>, after: Option<ProcSample>) -> Value {
    match (before, after) {
        (Some(b), Some(a)) => json!(round3(a.cpu_seconds() - b.cpu_seconds())),
        _ => Value::Null,
    }
}

/// Samples of the server (if its PID is known) and of this process, taken together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Samples {
    pub(crate) server: Option<ProcSample>,
    pub(crate) loadgen: Option<ProcSample>,
}

impl Samples {
    pub(crate) fn take(server_pid: Option<u32>) -> Samples {
        Samples {
            server: server_pid.and_then(|pid| ProcSample::take(Some(pid))),
            loadgen: ProcSample::take(None),
        }
    }
}

/// Server and load-generator CPU seconds spent in a phase, and the server's memory after it.
pub(crate) fn phase_resources(before: Samples, after: Samples, elapsed: Duration) -> Value {
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

pub(crate) fn load_average() -> Value {
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

pub(crate) fn machine_info(data_root: &Path) -> Value {
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
pub(crate) struct Ticker {
    pub(crate) every: Duration,
    pub(crate) last: Instant,
}

impl Ticker {
    pub(crate) fn new(every: Duration) -> Ticker {
        Ticker {
            every,
            last: Instant::now(),
        }
    }

    pub(crate) fn due(&mut self) -> bool {
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            true
        } else {
            false
        }
    }
}
