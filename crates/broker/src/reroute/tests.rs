use std::collections::BTreeMap;

use bytes::Bytes;
use shardline_core::HashKey;
use shardline_core::batch::write_crc;
use shardline_records::{BatchSpec, Compression, DecodeLimits, NewRecord, Record};

use crate::{Broker, BrokerConfig, ErrorKind};

const LIMITS: DecodeLimits = DecodeLimits {
    decompressed_bytes_max: 1 << 30,
};

/// A broker with stream "s" of one shard, split in two: shard 0 closed, 1 and 2 open.
async fn split_stream(dir: &std::path::Path) -> Broker {
    let broker = Broker::open(BrokerConfig::with_data_dir(dir.to_path_buf()))
        .await
        .unwrap();
    broker
        .create_stream("s", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    broker.split_shard("s", 0, 1u128 << 127).await.unwrap();
    broker
}

fn keyed(keys: &[&[u8]], compression: Compression) -> Bytes {
    let records: Vec<Record> = keys
        .iter()
        .map(|key| Record {
            attributes: 0,
            timestamp: 7,
            offset_delta: 0,
            key: Some(Bytes::copy_from_slice(key)),
            value: Some(Bytes::copy_from_slice(key)),
            headers: Vec::new(),
        })
        .collect();
    let spec = BatchSpec {
        compression,
        ..BatchSpec::default()
    };
    Bytes::from(shardline_records::encode_batch(&spec, &records).unwrap())
}

/// Every record read back from a shard, as (key, value) pairs.
async fn stored(broker: &Broker, shard: i64) -> Vec<(Bytes, Bytes)> {
    let read = broker.read("s", shard, 0, 1 << 20).await.unwrap();
    let mut out = Vec::new();
    let mut rest = read.records;
    while !rest.is_empty() {
        let batch = shardline_records::decode_batch(&rest, LIMITS).unwrap();
        let length = batch.header.total_len();
        for record in batch.records {
            out.push((record.key.unwrap(), record.value.unwrap()));
        }
        rest = rest.slice(length..);
    }
    out
}

#[tokio::test]
async fn each_record_goes_to_the_child_owning_its_key_in_the_batchs_codec() {
    let dir = tempfile::tempdir().unwrap();
    let broker = split_stream(dir.path()).await;
    // "a" hashes into the lower half (shard 1), "0" into the upper (shard 2).
    assert_eq!(
        broker.route("s", HashKey::of_partition_key(b"a")).unwrap(),
        1
    );
    assert_eq!(
        broker.route("s", HashKey::of_partition_key(b"0")).unwrap(),
        2
    );
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let batch = keyed(&[b"a", b"0", b"a"], compression);
        let rerouted = broker.append_to_closed("s", 0, batch).await.unwrap();
        assert!(!rerouted.duplicate);
    }
    let lower = stored(&broker, 1).await;
    let upper = stored(&broker, 2).await;
    assert_eq!(lower.len(), 6);
    assert!(lower.iter().all(|(key, _)| &key[..] == b"a"));
    assert_eq!(upper.len(), 3);
    assert!(upper.iter().all(|(key, _)| &key[..] == b"0"));
    let read = broker.read("s", 2, 0, 1 << 20).await.unwrap();
    let last = shardline_core::batch::Batches::new(&read.records, true)
        .last()
        .unwrap()
        .unwrap();
    assert_eq!(
        last.0.compression(),
        Compression::Zstd,
        "the batch's codec is kept"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn keyless_batches_take_the_open_shards_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let broker = split_stream(dir.path()).await;
    for _ in 0..4 {
        let batch = Bytes::from(shardline_records::build_batch(
            1,
            &[NewRecord {
                value: Some(b"v"),
                ..NewRecord::default()
            }],
        ));
        broker.append_to_closed("s", 0, batch).await.unwrap();
    }
    assert_eq!(broker.offsets("s", 1).unwrap().1, 2);
    assert_eq!(broker.offsets("s", 2).unwrap().1, 2);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_batch_whose_records_lie_is_refused_whole_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let broker = split_stream(dir.path()).await;
    let mut lying = keyed(&[b"a", b"0"], Compression::None).to_vec();
    let count = 1_000_000i32;
    lying[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    lying[57..61].copy_from_slice(&count.to_be_bytes());
    write_crc(&mut lying);
    let error = broker
        .append_to_closed("s", 0, Bytes::from(lying))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidBatch, "{error}");
    let mut flipped = keyed(&[b"a"], Compression::Gzip).to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let error = broker
        .append_to_closed("s", 0, Bytes::from(flipped))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CorruptBatch, "{error}");
    assert_eq!(broker.offsets("s", 1).unwrap().1, 0);
    assert_eq!(broker.offsets("s", 2).unwrap().1, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_bomb_fails_at_the_configured_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::with_data_dir(dir.path().to_path_buf());
    config.decompressed_batch_bytes_max = 1 << 20;
    let broker = Broker::open(config).await.unwrap();
    broker
        .create_stream("s", 1, BTreeMap::new(), false)
        .await
        .unwrap();
    broker.split_shard("s", 0, 1u128 << 127).await.unwrap();
    let zeros = vec![0u8; 2 << 20];
    let record = Record {
        attributes: 0,
        timestamp: 1,
        offset_delta: 0,
        key: None,
        value: Some(Bytes::from(zeros)),
        headers: Vec::new(),
    };
    let spec = BatchSpec {
        compression: Compression::Gzip,
        ..BatchSpec::default()
    };
    let bomb = Bytes::from(shardline_records::encode_batch(&spec, &[record]).unwrap());
    let error = broker.append_to_closed("s", 0, bomb).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidBatch);
    assert!(error.to_string().contains("1048576"), "{error}");
    broker.shutdown().await;
}
