//! Bad input over raw sockets: every case gets the error a Kafka client understands or a
//! closed connection, the server keeps serving everyone else, and nothing another request
//! wrote is lost.

mod raw;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, ResponseHeader,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use raw::{assert_alive, encode, produce, produce_body};
use shardline_core::batch::write_crc;
use shardline_records::build_simple_batch;
use shardline_testkit::{RawClient, TestServer, request_frame};

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const UNSUPPORTED_VERSION: i16 = 35;
const INVALID_RECORD: i16 = 87;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_own_connection() {
    let server = TestServer::start().await;
    let addr = server.kafka_addr;
    tokio::task::spawn_blocking(move || {
        // A length prefix far over the limit: closed before anything is allocated.
        let mut client = RawClient::connect(addr).unwrap();
        client.send_raw(&0x7fff_fff0i32.to_be_bytes()).unwrap();
        assert!(
            client.is_closed_by_server(),
            "oversized frame closes the connection"
        );
        assert_alive(addr);

        // A negative length.
        let mut client = RawClient::connect(addr).unwrap();
        client.send_raw(&(-1i32).to_be_bytes()).unwrap();
        assert!(client.is_closed_by_server());

        // Garbage of a plausible length: an api key Kafka does not define.
        let mut client = RawClient::connect(addr).unwrap();
        let mut garbage = 64i32.to_be_bytes().to_vec();
        garbage.extend((0..64u8).map(|i| i.wrapping_mul(37) | 0x80));
        client.send_raw(&garbage).unwrap();
        assert!(client.is_closed_by_server(), "unknown api key closes");

        // A truncated frame, then the client goes away.
        let mut client = RawClient::connect(addr).unwrap();
        client.send_raw(&[0, 0, 1, 0, 0, 18, 0, 3]).unwrap();
        drop(client);

        // A valid header with a body that does not decode (a Metadata v1 topic array
        // whose entries are cut short).
        let mut client = RawClient::connect(addr).unwrap();
        client
            .send_request(ApiKey::Metadata as i16, 1, 7, &[0, 0, 0, 2, 0, 9, b'x'])
            .unwrap();
        assert!(client.is_closed_by_server(), "undecodable body closes");

        // Counts that claim far more than was sent (Metadata v1 with 2^31-1 topics; a
        // flexible Produce v9 with 2^32-2 topics): refused before anything is sized from
        // them, which would otherwise abort the process on allocation failure.
        let mut client = RawClient::connect(addr).unwrap();
        client
            .send_request(ApiKey::Metadata as i16, 1, 7, &0x7fff_ffffi32.to_be_bytes())
            .unwrap();
        assert!(client.is_closed_by_server(), "huge array claim closes");
        let mut client = RawClient::connect(addr).unwrap();
        let mut produce_v9 = vec![0u8, 0xff, 0xff, 0, 0, 0x75, 0x30]; // null txn id, acks -1, timeout
        produce_v9.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // topics: varint 2^32-1
        client
            .send_raw(&request_frame(
                ApiKey::Produce as i16,
                9,
                8,
                true,
                &produce_v9,
            ))
            .unwrap();
        assert!(
            client.is_closed_by_server(),
            "huge compact array claim closes"
        );

        // A served API at a version outside the advertised range.
        let mut client = RawClient::connect(addr).unwrap();
        client
            .send_request(
                ApiKey::Metadata as i16,
                99,
                8,
                &encode(&MetadataRequest::default(), 4),
            )
            .unwrap();
        assert!(client.is_closed_by_server(), "unknown version closes");

        assert_alive(addr);
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_negotiation_and_unserved_apis_answer_without_closing() {
    let server = TestServer::start().await;
    let addr = server.kafka_addr;
    tokio::task::spawn_blocking(move || {
        let mut client = RawClient::connect(addr).unwrap();
        // A future ApiVersions: answered in v0 with UNSUPPORTED_VERSION and our table.
        client
            .send_request(ApiKey::ApiVersions as i16, 99, 1, &[])
            .unwrap();
        let mut frame = Bytes::from(client.read_frame().unwrap().unwrap());
        let header = ResponseHeader::decode(&mut frame, 0).unwrap();
        assert_eq!(header.correlation_id, 1);
        let response = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
        assert_eq!(response.error_code, UNSUPPORTED_VERSION);
        let apiversions = response
            .api_keys
            .iter()
            .find(|key| key.api_key == ApiKey::ApiVersions as i16)
            .unwrap();
        assert_eq!(apiversions.max_version, 4);

        // ApiVersions v3, the flexible form librdkafka sends first, on the same connection.
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("raw"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        client
            .send_raw(&request_frame(
                ApiKey::ApiVersions as i16,
                3,
                2,
                true,
                &encode(&request, 3),
            ))
            .unwrap();
        let mut frame = Bytes::from(client.read_frame().unwrap().unwrap());
        // ApiVersions answers always use response header v0.
        assert_eq!(
            ResponseHeader::decode(&mut frame, 0)
                .unwrap()
                .correlation_id,
            2
        );
        let response = ApiVersionsResponse::decode(&mut frame, 3).unwrap();
        assert_eq!(response.error_code, 0);
        let produce = response
            .api_keys
            .iter()
            .find(|key| key.api_key == 0)
            .unwrap();
        assert_eq!((produce.min_version, produce.max_version), (0, 12));

        // A defined API we do not serve (SASL): a typed refusal, connection kept.
        client
            .send_request(
                ApiKey::SaslHandshake as i16,
                1,
                3,
                &[0, 5, b'P', b'L', b'A', b'I', b'N'],
            )
            .unwrap();
        let mut frame = Bytes::from(client.read_frame().unwrap().unwrap());
        assert_eq!(
            ResponseHeader::decode(&mut frame, 0)
                .unwrap()
                .correlation_id,
            3
        );
        let response = SaslHandshakeResponse::decode(&mut frame, 1).unwrap();
        assert_eq!(response.error_code, UNSUPPORTED_VERSION);
        client
            .send_request(ApiKey::ApiVersions as i16, 0, 4, &[])
            .unwrap();
        assert!(
            client.read_frame().unwrap().is_some(),
            "connection survives"
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_get_kafka_errors_and_good_neighbours_are_stored() {
    let server = TestServer::start().await;
    server
        .broker()
        .create_stream("bad", 3, Default::default(), false)
        .await
        .unwrap();
    let addr = server.kafka_addr;
    tokio::task::spawn_blocking(move || {
        let mut client = RawClient::connect(addr).unwrap();
        let good = build_simple_batch(1_700_000_000_000, &[b"good-1", b"good-2"]);
        let mut corrupt = build_simple_batch(1_700_000_000_000, &[b"flipped"]);
        let last = corrupt.len() - 3;
        corrupt[last] ^= 0xff;
        let huge_value = vec![b'z'; 1024 * 1024 + 100];
        let huge = build_simple_batch(1_700_000_000_000, &[&huge_value]);

        // One request: a corrupt batch, a good one, and an oversized one.
        let body = produce_body("bad", vec![(0, corrupt), (1, good.clone()), (2, huge)]);
        let answers = produce(&mut client, 10, &body);
        assert_eq!(answers[0].1, CORRUPT_MESSAGE);
        assert_eq!(
            answers[1],
            (1, 0, 0),
            "the good batch is stored at offset 0"
        );
        assert_eq!(answers[2].1, MESSAGE_TOO_LARGE);

        // Unknown topic and unknown partition.
        let answers = produce(
            &mut client,
            11,
            &produce_body("no-such-topic", vec![(0, good.clone())]),
        );
        assert_eq!(answers[0].1, UNKNOWN_TOPIC_OR_PARTITION);
        let answers = produce(
            &mut client,
            12,
            &produce_body("bad", vec![(7, good.clone())]),
        );
        assert_eq!(answers[0].1, UNKNOWN_TOPIC_OR_PARTITION);

        // The connection is still usable and the good batch is still there: the next
        // append to partition 1 lands right after it.
        let answers = produce(&mut client, 13, &produce_body("bad", vec![(1, good)]));
        assert_eq!(answers[0], (1, 0, 2));
    })
    .await
    .unwrap();
    let (start, high) = server.broker().offsets("bad", 0).unwrap();
    assert_eq!(
        (start, high),
        (0, 0),
        "nothing was stored from the corrupt batch"
    );
    server.stop().await;
}

/// Sets an idempotent producer's id, epoch and first sequence on a batch.
fn idempotent(mut batch: Vec<u8>, producer_id: i64, epoch: i16, sequence: i32) -> Vec<u8> {
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&sequence.to_be_bytes());
    write_crc(&mut batch);
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_are_not_stored_twice_and_gaps_are_refused() {
    let server = TestServer::start().await;
    server
        .broker()
        .create_stream("idem", 1, Default::default(), false)
        .await
        .unwrap();
    let (producer_id, epoch) = server.broker().init_producer_id(None).await.unwrap();
    let addr = server.kafka_addr;
    tokio::task::spawn_blocking(move || {
        let mut client = RawClient::connect(addr).unwrap();
        let first = idempotent(
            build_simple_batch(1, &[b"a", b"b", b"c"]),
            producer_id,
            epoch,
            0,
        );
        let second = idempotent(build_simple_batch(1, &[b"d"]), producer_id, epoch, 3);
        assert_eq!(
            produce(
                &mut client,
                1,
                &produce_body("idem", vec![(0, first.clone())])
            ),
            vec![(0, 0, 0)]
        );
        assert_eq!(
            produce(
                &mut client,
                2,
                &produce_body("idem", vec![(0, second.clone())])
            ),
            vec![(0, 0, 3)]
        );
        // Retries of both: answered with the original offsets.
        assert_eq!(
            produce(&mut client, 3, &produce_body("idem", vec![(0, first)])),
            vec![(0, 0, 0)]
        );
        assert_eq!(
            produce(&mut client, 4, &produce_body("idem", vec![(0, second)])),
            vec![(0, 0, 3)]
        );
        // A gap in the sequence.
        let gap = idempotent(build_simple_batch(1, &[b"e"]), producer_id, epoch, 9);
        let answers = produce(&mut client, 5, &produce_body("idem", vec![(0, gap)]));
        assert_eq!(answers[0].1, OUT_OF_ORDER_SEQUENCE_NUMBER);
    })
    .await
    .unwrap();
    assert_eq!(
        server.broker().offsets("idem", 0).unwrap(),
        (0, 4),
        "4 records, no duplicates"
    );
    server.stop().await;
}

/// Rewrites a batch's record count (and last offset delta, so the header agrees with
/// itself) and its CRC: a batch that lies consistently.
fn claiming(mut batch: Vec<u8>, count: i32) -> Vec<u8> {
    batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    batch[57..61].copy_from_slice(&count.to_be_bytes());
    write_crc(&mut batch);
    batch
}

/// A batch of `records` megabytes of zeros compressed with `codec`: small on the wire,
/// past the server's decompression limit (32 MiB by default) once inflated.
fn bomb(codec: shardline_records::Compression, megabytes: usize) -> Vec<u8> {
    let zeros = Bytes::from(vec![0u8; 1 << 20]);
    let records: Vec<shardline_records::Record> = (0..megabytes)
        .map(|_| shardline_records::Record {
            attributes: 0,
            timestamp: 1_700_000_000_000,
            offset_delta: 0,
            key: Some(Bytes::from_static(b"k")),
            value: Some(zeros.clone()),
            headers: Vec::new(),
        })
        .collect();
    let spec = shardline_records::BatchSpec {
        compression: codec,
        ..Default::default()
    };
    shardline_records::encode_batch(&spec, &records).unwrap()
}

/// Produces each of `hostile` to partition 0 of `topic`, in a request of its own that
/// also carries a good batch for partition 1: the hostile one gets INVALID_RECORD, its
/// neighbour is stored.
fn refused_beside_a_neighbour(
    client: &mut RawClient,
    topic: &str,
    first_correlation_id: i32,
    hostile: Vec<Vec<u8>>,
) {
    for (correlation_id, hostile) in (first_correlation_id..).zip(hostile) {
        let good = build_simple_batch(1, &[b"neighbour"]);
        let body = produce_body(topic, vec![(0, hostile), (1, good)]);
        let answers = produce(client, correlation_id, &body);
        assert_eq!(answers[0].1, INVALID_RECORD, "request {correlation_id}");
        assert_eq!(answers[1].1, 0, "the neighbour is stored");
    }
}

/// The closed-partition path decodes what the client sent; before the records codec,
/// one lying batch there ended the process (an allocation of the claimed count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_batches_to_a_closed_partition_are_refused_and_nothing_stops() {
    use shardline_records::Compression;
    let server = TestServer::start().await;
    server
        .broker()
        .create_stream("closed", 1, Default::default(), false)
        .await
        .unwrap();
    server
        .broker()
        .split_shard("closed", 0, 1u128 << 127)
        .await
        .unwrap();
    let addr = server.kafka_addr;
    tokio::task::spawn_blocking(move || {
        let mut client = RawClient::connect(addr).unwrap();
        let lying = claiming(build_simple_batch(1, &[b"x"]), i32::MAX);
        let gzip = bomb(Compression::Gzip, 40);
        let zstd = bomb(Compression::Zstd, 40);
        assert!(
            gzip.len() < 1 << 20 && zstd.len() < 1 << 20,
            "bombs fit one batch"
        );
        // Each hostile batch shares its request with a good batch for a child.
        refused_beside_a_neighbour(&mut client, "closed", 20, vec![lying, gzip, zstd]);
        // A well-formed batch to the closed partition is still re-routed.
        let honest = build_simple_batch(1, &[b"late"]);
        let answers = produce(&mut client, 23, &produce_body("closed", vec![(0, honest)]));
        assert_eq!((answers[0].1, answers[0].2), (0, -1));
        assert_alive(addr);
    })
    .await
    .unwrap();
    let stored: u64 = [1, 2]
        .iter()
        .map(|child| server.broker().offsets("closed", *child).unwrap().1)
        .sum();
    assert_eq!(
        stored, 4,
        "three neighbours and the re-routed record, nothing else"
    );
    server.stop().await;
}

/// An open partition stores batches verbatim, so it must not trust their record counts:
/// before, one 70-byte batch claiming 2^31 records moved the offsets by 2^31 and put
/// weeks of throttle debt on the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_whose_counts_lie_are_refused_by_an_open_partition() {
    use shardline_records::Compression;
    let server = TestServer::start().await;
    server
        .broker()
        .create_stream("open", 2, Default::default(), false)
        .await
        .unwrap();
    let addr = server.kafka_addr;
    tokio::task::spawn_blocking(move || {
        let mut client = RawClient::connect(addr).unwrap();
        let lying = claiming(build_simple_batch(1, &[b"x"]), i32::MAX);
        let short = claiming(build_simple_batch(1, &[b"x", b"y"]), 3);
        // A compressed batch whose inside holds one record fewer than its header says.
        let records: Vec<shardline_records::Record> = (0..2)
            .map(|delta| shardline_records::Record {
                attributes: 0,
                timestamp: 1,
                offset_delta: delta,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Vec::new(),
            })
            .collect();
        let spec = shardline_records::BatchSpec {
            compression: Compression::Lz4,
            ..Default::default()
        };
        let compressed_lie = claiming(shardline_records::encode_batch(&spec, &records).unwrap(), 3);
        let gzip = bomb(Compression::Gzip, 40);
        for (correlation_id, hostile) in
            [(30, lying), (31, short), (32, compressed_lie), (33, gzip)]
        {
            let good = build_simple_batch(1, &[b"neighbour"]);
            let body = produce_body("open", vec![(0, hostile), (1, good)]);
            let answers = produce(&mut client, correlation_id, &body);
            assert_eq!(answers[0].1, INVALID_RECORD, "request {correlation_id}");
            assert_eq!(answers[1].1, 0, "the neighbour is stored");
        }
        // An honest compressed batch is still stored, at offset 0: nothing moved.
        let honest = shardline_records::encode_batch(&spec, &records).unwrap();
        let answers = produce(&mut client, 34, &produce_body("open", vec![(0, honest)]));
        assert_eq!((answers[0].1, answers[0].2), (0, 0));
        assert_alive(addr);
    })
    .await
    .unwrap();
    assert_eq!(server.broker().offsets("open", 0).unwrap(), (0, 2));
    assert_eq!(server.broker().offsets("open", 1).unwrap(), (0, 4));
    server.stop().await;
}

/// Reads from `stream` until the server closes it (or 10 s pass: then it did not).
fn read_until_closed(stream: &mut std::net::TcpStream) -> (bool, Vec<u8>) {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return (true, seen),
            Ok(read) => seen.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return (true, seen);
            }
            Err(_) => return (false, seen),
        }
    }
}

fn healthz(stream: &mut std::net::TcpStream) -> String {
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buffer = [0u8; 1024];
    let read = stream.read(&mut buffer).unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

/// The HTTP listener is capped and times out idle and slow clients, each a config key;
/// a slot freed by a close is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_are_capped_and_idle_or_slow_ones_closed() {
    use std::io::Write;
    let server = TestServer::start_in(shardline_testkit::data_dir(), |config| {
        config.http.connections_max = 2;
        config.http.idle_timeout_ms = 2000;
        config.http.header_timeout_ms = 2000;
    })
    .await;
    let addr = server.http_addr;
    tokio::task::spawn_blocking(move || {
        let mut idle = std::net::TcpStream::connect(addr).unwrap();
        assert!(healthz(&mut idle).starts_with("HTTP/1.1 200"));
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
            .unwrap();
        // Both slots are taken: a third connection is closed at once.
        let mut third = std::net::TcpStream::connect(addr).unwrap();
        let (closed, answer) = read_until_closed(&mut third);
        assert!(closed && answer.is_empty(), "over http.connections_max");
        // The idle keep-alive connection and the one stuck in its headers are closed.
        assert!(
            read_until_closed(&mut idle).0,
            "idle past http.idle_timeout_ms"
        );
        assert!(
            read_until_closed(&mut slow).0,
            "headers past http.header_timeout_ms"
        );
        // Their slots are free again.
        let mut fresh = std::net::TcpStream::connect(addr).unwrap();
        assert!(healthz(&mut fresh).starts_with("HTTP/1.1 200"));
    })
    .await
    .unwrap();
    server.stop().await;
}

/// Mounts a 16 MiB tmpfs on `$SHARDLINE_TMPFS` in a private mount namespace, then runs
/// the server there. A watcher fills the file system when `$CONTROL/fill` is written and
/// frees it when `$CONTROL/free` is, touching `filled` / `freed` when done.
const FULL_DISK_SCRIPT: &str = r#"set -e
mount -t tmpfs -o size=16m tmpfs "$SHARDLINE_TMPFS"
timeout 300 sh -c '
  read go < "$1/fill"
  dd if=/dev/zero of="$2/filler" bs=64k 2>/dev/null || true
  touch "$1/filled"
  read go < "$1/free"
  rm -f "$2/filler"
  touch "$1/freed"
' watcher "$CONTROL" "$SHARDLINE_TMPFS" </dev/null >/dev/null 2>&1 &
exec "$@"
"#;

fn wait_for_file(path: &std::path::Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} did not appear within 30 s", path.display());
}

/// A real full disk (a small tmpfs): appends get KAFKA_STORAGE_ERROR — an answer, not a
/// hang — the server stays up, and once space is back appends resume without a restart,
/// at the next offset.
#[test]
fn a_full_disk_answers_kafka_storage_error_and_heals_when_space_is_back() {
    const KAFKA_STORAGE_ERROR: i16 = 56;
    let namespaces = std::process::Command::new("unshare")
        .args(["-rm", "true"])
        .status();
    assert!(
        namespaces.is_ok_and(|status| status.success()),
        "this test needs `unshare -rm` (user and mount namespaces) to mount a small tmpfs"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = dir.path().join("control");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&control).unwrap();
    for fifo in ["fill", "free"] {
        let made = std::process::Command::new("mkfifo")
            .arg(control.join(fifo))
            .status()
            .unwrap();
        assert!(made.success());
    }
    let server = shardline_testkit::ServerProcess::spawn_under(
        &["unshare", "-rm", "sh", "-c", FULL_DISK_SCRIPT, "sh"],
        &data,
        &["--auto-create-topics"],
        &[
            ("SHARDLINE_TMPFS", data.display().to_string()),
            ("CONTROL", control.display().to_string()),
        ],
    )
    .expect("server starts on its tmpfs");
    let mut client = RawClient::connect(server.kafka_addr).unwrap();
    let batch = || {
        let value = vec![b'v'; 32 * 1024];
        build_simple_batch(1, &[&value])
    };
    let answers = produce(&mut client, 1, &produce_body("full", vec![(0, batch())]));
    assert_eq!(answers[0], (0, 0, 0));

    std::fs::write(control.join("fill"), "go\n").unwrap();
    wait_for_file(&control.join("filled"));
    for correlation_id in [2, 3] {
        let answers = produce(
            &mut client,
            correlation_id,
            &produce_body("full", vec![(0, batch())]),
        );
        assert_eq!(
            answers[0].1, KAFKA_STORAGE_ERROR,
            "request {correlation_id}"
        );
    }
    assert_alive(server.kafka_addr);

    std::fs::write(control.join("free"), "go\n").unwrap();
    wait_for_file(&control.join("freed"));
    let answers = produce(&mut client, 4, &produce_body("full", vec![(0, batch())]));
    assert_eq!(answers[0], (0, 0, 1), "appends resume at the next offset");
    let status = server.terminate().unwrap();
    assert!(status.success(), "{status}");
}
