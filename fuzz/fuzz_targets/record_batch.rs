//! One record batch, as a producer may send it: decoded within a limit and checked. The
//! check (what the write path runs) and the full decode must agree, and what decodes
//! must re-encode to records that decode the same.
//!
//! The batch length and CRC are set from the input before anything else, so that
//! mutations explore the header fields and the records rather than stopping at the CRC
//! (which is checked first and only once).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shardline_core::batch::{HEADER_LEN, write_crc};
use shardline_records::{BatchSpec, DecodeLimits};

const LIMITS: DecodeLimits = DecodeLimits {
    decompressed_bytes_max: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let mut batch = data.to_vec();
    if batch.len() >= HEADER_LEN {
        let length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        write_crc(&mut batch);
    }
    let bytes = Bytes::from(batch);
    let checked = shardline_records::check_batch(&bytes, LIMITS);
    let decoded = shardline_records::decode_batch(&bytes, LIMITS);
    match (&checked, &decoded) {
        (Ok(summary), Ok(batch)) => {
            assert_eq!(summary.records, batch.records.len());
            let spec = BatchSpec {
                compression: batch.header.compression(),
                ..BatchSpec::default()
            };
            if let Ok(encoded) = shardline_records::encode_batch(&spec, &batch.records) {
                let again = shardline_records::decode_batch(&Bytes::from(encoded), LIMITS)
                    .expect("what the encoder wrote decodes");
                assert_eq!(again.records, batch.records);
            }
        }
        (Err(_), Err(_)) => {}
        _ => panic!("check and decode disagree: {checked:?} vs {decoded:?}"),
    }
});
