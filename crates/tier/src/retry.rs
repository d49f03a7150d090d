//! Retrying: the [`RetryStore`] decorator. Every store operation the tier makes passes
//! through it exactly once, so the code above never loops on errors itself.
//!
//! An operation is tried up to `attempts_max` times. Between attempts it sleeps an
//! exponential back-off (`backoff_min`, doubled per retry, capped at `backoff_max`)
//! with "equal jitter" (a random point in the upper half), so that many shards failing
//! together do not retry in lock step. Only transient errors are retried: answers that
//! another attempt cannot change (not found, already exists, precondition failed,
//! permission denied, unsupported, invalid path, and the S3 error codes of a wrong
//! bucket or wrong credentials) return at once. Everything else —
//! connection errors, timeouts, 5xx, throttling — is assumed transient; an error the
//! client reports as "generic" may be a permanent 4xx, which then costs a few bounded
//! retries, the price of not parsing error texts.
//!
//! What is retried:
//! - whole-object puts, gets (with their body: a connection dropped mid-body is
//!   retried too), heads, deletes, copies;
//! - lists (the whole listing is collected, then replayed);
//! - each multipart part through [`MultipartStore::put_part`] with the same part
//!   number, so a failed part costs one part, not the upload; and the multipart
//!   create, complete and abort calls.
//!
//! Uploads through [`ObjectStore::put_multipart_opts`] (used only where the store has no
//! part-level API: the local file system, whose errors are not transient) retry only
//! their creation.
//!
//! The S3 client's own retry loop is switched off where the store is built, so there is
//! one retry policy, here.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartId, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions,
};

use crate::metrics::{Counters, add};

/// Deletes of a listing run this many at a time.
const DELETES_IN_FLIGHT: usize = 8;

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    pub(crate) attempts_max: u32,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
}

/// S3 error codes that no retry can change: a wrong bucket, region or credentials.
const PERMANENT_S3_CODES: [&str; 7] = [
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthorizationHeaderMalformed",
    "InvalidBucketName",
    "PermanentRedirect",
];

/// The S3 error code of a configuration problem, if the store reported one.
///
/// `object_store` turns most S3 errors into `Generic` and keeps their HTTP status private;
/// the error code from the response body is part of the S3 API and appears in the
/// error's debug text, so it is looked for there.
pub(crate) fn permanent_s3_code(error: &object_store::Error) -> Option<&'static str> {
    if !matches!(error, object_store::Error::Generic { store: "S3", .. }) {
        return None;
    }
    let text = format!("{error:?}");
    PERMANENT_S3_CODES
        .into_iter()
        .find(|code| text.contains(&format!("<Code>{code}</Code>")))
}

/// Whether another attempt could give a different answer.
pub(crate) fn is_transient(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    permanent_s3_code(error).is_none()
        && !matches!(
            error,
            E::NotFound { .. }
                | E::AlreadyExists { .. }
                | E::Precondition { .. }
                | E::NotModified { .. }
                | E::NotSupported { .. }
                | E::NotImplemented { .. }
                | E::PermissionDenied { .. }
                | E::Unauthenticated { .. }
                | E::InvalidPath { .. }
                | E::UnknownConfigurationKey { .. }
        )
}

impl RetryPolicy {
    /// The back-off before retry number `retry` (1 for the first retry).
    fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let ceiling = self
            .backoff_min
            .saturating_mul(1 << exponent)
            .min(self.backoff_max);
        // A fresh `RandomState` is randomly keyed: enough randomness for jitter without
        // a dependency.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let half = ceiling / 2;
        let spread_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(random % spread_ns.max(1))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out.
    pub(crate) async fn run<R, F, Fut>(
        &self,
        counters: &Counters,
        operation: &'static str,
        location: &Path,
        mut attempt: F,
    ) -> object_store::Result<R>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<R>>,
    {
        let mut tried = 0;
        loop {
            tried += 1;
            match attempt().await {
                Ok(result) => return Ok(result),
                Err(error) if tried < self.attempts_max && is_transient(&error) => {
                    let backoff = self.backoff(tried);
                    tracing::warn!(
                        operation,
                        %location,
                        attempt = tried,
                        backoff_ms = backoff.as_millis() as u64,
                        error = %error,
                        "object store operation failed; retrying"
                    );
                    add(&counters.retries, 1);
                    tokio::time::sleep(backoff).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Retries the operations of `inner` per the policy.
pub(crate) struct RetryStore<T> {
    inner: Arc<T>,
    policy: RetryPolicy,
    counters: Arc<Counters>,
}

impl<T> RetryStore<T> {
    pub(crate) fn new(inner: T, policy: RetryPolicy, counters: Arc<Counters>) -> RetryStore<T> {
        RetryStore {
            inner: Arc::new(inner),
            policy,
            counters,
        }
    }
}

impl<T: fmt::Display> fmt::Display for RetryStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Retry({})", self.inner)
    }
}

impl<T: fmt::Debug> fmt::Debug for RetryStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryStore")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Reads a GET's body into memory, so that a failure while streaming it is retried
/// with the request. The tier only GETs bounded things (blocks, indexes, manifests,
/// documents).
async fn buffered(result: GetResult) -> object_store::Result<GetResult> {
    let meta = result.meta.clone();
    let range = result.range.clone();
    let attributes = result.attributes.clone();
    let extensions = result.extensions.clone();
    let bytes = result.bytes().await?;
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async { Ok(bytes) }).boxed()),
        meta,
        range,
        attributes,
        extensions,
    })
}

#[async_trait]
impl<T: ObjectStore> ObjectStore for RetryStore<T> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.policy
            .run(&self.counters, "put", location, || {
                self.inner.put_opts(location, payload.clone(), opts.clone())
            })
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.policy
            .run(&self.counters, "create multipart upload", location, || {
                self.inner.put_multipart_opts(location, opts.clone())
            })
            .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let operation = if options.head { "head" } else { "get" };
        self.policy
            .run(&self.counters, operation, location, || async {
                let result = self.inner.get_opts(location, options.clone()).await?;
                if options.head {
                    Ok(result)
                } else {
                    buffered(result).await
                }
            })
            .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.policy
            .run(&self.counters, "get ranges", location, || {
                self.inner.get_ranges(location, ranges)
            })
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let policy = self.policy.clone();
        let counters = Arc::clone(&self.counters);
        locations
            .map(move |location| {
                let inner = Arc::clone(&inner);
                let policy = policy.clone();
                let counters = Arc::clone(&counters);
                async move {
                    let location = location?;
                    policy
                        .run(&counters, "delete", &location, || inner.delete(&location))
                        .await?;
                    Ok(location)
                }
            })
            .buffered(DELETES_IN_FLIGHT)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = Arc::clone(&self.inner);
        let policy = self.policy.clone();
        let counters = Arc::clone(&self.counters);
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let location = prefix.clone().unwrap_or_default();
            policy
                .run(&counters, "list", &location, || {
                    inner.list(prefix.as_ref()).try_collect::<Vec<_>>()
                })
                .await
        })
        .map_ok(|listing| futures::stream::iter(listing.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let location = prefix.cloned().unwrap_or_default();
        self.policy
            .run(&self.counters, "list", &location, || {
                self.inner.list_with_delimiter(prefix)
            })
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.policy
            .run(&self.counters, "copy", from, || {
                self.inner.copy_opts(from, to, options.clone())
            })
            .await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.policy
            .run(&self.counters, "rename", from, || {
                self.inner.rename_opts(from, to, options.clone())
            })
            .await
    }
}

#[async_trait]
impl<T: MultipartStore> MultipartStore for RetryStore<T> {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.policy
            .run(&self.counters, "create multipart upload", path, || {
                self.inner.create_multipart(path)
            })
            .await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        // Re-sending a part number replaces that part, so a retry is safe.
        self.policy
            .run(&self.counters, "put part", path, || {
                self.inner.put_part(path, id, part_idx, data.clone())
            })
            .await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.policy
            .run(&self.counters, "complete multipart upload", path, || {
                self.inner.complete_multipart(path, id, parts.clone())
            })
            .await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        self.policy
            .run(&self.counters, "abort multipart upload", path, || {
                self.inner.abort_multipart(path, id)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy(attempts_max: u32) -> RetryPolicy {
        RetryPolicy {
            attempts_max,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_in_the_upper_half() {
        let policy = policy(10);
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(5) && first <= Duration::from_millis(10));
            let third = policy.backoff(3);
            assert!(third >= Duration::from_millis(20) && third <= Duration::from_millis(40));
            let late = policy.backoff(50);
            assert!(late >= Duration::from_millis(20) && late <= Duration::from_millis(40));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_the_attempts_run_out() {
        let counters = Counters::default();
        let calls = AtomicU32::new(0);
        let location = Path::from("x");
        let result: object_store::Result<()> = policy(3)
            .run(&counters, "get", &location, || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(object_store::Error::Generic {
                    store: "test",
                    source: "connection reset".into(),
                })
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert_eq!(counters.snapshot(0).retries, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried_and_success_stops_the_loop() {
        let counters = Counters::default();
        let calls = AtomicU32::new(0);
        let location = Path::from("x");
        let result: object_store::Result<()> = policy(5)
            .run(&counters, "get", &location, || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(object_store::Error::NotFound {
                    path: "x".to_string(),
                    source: "gone".into(),
                })
            })
            .await;
        assert!(matches!(result, Err(object_store::Error::NotFound { .. })));
        assert_eq!(calls.load(Ordering::Relaxed), 1);

        let calls = AtomicU32::new(0);
        let result = policy(5)
            .run(&counters, "get", &location, || async {
                if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                    Err(object_store::Error::Generic {
                        store: "test",
                        source: "503".into(),
                    })
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(counters.snapshot(0).retries, 2);
    }

    #[tokio::test]
    async fn the_decorator_passes_results_through() {
        let counters = Arc::new(Counters::default());
        let store = RetryStore::new(InMemory::new(), policy(3), counters);
        let location = Path::from("a/b");
        store.put(&location, "hello".into()).await.unwrap();
        let bytes = store.get_range(&location, 1..4).await.unwrap();
        assert_eq!(&bytes[..], b"ell");
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        store.delete(&location).await.unwrap();
        assert!(store.head(&location).await.is_err());
    }
}
