//! Disk baselines.

use super::*;

/// Removes a file when dropped.
pub(crate) struct RemoveOnDrop(pub(crate) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sequential 1 MiB writes with an fdatasync after each, `total` bytes in all.
pub(crate) fn disk_sequential(
    root: &Path,
    total: u64,
    progress: Duration,
) -> anyhow::Result<Value> {
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
pub(crate) fn disk_fsync_latency(root: &Path, writes: usize) -> anyhow::Result<Value> {
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
