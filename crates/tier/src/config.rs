//! [`TierConfig`]: where the bucket is and how uploads, the block cache and retries
//! behave, with the limits each value must respect.

use std::fmt;

use crate::Error;

const MIB: u64 = 1 << 20;
/// S3 rejects parts below 5 MiB (except the last).
const PART_BYTES_MIN: u64 = 5 * MIB;
/// S3 rejects parts above 5 GiB.
const PART_BYTES_MAX: u64 = 5 << 30;
/// Below this a ranged GET costs more in requests than it saves in bytes.
const BLOCK_BYTES_MIN: u64 = 4 << 10;
/// Each cache value is weighed as a `u32`, and a block is read whole per GET.
const BLOCK_BYTES_MAX: u64 = 64 * MIB;
/// Read-ahead beyond this only fills the cache with data a reader may never want.
const READAHEAD_BLOCKS_MAX: u32 = 64;

/// Connection settings for `s3://` URLs. Each unset field falls back to the standard
/// environment variable, read when the tier is opened.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000` for MinIO; `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`);
    /// AWS itself when neither is set.
    pub endpoint: Option<String>,
    /// `AWS_REGION`, then `AWS_DEFAULT_REGION`, then `us-east-1`.
    pub region: Option<String>,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint; `AWS_ALLOW_HTTP=true`; otherwise only HTTPS.
    pub allow_http: Option<bool>,
}

impl fmt::Debug for S3Settings {
    // The secret must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// S3 settings with the environment applied: what the client is built from.
#[derive(Clone)]
pub(crate) struct ResolvedS3 {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: String,
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) allow_http: bool,
}

impl S3Settings {
    pub(crate) fn resolve(&self) -> ResolvedS3 {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        ResolvedS3 {
            endpoint: self
                .endpoint
                .clone()
                .or_else(|| env("AWS_ENDPOINT_URL"))
                .or_else(|| env("AWS_ENDPOINT")),
            region: self
                .region
                .clone()
                .or_else(|| env("AWS_REGION"))
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_string()),
            access_key_id: self
                .access_key_id
                .clone()
                .or_else(|| env("AWS_ACCESS_KEY_ID")),
            secret_access_key: self
                .secret_access_key
                .clone()
                .or_else(|| env("AWS_SECRET_ACCESS_KEY")),
            allow_http: self.allow_http.unwrap_or_else(|| {
                env("AWS_ALLOW_HTTP").is_some_and(|value| value.eq_ignore_ascii_case("true"))
            }),
        }
    }
}

/// Everything the tier needs to know; see [`Tier::open`](crate::Tier::open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierConfig {
    /// `file:///abs/dir` (created if missing), `s3://bucket/optional/prefix`, or
    /// `memory://` (private to this tier) / `memory://name` (shared by every tier of
    /// this process opened with the same name, so tests can "restart" against it).
    pub url: String,
    /// Used by `s3://` URLs only.
    pub s3: S3Settings,
    /// A `.log` file larger than this is uploaded in parts.
    pub multipart_threshold_bytes: u64,
    /// Size of each part but the last; at least 5 MiB (S3's minimum).
    pub multipart_part_bytes: u64,
    /// Unit of cold reads: ranged GETs fetch, and the cache holds, blocks of this size.
    pub block_bytes: u64,
    /// Capacity of the block cache (blocks and remote indexes), weighed in bytes.
    pub cache_bytes_max: u64,
    /// Blocks fetched ahead of a sequential reader.
    pub readahead_blocks: u32,
    /// Attempts per store operation, the first included (1: never retry).
    pub retry_attempts_max: u32,
    /// Back-off before the first retry; doubled per retry up to the maximum.
    pub retry_backoff_min_ms: u64,
    /// Largest back-off between two attempts.
    pub retry_backoff_max_ms: u64,
    /// This server's identity in manifests (see `Manifest::owner`): stable across its
    /// restarts, different for every server. The broker keeps it in its data directory;
    /// the default is a fresh random one.
    pub owner: String,
}

impl TierConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> TierConfig {
        TierConfig {
            url: url.into(),
            s3: S3Settings::default(),
            multipart_threshold_bytes: 16 * MIB,
            multipart_part_bytes: 8 * MIB,
            block_bytes: MIB,
            cache_bytes_max: 256 * MIB,
            readahead_blocks: 4,
            retry_attempts_max: 5,
            retry_backoff_min_ms: 100,
            retry_backoff_max_ms: 5_000,
            owner: crate::tier::fresh_writer_id(),
        }
    }

    /// Checks every value against the limits above.
    pub fn validate(&self) -> Result<(), Error> {
        let misconfigured = |reason: String| Error::Misconfigured {
            url: self.url.clone(),
            reason,
        };
        if !(PART_BYTES_MIN..=PART_BYTES_MAX).contains(&self.multipart_part_bytes) {
            return Err(misconfigured(format!(
                "multipart_part_bytes = {} must be within [5 MiB, 5 GiB]",
                self.multipart_part_bytes
            )));
        }
        if self.multipart_threshold_bytes < self.multipart_part_bytes {
            return Err(misconfigured(format!(
                "multipart_threshold_bytes = {} must be at least multipart_part_bytes = {}",
                self.multipart_threshold_bytes, self.multipart_part_bytes
            )));
        }
        if !(BLOCK_BYTES_MIN..=BLOCK_BYTES_MAX).contains(&self.block_bytes) {
            return Err(misconfigured(format!(
                "block_bytes = {} must be within [4 KiB, 64 MiB]",
                self.block_bytes
            )));
        }
        if self.readahead_blocks > READAHEAD_BLOCKS_MAX {
            return Err(misconfigured(format!(
                "readahead_blocks = {} must be at most {READAHEAD_BLOCKS_MAX}",
                self.readahead_blocks
            )));
        }
        // A read holds the blocks it spans plus its read-ahead; a smaller cache would
        // evict blocks before the reader gets to them.
        let working_set_bytes = self.block_bytes * (u64::from(self.readahead_blocks) + 2);
        if self.cache_bytes_max < working_set_bytes {
            return Err(misconfigured(format!(
                "cache_bytes_max = {} must hold at least readahead_blocks + 2 blocks ({working_set_bytes})",
                self.cache_bytes_max
            )));
        }
        if self.retry_attempts_max == 0 {
            return Err(misconfigured(
                "retry_attempts_max must be at least 1".to_string(),
            ));
        }
        if self.retry_backoff_min_ms > self.retry_backoff_max_ms {
            return Err(misconfigured(format!(
                "retry_backoff_min_ms = {} exceeds retry_backoff_max_ms = {}",
                self.retry_backoff_min_ms, self.retry_backoff_max_ms
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        TierConfig::new("memory://").validate().unwrap();
    }

    #[test]
    fn limits_are_enforced() {
        let base = TierConfig::new("memory://");
        let small_parts = TierConfig {
            multipart_part_bytes: MIB,
            ..base.clone()
        };
        assert!(small_parts.validate().is_err());
        let tiny_cache = TierConfig {
            cache_bytes_max: MIB,
            ..base.clone()
        };
        assert!(tiny_cache.validate().is_err());
        let no_attempts = TierConfig {
            retry_attempts_max: 0,
            ..base
        };
        assert!(no_attempts.validate().is_err());
    }

    #[test]
    fn the_secret_is_not_printed() {
        let settings = S3Settings {
            secret_access_key: Some("hunter2".to_string()),
            ..S3Settings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
