//! Property and hostile-input tests of whole batches.

use bytes::Bytes;
use proptest::prelude::*;
use shardline_core::batch::{BatchHeader, HEADER_LEN, write_crc};

use crate::*;

const LIMITS: DecodeLimits = DecodeLimits {
    decompressed_bytes_max: 1 << 20,
};

use crate::codec::CODECS;

fn bytes_opt() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
}

fn record_strategy() -> impl Strategy<Value = Record> {
    (
        any::<i8>(),
        -10_000i64..10_000,
        bytes_opt(),
        bytes_opt(),
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..16), bytes_opt()),
            0..4,
        ),
    )
        // Kafka defines no record attribute bits, but a decoded record keeps its byte and
        // re-encoding must too (found by the record_batch fuzz target).
        .prop_map(|(attributes, timestamp, key, value, headers)| Record {
            attributes,
            timestamp: 1_700_000_000_000 + timestamp,
            offset_delta: 0,
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: headers
                .into_iter()
                .map(|(key, value)| Header {
                    key: Bytes::from(key),
                    value: value.map(Bytes::from),
                })
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn encode_then_decode_is_identity_for_every_codec(
        records in proptest::collection::vec(record_strategy(), 1..40),
        producer_id in -1i64..1000,
    ) {
        for compression in CODECS {
            let spec = BatchSpec { compression, producer_id, ..BatchSpec::default() };
            let encoded = Bytes::from(encode_batch(&spec, &records).unwrap());
            let decoded = decode_batch(&encoded, LIMITS).unwrap();
            prop_assert_eq!(decoded.header.compression(), compression);
            prop_assert_eq!(decoded.header.producer_id, producer_id);
            prop_assert_eq!(decoded.header.record_count as usize, records.len());
            prop_assert_eq!(
                decoded.header.max_timestamp,
                records.iter().map(|r| r.timestamp).max().unwrap()
            );
            for (index, (got, sent)) in decoded.records.iter().zip(&records).enumerate() {
                prop_assert_eq!(got.offset_delta, index as i32);
                prop_assert_eq!(got.timestamp, sent.timestamp);
                prop_assert_eq!(&got.key, &sent.key);
                prop_assert_eq!(&got.value, &sent.value);
                prop_assert_eq!(&got.headers, &sent.headers);
            }
            let summary = check_batch(&encoded, LIMITS).unwrap();
            prop_assert_eq!(summary.records, records.len());
        }
    }

    #[test]
    fn arbitrary_sections_never_panic(
        section in proptest::collection::vec(any::<u8>(), 0..256),
        count in any::<i32>(),
        codec in 0u8..8,
    ) {
        let mut batch = encode_batch(&BatchSpec::default(), &[one(b"k", b"v")]).unwrap();
        batch.truncate(HEADER_LEN);
        batch.extend_from_slice(&section);
        let length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        batch[21..23].copy_from_slice(&i16::from(codec).to_be_bytes());
        batch[23..27].copy_from_slice(&count.wrapping_sub(1).to_be_bytes());
        batch[57..61].copy_from_slice(&count.to_be_bytes());
        write_crc(&mut batch);
        let _ = decode_batch(&Bytes::from(batch), LIMITS);
    }
}

fn one(key: &[u8], value: &[u8]) -> Record {
    Record {
        attributes: 0,
        timestamp: 1,
        offset_delta: 0,
        key: Some(Bytes::copy_from_slice(key)),
        value: Some(Bytes::copy_from_slice(value)),
        headers: Vec::new(),
    }
}

/// Rewrites a batch's record count (and last offset delta, so the header agrees with
/// itself) and its CRC: a batch that lies consistently.
fn claim(mut batch: Vec<u8>, count: i32) -> Bytes {
    batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    batch[57..61].copy_from_slice(&count.to_be_bytes());
    write_crc(&mut batch);
    Bytes::from(batch)
}

#[test]
fn a_header_claiming_more_records_than_present_is_refused() {
    for compression in CODECS {
        let spec = BatchSpec {
            compression,
            ..BatchSpec::default()
        };
        let batch = encode_batch(&spec, &[one(b"a", b"1"), one(b"b", b"2")]).unwrap();
        for count in [1, 3, 1000, i32::MAX] {
            let lying = claim(batch.clone(), count);
            assert!(
                matches!(
                    decode_batch(&lying, LIMITS),
                    Err(RecordsError::CountMismatch { claimed, .. }) if claimed == count
                ),
                "{compression:?} claiming {count}"
            );
            assert!(check_batch(&lying, LIMITS).is_err());
        }
    }
}

#[test]
fn offset_deltas_must_number_the_records() {
    let mut batch =
        encode_batch(&BatchSpec::default(), &[one(b"a", b"1"), one(b"b", b"2")]).unwrap();
    // The second record's offset delta (after its length, attributes and timestamp
    // delta bytes) becomes 5.
    let first_len = 1 + batch[HEADER_LEN] as usize / 2;
    batch[HEADER_LEN + first_len + 3] = 10; // zigzag 5
    write_crc(&mut batch);
    assert!(matches!(
        decode_batch(&Bytes::from(batch), LIMITS),
        Err(RecordsError::OffsetDelta { index: 1, found: 5 })
    ));
}

#[test]
fn compression_bombs_fail_within_the_limit() {
    // 1 MiB of zeros per record, 16 records: 16 MiB that compress to under 1 MiB with
    // every codec (snappy, the weakest, by about 21 to 1).
    let zeros = Bytes::from(vec![0u8; 1 << 20]);
    let records: Vec<Record> = (0..16)
        .map(|_| Record {
            value: Some(zeros.clone()),
            ..one(b"k", b"")
        })
        .collect();
    for compression in &CODECS[1..] {
        let spec = BatchSpec {
            compression: *compression,
            ..BatchSpec::default()
        };
        let bomb = Bytes::from(encode_batch(&spec, &records).unwrap());
        assert!(
            bomb.len() < 1 << 20,
            "{compression:?}: {} bytes",
            bomb.len()
        );
        assert!(
            matches!(
                decode_batch(&bomb, LIMITS),
                Err(RecordsError::TooLarge { limit }) if limit == 1 << 20
            ),
            "{compression:?}"
        );
    }
}

#[test]
fn a_bad_crc_is_corrupt_and_other_failures_are_not() {
    let mut batch = encode_batch(&BatchSpec::default(), &[one(b"a", b"1")]).unwrap();
    let last = batch.len() - 1;
    batch[last] ^= 1;
    let error = decode_batch(&Bytes::from(batch), LIMITS).unwrap_err();
    assert!(error.is_corrupt(), "{error}");
    let lying = claim(
        encode_batch(&BatchSpec::default(), &[one(b"a", b"1")]).unwrap(),
        2,
    );
    assert!(!decode_batch(&lying, LIMITS).unwrap_err().is_corrupt());
}

#[test]
fn build_batch_matches_its_length_and_parses() {
    let headers = [RecordHeader {
        key: "h",
        value: None,
    }];
    let records = [
        NewRecord {
            key: Some(b"key"),
            value: Some(b"value"),
            headers: &headers,
        },
        NewRecord::default(),
    ];
    let batch = build_batch(42, &records);
    assert_eq!(batch.len(), batch_len(&records));
    let header = BatchHeader::parse_and_verify(&batch).unwrap();
    assert_eq!((header.record_count, header.base_timestamp), (2, 42));
    let decoded = decode_batch(&Bytes::from(batch), LIMITS).unwrap();
    assert_eq!(decoded.records[0].headers[0].key, Bytes::from_static(b"h"));
    assert_eq!(decoded.records[1].key, None);
    // An empty batch builds (for tests of its refusal) and is refused.
    assert!(BatchHeader::parse_and_verify(&build_batch(1, &[])).is_err());
}

#[test]
fn control_records_round_trip() {
    let marker = ControlRecord {
        kind: ControlType::Commit,
        coordinator_epoch: 7,
    };
    assert_eq!(
        ControlRecord::parse(&marker.key(), &marker.value()),
        Some(marker)
    );
    assert_eq!(ControlRecord::parse(&[0, 1, 0, 1], &marker.value()), None);
    let spec = BatchSpec {
        control: true,
        transactional: true,
        producer_id: 9,
        producer_epoch: 0,
        ..BatchSpec::default()
    };
    let record = Record {
        key: Some(Bytes::copy_from_slice(&marker.key())),
        value: Some(Bytes::copy_from_slice(&marker.value())),
        ..one(b"", b"")
    };
    let batch = decode_batch(
        &Bytes::from(encode_batch(&spec, &[record]).unwrap()),
        LIMITS,
    )
    .unwrap();
    assert!(batch.header.is_control() && batch.header.is_transactional());
}
