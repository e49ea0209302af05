//! Runs survive the control plane: `berth serve` killed with SIGKILL, or stopped with
//! SIGTERM, while agents run; the next start of the same `BERTH_HOME` re-attaches to every
//! agent still running, streams the rest of its output exactly once, restores the workspace
//! and releases the lease.
//!
//! On PostgreSQL, a second instance takes the runs of one killed with SIGKILL once their leases
//! expire.
//!
//! Knob: `BERTH_CRASH_RUNS` (default 10) runs per scenario.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on any problem"
)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testkit::sshd::Sshd;
use serde_json::{Value, json};
use support::{spawn_serve, spawn_serve_with};

/// Lines each agent prints, one every 0.2 s.
const LINES: u32 = 50;

fn runs_per_scenario() -> usize {
    std::env::var("BERTH_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// The run's events (the stream ends once the run has ended).
    async fn events(&self, run: &str) -> Vec<(String, Value)> {
        let text = self
            .http
            .get(format!("{}/api/runs/{run}/events", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut kind = String::new();
        for line in text.lines() {
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                out.push((kind.clone(), serde_json::from_str(d).unwrap_or(Value::Null)));
            }
        }
        out
    }

    /// Register `sshd` as an SSH environment of company `c`; returns its id.
    async fn ssh_environment(&self, c: &str, name: &str, capacity: u32, sshd: &Sshd) -> String {
        let env = self
            .post(
                &format!("/api/companies/{c}/environments"),
                json!({"name": name, "driver": "ssh", "capacity": capacity, "config": {
                    "host": sshd.host, "port": sshd.port, "username": sshd.username,
                    "remoteWorkspacePath": sshd.workspace, "privateKey": sshd.client_private_key,
                    "knownHosts": sshd.known_hosts}}),
            )
            .await;
        env["id"].as_str().unwrap().to_string()
    }

    async fn company(&self) -> String {
        let list = self.get("/api/companies").await;
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "default")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// `berth serve` on a fresh `BERTH_HOME` (in `dir`), with a `progress` directory agents mark.
struct Served {
    dir: tempfile::TempDir,
    home: std::path::PathBuf,
    progress: std::path::PathBuf,
    server: std::process::Child,
    api: Api,
    company: String,
}

impl Served {
    async fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let progress = dir.path().join("progress");
        std::fs::create_dir(&progress).unwrap();
        let (server, url) = spawn_serve(&home);
        let api = Api::new(&url);
        let company = api.company().await;
        Served {
            dir,
            home,
            progress,
            server,
            api,
            company,
        }
    }
}

/// After its lines, an agent calls the API with its run token through `BERTH_API_URL` (which
/// must lead to the restarted server).
const CALL_API: &str = "import json, os, urllib.request\n\
req = urllib.request.Request(os.environ['BERTH_API_URL'] + '/api/runs/' + os.environ['BERTH_RUN_ID'],\n\
    headers={'Authorization': 'Bearer ' + os.environ['BERTH_API_TOKEN']})\n\
print('api', json.load(urllib.request.urlopen(req, timeout=10))['status'])\n";

/// An agent printing `LINES` numbered lines and marking its progress in `progress/<run>`.
async fn printing_agent(api: &Api, c: &str, env: Option<&str>, progress: &Path) -> String {
    let call = "; python3 -c \"$CALL_API\"";
    let script = format!(
        "for i in $(seq 1 {LINES}); do echo \"line $i of $BERTH_RUN_ID\"; echo \"$i\" > \"$PROGRESS/$BERTH_RUN_ID\"; \
         sleep 0.2; done; echo written-remotely > made-by-agent.txt{call}"
    );
    let agent = api
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": format!("printer-{}", uuid::Uuid::now_v7()), "adapterType": "process",
                "defaultEnvironmentId": env,
                "adapterConfig": {"command": "sh", "args": ["-c", script],
                    "env": {"PROGRESS": progress, "CALL_API": CALL_API}}}),
        )
        .await;
    agent["id"].as_str().unwrap().to_string()
}

fn progress_of(progress: &Path, run: &str) -> u32 {
    std::fs::read_to_string(progress.join(run))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_terminal(api: &Api, run: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let r = api.get(&format!("/api/runs/{run}")).await;
        if !matches!(r["status"].as_str(), Some("queued" | "running")) {
            return r;
        }
        assert!(Instant::now() < deadline, "run {run} did not finish: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every line exactly once, in order, then `tail`; nothing else on stdout.
async fn assert_byte_exact(api: &Api, run: &str, tail: &str) {
    let events = api.events(run).await;
    let stdout: String = events
        .iter()
        .filter(|(k, _)| k == "stdout")
        .map(|(_, p)| p["payload"]["text"].as_str().unwrap_or_default())
        .collect();
    let mut expected: String = (1..=LINES)
        .map(|i| format!("line {i} of {run}\n"))
        .collect();
    expected.push_str(tail);
    assert_eq!(stdout, expected, "run {run}'s output after the restart");
    assert!(
        events
            .iter()
            .any(|(k, p)| k == "lifecycle" && p["payload"]["step"] == "reattaching"),
        "run {run} was re-attached"
    );
}

fn kill(child: &mut std::process::Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Wait until every run has printed at least 2 lines but none has finished.
async fn wait_mid_run(progress: &Path, runs: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while runs.iter().any(|r| progress_of(progress, r) < 2) {
        assert!(Instant::now() < deadline, "the runs did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        runs.iter().all(|r| progress_of(progress, r) < LINES),
        "a run finished before the server stopped; raise LINES"
    );
}

/// Two runs on an environment with one slot: returns (the one printing, the one waiting for
/// the lease).
async fn one_printing_one_waiting(
    api: &Api,
    c: &str,
    env: &str,
    progress: &Path,
) -> (String, String) {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let agent = printing_agent(api, c, Some(env), progress).await;
        let run = api
            .post(
                &format!("/api/companies/{c}/runs"),
                json!({"agentId": agent, "prompt": "print"}),
            )
            .await;
        runs.push(run["id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = api.get(&format!("/api/runs/{}", runs[0])).await;
        let b = api.get(&format!("/api/runs/{}", runs[1])).await;
        let printing = |r: &str| progress_of(progress, r) >= 2;
        if printing(&runs[0]) && b["phase"] == "lease" {
            return (runs[0].clone(), runs[1].clone());
        }
        if printing(&runs[1]) && a["phase"] == "lease" {
            return (runs[1].clone(), runs[0].clone());
        }
        assert!(
            Instant::now() < deadline,
            "never one printing, one waiting: {a} {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The run was queued again after the stop and then ran once, from the start, to the end.
async fn assert_requeued_and_ran_once(api: &Api, run: &str) {
    let r = wait_terminal(api, run).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let events = api.events(run).await;
    assert!(
        events
            .iter()
            .any(|(k, p)| k == "lifecycle" && p["payload"]["step"] == "requeued"),
        "the waiting run was queued again"
    );
    let stdout: String = events
        .iter()
        .filter(|(k, _)| k == "stdout")
        .map(|(_, p)| p["payload"]["text"].as_str().unwrap_or_default())
        .collect();
    let mut expected: String = (1..=LINES)
        .map(|i| format!("line {i} of {run}\n"))
        .collect();
    expected.push_str("api running\n");
    assert_eq!(
        stdout, expected,
        "the requeued run ran once, from the start"
    );
}

/// A local directory `repo` under `dir` with a README, registered as an execution workspace.
async fn local_workspace(api: &Api, c: &str, dir: &Path) -> (std::path::PathBuf, Value) {
    let repo = dir.join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("README.md"), "local\n").unwrap();
    let ws = api
        .post(
            &format!("/api/companies/{c}/execution-workspaces"),
            json!({"localPath": repo}),
        )
        .await;
    (repo, ws)
}

async fn no_active_leases(api: &Api, env: &str) {
    let leases = api.get(&format!("/api/environments/{env}/leases")).await;
    let active: Vec<&Value> = leases
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["status"] == "active")
        .collect();
    assert!(active.is_empty(), "stale active leases: {active:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_runs_survive_a_sigkilled_server_and_finish_byte_exact_with_their_workspace() {
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let Served {
        dir,
        home,
        progress,
        server: mut first,
        api,
        company: c,
    } = Served::start().await;
    let env = api.ssh_environment(&c, "lab", 64, &sshd).await;
    // One run works on a synced workspace: it must come back after the restart.
    let (repo, ws) = local_workspace(&api, &c, dir.path()).await;
    let mut runs = Vec::new();
    for i in 0..runs_per_scenario() {
        // An agent each: runs of one agent without a workspace share a lease scope.
        let agent = printing_agent(&api, &c, Some(&env), &progress).await;
        let mut body = json!({"agentId": agent, "prompt": "print"});
        if i == 0 {
            body["executionWorkspaceId"] = ws["id"].clone();
        }
        let run = api.post(&format!("/api/companies/{c}/runs"), body).await;
        runs.push(run["id"].as_str().unwrap().to_string());
    }
    wait_mid_run(&progress, &runs).await;
    kill(&mut first, "-KILL");
    first.wait().unwrap();

    let (mut second, url) = spawn_serve(&home);
    let api = Api::new(&url);
    for run in &runs {
        let r = wait_terminal(&api, run).await;
        assert_eq!(r["status"], "succeeded", "{r}");
        // The agent's BERTH_API_URL leads to the restarted server, its token still valid.
        assert_byte_exact(&api, run, "api running\n").await;
    }
    assert_eq!(
        std::fs::read_to_string(repo.join("made-by-agent.txt")).unwrap(),
        "written-remotely\n",
        "the workspace was restored after the restart"
    );
    no_active_leases(&api, &env).await;
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_detaches_local_runs_and_the_next_start_finishes_them() {
    let Served {
        dir: _dir,
        home,
        progress,
        server: mut first,
        api,
        company: c,
    } = Served::start().await;
    let mut runs = Vec::new();
    for _ in 0..runs_per_scenario() {
        let agent = printing_agent(&api, &c, None, &progress).await;
        let run = api
            .post(
                &format!("/api/companies/{c}/runs"),
                json!({"agentId": agent, "prompt": "print"}),
            )
            .await;
        runs.push(run["id"].as_str().unwrap().to_string());
    }
    wait_mid_run(&progress, &runs).await;
    kill(&mut first, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = first.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "berth serve did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "berth serve exited with {status}");
    // The agents did not stop with the server.
    let seen: Vec<u32> = runs.iter().map(|r| progress_of(&progress, r)).collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        runs.iter()
            .zip(&seen)
            .any(|(r, before)| progress_of(&progress, r) > *before),
        "the agents kept running while no server was up"
    );

    let (mut second, url) = spawn_serve(&home);
    let api = Api::new(&url);
    let local = api.company().await;
    assert_eq!(local, c);
    for run in &runs {
        let r = wait_terminal(&api, run).await;
        assert_eq!(r["status"], "succeeded", "{r}");
        // The agent's BERTH_API_URL leads to the restarted server's agents' listener.
        assert_byte_exact(&api, run, "api running\n").await;
        let events = api.events(run).await;
        assert!(
            events
                .iter()
                .any(|(k, p)| k == "lifecycle" && p["payload"]["step"] == "detached"),
            "run {run} detached at SIGTERM"
        );
    }
    let _ = second.kill();
    let _ = second.wait();
}

/// A run the killed server had not launched yet (here: waiting for its environment's only
/// slot) is queued again at the next start and runs from the start; the one that was running
/// is re-attached. Nothing is lost and nothing runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_before_its_launch_is_queued_again_and_runs() {
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let Served {
        dir: _dir,
        home,
        progress,
        server: mut first,
        api,
        company: c,
    } = Served::start().await;
    let env = api.ssh_environment(&c, "one-slot", 1, &sshd).await;
    let (running, waiting) = one_printing_one_waiting(&api, &c, &env, &progress).await;
    kill(&mut first, "-KILL");
    first.wait().unwrap();

    let (mut second, url) = spawn_serve(&home);
    let api = Api::new(&url);
    let r = wait_terminal(&api, &running).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_byte_exact(&api, &running, "api running\n").await;
    assert_requeued_and_ran_once(&api, &waiting).await;
    no_active_leases(&api, &env).await;
    let _ = second.kill();
    let _ = second.wait();
}

/// Two `berth serve` instances on one PostgreSQL database; the one executing the runs is
/// killed with SIGKILL mid-run. Once its leases expire the other adopts every run, re-attaches,
/// and finishes each byte-exact — the agents' API callbacks reaching the new instance — with
/// no lease left active. A run the dead instance had not launched (waiting for the only slot
/// of its environment) is queued again once the instance falls silent, and runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_runs_of_a_sigkilled_instance_are_finished_by_another() {
    let Some(db) = berth_testkit::pg::TestDatabase::create_or_skip()
        .await
        .unwrap()
    else {
        return;
    };
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let progress = dir.path().join("progress");
    std::fs::create_dir(&progress).unwrap();
    let key = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
    let vars = [
        ("BERTH_DATABASE_URL", db.url()),
        ("BERTH_MASTER_KEY", key),
        ("BERTH_LEASE_TTL", "3"),
    ];
    let (mut first, url) = spawn_serve_with(&dir.path().join("a"), &vars);
    let api = Api::new(&url);
    let c = api.company().await;
    let env = api.ssh_environment(&c, "lab", 64, &sshd).await;
    let mut runs = Vec::new();
    for _ in 0..runs_per_scenario().min(5) {
        let agent = printing_agent(&api, &c, Some(&env), &progress).await;
        let run = api
            .post(
                &format!("/api/companies/{c}/runs"),
                json!({"agentId": agent, "prompt": "print"}),
            )
            .await;
        runs.push(run["id"].as_str().unwrap().to_string());
    }
    let one_slot = api.ssh_environment(&c, "one-slot", 1, &sshd).await;
    let (running, waiting) = one_printing_one_waiting(&api, &c, &one_slot, &progress).await;
    runs.push(running);
    wait_mid_run(&progress, &runs).await;
    // Started only now, so the first instance claimed every run.
    let (mut second, url) = spawn_serve_with(&dir.path().join("b"), &vars);
    let claimed: Vec<Value> = {
        let mut v = Vec::new();
        for run in &runs {
            v.push(api.get(&format!("/api/runs/{run}")).await["claimedBy"].clone());
        }
        v
    };
    kill(&mut first, "-KILL");
    first.wait().unwrap();

    let api = Api::new(&url);
    for (run, first_claimer) in runs.iter().zip(&claimed) {
        let r = wait_terminal(&api, run).await;
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_ne!(
            &r["claimedBy"], first_claimer,
            "adopted by the other instance: {r}"
        );
        assert_byte_exact(&api, run, "api running\n").await;
    }
    assert_requeued_and_ran_once(&api, &waiting).await;
    no_active_leases(&api, &env).await;
    no_active_leases(&api, &one_slot).await;
    let _ = second.kill();
    let _ = second.wait();
    db.cleanup().await.unwrap();
}

/// A sandboxed agent (network `none`) outlives a SIGKILLed server: the next start re-attaches,
/// streams the rest exactly once, re-opens the API bridge on the agent's unchanged
/// `BERTH_API_URL`, and restores the sandbox's copy of the workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_run_survives_a_sigkilled_server_and_reaches_the_new_one() {
    let support = berth_exec::sandbox::host_support();
    if !berth_testkit::require(
        &format!("a working bwrap ({:?})", support.as_ref().err()),
        support.is_ok(),
    )
    .unwrap()
    {
        return;
    }
    let Served {
        dir,
        home,
        progress: _,
        server: mut first,
        api,
        company: c,
    } = Served::start().await;
    let env = api
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "box", "driver": "sandbox", "config": {"network": "none"}}),
        )
        .await;
    let env = env["id"].as_str().unwrap().to_string();
    let (repo, ws) = local_workspace(&api, &c, dir.path()).await;
    // The host's progress directory is invisible in the sandbox: progress is read from the
    // run's stdout file instead. printf is a builtin: the token stays out of every argv.
    let script = format!(
        "for i in $(seq 1 {LINES}); do echo \"line $i of $BERTH_RUN_ID\"; sleep 0.2; done; \
         echo written-in-the-sandbox > made-by-agent.txt; hp=${{BERTH_API_URL#http://}}; \
         s=$(printf 'GET /api/runs/%s HTTP/1.0\\r\\nHost: %s\\r\\nAuthorization: Bearer %s\\r\\n\\r\\n' \
         \"$BERTH_RUN_ID\" \"$hp\" \"$BERTH_API_TOKEN\" | socat -t 1 STDIO,ignoreeof \"TCP:$hp\" | head -n 1 | tr -d '\\r'); \
         echo \"api $s\""
    );
    let agent = api
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "boxed-printer", "adapterType": "process", "defaultEnvironmentId": env,
                "adapterConfig": {"command": "sh", "args": ["-c", script]}}),
        )
        .await;
    let run = api
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent["id"], "prompt": "print", "executionWorkspaceId": ws["id"]}),
        )
        .await;
    let run = run["id"].as_str().unwrap().to_string();
    let runs_root = {
        let mut name = home.file_name().unwrap().to_os_string();
        name.push("-runs");
        home.with_file_name(name)
    };
    let stdout = runs_root
        .join("sandboxes")
        .join(&env)
        .join(".berth/runs")
        .join(&run)
        .join("stdout");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = std::fs::read_to_string(&stdout)
            .unwrap_or_default()
            .lines()
            .count();
        if lines >= 2 {
            assert!(lines < LINES as usize, "the run finished before the kill");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sandboxed agent never printed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill(&mut first, "-KILL");
    first.wait().unwrap();

    let (mut second, url) = spawn_serve(&home);
    let api = Api::new(&url);
    let r = wait_terminal(&api, &run).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_byte_exact(&api, &run, "api HTTP/1.0 200 OK\n").await;
    assert_eq!(
        std::fs::read_to_string(repo.join("made-by-agent.txt")).unwrap(),
        "written-in-the-sandbox\n",
        "the sandbox's copy was restored after the restart"
    );
    no_active_leases(&api, &env).await;
    let _ = second.kill();
    let _ = second.wait();
}
