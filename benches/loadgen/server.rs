//! The spawned server.

use super::*;

/// A `shardline serve` child process on a temporary data dir. Dropping it stops the server
/// (SIGTERM, then SIGKILL if it does not exit) and then removes the data dir.
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) kafka_addr: String,
    pub(crate) http_addr: String,
    pub(crate) stopped: Option<(ExitStatus, Duration)>,
    pub(crate) stderr_tail: Arc<Mutex<VecDeque<String>>>,
    // Declared last: dropped (deleted) after the process is gone.
    pub(crate) data_dir: tempfile::TempDir,
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("pid", &self.pid)
            .field("kafka_addr", &self.kafka_addr)
            .finish_non_exhaustive()
    }
}

impl ServerProcess {
    pub(crate) fn start(
        binary: &Path,
        data_root: &Path,
        extra_args: &[OsString],
    ) -> anyhow::Result<ServerProcess> {
        let data_dir = tempfile::Builder::new()
            .prefix("server-")
            .tempdir_in(data_root)
            .with_context(|| format!("creating a data dir under {}", data_root.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: Ctrl-C reaches only us, and we stop the server cleanly.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let mut server = ServerProcess {
            pid: child.id(),
            child,
            kafka_addr: String::new(),
            http_addr: String::new(),
            stopped: None,
            stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
            data_dir,
        };
        // From here on, `server` going out of scope stops the process.
        let tail = Arc::clone(&server.stderr_tail);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") || line.contains("panicked") {
                    eprintln!("[server] {line}");
                }
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = line_tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let first = match line_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => bail!(
                "the server exited before announcing its ports; its stderr ended with:\n{}",
                server.stderr_text()
            ),
            Err(_) => bail!("no `shardline listening` line from the server within 30 s"),
        };
        let field = |name: &str| {
            first
                .split_whitespace()
                .find_map(|word| word.strip_prefix(name))
                .map(str::to_string)
        };
        match (field("kafka="), field("http=")) {
            (Some(kafka), Some(http)) if first.starts_with("shardline listening") => {
                server.kafka_addr = kafka;
                server.http_addr = http;
            }
            _ => bail!("unexpected first line from the server: {first:?}"),
        }
        Ok(server)
    }

    pub(crate) fn stderr_text(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, wait up to 30 s for a clean exit, then SIGKILL. Idempotent.
    pub(crate) fn stop(&mut self) -> Option<(ExitStatus, Duration)> {
        if self.stopped.is_some() {
            return self.stopped;
        }
        let start = Instant::now();
        if let Ok(Some(status)) = self.child.try_wait() {
            self.stopped = Some((status, Duration::ZERO));
            return self.stopped;
        }
        // No `unsafe` libc::kill in this workspace: kill(1) sends the signal by PID.
        let signalled = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        let deadline = start + Duration::from_secs(30);
        while signalled && Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.stopped = Some((status, start.elapsed()));
                    return self.stopped;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        eprintln!("server {} did not exit after SIGTERM; killing it", self.pid);
        let _ = self.child.kill();
        self.stopped = self
            .child
            .wait()
            .ok()
            .map(|status| (status, start.elapsed()));
        self.stopped
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
