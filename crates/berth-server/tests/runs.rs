//! Runs end to end through the real server on the local environment (and on a real sshd):
//! statuses and error codes, events and SSE replay, timeout and cancel that leave no process,
//! lease final statuses, serialization per workspace.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

async fn agent(s: &TestServer, c: &str, config: Value) -> String {
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": format!("a-{}", uuid()), "adapterType": "process", "adapterConfig": config}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

fn uuid() -> String {
    format!(
        "{:x}",
        Instant::now().elapsed().as_nanos() ^ std::process::id() as u128 ^ rand_bits()
    )
}

fn rand_bits() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn start_run(s: &TestServer, c: &str, body: Value) -> String {
    let r = s.post(&format!("/api/companies/{c}/runs"), body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
    r.body["id"].as_str().unwrap().to_string()
}

async fn wait_run(s: &TestServer, id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = s.get(&format!("/api/runs/{id}")).await;
        let status = r.body["status"].as_str().unwrap_or_default().to_string();
        if !["queued", "running"].contains(&status.as_str()) {
            return r.body;
        }
        if Instant::now() > deadline {
            panic!("run {id} still {status} after {secs} s: {}", r.text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events(s: &TestServer, id: &str) -> Vec<Value> {
    let r = s.get(&format!("/api/runs/{id}/events")).await;
    assert_eq!(r.status, 200);
    r.text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .collect()
}

fn group_alive(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| {
                        !s.rsplit_once(')')
                            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                    })
                    .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn a_process_run_succeeds_streams_its_output_and_releases_its_lease() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let a = agent(&s, &c, json!({"command": "sh", "args": ["-c", "read p; echo \"got $p\"; echo warn >&2; echo \"run=$BERTH_RUN_ID\""]})).await;
    let id = start_run(&s, &c, json!({"agentId": a, "prompt": "hello"})).await;
    let run = wait_run(&s, &id, 30).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["exitCode"], 0);
    assert_eq!(run["environmentSource"], "company_default");
    assert!(run["leaseId"].is_string());
    let evs = events(&s, &id).await;
    let stdout: String = evs
        .iter()
        .filter(|e| e["stream"] == "stdout")
        .map(|e| e["payload"]["text"].as_str().unwrap())
        .collect();
    assert!(stdout.contains("got hello"), "{stdout}");
    assert!(stdout.contains(&format!("run={id}")), "{stdout}");
    let steps: Vec<&str> = evs
        .iter()
        .filter(|e| e["stream"] == "lifecycle")
        .map(|e| {
            e["payload"]["step"]
                .as_str()
                .unwrap_or_else(|| panic!("{e}"))
        })
        .collect();
    for step in [
        "claimed",
        "environment_selected",
        "lease_acquired",
        "workspace_realized",
        "agent_started",
        "lease_released",
        "finished",
    ] {
        assert!(steps.contains(&step), "missing step {step}: {steps:?}");
    }
    let seqs: Vec<i64> = evs.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(
        evs.last().unwrap()["status"],
        "succeeded",
        "the stream ends with the final status"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "ordered, gap-free: {seqs:?}"
    );
    // Replay from any point with Last-Event-ID.
    let mid = seqs[seqs.len() / 2];
    let r = s
        .client
        .get(format!("{}/api/runs/{id}/events", s.base))
        .header("Last-Event-ID", mid.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let replayed: Vec<i64> = r
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(replayed.first(), Some(&(mid + 1)));
    assert_eq!(replayed.last(), seqs.last());
    let lease = s
        .get(&format!(
            "/api/environment-leases/{}",
            run["leaseId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(lease.body["status"], "released", "{}", lease.text);
    assert_eq!(lease.body["failureReason"], Value::Null);
    let metrics = s.get("/metrics").await.text;
    assert!(
        metrics.contains("berth_runs{status=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_leases{status=\"released\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_ssh_pool_connections 0"),
        "{metrics}"
    );
}

/// A character whose bytes arrive in two polls is recorded whole, in the run's events and in
/// the parsed summary alike.
#[tokio::test]
async fn a_character_split_across_two_polls_is_recorded_whole() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    // "é" is \303\251; "日" is \346\227\245. The pauses put each split in another poll.
    let a = agent(
        &s,
        &c,
        json!({"command": "sh", "args": ["-c",
            "printf 'caf\\303'; sleep 0.6; printf '\\251 \\346'; sleep 0.6; printf '\\227\\245\\n'; \
             printf '\\346\\227' >&2; sleep 0.6; printf '\\245\\n' >&2"]}),
    )
    .await;
    let id = start_run(&s, &c, json!({"agentId": a, "prompt": "p"})).await;
    let run = wait_run(&s, &id, 30).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let evs = events(&s, &id).await;
    let text = |stream: &str| -> String {
        evs.iter()
            .filter(|e| e["stream"] == stream)
            .map(|e| e["payload"]["text"].as_str().unwrap())
            .collect()
    };
    assert_eq!(text("stdout"), "café 日\n");
    assert_eq!(text("stderr"), "日\n");
    assert!(
        evs.iter()
            .filter(|e| e["stream"] == "stdout")
            .all(|e| !e["payload"]["text"].as_str().unwrap().contains('\u{fffd}')),
        "no replacement character in any chunk: {evs:?}"
    );
}

#[tokio::test]
async fn failures_timeouts_and_cancels_end_with_their_codes_and_leave_no_process() {
    let s = TestServer::start().await;
    let c = s.default_company().await;

    let fail = agent(
        &s,
        &c,
        json!({"command": "sh", "args": ["-c", "echo broken >&2; exit 3"]}),
    )
    .await;
    let id = start_run(&s, &c, json!({"agentId": fail, "prompt": "x"})).await;
    let run = wait_run(&s, &id, 30).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["errorCode"], "agent_failed");
    assert_eq!(run["exitCode"], 3);
    assert!(
        run["errorMessage"].as_str().unwrap().contains("broken"),
        "{run}"
    );
    let lease = s
        .get(&format!(
            "/api/environment-leases/{}",
            run["leaseId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(lease.body["status"], "failed");
    assert_eq!(lease.body["failureReason"], "run_failed");

    let marker = format!("berth-timeout-{}", uuid());
    let slow = agent(&s, &c, json!({"command": "sh", "args": ["-c", format!("trap '' TERM; sleep 120 # {marker}\n")], "timeoutSec": 1, "graceSec": 1})).await;
    let id = start_run(&s, &c, json!({"agentId": slow, "prompt": "x"})).await;
    let run = wait_run(&s, &id, 30).await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["errorCode"], "timed_out");
    assert!(
        group_alive(&marker).is_empty(),
        "the timed-out process group is gone"
    );
    let lease = s
        .get(&format!(
            "/api/environment-leases/{}",
            run["leaseId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(lease.body["failureReason"], "timed_out");

    let marker = format!("berth-cancel-{}", uuid());
    let long = agent(&s, &c, json!({"command": "sh", "args": ["-c", format!("sleep 120 & sleep 120 # {marker}\n")], "graceSec": 1})).await;
    let id = start_run(&s, &c, json!({"agentId": long, "prompt": "x"})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while group_alive(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = s.post(&format!("/api/runs/{id}/cancel"), json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let run = wait_run(&s, &id, 30).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["errorCode"], "cancelled");
    assert!(
        group_alive(&marker).is_empty(),
        "no process outlives the cancel"
    );
    let lease = s
        .get(&format!(
            "/api/environment-leases/{}",
            run["leaseId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(lease.body["status"], "released");
    assert_eq!(lease.body["failureReason"], "cancelled");
    assert_eq!(
        s.post(&format!("/api/runs/{id}/cancel"), json!({}))
            .await
            .status,
        409
    );
}

#[tokio::test]
async fn runs_on_one_workspace_serialize_and_on_different_workspaces_overlap() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let w1 = tempfile::tempdir().unwrap();
    let w2 = tempfile::tempdir().unwrap();
    let mut ws = Vec::new();
    for dir in [&w1, &w2] {
        let r = s
            .post(
                &format!("/api/companies/{c}/execution-workspaces"),
                json!({"localPath": dir.path()}),
            )
            .await;
        ws.push(r.body["id"].as_str().unwrap().to_string());
    }
    // Each run records when it started and ended, in its own workspace.
    let a = agent(&s, &c, json!({"command": "sh", "args": ["-c", "s=$(date +%s%N); sleep 1; e=$(date +%s%N); echo \"$s $e\" >> times"]})).await;
    let runs = vec![
        start_run(
            &s,
            &c,
            json!({"agentId": a, "prompt": "1", "executionWorkspaceId": ws[0]}),
        )
        .await,
        start_run(
            &s,
            &c,
            json!({"agentId": a, "prompt": "2", "executionWorkspaceId": ws[0]}),
        )
        .await,
        start_run(
            &s,
            &c,
            json!({"agentId": a, "prompt": "3", "executionWorkspaceId": ws[1]}),
        )
        .await,
    ];
    for id in &runs {
        assert_eq!(wait_run(&s, id, 60).await["status"], "succeeded");
    }
    let read = |dir: &tempfile::TempDir| -> Vec<(u128, u128)> {
        std::fs::read_to_string(dir.path().join("times"))
            .unwrap()
            .lines()
            .map(|l| {
                let (a, b) = l.split_once(' ').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect()
    };
    let same = read(&w1);
    assert_eq!(same.len(), 2);
    let (first, second) = if same[0].0 < same[1].0 {
        (same[0], same[1])
    } else {
        (same[1], same[0])
    };
    assert!(
        second.0 >= first.1,
        "runs on one workspace never overlap: {same:?}"
    );
    let other = read(&w2)[0];
    let overlaps = |x: (u128, u128)| other.0 < x.1 && x.0 < other.1;
    assert!(
        overlaps(first) || overlaps(second),
        "runs on different workspaces overlap: {same:?} vs {other:?}"
    );
    // The workspace got pinned to the environment it first ran on.
    let w = s.get(&format!("/api/execution-workspaces/{}", ws[0])).await;
    assert!(w.body["config"]["environmentId"].is_string(), "{}", w.text);
}

#[tokio::test]
async fn selection_errors_fail_the_run_with_their_code() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let env = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "old", "driver": "ssh", "config": common::ssh_config(None)}),
        )
        .await;
    let eid = env.body["id"].as_str().unwrap().to_string();
    let a = agent(&s, &c, json!({"command": "true"})).await;
    s.patch(
        &format!("/api/agents/{a}"),
        json!({"defaultEnvironmentId": eid}),
    )
    .await;
    s.patch(
        &format!("/api/environments/{eid}"),
        json!({"status": "archived"}),
    )
    .await;
    let id = start_run(&s, &c, json!({"agentId": a, "prompt": "x"})).await;
    let run = wait_run(&s, &id, 30).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["errorCode"], "environment_inactive", "{run}");
    assert_eq!(run["leaseId"], Value::Null, "no lease was taken");
}

#[tokio::test]
async fn a_run_executes_on_its_agents_ssh_environment_and_cancel_kills_it_there() {
    let Some(sshd) = berth_testkit::sshd::Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let eid = s.lab_environment(&c, "lab", &sshd).await;
    let a = agent(&s, &c, json!({"command": "sh", "args": ["-c", "echo \"cwd=$(pwd)\"; echo \"home=$HOME\"; echo \"cwdvar=$BERTH_WORKSPACE_CWD\""]})).await;
    s.patch(
        &format!("/api/agents/{a}"),
        json!({"defaultEnvironmentId": eid}),
    )
    .await;
    let id = start_run(&s, &c, json!({"agentId": a, "prompt": "x"})).await;
    let run = wait_run(&s, &id, 60).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["environmentSource"], "agent");
    assert_eq!(run["environmentId"], eid.as_str());
    let out: String = events(&s, &id)
        .await
        .iter()
        .filter(|e| e["stream"] == "stdout")
        .map(|e| e["payload"]["text"].as_str().unwrap().to_string())
        .collect();
    let remote_cwd = format!("cwd={}/.berth/scratch/{id}", sshd.workspace.display());
    assert!(out.contains(&remote_cwd), "{out}");
    assert!(
        out.contains(&format!(
            "cwdvar={}/.berth/scratch/{id}",
            sshd.workspace.display()
        )),
        "BERTH_WORKSPACE_CWD is the path on the environment: {out}"
    );
    let lease = s
        .get(&format!(
            "/api/environment-leases/{}",
            run["leaseId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        lease.body["status"], "retained",
        "SSH leases are kept for reuse: {}",
        lease.text
    );
    assert!(
        !sshd.workspace.join(".berth/runs").join(&id).exists(),
        "per-run files are removed"
    );

    let marker = format!("berth-ssh-cancel-{}", uuid());
    let long = agent(&s, &c, json!({"command": "sh", "args": ["-c", format!("trap '' TERM; sleep 120 & sleep 120 # {marker}\n")], "graceSec": 1})).await;
    s.patch(
        &format!("/api/agents/{long}"),
        json!({"defaultEnvironmentId": eid}),
    )
    .await;
    let id = start_run(&s, &c, json!({"agentId": long, "prompt": "x"})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while group_alive(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the remote run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.post(&format!("/api/runs/{id}/cancel"), json!({})).await;
    let run = wait_run(&s, &id, 30).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        group_alive(&marker).is_empty(),
        "nothing of the remote process group survives"
    );
}

#[tokio::test]
async fn a_secret_env_value_reaches_the_agent_but_never_its_recorded_output() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let secret = "sk-SENTINEL-RUN-ENV-0042";
    let r = s
        .post(
            &format!("/api/companies/{c}/secrets"),
            json!({"name": "api-key", "value": secret}),
        )
        .await;
    let sid = r.body["id"].as_str().unwrap().to_string();
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))[..16].to_string()
    };
    let a = agent(
        &s,
        &c,
        json!({"command": "sh", "args": ["-c", format!(
            // Compare by digest (the value itself must not be in the agent's args either), then
            // print the value whole, and split across two writes half a second apart so it
            // reaches Berth in two chunks.
            "[ \"$(printf %s \"$API_KEY\" | sha256sum | cut -c1-16)\" = '{digest}' ] && echo match; \
             echo \"key=$API_KEY\"; printf '%s' \"${{API_KEY%????????????}}\"; sleep 0.5; \
             printf '%s\\n' \"${{API_KEY#????????????}}\""
        )],
            "env": {"API_KEY": {"type": "secret_ref", "secretId": sid, "version": "latest"}}}),
    )
    .await;
    let id = start_run(&s, &c, json!({"agentId": a, "prompt": "x"})).await;
    let run = wait_run(&s, &id, 30).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let r = s.get(&format!("/api/runs/{id}/events")).await;
    assert!(
        r.text.contains("match"),
        "the agent got the real value: {}",
        r.text
    );
    assert!(r.text.contains("key=***"), "{}", r.text);
    let stdout: String = events(&s, &id)
        .await
        .iter()
        .filter(|e| e["stream"] == "stdout")
        .map(|e| e["payload"]["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        stdout.ends_with("***\n"),
        "the value split across chunks is redacted too: {stdout:?}"
    );
    assert!(
        !r.text.contains(secret),
        "the secret leaked into the events: {}",
        r.text
    );
    let agent_json = s.get(&format!("/api/agents/{a}")).await;
    assert!(!agent_json.text.contains(secret));
}

/// SPEC §6 end to end: every rule of the precedence, and each explicit `null`, decides the
/// environment a run is recorded on (workspace > issue > project > agent > company default).
/// The environments point at a closed port: the runs fail after selection, which is all this
/// test looks at.
#[tokio::test]
async fn runs_record_the_environment_chosen_by_each_selection_rule() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let mut envs = std::collections::HashMap::new();
    for name in ["workspace", "issue", "project", "agent", "company"] {
        let r = s
            .post(
                &format!("/api/companies/{c}/environments"),
                json!({"name": name, "driver": "ssh", "config": common::ssh_config(None)}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        envs.insert(name, r.body["id"].as_str().unwrap().to_string());
    }
    let a = agent(&s, &c, json!({"command": "true"})).await;
    let project = s
        .post(
            &format!("/api/companies/{c}/projects"),
            json!({"name": "p"}),
        )
        .await;
    let project = project.body["id"].as_str().unwrap().to_string();
    let issue = s
        .post(
            &format!("/api/companies/{c}/issues"),
            json!({"title": "t", "projectId": project, "assigneeAgentId": a}),
        )
        .await;
    assert_eq!(issue.status, 201, "{}", issue.text);
    let issue = issue.body["id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let ws = s
        .post(
            &format!("/api/companies/{c}/execution-workspaces"),
            json!({"localPath": dir.path()}),
        )
        .await;
    let ws = ws.body["id"].as_str().unwrap().to_string();

    // (what to change, expected environment (None = the managed local one), expected source)
    type Step<'a> = (Vec<(String, Value)>, Option<&'a str>, &'a str);
    let steps: Vec<Step> = vec![
        (vec![], None, "company_default"),
        (
            vec![(
                format!("/api/companies/{c}"),
                json!({"defaultEnvironmentId": envs["company"]}),
            )],
            Some("company"),
            "company_default",
        ),
        (
            vec![(
                format!("/api/agents/{a}"),
                json!({"defaultEnvironmentId": envs["agent"]}),
            )],
            Some("agent"),
            "agent",
        ),
        (
            vec![(
                format!("/api/projects/{project}"),
                json!({"executionWorkspacePolicy": {"environmentId": envs["project"]}}),
            )],
            Some("project"),
            "project",
        ),
        (
            vec![(
                format!("/api/issues/{issue}"),
                json!({"executionWorkspaceSettings": {"environmentId": envs["issue"]}}),
            )],
            Some("issue"),
            "issue",
        ),
        (
            vec![
                (
                    format!("/api/execution-workspaces/{ws}"),
                    json!({"config": {"environmentId": envs["workspace"]}}),
                ),
                (
                    format!("/api/issues/{issue}"),
                    json!({"executionWorkspaceId": ws}),
                ),
            ],
            Some("workspace"),
            "workspace",
        ),
        // An explicit null at a level selects the company default and skips the levels below.
        (
            vec![(
                format!("/api/execution-workspaces/{ws}"),
                json!({"config": {"environmentId": null}}),
            )],
            Some("company"),
            "company_default",
        ),
        (
            vec![
                (
                    format!("/api/issues/{issue}"),
                    json!({"executionWorkspaceId": null}),
                ),
                (
                    format!("/api/issues/{issue}"),
                    json!({"executionWorkspaceSettings": {"environmentId": null}}),
                ),
            ],
            Some("company"),
            "company_default",
        ),
        (
            vec![
                (
                    format!("/api/issues/{issue}"),
                    json!({"executionWorkspaceSettings": {}}),
                ),
                (
                    format!("/api/projects/{project}"),
                    json!({"executionWorkspacePolicy": {"environmentId": null}}),
                ),
            ],
            Some("company"),
            "company_default",
        ),
        (
            vec![(
                format!("/api/projects/{project}"),
                json!({"executionWorkspacePolicy": {}}),
            )],
            Some("agent"),
            "agent",
        ),
    ];
    for (i, (changes, want, source)) in steps.into_iter().enumerate() {
        for (path, body) in changes {
            let r = s.patch(&path, body).await;
            assert_eq!(r.status, 200, "step {i} {path}: {}", r.text);
        }
        let id = start_run(
            &s,
            &c,
            json!({"agentId": a, "prompt": "x", "issueId": issue}),
        )
        .await;
        let run = wait_run(&s, &id, 60).await;
        assert_eq!(run["environmentSource"], source, "step {i}: {run}");
        match want {
            Some(name) => assert_eq!(run["environmentId"], envs[name].as_str(), "step {i}: {run}"),
            None => {
                let local = s
                    .get(&format!(
                        "/api/environments/{}",
                        run["environmentId"].as_str().unwrap()
                    ))
                    .await;
                assert_eq!(local.body["driver"], "local", "step {i}: {run}");
                assert_eq!(run["status"], "succeeded", "step {i}: {run}");
            }
        }
    }
}

/// The launcher shell killed from outside never records an exit status: the run must not stay
/// `running` forever, and the agent it left must not run on unowned.
#[tokio::test]
async fn a_killed_launcher_fails_the_run_clearly_and_stops_the_agent() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let marker = format!("berth-launcher-{}", uuid());
    let a = agent(
        &s,
        &c,
        json!({"command": "sh", "args": ["-c", format!("echo started; sleep 1000 # {marker}")]}),
    )
    .await;
    let id = start_run(&s, &c, json!({"agentId": a, "prompt": "wait"})).await;
    let pid_file = s.runs.path().join(".berth/runs").join(&id).join("pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while group_alive(&marker).is_empty() || !pid_file.exists() {
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let launcher = std::fs::read_to_string(&pid_file).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", launcher.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let run = wait_run(&s, &id, 30).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["errorCode"], "agent_failed", "{run}");
    assert!(
        run["errorMessage"]
            .as_str()
            .unwrap()
            .contains("lost its launcher"),
        "{run}"
    );
    assert!(
        group_alive(&marker).is_empty(),
        "the agent outlived its launcher and its run"
    );
    let steps: Vec<Value> = events(&s, &id)
        .await
        .into_iter()
        .filter_map(|e| e["payload"]["step"].as_str().map(|s| json!(s)))
        .collect();
    assert!(steps.contains(&json!("launcher_lost")), "{steps:?}");
}
