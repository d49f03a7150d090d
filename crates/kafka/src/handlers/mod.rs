//! Request dispatch: peek the API key and version, refuse what is not served, decode the
//! rest with `kafka_protocol`, and hand it to the handler for that API.
//!
//! What happens to requests that cannot be served, matching a Kafka broker:
//! - an API key Kafka does not define: the connection is closed with a log line;
//! - ApiVersions at a version newer than ours: a v0 answer with UNSUPPORTED_VERSION and
//!   our table, so the client retries at a version we speak (KIP-511);
//! - a defined API we do not serve (transactions, SASL, …): an answer of that API's own
//!   type carrying UNSUPPORTED_VERSION where the API has a top-level error code, else
//!   the connection is closed with a log line;
//! - a served API at a version outside the advertised range, or a body that does not
//!   decode: the connection is closed with a log line.

mod admin;
mod api_versions;
mod fetch;
mod group_offsets;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod unsupported;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::decode_request_header_from_buffer;

use tracing::{Instrument as _, Span, field, info_span, warn};

use crate::connection::{Pending, Reply, ready};
use crate::{Context, guard, versions};

/// Who sent a request, for the group APIs (DescribeGroups shows it per member).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The request header's client id (empty if null).
    pub(crate) client_id: String,
    /// The peer address as Kafka shows it: `/ip`.
    pub(crate) host: String,
}

/// Decodes one request frame from `peer` and starts serving it, inside a span (API,
/// version, correlation id, client id, peer) that every log line of the request carries,
/// through to its answer.
pub(crate) async fn dispatch(context: &Arc<Context>, frame: Bytes, peer: SocketAddr) -> Pending {
    // The frame layer guarantees at least the 10 bytes of a request header prefix.
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let span = match ApiKey::try_from(raw_key) {
        Ok(key) => {
            info_span!("kafka", api = ?key, version, correlation_id, client_id = field::Empty, %peer)
        }
        Err(()) => {
            info_span!("kafka", api = raw_key, version, correlation_id, client_id = field::Empty, %peer)
        }
    };
    let pending = dispatch_in(
        context,
        frame,
        peer,
        raw_key,
        version,
        correlation_id,
        &span,
    )
    .instrument(span.clone())
    .await;
    Box::pin(
        async move {
            let reply = pending.await;
            // Logged here, inside the request's span, so the line names the request.
            if let Reply::Close(reason) = &reply {
                warn!(%reason, "closing connection");
            }
            reply
        }
        .instrument(span),
    )
}

/// What a request frame decodes to, before any handler runs.
pub(crate) enum Decoded {
    /// ApiVersions, which is answered from the raw frame (any version, KIP-511).
    ApiVersions,
    /// An API Kafka defines and this server does not serve.
    Unserved(ApiKey),
    /// A served request, decoded.
    Request {
        key: ApiKey,
        header: RequestHeader,
        // Boxed: RequestKind is large, the other variants tiny.
        request: Box<RequestKind>,
    },
}

/// Decodes one request frame: key and version checked against what is served, the
/// header, then the body, which [`guard::check`] walks before `kafka_protocol` sizes
/// anything from a count on the wire. `Err` is the reason to close the connection.
/// Touches no state, so the fuzz targets run it on arbitrary bytes.
pub(crate) fn decode(frame: &Bytes, raw_key: i16, version: i16) -> Result<Decoded, String> {
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Err(format!("unknown api key {raw_key}"));
    };
    if key == ApiKey::ApiVersions {
        return Ok(Decoded::ApiVersions);
    }
    let Some(supported) = versions::lookup(key) else {
        return Ok(Decoded::Unserved(key));
    };
    if version < supported.served_min || version > supported.max {
        return Err(format!(
            "{key:?} v{version} is not supported (served: v{}-v{})",
            supported.served_min, supported.max
        ));
    }
    let mut body = frame.clone();
    let header = decode_request_header_from_buffer(&mut body)
        .map_err(|error| format!("malformed {key:?} v{version} request header: {error}"))?;
    guard::check(key, version, &body)
        .map_err(|error| format!("refused {key:?} v{version} request: {error}"))?;
    let request = RequestKind::decode(key, &mut body, version)
        .map(Box::new)
        .map_err(|error| format!("malformed {key:?} v{version} request: {error}"))?;
    Ok(Decoded::Request {
        key,
        header,
        request,
    })
}

async fn dispatch_in(
    context: &Arc<Context>,
    frame: Bytes,
    peer: SocketAddr,
    raw_key: i16,
    version: i16,
    correlation_id: i32,
    span: &Span,
) -> Pending {
    let (key, header, request) = match decode(&frame, raw_key, version) {
        Ok(Decoded::ApiVersions) => return api_versions::handle(frame, version, correlation_id),
        Ok(Decoded::Unserved(key)) => {
            return ready(unsupported::reply(key, version, correlation_id));
        }
        Ok(Decoded::Request {
            key,
            header,
            request,
        }) => (key, header, request),
        Err(reason) => return ready(Reply::Close(reason)),
    };
    if let Some(client_id) = header.client_id.as_deref() {
        span.record("client_id", client_id);
    }
    let context = Arc::clone(context);
    match *request {
        RequestKind::Produce(request) => {
            produce::handle(context, request, version, correlation_id).await
        }
        RequestKind::Fetch(request) => fetch::handle(context, request, version, correlation_id),
        RequestKind::ListOffsets(request) => {
            offsets::list_offsets(context, request, version, correlation_id)
        }
        RequestKind::OffsetForLeaderEpoch(request) => {
            offsets::offset_for_leader_epoch(context, request, version, correlation_id)
        }
        RequestKind::Metadata(request) => {
            metadata::handle(context, request, version, correlation_id)
        }
        RequestKind::CreateTopics(request) => {
            admin::create_topics(context, request, version, correlation_id)
        }
        RequestKind::DeleteTopics(request) => {
            admin::delete_topics(context, request, version, correlation_id)
        }
        RequestKind::DescribeConfigs(request) => {
            admin::describe_configs(context, request, version, correlation_id)
        }
        RequestKind::CreatePartitions(request) => {
            admin::create_partitions(context, request, version, correlation_id)
        }
        RequestKind::AlterConfigs(request) => {
            admin::alter_configs(context, request, version, correlation_id)
        }
        RequestKind::IncrementalAlterConfigs(request) => {
            admin::incremental_alter_configs(context, request, version, correlation_id)
        }
        RequestKind::DescribeCluster(request) => {
            admin::describe_cluster(context, request, version, correlation_id)
        }
        RequestKind::InitProducerId(request) => {
            admin::init_producer_id(context, request, version, correlation_id)
        }
        RequestKind::FindCoordinator(request) => {
            groups::find_coordinator(context, request, version, correlation_id)
        }
        RequestKind::JoinGroup(request) => {
            let client = Client {
                client_id: header
                    .client_id
                    .map(|client_id| client_id.to_string())
                    .unwrap_or_default(),
                host: format!("/{}", peer.ip()),
            };
            groups::join_group(context, request, version, correlation_id, client)
        }
        RequestKind::SyncGroup(request) => {
            groups::sync_group(context, request, version, correlation_id)
        }
        RequestKind::Heartbeat(request) => {
            groups::heartbeat(context, request, version, correlation_id)
        }
        RequestKind::LeaveGroup(request) => {
            groups::leave_group(context, request, version, correlation_id)
        }
        RequestKind::ListGroups(request) => {
            groups::list_groups(context, request, version, correlation_id)
        }
        RequestKind::DescribeGroups(request) => {
            groups::describe_groups(context, request, version, correlation_id)
        }
        RequestKind::DeleteGroups(request) => {
            groups::delete_groups(context, request, version, correlation_id)
        }
        RequestKind::OffsetCommit(request) => {
            group_offsets::offset_commit(context, request, version, correlation_id)
        }
        RequestKind::OffsetFetch(request) => {
            group_offsets::offset_fetch(context, request, version, correlation_id)
        }
        RequestKind::OffsetDelete(request) => {
            group_offsets::offset_delete(context, request, version, correlation_id)
        }
        _ => ready(unsupported::reply(key, version, correlation_id)),
    }
}

/// Text as the `StrBytes` that `kafka_protocol` uses for strings.
pub(crate) fn str_bytes(text: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(text.into())
}
