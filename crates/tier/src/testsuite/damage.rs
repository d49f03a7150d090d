//! The suite's cases about damage and conflict in the bucket: corrupt, truncated and
//! missing objects, an object replaced by other well-formed batches, a second owner
//! fencing the first, and multipart uploads a crash abandoned.

use super::*;

/// Another owner claims a shard: the old owner's next upload is fenced, its objects are
/// deleted (the manifest does not list them), and everything listed stays.
pub(super) async fn fencing(base: &TierConfig, log: &LocalLog) {
    let shard = "fenced/shard-0";
    let sealed = log.sealed();
    let (last, earlier) = sealed.split_last().unwrap();
    let old_owner = open(base, |_| {}).await;
    for (_, segment) in earlier {
        old_owner.upload_segment(shard, segment).await.unwrap();
    }
    let new_owner = open(base, |config| config.owner = "00000000000000b0".to_owned()).await;
    new_owner.claim(shard).await.unwrap();
    let refused = old_owner.upload_segment(shard, &last.1).await;
    assert!(
        matches!(&refused, Err(Error::Fenced { owner, .. }) if owner == "00000000000000b0"),
        "{refused:?}"
    );
    let bucket = new_owner.inner.bucket.clone();
    let listed = bucket.list(&Layout::shard_dir(shard)).await.unwrap();
    assert!(
        !listed
            .iter()
            .any(|key| { Layout::segment_base_offset(key) == Some(last.1.base_offset) }),
        "the refused upload left objects: {listed:?}"
    );
    let manifest = new_owner.manifest(shard).await.unwrap();
    assert_eq!(manifest.segments.len(), earlier.len());
    for segment in &manifest.segments {
        for key in segment.keys() {
            assert!(listed.iter().any(|listed| listed == key), "{key} is gone");
        }
    }
    // The new owner goes on where the log ends.
    new_owner.upload_segment(shard, &last.1).await.unwrap();
}

/// Reads `segment` in small steps from its start; the error that stops the reads (one
/// must, before the segment's end).
async fn read_until_error(tier: &Tier, shard: &str, segment: &crate::RemoteSegment) -> Error {
    let mut offset = segment.base_offset;
    loop {
        assert!(
            offset < segment.next_offset,
            "read to the end without an error"
        );
        match tier.read(shard, offset, segment.next_offset, 4000).await {
            Ok(bytes) => {
                let last = shardline_core::batch::Batches::new(&bytes, true)
                    .map(|batch| batch.unwrap().0.last_offset())
                    .last()
                    .expect("a read below the segment's end returns a batch");
                offset = last as u64 + 1;
            }
            Err(error) => return error,
        }
    }
}

/// An object replaced by other well-formed batches (every batch CRC valid) is found by
/// the whole-object CRC once all its blocks were fetched, and refused from then on.
pub(super) async fn replaced_object(base: &TierConfig, log: &LocalLog) {
    let tier = open(base, |_| {}).await;
    let shard = "replaced/shard-0";
    let remote = upload_all(&tier, shard, log).await;
    let segment = &remote[0];
    let bucket = tier.inner.bucket.clone();
    let (original, _) = bucket.get(&segment.log_key).await.unwrap().unwrap();
    let mut replaced = original.to_vec();
    let first = shardline_core::batch::BatchHeader::parse(&replaced).unwrap();
    let header_len = shardline_core::batch::HEADER_LEN;
    let inside = header_len + (first.total_len() - header_len) / 2;
    replaced[inside] ^= 0x01;
    shardline_core::batch::write_crc(&mut replaced[..first.total_len()]);
    bucket
        .put(&segment.log_key, Bytes::from(replaced), PutMode::Overwrite)
        .await
        .unwrap();
    let fresh = open(base, |_| {}).await;
    let error = read_until_error(&fresh, shard, segment).await;
    assert!(
        matches!(&error, Error::RemoteCorrupt { key, reason, .. }
            if key == &segment.log_key && reason.contains("CRC-32C")),
        "{error:?}"
    );
    assert_eq!(fresh.stats().crc_mismatches, 1);
    // Refused from now on, from its first offset too.
    assert!(matches!(
        fresh.read(shard, segment.base_offset, u64::MAX, 100).await,
        Err(Error::RemoteCorrupt { .. })
    ));
}

pub(super) async fn corruption_and_missing_objects(base: &TierConfig, log: &LocalLog) {
    let tier = open(base, |_| {}).await;
    let shard = "damage/shard-0";
    let remote = upload_all(&tier, shard, log).await;
    for segment in &remote {
        tier.verify_segment(segment).await.unwrap();
    }
    let bucket = tier.inner.bucket.clone();
    // Flip a byte inside a record of the second segment's first batch.
    let segment = &remote[1];
    let (original, _) = bucket.get(&segment.log_key).await.unwrap().unwrap();
    let mut damaged = original.to_vec();
    damaged[100] ^= 0x40;
    bucket
        .put(&segment.log_key, Bytes::from(damaged), PutMode::Overwrite)
        .await
        .unwrap();
    let fresh = open(base, |_| {}).await;
    match fresh.read(shard, segment.base_offset, u64::MAX, 100).await {
        Err(Error::RemoteCorrupt { key, position, .. }) => {
            assert_eq!(key, segment.log_key);
            assert_eq!(position, 0);
        }
        other => panic!("expected RemoteCorrupt, got {other:?}"),
    }
    // Other segments are unaffected.
    let offset = remote[0].base_offset;
    assert_eq!(
        fresh
            .read(shard, offset, u64::MAX, usize::MAX)
            .await
            .unwrap(),
        log.expected(offset, u64::MAX, usize::MAX)
    );
    // A truncated object.
    bucket
        .put(
            &segment.log_key,
            original.slice(..original.len() / 2),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let fresh = open(base, |_| {}).await;
    let error = read_until_error(&fresh, shard, segment).await;
    assert!(matches!(error, Error::RemoteCorrupt { .. }), "{error:?}");
    assert!(matches!(
        fresh.verify_segment(segment).await,
        Err(Error::RemoteCorrupt { key, .. }) if key == segment.log_key
    ));
    // A damaged index.
    bucket
        .put(&segment.log_key, original, PutMode::Overwrite)
        .await
        .unwrap();
    bucket
        .put(
            &segment.index_key,
            Bytes::from_static(b"SLOI garbage"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let fresh = open(base, |_| {}).await;
    assert!(matches!(
        fresh.read(shard, segment.base_offset, u64::MAX, 100).await,
        Err(Error::RemoteCorrupt { key, .. }) if key == segment.index_key
    ));
    // Missing objects.
    let segment = &remote[2];
    bucket.delete(&segment.log_key).await.unwrap();
    let fresh = open(base, |_| {}).await;
    assert!(matches!(
        fresh.read(shard, segment.base_offset + 1, u64::MAX, 100).await,
        Err(Error::RemoteMissing { key }) if key == segment.log_key
    ));
    let segment = &remote[3];
    bucket.delete(&segment.index_key).await.unwrap();
    assert!(matches!(
        fresh.read(shard, segment.base_offset, u64::MAX, 100).await,
        Err(Error::RemoteMissing { key }) if key == segment.index_key
    ));
    assert!(matches!(
        fresh.verify_segment(segment).await,
        Err(Error::RemoteMissing { key }) if key == segment.index_key
    ));
    assert!(matches!(
        fresh.verify_segment(&remote[2]).await,
        Err(Error::RemoteMissing { key }) if key == remote[2].log_key
    ));
    // A damaged manifest.
    bucket
        .put(
            &Layout::manifest_key(shard),
            Bytes::from_static(b"{}"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let fresh = open(base, |_| {}).await;
    assert!(matches!(
        fresh.manifest(shard).await,
        Err(Error::RemoteCorrupt { .. })
    ));
}

pub(super) async fn stale_uploads(base: &TierConfig) {
    let tier = open(base, |_| {}).await;
    let bucket = tier.inner.bucket.clone();
    let key = Layout::segment_key(
        "stale/shard-0",
        0,
        SegmentObject::Log,
        &tier.inner.writer_token(),
    );
    if bucket.multipart().is_some() {
        // A crash between starting an upload and finishing it.
        let (upload_id, _) = begin_multipart(&bucket, &key).await.unwrap();
        bucket
            .put_part(&key, &upload_id, 0, Bytes::from(vec![7u8; 1024]))
            .await
            .unwrap();
    } else if let Some(root) = bucket.local_root() {
        let dir = root.join("streams/stale/shard-0");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("00000000000000000000.log#1"), b"partial").unwrap();
    }
    assert_eq!(tier.abort_stale_uploads().await.unwrap(), 1);
    assert_eq!(tier.abort_stale_uploads().await.unwrap(), 0);
    assert!(bucket.list("uploads").await.unwrap().is_empty());
    assert!(matches!(
        bucket.size(&key).await,
        Err(Error::RemoteMissing { .. })
    ));
}
