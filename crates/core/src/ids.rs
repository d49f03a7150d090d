//! Names of streams and ids of shards.

use std::fmt;
use std::str::FromStr;

/// A shard's index within its stream; Kafka sees it as the partition number.
///
/// Indexes are dense and never reused: a stream created with N shards has 0..N, and every
/// child of a split or merge takes the next unused index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The KPL splits on the first '-' and parses the rest, so keep the exact form.
        write!(f, "shardId-{:012}", self.0)
    }
}

impl FromStr for ShardId {
    type Err = String;

    fn from_str(text: &str) -> Result<ShardId, String> {
        let digits = text
            .strip_prefix("shardId-")
            .ok_or_else(|| format!("shard id {text:?} does not start with \"shardId-\""))?;
        digits
            .parse::<u32>()
            .map(ShardId)
            .map_err(|source| format!("shard id {text:?}: {source}"))
    }
}

/// Why a stream (topic) name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamNameError {
    /// The name is empty.
    #[error("stream name is empty")]
    Empty,
    /// The name is longer than [`StreamName::LEN_MAX`].
    #[error("stream name is {len} characters long; the limit is {max}")]
    TooLong {
        /// Length of the refused name.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `.` and `..` are refused by Kafka.
    #[error("stream name {0:?} is reserved")]
    Reserved(String),
    /// A character outside `[A-Za-z0-9._-]`.
    #[error(
        "stream name {name:?} contains {found:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
    )]
    BadCharacter {
        /// The refused name.
        name: String,
        /// The first offending character.
        found: char,
    },
}

/// A validated stream name: a Kafka topic name that is also a valid Kinesis stream name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamName(String);

impl StreamName {
    /// Kinesis allows 128 characters (Kafka 249); a name must be valid in both APIs.
    pub const LEN_MAX: usize = 128;

    /// Validates `name`.
    pub fn new(name: &str) -> Result<StreamName, StreamNameError> {
        if name.is_empty() {
            return Err(StreamNameError::Empty);
        }
        if name.len() > Self::LEN_MAX {
            return Err(StreamNameError::TooLong {
                len: name.len(),
                max: Self::LEN_MAX,
            });
        }
        if name == "." || name == ".." {
            return Err(StreamNameError::Reserved(name.to_owned()));
        }
        if let Some(found) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(StreamNameError::BadCharacter {
                name: name.to_owned(),
                found,
            });
        }
        Ok(StreamName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_id_round_trips_in_kinesis_form() {
        assert_eq!(ShardId(7).to_string(), "shardId-000000000007");
        assert_eq!("shardId-000000000123".parse::<ShardId>(), Ok(ShardId(123)));
        assert!("shard-1".parse::<ShardId>().is_err());
    }

    #[test]
    fn stream_names_follow_both_rule_sets() {
        assert!(StreamName::new("orders.v1_EU-west").is_ok());
        assert_eq!(StreamName::new(""), Err(StreamNameError::Empty));
        assert!(matches!(
            StreamName::new(".."),
            Err(StreamNameError::Reserved(_))
        ));
        assert!(matches!(
            StreamName::new("a b"),
            Err(StreamNameError::BadCharacter { found: ' ', .. })
        ));
        assert!(matches!(
            StreamName::new(&"x".repeat(129)),
            Err(StreamNameError::TooLong { len: 129, .. })
        ));
    }
}
