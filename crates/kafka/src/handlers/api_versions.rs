//! ApiVersions: the first request of every modern client, and the one API that must be
//! answered even at a version we do not know (KIP-511).

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, decode_request_header_from_buffer};

use crate::codes;
use crate::connection::{Pending, Reply, encode_reply, ready};
use crate::versions;

fn advertised() -> Vec<ApiVersion> {
    let mut table: Vec<ApiVersion> = versions::TABLE
        .iter()
        .map(|entry| {
            ApiVersion::default()
                .with_api_key(entry.key as i16)
                .with_min_version(entry.min)
                .with_max_version(entry.max)
        })
        .collect();
    table.sort_by_key(|entry| entry.api_key);
    table
}

pub(crate) fn handle(frame: Bytes, version: i16, correlation_id: i32) -> Pending {
    let Some(entry) = versions::lookup(ApiKey::ApiVersions) else {
        return ready(Reply::Close(
            "ApiVersions missing from the version table".to_owned(),
        ));
    };
    if version > entry.max || version < 0 {
        // A newer client: answer in v0, which every client can parse, with our table, so
        // it retries at the highest version we list.
        let response = ApiVersionsResponse::default()
            .with_error_code(codes::UNSUPPORTED_VERSION)
            .with_api_keys(advertised());
        return ready(encode_reply(
            ApiKey::ApiVersions,
            0,
            correlation_id,
            &response,
        ));
    }
    let mut body = frame;
    if let Err(error) = decode_request_header_from_buffer(&mut body) {
        return ready(Reply::Close(format!(
            "malformed ApiVersions header: {error}"
        )));
    }
    if let Err(error) = ApiVersionsRequest::decode(&mut body, version) {
        return ready(Reply::Close(format!(
            "malformed ApiVersions v{version} request: {error}"
        )));
    }
    let response = ApiVersionsResponse::default()
        .with_error_code(codes::NONE)
        .with_api_keys(advertised());
    ready(encode_reply(
        ApiKey::ApiVersions,
        version,
        correlation_id,
        &response,
    ))
}
