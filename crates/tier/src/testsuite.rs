//! The conformance suite: [`run_all`] runs every case against one backend, and the tests
//! at the bottom run it against each: `memory://`, `file://` (a temporary directory) and
//! a real S3 HTTP endpoint (s3s + s3s-fs, started in-process on 127.0.0.1:0).
//!
//! Segments come from a real `ShardLog`, and every remote read is compared byte for byte
//! with the local read of the same range.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::PutMode;
use shardline_log::{LogConfig, SegmentInfo, ShardLog};
use shardline_records::build_simple_batch;
use tempfile::TempDir;

use crate::layout::{Layout, SegmentObject};
use crate::upload::begin_multipart;
use crate::{Error, S3Settings, SealedSegment, Tier, TierConfig};

mod damage;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// A shard log in a temporary directory.
struct LocalLog {
    _dir: TempDir,
    log: ShardLog,
}

impl LocalLog {
    /// Appends `batches` (records per batch, value bytes per record) with small
    /// segments, so that the log rolls.
    fn build(segment_bytes_max: u64, batches: &[(usize, usize)]) -> LocalLog {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max,
            index_interval_bytes: 1024,
            ..LogConfig::default()
        };
        let mut log = ShardLog::open(dir.path(), config, 0).unwrap();
        for (number, &(records, value_bytes)) in batches.iter().enumerate() {
            let values: Vec<Vec<u8>> = (0..records)
                .map(|record| vec![(number * 7 + record) as u8; value_bytes])
                .collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let mut batch = build_simple_batch(1_000 + number as i64, &refs);
            log.append(&mut batch, 1).unwrap();
        }
        LocalLog { _dir: dir, log }
    }

    fn sealed(&self) -> Vec<(SegmentInfo, SealedSegment)> {
        self.log
            .segments()
            .into_iter()
            .filter_map(|info| SealedSegment::from_segment_info(&info).map(|sealed| (info, sealed)))
            .collect()
    }

    /// What a remote read of `[offset, end_offset)` must return: the local read clamped
    /// to the segment holding `offset`.
    fn expected(&self, offset: u64, end_offset: u64, max_bytes: usize) -> Bytes {
        let segment_end = self
            .log
            .segments()
            .into_iter()
            .find(|info| (info.base_offset..info.next_offset).contains(&offset))
            .unwrap()
            .next_offset;
        self.log
            .read(offset, end_offset.min(segment_end), max_bytes)
            .unwrap()
    }
}

/// The log most cases use: ~270 KB in ~6 segments of up to 48 KiB, batches of 1-4
/// records and 50-750 byte values, so that batches straddle 4 KiB blocks.
fn varied_log() -> LocalLog {
    let batches: Vec<(usize, usize)> = (0..240)
        .map(|number| (1 + number % 4, 50 + (number * 37) % 700))
        .collect();
    LocalLog::build(48 * KIB, &batches)
}

/// The suite's settings on top of a backend's URL: 4 KiB blocks so that small logs span
/// many, and quick retries.
fn suite_config(base: &TierConfig) -> TierConfig {
    TierConfig {
        block_bytes: 4 * KIB,
        cache_bytes_max: MIB,
        readahead_blocks: 2,
        retry_attempts_max: 3,
        retry_backoff_min_ms: 10,
        retry_backoff_max_ms: 50,
        ..base.clone()
    }
}

async fn open(base: &TierConfig, tune: impl FnOnce(&mut TierConfig)) -> Tier {
    let mut config = suite_config(base);
    tune(&mut config);
    Tier::open(config).await.unwrap()
}

async fn upload_all(tier: &Tier, shard_key: &str, log: &LocalLog) -> Vec<crate::RemoteSegment> {
    let mut remote = Vec::new();
    for (_, sealed) in log.sealed() {
        remote.push(tier.upload_segment(shard_key, &sealed).await.unwrap());
    }
    remote
}

/// Runs every case against the backend `base` points at.
pub(crate) async fn run_all(base: TierConfig) {
    let started = Instant::now();
    let log = varied_log();
    upload_and_read_back(&base, &log).await;
    idempotent_and_contiguous(&base, &log).await;
    manifest_survives_a_new_instance(&base, &log).await;
    concurrent_readers_share_one_get(&base, &log).await;
    cache_stays_within_capacity(&base, &log).await;
    sequential_reads_prefetch(&base, &log).await;
    remote_retention(&base, &log).await;
    delete_prefix(&base, &log).await;
    documents(&base).await;
    damage::corruption_and_missing_objects(&base, &log).await;
    damage::replaced_object(&base, &log).await;
    damage::fencing(&base, &log).await;
    damage::stale_uploads(&base).await;
    multipart(&base).await;
    tracing::info!(
        url = base.url,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "suite done"
    );
}

async fn upload_and_read_back(base: &TierConfig, log: &LocalLog) {
    let tier = open(base, |_| {}).await;
    let shard = "read/shard-0";
    let remote = upload_all(&tier, shard, log).await;
    let sealed = log.sealed();
    assert!(sealed.len() >= 4, "the log should roll several times");
    let manifest = tier.manifest(shard).await.unwrap();
    assert_eq!(manifest.segments, remote);
    for ((info, _), segment) in sealed.iter().zip(&manifest.segments) {
        assert_eq!(segment.base_offset, info.base_offset);
        assert_eq!(segment.next_offset, info.next_offset);
        assert_eq!(segment.size_bytes, info.size_bytes);
        let local = std::fs::read(&info.path).unwrap();
        assert_eq!(segment.log_crc32c, crc32c::crc32c(&local));
    }
    let sealed_end = manifest.next_offset().unwrap();
    for offset in 0..sealed_end {
        for max_bytes in [0, 1, 3000, usize::MAX] {
            let remote = tier
                .read(shard, offset, sealed_end, max_bytes)
                .await
                .unwrap();
            assert_eq!(
                remote,
                log.expected(offset, sealed_end, max_bytes),
                "offset {offset}, max {max_bytes}"
            );
        }
        let end_offset = offset + 5;
        let remote = tier
            .read(shard, offset, end_offset, usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            remote,
            log.expected(offset, end_offset, usize::MAX),
            "offset {offset} to {end_offset}"
        );
    }
    assert!(tier.read(shard, 3, 3, 100).await.unwrap().is_empty());
    // The active segment was never uploaded.
    assert!(matches!(
        tier.read(shard, sealed_end, sealed_end + 10, 100).await,
        Err(Error::OffsetNotRemote { offset }) if offset == sealed_end
    ));
    assert!(matches!(
        tier.read("read/no-such-shard", 0, 10, 100).await,
        Err(Error::OffsetNotRemote { offset: 0 })
    ));
    let stats = tier.stats();
    assert_eq!(stats.segments_uploaded, sealed.len() as u64);
    assert!(stats.cache_hits > stats.cache_misses);
}

async fn idempotent_and_contiguous(base: &TierConfig, log: &LocalLog) {
    let tier = open(base, |_| {}).await;
    let shard = "idem/shard-0";
    let sealed = log.sealed();
    // Spawned: the upload future must be Send, as the broker runs it on a task.
    let first = tokio::spawn({
        let tier = tier.clone();
        let segment = sealed[0].1.clone();
        async move { tier.upload_segment(shard, &segment).await }
    })
    .await
    .unwrap()
    .unwrap();
    let puts = tier.stats().puts;
    let again = tier.upload_segment(shard, &sealed[0].1).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(tier.stats().puts, puts, "re-uploading must not PUT");
    assert_eq!(tier.stats().segments_uploaded, 1);
    // A gap is refused, and so is a different segment at a recorded base offset.
    assert!(matches!(
        tier.upload_segment(shard, &sealed[2].1).await,
        Err(Error::NotContiguous { .. })
    ));
    let mut imposter = sealed[0].1.clone();
    imposter.next_offset += 1;
    assert!(matches!(
        tier.upload_segment(shard, &imposter).await,
        Err(Error::NotContiguous { .. })
    ));
    // A description that disagrees with the files is refused before anything is sent.
    let mut stale = sealed[1].1.clone();
    stale.size_bytes -= 1;
    assert!(matches!(
        tier.upload_segment(shard, &stale).await,
        Err(Error::InvalidSegment { .. })
    ));
    assert_eq!(tier.manifest(shard).await.unwrap().segments.len(), 1);
    assert!(tier.stats().upload_failures >= 3);
}

async fn manifest_survives_a_new_instance(base: &TierConfig, log: &LocalLog) {
    let before = open(base, |_| {})
        .await
        .manifest("read/shard-0")
        .await
        .unwrap();
    let tier = open(base, |_| {}).await;
    let after = tier.manifest("read/shard-0").await.unwrap();
    assert_eq!(after, before);
    assert!(!after.segments.is_empty());
    let offset = after.segments[1].base_offset + 1;
    let end = after.next_offset().unwrap();
    assert_eq!(
        tier.read("read/shard-0", offset, end, 10_000)
            .await
            .unwrap(),
        log.expected(offset, end, 10_000)
    );
}

async fn concurrent_readers_share_one_get(base: &TierConfig, log: &LocalLog) {
    // Without read-ahead, so that only the readers' own loads count.
    let tier = open(base, |config| config.readahead_blocks = 0).await;
    let shard = "read/shard-0";
    let manifest = tier.manifest(shard).await.unwrap();
    let segment = &manifest.segments[2];
    let offset = segment.base_offset;
    let before = tier.stats();
    let reads: Vec<_> = (0..16)
        .map(|_| {
            let tier = tier.clone();
            tokio::spawn(async move { tier.read(shard, offset, u64::MAX, 1).await })
        })
        .collect();
    for read in reads {
        let bytes = read.await.unwrap().unwrap();
        assert_eq!(bytes, log.expected(offset, u64::MAX, 1));
    }
    let after = tier.stats();
    // One GET for the segment's index, one for the block holding the first batch.
    assert_eq!(after.gets - before.gets, 2, "{before:?} -> {after:?}");
    assert_eq!(after.cache_misses - before.cache_misses, 1);
    assert_eq!(after.cache_hits - before.cache_hits, 15);
}

async fn cache_stays_within_capacity(base: &TierConfig, log: &LocalLog) {
    let capacity_bytes = 8 * 4 * KIB;
    let tier = open(base, |config| config.cache_bytes_max = capacity_bytes).await;
    let shard = "read/shard-0";
    let end = tier.manifest(shard).await.unwrap().next_offset().unwrap();
    for offset in (0..end).step_by(3) {
        let bytes = tier.read(shard, offset, end, 2000).await.unwrap();
        assert_eq!(bytes, log.expected(offset, end, 2000));
    }
    tier.sync_cache().await;
    let stats = tier.stats();
    assert!(stats.cache_size_bytes > 0);
    assert!(
        stats.cache_size_bytes <= capacity_bytes,
        "cache holds {} bytes, capacity {capacity_bytes}",
        stats.cache_size_bytes
    );
}

async fn sequential_reads_prefetch(base: &TierConfig, log: &LocalLog) {
    let tier = open(base, |_| {}).await;
    let shard = "read/shard-0";
    let manifest = tier.manifest(shard).await.unwrap();
    let segment = &manifest.segments[0];
    let identity: Arc<str> = Arc::from(segment.identity());
    let block_bytes = tier.inner.cache.block_bytes();
    let blocks = segment.size_bytes.div_ceil(block_bytes);
    assert!(blocks > 4);
    let before = tier.stats();
    // A consumer: the first read (within block 0) schedules blocks 1 and 2 ...
    let read = |offset| tier.read(shard, offset, u64::MAX, 1500);
    let first = read(segment.base_offset).await.unwrap();
    assert!((first.len() as u64) < block_bytes);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(tier.inner.cache.contains_block(&identity, 1)
        && tier.inner.cache.contains_block(&identity, 2))
    {
        assert!(Instant::now() < deadline, "read-ahead never arrived");
        tokio::task::yield_now().await;
    }
    // ... and the reads that follow, each starting where the previous one ended, get
    // every block exactly once (read-ahead and reader share the loads).
    let mut consumed = first.to_vec();
    let mut offset = last_offset(&first) + 1;
    while offset < segment.next_offset {
        let bytes = read(offset).await.unwrap();
        consumed.extend_from_slice(&bytes);
        offset = last_offset(&bytes) + 1;
    }
    assert_eq!(
        consumed,
        log.expected(segment.base_offset, u64::MAX, usize::MAX)
    );
    let after = tier.stats();
    // The index, then each block once; nothing past the segment's end.
    assert_eq!(after.gets - before.gets, 1 + blocks);
}

fn last_offset(batches: &[u8]) -> u64 {
    shardline_core::batch::Batches::new(batches, true)
        .map(|batch| batch.unwrap().0.last_offset() as u64)
        .last()
        .unwrap()
}

async fn remote_retention(base: &TierConfig, log: &LocalLog) {
    let tier = open(base, |_| {}).await;
    let shard = "retention/shard-0";
    let remote = upload_all(&tier, shard, log).await;
    // Nothing lies wholly below the first segment's end minus one.
    assert_eq!(
        tier.delete_segments_before(shard, remote[0].next_offset - 1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        tier.delete_segments_before(shard, remote[1].next_offset)
            .await
            .unwrap(),
        2
    );
    let manifest = tier.manifest(shard).await.unwrap();
    assert_eq!(manifest.start_offset(), Some(remote[2].base_offset));
    assert!(matches!(
        tier.read(shard, remote[0].base_offset, u64::MAX, 100).await,
        Err(Error::OffsetNotRemote { .. })
    ));
    let bucket = &tier.inner.bucket;
    let listed = bucket.list(&Layout::shard_dir(shard)).await.unwrap();
    for segment in &remote[..2] {
        for key in segment.keys() {
            assert!(!listed.iter().any(|listed| listed == key), "{key} survived");
        }
    }
    assert!(listed.iter().any(|key| key == &remote[2].log_key));
    // What a crash between the manifest update and the deletes leaves: an unlisted
    // object below the remote start. The next pass that removes a segment sweeps it.
    let orphan = Layout::segment_key(
        shard,
        remote[0].base_offset,
        SegmentObject::Log,
        &tier.inner.writer_token(),
    );
    bucket
        .put(&orphan, Bytes::from_static(b"orphan"), PutMode::Overwrite)
        .await
        .unwrap();
    let requests = |stats: crate::TierStats| stats.gets + stats.lists + stats.puts;
    let before = requests(tier.stats());
    assert_eq!(
        tier.delete_segments_before(shard, remote[1].next_offset)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        requests(tier.stats()),
        before,
        "nothing to remove, no request"
    );
    assert_eq!(
        tier.delete_segments_before(shard, remote[2].next_offset)
            .await
            .unwrap(),
        1
    );
    let listed = bucket.list(&Layout::shard_dir(shard)).await.unwrap();
    assert!(!listed.contains(&orphan));
    // Reads of what remains still work, on a new instance too.
    let manifest = tier.manifest(shard).await.unwrap();
    let fresh = open(base, |_| {}).await;
    assert_eq!(fresh.manifest(shard).await.unwrap(), manifest);
    let offset = remote[3].base_offset;
    assert_eq!(
        fresh
            .read(shard, offset, u64::MAX, usize::MAX)
            .await
            .unwrap(),
        log.expected(offset, u64::MAX, usize::MAX)
    );
    // Everything can go.
    let end = manifest.next_offset().unwrap();
    assert_eq!(
        tier.delete_segments_before(shard, end).await.unwrap(),
        remote.len() - 3
    );
    assert!(tier.manifest(shard).await.unwrap().segments.is_empty());
    let listed = bucket.list(&Layout::shard_dir(shard)).await.unwrap();
    assert_eq!(listed, vec![Layout::manifest_key(shard)]);
}

async fn delete_prefix(base: &TierConfig, log: &LocalLog) {
    let tier = open(base, |_| {}).await;
    let first = &log.sealed()[0].1;
    for shard in ["gone/a", "gone/b/c", "gonex/d"] {
        tier.upload_segment(shard, first).await.unwrap();
    }
    // Two shards of four objects each (three segment files and the manifest).
    assert_eq!(tier.delete_prefix("gone").await.unwrap(), 8);
    for shard in ["gone/a", "gone/b/c"] {
        assert!(tier.manifest(shard).await.unwrap().segments.is_empty());
        assert!(matches!(
            tier.read(shard, first.base_offset, u64::MAX, 100).await,
            Err(Error::OffsetNotRemote { .. })
        ));
    }
    assert_eq!(tier.manifest("gonex/d").await.unwrap().segments.len(), 1);
    assert!(
        !tier
            .read("gonex/d", first.base_offset, u64::MAX, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(tier.delete_prefix("gone").await.unwrap(), 0);
    assert!(matches!(
        tier.delete_prefix("../x").await,
        Err(Error::InvalidName { .. })
    ));
}

async fn documents(base: &TierConfig) {
    let tier = open(base, |_| {}).await;
    assert_eq!(tier.get_document("meta/snapshot").await.unwrap(), None);
    tier.put_document("meta/snapshot", Bytes::from_static(b"v1"))
        .await
        .unwrap();
    tier.put_document("meta/snapshot", Bytes::from_static(b"v2"))
        .await
        .unwrap();
    tier.put_document("other", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let fresh = open(base, |_| {}).await;
    assert_eq!(
        fresh.get_document("meta/snapshot").await.unwrap(),
        Some(Bytes::from_static(b"v2"))
    );
    assert_eq!(
        fresh.list_documents().await.unwrap(),
        vec!["meta/snapshot".to_string(), "other".to_string()]
    );
    assert!(matches!(
        tier.put_document("bad name", Bytes::new()).await,
        Err(Error::InvalidName { .. })
    ));
}

async fn multipart(base: &TierConfig) {
    // One ~11 MiB segment: three parts of 5, 5 and ~1 MiB above a 6 MiB threshold.
    let batches = vec![(1, 256 * KIB as usize); 44];
    let log = LocalLog::build(12 * MIB, &batches);
    let mut log = log;
    log.log.roll_now(2).unwrap();
    let tier = open(base, |config| {
        config.multipart_threshold_bytes = 6 * MIB;
        config.multipart_part_bytes = 5 * MIB;
        config.block_bytes = MIB;
        config.cache_bytes_max = 16 * MIB;
    })
    .await;
    let (info, sealed) = log.sealed().remove(0);
    assert!(info.size_bytes > 10 * MIB);
    let puts = tier.stats().puts;
    let remote = tier.upload_segment("multi/shard-0", &sealed).await.unwrap();
    // Three parts, the two index files, the manifest, and the journal entry where the
    // store has part-level uploads.
    let journal = u64::from(tier.inner.bucket.multipart().is_some());
    assert_eq!(tier.stats().puts - puts, 6 + journal);
    assert_eq!(remote.size_bytes, info.size_bytes);
    assert_eq!(
        remote.log_crc32c,
        crc32c::crc32c(&std::fs::read(&info.path).unwrap())
    );
    for offset in [0, 21, 43] {
        assert_eq!(
            tier.read("multi/shard-0", offset, u64::MAX, 1)
                .await
                .unwrap(),
            log.expected(offset, u64::MAX, 1)
        );
    }
    assert!(tier.inner.bucket.list("uploads").await.unwrap().is_empty());
}

/// An S3 endpoint served in-process by s3s over s3s-fs; stops with the runtime.
pub(crate) struct S3Server {
    _root: TempDir,
    pub(crate) addr: SocketAddr,
}

pub(crate) const S3_ACCESS_KEY: &str = "test";
pub(crate) const S3_SECRET_KEY: &str = "testtesttest";

impl S3Server {
    pub(crate) async fn start(bucket: &str) -> S3Server {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let root = tempfile::tempdir().unwrap();
        // Buckets are the root's sub-directories.
        std::fs::create_dir(root.path().join(bucket)).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path())
            .unwrap_or_else(|error| panic!("s3s-fs: {error:?}"));
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            S3_ACCESS_KEY,
            S3_SECRET_KEY,
        ));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                // As real S3 front ends do; without it each small response waits ~40 ms
                // (Nagle + delayed ACK on loopback).
                let _ = socket.set_nodelay(true);
                let connection = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        S3Server { _root: root, addr }
    }

    pub(crate) fn config(&self, url: &str) -> TierConfig {
        TierConfig {
            s3: S3Settings {
                endpoint: Some(format!("http://{}", self.addr)),
                region: Some("us-east-1".to_string()),
                access_key_id: Some(S3_ACCESS_KEY.to_string()),
                secret_access_key: Some(S3_SECRET_KEY.to_string()),
                allow_http: Some(true),
            },
            ..TierConfig::new(url)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    run_all(TierConfig::new("memory://conformance")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local_file_system() {
    let dir = tempfile::tempdir().unwrap();
    run_all(TierConfig::new(format!(
        "file://{}",
        dir.path().join("objects").display()
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_s3() {
    let server = S3Server::start("bucket").await;
    run_all(server.config("s3://bucket/cluster-1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_fails_fast_when_the_endpoint_is_unreachable() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = S3Server {
        _root: tempfile::tempdir().unwrap(),
        addr: closed,
    };
    let config = TierConfig {
        retry_attempts_max: 2,
        retry_backoff_min_ms: 1,
        retry_backoff_max_ms: 5,
        ..server.config("s3://bucket")
    };
    let started = Instant::now();
    let error = Tier::open(config).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    match &error {
        Error::Unreachable { url, .. } => assert_eq!(url, "s3://bucket"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(error.to_string().contains("s3://bucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reports_a_missing_bucket_or_bad_credentials_as_misconfigured() {
    let server = S3Server::start("bucket").await;
    let error = Tier::open(server.config("s3://no-such-bucket"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Misconfigured { .. }), "{error:?}");
    let mut config = server.config("s3://bucket");
    config.s3.secret_access_key = Some("wrong-secret".to_string());
    let error = Tier::open(config).await.unwrap_err();
    assert!(matches!(error, Error::Misconfigured { .. }), "{error:?}");
    let error = Tier::open(TierConfig::new("ftp://x")).await.unwrap_err();
    assert!(matches!(error, Error::Misconfigured { .. }), "{error:?}");
    let error = Tier::open(TierConfig::new("file://relative/dir"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Misconfigured { .. }), "{error:?}");
}

/// Cold and warm read throughput through [`Tier::read`] against plain sequential ranged
/// GETs of the same object with the same client, on the in-process S3 endpoint.
/// `cargo test -p shardline-tier --release -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test"]
async fn throughput() {
    let server = S3Server::start("bucket").await;
    let batches = vec![(4, 16 * KIB as usize); 512];
    let log = LocalLog::build(40 * MIB, &batches);
    let mut log = log;
    log.log.roll_now(2).unwrap();
    let (info, sealed) = log.sealed().remove(0);
    let config = TierConfig {
        cache_bytes_max: 128 * MIB,
        ..server.config("s3://bucket/bench")
    };
    let tier = Tier::open(config.clone()).await.unwrap();
    let remote = tier.upload_segment("bench/shard-0", &sealed).await.unwrap();
    let size = info.size_bytes;
    let mb = size as f64 / 1e6;

    let reader = Tier::open(config).await.unwrap();
    let consume = |tier: Tier| async move {
        let started = Instant::now();
        let mut offset = 0;
        let mut total = 0;
        while offset < remote_next(&tier).await {
            let bytes = tier
                .read("bench/shard-0", offset, u64::MAX, 1 << 20)
                .await
                .unwrap();
            total += bytes.len();
            let last = shardline_core::batch::Batches::new(&bytes, false)
                .map(|batch| batch.unwrap().0.last_offset())
                .last()
                .unwrap();
            offset = last as u64 + 1;
        }
        assert_eq!(total as u64, size);
        started.elapsed()
    };
    let cold = consume(reader.clone()).await;
    let warm = consume(reader.clone()).await;
    let bucket = reader.inner.bucket.clone();
    let started = Instant::now();
    let mut position = 0;
    while position < size {
        let end = (position + MIB).min(size);
        let bytes = bucket
            .get_range(&remote.log_key, position..end)
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, end - position);
        position = end;
    }
    let plain = started.elapsed();
    let rate = |elapsed: Duration| mb / elapsed.as_secs_f64();
    println!(
        "segment {mb:.1} MB: Tier::read cold {:.0} MB/s ({cold:?}), warm {:.0} MB/s ({warm:?}); \
         plain sequential 1 MiB ranged GETs {:.0} MB/s ({plain:?}); stats {:?}",
        rate(cold),
        rate(warm),
        rate(plain),
        reader.stats()
    );
}

async fn remote_next(tier: &Tier) -> u64 {
    tier.manifest("bench/shard-0")
        .await
        .unwrap()
        .next_offset()
        .unwrap()
}
