//! Interop with independent Kafka clients over real sockets: kafka-python, kafkajs and
//! Debian's kcat (librdkafka 2.0.2, the old exact-version ApiVersions checks). The
//! clients are installed by `scripts/install-test-deps.sh`, which the README's test
//! command runs first; a missing client fails the test with that instruction rather than
//! skipping silently. Each script prints `ok <check>` lines and exits non-zero on the
//! first failure (see tests/interop/README.md).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardline_testkit::TestServer;

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Runs `program args…` with a hard outer timeout, killing it by PID if it overruns, and
/// fails the test with its output on a non-zero exit.
fn run_check(name: &str, program: &Path, args: &[&str], timeout: Duration) {
    assert!(
        program.exists() || program.components().count() == 1,
        "{name}: {} is missing; run `bash scripts/install-test-deps.sh` first",
        program.display()
    );
    let mut child = Command::new(program)
        .args(args)
        .current_dir(interop_dir())
        .env("NODE_NO_WARNINGS", "1")
        // cargo points LD_LIBRARY_PATH at the librdkafka that rdkafka-sys built; kcat must
        // load its own (Debian's 2.0.2) to exercise the old exact-version checks.
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "{name}: could not start {} ({error}); run `bash scripts/install-test-deps.sh`",
                program.display()
            )
        });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: no result within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "--- {name} ({:.1} s)\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "{name} failed with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.lines().any(|line| line.starts_with("ok ")),
        "{name} ran no check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_produces_and_consumes_with_every_codec() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    tokio::task::spawn_blocking(move || {
        let python = interop_dir().join(".venv/bin/python");
        run_check(
            "kafka-python",
            &python,
            &[
                "kafka_python_check.py",
                "--bootstrap",
                &bootstrap,
                "--topic-prefix",
                "kpy",
            ],
            Duration::from_secs(120),
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_admin_and_idempotent_producer_work() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    tokio::task::spawn_blocking(move || {
        assert!(
            interop_dir().join("node_modules/kafkajs").exists(),
            "kafkajs is not installed; run `bash scripts/install-test-deps.sh` first"
        );
        run_check(
            "kafkajs",
            Path::new("node"),
            &[
                "kafkajs_check.js",
                "--bootstrap",
                &bootstrap,
                "--topic-prefix",
                "kjs",
            ],
            Duration::from_secs(120),
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_kcat_on_librdkafka_2_0_2_lists_produces_and_consumes() {
    let server = TestServer::start().await;
    server
        .broker()
        .create_stream("kcat-kcat", 1, Default::default(), false)
        .await
        .unwrap();
    let bootstrap = server.bootstrap();
    tokio::task::spawn_blocking(move || {
        let script = interop_dir().join("kcat_check.sh");
        run_check(
            "kcat",
            Path::new("bash"),
            &[script.to_str().unwrap(), &bootstrap, "kcat"],
            Duration::from_secs(120),
        );
    })
    .await
    .unwrap();
    server.stop().await;
}
