//! Test harness: a real Berth server started in-process on `127.0.0.1:0` with a temp
//! `BERTH_HOME` and SQLite, and a runner for the real `berth` binary pointed at it.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A server running on its own thread and runtime; stopped (and joined) on drop.
pub struct TestServer {
    pub home: tempfile::TempDir,
    /// Local runs' scratch and assets (outside `home`, as `berth serve` requires).
    pub runs: tempfile::TempDir,
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let home = tempfile::tempdir().unwrap();
        let runs = tempfile::tempdir().unwrap();
        let config = berth_server::ServerConfig {
            database_url: format!("sqlite://{}", home.path().join("berth.db").display()),
            berth_home: home.path().to_path_buf(),
            master_key_hex: None,
            workspace_roots: Vec::new(),
            runs_root: Some(runs.path().to_path_buf()),
            ..Default::default()
        };
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
                berth_server::launch_with_listener(config, listener, async move {
                    let _ = rx.await;
                })
                .await
                .map_err(|e| e.to_string())
            })
        });
        let mut server = TestServer {
            home,
            runs,
            url: format!("http://{addr}"),
            shutdown: Some(tx),
            thread: Some(thread),
        };
        server.wait_healthy(addr);
        server
    }

    fn wait_healthy(&mut self, addr: std::net::SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = http_status(addr, "/api/health")
                && status == 200
            {
                return;
            }
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = self.thread.take().map(|t| t.join());
                panic!("the test server exited before becoming healthy: {result:?}");
            }
            if Instant::now() > deadline {
                panic!(
                    "the test server at {} did not answer GET /api/health with 200 within 20 s",
                    self.url
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A `berth` command pointed at this server.
    pub fn berth(&self) -> Berth {
        Berth::new(&self.url, self.home.path())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The status code of a plain HTTP/1.1 GET, or `None` when there is no answer (yet).
fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A free loopback port with nothing listening on it.
pub fn dead_server_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A builder for one run of the real binary, isolated from the user's environment.
pub struct Berth {
    command: Command,
    stdin: Option<String>,
}

impl Berth {
    pub fn new(server: &str, home: &Path) -> Berth {
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        for (key, _) in std::env::vars_os() {
            if let Some(key) = key.to_str()
                && (key.starts_with("BERTH_") || key == "RUST_LOG")
            {
                command.env_remove(key);
            }
        }
        command
            .env("BERTH_HOME", home)
            .env("BERTH_SERVER", server)
            .env("BERTH_TIMEOUT", "20")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        Berth {
            command,
            stdin: None,
        }
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Berth {
        self.command.env(key, value);
        self
    }

    pub fn stdin(mut self, text: &str) -> Berth {
        self.stdin = Some(text.to_string());
        self
    }

    pub fn run<I, S>(mut self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        let output: Output = if let Some(input) = self.stdin.take() {
            self.command.stdin(Stdio::piped());
            self.command.stdout(Stdio::piped());
            self.command.stderr(Stdio::piped());
            let mut child = self.command.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        } else {
            self.command.output().unwrap()
        };
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Assert the exit code, showing the output when it differs.
    #[track_caller]
    pub fn code(self, expected: i32) -> Run {
        assert_eq!(
            self.code, expected,
            "expected exit code {expected}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        self.code(0)
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n--- stderr\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// A fresh unencrypted ed25519 private key (OpenSSH format) written to `dir/name`.
pub fn private_key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        panic!("ssh-keygen is needed to make a test key (Debian package openssh-client)");
    }
    path
}

/// The base64 lines of a key file, to check none of them ever appears in output.
pub fn key_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

/// `berth serve` on a random loopback port with `home` as `BERTH_HOME`; returns the process
/// and the URL it logged.
pub fn spawn_serve(home: &std::path::Path) -> (std::process::Child, String) {
    spawn_serve_with(home, &[])
}

/// [`spawn_serve`] with extra environment variables (a PostgreSQL URL, a master key, a TTL).
pub fn spawn_serve_with(
    home: &std::path::Path,
    vars: &[(&str, &str)],
) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
        .env("BERTH_HOME", home)
        .env_remove("BERTH_DATABASE_URL")
        .env_remove("BERTH_LEASE_TTL")
        .envs(vars.iter().copied())
        .env_remove("BERTH_BIND")
        .env_remove("RUST_LOG")
        .env_remove("BERTH_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth serve logged no URL");
        };
        let record: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("--log-format json wrote a non-JSON line ({e}): {line}"));
        if let Some(url) = record["fields"]["message"]
            .as_str()
            .and_then(|m| m.strip_prefix("serving "))
        {
            return (child, url.to_string());
        }
    }
}

/// Pids of live processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
        .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}
