//! Answers for Kafka APIs this server defines but does not serve (transactions, SASL,
//! quorum and controller APIs, …). Where the API's response has a top-level error code at
//! the request's version, the client gets a proper response carrying UNSUPPORTED_VERSION
//! and the connection stays open, as a Kafka broker does for an API it cannot handle.
//! Otherwise the connection is closed with a log line.

use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, ApiKey, EndTxnResponse, SaslAuthenticateResponse,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::Message;

use crate::codes;
use crate::connection::{Reply, encode_reply};

macro_rules! error_reply {
    ($response:ty, $key:expr, $version:expr, $correlation_id:expr) => {{
        if !(<$response>::VERSIONS.min..=<$response>::VERSIONS.max).contains(&$version) {
            None
        } else {
            let response = <$response>::default().with_error_code(codes::UNSUPPORTED_VERSION);
            match encode_reply($key, $version, $correlation_id, &response) {
                // This version has no top-level error code to carry the refusal.
                Reply::Close(_) => None,
                reply => Some(reply),
            }
        }
    }};
}

/// The answer for `key`, which this server does not serve.
pub(crate) fn reply(key: ApiKey, version: i16, correlation_id: i32) -> Reply {
    let reply = match key {
        ApiKey::SaslHandshake => error_reply!(SaslHandshakeResponse, key, version, correlation_id),
        ApiKey::SaslAuthenticate => {
            error_reply!(SaslAuthenticateResponse, key, version, correlation_id)
        }
        ApiKey::EndTxn => error_reply!(EndTxnResponse, key, version, correlation_id),
        ApiKey::AddOffsetsToTxn => {
            error_reply!(AddOffsetsToTxnResponse, key, version, correlation_id)
        }
        _ => None,
    };
    reply
        .unwrap_or_else(|| Reply::Close(format!("{key:?} v{version} is not served by this broker")))
}
