//! The HTTP listener: the Kinesis JSON API (`POST` with `X-Amz-Target`), `/healthz`,
//! Prometheus `/metrics`, and `GET /v1/streams/NAME/storage` (where each shard's records
//! are: local disk, object store, upload backlog — what `shardline stream describe` shows). Metric names follow Kinesis' CloudWatch names where one exists.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use shardline_broker::Broker;
use shardline_kinesis::Kinesis;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument as _, debug, info_span, warn};

/// Largest Kinesis request body accepted: PutRecords may carry 10 MiB of records, and
/// base64 makes that about 13.4 MiB of JSON.
const KINESIS_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Limits of the HTTP listener (`[http]` in the config file).
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Most open connections; more are closed at accept, with a log line.
    pub connections_max: usize,
    /// A client that has started a request must send all its headers within this.
    pub header_timeout: Duration,
    /// A connection with no request under way for this long is closed.
    pub idle_timeout: Duration,
    /// How long shutdown waits for requests under way before cutting connections.
    pub shutdown_grace: Duration,
}

/// Serves HTTP until `stop` turns true; then stops accepting, lets each connection
/// finish the request it is serving (idle keep-alive connections close at once), and
/// cuts whatever is left after the grace period.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    kinesis: Kinesis,
    settings: HttpSettings,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(settings.connections_max));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning on accept.
                        warn!(%error, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    warn!(%peer, limit = settings.connections_max, "http connection limit (http.connections_max) reached; closing new connection");
                    drop(socket);
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let broker = broker.clone();
                let kinesis = kinesis.clone();
                let stop = stop.clone();
                connections.spawn(async move {
                    serve_connection(socket, broker, kinesis, settings, stop).await;
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("grace period over; cutting the remaining http connections");
        connections.abort_all();
    }
}

/// Requests under way on one connection and when the last one ended, for the idle
/// timeout. Atomics, not a lock: it is touched on every request.
#[derive(Debug)]
struct Activity {
    origin: tokio::time::Instant,
    busy: AtomicUsize,
    /// Milliseconds from `origin` to the end of the last request (or the accept).
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: tokio::time::Instant::now(),
            busy: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn begin(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::SeqCst);
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }

    /// When the connection becomes idle-expired, if nothing is under way.
    fn idle_deadline(&self, idle: Duration) -> Option<tokio::time::Instant> {
        (self.busy.load(Ordering::SeqCst) == 0).then(|| {
            self.origin + Duration::from_millis(self.last_ms.load(Ordering::SeqCst)) + idle
        })
    }
}

async fn serve_connection(
    socket: tokio::net::TcpStream,
    broker: Broker,
    kinesis: Kinesis,
    settings: HttpSettings,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let tracked = Arc::clone(&activity);
    let service = service_fn(move |request| {
        let broker = broker.clone();
        let kinesis = kinesis.clone();
        let activity = Arc::clone(&tracked);
        activity.begin();
        // One span per request, so a log line can be traced to it.
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|value| value.to_str().ok())
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or("")
            .to_owned();
        let span = info_span!(
            "http",
            method = %request.method(),
            path = %request.uri().path(),
            operation = %operation,
        );
        async move {
            let response = route(&broker, &kinesis, request).await;
            activity.end();
            Ok::<_, Infallible>(response)
        }
        .instrument(span)
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .serve_connection(TokioIo::new(socket), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        // Sleeps until the idle deadline, or a while when a request is under way (the
        // deadline is looked at again then).
        let wake = activity
            .idle_deadline(settings.idle_timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + settings.idle_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "http connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !closing => {
                if changed.is_err() || *stop.borrow() {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(wake), if !closing => {
                if activity
                    .idle_deadline(settings.idle_timeout)
                    .is_some_and(|deadline| deadline <= tokio::time::Instant::now())
                {
                    debug!("closing idle http connection (http.idle_timeout_ms)");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
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
    let _ = writeln!(
        out,
        "# HELP shardline_background_shard_failures_total Shards a tiering or retention pass failed on and went past (logged)."
    );
    let _ = writeln!(
        out,
        "# TYPE shardline_background_shard_failures_total counter"
    );
    let _ = writeln!(
        out,
        "shardline_background_shard_failures_total {}",
        broker.pass_failures()
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
            (
                "crc_mismatches_total",
                "Remote segments whose whole-object CRC-32C differs from the one recorded at upload.",
                stats.crc_mismatches,
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
