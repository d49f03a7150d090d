//! Kinesis API errors: a `__type` name, a message, and an HTTP status, serialised as
//! `{"__type": "...", "message": "..."}` the way AWS and its SDKs expect.

use shardline_broker::{Error, ErrorKind};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    /// The exception name clients match on, e.g. `ResourceNotFoundException`.
    pub kind: &'static str,
    /// Human-readable detail.
    pub message: String,
    /// HTTP status: 400 for client errors, 500 for server faults.
    pub status: u16,
}

impl ApiError {
    fn new(kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            status: 400,
        }
    }

    /// `InvalidArgumentException`: a semantically wrong argument.
    pub fn invalid_argument(message: impl Into<String>) -> ApiError {
        ApiError::new("InvalidArgumentException", message)
    }

    /// `ValidationException`: a schema or constraint violation.
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new("ValidationException", message)
    }

    /// `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new("ResourceNotFoundException", message)
    }

    /// `ResourceInUseException`.
    pub fn in_use(message: impl Into<String>) -> ApiError {
        ApiError::new("ResourceInUseException", message)
    }

    /// `LimitExceededException`.
    pub fn limit_exceeded(message: impl Into<String>) -> ApiError {
        ApiError::new("LimitExceededException", message)
    }

    /// `SerializationException`: the body is not the JSON the operation takes.
    pub fn serialization(message: impl Into<String>) -> ApiError {
        ApiError::new("SerializationException", message)
    }

    /// `UnknownOperationException`.
    pub fn unknown_operation(message: impl Into<String>) -> ApiError {
        ApiError::new("UnknownOperationException", message)
    }

    /// `ExpiredNextTokenException`.
    pub fn expired_next_token(message: impl Into<String>) -> ApiError {
        ApiError::new("ExpiredNextTokenException", message)
    }

    /// `InternalFailure` (HTTP 500).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: "InternalFailure",
            message: message.into(),
            status: 500,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "__type": self.kind, "message": self.message }))
            .unwrap_or_default()
    }

    /// Maps an engine error, naming the stream the way AWS messages do.
    pub fn from_broker(error: &Error, account: &str) -> ApiError {
        match (error.kind(), error) {
            (ErrorKind::UnknownStream, Error::UnknownStream(name)) => {
                ApiError::not_found(format!("Stream {name} under account {account} not found."))
            }
            (ErrorKind::UnknownShard, _) => ApiError::not_found(error.to_string()),
            (ErrorKind::StreamExists, Error::StreamExists(name)) => ApiError::in_use(format!(
                "Stream {name} under account {account} already exists."
            )),
            (ErrorKind::InvalidStreamName | ErrorKind::InvalidShardCount, _) => {
                ApiError::validation(error.to_string())
            }
            (ErrorKind::InvalidConfig | ErrorKind::InvalidReshard | ErrorKind::ShardClosed, _) => {
                ApiError::invalid_argument(error.to_string())
            }
            (ErrorKind::LimitExceeded, _) => ApiError::limit_exceeded(error.to_string()),
            (ErrorKind::StreamBusy, _) => ApiError::in_use(error.to_string()),
            (ErrorKind::Throttled, Error::Throttled { stream, shard, .. }) => ApiError {
                kind: "ProvisionedThroughputExceededException",
                message: format!(
                    "Rate exceeded for shard {} in stream {stream} under account {account}.",
                    shardline_core::ShardId(*shard)
                ),
                status: 400,
            },
            (ErrorKind::ShuttingDown, _) => ApiError::internal("the server is shutting down"),
            _ => ApiError::internal(error.to_string()),
        }
    }
}
