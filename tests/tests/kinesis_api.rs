//! The Kinesis JSON API with boto3 (tests/interop/kinesis_boto3_check.py): streams made
//! through it, described, listed and paged, and AWS's error names for bad requests.

use std::path::Path;
use std::time::Duration;

use shardline_testkit::{TestServer, run_client_check};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_manages_streams_through_the_kinesis_api() {
    let server = TestServer::start().await;
    let endpoint = format!("http://{}", server.http_addr);
    tokio::task::spawn_blocking(move || {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop");
        let python = dir.join(".venv/bin/python");
        assert!(
            python.exists(),
            "run `bash scripts/install-test-deps.sh` first"
        );
        run_client_check(
            "boto3 kinesis",
            &dir,
            &python,
            &[
                "kinesis_boto3_check.py",
                "--endpoint",
                &endpoint,
                "--stream-prefix",
                "kin",
            ],
            Duration::from_secs(120),
        );
    })
    .await
    .unwrap();
    server.stop().await;
}
