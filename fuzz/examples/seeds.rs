//! Writes seed inputs that random mutation would take long to find: a valid record
//! batch in every codec (record_batch, segment_recovery). Run once with
//! `cargo run --example seeds` from fuzz/; the corpus is committed.

use bytes::Bytes;
use shardline_records::{BatchSpec, Compression, Header, Record};

fn main() {
    let records: Vec<Record> = (0..3)
        .map(|delta| Record {
            attributes: 0,
            timestamp: 1_700_000_000_000 + i64::from(delta),
            offset_delta: delta,
            key: (delta != 1).then(|| Bytes::from(format!("key-{delta}"))),
            value: Some(Bytes::from(vec![b'v'; 40])),
            headers: vec![Header {
                key: Bytes::from_static(b"h"),
                value: Some(Bytes::from_static(b"x")),
            }],
        })
        .collect();
    for (name, compression) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let spec = BatchSpec {
            compression,
            ..BatchSpec::default()
        };
        let batch = shardline_records::encode_batch(&spec, &records).expect("encodes");
        for target in ["record_batch", "segment_recovery"] {
            let dir = format!("corpus/{target}");
            std::fs::create_dir_all(&dir).expect("corpus dir");
            std::fs::write(format!("{dir}/seed-{name}"), &batch).expect("seed written");
        }
    }
}
