//! Counting: the [`CountingStore`] decorator, which counts every request that reaches
//! the store (after the cache, around the retry layer, so one logical operation counts
//! once however often it was retried), the shared [`Counters`], and the [`TierStats`]
//! snapshot handed to the metrics endpoint.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

/// A snapshot of the tier's counters, for metrics. Totals count since the tier was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Segments uploaded and recorded in their manifest.
    pub segments_uploaded: u64,
    /// Bytes of `.log` files uploaded.
    pub segment_uploaded_bytes: u64,
    /// Segment uploads that failed (after the retry layer gave up).
    pub upload_failures: u64,
    /// Store operations retried by the retry layer (each retry counts once).
    pub retries: u64,
    /// PUT requests (whole objects and multipart parts).
    pub puts: u64,
    /// Bytes sent by PUT requests.
    pub put_bytes: u64,
    /// GET requests, ranged or not (HEADs not included).
    pub gets: u64,
    /// Bytes received by GET requests.
    pub get_bytes: u64,
    /// HEAD requests.
    pub heads: u64,
    /// Objects deleted.
    pub deletes: u64,
    /// LIST operations.
    pub lists: u64,
    /// Block-cache lookups by readers that found the block (or joined its load).
    pub cache_hits: u64,
    /// Block-cache lookups by readers that had to fetch the block.
    pub cache_misses: u64,
    /// Bytes held by the block cache now (approximate until pending evictions run).
    pub cache_size_bytes: u64,
    /// Remote segments whose fetched blocks, all combined, did not match the CRC-32C
    /// recorded at upload (each is refused from then on).
    pub crc_mismatches: u64,
}

/// The live counters, shared by the decorators, the cache and the upload code.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) segments_uploaded: AtomicU64,
    pub(crate) segment_uploaded_bytes: AtomicU64,
    pub(crate) upload_failures: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) put_bytes: AtomicU64,
    pub(crate) gets: AtomicU64,
    pub(crate) get_bytes: AtomicU64,
    pub(crate) heads: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) lists: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) crc_mismatches: AtomicU64,
}

/// Adds `n` to a counter; relaxed, because counters order nothing.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, cache_size_bytes: u64) -> TierStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TierStats {
            segments_uploaded: get(&self.segments_uploaded),
            segment_uploaded_bytes: get(&self.segment_uploaded_bytes),
            upload_failures: get(&self.upload_failures),
            retries: get(&self.retries),
            puts: get(&self.puts),
            put_bytes: get(&self.put_bytes),
            gets: get(&self.gets),
            get_bytes: get(&self.get_bytes),
            heads: get(&self.heads),
            deletes: get(&self.deletes),
            lists: get(&self.lists),
            cache_hits: get(&self.cache_hits),
            cache_misses: get(&self.cache_misses),
            cache_size_bytes,
            crc_mismatches: get(&self.crc_mismatches),
        }
    }
}

/// Counts requests and bytes on their way to `inner`.
pub(crate) struct CountingStore<T> {
    inner: T,
    counters: Arc<Counters>,
}

impl<T> CountingStore<T> {
    pub(crate) fn new(inner: T, counters: Arc<Counters>) -> CountingStore<T> {
        CountingStore { inner, counters }
    }
}

impl<T: fmt::Display> fmt::Display for CountingStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

impl<T: fmt::Debug> fmt::Debug for CountingStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<T: ObjectStore> ObjectStore for CountingStore<T> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        add(&self.counters.puts, 1);
        add(&self.counters.put_bytes, payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload {
            inner: upload,
            counters: Arc::clone(&self.counters),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        if head {
            add(&self.counters.heads, 1);
        } else {
            add(&self.counters.gets, 1);
        }
        let result = self.inner.get_opts(location, options).await?;
        if !head {
            add(
                &self.counters.get_bytes,
                result.range.end - result.range.start,
            );
        }
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        add(&self.counters.gets, ranges.len() as u64);
        let parts = self.inner.get_ranges(location, ranges).await?;
        let bytes: usize = parts.iter().map(Bytes::len).sum();
        add(&self.counters.get_bytes, bytes as u64);
        Ok(parts)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let counters = Arc::clone(&self.counters);
        self.inner
            .delete_stream(locations)
            .inspect(move |deleted| {
                if deleted.is_ok() {
                    add(&counters.deletes, 1);
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        add(&self.counters.lists, 1);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        add(&self.counters.lists, 1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[async_trait]
impl<T: MultipartStore> MultipartStore for CountingStore<T> {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.inner.create_multipart(path).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        add(&self.counters.puts, 1);
        add(&self.counters.put_bytes, data.content_length() as u64);
        self.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        self.inner.abort_multipart(path, id).await
    }
}

/// Counts the parts of an upload made through [`ObjectStore::put_multipart_opts`].
#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    counters: Arc<Counters>,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        add(&self.counters.puts, 1);
        add(&self.counters.put_bytes, data.content_length() as u64);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
