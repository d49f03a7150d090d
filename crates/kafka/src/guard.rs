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
    /// This API has no walker, so it is not served.
    #[error("no request walker for this api")]
    NoWalker,
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

/// Walks the body (after the request header) of a `key` request at version `v`.
/// APIs without a walker here are refused, so a newly served API cannot skip the check.
pub(crate) fn check(key: ApiKey, v: i16, body: &[u8]) -> Walk {
    let mut r = Reader {
        bytes: body,
        position: 0,
        // Flexible (compact) bodies go with the v2 request header: kafka_protocol's own
        // per-message table says which versions those are.
        flexible: key.request_header_version(v) >= 2,
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
        ApiKey::CreatePartitions => {
            r.array(1, |r| {
                r.string()?; // name
                r.fixed(4)?; // count
                r.array(1, |r| {
                    r.i32_array()?; // broker_ids
                    r.tags()
                })?; // assignments (nullable)
                r.tags()
            })?;
            r.fixed(4 + 1)?; // timeout_ms, validate_only
        }
        ApiKey::AlterConfigs | ApiKey::IncrementalAlterConfigs => {
            let incremental = key == ApiKey::IncrementalAlterConfigs;
            r.array(1, |r| {
                r.fixed(1)?; // resource_type
                r.string()?; // resource_name
                r.array(1, |r| {
                    r.string()?; // name
                    if incremental {
                        r.fixed(1)?; // config_operation
                    }
                    r.string()?; // value (nullable)
                    r.tags()
                })?;
                r.tags()
            })?;
            r.fixed(1)?; // validate_only
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
        ApiKey::FindCoordinator => {
            if v <= 3 {
                r.string()?; // key
            }
            if v >= 1 {
                r.fixed(1)?; // key_type
            }
            if v >= 4 {
                r.string_array()?; // coordinator_keys
            }
        }
        ApiKey::JoinGroup => {
            r.string()?; // group_id
            r.fixed(4)?; // session_timeout_ms
            if v >= 1 {
                r.fixed(4)?; // rebalance_timeout_ms
            }
            r.string()?; // member_id
            if v >= 5 {
                r.string()?; // group_instance_id
            }
            r.string()?; // protocol_type
            r.array(1, |r| {
                r.string()?; // name
                r.bytes()?; // metadata
                r.tags()
            })?;
            if v >= 8 {
                r.string()?; // reason
            }
        }
        ApiKey::SyncGroup => {
            r.string()?; // group_id
            r.fixed(4)?; // generation_id
            r.string()?; // member_id
            if v >= 3 {
                r.string()?; // group_instance_id
            }
            if v >= 5 {
                r.string()?; // protocol_type
                r.string()?; // protocol_name
            }
            r.array(1, |r| {
                r.string()?; // member_id
                r.bytes()?; // assignment
                r.tags()
            })?;
        }
        ApiKey::Heartbeat => {
            r.string()?; // group_id
            r.fixed(4)?; // generation_id
            r.string()?; // member_id
            if v >= 3 {
                r.string()?; // group_instance_id
            }
        }
        ApiKey::LeaveGroup => {
            r.string()?; // group_id
            if v <= 2 {
                r.string()?; // member_id
            } else {
                r.array(1, |r| {
                    r.string()?; // member_id
                    r.string()?; // group_instance_id
                    if v >= 5 {
                        r.string()?; // reason
                    }
                    r.tags()
                })?;
            }
        }
        ApiKey::OffsetCommit => {
            r.string()?; // group_id
            r.fixed(4)?; // generation_id_or_member_epoch
            r.string()?; // member_id
            if v >= 7 {
                r.string()?; // group_instance_id
            }
            if v <= 4 {
                r.fixed(8)?; // retention_time_ms
            }
            r.array(1, |r| {
                r.string()?; // name
                r.array(1, |r| {
                    r.fixed(4 + 8)?; // partition_index, committed_offset
                    if v >= 6 {
                        r.fixed(4)?; // committed_leader_epoch
                    }
                    r.string()?; // committed_metadata
                    r.tags()
                })?;
                r.tags()
            })?;
        }
        ApiKey::OffsetFetch => {
            if v <= 7 {
                r.string()?; // group_id
                r.array(1, |r| {
                    r.string()?; // name
                    r.i32_array()?; // partition_indexes
                    r.tags()
                })?;
            } else {
                r.array(1, |r| {
                    r.string()?; // group_id
                    if v >= 9 {
                        r.string()?; // member_id
                        r.fixed(4)?; // member_epoch
                    }
                    r.array(1, |r| {
                        r.string()?; // name
                        r.i32_array()?; // partition_indexes
                        r.tags()
                    })?;
                    r.tags()
                })?;
            }
            if v >= 7 {
                r.fixed(1)?; // require_stable
            }
        }
        ApiKey::OffsetDelete => {
            r.string()?; // group_id
            r.array(1, |r| {
                r.string()?; // name
                r.i32_array() // partitions: { partition_index }
            })?;
        }
        ApiKey::ListGroups => {
            if v >= 4 {
                r.string_array()?; // states_filter
            }
            if v >= 5 {
                r.string_array()?; // types_filter
            }
        }
        ApiKey::DescribeGroups => {
            r.string_array()?; // groups
            if v >= 3 {
                r.fixed(1)?; // include_authorized_operations
            }
        }
        ApiKey::DeleteGroups => {
            r.string_array()?; // groups_names
        }
        _ => return Err(GuardError::NoWalker),
    }
    r.tags()
}

/// Walks an embedded `ConsumerProtocolSubscription` body (after its `i16` version; the
/// struct is never flexible) before `kafka_protocol` decodes it: it comes from JoinGroup
/// metadata, which is opaque bytes to the request walker above.
pub(crate) fn consumer_subscription(v: i16, body: &[u8]) -> Walk {
    let mut r = Reader {
        bytes: body,
        position: 0,
        flexible: false,
    };
    r.string_array()?; // topics
    r.bytes()?; // user_data
    if v >= 1 {
        r.array(1, |r| {
            r.string()?; // topic
            r.i32_array() // partitions
        })?;
    }
    if v >= 2 {
        r.fixed(4)?; // generation_id
    }
    if v >= 3 {
        r.string()?; // rack_id
    }
    Ok(())
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

    /// Every group API at every advertised version: the walker accepts the real encoding
    /// of a request with nested content, refuses every truncation of it, and the decoder
    /// agrees on the whole.
    #[test]
    fn group_api_walkers_match_the_real_encodings() {
        use bytes::{Bytes, BytesMut};
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

        fn s(text: &str) -> StrBytes {
            StrBytes::from_string(text.to_owned())
        }
        fn check_round_trip<R: Encodable + Decodable>(key: ApiKey, v: i16, request: &R) {
            let mut out = BytesMut::new();
            request.encode(&mut out, v).unwrap();
            let body = out.freeze();
            assert_eq!(check(key, v, &body), Ok(()), "{key:?} v{v}");
            for cut in 0..body.len() {
                assert!(
                    check(key, v, &body[..cut]).is_err(),
                    "{key:?} v{v} cut at {cut}"
                );
            }
            R::decode(&mut Bytes::clone(&body), v).unwrap();
        }
        for v in 0..=3 {
            let topic = create_partitions_request::CreatePartitionsTopic::default()
                .with_name(TopicName(s("t")))
                .with_count(4)
                .with_assignments(Some(vec![
                    create_partitions_request::CreatePartitionsAssignment::default()
                        .with_broker_ids(vec![BrokerId(1), BrokerId(2)]),
                ]));
            let request = CreatePartitionsRequest::default()
                .with_topics(vec![topic, Default::default()])
                .with_timeout_ms(5)
                .with_validate_only(true);
            check_round_trip(ApiKey::CreatePartitions, v, &request);
        }
        for v in 0..=2 {
            let config = alter_configs_request::AlterableConfig::default()
                .with_name(s("retention.ms"))
                .with_value(Some(s("86400000")));
            let resource = alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configs(vec![config, Default::default()]);
            let request = AlterConfigsRequest::default().with_resources(vec![resource]);
            check_round_trip(ApiKey::AlterConfigs, v, &request);
        }
        for v in 0..=1 {
            let config = incremental_alter_configs_request::AlterableConfig::default()
                .with_name(s("retention.ms"))
                .with_config_operation(1)
                .with_value(None);
            let resource = incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configs(vec![config]);
            let request = IncrementalAlterConfigsRequest::default()
                .with_resources(vec![resource])
                .with_validate_only(true);
            check_round_trip(ApiKey::IncrementalAlterConfigs, v, &request);
        }
        for v in 0..=4 {
            let mut request = FindCoordinatorRequest::default();
            if v <= 3 {
                request.key = s("group");
            } else {
                request.coordinator_keys = vec![s("a"), s("bb")];
            }
            if v >= 1 {
                request.key_type = 1;
            }
            check_round_trip(ApiKey::FindCoordinator, v, &request);
        }
        for v in 0..=9 {
            let protocol = join_group_request::JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"\x00\x01meta"));
            let mut request = JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_session_timeout_ms(10_000)
                .with_member_id(s("m-1"))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![protocol.clone(), protocol.with_name(s("roundrobin"))]);
            if v >= 1 {
                request.rebalance_timeout_ms = 30_000;
            }
            if v >= 5 {
                request.group_instance_id = Some(s("i"));
            }
            if v >= 8 {
                request.reason = Some(s("why"));
            }
            check_round_trip(ApiKey::JoinGroup, v, &request);
        }
        for v in 0..=5 {
            let assignment = sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(s("m-1"))
                .with_assignment(Bytes::from_static(b"assigned"));
            let mut request = SyncGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id(3)
                .with_member_id(s("m-1"))
                .with_assignments(vec![assignment.clone(), assignment]);
            if v >= 3 {
                request.group_instance_id = Some(s("i"));
            }
            if v >= 5 {
                request.protocol_type = Some(s("consumer"));
                request.protocol_name = Some(s("range"));
            }
            check_round_trip(ApiKey::SyncGroup, v, &request);
        }
        for v in 0..=4 {
            let mut request = HeartbeatRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id(3)
                .with_member_id(s("m-1"));
            if v >= 3 {
                request.group_instance_id = Some(s("i"));
            }
            check_round_trip(ApiKey::Heartbeat, v, &request);
        }
        for v in 0..=5 {
            let mut request = LeaveGroupRequest::default().with_group_id(GroupId(s("g")));
            if v <= 2 {
                request.member_id = s("m-1");
            } else {
                let member = leave_group_request::MemberIdentity::default()
                    .with_member_id(s("m-1"))
                    .with_group_instance_id(Some(s("i")));
                let member = if v >= 5 {
                    member.with_reason(Some(s("bye")))
                } else {
                    member
                };
                request.members = vec![member.clone(), member];
            }
            check_round_trip(ApiKey::LeaveGroup, v, &request);
        }
        for v in 2..=9 {
            let mut partition = offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(1)
                .with_committed_offset(42)
                .with_committed_metadata(Some(s("meta")));
            if v >= 6 {
                partition.committed_leader_epoch = 0;
            }
            let topic = offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![partition.clone(), partition]);
            let mut request = OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id_or_member_epoch(3)
                .with_member_id(s("m-1"))
                .with_topics(vec![topic.clone(), topic]);
            if v >= 7 {
                request.group_instance_id = Some(s("i"));
            }
            if v <= 4 {
                request.retention_time_ms = 1_000;
            }
            check_round_trip(ApiKey::OffsetCommit, v, &request);
        }
        for v in 1..=9 {
            let mut request = OffsetFetchRequest::default();
            if v <= 7 {
                let topic = offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1, 2]);
                request.group_id = GroupId(s("g"));
                request.topics = Some(vec![topic.clone(), topic]);
            } else {
                let topic = offset_fetch_request::OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1]);
                let group = offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(Some(vec![topic]));
                let group = if v >= 9 {
                    group.with_member_id(Some(s("m"))).with_member_epoch(2)
                } else {
                    group
                };
                request.groups = vec![group.clone(), group.with_topics(None)];
            }
            if v >= 7 {
                request.require_stable = true;
            }
            check_round_trip(ApiKey::OffsetFetch, v, &request);
        }
        let partition =
            offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(4);
        let topic = offset_delete_request::OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![partition.clone(), partition]);
        let request = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![topic.clone(), topic]);
        check_round_trip(ApiKey::OffsetDelete, 0, &request);
        for v in 0..=5 {
            let mut request = ListGroupsRequest::default();
            if v >= 4 {
                request.states_filter = vec![s("Stable"), s("Empty")];
            }
            if v >= 5 {
                request.types_filter = vec![s("classic")];
            }
            check_round_trip(ApiKey::ListGroups, v, &request);
        }
        for v in 0..=6 {
            let mut request = DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(s("a")), GroupId(s("b"))]);
            if v >= 3 {
                request.include_authorized_operations = true;
            }
            check_round_trip(ApiKey::DescribeGroups, v, &request);
        }
        for v in 0..=2 {
            let request = DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(s("a")), GroupId(s("b"))]);
            check_round_trip(ApiKey::DeleteGroups, v, &request);
        }
    }

    #[test]
    fn huge_claims_in_group_requests_are_refused() {
        // JoinGroup v0: group "", session timeout, member "", protocol type "", then a
        // protocols array claiming 2^31-1 entries.
        let mut body = Vec::new();
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&10_000i32.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            check(ApiKey::JoinGroup, 0, &body),
            Err(GuardError::CountTooLarge { .. })
        ));
        // OffsetFetch v8 (flexible): a groups array claiming 2^32 entries.
        let compact = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(check(ApiKey::OffsetFetch, 8, &compact).is_err());
        // An embedded consumer subscription claiming 2^31-1 topics.
        assert!(consumer_subscription(0, &i32::MAX.to_be_bytes()).is_err());
    }

    #[test]
    fn unknown_apis_are_refused_not_waved_through() {
        assert_eq!(
            check(ApiKey::ConsumerGroupHeartbeat, 0, &[]),
            Err(GuardError::NoWalker)
        );
    }
}
