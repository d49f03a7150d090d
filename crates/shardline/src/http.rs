//! The HTTP listener: the Kinesis JSON API (`POST` with `X-Amz-Target`), `/healthz`,
//! Prometheus `/metrics`, and `GET /v1/streams/NAME/storage` (where each shard's records
//! are: local disk, object store, upload backlog — what `shardline stream describe` shows). Metric names follow Kinesis' CloudWatch names where one exists.

use std::convert::Infallible;
use std::fmt::Write as _;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shardline_broker::Broker;
use shardline_kinesis::Kinesis;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

/// Largest Kinesis request body accepted: PutRecords may carry 10 MiB of records, and
/// base64 makes that about 13.4 MiB of JSON.
const KINESIS_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Serves HTTP until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    kinesis: Kinesis,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
            accepted = listener.accept() => {
                let Ok((socket, _peer)) = accepted else { continue };
                let broker = broker.clone();
                let kinesis = kinesis.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let broker = broker.clone();
                        let kinesis = kinesis.clone();
                        async move { Ok::<_, Infallible>(route(&broker, &kinesis, request).await) }
                    });
                    if let Err(error) = http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await
                    {
                        debug!(%error, "http connection ended with an error");
                    }
                });
            }
        }
    }
}

async fn route(
    broker: &Broker,
    kinesis: &Kinesis,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() == hyper::Method::POST {
        return kinesis_request(kinesis, request).await;
    }
    let path = request.uri().path();
    if let Some(name) = path
        .strip_prefix("/v1/streams/")
        .and_then(|rest| rest.strip_suffix("/storage"))
        .filter(|_| request.method() == hyper::Method::GET)
    {
        return stream_storage(broker, name).await;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/metrics" => text(StatusCode::OK, metrics(broker)),
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

/// `GET /v1/streams/NAME/storage`: a JSON document of [`Broker::stream_storage`].
async fn stream_storage(broker: &Broker, name: &str) -> Response<Full<Bytes>> {
    let shards = match broker.stream_storage(name).await {
        Ok(shards) => shards,
        Err(error) => {
            let status = match error.kind() {
                shardline_broker::ErrorKind::UnknownStream => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return json_document(status, &serde_json::json!({ "error": error.to_string() }));
        }
    };
    let shards: Vec<serde_json::Value> = shards
        .iter()
        .map(|shard| {
            serde_json::json!({
                "shard": shard.shard,
                "first_offset": shard.first_offset,
                "high_watermark": shard.high_watermark,
                "local": {
                    "start_offset": shard.local_start,
                    "segments": shard.local_segments,
                    "bytes": shard.local_bytes,
                },
                "remote": shard.remote.as_ref().map(|remote| serde_json::json!({
                    "start_offset": remote.range.map(|(start, _)| start),
                    "next_offset": remote.range.map(|(_, next)| next),
                    "segments": remote.segments,
                    "bytes": remote.bytes,
                    "error": remote.error,
                })),
                "upload_backlog": {
                    "segments": shard.backlog.segments,
                    "bytes": shard.backlog.bytes,
                },
            })
        })
        .collect();
    let body = serde_json::json!({
        "stream": name,
        "tiering": broker.tier_stats().is_some(),
        "shards": shards,
    });
    json_document(StatusCode::OK, &body)
}

fn json_document(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn kinesis_request(kinesis: &Kinesis, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(request.into_body(), KINESIS_BODY_BYTES_MAX)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let refused = shardline_kinesis::ApiError::serialization(format!(
                "request body refused (limit {KINESIS_BODY_BYTES_MAX} bytes): {error}"
            ));
            return json(StatusCode::BAD_REQUEST, refused.to_json());
        }
    };
    let answer = kinesis.handle(target.as_deref(), &body).await;
    json(
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        answer.body,
    )
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(shardline_kinesis::CONTENT_TYPE),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// Renders the Prometheus text exposition.
pub fn metrics(broker: &Broker) -> String {
    let (records, bytes) = broker.appended_totals();
    let streams = broker.streams();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP shardline_incoming_records_total Records accepted for append (Kinesis IncomingRecords)."
    );
    let _ = writeln!(out, "# TYPE shardline_incoming_records_total counter");
    let _ = writeln!(out, "shardline_incoming_records_total {records}");
    let _ = writeln!(
        out,
        "# HELP shardline_incoming_bytes_total Record-batch bytes accepted for append (Kinesis IncomingBytes)."
    );
    let _ = writeln!(out, "# TYPE shardline_incoming_bytes_total counter");
    let _ = writeln!(out, "shardline_incoming_bytes_total {bytes}");
    let _ = writeln!(out, "# HELP shardline_streams Streams (topics) that exist.");
    let _ = writeln!(out, "# TYPE shardline_streams gauge");
    let _ = writeln!(out, "shardline_streams {}", streams.len());
    let _ = writeln!(
        out,
        "# HELP shardline_shard_high_watermark Next offset to become readable, per shard."
    );
    let _ = writeln!(out, "# TYPE shardline_shard_high_watermark gauge");
    let _ = writeln!(
        out,
        "# HELP shardline_shard_log_start_offset First offset kept, per shard."
    );
    let _ = writeln!(out, "# TYPE shardline_shard_log_start_offset gauge");
    let (throttled_writes, throttled_reads) = broker.throttled_totals();
    let _ = writeln!(
        out,
        "# HELP shardline_write_provisioned_throughput_exceeded_total Appends slowed or refused by a shard's write limit (Kinesis WriteProvisionedThroughputExceeded)."
    );
    let _ = writeln!(
        out,
        "# TYPE shardline_write_provisioned_throughput_exceeded_total counter"
    );
    let _ = writeln!(
        out,
        "shardline_write_provisioned_throughput_exceeded_total {throttled_writes}"
    );
    let _ = writeln!(
        out,
        "# HELP shardline_read_provisioned_throughput_exceeded_total Reads slowed by a shard's read limit (Kinesis ReadProvisionedThroughputExceeded)."
    );
    let _ = writeln!(
        out,
        "# TYPE shardline_read_provisioned_throughput_exceeded_total counter"
    );
    let _ = writeln!(
        out,
        "shardline_read_provisioned_throughput_exceeded_total {throttled_reads}"
    );
    if let (Some(backlog), Some(stats)) = (broker.tier_backlog(), broker.tier_stats()) {
        let _ = writeln!(
            out,
            "# HELP shardline_tier_upload_backlog_segments Sealed segments not yet in the object store."
        );
        let _ = writeln!(out, "# TYPE shardline_tier_upload_backlog_segments gauge");
        let _ = writeln!(
            out,
            "shardline_tier_upload_backlog_segments {}",
            backlog.segments
        );
        let _ = writeln!(
            out,
            "# HELP shardline_tier_upload_backlog_bytes Bytes of sealed segments not yet in the object store."
        );
        let _ = writeln!(out, "# TYPE shardline_tier_upload_backlog_bytes gauge");
        let _ = writeln!(out, "shardline_tier_upload_backlog_bytes {}", backlog.bytes);
        for (name, help, value) in [
            (
                "segments_uploaded_total",
                "Segments uploaded to the object store.",
                stats.segments_uploaded,
            ),
            (
                "uploaded_bytes_total",
                "Segment bytes uploaded.",
                stats.segment_uploaded_bytes,
            ),
            (
                "upload_failures_total",
                "Segment uploads that failed after retries.",
                stats.upload_failures,
            ),
            (
                "retries_total",
                "Object-store requests retried.",
                stats.retries,
            ),
            ("gets_total", "Object-store GET requests.", stats.gets),
            (
                "get_bytes_total",
                "Bytes received by GET requests.",
                stats.get_bytes,
            ),
            (
                "cache_hits_total",
                "Cold-read block cache hits.",
                stats.cache_hits,
            ),
            (
                "cache_misses_total",
                "Cold-read block cache misses.",
                stats.cache_misses,
            ),
        ] {
            let _ = writeln!(out, "# HELP shardline_tier_{name} {help}");
            let _ = writeln!(out, "# TYPE shardline_tier_{name} counter");
            let _ = writeln!(out, "shardline_tier_{name} {value}");
        }
    }
    for stream in &streams {
        for shard in &stream.shards {
            if let Ok((start, high)) = broker.offsets(&stream.name, i64::from(shard.index)) {
                let labels = format!("stream=\"{}\",shard=\"{}\"", stream.name, shard.index);
                let _ = writeln!(out, "shardline_shard_high_watermark{{{labels}}} {high}");
                let _ = writeln!(out, "shardline_shard_log_start_offset{{{labels}}} {start}");
            }
        }
    }
    out
}
