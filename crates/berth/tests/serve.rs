//! `berth serve` as a real process: it logs its URL, answers, and exits 0 on SIGTERM.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on any problem"
)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::Berth;

/// `berth serve` on a random loopback port with `home` as `BERTH_HOME`; returns the process
/// and the URL it logged.
fn spawn_serve(home: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
        .env("BERTH_HOME", home)
        .env_remove("BERTH_DATABASE_URL")
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
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
fn pids_with(marker: &str) -> Vec<String> {
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

/// A server killed mid-run (SIGKILL) leaves the run `running`; the next start of the same
/// `BERTH_HOME` marks it failed (`lease_lost`) instead of showing it running forever.
#[test]
fn a_run_left_running_by_a_killed_server_fails_at_the_next_start() {
    let home = tempfile::tempdir().unwrap();
    let berth_home = home.path().join("home");
    let (mut first, url) = spawn_serve(&berth_home);
    let marker = format!("berth-orphan-{}", std::process::id());
    let config =
        serde_json::json!({"command": "sh", "args": ["-c", format!("sleep 120 # {marker}")]});
    Berth::new(&url, home.path())
        .run([
            "agent",
            "create",
            "--name",
            "sleeper",
            "--adapter-type",
            "process",
            "--adapter-config",
            &config.to_string(),
        ])
        .ok();
    let run = Berth::new(&url, home.path())
        .run(["run", "--agent", "sleeper", "--prompt", "sleep", "--json"])
        .ok()
        .json();
    let id = run["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pids_with(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, url) = spawn_serve(&berth_home);
    let shown = Berth::new(&url, home.path())
        .run(["runs", "show", &id, "--json"])
        .ok()
        .json();
    // The agent detached from the dead server; the reaper stops it when the lease expires.
    for pid in pids_with(&marker) {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(shown["status"], "failed", "{shown}");
    assert_eq!(shown["errorCode"], "lease_lost", "{shown}");
    assert!(
        shown["errorMessage"]
            .as_str()
            .unwrap()
            .contains("control plane stopped"),
        "{shown}"
    );
}

#[test]
fn serve_logs_its_url_answers_and_stops_on_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_serve(&home.path().join("home"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(home.path().join("home").is_dir(), "BERTH_HOME is created");

    let health = Berth::new(&url, home.path())
        .run(["doctor", "--json"])
        .json();
    assert!(
        health["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "server" && c["level"] != "error"),
        "{health}"
    );

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "berth serve exited with {status} on SIGTERM"
            );
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth serve did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
