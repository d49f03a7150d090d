//! The consumer-group APIs of the classic protocol: FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, and the admin side: ListGroups, DescribeGroups, DeleteGroups.
//! Each turns the Kafka request into a call on the coordinator (`group::coordinator`) and
//! its answer back into the response of the request's version.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    ApiKey, BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::Context;
use crate::codes;
use crate::connection::{Pending, encode_reply};
use crate::group::machine::{GroupState, JoinRequest, Protocol, SyncRequest, WaiterId};
use crate::handlers::{Client, str_bytes};

/// FindCoordinator key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// FindCoordinator key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// The operations DescribeGroups v3+ reports as allowed on a group when asked: READ (3),
/// DELETE (6) and DESCRIBE (8). There are no ACLs, so everything a group supports is.
const GROUP_AUTHORIZED_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);
/// The group type of every group here (ListGroups v5).
const GROUP_TYPE_CLASSIC: &str = "classic";

fn optional_string(text: Option<StrBytes>) -> Option<String> {
    text.map(|text| text.to_string())
}

pub(crate) fn find_coordinator(
    context: Arc<Context>,
    request: FindCoordinatorRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let node = BrokerId(context.config.node_id);
        let host = str_bytes(context.config.advertised_host.clone());
        let port = i32::from(context.config.advertised_port);
        // This node coordinates every group and (were transactions served) every
        // transactional id.
        let key_type = if version >= 1 {
            request.key_type
        } else {
            KEY_TYPE_GROUP
        };
        let known = key_type == KEY_TYPE_GROUP || key_type == KEY_TYPE_TRANSACTION;
        let response = if version >= 4 {
            let coordinators = request
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    let entry = CoordinatorEntry::default().with_key(key);
                    if known {
                        entry
                            .with_node_id(node)
                            .with_host(host.clone())
                            .with_port(port)
                            .with_error_code(codes::NONE)
                    } else {
                        entry
                            .with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(codes::INVALID_REQUEST)
                            .with_error_message(Some(str_bytes(format!(
                                "key type {key_type} is not supported"
                            ))))
                    }
                })
                .collect();
            FindCoordinatorResponse::default().with_coordinators(coordinators)
        } else if known {
            FindCoordinatorResponse::default()
                .with_error_code(codes::NONE)
                .with_node_id(node)
                .with_host(host)
                .with_port(port)
        } else {
            let response = FindCoordinatorResponse::default()
                .with_error_code(codes::INVALID_REQUEST)
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(Some(str_bytes(format!(
                    "key type {key_type} is not supported"
                ))))
            } else {
                response
            }
        };
        encode_reply(ApiKey::FindCoordinator, version, correlation_id, &response)
    })
}

pub(crate) fn join_group(
    context: Arc<Context>,
    request: JoinGroupRequest,
    version: i16,
    correlation_id: i32,
    client: Client,
) -> Pending {
    Box::pin(async move {
        let group_id = request.group_id.0.to_string();
        let mut names = HashSet::new();
        let protocols: Vec<Protocol> = request
            .protocols
            .into_iter()
            // A name listed twice keeps its first (preferred) entry.
            .filter(|protocol| names.insert(protocol.name.clone()))
            .map(|protocol| Protocol {
                name: protocol.name.to_string(),
                // Kept for the member's whole session: a copy, so the request frame the
                // decoder sliced it from is freed with the request.
                metadata: Bytes::copy_from_slice(&protocol.metadata),
            })
            .collect();
        let join = JoinRequest {
            member_id: request.member_id.to_string(),
            group_instance_id: optional_string(request.group_instance_id),
            client_id: client.client_id,
            client_host: client.host,
            session_timeout_ms: request.session_timeout_ms,
            // v0 has no rebalance timeout: the session timeout serves as one.
            rebalance_timeout_ms: if version >= 1 {
                request.rebalance_timeout_ms
            } else {
                request.session_timeout_ms
            },
            protocol_type: request.protocol_type.to_string(),
            protocols,
            require_known_member_id: version >= 4,
            fresh_member_id: String::new(),
            waiter: WaiterId(0),
        };
        let result = context.groups.join(&group_id, join).await;
        let members = result
            .members
            .into_iter()
            .map(|member| {
                let entry = JoinGroupResponseMember::default()
                    .with_member_id(str_bytes(member.member_id))
                    .with_metadata(member.metadata);
                if version >= 5 {
                    entry.with_group_instance_id(member.group_instance_id.map(str_bytes))
                } else {
                    entry
                }
            })
            .collect();
        let response = JoinGroupResponse::default()
            .with_error_code(result.error_code)
            .with_generation_id(result.generation_id)
            // Nullable from v7 only; older versions carry an empty string instead.
            .with_protocol_name(match (result.protocol_name, version >= 7) {
                (Some(name), _) => Some(str_bytes(name)),
                (None, true) => None,
                (None, false) => Some(StrBytes::default()),
            })
            .with_leader(str_bytes(result.leader_id))
            .with_member_id(str_bytes(result.member_id))
            .with_members(members);
        let response = if version >= 7 {
            response.with_protocol_type(result.protocol_type.map(str_bytes))
        } else {
            response
        };
        encode_reply(ApiKey::JoinGroup, version, correlation_id, &response)
    })
}

pub(crate) fn sync_group(
    context: Arc<Context>,
    request: SyncGroupRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let group_id = request.group_id.0.to_string();
        let sync = SyncRequest {
            member_id: request.member_id.to_string(),
            group_instance_id: optional_string(request.group_instance_id),
            generation_id: request.generation_id,
            protocol_type: optional_string(request.protocol_type),
            protocol_name: optional_string(request.protocol_name),
            assignments: request
                .assignments
                .into_iter()
                // Held until every member has synced: copied out of the request frame.
                .map(|assignment| {
                    (
                        assignment.member_id.to_string(),
                        Bytes::copy_from_slice(&assignment.assignment),
                    )
                })
                .collect(),
            waiter: WaiterId(0),
        };
        let result = context.groups.sync(&group_id, sync).await;
        let response = SyncGroupResponse::default()
            .with_error_code(result.error_code)
            .with_assignment(result.assignment);
        let response = if version >= 5 {
            response
                .with_protocol_type(result.protocol_type.map(str_bytes))
                .with_protocol_name(result.protocol_name.map(str_bytes))
        } else {
            response
        };
        encode_reply(ApiKey::SyncGroup, version, correlation_id, &response)
    })
}

pub(crate) fn heartbeat(
    context: Arc<Context>,
    request: HeartbeatRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let code = context.groups.heartbeat(
            request.group_id.as_str(),
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(StrBytes::as_str),
            request.generation_id,
        );
        let response = HeartbeatResponse::default().with_error_code(code);
        encode_reply(ApiKey::Heartbeat, version, correlation_id, &response)
    })
}

pub(crate) fn leave_group(
    context: Arc<Context>,
    request: LeaveGroupRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        // v0-2 name one member; v3+ a batch, each possibly by instance id only.
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            request
                .members
                .iter()
                .map(|member| {
                    (
                        member.member_id.to_string(),
                        member.group_instance_id.as_ref().map(|id| id.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        let (top_level, member_codes) = context.groups.leave(request.group_id.as_str(), &leaving);
        let response = if version >= 3 {
            let members = request
                .members
                .into_iter()
                .zip(member_codes)
                .map(|(member, code)| {
                    MemberResponse::default()
                        .with_member_id(member.member_id)
                        .with_group_instance_id(member.group_instance_id)
                        .with_error_code(code)
                })
                .collect();
            LeaveGroupResponse::default()
                .with_error_code(top_level)
                .with_members(members)
        } else {
            // One member: its outcome is the answer's.
            let code = if top_level != codes::NONE {
                top_level
            } else {
                member_codes.first().copied().unwrap_or(codes::NONE)
            };
            LeaveGroupResponse::default().with_error_code(code)
        };
        encode_reply(ApiKey::LeaveGroup, version, correlation_id, &response)
    })
}

pub(crate) fn list_groups(
    context: Arc<Context>,
    request: ListGroupsRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let states: Vec<String> = request
            .states_filter
            .iter()
            .map(|state| state.to_lowercase())
            .collect();
        let types: Vec<String> = request
            .types_filter
            .iter()
            .map(|kind| kind.to_lowercase())
            .collect();
        let groups = context
            .groups
            .list()
            .into_iter()
            .filter(|group| {
                states.is_empty() || states.contains(&group.state.as_str().to_lowercase())
            })
            .filter(|_| types.is_empty() || types.iter().any(|kind| kind == GROUP_TYPE_CLASSIC))
            .map(|group| {
                let listed = ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(group.group_id)))
                    .with_protocol_type(str_bytes(group.protocol_type));
                let listed = if version >= 4 {
                    listed.with_group_state(str_bytes(group.state.as_str()))
                } else {
                    listed
                };
                if version >= 5 {
                    listed.with_group_type(str_bytes(GROUP_TYPE_CLASSIC))
                } else {
                    listed
                }
            })
            .collect();
        let response = ListGroupsResponse::default()
            .with_error_code(codes::NONE)
            .with_groups(groups);
        encode_reply(ApiKey::ListGroups, version, correlation_id, &response)
    })
}

pub(crate) fn describe_groups(
    context: Arc<Context>,
    request: DescribeGroupsRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let groups = request
            .groups
            .into_iter()
            .map(|group_id| {
                let described = DescribedGroup::default().with_group_id(group_id.clone());
                let described = if version >= 3 && request.include_authorized_operations {
                    described.with_authorized_operations(GROUP_AUTHORIZED_OPERATIONS)
                } else {
                    described
                };
                let Some(description) = context.groups.describe(group_id.as_str()) else {
                    // Unknown: a Dead group without members; v6 also says GROUP_ID_NOT_FOUND.
                    let described =
                        described.with_group_state(str_bytes(GroupState::Dead.as_str()));
                    return if version >= 6 {
                        described
                            .with_error_code(codes::GROUP_ID_NOT_FOUND)
                            .with_error_message(Some(str_bytes(format!(
                                "group {} not found",
                                group_id.as_str()
                            ))))
                    } else {
                        described.with_error_code(codes::NONE)
                    };
                };
                let members = description
                    .members
                    .into_iter()
                    .map(|member| {
                        let entry = DescribedGroupMember::default()
                            .with_member_id(str_bytes(member.member_id))
                            .with_client_id(str_bytes(member.client_id))
                            .with_client_host(str_bytes(member.client_host))
                            .with_member_metadata(member.metadata)
                            .with_member_assignment(member.assignment);
                        if version >= 4 {
                            entry.with_group_instance_id(member.group_instance_id.map(str_bytes))
                        } else {
                            entry
                        }
                    })
                    .collect();
                described
                    .with_error_code(codes::NONE)
                    .with_group_state(str_bytes(description.state.as_str()))
                    .with_protocol_type(str_bytes(description.protocol_type))
                    .with_protocol_data(str_bytes(description.protocol_name))
                    .with_members(members)
            })
            .collect();
        let response = DescribeGroupsResponse::default().with_groups(groups);
        encode_reply(ApiKey::DescribeGroups, version, correlation_id, &response)
    })
}

pub(crate) fn delete_groups(
    context: Arc<Context>,
    request: DeleteGroupsRequest,
    version: i16,
    correlation_id: i32,
) -> Pending {
    Box::pin(async move {
        let mut results = Vec::with_capacity(request.groups_names.len());
        for group_id in request.groups_names {
            let code = if group_id.is_empty() {
                codes::INVALID_GROUP_ID
            } else {
                context.groups.delete(group_id.as_str()).await
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(code),
            );
        }
        let response = DeleteGroupsResponse::default().with_results(results);
        encode_reply(ApiKey::DeleteGroups, version, correlation_id, &response)
    })
}
