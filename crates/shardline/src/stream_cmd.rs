//! `shardline stream …`: manage streams through the server's own Kinesis API, so that
//! everything the CLI does can be scripted with the AWS CLI or an SDK too.
//!
//! `describe` draws the layout an operator needs at a glance: a table of shards with
//! their state, lineage and share of the hash-key space, a bar of the key space
//! showing which open shard owns which part, and where each partition's records are
//! (local disk, object store, upload backlog) from the server's storage endpoint, which
//! Kinesis has no operation for.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::output::{human_bytes, table};

pub use crate::output::Format;

/// Width of the key-space bar in characters.
const BAR_WIDTH: usize = 64;

/// Sends one request to `endpoint` (`http://host:port`) on a fresh connection and
/// returns the status and body.
async fn exchange(
    endpoint: &str,
    request: hyper::http::request::Builder,
    body: Bytes,
    what: &str,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let authority = endpoint
        .strip_prefix("http://")
        .with_context(|| format!("endpoint {endpoint:?} must start with http://"))?
        .trim_end_matches('/');
    let stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to the server's HTTP API at {endpoint}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    let request = request.header("host", authority).body(Full::new(body))?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("calling {what}"))?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// Calls one Kinesis operation on `endpoint` (`http://host:port`).
pub async fn call(endpoint: &str, operation: &str, input: &Value) -> anyhow::Result<Value> {
    let request = Request::post("/")
        .header("content-type", shardline_kinesis::CONTENT_TYPE)
        .header(
            "x-amz-target",
            format!("{}{operation}", shardline_kinesis::TARGET_PREFIX),
        );
    let body = Bytes::from(serde_json::to_vec(input)?);
    let (status, body) = exchange(endpoint, request, body, operation).await?;
    let value: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .with_context(|| format!("{operation} answered with non-JSON ({status})"))?
    };
    if !status.is_success() {
        let kind = value["__type"].as_str().unwrap_or("error");
        let message = value["message"].as_str().unwrap_or("");
        bail!("{operation} failed: {kind}: {message}");
    }
    Ok(value)
}

/// `GET /v1/streams/NAME/storage`: where each shard's records are.
async fn storage(endpoint: &str, name: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/streams/{name}/storage");
    let (status, body) = exchange(endpoint, Request::get(&path), Bytes::new(), &path).await?;
    let value: Value = serde_json::from_slice(&body)
        .with_context(|| format!("{path} answered with non-JSON ({status})"))?;
    if !status.is_success() {
        bail!("{path} failed: {}", text(&value["error"]));
    }
    Ok(value)
}

/// `3 (2.0 MiB)`: segments and their bytes.
fn segments_cell(part: &Value) -> String {
    format!(
        "{} ({})",
        text(&part["segments"]),
        human_bytes(part["bytes"].as_u64().unwrap_or(0))
    )
}

/// The storage table of `describe`: each shard's local and remote offsets and bytes and
/// its upload backlog, and a line of totals.
fn storage_table(storage: &Value) -> String {
    let shards = storage["shards"].as_array().cloned().unwrap_or_default();
    let tiering = storage["tiering"].as_bool().unwrap_or(false);
    let offsets = |start: &Value, next: &Value| match (start.as_u64(), next.as_u64()) {
        (Some(start), Some(next)) if next > start => format!("{start}..{next}"),
        _ => "-".to_owned(),
    };
    let mut rows = Vec::new();
    let (mut backlog_segments, mut backlog_bytes, mut remote_bytes, mut local_bytes) = (0, 0, 0, 0);
    for shard in &shards {
        let local = &shard["local"];
        let remote = &shard["remote"];
        let backlog = &shard["upload_backlog"];
        local_bytes += local["bytes"].as_u64().unwrap_or(0);
        remote_bytes += remote["bytes"].as_u64().unwrap_or(0);
        backlog_segments += backlog["segments"].as_u64().unwrap_or(0);
        backlog_bytes += backlog["bytes"].as_u64().unwrap_or(0);
        let mut row = vec![
            text(&shard["shard"]),
            offsets(&shard["first_offset"], &shard["high_watermark"]),
            offsets(&local["start_offset"], &shard["high_watermark"]),
            segments_cell(local),
        ];
        if tiering {
            row.push(offsets(&remote["start_offset"], &remote["next_offset"]));
            row.push(segments_cell(remote));
            row.push(segments_cell(backlog));
        }
        rows.push(row);
    }
    let mut headers = vec!["PARTITION", "OFFSETS", "LOCAL OFFSETS", "LOCAL SEGMENTS"];
    if tiering {
        headers.extend(["REMOTE OFFSETS", "REMOTE SEGMENTS", "UPLOAD BACKLOG"]);
    }
    let mut out = table(&headers, &rows);
    for shard in &shards {
        if let Some(error) = shard["remote"]["error"].as_str() {
            let _ = writeln!(
                out,
                "partition {}: object store unreadable: {error}",
                text(&shard["shard"])
            );
        }
    }
    if tiering {
        let _ = writeln!(
            out,
            "local {}, object store {}, upload backlog {backlog_segments} segments ({})",
            human_bytes(local_bytes),
            human_bytes(remote_bytes),
            human_bytes(backlog_bytes)
        );
    } else {
        let _ = writeln!(out, "local {} (tiering off)", human_bytes(local_bytes));
    }
    out
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    crate::outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `stream create NAME --shards N [--on-demand]`.
pub async fn create(
    endpoint: &str,
    name: &str,
    shards: Option<u32>,
    on_demand: bool,
    format: Format,
) -> anyhow::Result<()> {
    let mut input = json!({ "StreamName": name });
    if let Some(shards) = shards {
        input["ShardCount"] = json!(shards);
    }
    input["StreamModeDetails"] =
        json!({ "StreamMode": if on_demand { "ON_DEMAND" } else { "PROVISIONED" } });
    let answer = call(endpoint, "CreateStream", &input).await?;
    match format {
        Format::Json => print_json(&answer),
        Format::Table => {
            crate::outln!("created stream {name}");
            Ok(())
        }
    }
}

/// `stream list`.
pub async fn list(endpoint: &str, format: Format) -> anyhow::Result<()> {
    let mut summaries = Vec::new();
    let mut input = json!({});
    loop {
        let page = call(endpoint, "ListStreams", &input).await?;
        summaries.extend(
            page["StreamSummaries"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        match page["NextToken"].as_str() {
            Some(token) if page["HasMoreStreams"].as_bool() == Some(true) => {
                input = json!({ "NextToken": token })
            }
            _ => break,
        }
    }
    if format == Format::Json {
        return print_json(&json!({ "StreamSummaries": summaries }));
    }
    let mut rows = Vec::new();
    for summary in &summaries {
        let name = summary["StreamName"].as_str().unwrap_or_default();
        let described = call(
            endpoint,
            "DescribeStreamSummary",
            &json!({ "StreamName": name }),
        )
        .await?;
        let detail = &described["StreamDescriptionSummary"];
        rows.push(vec![
            name.to_owned(),
            text(&detail["StreamStatus"]),
            text(&detail["StreamModeDetails"]["StreamMode"]),
            text(&detail["OpenShardCount"]),
            format!("{} h", text(&detail["RetentionPeriodHours"])),
        ]);
    }
    crate::out!(
        "{}",
        table(
            &["STREAM", "STATUS", "MODE", "OPEN SHARDS", "RETENTION"],
            &rows
        )
    );
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn shard_number(id: &str) -> String {
    id.rsplit('-')
        .next()
        .and_then(|digits| digits.parse::<u64>().ok())
        .map_or_else(|| id.to_owned(), |number| number.to_string())
}

fn percent(key: u128) -> f64 {
    key as f64 / u128::MAX as f64 * 100.0
}

/// The key-space bar: each open shard's part of `[0, 2^128)` filled with its symbol.
fn key_space_bar(open: &[(String, u128, u128)]) -> String {
    const SYMBOLS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bar = vec![b'.'; BAR_WIDTH];
    let mut legend = Vec::new();
    for (position, (id, start, end)) in open.iter().enumerate() {
        let symbol = SYMBOLS[position % SYMBOLS.len()];
        let from = ((*start as f64 / u128::MAX as f64) * BAR_WIDTH as f64).floor() as usize;
        let to =
            (((*end as f64 / u128::MAX as f64) * BAR_WIDTH as f64).ceil() as usize).max(from + 1);
        for cell in bar
            .iter_mut()
            .take(to.min(BAR_WIDTH))
            .skip(from.min(BAR_WIDTH - 1))
        {
            *cell = symbol;
        }
        legend.push(format!("{}={id}", symbol as char));
    }
    let mut out = String::new();
    let _ = writeln!(out, "key space (open shards), 0 .. 2^128-1:");
    let _ = writeln!(out, "|{}|", String::from_utf8_lossy(&bar));
    let _ = writeln!(out, " {}", legend.join("  "));
    out
}

/// `stream describe NAME`.
pub async fn describe(endpoint: &str, name: &str, format: Format) -> anyhow::Result<()> {
    let summary = call(
        endpoint,
        "DescribeStreamSummary",
        &json!({ "StreamName": name }),
    )
    .await?;
    let mut shards = Vec::new();
    let mut input = json!({ "StreamName": name });
    loop {
        let page = call(endpoint, "ListShards", &input).await?;
        shards.extend(page["Shards"].as_array().cloned().unwrap_or_default());
        match page["NextToken"].as_str() {
            Some(token) => input = json!({ "NextToken": token }),
            None => break,
        }
    }
    let tags = call(
        endpoint,
        "ListTagsForStream",
        &json!({ "StreamName": name }),
    )
    .await?;
    // A server without the storage endpoint (or a failure there) still gets the layout.
    let storage = match storage(endpoint, name).await {
        Ok(storage) => storage,
        Err(error) => {
            eprintln!("warning: no storage figures: {error:#}");
            Value::Null
        }
    };
    if format == Format::Json {
        return print_json(&json!({
            "StreamDescriptionSummary": summary["StreamDescriptionSummary"],
            "Shards": shards,
            "Tags": tags["Tags"],
            "Storage": storage,
        }));
    }
    let detail = &summary["StreamDescriptionSummary"];
    crate::outln!(
        "stream {name}  {}  {}  retention {} h  {} shards ({} open)",
        text(&detail["StreamStatus"]),
        text(&detail["StreamModeDetails"]["StreamMode"]),
        text(&detail["RetentionPeriodHours"]),
        shards.len(),
        text(&detail["OpenShardCount"]),
    );
    crate::outln!("arn {}", text(&detail["StreamARN"]));
    if let Some(tags) = tags["Tags"].as_array().filter(|tags| !tags.is_empty()) {
        let pairs: Vec<String> = tags
            .iter()
            .map(|tag| format!("{}={}", text(&tag["Key"]), text(&tag["Value"])))
            .collect();
        crate::outln!("tags {}", pairs.join(" "));
    }
    crate::outln!();
    let mut rows = Vec::new();
    let mut open = Vec::new();
    for shard in &shards {
        let id = text(&shard["ShardId"]);
        let start: u128 = text(&shard["HashKeyRange"]["StartingHashKey"])
            .parse()
            .unwrap_or(0);
        let end: u128 = text(&shard["HashKeyRange"]["EndingHashKey"])
            .parse()
            .unwrap_or(0);
        let closed = shard["SequenceNumberRange"]["EndingSequenceNumber"].is_string();
        let parents: Vec<String> = [&shard["ParentShardId"], &shard["AdjacentParentShardId"]]
            .into_iter()
            .filter_map(Value::as_str)
            .map(shard_number)
            .collect();
        rows.push(vec![
            id.clone(),
            shard_number(&id),
            if closed { "closed" } else { "open" }.to_owned(),
            if parents.is_empty() {
                "-".to_owned()
            } else {
                parents.join("+")
            },
            format!("{:5.1}% .. {:5.1}%", percent(start), percent(end)),
            start.to_string(),
            end.to_string(),
        ]);
        if !closed {
            open.push((id, start, end));
        }
    }
    let headers = [
        "SHARD",
        "PARTITION",
        "STATE",
        "PARENTS",
        "KEY SPACE",
        "STARTING HASH KEY",
        "ENDING HASH KEY",
    ];
    crate::out!("{}", table(&headers, &rows));
    crate::outln!();
    open.sort_by_key(|(_, start, _)| *start);
    crate::out!("{}", key_space_bar(&open));
    if !storage.is_null() {
        crate::outln!();
        crate::out!("{}", storage_table(&storage));
    }
    Ok(())
}

/// `stream split NAME SHARD [--at KEY]`: at the middle of the shard's range by default.
pub async fn split(
    endpoint: &str,
    name: &str,
    shard: &str,
    at: Option<String>,
    format: Format,
) -> anyhow::Result<()> {
    let shard_id = normalise_shard(shard);
    let key = match at {
        Some(key) => key,
        None => {
            let listed = call(endpoint, "ListShards", &json!({ "StreamName": name })).await?;
            let found = listed["Shards"]
                .as_array()
                .and_then(|shards| {
                    shards
                        .iter()
                        .find(|candidate| candidate["ShardId"] == json!(shard_id))
                })
                .with_context(|| format!("stream {name} has no shard {shard_id}"))?;
            let start: u128 = text(&found["HashKeyRange"]["StartingHashKey"]).parse()?;
            let end: u128 = text(&found["HashKeyRange"]["EndingHashKey"]).parse()?;
            shardline_core::reshard::midpoint(shardline_core::HashKeyRange { start, end })
                .with_context(|| format!("shard {shard_id} is too small to split"))?
                .to_string()
        }
    };
    let answer = call(
        endpoint,
        "SplitShard",
        &json!({ "StreamName": name, "ShardToSplit": shard_id, "NewStartingHashKey": key }),
    )
    .await?;
    finish(
        endpoint,
        name,
        format,
        &answer,
        &format!("split {shard_id} at hash key {key}"),
    )
    .await
}

/// `stream merge NAME SHARD ADJACENT`.
pub async fn merge(
    endpoint: &str,
    name: &str,
    shard: &str,
    adjacent: &str,
    format: Format,
) -> anyhow::Result<()> {
    let (shard, adjacent) = (normalise_shard(shard), normalise_shard(adjacent));
    let answer = call(
        endpoint,
        "MergeShards",
        &json!({ "StreamName": name, "ShardToMerge": shard, "AdjacentShardToMerge": adjacent }),
    )
    .await?;
    finish(
        endpoint,
        name,
        format,
        &answer,
        &format!("merged {shard} and {adjacent}"),
    )
    .await
}

/// `stream scale NAME COUNT`.
pub async fn scale(endpoint: &str, name: &str, count: u32, format: Format) -> anyhow::Result<()> {
    let answer = call(
        endpoint,
        "UpdateShardCount",
        &json!({ "StreamName": name, "TargetShardCount": count, "ScalingType": "UNIFORM_SCALING" }),
    )
    .await?;
    let message = format!(
        "scaled from {} to {} open shards",
        text(&answer["CurrentShardCount"]),
        text(&answer["TargetShardCount"])
    );
    finish(endpoint, name, format, &answer, &message).await
}

/// `stream retention NAME HOURS`: increases or decreases as needed.
pub async fn retention(
    endpoint: &str,
    name: &str,
    hours: u32,
    format: Format,
) -> anyhow::Result<()> {
    let summary = call(
        endpoint,
        "DescribeStreamSummary",
        &json!({ "StreamName": name }),
    )
    .await?;
    let current = summary["StreamDescriptionSummary"]["RetentionPeriodHours"]
        .as_u64()
        .unwrap_or(0);
    let operation = if u64::from(hours) >= current {
        "IncreaseStreamRetentionPeriod"
    } else {
        "DecreaseStreamRetentionPeriod"
    };
    let answer = call(
        endpoint,
        operation,
        &json!({ "StreamName": name, "RetentionPeriodHours": hours }),
    )
    .await?;
    match format {
        Format::Json => print_json(&answer),
        Format::Table => {
            crate::outln!("retention of {name}: {current} h -> {hours} h");
            Ok(())
        }
    }
}

/// `stream delete NAME`.
pub async fn delete(endpoint: &str, name: &str, format: Format) -> anyhow::Result<()> {
    let answer = call(endpoint, "DeleteStream", &json!({ "StreamName": name })).await?;
    match format {
        Format::Json => print_json(&answer),
        Format::Table => {
            crate::outln!("deleted stream {name}");
            Ok(())
        }
    }
}

async fn finish(
    endpoint: &str,
    name: &str,
    format: Format,
    answer: &Value,
    message: &str,
) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(answer),
        Format::Table => {
            crate::outln!("{message}\n");
            describe(endpoint, name, Format::Table).await
        }
    }
}

/// Accepts `shardId-000000000007`, `7` or `000007`.
fn normalise_shard(text: &str) -> String {
    match text.parse::<u32>() {
        Ok(index) => shardline_core::ShardId(index).to_string(),
        Err(_not_a_number) => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_each_open_shard_in_its_part_of_the_key_space() {
        let halves = shardline_core::HashKeyRange::even_split(2);
        let open = vec![
            (
                "shardId-000000000001".to_owned(),
                halves[0].start,
                halves[0].end,
            ),
            (
                "shardId-000000000002".to_owned(),
                halves[1].start,
                halves[1].end,
            ),
        ];
        let bar = key_space_bar(&open);
        let line = bar.lines().nth(1).unwrap();
        assert_eq!(line.len(), BAR_WIDTH + 2);
        assert_eq!(&line[1..33], &"0".repeat(32));
        assert_eq!(&line[33..65], &"1".repeat(32));
        assert!(bar.contains("0=shardId-000000000001"));
    }

    #[test]
    fn shard_ids_can_be_given_as_numbers() {
        assert_eq!(normalise_shard("7"), "shardId-000000000007");
        assert_eq!(
            normalise_shard("shardId-000000000003"),
            "shardId-000000000003"
        );
    }
}
