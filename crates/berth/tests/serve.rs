//! `berth serve` as a real process: it logs its URL, answers, and exits 0 on SIGTERM.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on any problem"
)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Berth, spawn_serve};

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
