//! A pre-decode walk over request bodies that refuses implausible counts.
//!
//! `kafka_protocol` sizes each `Vec` from the array count on the wire before reading a
//! single element (`Vec::with_capacity(n)`). A 14-byte Metadata request claiming 2^31
//! topics would make it ask for ~100 GB, and an allocation failure aborts the process.
//! So before decoding, this module walks the body with the same field layout as the Kafka
//! schema (per API and version) and checks every count against the bytes left: each
//! element needs at least one byte, each `i32` element four. Strings, byte fields and
//! tagged fields are skipped by their length, which must also fit.
//!
//! The walk allocates nothing. It is deliberately lenient about nullability (the decoder
//! checks that); its only job is to keep claimed sizes honest. Every served API has a
//! walker here; a test decodes what the walker accepts and vice versa on real client
//! requests (see the end-to-end tests).

use kafka_protocol::messages::ApiKey;

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GuardError {
    /// The body ended inside a field.
    #[error("request body ends inside a field at byte {0}")]
    Truncated(usize),
    /// An array, string or byte count claims more than the bytes left.
    #[error("a count of {claimed} at byte {position} exceeds the {left} bytes left")]
    CountTooLarge {
        /// The count on the wire.
        claimed: u64,
        /// Where it was read.
        position: usize,
        /// Bytes after it.
        left: usize,
    },
}

type Walk = Result<(), GuardError>;

/// A cursor over the body; every read checks bounds.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    /// Compact encodings (KIP-482) for this request version.
    flexible: bool,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn skip(&mut self, count: usize) -> Walk {
        if count > self.left() {
            return Err(GuardError::Truncated(self.position));
        }
        self.position += count;
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], GuardError> {
        let start = self.position;
        self.skip(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[start..start + N]);
        Ok(out)
    }

    fn unsigned_varint(&mut self) -> Result<u64, GuardError> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let [byte] = self.take::<1>()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(GuardError::Truncated(self.position))
    }

    /// Reads a length or count: i16/i32 in classic encoding, varint+1 in compact.
    /// Returns `None` for null.
    fn length(&mut self, classic_i16: bool) -> Result<Option<u64>, GuardError> {
        if self.flexible {
            let raw = self.unsigned_varint()?;
            return Ok(raw.checked_sub(1));
        }
        let raw = if classic_i16 {
            i64::from(i16::from_be_bytes(self.take::<2>()?))
        } else {
            i64::from(i32::from_be_bytes(self.take::<4>()?))
        };
        Ok(u64::try_from(raw).ok())
    }

    fn check_fits(&self, claimed: u64, element_bytes_min: u64) -> Walk {
        let left = self.left();
        if claimed.saturating_mul(element_bytes_min) > left as u64 {
            return Err(GuardError::CountTooLarge {
                claimed,
                position: self.position,
                left,
            });
        }
        Ok(())
    }

    fn fixed(&mut self, bytes: usize) -> Walk {
        self.skip(bytes)
    }

    fn string(&mut self) -> Walk {
        if let Some(length) = self.length(true)? {
            self.check_fits(length, 1)?;
            self.skip(length as usize)?;
        }
        Ok(())
    }

    fn bytes(&mut self) -> Walk {
        if let Some(length) = self.length(false)? {
            self.check_fits(length, 1)?;
            self.skip(length as usize)?;
        }
        Ok(())
    }

    fn array(
        &mut self,
        element_bytes_min: u64,
        mut element: impl FnMut(&mut Self) -> Walk,
    ) -> Walk {
        if let Some(count) = self.length(false)? {
            self.check_fits(count, element_bytes_min)?;
            for _ in 0..count {
                element(self)?;
            }
        }
        Ok(())
    }

    fn i32_array(&mut self) -> Walk {
        self.array(4, |reader| reader.fixed(4))
    }

    fn string_array(&mut self) -> Walk {
        self.array(1, Reader::string)
    }

    /// The tagged-field section that ends every struct in flexible versions.
    fn tags(&mut self) -> Walk {
        if !self.flexible {
            return Ok(());
        }
        let count = self.unsigned_varint()?;
        // Each tagged field is at least a tag byte and a size byte.
        self.check_fits(count, 2)?;
        for _ in 0..count {
            self.unsigned_varint()?;
            let size = self.unsigned_varint()?;
            self.check_fits(size, 1)?;
            self.skip(size as usize)?;
        }
        Ok(())
    }
}

/// Versions from which each served API uses the flexible (compact) encoding.
fn flexible_from(key: ApiKey) -> Option<i16> {
    Some(match key {
        ApiKey::Produce => 9,
        ApiKey::Fetch => 12,
        ApiKey::ListOffsets => 6,
        ApiKey::Metadata => 9,
        ApiKey::CreateTopics => 5,
        ApiKey::DeleteTopics => 4,
        ApiKey::DescribeConfigs => 4,
        ApiKey::InitProducerId => 2,
        ApiKey::OffsetForLeaderEpoch => 4,
        ApiKey::DescribeCluster => 0,
        ApiKey::ApiVersions => 3,
        _ => return None,
    })
}

/// Walks the body (after the request header) of a `key` request at version `v`.
/// APIs without a walker here are refused, so a newly served API cannot skip the check.
pub(crate) fn check(key: ApiKey, v: i16, body: &[u8]) -> Walk {
    let Some(flexible_version) = flexible_from(key) else {
        return Err(GuardError::Truncated(0));
    };
    let mut r = Reader {
        bytes: body,
        position: 0,
        flexible: v >= flexible_version,
    };
    match key {
        ApiKey::Produce => {
            r.string()?; // transactional_id
            r.fixed(2 + 4)?; // acks, timeout_ms
            r.array(1, |r| {
                if v <= 12 {
                    r.string()?;
                } else {
                    r.fixed(16)?;
                }
                r.array(1, |r| {
                    r.fixed(4)?; // index
                    r.bytes()?; // records
                    r.tags()
                })?;
                r.tags()
            })?;
        }
        ApiKey::Fetch => {
            if v <= 14 {
                r.fixed(4)?; // replica_id
            }
            r.fixed(4 + 4 + 4 + 1)?; // max_wait_ms, min_bytes, max_bytes, isolation_level
            if v >= 7 {
                r.fixed(4 + 4)?; // session_id, session_epoch
            }
            r.array(1, |r| {
                if v <= 12 {
                    r.string()?;
                } else {
                    r.fixed(16)?;
                }
                r.array(1, |r| {
                    r.fixed(4)?; // partition
                    if v >= 9 {
                        r.fixed(4)?; // current_leader_epoch
                    }
                    r.fixed(8)?; // fetch_offset
                    if v >= 12 {
                        r.fixed(4)?; // last_fetched_epoch
                    }
                    if v >= 5 {
                        r.fixed(8)?; // log_start_offset
                    }
                    r.fixed(4)?; // partition_max_bytes
                    r.tags()
                })?;
                r.tags()
            })?;
            if v >= 7 {
                r.array(1, |r| {
                    if v <= 12 {
                        r.string()?;
                    } else {
                        r.fixed(16)?;
                    }
                    r.i32_array()?;
                    r.tags()
                })?;
            }
            if v >= 11 {
                r.string()?; // rack_id
            }
        }
        ApiKey::ListOffsets => {
            r.fixed(4)?; // replica_id
            if v >= 2 {
                r.fixed(1)?; // isolation_level
            }
            r.array(1, |r| {
                r.string()?;
                r.array(1, |r| {
                    r.fixed(4)?; // partition_index
                    if v >= 4 {
                        r.fixed(4)?; // current_leader_epoch
                    }
                    r.fixed(8)?; // timestamp
                    r.tags()
                })?;
                r.tags()
            })?;
            if v >= 10 {
                r.fixed(4)?; // timeout_ms
            }
        }
        ApiKey::Metadata => {
            r.array(1, |r| {
                if v >= 10 {
                    r.fixed(16)?; // topic_id
                }
                r.string()?;
                r.tags()
            })?;
            if v >= 4 {
                r.fixed(1)?; // allow_auto_topic_creation
            }
            if (8..=10).contains(&v) {
                r.fixed(1)?; // include_cluster_authorized_operations
            }
            if v >= 8 {
                r.fixed(1)?; // include_topic_authorized_operations
            }
        }
        ApiKey::CreateTopics => {
            r.array(1, |r| {
                r.string()?; // name
                r.fixed(4 + 2)?; // num_partitions, replication_factor
                r.array(1, |r| {
                    r.fixed(4)?; // partition_index
                    r.i32_array()?; // broker_ids
                    r.tags()
                })?;
                r.array(1, |r| {
                    r.string()?; // name
                    r.string()?; // value
                    r.tags()
                })?;
                r.tags()
            })?;
            r.fixed(4 + 1)?; // timeout_ms, validate_only
        }
        ApiKey::DeleteTopics => {
            if v >= 6 {
                r.array(1, |r| {
                    r.string()?; // name
                    r.fixed(16)?; // topic_id
                    r.tags()
                })?;
            } else {
                r.string_array()?;
            }
            r.fixed(4)?; // timeout_ms
        }
        ApiKey::DescribeConfigs => {
            r.array(1, |r| {
                r.fixed(1)?; // resource_type
                r.string()?; // resource_name
                r.string_array()?; // configuration_keys
                r.tags()
            })?;
            r.fixed(1)?; // include_synonyms
            if v >= 3 {
                r.fixed(1)?; // include_documentation
            }
        }
        ApiKey::InitProducerId => {
            r.string()?; // transactional_id
            r.fixed(4)?; // transaction_timeout_ms
            if v >= 3 {
                r.fixed(8 + 2)?; // producer_id, producer_epoch
            }
            if v >= 6 {
                r.fixed(1)?; // keep_prepared_txn
            }
        }
        ApiKey::OffsetForLeaderEpoch => {
            if v >= 3 {
                r.fixed(4)?; // replica_id
            }
            r.array(1, |r| {
                r.string()?;
                r.array(1, |r| {
                    r.fixed(4 + 4 + 4)?; // partition, current_leader_epoch, leader_epoch
                    r.tags()
                })?;
                r.tags()
            })?;
        }
        ApiKey::DescribeCluster => {
            r.fixed(1)?; // include_cluster_authorized_operations
            if v >= 1 {
                r.fixed(1)?; // endpoint_type
            }
            if v >= 2 {
                r.fixed(1)?; // include_fenced_brokers
            }
        }
        ApiKey::ApiVersions => {
            if v >= 3 {
                r.string()?; // client_software_name
                r.string()?; // client_software_version
            }
        }
        _ => return Err(GuardError::Truncated(0)),
    }
    r.tags()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_array_claim_in_a_tiny_body_is_refused() {
        let body = 0x7fff_ffffi32.to_be_bytes();
        assert!(matches!(
            check(ApiKey::Metadata, 1, &body),
            Err(GuardError::CountTooLarge {
                claimed: 0x7fff_ffff,
                ..
            })
        ));
        // The same claim in compact form (Metadata v9+).
        let compact = [0xff, 0xff, 0xff, 0xff, 0x07];
        assert!(matches!(
            check(ApiKey::Metadata, 9, &compact),
            Err(GuardError::CountTooLarge { .. })
        ));
    }

    #[test]
    fn null_arrays_and_honest_counts_pass() {
        // Metadata v1, topics = null.
        assert_eq!(check(ApiKey::Metadata, 1, &(-1i32).to_be_bytes()), Ok(()));
        // Metadata v1, one topic "t".
        let mut body = 1i32.to_be_bytes().to_vec();
        body.extend_from_slice(&1i16.to_be_bytes());
        body.push(b't');
        assert_eq!(check(ApiKey::Metadata, 1, &body), Ok(()));
        // Cut anywhere: refused, never a panic.
        for cut in 0..body.len() {
            assert!(check(ApiKey::Metadata, 1, &body[..cut]).is_err());
        }
    }

    #[test]
    fn unknown_apis_are_refused_not_waved_through() {
        assert!(check(ApiKey::JoinGroup, 0, &[]).is_err());
    }
}
