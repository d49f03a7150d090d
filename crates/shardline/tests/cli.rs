//! The `shardline` binary as a user runs it: bad configuration is refused at start with a
//! message naming the problem, and SIGTERM shuts down cleanly with exit status 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn shardline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardline"))
}

/// Runs `serve` with a config file holding `toml` (listeners on port 0 unless the file
/// sets them), expecting it to refuse to start; returns its stderr.
fn refused(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let listeners = if toml.contains("listen") {
        ""
    } else {
        "[kafka]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n"
    };
    std::fs::write(&path, format!("{toml}\n{listeners}")).unwrap();
    let mut child = shardline()
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("config {toml:?} was accepted: the server started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "config {toml:?} was accepted");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn invalid_configs_are_refused_with_a_clear_message() {
    let stderr = refused("no_such_key = 1\n");
    assert!(stderr.contains("no_such_key"), "{stderr}");
    let stderr = refused("[streams]\nretention_hours = 12");
    assert!(stderr.contains("retention_hours"), "{stderr}");
    let stderr = refused("[storage]\nflush = \"sometimes\"");
    assert!(stderr.contains("storage.flush"), "{stderr}");
    let stderr =
        refused("[kafka]\nlisten = \"not an address\"\n[http]\nlisten = \"127.0.0.1:0\"\n");
    assert!(stderr.contains("kafka.listen"), "{stderr}");
    let stderr = refused("data_dir = [1, 2]\n");
    assert!(stderr.contains("config file"), "{stderr}");
}

#[test]
fn sigterm_shuts_down_cleanly_with_status_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = shardline()
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("shardline listening kafka=127.0.0.1:"),
        "{line}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");
}

#[test]
fn a_port_in_use_is_reported_by_name() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = shardline()
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &address, "--http-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("binding the Kafka listener"), "{stderr}");
}

/// Starts `shardline serve` on ephemeral ports; returns the child and the HTTP address.
fn serve(dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = shardline()
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let http = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http="))
        .unwrap()
        .to_owned();
    (child, format!("http://{http}"))
}

/// One HTTP/1.1 request with `Connection: close`; the whole response as text.
fn http_get(endpoint: &str, method: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let authority = endpoint.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn admin(endpoint: &str, args: &[&str]) -> std::process::Output {
    shardline()
        .args(args)
        .args(["--endpoint", endpoint])
        .output()
        .unwrap()
}

#[test]
fn the_stream_cli_creates_splits_and_describes_through_the_kinesis_api() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, endpoint) = serve(dir.path());
    let created = admin(&endpoint, &["stream", "create", "clicks", "--shards", "2"]);
    assert!(created.status.success(), "{created:?}");
    let split = admin(&endpoint, &["stream", "split", "clicks", "0"]);
    assert!(split.status.success(), "{split:?}");
    let table = String::from_utf8(split.stdout).unwrap();
    assert!(table.contains("key space"), "{table}");
    assert!(table.contains("shardId-000000000003"), "{table}");

    let described = admin(&endpoint, &["stream", "describe", "clicks", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    let shards = json["Shards"].as_array().unwrap();
    assert_eq!(shards.len(), 4);
    assert_eq!(shards[2]["ParentShardId"], "shardId-000000000000");
    // Where the records are: the embedded default tiers to <data_dir>/objects.
    let storage = &json["Storage"];
    assert_eq!(storage["tiering"], true, "{storage}");
    assert_eq!(storage["shards"].as_array().unwrap().len(), 4, "{storage}");
    assert_eq!(storage["shards"][0]["upload_backlog"]["segments"], 0);
    assert_eq!(storage["shards"][0]["remote"]["segments"], 0);
    let described = admin(&endpoint, &["stream", "describe", "clicks"]);
    assert!(described.status.success(), "{described:?}");
    let table = String::from_utf8(described.stdout).unwrap();
    assert!(table.contains("UPLOAD BACKLOG"), "{table}");
    assert!(table.contains("upload backlog 0 segments"), "{table}");

    // The storage endpoint names an unknown stream and answers GET only.
    let unknown = http_get(&endpoint, "GET", "/v1/streams/nope/storage");
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    assert!(unknown.contains("nope"), "{unknown}");
    let put = http_get(&endpoint, "PUT", "/v1/streams/clicks/storage");
    assert!(put.starts_with("HTTP/1.1 404"), "{put}");
    let refused = admin(&endpoint, &["stream", "merge", "clicks", "0", "1"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("InvalidArgumentException"), "{stderr}");

    let listed = admin(&endpoint, &["stream", "list", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(json["StreamSummaries"][0]["StreamName"], "clicks");
    let _ = server.kill();
    let _ = server.wait();
}
