//! Shared helpers for the benchmarks: latency percentiles, the load generator's payload
//! format, and parsers for the few `/proc` files it reads.

use std::time::Duration;

use serde_json::{Value, json};

/// The nearest-rank percentile `p` (0..=100, in steps of 0.001) of `sorted`, which must be
/// sorted ascending.
///
/// `p = 50` is the median, `p = 100` the maximum, `p = 0` the minimum. `None` for an empty
/// slice or a `p` outside 0..=100.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    // Smallest value with at least p% of the values at or below it. Integer arithmetic on
    // thousandths of a percent, so 99.9% of 1000 values is rank 999, not 1000 by rounding.
    let milli_percent = (p * 1000.0).round() as u128;
    let rank = (milli_percent * sorted.len() as u128).div_ceil(100_000) as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Percentiles of a set of latencies in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: usize,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
}

impl LatencySummary {
    /// Sorts `values` (microseconds) and summarizes them; `None` when there are none.
    pub fn from_unsorted(values: &mut [u64]) -> Option<Self> {
        values.sort_unstable();
        let sorted = &*values;
        let sum: u128 = sorted.iter().map(|&v| u128::from(v)).sum();
        Some(Self {
            count: sorted.len(),
            min_us: percentile(sorted, 0.0)?,
            p50_us: percentile(sorted, 50.0)?,
            p90_us: percentile(sorted, 90.0)?,
            p99_us: percentile(sorted, 99.0)?,
            p999_us: percentile(sorted, 99.9)?,
            max_us: percentile(sorted, 100.0)?,
            mean_us: (sum / sorted.len() as u128) as u64,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "min_us": self.min_us,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "mean_us": self.mean_us,
        })
    }

    /// One line for humans: `p50 1.2ms p99 3.4ms p99.9 5.6ms max 7.8ms`.
    pub fn brief(&self) -> String {
        format!(
            "p50 {} p99 {} p99.9 {} max {}",
            fmt_us(self.p50_us),
            fmt_us(self.p99_us),
            fmt_us(self.p999_us),
            fmt_us(self.max_us)
        )
    }
}

/// `LatencySummary` as JSON, or `null` when there were no samples.
pub fn summary_json(values: &mut [u64]) -> Value {
    LatencySummary::from_unsorted(values).map_or(Value::Null, |s| s.to_json())
}

fn fmt_us(us: u64) -> String {
    if us >= 1000 {
        format!("{:.2}ms", us as f64 / 1000.0)
    } else {
        format!("{us}us")
    }
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    bytes as f64 / 1e6 / secs
}

/// Rounds to 3 decimals, for readable JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Bytes of header at the start of every load-generator payload.
pub const PAYLOAD_HEADER_BYTES: usize = 24;
const PAYLOAD_MAGIC: u32 = 0x5348_4c42; // "SHLB"

/// What a payload's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    /// Index of the producer instance that sent it (`u32::MAX` for warm-up records).
    pub producer: u32,
    /// Sequence number within that producer, from 0.
    pub seq: u64,
    /// Send time in nanoseconds since the load generator's start (monotonic clock).
    pub sent_ns: u64,
}

/// Why a payload did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    TooShort,
    BadMagic,
    BodyMismatch,
}

/// Fills `buf` (at least [`PAYLOAD_HEADER_BYTES`] long) with a header and a body that is a
/// pseudo-random function of `(producer, seq)`, so a consumer can check every byte.
pub fn fill_payload(buf: &mut [u8], header: PayloadHeader) {
    assert!(
        buf.len() >= PAYLOAD_HEADER_BYTES,
        "payload shorter than its header"
    );
    buf[0..4].copy_from_slice(&PAYLOAD_MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&header.producer.to_le_bytes());
    buf[8..16].copy_from_slice(&header.seq.to_le_bytes());
    buf[16..24].copy_from_slice(&header.sent_ns.to_le_bytes());
    fill_body(
        &mut buf[PAYLOAD_HEADER_BYTES..],
        header.producer,
        header.seq,
    );
}

/// Only rewrites the send timestamp of a payload built by [`fill_payload`].
pub fn set_sent_ns(buf: &mut [u8], sent_ns: u64) {
    buf[16..24].copy_from_slice(&sent_ns.to_le_bytes());
}

/// Reads a payload's header without checking its body.
pub fn read_header(buf: &[u8]) -> Result<PayloadHeader, PayloadError> {
    if buf.len() < PAYLOAD_HEADER_BYTES {
        return Err(PayloadError::TooShort);
    }
    let word = |range: std::ops::Range<usize>| {
        let mut bytes = [0u8; 8];
        bytes[..range.len()].copy_from_slice(&buf[range]);
        u64::from_le_bytes(bytes)
    };
    if word(0..4) != u64::from(PAYLOAD_MAGIC) {
        return Err(PayloadError::BadMagic);
    }
    Ok(PayloadHeader {
        producer: word(4..8) as u32,
        seq: word(8..16),
        sent_ns: word(16..24),
    })
}

/// Reads the header and checks every body byte; `scratch` is reused between calls.
pub fn check_payload(buf: &[u8], scratch: &mut Vec<u8>) -> Result<PayloadHeader, PayloadError> {
    let header = read_header(buf)?;
    let body = &buf[PAYLOAD_HEADER_BYTES..];
    scratch.resize(body.len(), 0);
    fill_body(scratch, header.producer, header.seq);
    if scratch.as_slice() != body {
        return Err(PayloadError::BodyMismatch);
    }
    Ok(header)
}

fn fill_body(body: &mut [u8], producer: u32, seq: u64) {
    // splitmix64 of (producer, seq): cheap, and different for every record.
    let mut state = (u64::from(producer) << 40) ^ seq ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut chunks = body.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&next().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let len = rest.len();
    rest.copy_from_slice(&next().to_le_bytes()[..len]);
}

/// The number after `field:` in a `/proc` file of `Name: value` lines: `VmRSS` or `VmHWM`
/// of `/proc/PID/status` (in KiB), `write_bytes` of `/proc/PID/io`, `MemTotal` of
/// `/proc/meminfo`.
pub fn proc_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `(utime, stime)` in clock ticks from the text of `/proc/PID/stat`.
pub fn stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state); utime and stime are fields 14 and 15.
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// The `/proc/mounts` entry (device, mount point, fs type) whose mount point is the
/// longest prefix of `path` (which should be canonical).
pub fn mount_for_path(mounts: &str, path: &std::path::Path) -> Option<(String, String, String)> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let device = parts.next()?;
            let mount_point = parts.next()?.replace("\\040", " ");
            let fs_type = parts.next()?;
            path.starts_with(&mount_point)
                .then(|| (device.to_string(), mount_point.clone(), fs_type.to_string()))
        })
        .max_by_key(|(_, mount_point, _)| mount_point.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 99.9), Some(100));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));
        assert_eq!(percentile(&values, 0.5), Some(1));
        assert_eq!(percentile(&values, 1.0), Some(1));
        assert_eq!(percentile(&values, 1.1), Some(2));

        let thousand: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&thousand, 99.9), Some(999));
        assert_eq!(percentile(&thousand, 99.0), Some(990));

        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        assert_eq!(percentile(&[3, 9], 50.0), Some(3));
        assert_eq!(percentile(&[3, 9], 50.1), Some(9));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1], 100.1), None);
        assert_eq!(percentile(&[1], -1.0), None);
    }

    #[test]
    fn summary_sorts_and_averages() {
        let mut values = vec![5, 1, 4, 2, 3];
        let summary = LatencySummary::from_unsorted(&mut values).unwrap();
        assert_eq!(values, vec![1, 2, 3, 4, 5]);
        assert_eq!(summary.count, 5);
        assert_eq!(summary.min_us, 1);
        assert_eq!(summary.p50_us, 3);
        assert_eq!(summary.p99_us, 5);
        assert_eq!(summary.max_us, 5);
        assert_eq!(summary.mean_us, 3);
        assert!(LatencySummary::from_unsorted(&mut []).is_none());
        assert_eq!(summary_json(&mut []), Value::Null);
    }

    #[test]
    fn payload_round_trip_and_corruption() {
        let mut scratch = Vec::new();
        for len in [PAYLOAD_HEADER_BYTES, 25, 31, 1024] {
            let mut buf = vec![0u8; len];
            let header = PayloadHeader {
                producer: 3,
                seq: 123_456,
                sent_ns: 42,
            };
            fill_payload(&mut buf, header);
            assert_eq!(check_payload(&buf, &mut scratch), Ok(header));
            set_sent_ns(&mut buf, 43);
            assert_eq!(read_header(&buf).unwrap().sent_ns, 43);
            if len > PAYLOAD_HEADER_BYTES {
                buf[len - 1] ^= 1;
                assert_eq!(
                    check_payload(&buf, &mut scratch),
                    Err(PayloadError::BodyMismatch)
                );
            }
        }
        let mut a = vec![0u8; 64];
        let mut b = vec![0u8; 64];
        fill_payload(
            &mut a,
            PayloadHeader {
                producer: 0,
                seq: 1,
                sent_ns: 0,
            },
        );
        fill_payload(
            &mut b,
            PayloadHeader {
                producer: 0,
                seq: 2,
                sent_ns: 0,
            },
        );
        assert_ne!(a[PAYLOAD_HEADER_BYTES..], b[PAYLOAD_HEADER_BYTES..]);
        assert_eq!(read_header(&[0u8; 10]), Err(PayloadError::TooShort));
        assert_eq!(read_header(&[0u8; 30]), Err(PayloadError::BadMagic));
    }

    #[test]
    fn proc_parsers() {
        let status =
            "Name:\tshardline\nVmPeak:\t  100 kB\nVmHWM:\t   5120 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(proc_field(status, "VmHWM"), Some(5120));
        assert_eq!(proc_field(status, "VmRSS"), Some(4096));
        assert_eq!(proc_field(status, "VmSwap"), None);
        let io = "rchar: 10\nwchar: 20\nsyscw: 3\nread_bytes: 0\nwrite_bytes: 4096\n";
        assert_eq!(proc_field(io, "write_bytes"), Some(4096));
        assert_eq!(proc_field(io, "syscw"), Some(3));

        let stat = "1234 (shard line) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 5 0";
        assert_eq!(stat_cpu_ticks(stat), Some((250, 75)));
        assert_eq!(stat_cpu_ticks("garbage"), None);

        let mounts =
            "/dev/root / ext4 rw 0 0\n/dev/sdb1 /work xfs rw 0 0\ntmpfs /work/tmp tmpfs rw 0 0\n";
        let found = mount_for_path(mounts, std::path::Path::new("/work/main/target")).unwrap();
        assert_eq!(found, ("/dev/sdb1".into(), "/work".into(), "xfs".into()));
        let root = mount_for_path(mounts, std::path::Path::new("/home")).unwrap();
        assert_eq!(root.2, "ext4");
    }

    #[test]
    fn throughput_helpers() {
        assert_eq!(mb_per_s(2_000_000, Duration::from_secs(2)), 1.0);
        assert_eq!(mb_per_s(1, Duration::ZERO), 0.0);
        assert_eq!(round3(1.23456), 1.235);
    }
}
