//! [`Bucket`]: the decorated store and the few operations the tier makes, in terms of
//! relative keys and this crate's errors.
//!
//! Built once from the URL: the backend (`AmazonS3`, `LocalFileSystem`, `InMemory`) is
//! wrapped in the retry layer, then in the counting layer, and the one stack is seen
//! both as an `ObjectStore` and (where the backend has one) as a part-level
//! `MultipartStore`:
//!
//! ```text
//!   Bucket ──► CountingStore ──► RetryStore ──► AmazonS3 | InMemory | LocalFileSystem
//! ```

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, MultipartId, MultipartUpload, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
};

use crate::layout::{Layout, validate_name};
use crate::metrics::{Counters, CountingStore};
use crate::retry::{RetryPolicy, RetryStore};
use crate::{Error, TierConfig};

/// How an object's current version is named for a conditional update.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    e_tag: Option<String>,
    version: Option<String>,
}

/// The store, its layout, and what it can do.
#[derive(Clone)]
pub(crate) struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// The same stack as `store`, where the backend has a part-level multipart API.
    parts: Option<Arc<dyn MultipartStore>>,
    layout: Layout,
    /// The directory of a `file://` store, where crashed uploads leave staging files.
    local_root: Option<PathBuf>,
    /// Whether `PutMode::Update` works (the local file system does not implement it).
    conditional_updates: bool,
    url: String,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("url", &self.url)
            .field("store", &self.store.to_string())
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// `memory://name` stores of this process, so that tiers opened with the same name
/// share one (a restart in a test).
fn named_memory_stores() -> &'static Mutex<HashMap<String, InMemory>> {
    static STORES: OnceLock<Mutex<HashMap<String, InMemory>>> = OnceLock::new();
    STORES.get_or_init(Mutex::default)
}

/// Wraps a backend with a part-level multipart API in the two layers.
fn decorate_multipart<T: ObjectStore + MultipartStore>(
    backend: T,
    policy: RetryPolicy,
    counters: &Arc<Counters>,
) -> (Arc<dyn ObjectStore>, Option<Arc<dyn MultipartStore>>) {
    let stack = Arc::new(CountingStore::new(
        RetryStore::new(backend, policy, Arc::clone(counters)),
        Arc::clone(counters),
    ));
    let parts: Arc<dyn MultipartStore> = stack.clone();
    (stack, Some(parts))
}

fn decorate<T: ObjectStore>(
    backend: T,
    policy: RetryPolicy,
    counters: &Arc<Counters>,
) -> (Arc<dyn ObjectStore>, Option<Arc<dyn MultipartStore>>) {
    let stack = CountingStore::new(
        RetryStore::new(backend, policy, Arc::clone(counters)),
        Arc::clone(counters),
    );
    (Arc::new(stack), None)
}

impl Bucket {
    /// Builds the store for `config.url` (without touching the network).
    pub(crate) fn build(config: &TierConfig, counters: &Arc<Counters>) -> Result<Bucket, Error> {
        let url = config.url.clone();
        let misconfigured = |reason: String| Error::Misconfigured {
            url: url.clone(),
            reason,
        };
        let policy = RetryPolicy {
            attempts_max: config.retry_attempts_max,
            backoff_min: Duration::from_millis(config.retry_backoff_min_ms),
            backoff_max: Duration::from_millis(config.retry_backoff_max_ms),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| misconfigured("expected file://, s3:// or memory://".to_string()))?;
        match scheme {
            "memory" => {
                let backend = if rest.is_empty() {
                    InMemory::new()
                } else {
                    let mut stores = named_memory_stores()
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    // Clones of an InMemory share its storage (`fork` would copy it).
                    stores.entry(rest.to_string()).or_default().clone()
                };
                let (store, parts) = decorate_multipart(backend, policy, counters);
                Ok(Bucket {
                    store,
                    parts,
                    layout: Layout::new(Path::default()),
                    local_root: None,
                    conditional_updates: true,
                    url,
                })
            }
            "file" => {
                let dir = PathBuf::from(rest);
                if !dir.is_absolute() {
                    return Err(misconfigured(
                        "file:// needs an absolute path (file:///abs/dir)".to_string(),
                    ));
                }
                std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
                let backend = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|error| {
                        misconfigured(format!("cannot use {}: {error}", dir.display()))
                    })?
                    // A local "bucket" is the only copy once the log segment is deleted.
                    .with_fsync(true)
                    // Deleting a stream should not leave its empty directories behind.
                    .with_automatic_cleanup(true);
                let (store, parts) = decorate(backend, policy, counters);
                Ok(Bucket {
                    store,
                    parts,
                    layout: Layout::new(Path::default()),
                    local_root: Some(dir),
                    conditional_updates: false,
                    url,
                })
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(misconfigured("s3:// needs a bucket name".to_string()));
                }
                let prefix = prefix.trim_end_matches('/');
                if !prefix.is_empty() {
                    validate_name(prefix)
                        .map_err(|error| misconfigured(format!("bad prefix: {error}")))?;
                }
                let s3 = config.s3.resolve();
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(s3.region)
                    // Path style always: MinIO-style endpoints have no per-bucket DNS.
                    .with_virtual_hosted_style_request(false)
                    // One retry policy, in RetryStore; the client's own is switched off.
                    .with_retry(RetryConfig {
                        backoff: BackoffConfig::default(),
                        max_retries: 0,
                        retry_timeout: Duration::from_secs(60),
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(60)),
                    )
                    // After the client options, which would otherwise reset it.
                    .with_allow_http(s3.allow_http);
                if let Some(endpoint) = s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(key) = s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let backend = builder
                    .build()
                    .map_err(|error| misconfigured(error.to_string()))?;
                let (store, parts) = decorate_multipart(backend, policy, counters);
                Ok(Bucket {
                    store,
                    parts,
                    layout: Layout::new(Path::from(prefix)),
                    local_root: None,
                    conditional_updates: true,
                    url,
                })
            }
            other => Err(misconfigured(format!(
                "unknown scheme {other}://; expected file://, s3:// or memory://"
            ))),
        }
    }

    /// Whether conditional updates (`PutMode::Update`) are available.
    pub(crate) fn conditional_updates(&self) -> bool {
        self.conditional_updates
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn path(&self, key: &str) -> Path {
        self.layout.path(key)
    }

    /// Puts a whole object; `mode` decides what happens if it exists.
    pub(crate) async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<(), object_store::Error> {
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.path(key), PutPayload::from(bytes), options)
            .await
            .map(drop)
    }

    /// The whole object and its version, or `None` if it does not exist.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<(Bytes, Version)>, Error> {
        let result = match self
            .store
            .get_opts(&self.path(key), GetOptions::default())
            .await
        {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(Error::store("get", key)(error)),
        };
        let version = Version {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        let bytes = result.bytes().await.map_err(Error::store("get", key))?;
        Ok(Some((bytes, version)))
    }

    /// A byte range of an object; missing objects are [`Error::RemoteMissing`].
    pub(crate) async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, Error> {
        self.store
            .get_range(&self.path(key), range)
            .await
            .map_err(Error::store("get", key))
    }

    /// The object's size; missing objects are [`Error::RemoteMissing`].
    pub(crate) async fn size(&self, key: &str) -> Result<u64, Error> {
        let meta = self
            .store
            .head(&self.path(key))
            .await
            .map_err(Error::store("head", key))?;
        Ok(meta.size)
    }

    /// Deletes an object; deleting a missing one succeeds (stores disagree on this).
    pub(crate) async fn delete(&self, key: &str) -> Result<(), Error> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(Error::store("delete", key)(error)),
        }
    }

    /// Relative keys of every object under `dir` (a relative key prefix, matched by
    /// whole segments).
    pub(crate) async fn list(&self, dir: &str) -> Result<Vec<String>, Error> {
        let prefix = self.path(dir);
        let listing: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(Error::store("list", dir))?;
        Ok(listing
            .iter()
            .filter_map(|meta| self.layout.key_of(&meta.location))
            .collect())
    }

    /// Deletes these objects, a few at a time; returns how many.
    pub(crate) async fn delete_all(&self, keys: &[String]) -> Result<usize, Error> {
        // Each future owns its key: futures borrowing from a closure argument make the
        // whole caller's future fail the `Send` check of a spawned task (a rustc
        // limitation with higher-ranked lifetimes).
        let owned: Vec<String> = keys.to_vec();
        futures::stream::iter(
            owned
                .into_iter()
                .map(|key| async move { self.delete(&key).await }),
        )
        .buffer_unordered(8)
        .try_fold(0, |deleted, ()| async move { Ok(deleted + 1) })
        .await
    }

    /// The current version of an object, for a conditional update.
    pub(crate) fn update_mode(version: Version) -> PutMode {
        PutMode::Update(UpdateVersion {
            e_tag: version.e_tag,
            version: version.version,
        })
    }

    pub(crate) fn multipart(&self) -> Option<&Arc<dyn MultipartStore>> {
        self.parts.as_ref()
    }

    /// A streaming upload through the store's generic API (the local file system).
    pub(crate) async fn start_streaming_upload(
        &self,
        key: &str,
    ) -> Result<Box<dyn MultipartUpload>, Error> {
        self.store
            .put_multipart(&self.path(key))
            .await
            .map_err(Error::store("create multipart upload", key))
    }

    pub(crate) async fn create_multipart(&self, key: &str) -> Result<MultipartId, Error> {
        let parts = self.parts_api(key)?;
        parts
            .create_multipart(&self.path(key))
            .await
            .map_err(Error::store("create multipart upload", key))
    }

    pub(crate) async fn put_part(
        &self,
        key: &str,
        id: &MultipartId,
        part_idx: usize,
        bytes: Bytes,
    ) -> Result<PartId, Error> {
        let parts = self.parts_api(key)?;
        parts
            .put_part(&self.path(key), id, part_idx, PutPayload::from(bytes))
            .await
            .map_err(Error::store("put part", key))
    }

    pub(crate) async fn complete_multipart(
        &self,
        key: &str,
        id: &MultipartId,
        part_ids: Vec<PartId>,
    ) -> Result<(), Error> {
        let parts = self.parts_api(key)?;
        parts
            .complete_multipart(&self.path(key), id, part_ids)
            .await
            .map(drop)
            .map_err(Error::store("complete multipart upload", key))
    }

    /// Aborts an upload; one that is already gone (completed or aborted) counts as done.
    pub(crate) async fn abort_multipart(&self, key: &str, id: &MultipartId) -> Result<(), Error> {
        let parts = self.parts_api(key)?;
        match parts.abort_multipart(&self.path(key), id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(Error::store("abort multipart upload", key)(error)),
        }
    }

    fn parts_api(&self, key: &str) -> Result<&Arc<dyn MultipartStore>, Error> {
        self.parts.as_ref().ok_or_else(|| Error::Misconfigured {
            url: self.url.clone(),
            reason: format!("the store has no part-level multipart API (uploading {key})"),
        })
    }

    /// The directory of a `file://` store.
    pub(crate) fn local_root(&self) -> Option<&PathBuf> {
        self.local_root.as_ref()
    }
}
