//! The per-shard manifest: the list of a shard's remote segments, the one owner of its
//! JSON format, and the rules it keeps (ascending, contiguous, non-empty segments).
//!
//! A segment is readable remotely if and only if the manifest lists it: objects are
//! uploaded before their entry is added, and an entry is removed before its objects are
//! deleted.
//!
//! ```text
//! streams/<shard_key>/manifest.json
//! {
//!   "format_version": 1,
//!   "segments": [
//!     { "base_offset": 0, "next_offset": 1200, "size_bytes": 1048512,
//!       "max_timestamp": 1700000000123, "log_crc32c": 2864434397,
//!       "uploaded_ms": 1700000100000,
//!       "log_key": "streams/<shard_key>/00000000000000000000-<writer>.log",
//!       "index_key": "streams/<shard_key>/00000000000000000000-<writer>.index",
//!       "timeindex_key": "streams/<shard_key>/00000000000000000000-<writer>.timeindex" },
//!     …
//!   ],
//!   "owner": "9c1f…"
//! }
//! ```
//!
//! Keys are relative to the configured prefix.

use serde::{Deserialize, Serialize};

/// The manifest format this crate writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// One uploaded segment, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    /// First offset in the segment.
    pub base_offset: u64,
    /// One past its last offset.
    pub next_offset: u64,
    /// Length of its `.log` object.
    pub size_bytes: u64,
    /// Largest batch `max_timestamp` in it.
    pub max_timestamp: Option<i64>,
    /// CRC-32C (Castagnoli) of the whole `.log` file, computed from the bytes uploaded.
    pub log_crc32c: u32,
    /// When the upload was recorded (wall clock, ms since the epoch).
    pub uploaded_ms: i64,
    /// Key of the `.log` object, relative to the configured prefix.
    pub log_key: String,
    /// Key of the `.index` object.
    pub index_key: String,
    /// Key of the `.timeindex` object.
    pub timeindex_key: String,
}

impl RemoteSegment {
    /// Whether the segment holds `offset`.
    pub fn contains(&self, offset: u64) -> bool {
        (self.base_offset..self.next_offset).contains(&offset)
    }

    /// The three object keys.
    pub fn keys(&self) -> [&str; 3] {
        [&self.log_key, &self.index_key, &self.timeindex_key]
    }

    /// Names this upload uniquely: a segment deleted and uploaded again under the same
    /// keys (a stream recreated under its old name) must not hit cache entries of the
    /// old one.
    pub(crate) fn identity(&self) -> String {
        format!(
            "{}@{}-{:08x}",
            self.log_key, self.uploaded_ms, self.log_crc32c
        )
    }
}

/// A shard's remote segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of this format (1).
    pub format_version: u32,
    /// Ascending by offset and contiguous: each starts where the previous one ends.
    pub segments: Vec<RemoteSegment>,
    /// The server that owns this shard's remote log (its [`TierConfig::owner`]): only it
    /// changes the manifest. Set by the first write; taken over by a server restored
    /// from the bucket ([`Tier::claim`]), after which the old owner is fenced. Absent in
    /// manifests written before owners existed.
    ///
    /// [`TierConfig::owner`]: crate::TierConfig::owner
    /// [`Tier::claim`]: crate::Tier::claim
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Default for Manifest {
    fn default() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            segments: Vec::new(),
            owner: None,
        }
    }
}

/// Only the version, read first so that a newer format is refused by version rather
/// than by whatever field it changed.
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u32,
}

impl Manifest {
    /// The first offset held remotely, if any.
    pub fn start_offset(&self) -> Option<u64> {
        self.segments.first().map(|segment| segment.base_offset)
    }

    /// One past the last offset held remotely, if any.
    pub fn next_offset(&self) -> Option<u64> {
        self.segments.last().map(|segment| segment.next_offset)
    }

    /// The segment holding `offset`, if any.
    pub fn segment_for(&self, offset: u64) -> Option<&RemoteSegment> {
        let after = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset);
        let segment = self.segments.get(after.checked_sub(1)?)?;
        segment.contains(offset).then_some(segment)
    }

    /// The segment with this base offset, if any.
    pub(crate) fn segment_at(&self, base_offset: u64) -> Option<&RemoteSegment> {
        self.segments
            .binary_search_by_key(&base_offset, |segment| segment.base_offset)
            .ok()
            .map(|at| &self.segments[at])
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        debug_assert!(self.check().is_ok(), "writing an invalid manifest");
        // Serializing plain structs of numbers and strings cannot fail.
        serde_json::to_vec_pretty(self).expect("manifest serializes")
    }

    /// Parses and checks a manifest; the error says what is wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        let version: VersionOnly =
            serde_json::from_slice(bytes).map_err(|error| format!("not a manifest: {error}"))?;
        if version.format_version != FORMAT_VERSION {
            return Err(format!(
                "manifest format version {} is not supported (this build reads {FORMAT_VERSION})",
                version.format_version
            ));
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|error| format!("not a manifest: {error}"))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        for (number, segment) in self.segments.iter().enumerate() {
            if segment.base_offset >= segment.next_offset || segment.size_bytes == 0 {
                return Err(format!("segment {} is empty", segment.base_offset));
            }
            if let Some(previous) = number.checked_sub(1).map(|at| &self.segments[at])
                && previous.next_offset != segment.base_offset
            {
                return Err(format!(
                    "segment {} does not start where segment {} ends ({})",
                    segment.base_offset, previous.base_offset, previous.next_offset
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(base_offset: u64, next_offset: u64) -> RemoteSegment {
        RemoteSegment {
            base_offset,
            next_offset,
            size_bytes: 100,
            max_timestamp: Some(5),
            log_crc32c: 0xdead_beef,
            uploaded_ms: 1,
            log_key: format!("streams/s/{base_offset:020}.log"),
            index_key: format!("streams/s/{base_offset:020}.index"),
            timeindex_key: format!("streams/s/{base_offset:020}.timeindex"),
        }
    }

    #[test]
    fn round_trips_and_finds_segments() {
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            segments: vec![segment(10, 20), segment(20, 35)],
            owner: Some("0123456789abcdef".to_owned()),
        };
        let decoded = Manifest::decode(&manifest.encode()).unwrap();
        assert_eq!(decoded, manifest);
        assert_eq!(decoded.segment_for(9), None);
        assert_eq!(decoded.segment_for(10).unwrap().base_offset, 10);
        assert_eq!(decoded.segment_for(34).unwrap().base_offset, 20);
        assert_eq!(decoded.segment_for(35), None);
        assert_eq!(decoded.start_offset(), Some(10));
        assert_eq!(decoded.next_offset(), Some(35));
    }

    #[test]
    fn gaps_versions_and_garbage_are_refused() {
        let gap = Manifest {
            format_version: FORMAT_VERSION,
            segments: vec![segment(10, 20), segment(21, 35)],
            owner: None,
        };
        let bytes = serde_json::to_vec(&gap).unwrap();
        assert!(
            Manifest::decode(&bytes)
                .unwrap_err()
                .contains("does not start")
        );
        let newer = br#"{"format_version": 2, "shards": {}}"#;
        assert!(Manifest::decode(newer).unwrap_err().contains("version 2"));
        assert!(Manifest::decode(b"\x00garbage").is_err());
    }
}
