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

#[test]
fn serve_logs_its_url_answers_and_stops_on_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
        .env("BERTH_HOME", home.path().join("home"))
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
    let url = loop {
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                panic!("berth serve logged no URL: {e}");
            }
        };
        let record: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("--log-format json wrote a non-JSON line ({e}): {line}"));
        let message = record["fields"]["message"].as_str().unwrap_or_default();
        if let Some(url) = message.strip_prefix("serving ") {
            break url.to_string();
        }
    };
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
