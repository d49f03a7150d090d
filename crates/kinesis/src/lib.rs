//! The Kinesis Data Streams front: the JSON 1.1 protocol (`X-Amz-Target:
//! Kinesis_20131202.<Operation>`, `application/x-amz-json-1.1`) over the protocol-agnostic
//! broker, so that the AWS CLI, boto3 and the AWS SDKs manage the same streams Kafka
//! clients use.
//!
//! Modules: `ops` (control plane: streams, shards, retention, tags), `put` (PutRecord,
//! PutRecords), `model` (JSON shapes), `validate` (AWS-worded schema checks), `base64`
//! (blob decoding), `error` (exception names).
//!
//! This crate knows nothing of HTTP libraries: the binary's HTTP listener hands it the
//! target header and the body and writes back the [`Answer`]. Signatures (SigV4) are
//! accepted without being checked — this is a self-hosted server, not IAM.
//!
//! Depends on broker and core.

mod base64;
mod error;
mod model;
mod ops;
mod put;
mod validate;

use serde::Serialize;
use shardline_broker::Broker;

pub use error::ApiError;

/// The content type of every request and answer.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The target prefix of this API version.
pub const TARGET_PREFIX: &str = "Kinesis_20131202.";

/// Settings of the Kinesis front.
#[derive(Debug, Clone)]
pub struct KinesisConfig {
    /// Region named in ARNs.
    pub region: String,
    /// 12-digit account id named in ARNs and messages.
    pub account_id: String,
}

impl Default for KinesisConfig {
    fn default() -> KinesisConfig {
        KinesisConfig {
            region: "us-east-1".to_owned(),
            account_id: "000000000000".to_owned(),
        }
    }
}

/// An HTTP answer: status and JSON body (content type [`CONTENT_TYPE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
}

impl Answer {
    fn ok<T: Serialize>(value: &T) -> Answer {
        match serde_json::to_vec(value) {
            Ok(body) => Answer { status: 200, body },
            Err(error) => {
                Answer::error(&ApiError::internal(format!("encoding the answer: {error}")))
            }
        }
    }

    fn error(error: &ApiError) -> Answer {
        Answer {
            status: error.status,
            body: error.to_json(),
        }
    }
}

/// Shared state of the front.
#[derive(Debug, Clone)]
pub struct Kinesis {
    broker: Broker,
    config: KinesisConfig,
}

impl Kinesis {
    /// A front over `broker`.
    pub fn new(broker: Broker, config: KinesisConfig) -> Kinesis {
        Kinesis { broker, config }
    }

    /// Serves one request. `target` is the `X-Amz-Target` header, if any.
    pub async fn handle(&self, target: Option<&str>, body: &[u8]) -> Answer {
        let Some(operation) = target.and_then(|target| target.strip_prefix(TARGET_PREFIX)) else {
            return Answer::error(&ApiError::unknown_operation(format!(
                "missing or unknown X-Amz-Target {target:?}; expected {TARGET_PREFIX}<Operation>"
            )));
        };
        let body: &[u8] = if body.is_empty() { b"{}" } else { body };
        match ops::dispatch(self, operation, body).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(operation, kind = error.kind, message = %error.message, "kinesis request refused");
                Answer::error(&error)
            }
        }
    }

    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    pub(crate) fn config(&self) -> &KinesisConfig {
        &self.config
    }

    pub(crate) fn arn(&self, stream: &str) -> String {
        format!(
            "arn:aws:kinesis:{}:{}:stream/{stream}",
            self.config.region, self.config.account_id
        )
    }
}
