//! Runs on a `sandbox` environment (provider bubblewrap) through the HTTP API, with a real
//! `bwrap`: the workspace goes out to the sandbox root and comes back with the same three-way
//! restore as SSH, the agent cannot see BERTH_HOME, reaches the API with network `none`, and a
//! cancel leaves no process. Under `CI=true` a host without a working bwrap fails these tests.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

fn bwrap_works() -> bool {
    let support = berth_exec::sandbox::host_support();
    berth_testkit::require(
        &format!("a working bwrap ({:?})", support.as_ref().err()),
        support.is_ok(),
    )
    .unwrap()
}

async fn wait_run(s: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = s.get(&format!("/api/runs/{id}")).await;
        if !matches!(r.body["status"].as_str(), Some("queued" | "running")) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} did not finish: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stdout_of(s: &TestServer, id: &str) -> String {
    let events = s.get(&format!("/api/runs/{id}/events")).await;
    events
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["stream"] == "stdout")
        .filter_map(|e| e["payload"]["text"].as_str().map(str::to_string))
        .collect()
}

/// A sandbox environment (network `none`), a workspace at `dir` and a `process` agent running
/// `script` under `sh -c`; returns (environment id, workspace id, agent id).
async fn setup(
    s: &TestServer,
    c: &str,
    dir: &std::path::Path,
    script: &str,
) -> (String, String, String) {
    let env = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "sandbox", "driver": "sandbox",
                "config": {"provider": "bubblewrap", "network": "none"}}),
        )
        .await;
    assert_eq!(env.status, 201, "{}", env.text);
    let eid = env.body["id"].as_str().unwrap().to_string();
    let ws = s
        .post(
            &format!("/api/companies/{c}/execution-workspaces"),
            json!({"localPath": dir}),
        )
        .await;
    assert_eq!(ws.status, 201, "{}", ws.text);
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "boxed", "adapterType": "process", "defaultEnvironmentId": eid,
                "adapterConfig": {"command": "sh", "args": ["-c", script]}}),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    (
        eid,
        ws.body["id"].as_str().unwrap().to_string(),
        agent.body["id"].as_str().unwrap().to_string(),
    )
}

async fn start_run(s: &TestServer, c: &str, agent: &str, ws: &str) -> String {
    let run = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent, "prompt": "work", "executionWorkspaceId": ws}),
        )
        .await;
    assert_eq!(run.status, 202, "{}", run.text);
    run.body["id"].as_str().unwrap().to_string()
}

fn sandbox_root(s: &TestServer, eid: &str) -> PathBuf {
    s.runs.path().join("sandboxes").join(eid)
}

#[tokio::test]
async fn a_sandbox_run_works_on_a_copy_and_restores_it_keeping_local_edits() {
    if !bwrap_works() {
        return;
    }
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let parent = tempfile::tempdir().unwrap();
    let repo = parent.path().join("plain");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("a.txt"), "base\n").unwrap();
    std::fs::write(repo.join("b.txt"), "base\n").unwrap();
    let key = s.home.path().join("master.key");
    assert!(key.exists(), "the server made its master key");
    let script = format!(
        "echo \"pwd=$PWD\"; sleep 2; echo remote > a.txt; echo remote > b.txt; echo new > c.txt; \
         if cat {key} >/dev/null 2>&1; then echo KEY_VISIBLE; else echo KEY_HIDDEN; fi; \
         if echo x > {repo}/escaped.txt 2>/dev/null; then echo ESCAPED; fi",
        key = key.display(),
        repo = repo.display(),
    );
    let (eid, ws, agent) = setup(&s, &c, &repo, &script).await;
    let id = start_run(&s, &c, &agent, &ws).await;
    // Edit a.txt locally while the agent works on its copy in the sandbox root.
    let copy = sandbox_root(&s, &eid)
        .join(".berth/ws")
        .join(format!("workspace-{ws}"));
    let pgid = sandbox_root(&s, &eid)
        .join(".berth/runs")
        .join(&id)
        .join("pgid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(copy.join("a.txt").exists() && pgid.exists()) {
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(repo.join("a.txt"), "local\n").unwrap();
    let run = wait_run(&s, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["environmentId"], eid.as_str(), "{run}");
    assert_eq!(run["errorCode"], "workspace_restore_conflict", "{run}");
    assert_eq!(run["result"]["conflicts"], json!(["a.txt"]));
    assert_eq!(
        std::fs::read_to_string(repo.join("a.txt")).unwrap(),
        "local\n",
        "the local edit is never lost"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("a.txt.berth-remote")).unwrap(),
        "remote\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("b.txt")).unwrap(),
        "remote\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("c.txt")).unwrap(),
        "new\n"
    );
    let out = stdout_of(&s, &id).await;
    assert!(
        out.contains(&format!("pwd={}", copy.display())),
        "the agent works on the copy: {out}"
    );
    assert!(out.contains("KEY_HIDDEN"), "{out}");
    assert!(!out.contains("ESCAPED"), "{out}");
    assert!(!repo.join("escaped.txt").exists());
    // The sandbox root (copies, HOME, assets, sockets) goes with its environment.
    let root = sandbox_root(&s, &eid);
    assert!(root.join(".berth/home").exists());
    let deleted = s.delete(&format!("/api/environments/{eid}")).await;
    assert!(deleted.status.is_success(), "{}", deleted.text);
    assert!(
        !root.exists(),
        "{} outlived its environment",
        root.display()
    );
}

#[tokio::test]
async fn a_sandboxed_agent_reaches_the_api_with_network_none() {
    if !bwrap_works() {
        return;
    }
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let dir = tempfile::tempdir().unwrap();
    // printf is a shell builtin: the token never reaches an argv. `ignoreeof`: socat must not
    // half-close the request (the server treats a read EOF as the client gone).
    let script = r#"hp=${BERTH_API_URL#http://}
get() { printf 'GET %s HTTP/1.0\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n' "$1" "$hp" "$2" | socat -t 1 STDIO,ignoreeof "TCP:$hp" | head -n 1; }
echo "own-run $(get "/api/runs/$BERTH_RUN_ID" "$BERTH_API_TOKEN")"
echo "forged $(get "/api/runs/$BERTH_RUN_ID" "berthrun_forged")"
echo "url $BERTH_API_URL"
"#;
    let (_eid, ws, agent) = setup(&s, &c, dir.path(), script).await;
    let id = start_run(&s, &c, &agent, &ws).await;
    let run = wait_run(&s, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let out = stdout_of(&s, &id).await;
    let events = s.get(&format!("/api/runs/{id}/events")).await.text;
    assert!(out.contains("own-run HTTP/1.0 200"), "{out}\n{events}");
    assert!(out.contains("forged HTTP/1.0 401"), "{out}");
    assert!(out.contains("url http://127.0.0.1:"), "{out}");
}

#[tokio::test]
async fn cancelling_a_sandbox_run_leaves_no_process() {
    if !bwrap_works() {
        return;
    }
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("{}.{}", 5000 + std::process::id() % 1000, 789);
    let script = format!("trap '' TERM; sleep {marker} & sleep {marker}");
    let (_eid, ws, agent) = setup(&s, &c, dir.path(), &script).await;
    let id = start_run(&s, &c, &agent, &ws).await;
    let needle = format!("sleep {marker}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cmdlines().matches(&needle).count() < 2 {
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = s.post(&format!("/api/runs/{id}/cancel"), json!({})).await;
    assert!(r.status.is_success(), "{}", r.text);
    let run = wait_run(&s, &id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cmdlines().contains(&needle) {
        assert!(
            Instant::now() < deadline,
            "a sandboxed process outlived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cmdlines() -> String {
    let mut all = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&c).replace('\0', " "));
            all.push('\n');
        }
    }
    all
}

/// The probe checks bwrap, starts a sandbox like a run's, and looks the company's agent CLIs
/// (and socat, for the API bridge) up *inside* it.
#[tokio::test]
async fn probing_a_sandbox_looks_for_the_agent_clis_inside_it() {
    if !bwrap_works() {
        return;
    }
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let dir = tempfile::tempdir().unwrap();
    let (eid, _ws, _agent) = setup(&s, &c, dir.path(), "true").await;
    // A CLI that exists on the host but outside what the sandbox binds.
    let outside = dir.path().join("host-only-cli");
    std::fs::write(&outside, "#!/bin/sh\n").unwrap();
    let missing = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "outside", "adapterType": "process",
                "adapterConfig": {"command": outside}}),
        )
        .await;
    assert_eq!(missing.status, 201, "{}", missing.text);
    let probe = s
        .post(&format!("/api/environments/{eid}/probe"), json!({}))
        .await;
    assert_eq!(probe.status, 200, "{}", probe.text);
    assert_eq!(probe.body["ok"], true, "{}", probe.text);
    assert_eq!(probe.body["driver"], "sandbox", "{}", probe.text);
    let checks = probe.body["checks"].as_array().unwrap();
    let find = |code: &str, needle: &str| {
        checks
            .iter()
            .find(|c| c["code"] == code && c["message"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no {code} check mentioning {needle}: {}", probe.text))
            .clone()
    };
    assert_eq!(find("bwrap", "namespaces")["level"], "info");
    assert_eq!(find("sandbox", "starts")["level"], "info");
    assert_eq!(find("agent_cli", "`sh` found inside")["level"], "info");
    let host_only = find("agent_cli", "host-only-cli");
    assert_eq!(host_only["level"], "warn", "{host_only}");
    assert!(
        host_only["hint"]
            .as_str()
            .unwrap()
            .contains("readOnlyPaths"),
        "{host_only}"
    );
    assert_eq!(find("tool_socat", "inside the sandbox")["level"], "info");
}

/// With `network: "allowlist"` the agent leaves only through the run's proxy; a host not in
/// `allowHosts` is refused and the refusal is a run event.
#[tokio::test]
async fn an_allowlist_sandbox_records_each_refused_connection_as_a_run_event() {
    if !bwrap_works() {
        return;
    }
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let blocked = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = blocked.local_addr().unwrap().port();
    let env = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "allow", "driver": "sandbox", "config": {"network": "allowlist",
                "allowHosts": ["api.example.invalid:443"]}}),
        )
        .await;
    assert_eq!(env.status, 201, "{}", env.text);
    let script = format!(
        "pp=${{HTTPS_PROXY##*:}}; if printf x | socat -t 2 - \"PROXY:127.0.0.1:127.0.0.1:{port},proxyport=$pp\" >/dev/null 2>&1; then echo PASSED; else echo BLOCKED; fi"
    );
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "egress", "adapterType": "process", "defaultEnvironmentId": env.body["id"],
                "adapterConfig": {"command": "sh", "args": ["-c", script]}}),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    let run = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent.body["id"], "prompt": "leave"}),
        )
        .await;
    assert_eq!(run.status, 202, "{}", run.text);
    let id = run.body["id"].as_str().unwrap().to_string();
    let done = wait_run(&s, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(stdout_of(&s, &id).await.contains("BLOCKED"));
    let events = s.get(&format!("/api/runs/{id}/events")).await.text;
    let refusal = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|e| e["payload"]["step"] == "egress_refused")
        .unwrap_or_else(|| panic!("no egress_refused event: {events}"));
    assert_eq!(
        refusal["payload"]["target"],
        format!("127.0.0.1:{port}"),
        "{refusal}"
    );
}

/// Unix socket paths are short: a runs root too deep for the API bridge is a probe warning
/// with what to do, not a silent run without BERTH_API_URL.
#[tokio::test]
async fn a_runs_root_too_deep_for_the_api_socket_is_a_probe_warning() {
    if !bwrap_works() {
        return;
    }
    let deep = tempfile::tempdir().unwrap();
    let runs = deep.path().join("x".repeat(60)).join("y".repeat(20));
    std::fs::create_dir_all(&runs).unwrap();
    let s = TestServer::start_configured(|c| c.runs_root = Some(runs.clone())).await;
    let c = s.default_company().await;
    let env = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "deep", "driver": "sandbox", "config": {"network": "none"}}),
        )
        .await;
    assert_eq!(env.status, 201, "{}", env.text);
    let probe = s
        .post(
            &format!(
                "/api/environments/{}/probe",
                env.body["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(probe.status, 200, "{}", probe.text);
    let check = probe.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "api_socket")
        .unwrap_or_else(|| panic!("no api_socket check: {}", probe.text))
        .clone();
    assert_eq!(check["level"], "warn", "{check}");
    assert!(
        check["hint"].as_str().unwrap().contains("runsRoot"),
        "{check}"
    );
}
