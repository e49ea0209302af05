//! Probing and host-key trust against a real OpenSSH sshd on a random loopback port.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

mod common;

use berth_testkit::sshd::Sshd;
use common::TestServer;
use serde_json::{Value, json};

fn sshd() -> Option<Sshd> {
    Sshd::start_unless_unavailable().expect("sshd is required under CI=true")
}

fn codes(body: &Value, level: &str) -> Vec<String> {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["level"] == level)
        .map(|c| c["code"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn trust_on_first_use_pins_the_confirmed_key_and_then_strict_probes_pass() {
    let Some(sshd) = sshd() else { return };
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let ws = sshd.workspace.join("berth");
    let r = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "lab", "driver": "ssh", "config": {
                "host": sshd.host, "port": sshd.port, "username": sshd.username,
                "remoteWorkspacePath": ws, "privateKey": sshd.client_private_key,
                // A known_hosts that does not know this host: strict checking refuses it.
                "knownHosts": "[example.invalid]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
            }}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();

    let probe = s
        .post(&format!("/api/environments/{id}/probe"), json!({}))
        .await;
    assert_eq!(probe.status, 200, "{}", probe.text);
    assert_eq!(probe.body["ok"], false);
    assert_eq!(
        codes(&probe.body, "error"),
        vec!["host_key"],
        "{}",
        probe.text
    );
    let presented = probe.body["details"]["hostKey"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(presented.starts_with("SHA256:"));
    assert!(
        !sshd.log().contains("Accepted publickey"),
        "nothing was sent before the host key was trusted"
    );

    // A fingerprint the host does not present pins nothing.
    let r = s
        .post(
            &format!("/api/environments/{id}/trust-host-key"),
            json!({"fingerprint": "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(
        r.body["details"]["presentedFingerprint"],
        presented.as_str()
    );

    let r = s
        .post(
            &format!("/api/environments/{id}/trust-host-key"),
            json!({"fingerprint": presented}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body["config"]["knownHosts"].as_str().unwrap().contains(
            &sshd
                .host_public_key
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_string()
        )
    );
    assert_eq!(r.body["config"]["strictHostKeyChecking"], true);

    let probe = s
        .post(&format!("/api/environments/{id}/probe"), json!({}))
        .await;
    assert_eq!(probe.body["ok"], true, "{}", probe.text);
    let info: Vec<String> = codes(&probe.body, "info");
    for code in [
        "connect",
        "host_key",
        "auth",
        "os",
        "workspace_path",
        "tool_sh",
        "tool_tar",
        "tool_setsid",
        "tool_sha256sum",
        "disk",
    ] {
        assert!(
            info.contains(&code.to_string()),
            "missing {code}: {}",
            probe.text
        );
    }
    assert!(ws.is_dir(), "the probe created the workspace path");
    assert_eq!(probe.body["details"]["hostKey"]["pinned"], true);
}

#[tokio::test]
async fn probe_fails_cleanly_for_wrong_key_wrong_pin_closed_port_and_unwritable_path() {
    let Some(sshd) = sshd() else { return };
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let url = format!("/api/companies/{c}/environments/probe-config");
    let base = json!({
        "host": sshd.host, "port": sshd.port, "username": sshd.username,
        "remoteWorkspacePath": sshd.workspace, "privateKey": sshd.client_private_key,
        "knownHosts": sshd.known_hosts,
    });

    let r = s.post(&url, json!({"driver": "ssh", "config": base})).await;
    assert_eq!(r.body["ok"], true, "{}", r.text);

    // Wrong client key.
    let other = Sshd::start().unwrap();
    let mut cfg = base.clone();
    cfg["privateKey"] = json!(other.client_private_key);
    let r = s.post(&url, json!({"driver": "ssh", "config": cfg})).await;
    assert_eq!(r.status, 200);
    assert_eq!(codes(&r.body, "error"), vec!["auth"], "{}", r.text);

    // Wrong pinned host key: mismatch error, nothing executed.
    let imposter = sshd.start_with_different_host_key().unwrap();
    let mut cfg = base.clone();
    cfg["port"] = json!(imposter.port);
    cfg["knownHosts"] = json!(
        sshd.known_hosts
            .replace(&format!("]:{}", sshd.port), &format!("]:{}", imposter.port))
    );
    let r = s.post(&url, json!({"driver": "ssh", "config": cfg})).await;
    assert_eq!(codes(&r.body, "error"), vec!["host_key"], "{}", r.text);
    let msg = r.body["checks"][0]["message"].as_str().unwrap();
    assert!(msg.contains("mismatch") && msg.contains("SHA256:"), "{msg}");
    assert!(
        !imposter.log().contains("Accepted publickey"),
        "nothing was sent to the imposter"
    );

    // Closed port.
    let mut cfg = base.clone();
    cfg["port"] = json!(1);
    let r = s.post(&url, json!({"driver": "ssh", "config": cfg})).await;
    assert_eq!(codes(&r.body, "error"), vec!["connect"], "{}", r.text);

    // Unwritable workspace path.
    let mut cfg = base.clone();
    cfg["remoteWorkspacePath"] = json!("/proc/berth-cannot-write-here");
    let r = s.post(&url, json!({"driver": "ssh", "config": cfg})).await;
    assert_eq!(
        codes(&r.body, "error"),
        vec!["workspace_path"],
        "{}",
        r.text
    );
    assert!(
        r.body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["code"] == "workspace_path" && c["hint"].is_string())
    );
}
