//! Dev-only helpers for Shardline's tests: start the real server on `127.0.0.1:0`
//! in-process ([`TestServer`]) or as a child process that can be killed with SIGKILL
//! ([`ServerProcess`]), and speak raw Kafka frames ([`RawClient`]).
//!
//! Servers bind loopback ephemeral ports only and stop by themselves: an in-process
//! server dies with its test's runtime, a child process is killed when its handle drops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use shardline::config::ServeConfig;
use shardline::server::RunningServer;
use tempfile::TempDir;

/// Sends the server's logs to the test's output (shown when a test fails), at the level
/// `RUST_LOG` names (default `warn`). Safe to call any number of times.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_unset| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// A data directory that outlives server restarts within one test.
pub type DataDir = Arc<TempDir>;

/// A fresh temporary data directory.
pub fn data_dir() -> DataDir {
    Arc::new(tempfile::tempdir().expect("creating a temporary data directory"))
}

/// A config bound to ephemeral loopback ports and rooted at `dir`.
pub fn test_config(dir: &Path) -> ServeConfig {
    let mut config = ServeConfig {
        data_dir: dir.to_path_buf(),
        ..ServeConfig::default()
    };
    config.kafka.listen = "127.0.0.1:0".to_owned();
    config.http.listen = "127.0.0.1:0".to_owned();
    config.shutdown.grace_ms = 2_000;
    // Tests drive far more than Kinesis' 1 MiB/s and 1,000 records/s per shard; the
    // limits have tests of their own, which set capacity.mode per topic.
    config.streams.capacity_mode = "unlimited".to_owned();
    config
}

/// The real server, running inside the test's tokio runtime.
#[derive(Debug)]
pub struct TestServer {
    /// Kafka listener.
    pub kafka_addr: SocketAddr,
    /// HTTP listener.
    pub http_addr: SocketAddr,
    /// Where the data lives; pass it to [`TestServer::start_in`] to restart on it.
    pub data_dir: DataDir,
    server: Option<RunningServer>,
}

impl TestServer {
    /// Starts on a fresh data directory with default settings.
    pub async fn start() -> TestServer {
        TestServer::start_in(data_dir(), |_config| {}).await
    }

    /// Starts on `data_dir`, letting `configure` adjust the settings first.
    pub async fn start_in(
        data_dir: DataDir,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestServer {
        init_logging();
        let mut config = test_config(data_dir.path());
        configure(&mut config);
        let validated = config.validate().expect("test config is valid");
        let server = RunningServer::start(validated)
            .await
            .expect("test server starts");
        TestServer {
            kafka_addr: server.kafka_addr,
            http_addr: server.http_addr,
            data_dir,
            server: Some(server),
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.kafka_addr.to_string()
    }

    /// The engine behind the server.
    pub fn broker(&self) -> &shardline_broker_reexport::Broker {
        self.server.as_ref().expect("server is running").broker()
    }

    /// Graceful shutdown; returns the data directory for a restart.
    pub async fn stop(mut self) -> DataDir {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("graceful shutdown");
        }
        Arc::clone(&self.data_dir)
    }
}

/// Re-exported so tests need no direct dependency on the broker crate.
pub mod shardline_broker_reexport {
    pub use shardline::server::BrokerHandle as Broker;
}

pub use shardline::server::CommittedOffset;

/// Path of the `shardline` binary: `$SHARDLINE_BIN`, else next to the test executable's
/// directory (`target/<profile>/shardline`), which `cargo test --workspace` builds.
pub fn shardline_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("SHARDLINE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target/<profile> directory")?;
    let candidate = profile_dir.join("shardline");
    if !candidate.exists() {
        bail!(
            "{} does not exist: build it first (`cargo build -p shardline`) or set SHARDLINE_BIN",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// The server as a child process, for tests that must kill it with SIGKILL.
#[derive(Debug)]
pub struct ServerProcess {
    /// Kafka listener.
    pub kafka_addr: SocketAddr,
    /// HTTP listener.
    pub http_addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// Starts `shardline serve` on `data_dir` with ephemeral loopback ports and `extra`
    /// arguments, and waits for its "listening" line.
    pub fn spawn(data_dir: &Path, extra: &[&str]) -> anyhow::Result<ServerProcess> {
        ServerProcess::spawn_with_env(data_dir, extra, &[])
    }

    /// As [`ServerProcess::spawn`], with extra environment variables (e.g. `AWS_*` for an
    /// object store).
    pub fn spawn_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<ServerProcess> {
        ServerProcess::spawn_under(&[], data_dir, extra, env)
    }

    /// As [`ServerProcess::spawn_with_env`], run through `wrapper` (a program and its
    /// arguments, to which the server's command line is appended), e.g. `unshare` and a
    /// shell script that mounts a small file system first. Empty: run directly.
    pub fn spawn_under(
        wrapper: &[&str],
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<ServerProcess> {
        let binary = shardline_binary()?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let mut child = command
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_unset| "warn".to_owned()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning shardline")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the listening line")?;
        let parse = |key: &str| -> anyhow::Result<SocketAddr> {
            let value = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix(key))
                .with_context(|| format!("no {key} in {line:?}"))?;
            value
                .parse()
                .with_context(|| format!("bad address in {line:?}"))
        };
        let kafka_addr = match parse("kafka=") {
            Ok(addr) => addr,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(error);
            }
        };
        let http_addr = parse("http=")?;
        Ok(ServerProcess {
            kafka_addr,
            http_addr,
            child,
        })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.kafka_addr.to_string()
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit status (the graceful path).
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("server did not exit within 15 s of SIGTERM")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A blocking raw-socket Kafka client for bad-input tests.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    /// Connects with a 10 s read timeout.
    pub fn connect(addr: SocketAddr) -> anyhow::Result<RawClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(RawClient { stream })
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Sends one request: length prefix, v1 request header (key, version, correlation id,
    /// client id "raw"), then `body`.
    pub fn send_request(
        &mut self,
        key: i16,
        version: i16,
        correlation_id: i32,
        body: &[u8],
    ) -> anyhow::Result<()> {
        self.send_raw(&request_frame(key, version, correlation_id, false, body))
    }

    /// Reads one response frame (without its length prefix); `None` if the server closed
    /// the connection.
    pub fn read_frame(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let mut length = [0u8; 4];
        match self.stream.read_exact(&mut length) {
            Ok(()) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        }
        let length = i32::from_be_bytes(length);
        if !(0..=64 * 1024 * 1024).contains(&length) {
            bail!("implausible response length {length}");
        }
        let mut body = vec![0u8; length as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Some(body))
    }

    /// Whether the server has closed the connection: EOF or a reset within the read
    /// timeout. A timeout is not a close (a server ignoring bad input would pass).
    pub fn is_closed_by_server(&mut self) -> bool {
        use std::io::ErrorKind;
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            ),
        }
    }
}

/// Frames a request with a request header: v2 (flexible, with an empty tagged-field
/// section) when `flexible`, else v1.
pub fn request_frame(
    key: i16,
    version: i16,
    correlation_id: i32,
    flexible: bool,
    body: &[u8],
) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&key.to_be_bytes());
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&correlation_id.to_be_bytes());
    let client_id = b"raw";
    payload.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    payload.extend_from_slice(client_id);
    if flexible {
        payload.push(0);
    }
    payload.extend_from_slice(body);
    let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// Runs a third-party client check script (`program args…` in `dir`) with a hard outer
/// timeout, killing it by PID if it overruns, and panics with its output unless it exits
/// 0 having printed at least one `ok <check>` line. `LD_LIBRARY_PATH` is cleared so that
/// clients load their own libraries rather than the librdkafka cargo built.
pub fn run_client_check(name: &str, dir: &Path, program: &Path, args: &[&str], timeout: Duration) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("NODE_NO_WARNINGS", "1")
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
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the check") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: no result within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child
        .wait_with_output()
        .expect("collecting the check's output");
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

/// An S3 HTTP endpoint served in-process by s3s over s3s-fs (a real S3 protocol server,
/// not a fake), on 127.0.0.1:0; it stops with the test's runtime. [`S3Server::stop`] and
/// [`S3Server::restart`] simulate an outage on the same address and data.
#[derive(Debug)]
pub struct S3Server {
    /// Where objects live: one sub-directory per bucket.
    pub root: TempDir,
    /// The endpoint's address.
    pub addr: SocketAddr,
    serving: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl S3Server {
    /// Access key the endpoint accepts.
    pub const ACCESS_KEY: &'static str = "test";
    /// Secret key the endpoint accepts.
    pub const SECRET_KEY: &'static str = "testtesttest";

    /// Starts the endpoint with an empty `bucket`, its objects in a temporary directory.
    pub async fn start(bucket: &str) -> S3Server {
        Self::start_in(&std::env::temp_dir(), bucket).await
    }

    /// As [`S3Server::start`], with the objects in a new directory under `parent` (a
    /// benchmark keeps them on the disk it measures).
    pub async fn start_in(parent: &Path, bucket: &str) -> S3Server {
        let root = tempfile::tempdir_in(parent).expect("s3 root");
        std::fs::create_dir(root.path().join(bucket)).expect("bucket directory");
        let listener = Self::listen("127.0.0.1:0".parse().expect("address"));
        let addr = listener.local_addr().expect("s3 address");
        let serving = Self::serve(root.path(), listener);
        S3Server {
            root,
            addr,
            serving: std::sync::Mutex::new(Some(serving)),
        }
    }

    fn listen(addr: SocketAddr) -> tokio::net::TcpListener {
        // SO_REUSEADDR: after an outage the same port must be bindable again at once.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket.bind(addr).expect("bind s3");
        socket.listen(128).expect("listen s3")
    }

    fn serve(root: &Path, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let fs = s3s_fs::FileSystem::new(root).unwrap_or_else(|error| panic!("s3s-fs: {error:?}"));
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            Self::ACCESS_KEY,
            Self::SECRET_KEY,
        ));
        let service = builder.build();
        tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Connections live in this set, so stopping the endpoint cuts them too.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                // As any real S3 front end does: without it, Nagle's algorithm and delayed
                // ACKs stall each small response by ~40 ms on loopback.
                let _ = socket.set_nodelay(true);
                let connection = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                connections.spawn(async move {
                    let _ = connection.await;
                });
            }
        })
    }

    /// Stops answering: the listener closes and open connections are cut.
    pub fn stop(&self) {
        if let Some(serving) = self.serving.lock().expect("s3 state").take() {
            serving.abort();
        }
    }

    /// Serves again on the same address with the same data.
    pub fn restart(&self) {
        let listener = Self::listen(self.addr);
        *self.serving.lock().expect("s3 state") = Some(Self::serve(self.root.path(), listener));
    }

    /// The AWS environment a server process needs to reach this endpoint.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", format!("http://{}", self.addr)),
            ("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// Points a server config's `[tier]` at this endpoint, under `bucket/prefix`.
    pub fn configure(&self, config: &mut ServeConfig, bucket: &str, prefix: &str) {
        config.tier.enabled = true;
        config.tier.url = format!("s3://{bucket}/{prefix}");
        config.tier.endpoint = Some(format!("http://{}", self.addr));
        config.tier.region = Some("us-east-1".to_owned());
        config.tier.access_key_id = Some(Self::ACCESS_KEY.to_owned());
        config.tier.secret_access_key = Some(Self::SECRET_KEY.to_owned());
        config.tier.allow_http = Some(true);
    }

    /// Files the endpoint stores under `bucket/prefix` whose names end in `suffix`.
    pub fn objects(&self, bucket: &str, prefix: &str, suffix: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, suffix: &str, found: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, suffix, found);
                } else if path.to_string_lossy().ends_with(suffix) {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &self.root.path().join(bucket).join(prefix),
            suffix,
            &mut found,
        );
        found
    }
}
