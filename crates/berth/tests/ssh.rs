//! `env probe` and `env trust` against a real OpenSSH sshd (berth-testkit's fixture). Skipped
//! with a loud message when sshd is missing, except under `CI=true`, where that fails.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on any problem"
)]

mod support;

use berth_testkit::sshd::Sshd;
use support::TestServer;

#[test]
fn probe_then_trust_on_first_use_with_consent() {
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, &sshd.client_private_key).unwrap();
    let port = sshd.port.to_string();
    let workspace = sshd.workspace.to_str().unwrap().to_string();
    server
        .berth()
        .run([
            "env",
            "create",
            "--name",
            "lab",
            "--driver",
            "ssh",
            "--host",
            &sshd.host,
            "--port",
            &port,
            "--username",
            &sshd.username,
            "--remote-workspace-path",
            &workspace,
            "--private-key-file",
            key.to_str().unwrap(),
            // Pin something else, so the host's real key is not trusted yet.
            "--strict-host-key-checking",
            "true",
        ])
        .ok();

    // An unpinned key under strict checking: the probe fails (8) and shows the fingerprint.
    let run = server.berth().run(["env", "probe", "lab"]).code(8);
    eprintln!("--- probe output\n{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("SHA256:"), "{}", run.stdout);
    let probe = server
        .berth()
        .run(["env", "probe", "lab", "--json"])
        .code(8)
        .json();
    assert_eq!(probe["ok"], false);

    // No terminal and no confirmation: refused as a usage error, nothing pinned.
    let run = server.berth().run(["env", "trust", "lab"]).code(2);
    assert!(run.stderr.contains("--fingerprint"), "{}", run.stderr);

    // A fingerprint that is not the presented one is refused.
    server
        .berth()
        .run([
            "env",
            "trust",
            "lab",
            "--fingerprint",
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ])
        .code(8);

    // Consent given: the key is pinned and the probe passes.
    let run = server.berth().run(["env", "trust", "lab", "--yes"]).ok();
    assert!(
        run.stdout.contains("trusted host key SHA256:"),
        "{}",
        run.stdout
    );
    let env = server
        .berth()
        .run(["env", "show", "lab", "--json"])
        .ok()
        .json();
    assert!(
        env["config"]["knownHosts"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "{env}"
    );
    let run = server.berth().run(["env", "probe", "lab"]).ok();
    eprintln!("--- probe output after trust\n{}", run.stdout);
}

#[test]
fn probe_an_unsaved_config_with_pinned_known_hosts() {
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, &sshd.client_private_key).unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, &sshd.known_hosts).unwrap();
    let port = sshd.port.to_string();
    let workspace = sshd.workspace.to_str().unwrap().to_string();
    let run = server
        .berth()
        .run([
            "env",
            "probe",
            "--driver",
            "ssh",
            "--host",
            &sshd.host,
            "--port",
            &port,
            "--username",
            &sshd.username,
            "--remote-workspace-path",
            &workspace,
            "--private-key-file",
            key.to_str().unwrap(),
            "--known-hosts-file",
            known_hosts.to_str().unwrap(),
            "--json",
        ])
        .ok();
    let result = run.json();
    assert_eq!(result["ok"], true, "{result}");
    for line in sshd.client_private_key.lines().filter(|l| l.len() > 16) {
        assert!(!run.stdout.contains(line), "private key material leaked");
    }
    // Nothing was saved.
    let list = server.berth().run(["env", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "only Local: {list}");
}

/// Run `berth ARGS` on a pseudo-terminal (util-linux `script`), typing `input`.
fn on_a_terminal(server: &TestServer, args: &str, input: &str) -> (i32, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let quoted_bin = format!("'{}'", env!("CARGO_BIN_EXE_berth").replace('\'', r"'\''"));
    let mut child = Command::new("script")
        .args(["-qec", &format!("{quoted_bin} {args}"), "/dev/null"])
        .env("BERTH_HOME", server.home.path())
        .env("BERTH_SERVER", &server.url)
        .env("NO_COLOR", "1")
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_COMPANY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` provides the pseudo-terminal");
    // Let the prompt appear before answering, as a person would.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn trust_asks_on_a_terminal_and_pins_only_on_yes() {
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, &sshd.client_private_key).unwrap();
    let port = sshd.port.to_string();
    let workspace = sshd.workspace.to_str().unwrap().to_string();
    server
        .berth()
        .run([
            "env",
            "create",
            "--name",
            "tty",
            "--driver",
            "ssh",
            "--host",
            &sshd.host,
            "--port",
            &port,
            "--username",
            &sshd.username,
            "--remote-workspace-path",
            &workspace,
            "--private-key-file",
            key.to_str().unwrap(),
        ])
        .ok();

    let (code, text) = on_a_terminal(&server, "env trust tty", "n\n");
    assert!(text.contains("Trust this key"), "{text}");
    assert!(text.contains("SHA256:"), "{text}");
    assert_eq!(code, 1, "declining is a failure: {text}");
    server.berth().run(["env", "probe", "tty"]).code(8);

    let (code, text) = on_a_terminal(&server, "env trust tty", "y\n");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("trusted host key SHA256:"), "{text}");
    server.berth().run(["env", "probe", "tty"]).ok();
}
