//! A Kafka request frame (after its length prefix), decoded as a connection does: key
//! and version checks, the header, the guard's walk, then kafka_protocol. Nothing may
//! panic, and nothing may be sized from a count the bytes cannot back (libFuzzer's
//! -rss_limit_mb and -malloc_limit_mb catch that).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shardline_kafka::decode_request_frame(bytes::Bytes::copy_from_slice(data));
});
