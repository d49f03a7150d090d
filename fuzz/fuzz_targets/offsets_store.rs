//! Arbitrary bytes as the committed-offsets log (and, from the first byte, as a
//! snapshot instead): opening must replay what is valid or report corruption, never
//! panic, and a store that opens must take a commit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_meta::{CommittedOffset, OffsetRecord, OffsetStore, OffsetStoreConfig};

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
    let Ok(mut store) = OffsetStore::open(dir.path(), OffsetStoreConfig::default()) else {
        return;
    };
    let commit = OffsetRecord::Commit {
        group: "fuzz".to_owned(),
        stream: "s".to_owned(),
        shard: 0,
        committed: CommittedOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 1,
        },
    };
    store
        .append(&[commit])
        .expect("a store that opened takes a commit");
    store.sync_handle().sync().expect("and syncs it");
    let committed = &store.offsets()["fuzz"][&("s".to_owned(), 0)];
    assert_eq!(committed.offset, 42);
});
