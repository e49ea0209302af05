//! Runs on a real sshd with an execution workspace: the workspace goes out and comes back
//! through berth-sync, sessions resume only where they belong (fake Claude Code CLI, clearly a
//! fake), and a path edited on both sides during the run keeps the local edit.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testkit::sshd::Sshd;
use common::TestServer;
use serde_json::{Value, json};

fn fake_cli(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../berth-agents/fake-clis")
        .join(name)
        .canonicalize()
        .unwrap()
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

async fn setup(sshd: &Sshd) -> (TestServer, String, String) {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let eid = s.lab_environment(&c, "lab", sshd).await;
    (s, c, eid)
}

#[tokio::test]
async fn a_claude_run_syncs_out_and_back_and_the_next_run_resumes_its_session() {
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let (s, c, eid) = setup(&sshd).await;
    let parent = tempfile::tempdir().unwrap();
    let repo = parent.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let ws = s
        .post(
            &format!("/api/companies/{c}/execution-workspaces"),
            json!({"localPath": repo}),
        )
        .await;
    let ws = ws.body["id"].as_str().unwrap().to_string();
    let log = parent.path().join("claude-argv.log");
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "claude", "adapterType": "claude_local", "defaultEnvironmentId": eid,
                "adapterConfig": {"command": fake_cli("claude"), "env": {"FAKE_CLI_LOG": log}}}),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    let agent = agent.body["id"].as_str().unwrap().to_string();

    let run = s
        .post(&format!("/api/companies/{c}/runs"), json!({"agentId": agent, "prompt": "write remote.txt from-the-agent", "executionWorkspaceId": ws}))
        .await;
    let first = wait_run(&s, run.body["id"].as_str().unwrap()).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["environmentSource"], "agent");
    assert_eq!(
        std::fs::read_to_string(repo.join("remote.txt"))
            .unwrap()
            .trim(),
        "from-the-agent",
        "the agent's file arrived through the restore"
    );
    let session = first["sessionParams"]["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(first["sessionParams"]["remoteIdentity"]["transport"], "ssh");
    assert_eq!(first["result"]["sessionId"], session.as_str());
    assert_eq!(first["result"]["conflicts"], json!([]));
    let lease = s
        .get(&format!(
            "/api/environment-leases/{}",
            first["leaseId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(lease.body["status"], "retained");

    // The second run of the same agent on the same workspace resumes the session, on the same
    // remote copy (the lease of the scope is resumed too).
    std::fs::write(repo.join("local.txt"), "made locally between runs\n").unwrap();
    let run = s
        .post(&format!("/api/companies/{c}/runs"), json!({"agentId": agent, "prompt": "write second.txt again", "executionWorkspaceId": ws}))
        .await;
    let second = wait_run(&s, run.body["id"].as_str().unwrap()).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let argv = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = argv.lines().collect();
    assert_eq!(lines.len(), 2, "{argv}");
    assert!(!lines[0].contains("--resume"), "{argv}");
    assert!(lines[1].contains(&format!("--resume {session}")), "{argv}");
    assert!(
        lines[1].contains("--print") && lines[1].contains("stream-json"),
        "{argv}"
    );
    assert_eq!(second["sessionParams"]["sessionId"], session.as_str());
    let lease2 = s
        .get(&format!(
            "/api/environment-leases/{}",
            second["leaseId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        lease2.body["resumedFromLeaseId"], first["leaseId"],
        "{}",
        lease2.text
    );
    assert!(repo.join("second.txt").exists());
    assert_eq!(
        std::fs::read_to_string(repo.join("local.txt")).unwrap(),
        "made locally between runs\n",
        "a local file survives"
    );
    let remote_copy = sshd
        .workspace
        .join(".berth/ws")
        .join(format!("workspace-{ws}"));
    assert!(
        remote_copy.join("local.txt").exists(),
        "the incremental push carried the new local file"
    );
}

#[tokio::test]
async fn a_path_edited_on_both_sides_keeps_the_local_edit_and_reports_a_conflict() {
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let (s, c, eid) = setup(&sshd).await;
    let parent = tempfile::tempdir().unwrap();
    let repo = parent.path().join("plain");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("a.txt"), "base\n").unwrap();
    std::fs::write(repo.join("b.txt"), "base\n").unwrap();
    let ws = s
        .post(
            &format!("/api/companies/{c}/execution-workspaces"),
            json!({"localPath": repo}),
        )
        .await;
    let ws = ws.body["id"].as_str().unwrap().to_string();
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "editor", "adapterType": "process", "defaultEnvironmentId": eid,
                "adapterConfig": {"command": "sh", "args": ["-c", "sleep 2; echo remote > a.txt; echo remote > b.txt; echo new > c.txt"]}}),
        )
        .await;
    let agent = agent.body["id"].as_str().unwrap().to_string();
    let run = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent, "prompt": "x", "executionWorkspaceId": ws}),
        )
        .await;
    let id = run.body["id"].as_str().unwrap().to_string();
    // Edit a.txt locally while the agent runs remotely (its copy exists and it is sleeping).
    let remote = sshd
        .workspace
        .join(".berth/ws")
        .join(format!("workspace-{ws}"));
    let runs_dir = sshd.workspace.join(".berth/runs").join(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(remote.join("a.txt").exists() && runs_dir.join("pgid").exists()) {
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(repo.join("a.txt"), "local\n").unwrap();
    let run = wait_run(&s, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
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
        "remote\n",
        "a remote-only change arrives"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("c.txt")).unwrap(),
        "new\n"
    );
    // The run's page in the web UI reports the conflict.
    let page = s.get(&format!("/runs/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("Restore conflicts") && page.text.contains("<code>a.txt</code>"),
        "{}",
        page.text
    );
}

/// What the agent's process does with `BERTH_API_URL` / `BERTH_API_TOKEN`: reads its own run
/// with the token, tries a privileged call, tries a forged token, and leaves the token in the
/// workspace so the test can show it dies with the run.
const API_PROBE: &str = r#"
import json, os, urllib.request, urllib.error
url, token, run = os.environ["BERTH_API_URL"], os.environ["BERTH_API_TOKEN"], os.environ["BERTH_RUN_ID"]
def call(method, path, tok, body=None):
    headers = {"Content-Type": "application/json"}
    if tok is not None:
        headers["Authorization"] = "Bearer " + tok
    req = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
status, me = call("GET", "/api/runs/" + run, token)
print("own-run", status, me["status"])
print("url", url)
company = me["companyId"]
print("privileged", call("POST", "/api/companies/%s/environments" % company, token,
                         {"name": "x", "driver": "local", "config": {}})[0])
print("forged", call("GET", "/api/runs/" + run, token[:-4] + "0000")[0])
print("anonymous", call("GET", "/api/runs/" + run, None)[0])
open("token.txt", "w").write(token)
"#;

/// The agent reaches the API as itself: on the local environment directly, over SSH through a
/// remote forward on the pooled connection; its token works only while its run is active and
/// grants no management rights.
#[tokio::test]
async fn the_agent_reaches_the_api_with_a_token_that_dies_with_its_run() {
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let (s, c, eid) = setup(&sshd).await;
    for ssh in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let ws = s
            .post(
                &format!("/api/companies/{c}/execution-workspaces"),
                json!({"localPath": dir.path()}),
            )
            .await;
        assert_eq!(ws.status, 201, "{}", ws.text);
        let agent = s
            .post(
                &format!("/api/companies/{c}/agents"),
                json!({"name": format!("api-{ssh}"), "adapterType": "process",
                    "defaultEnvironmentId": if ssh { json!(eid) } else { Value::Null },
                    "adapterConfig": {"command": "python3", "args": ["-c", API_PROBE]}}),
            )
            .await;
        assert_eq!(agent.status, 201, "{}", agent.text);
        let run = s
            .post(
                &format!("/api/companies/{c}/runs"),
                json!({"agentId": agent.body["id"], "prompt": "call the API", "executionWorkspaceId": ws.body["id"]}),
            )
            .await;
        assert_eq!(run.status, 202, "{}", run.text);
        let id = run.body["id"].as_str().unwrap();
        let done = wait_run(&s, id).await;
        assert_eq!(done["status"], "succeeded", "ssh={ssh}: {done}");
        let events = s.get(&format!("/api/runs/{id}/events")).await;
        let out: String = events
            .text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|e| e["stream"] == "stdout")
            .filter_map(|e| e["payload"]["text"].as_str().map(str::to_string))
            .collect();
        assert!(
            out.contains("own-run 200 running"),
            "ssh={ssh}: {}",
            events.text
        );
        // A run token sees nothing of its company beyond its own run: 404, like a stranger.
        assert!(out.contains("privileged 404"), "ssh={ssh}: {out}");
        assert!(out.contains("forged 401"), "ssh={ssh}: {out}");
        // The server is local_trusted for its own user, but what comes in through the agents'
        // listener (here relayed from the environment) needs a token.
        assert!(out.contains("anonymous 401"), "ssh={ssh}: {out}");
        assert_eq!(s.get("/api/health").await.body["authMode"], "local_trusted");
        // Never the API's own address: the agents' listener locally, over SSH a port the
        // sshd forwards back to it.
        assert!(!out.contains(&format!("url {}", s.base)), "{out}");
        if ssh {
            assert_eq!(done["environmentId"], eid.as_str(), "{done}");
        }
        let token = std::fs::read_to_string(dir.path().join("token.txt")).unwrap();
        assert!(token.starts_with("berthrun_"));
        assert!(
            !events.text.contains(&token),
            "the token is redacted from events"
        );
        let after = s
            .call(
                reqwest::Method::GET,
                &format!("/api/runs/{id}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(
            after.status, 401,
            "the token died with the run: {}",
            after.text
        );
    }
}

/// Deleting an environment removes the lease rows: its hosts are cleaned first (workspace
/// copies, run directories), and when a host does not answer the delete says what is left
/// instead of stranding it silently.
#[tokio::test]
async fn deleting_an_environment_cleans_its_host_first_or_says_what_is_left() {
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let mut gone = Sshd::start().unwrap();
    let (s, c, eid) = setup(&sshd).await;
    let eid2 = s.lab_environment(&c, "doomed", &gone).await;
    let mut copies = Vec::new();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (env, dir, host) in [(&eid, &dirs.0, &sshd), (&eid2, &dirs.1, &gone)] {
        let ws = s
            .post(
                &format!("/api/companies/{c}/execution-workspaces"),
                json!({"localPath": dir.path()}),
            )
            .await;
        let ws_id = ws.body["id"].as_str().unwrap().to_string();
        let agent = s
            .post(
                &format!("/api/companies/{c}/agents"),
                json!({"name": format!("writer-{env}"), "adapterType": "process", "defaultEnvironmentId": env,
                    "adapterConfig": {"command": "sh", "args": ["-c", "echo hi > made.txt"]}}),
            )
            .await;
        let run = s
            .post(
                &format!("/api/companies/{c}/runs"),
                json!({"agentId": agent.body["id"], "prompt": "p", "executionWorkspaceId": ws_id}),
            )
            .await;
        let done = wait_run(&s, run.body["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let copy = host
            .workspace
            .join(".berth/ws")
            .join(format!("workspace-{ws_id}"));
        assert!(
            copy.join("made.txt").exists(),
            "a retained copy on the host"
        );
        copies.push(copy);
    }

    // The host of the second environment is down: the delete refuses and names the lease.
    gone.stop();
    let refused = s.delete(&format!("/api/environments/{eid2}")).await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap()
            .contains("abandonRemoteState"),
        "{}",
        refused.text
    );
    assert_eq!(
        refused.body["details"]["pendingCleanup"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{}",
        refused.text
    );
    assert_eq!(
        s.get(&format!("/api/environments/{eid2}")).await.status,
        200
    );
    let abandoned = s
        .delete(&format!("/api/environments/{eid2}?abandonRemoteState=true"))
        .await;
    assert_eq!(abandoned.status, 200, "{}", abandoned.text);

    // The reachable one is cleaned, then deleted.
    let deleted = s.delete(&format!("/api/environments/{eid}")).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert!(
        !copies[0].exists(),
        "the workspace copy was removed from the host"
    );
    assert_eq!(s.get(&format!("/api/environments/{eid}")).await.status, 404);
}

/// The environment's sshd goes away for 10 s mid-run (the agent keeps running: it is detached
/// from any connection); the run re-attaches when sshd is back and ends byte-exact.
#[tokio::test]
async fn a_run_survives_its_sshd_being_down_for_ten_seconds() {
    let Some(mut sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let (s, c, eid) = setup(&sshd).await;
    let progress = tempfile::tempdir().unwrap();
    let marker = progress.path().join("n");
    let lines = 40;
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "steady", "adapterType": "process", "defaultEnvironmentId": eid,
                "adapterConfig": {"command": "sh", "args": ["-c",
                    format!("for i in $(seq 1 {lines}); do echo \"line $i\"; echo $i > {}; sleep 0.5; done", marker.display())]}}),
        )
        .await;
    let run = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent.body["id"], "prompt": "p"}),
        )
        .await;
    let id = run.body["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&marker)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or(0)
        < 3
    {
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sshd.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    sshd.restart().unwrap();
    let done = wait_run(&s, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let events = s.get(&format!("/api/runs/{id}/events")).await;
    let out: String = events
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["stream"] == "stdout")
        .filter_map(|e| e["payload"]["text"].as_str().map(str::to_string))
        .collect();
    let expected: String = (1..=lines).map(|i| format!("line {i}\n")).collect();
    assert_eq!(out, expected);
}

/// The environment stays unreachable for longer than the lease TTL: the run fails with
/// `lease_lost` and its lease keeps cleanup pending (the agent could not be stopped); once the
/// host answers again the reaper stops the agent and the cleanup succeeds.
#[tokio::test]
async fn an_environment_unreachable_past_the_ttl_fails_the_run_and_is_cleaned_when_it_returns() {
    let Some(mut sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    unreachable_past_the_ttl(&mut sshd, Sshd::stop, |s| s.restart().unwrap()).await;
}

/// The same with a silent fault: the host's network link is cut (packets dropped, no reset),
/// so nothing fails by itself until keepalives notice; after the link heals the agent is
/// stopped and cleanup succeeds.
#[tokio::test]
async fn a_silently_cut_link_past_the_ttl_is_noticed_and_cleaned_after_it_heals() {
    let Some(mut sshd) = Sshd::start_in_netns().unwrap() else {
        return;
    };
    unreachable_past_the_ttl(
        &mut sshd,
        |s| s.netns().unwrap().cut().unwrap(),
        |s| s.netns().unwrap().heal().unwrap(),
    )
    .await;
}

async fn unreachable_past_the_ttl(
    sshd: &mut Sshd,
    go_away: impl FnOnce(&mut Sshd),
    come_back: impl FnOnce(&mut Sshd),
) {
    let s = TestServer::start_full(
        |c| c.lease_ttl_secs = Some(3),
        berth_server::LaunchOptions {
            reaper_interval: Some(Duration::from_millis(500)),
            ..berth_server::LaunchOptions::default()
        },
    )
    .await;
    let c = s.default_company().await;
    let eid = s.lab_environment(&c, "flaky", sshd).await;
    let marker = format!("berth-unreachable-{}", uuid::Uuid::new_v4().simple());
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "sleeper", "adapterType": "process", "defaultEnvironmentId": eid,
                "adapterConfig": {"command": "sh", "args": ["-c", format!("echo started; sleep 1000 # {marker}")]}}),
        )
        .await;
    let run = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent.body["id"], "prompt": "p"}),
        )
        .await;
    let id = run.body["id"].as_str().unwrap().to_string();
    let alive = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive() == 0 {
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    go_away(sshd);
    let done = wait_run(&s, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["errorCode"], "lease_lost", "{done}");
    assert!(
        alive() > 0,
        "nobody could have stopped the agent while its host was away"
    );
    let lease_url = format!(
        "/api/environment-leases/{}",
        done["leaseId"].as_str().unwrap()
    );
    let lease = s.get(&lease_url).await;
    assert_ne!(lease.body["cleanupStatus"], "success", "{}", lease.text);

    come_back(sshd);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lease = s.get(&lease_url).await;
        if lease.body["cleanupStatus"] == "success" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cleanup never succeeded after the host came back: {}",
            lease.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(alive(), 0, "the lease's cleanup stopped the agent");
}
