//! Arbitrary bytes as the last segment of a shard log after a crash: opening must
//! recover (truncating at the first bad batch) or report corruption, never panic; what
//! it recovers must read back, and the log must take an append after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_log::{LogConfig, ShardLog};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("00000000000000000000.log"), data).expect("write");
    let config = LogConfig {
        segment_bytes_max: 1 << 20,
        segment_ms_max: 1_000_000,
        index_interval_bytes: 128,
        verify_crc_on_read: true,
    };
    let Ok(mut log) = ShardLog::open(dir.path(), config, 0) else {
        return;
    };
    let end = log.next_offset();
    let read = log
        .read(0, end, 1 << 20)
        .expect("recovered data reads back");
    assert!(read.len() <= data.len());
    let mut batch = shardline_records::build_simple_batch(1, &[b"after recovery"]);
    let info = log
        .append(&mut batch, 1)
        .expect("a recovered log takes appends");
    assert_eq!(info.base_offset, end);
});
