//! The one error type of the crate.
//!
//! Every variant names what an operator needs to find the problem: the store URL, the
//! object key, the byte position, the local path. The error is `Clone` (sources that are
//! not are held in an `Arc`), because errors of loads shared by concurrent readers of
//! one cache entry reach every one of them.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// An error from the object store, kept opaque so that `object_store` stays out of this
/// crate's public API.
#[derive(Clone)]
pub struct StoreError(Arc<object_store::Error>);

impl StoreError {
    pub(crate) fn new(error: object_store::Error) -> StoreError {
        StoreError(Arc::new(error))
    }

    pub(crate) fn inner(&self) -> &object_store::Error {
        &self.0
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// Everything that can go wrong in the tier.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The store did not answer the start-up probe (network, DNS, refused connection,
    /// timeouts, server errors).
    #[error("object store {url} is unreachable")]
    Unreachable {
        /// The configured URL.
        url: String,
        /// What the store client reported.
        #[source]
        source: StoreError,
    },
    /// The configuration cannot work: bad URL, missing bucket, rejected credentials,
    /// an invalid setting.
    #[error("object store {url} is misconfigured: {reason}")]
    Misconfigured {
        /// The configured URL.
        url: String,
        /// What is wrong, in words an operator can act on.
        reason: String,
    },
    /// An object the manifest lists is not in the store.
    #[error("remote object {key} is missing")]
    RemoteMissing {
        /// Its key (relative to the configured prefix).
        key: String,
    },
    /// An object's bytes are not what was uploaded.
    #[error("remote object {key} is corrupt at byte {position}: {reason}")]
    RemoteCorrupt {
        /// Its key (relative to the configured prefix).
        key: String,
        /// Byte position of the damage within the object.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// No remote segment of the shard holds this offset.
    #[error("offset {offset} is not in remote storage")]
    OffsetNotRemote {
        /// The offset asked for.
        offset: u64,
    },
    /// Reading a local file failed.
    #[error("reading {} failed", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A store operation failed after the retry layer gave up (or for a reason that is
    /// not worth retrying).
    #[error("object store {operation} of {key} failed")]
    Store {
        /// What was being done: "put", "get", "head", "delete", "list", …
        operation: &'static str,
        /// The key (relative to the configured prefix) or prefix involved.
        key: String,
        /// What the store client reported.
        #[source]
        source: StoreError,
    },
    /// Another server owns this shard's remote log (it was restored from the bucket and
    /// took the shard over): this one may no longer change it.
    #[error("shard {shard_key} is tiered by another server ({owner}); this one is fenced")]
    Fenced {
        /// The shard.
        shard_key: String,
        /// The owner the manifest names.
        owner: String,
    },
    /// The manifest kept changing under a read-modify-write; another writer is active.
    #[error("manifest of shard {shard_key} changed concurrently {attempts} times in a row")]
    ManifestConflict {
        /// The shard.
        shard_key: String,
        /// Conditional puts tried.
        attempts: u32,
    },
    /// A segment does not extend the shard's remote log where it ends, or disagrees with
    /// the entry already recorded for its base offset.
    #[error("segment {base_offset} of shard {shard_key} does not fit the manifest: {reason}")]
    NotContiguous {
        /// The shard.
        shard_key: String,
        /// The segment's base offset.
        base_offset: u64,
        /// How it disagrees.
        reason: String,
    },
    /// The local files of a sealed segment disagree with its description.
    #[error("sealed segment {} is not uploadable: {reason}", path.display())]
    InvalidSegment {
        /// Its `.log` (or index) file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// A shard key, document name or prefix cannot be used as part of an object key.
    #[error("{name:?} cannot be used in an object key: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why not.
        reason: &'static str,
    },
}

impl Error {
    /// Wraps a store error from `operation` on `key`, turning "not found" into
    /// [`Error::RemoteMissing`] so that callers can match on it.
    pub(crate) fn store(
        operation: &'static str,
        key: impl Into<String>,
    ) -> impl FnOnce(object_store::Error) -> Error {
        let key = key.into();
        move |source| match source {
            object_store::Error::NotFound { .. } => Error::RemoteMissing { key },
            source => Error::Store {
                operation,
                key,
                source: StoreError::new(source),
            },
        }
    }

    /// Wraps a local I/O error with the path involved.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            path,
            source: Arc::new(source),
        }
    }

    /// The error of a load shared through the cache, for one of its waiters.
    pub(crate) fn shared(error: Arc<Error>) -> Error {
        Arc::unwrap_or_clone(error)
    }
}
