//! `shardline group list|describe`: consumer groups seen through the Kafka protocol, like
//! Kafka's `kafka-consumer-groups.sh`. Speaks to any server on `--bootstrap` with
//! ListGroups, DescribeGroups, OffsetFetch and ListOffsets, at fixed versions that the
//! server must advertise (checked with ApiVersions first). [`list_groups`] and
//! [`describe_group`] return the data; [`print_list`] and [`print_detail`] format it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, ConsumerProtocolAssignment, DescribeGroupsRequest,
    GroupId, ListGroupsRequest, ListOffsetsRequest, OffsetFetchRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{
    Decodable, HeaderVersion, Message, Request, StrBytes, encode_request_header_into_buffer,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every network step is bounded by this.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response accepted before anything is allocated for it.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The versions used, and why: ListGroups v4 names states; DescribeGroups v5 is the last
/// version that still answers an unknown group without an error; OffsetFetch v7 is the
/// last single-group form; ListOffsets v5 is non-flexible and enough for "latest".
const LIST_GROUPS_VERSION: i16 = 4;
const DESCRIBE_GROUPS_VERSION: i16 = 5;
const OFFSET_FETCH_VERSION: i16 = 7;
const LIST_OFFSETS_VERSION: i16 = 5;
/// ListOffsets timestamp meaning "the log end".
const LATEST: i64 = -1;

pub use crate::output::Format;

/// One group in `group list`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    /// Group id.
    pub group: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub state: String,
    /// `consumer` for consumer groups; empty when unknown.
    pub protocol_type: String,
    /// The assignment protocol in use (Stable groups), such as `range`.
    pub protocol: String,
    /// Number of members.
    pub members: usize,
}

/// One partition of a member's assignment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Assigned {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// One member in `group describe`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberRow {
    /// Member id.
    pub member_id: String,
    /// Static instance id, if any.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Assigned partitions (consumer groups in Stable state).
    pub assignment: Vec<Assigned>,
}

/// One partition's position in `group describe`.
#[derive(Debug, Clone, Serialize)]
pub struct OffsetRow {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset, if any.
    pub committed_offset: Option<i64>,
    /// The partition's log end offset.
    pub log_end_offset: Option<i64>,
    /// `log_end_offset - committed_offset`.
    pub lag: Option<i64>,
    /// Metadata committed with the offset, if not empty.
    pub metadata: Option<String>,
    /// The member the partition is assigned to, if any.
    pub member_id: Option<String>,
}

/// `group describe`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDetail {
    /// Group id.
    pub group: String,
    /// Group state.
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// Assignment protocol.
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberRow>,
    /// Assigned or committed partitions.
    pub offsets: Vec<OffsetRow>,
}

/// A Kafka connection that sends one request at a time.
struct Client {
    stream: TcpStream,
    correlation_id: i32,
    /// Highest version the server advertises, per API key.
    versions: BTreeMap<i16, (i16, i16)>,
}

impl Client {
    async fn connect(bootstrap: &str) -> anyhow::Result<Client> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(bootstrap))
            .await
            .with_context(|| format!("connecting to {bootstrap} timed out"))?
            .with_context(|| format!("connecting to {bootstrap}"))?;
        let mut client = Client {
            stream,
            correlation_id: 0,
            versions: BTreeMap::new(),
        };
        let answer = client
            .send(0, &ApiVersionsRequest::default())
            .await
            .context("ApiVersions")?;
        if answer.error_code != 0 {
            bail!("ApiVersions failed with error code {}", answer.error_code);
        }
        client.versions = answer
            .api_keys
            .iter()
            .map(|entry| (entry.api_key, (entry.min_version, entry.max_version)))
            .collect();
        Ok(client)
    }

    /// Sends `request` at `version` after checking the server serves it.
    async fn call<R: Request>(&mut self, version: i16, request: &R) -> anyhow::Result<R::Response> {
        let name = format!(
            "{:?}",
            ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions)
        );
        match self.versions.get(&R::KEY) {
            Some((min, max)) if (*min..=*max).contains(&version) => {}
            _ => bail!("the server does not serve {name} v{version}"),
        }
        self.send(version, request)
            .await
            .with_context(|| format!("{name} v{version}"))
    }

    async fn send<R: Request>(&mut self, version: i16, request: &R) -> anyhow::Result<R::Response> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("shardline-cli")));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        encode_request_header_into_buffer(&mut frame, &header)?;
        request.encode(&mut frame, version)?;
        let length = i32::try_from(frame.len() - 4).context("request too large")?;
        frame[0..4].copy_from_slice(&length.to_be_bytes());
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let length = self.stream.read_i32().await?;
            let length = usize::try_from(length).context("negative response length")?;
            if length > RESPONSE_BYTES_MAX {
                bail!("response of {length} bytes is larger than {RESPONSE_BYTES_MAX}");
            }
            let mut body = vec![0u8; length];
            self.stream.read_exact(&mut body).await?;
            anyhow::Ok(Bytes::from(body))
        };
        let mut body = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .context("no answer in time")??;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
        if header.correlation_id != self.correlation_id {
            bail!(
                "answer for request {} while waiting for {}",
                header.correlation_id,
                self.correlation_id
            );
        }
        R::Response::decode(&mut body, version)
    }
}

fn error_name(code: i16) -> String {
    let known = kafka_protocol::ResponseError::try_from_code(code);
    match known {
        Some(error) => format!("{error:?} ({code})"),
        None => format!("error code {code}"),
    }
}

/// The partitions of a consumer's assignment, if the bytes are a consumer assignment.
fn decode_assignment(bytes: &Bytes) -> Vec<Assigned> {
    let mut body = bytes.clone();
    if body.len() < 2 {
        return Vec::new();
    }
    let version = body
        .get_i16()
        .clamp(0, ConsumerProtocolAssignment::VERSIONS.max);
    match ConsumerProtocolAssignment::decode(&mut body, version) {
        Ok(assignment) => {
            let mut out: Vec<Assigned> = assignment
                .assigned_partitions
                .into_iter()
                .flat_map(|topic| {
                    let name = topic.topic.to_string();
                    topic.partitions.into_iter().map(move |partition| Assigned {
                        topic: name.clone(),
                        partition,
                    })
                })
                .collect();
            out.sort();
            out
        }
        Err(_) => Vec::new(),
    }
}

async fn describe_many(
    client: &mut Client,
    groups: Vec<String>,
) -> anyhow::Result<Vec<kafka_protocol::messages::describe_groups_response::DescribedGroup>> {
    let request = DescribeGroupsRequest::default().with_groups(
        groups
            .into_iter()
            .map(|group| GroupId(StrBytes::from_string(group)))
            .collect(),
    );
    let answer = client.call(DESCRIBE_GROUPS_VERSION, &request).await?;
    Ok(answer.groups)
}

/// Every group the server knows, with state, protocol and member count.
pub async fn list_groups(bootstrap: &str) -> anyhow::Result<Vec<GroupRow>> {
    let mut client = Client::connect(bootstrap).await?;
    let listed = client
        .call(LIST_GROUPS_VERSION, &ListGroupsRequest::default())
        .await?;
    if listed.error_code != 0 {
        bail!("ListGroups failed: {}", error_name(listed.error_code));
    }
    let names: Vec<String> = listed
        .groups
        .iter()
        .map(|group| group.group_id.to_string())
        .collect();
    let described = if names.is_empty() {
        Vec::new()
    } else {
        describe_many(&mut client, names).await?
    };
    let mut rows: Vec<GroupRow> = described
        .into_iter()
        .map(|group| GroupRow {
            group: group.group_id.to_string(),
            state: group.group_state.to_string(),
            protocol_type: group.protocol_type.to_string(),
            protocol: group.protocol_data.to_string(),
            members: group.members.len(),
        })
        .collect();
    rows.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(rows)
}

/// Prints `group list`.
pub fn print_list(rows: &[GroupRow], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => crate::outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "groups": rows }))?
        ),
        Format::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    vec![
                        row.group.clone(),
                        row.state.clone(),
                        protocol_label(&row.protocol_type, &row.protocol),
                        row.members.to_string(),
                    ]
                })
                .collect();
            print_table(&["GROUP", "STATE", "PROTOCOL", "MEMBERS"], &table);
        }
    }
    Ok(())
}

fn protocol_label(protocol_type: &str, protocol: &str) -> String {
    match (protocol_type.is_empty(), protocol.is_empty()) {
        (true, _) => "-".to_owned(),
        (false, true) => protocol_type.to_owned(),
        (false, false) => format!("{protocol_type}/{protocol}"),
    }
}

/// One group: members, assignments, and per partition the committed offset, log end
/// offset and lag. An error if the group does not exist.
pub async fn describe_group(bootstrap: &str, group: &str) -> anyhow::Result<GroupDetail> {
    let mut client = Client::connect(bootstrap).await?;
    let described = describe_many(&mut client, vec![group.to_owned()])
        .await?
        .into_iter()
        .next()
        .context("DescribeGroups answered nothing")?;
    if described.error_code != 0 {
        bail!(
            "DescribeGroups of {group} failed: {}",
            error_name(described.error_code)
        );
    }
    let fetched = client
        .call(
            OFFSET_FETCH_VERSION,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
                .with_topics(None),
        )
        .await?;
    if fetched.error_code != 0 {
        bail!(
            "OffsetFetch of {group} failed: {}",
            error_name(fetched.error_code)
        );
    }
    let state = described.group_state.to_string();
    let members: Vec<MemberRow> = described
        .members
        .iter()
        .map(|member| MemberRow {
            member_id: member.member_id.to_string(),
            group_instance_id: member.group_instance_id.as_ref().map(ToString::to_string),
            client_id: member.client_id.to_string(),
            client_host: member.client_host.to_string(),
            assignment: if described.protocol_type.as_str() == "consumer" {
                decode_assignment(&member.member_assignment)
            } else {
                Vec::new()
            },
        })
        .collect();
    if state == "Dead" && members.is_empty() && fetched.topics.is_empty() {
        bail!("group {group} does not exist");
    }
    // Every partition that is assigned or has a committed offset.
    let mut positions: BTreeMap<(String, i32), OffsetRow> = BTreeMap::new();
    for member in &members {
        for assigned in &member.assignment {
            positions.insert(
                (assigned.topic.clone(), assigned.partition),
                OffsetRow {
                    topic: assigned.topic.clone(),
                    partition: assigned.partition,
                    committed_offset: None,
                    log_end_offset: None,
                    lag: None,
                    metadata: None,
                    member_id: Some(member.member_id.clone()),
                },
            );
        }
    }
    for topic in &fetched.topics {
        for partition in &topic.partitions {
            if partition.committed_offset < 0 {
                continue;
            }
            let key = (topic.name.to_string(), partition.partition_index);
            let row = positions.entry(key).or_insert_with(|| OffsetRow {
                topic: topic.name.to_string(),
                partition: partition.partition_index,
                committed_offset: None,
                log_end_offset: None,
                lag: None,
                metadata: None,
                member_id: None,
            });
            row.committed_offset = Some(partition.committed_offset);
            row.metadata = partition
                .metadata
                .as_ref()
                .map(ToString::to_string)
                .filter(|metadata| !metadata.is_empty());
        }
    }
    if !positions.is_empty() {
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in positions.keys() {
            by_topic.entry(topic.clone()).or_default().push(*partition);
        }
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|partition| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(partition)
                                            .with_timestamp(LATEST)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let ends = client.call(LIST_OFFSETS_VERSION, &request).await?;
        for topic in ends.topics {
            for partition in topic.partitions {
                if partition.error_code != 0 {
                    continue;
                }
                if let Some(row) =
                    positions.get_mut(&(topic.name.to_string(), partition.partition_index))
                {
                    row.log_end_offset = Some(partition.offset);
                    row.lag = row
                        .committed_offset
                        .map(|committed| (partition.offset - committed).max(0));
                }
            }
        }
    }
    let detail = GroupDetail {
        group: group.to_owned(),
        state,
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        members,
        offsets: positions.into_values().collect(),
    };
    Ok(detail)
}

/// Prints `group describe`.
pub fn print_detail(detail: &GroupDetail, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        crate::outln!("{}", serde_json::to_string_pretty(detail)?);
        return Ok(());
    }
    crate::outln!(
        "Group {}: state {}, protocol {}, {} member(s)",
        detail.group,
        detail.state,
        protocol_label(&detail.protocol_type, &detail.protocol),
        detail.members.len()
    );
    if !detail.members.is_empty() {
        crate::outln!();
        let rows: Vec<Vec<String>> = detail
            .members
            .iter()
            .map(|member| {
                let assignment = summarize(&member.assignment);
                vec![
                    member.member_id.clone(),
                    member
                        .group_instance_id
                        .clone()
                        .unwrap_or_else(|| "-".to_owned()),
                    member.client_id.clone(),
                    member.client_host.clone(),
                    assignment,
                ]
            })
            .collect();
        print_table(
            &["MEMBER", "INSTANCE", "CLIENT ID", "HOST", "ASSIGNED"],
            &rows,
        );
    }
    if !detail.offsets.is_empty() {
        crate::outln!();
        let dash = |value: Option<i64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let rows: Vec<Vec<String>> = detail
            .offsets
            .iter()
            .map(|row| {
                vec![
                    row.topic.clone(),
                    row.partition.to_string(),
                    dash(row.committed_offset),
                    dash(row.log_end_offset),
                    dash(row.lag),
                    row.member_id.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        print_table(
            &[
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "LOG-END",
                "LAG",
                "MEMBER",
            ],
            &rows,
        );
    }
    Ok(())
}

/// `orders[0,1,2] payments[4]`.
fn summarize(assignment: &[Assigned]) -> String {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for assigned in assignment {
        by_topic
            .entry(&assigned.topic)
            .or_default()
            .push(assigned.partition);
    }
    if by_topic.is_empty() {
        return "-".to_owned();
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            let list: Vec<String> = partitions.iter().map(ToString::to_string).collect();
            format!("{topic}[{}]", list.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    crate::out!("{}", crate::output::table(headers, rows));
}
