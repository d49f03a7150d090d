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

// ---------------------------------------------------------------------------------------
// Consumer-group mode: what member processes report, and its analysis
// ---------------------------------------------------------------------------------------

/// Wall-clock nanoseconds since the Unix epoch. Group members are separate processes, so
/// this (not a process' monotonic `Instant`) is the clock their reports and the load
/// generator's own events share.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One line a consumer-group member process writes on its stdout, one event per line
/// (`Display` writes it, [`MemberEvent::parse`] reads it back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// `M`: a record the member's `poll` returned, with its verdict on the payload.
    Record {
        at_ns: u64,
        partition: i32,
        offset: i64,
        producer: u32,
        seq: u64,
        len: usize,
        /// The header and every body byte checked out.
        intact: bool,
    },
    /// `A`: the member was assigned these partitions (eager protocol: its whole set).
    Assigned { at_ns: u64, partitions: Vec<i32> },
    /// `R`: its partitions were revoked.
    Revoked { at_ns: u64 },
    /// `C`: a synchronous OffsetCommit of these (partition, next offset) succeeded.
    Committed {
        at_ns: u64,
        offsets: Vec<(i32, i64)>,
    },
    /// `F`: a commit failed.
    CommitFailed { at_ns: u64, error: String },
    /// `E`: any other error the client reported.
    Error { at_ns: u64, error: String },
    /// `L`: the member closed its consumer (LeaveGroup) between these times.
    Left { started_ns: u64, done_ns: u64 },
    /// `K`: the outcome of a timed loop of asynchronous commits.
    CommitLoop {
        ok: u64,
        failed: u64,
        partition_offsets: u64,
        started_ns: u64,
        done_ns: u64,
    },
}

impl std::fmt::Display for MemberEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Error texts end the line and must not break it.
        let clean = |text: &str| text.replace(['\n', '\r'], " ");
        match self {
            MemberEvent::Record {
                at_ns,
                partition,
                offset,
                producer,
                seq,
                len,
                intact,
            } => write!(
                f,
                "M {at_ns} {partition} {offset} {producer} {seq} {len} {}",
                u8::from(*intact)
            ),
            MemberEvent::Assigned { at_ns, partitions } => {
                write!(f, "A {at_ns} ")?;
                if partitions.is_empty() {
                    return write!(f, "-");
                }
                for (i, partition) in partitions.iter().enumerate() {
                    write!(f, "{}{partition}", if i == 0 { "" } else { "," })?;
                }
                Ok(())
            }
            MemberEvent::Revoked { at_ns } => write!(f, "R {at_ns}"),
            MemberEvent::Committed { at_ns, offsets } => {
                write!(f, "C {at_ns} ")?;
                if offsets.is_empty() {
                    return write!(f, "-");
                }
                for (i, (partition, next)) in offsets.iter().enumerate() {
                    write!(f, "{}{partition}:{next}", if i == 0 { "" } else { "," })?;
                }
                Ok(())
            }
            MemberEvent::CommitFailed { at_ns, error } => write!(f, "F {at_ns} {}", clean(error)),
            MemberEvent::Error { at_ns, error } => write!(f, "E {at_ns} {}", clean(error)),
            MemberEvent::Left {
                started_ns,
                done_ns,
            } => write!(f, "L {started_ns} {done_ns}"),
            MemberEvent::CommitLoop {
                ok,
                failed,
                partition_offsets,
                started_ns,
                done_ns,
            } => write!(
                f,
                "K {ok} {failed} {partition_offsets} {started_ns} {done_ns}"
            ),
        }
    }
}

impl MemberEvent {
    /// Parses one line written by `Display`; `None` for anything else.
    pub fn parse(line: &str) -> Option<MemberEvent> {
        let (tag, rest) = line.split_once(' ')?;
        let mut words = rest.split(' ');
        let mut next = || words.next();
        fn num<T: std::str::FromStr>(word: Option<&str>) -> Option<T> {
            word?.parse().ok()
        }
        let text = |rest: &str| {
            let (at, error) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((at.parse().ok()?, error.to_string()))
        };
        Some(match tag {
            "M" => MemberEvent::Record {
                at_ns: num(next())?,
                partition: num(next())?,
                offset: num(next())?,
                producer: num(next())?,
                seq: num(next())?,
                len: num(next())?,
                intact: num::<u8>(next())? == 1,
            },
            "A" => {
                let at_ns = num(next())?;
                let list = next()?;
                let partitions = if list == "-" {
                    Vec::new()
                } else {
                    list.split(',')
                        .map(|p| p.parse().ok())
                        .collect::<Option<Vec<i32>>>()?
                };
                MemberEvent::Assigned { at_ns, partitions }
            }
            "R" => MemberEvent::Revoked {
                at_ns: num(next())?,
            },
            "C" => {
                let at_ns = num(next())?;
                let list = next()?;
                let offsets = if list == "-" {
                    Vec::new()
                } else {
                    list.split(',')
                        .map(|pair| {
                            let (partition, next) = pair.split_once(':')?;
                            Some((partition.parse().ok()?, next.parse().ok()?))
                        })
                        .collect::<Option<Vec<(i32, i64)>>>()?
                };
                MemberEvent::Committed { at_ns, offsets }
            }
            "F" => {
                let (at_ns, error) = text(rest)?;
                MemberEvent::CommitFailed { at_ns, error }
            }
            "E" => {
                let (at_ns, error) = text(rest)?;
                MemberEvent::Error { at_ns, error }
            }
            "L" => MemberEvent::Left {
                started_ns: num(next())?,
                done_ns: num(next())?,
            },
            "K" => MemberEvent::CommitLoop {
                ok: num(next())?,
                failed: num(next())?,
                partition_offsets: num(next())?,
                started_ns: num(next())?,
                done_ns: num(next())?,
            },
            _ => return None,
        })
    }
}

/// What [`Ledger::record`] made of one sighting of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// Its first delivery.
    First,
    /// Seen before, first by this member.
    Duplicate { first_member: u16 },
    /// From a producer or with a sequence number that was never expected.
    Unexpected,
}

/// Which records (producer, sequence number) were delivered, and to whom first: the
/// exactly-once check across the members of a group.
#[derive(Debug, Default)]
pub struct Ledger {
    producers: std::collections::HashMap<u32, ProducerLedger>,
}

#[derive(Debug, Default)]
struct ProducerLedger {
    /// Sequence numbers at or above this are unexpected.
    limit: u64,
    /// Per sequence number: 0 if unseen, else the first member's index + 1.
    first_member: Vec<u16>,
    unique: u64,
}

impl Ledger {
    /// Expects records `0..limit` from `producer` (a limit not known yet can be generous:
    /// the table grows with the highest sequence number seen).
    pub fn expect(&mut self, producer: u32, limit: u64) {
        self.producers.entry(producer).or_default().limit = limit;
    }

    /// Notes that `member` received record `seq` of `producer`.
    pub fn record(&mut self, producer: u32, seq: u64, member: u16) -> Sighting {
        let Some(ledger) = self.producers.get_mut(&producer) else {
            return Sighting::Unexpected;
        };
        if seq >= ledger.limit || seq >= u64::from(u32::MAX) {
            return Sighting::Unexpected;
        }
        let index = seq as usize;
        if ledger.first_member.len() <= index {
            let grown = (index + 1).max(ledger.first_member.len() * 2).max(1024);
            ledger
                .first_member
                .resize(grown.min(ledger.limit.min(u64::from(u32::MAX)) as usize), 0);
        }
        match ledger.first_member[index] {
            0 => {
                ledger.first_member[index] = member.saturating_add(1);
                ledger.unique += 1;
                Sighting::First
            }
            first => Sighting::Duplicate {
                first_member: first - 1,
            },
        }
    }

    /// Distinct records of `producer` delivered so far.
    pub fn unique(&self, producer: u32) -> u64 {
        self.producers.get(&producer).map_or(0, |l| l.unique)
    }

    /// Records `0..count` of `producer` never delivered.
    pub fn missing(&self, producer: u32, count: u64) -> u64 {
        let Some(ledger) = self.producers.get(&producer) else {
            return count;
        };
        let seen = ledger
            .first_member
            .iter()
            .take(count as usize)
            .filter(|&&m| m != 0)
            .count() as u64;
        count - seen
    }
}

/// One record received by a group member: when, from which partition, by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub at_ns: u64,
    pub partition: i32,
    pub member: u16,
}

/// For each of `partitions`, when a member other than `gone` first received a record of
/// it after `since_ns` (`None`: never). `receipts` must be sorted by time.
pub fn resumed_at(
    receipts: &[Receipt],
    partitions: &[i32],
    gone: u16,
    since_ns: u64,
) -> Vec<(i32, Option<u64>)> {
    let start = receipts.partition_point(|r| r.at_ns <= since_ns);
    partitions
        .iter()
        .map(|&partition| {
            let first = receipts[start..]
                .iter()
                .find(|r| r.partition == partition && r.member != gone)
                .map(|r| r.at_ns);
            (partition, first)
        })
        .collect()
}

/// The longest time one of `partitions` went without a record received, within
/// `from_ns..=to_ns`: the gaps between consecutive receipts, from `from_ns` to the first
/// and from the last to `to_ns`. Returns (partition, nanoseconds) of the longest, the
/// first partition on a tie. `receipts` must be sorted by time.
pub fn longest_stall(
    receipts: &[Receipt],
    partitions: &[i32],
    from_ns: u64,
    to_ns: u64,
) -> Option<(i32, u64)> {
    let start = receipts.partition_point(|r| r.at_ns < from_ns);
    let end = receipts.partition_point(|r| r.at_ns <= to_ns);
    let window = &receipts[start..end.max(start)];
    let mut longest: Option<(i32, u64)> = None;
    for &partition in partitions {
        let mut last = from_ns;
        let mut gap = 0;
        for receipt in window.iter().filter(|r| r.partition == partition) {
            gap = gap.max(receipt.at_ns - last);
            last = receipt.at_ns;
        }
        gap = gap.max(to_ns.saturating_sub(last));
        if longest.is_none_or(|(_, best)| gap > best) {
            longest = Some((partition, gap));
        }
    }
    longest
}

/// Whether the members' assignments cover `0..partitions` with every partition exactly
/// once (the group has settled on one generation's assignment).
pub fn assignment_complete<'a>(
    assignments: impl IntoIterator<Item = &'a [i32]>,
    partitions: i32,
) -> bool {
    let mut owners = vec![0u32; partitions.max(0) as usize];
    for assignment in assignments {
        for &partition in assignment {
            match owners.get_mut(partition as usize) {
                Some(count) if partition >= 0 => *count += 1,
                _ => return false,
            }
        }
    }
    owners.iter().all(|&count| count == 1)
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

    #[test]
    fn member_events_round_trip() {
        let events = [
            MemberEvent::Record {
                at_ns: 1_700_000_000_123_456_789,
                partition: 3,
                offset: 42,
                producer: 1,
                seq: 99,
                len: 1024,
                intact: true,
            },
            MemberEvent::Record {
                at_ns: 5,
                partition: 0,
                offset: 0,
                producer: u32::MAX,
                seq: 0,
                len: 3,
                intact: false,
            },
            MemberEvent::Assigned {
                at_ns: 7,
                partitions: vec![0, 4, 5],
            },
            MemberEvent::Assigned {
                at_ns: 8,
                partitions: vec![],
            },
            MemberEvent::Revoked { at_ns: 9 },
            MemberEvent::Committed {
                at_ns: 10,
                offsets: vec![(1, 100), (2, 7)],
            },
            MemberEvent::Committed {
                at_ns: 11,
                offsets: vec![],
            },
            MemberEvent::CommitFailed {
                at_ns: 12,
                error: "Broker: Rebalance in progress".into(),
            },
            MemberEvent::Error {
                at_ns: 13,
                error: String::new(),
            },
            MemberEvent::Left {
                started_ns: 14,
                done_ns: 15,
            },
            MemberEvent::CommitLoop {
                ok: 1000,
                failed: 2,
                partition_offsets: 2000,
                started_ns: 16,
                done_ns: 17,
            },
        ];
        for event in events {
            let line = event.to_string();
            assert!(!line.contains('\n'), "{line:?}");
            assert_eq!(MemberEvent::parse(&line), Some(event), "{line:?}");
        }
        let multi_line = MemberEvent::Error {
            at_ns: 1,
            error: "two\nlines".into(),
        };
        assert_eq!(
            MemberEvent::parse(&multi_line.to_string()),
            Some(MemberEvent::Error {
                at_ns: 1,
                error: "two lines".into()
            })
        );
        assert_eq!(MemberEvent::parse("M 1 2 3"), None);
        assert_eq!(MemberEvent::parse("Z 1"), None);
        assert_eq!(MemberEvent::parse("A 1 x,2"), None);
        assert_eq!(MemberEvent::parse(""), None);
    }

    #[test]
    fn ledger_counts_first_sightings_and_duplicates() {
        let mut ledger = Ledger::default();
        ledger.expect(0, 3);
        ledger.expect(7, u64::MAX);
        assert_eq!(ledger.record(0, 0, 2), Sighting::First);
        assert_eq!(ledger.record(0, 2, 1), Sighting::First);
        assert_eq!(
            ledger.record(0, 0, 1),
            Sighting::Duplicate { first_member: 2 }
        );
        assert_eq!(ledger.record(0, 3, 1), Sighting::Unexpected);
        assert_eq!(ledger.record(1, 0, 1), Sighting::Unexpected);
        assert_eq!(ledger.unique(0), 2);
        assert_eq!(ledger.missing(0, 3), 1);
        // A producer whose count is not known yet grows its table.
        assert_eq!(ledger.record(7, 5000, 0), Sighting::First);
        assert_eq!(ledger.record(7, 4999, 0), Sighting::First);
        assert_eq!(
            ledger.record(7, 5000, 3),
            Sighting::Duplicate { first_member: 0 }
        );
        assert_eq!(ledger.unique(7), 2);
        assert_eq!(ledger.missing(7, 5001), 4999);
        assert_eq!(ledger.missing(9, 4), 4);
    }

    #[test]
    fn resumption_and_stalls() {
        let r = |at_ns, partition, member| Receipt {
            at_ns,
            partition,
            member,
        };
        let receipts = [
            r(10, 0, 0),
            r(10, 1, 1),
            r(20, 0, 0),
            r(25, 1, 1),
            r(40, 1, 0),
            r(50, 0, 0),
            r(55, 1, 0),
        ];
        // Member 1 left at 30: partition 1 resumed with member 0 at 40, partition 0 (not
        // its) is not asked about; a partition nobody received is None.
        assert_eq!(
            resumed_at(&receipts, &[1, 2], 1, 30),
            vec![(1, Some(40)), (2, None)]
        );
        // Receipts by the member that left do not count, nor those at the instant itself.
        assert_eq!(resumed_at(&receipts, &[1], 1, 10), vec![(1, Some(40))]);
        assert_eq!(resumed_at(&receipts, &[0], 1, 10), vec![(0, Some(20))]);
        // Between 15 and 60: partition 0 has gaps 5, 30, 10; partition 1 has 10, 15, 15, 5.
        assert_eq!(longest_stall(&receipts, &[0, 1], 15, 60), Some((0, 30)));
        // A partition without any receipt stalls for the whole window.
        assert_eq!(longest_stall(&receipts, &[0, 3], 15, 60), Some((3, 45)));
        assert_eq!(longest_stall(&receipts, &[], 15, 60), None);
    }

    #[test]
    fn complete_assignments() {
        assert!(assignment_complete([&[0, 2][..], &[1][..], &[][..]], 3));
        assert!(!assignment_complete([&[0, 2][..]], 3));
        assert!(!assignment_complete([&[0, 1][..], &[1, 2][..]], 3));
        assert!(!assignment_complete([&[0, 1, 2, 3][..]], 3));
        assert!(!assignment_complete([&[-1, 0, 1, 2][..]], 3));
        assert!(assignment_complete(std::iter::empty::<&[i32]>(), 0));
    }
}
