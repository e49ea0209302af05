//! Every CLI adapter end to end through the real server, against its fake CLI (clearly a fake:
//! `berth-agents/fake-clis`), on the local environment and on a real sshd, each with an
//! execution workspace (synced out and back over SSH): success and the saved session, resume on
//! the same environment only, one fresh retry after an unknown session, a CLI lingering after
//! its result, and a CLI that ignores TERM past its timeout.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_testkit::sshd::Sshd;
use common::TestServer;
use futures::future::join_all;
use serde_json::{Value, json};

/// One CLI adapter and how its fake shows a resume in `FAKE_CLI_LOG`.
#[derive(Clone, Copy)]
struct Cli {
    adapter: &'static str,
    fake: &'static str,
    /// The words before the session id when the CLI resumes.
    resume_flag: &'static str,
    /// Whether a fresh run never carries `resume_flag` (Pi passes `--session <new file>`).
    flag_only_on_resume: bool,
}

const CLIS: [Cli; 6] = [
    Cli {
        adapter: "claude_local",
        fake: "claude",
        resume_flag: "--resume",
        flag_only_on_resume: true,
    },
    Cli {
        adapter: "codex_local",
        fake: "codex",
        resume_flag: "resume",
        flag_only_on_resume: true,
    },
    Cli {
        adapter: "cursor",
        fake: "agent",
        resume_flag: "--resume",
        flag_only_on_resume: true,
    },
    Cli {
        adapter: "gemini_local",
        fake: "gemini",
        resume_flag: "--resume",
        flag_only_on_resume: true,
    },
    Cli {
        adapter: "opencode_local",
        fake: "opencode",
        resume_flag: "--session",
        flag_only_on_resume: true,
    },
    Cli {
        adapter: "pi_local",
        fake: "pi",
        resume_flag: "--session",
        flag_only_on_resume: false,
    },
];

impl Cli {
    fn resumes(&self, line: &str, id: &str) -> bool {
        line.contains(&format!(" {} {id}", self.resume_flag))
    }

    /// The invocation starts a fresh session (no resume of `old`, no resume flag at all).
    fn assert_fresh(&self, line: &str, old: Option<&str>) {
        if let Some(old) = old {
            assert!(
                !line.contains(old),
                "{}: resumed {old}: {line}",
                self.adapter
            );
        }
        if self.flag_only_on_resume {
            let flag = format!(" {} ", self.resume_flag);
            assert!(!line.contains(&flag), "{}: {line}", self.adapter);
        }
    }
}

fn fake_cli(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../berth-agents/fake-clis")
        .join(name)
        .canonicalize()
        .unwrap()
}

struct Lab {
    s: TestServer,
    c: String,
    /// The SSH environment's id.
    ssh: String,
    _sshd: Sshd,
    dir: tempfile::TempDir,
}

async fn lab() -> Lab {
    let sshd = Sshd::start_unless_unavailable()
        .unwrap()
        .unwrap_or_else(|| panic!("sshd unavailable"));
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let ssh = s.lab_environment(&c, "lab", &sshd).await;
    Lab {
        s,
        c,
        ssh,
        _sshd: sshd,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// Whether sshd exists; under `CI=true` a missing one fails the test.
fn have_sshd() -> bool {
    Sshd::available().unwrap()
}

/// One agent with its own workspace directory and `FAKE_CLI_LOG`.
struct Subject {
    cli: Cli,
    agent: String,
    ws: String,
    repo: PathBuf,
    log: PathBuf,
}

impl Subject {
    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

async fn subject(lab: &Lab, cli: Cli, tag: &str, env: Value, extra: Value) -> Subject {
    let root = lab.dir.path().join(format!("{}-{tag}", cli.adapter));
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    let log = root.join("argv.log");
    let ws = lab
        .s
        .post(
            &format!("/api/companies/{}/execution-workspaces", lab.c),
            json!({"localPath": repo}),
        )
        .await;
    assert_eq!(ws.status, 201, "{}", ws.text);
    let mut env = env;
    env["FAKE_CLI_LOG"] = json!(log);
    let mut config = json!({"command": fake_cli(cli.fake), "env": env});
    if cli.adapter == "gemini_local" {
        config["model"] = json!("gemini-fake-model");
    }
    if let (Value::Object(c), Value::Object(e)) = (&mut config, extra) {
        c.extend(e);
    }
    let agent = lab
        .s
        .post(
            &format!("/api/companies/{}/agents", lab.c),
            json!({"name": format!("{}-{tag}", cli.adapter), "adapterType": cli.adapter,
                "adapterConfig": config}),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    Subject {
        cli,
        agent: agent.body["id"].as_str().unwrap().to_string(),
        ws: ws.body["id"].as_str().unwrap().to_string(),
        repo,
        log,
    }
}

/// Point the agent (and its workspace, which pins the environment of its last run) at the SSH
/// environment (`Some`) or the local one (`None`).
async fn switch(lab: &Lab, sub: &Subject, ssh: bool) {
    let target = if ssh { json!(lab.ssh) } else { Value::Null };
    let r = lab
        .s
        .patch(
            &format!("/api/agents/{}", sub.agent),
            json!({"defaultEnvironmentId": target}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = lab
        .s
        .patch(
            &format!("/api/execution-workspaces/{}", sub.ws),
            json!({"config": {}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// The finished run and its events.
struct Done {
    run: Value,
    events: Vec<Value>,
    took: Duration,
}

impl Done {
    fn agent_events(&self, kind: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["stream"] == "agent" && e["payload"]["type"] == kind)
            .map(|e| &e["payload"])
            .collect()
    }

    fn steps(&self, step: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["stream"] == "lifecycle" && e["payload"]["step"] == step)
            .map(|e| &e["payload"])
            .collect()
    }

    fn session(&self) -> String {
        self.run["sessionParams"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no saved session: {}", self.run))
            .to_string()
    }

    /// Succeeded, wrote `file` into the local workspace, reported init (with the saved
    /// session id) and a result.
    fn assert_success(&self, sub: &Subject, file: &str, transport: &str) -> String {
        let who = sub.cli.adapter;
        assert_eq!(self.run["status"], "succeeded", "{who}: {}", self.run);
        assert_eq!(
            std::fs::read_to_string(sub.repo.join(file)).ok().as_deref(),
            Some(file.trim_end_matches(".txt")),
            "{who}: the agent's file is in the local workspace"
        );
        let session = self.session();
        assert_eq!(
            self.run["sessionParams"]["remoteIdentity"]["transport"], transport,
            "{who}: {}",
            self.run
        );
        let inits = self.agent_events("init");
        assert!(
            inits.iter().any(|e| e["sessionId"] == session.as_str()),
            "{who}: init {inits:?} vs saved {session}"
        );
        let results = self.agent_events("result");
        assert!(
            results.iter().any(|e| e["ok"] == true),
            "{who}: {results:?}"
        );
        session
    }
}

async fn run(lab: &Lab, sub: &Subject, prompt: &str) -> Done {
    let t0 = Instant::now();
    let r = lab
        .s
        .post(
            &format!("/api/companies/{}/runs", lab.c),
            json!({"agentId": sub.agent, "prompt": prompt, "executionWorkspaceId": sub.ws}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    // The event stream only ends once the run has ended.
    let text = lab.s.get(&format!("/api/runs/{id}/events")).await.text;
    let took = t0.elapsed();
    let events = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e.get("seq").is_some())
        .collect();
    let run = lab.s.get(&format!("/api/runs/{id}")).await.body;
    assert!(
        !matches!(run["status"].as_str(), Some("queued" | "running")),
        "{run}"
    );
    Done { run, events, took }
}

/// Processes whose argv or environment carries `marker` (zombies excluded).
fn alive_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let has = |f: &str| {
                std::fs::read(format!("/proc/{pid}/{f}"))
                    .map(|c| String::from_utf8_lossy(&c).contains(marker))
                    .unwrap_or(false)
            };
            (has("cmdline") || has("environ"))
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| {
                        !s.rsplit_once(')')
                            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                    })
                    .unwrap_or(false)
        })
        .collect()
}

/// Success, resume on the same environment, and never across environments: per adapter
/// local, local (resumes), SSH (fresh, with a reason), SSH (resumes), local (fresh again).
#[tokio::test]
async fn every_adapter_succeeds_resumes_and_never_crosses_environments() {
    if !have_sshd() {
        return;
    }
    let lab = lab().await;
    join_all(CLIS.iter().map(|cli| {
        let lab = &lab;
        async move {
            let sub = subject(lab, *cli, "chain", json!({}), json!({})).await;
            let a = cli.adapter;

            let r1 = run(lab, &sub, "write out-1.txt out-1").await;
            let s1 = r1.assert_success(&sub, "out-1.txt", "local");
            let log = sub.log_lines();
            assert_eq!(log.len(), 1, "{a}: {log:?}");
            cli.assert_fresh(&log[0], None);

            let r2 = run(lab, &sub, "write out-2.txt out-2").await;
            assert_eq!(r2.assert_success(&sub, "out-2.txt", "local"), s1, "{a}");
            assert_eq!(r2.steps("session_resume").len(), 1, "{a}");
            let log = sub.log_lines();
            assert!(cli.resumes(&log[1], &s1), "{a}: {log:?}");

            // The local session is not resumed over SSH.
            switch(lab, &sub, true).await;
            let r3 = run(lab, &sub, "write out-3.txt out-3").await;
            assert_eq!(r3.run["environmentId"], lab.ssh.as_str(), "{a}");
            let s3 = r3.assert_success(&sub, "out-3.txt", "ssh");
            assert_ne!(s3, s1, "{a}");
            let fresh = r3.steps("session_fresh");
            assert_eq!(fresh.len(), 1, "{a}: {:?}", r3.events);
            let reason = fresh[0]["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("local"), "{a}: {reason}");
            let log = sub.log_lines();
            assert_eq!(log.len(), 3, "{a}: {log:?}");
            cli.assert_fresh(&log[2], Some(&s1));

            let r4 = run(lab, &sub, "write out-4.txt out-4").await;
            assert_eq!(r4.assert_success(&sub, "out-4.txt", "ssh"), s3, "{a}");
            let log = sub.log_lines();
            assert!(cli.resumes(&log[3], &s3), "{a}: {log:?}");

            // …and the SSH session is not resumed locally.
            switch(lab, &sub, false).await;
            let r5 = run(lab, &sub, "write out-5.txt out-5").await;
            let s5 = r5.assert_success(&sub, "out-5.txt", "local");
            assert!(s5 != s3 && s5 != s1, "{a}");
            let fresh = r5.steps("session_fresh");
            assert_eq!(fresh.len(), 1, "{a}: {:?}", r5.events);
            let reason = fresh[0]["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("ssh://"), "{a}: {reason}");
            let log = sub.log_lines();
            assert_eq!(log.len(), 5, "{a}: {log:?}");
            cli.assert_fresh(&log[4], Some(&s3));
        }
    }))
    .await;
}

/// An unknown saved session gets exactly one fresh retry (the fakes mint `unknown-…` ids with
/// `FAKE_CLI_ID_PREFIX`). Pi's session is a file Berth checks before resuming: a missing one
/// starts fresh with a reason, without a failed attempt. A Codex that silently ignores the
/// resume id (`FAKE_CLI_IGNORE_RESUME`) is not retried; its new thread is saved.
#[tokio::test]
async fn an_unknown_session_is_retried_once_fresh_on_both_environments() {
    if !have_sshd() {
        return;
    }
    let lab = lab().await;
    let cases: Vec<(Cli, bool)> = CLIS
        .iter()
        .flat_map(|c| [(*c, false), (*c, true)])
        .collect();
    let unknown = join_all(cases.into_iter().map(|(cli, ssh)| {
        let lab = &lab;
        async move {
            let env = json!({"FAKE_CLI_ID_PREFIX": "unknown-"});
            let tag = if ssh { "unknown-ssh" } else { "unknown-local" };
            let transport = if ssh { "ssh" } else { "local" };
            let sub = subject(lab, cli, tag, env, json!({})).await;
            if ssh {
                switch(lab, &sub, true).await;
            }
            let a = format!("{} on {transport}", cli.adapter);
            let r1 = run(lab, &sub, "write one.txt one").await;
            let s1 = r1.assert_success(&sub, "one.txt", transport);
            let r2 = if cli.adapter == "pi_local" {
                // The session file is gone (on this machine either way).
                std::fs::remove_file(&s1).unwrap();
                let r2 = run(lab, &sub, "write two.txt two").await;
                let fresh = r2.steps("session_fresh");
                assert_eq!(fresh.len(), 1, "{a}: {:?}", r2.events);
                assert!(fresh[0]["reason"].as_str().is_some(), "{a}");
                let log = sub.log_lines();
                assert_eq!(log.len(), 2, "{a}: {log:?}");
                cli.assert_fresh(&log[1], Some(&s1));
                r2
            } else {
                assert!(s1.starts_with("unknown-"), "{a}: {s1}");
                let r2 = run(lab, &sub, "write two.txt two").await;
                assert_eq!(r2.steps("session_unknown").len(), 1, "{a}: {:?}", r2.events);
                let log = sub.log_lines();
                assert_eq!(log.len(), 3, "{a}: one fresh retry: {log:?}");
                assert!(cli.resumes(&log[1], &s1), "{a}: {log:?}");
                cli.assert_fresh(&log[2], Some(&s1));
                r2
            };
            let s2 = r2.assert_success(&sub, "two.txt", transport);
            assert_ne!(s2, s1, "{a}: the fresh session is saved");
        }
    }));
    // Codex 0.171 silently starts a new thread for a resume id it cannot use: the run
    // succeeds, the step says so, and the new thread is what gets saved.
    let ignored = join_all([false, true].map(|ssh| {
        let lab = &lab;
        async move {
            let codex = CLIS[1];
            let env = json!({"FAKE_CLI_IGNORE_RESUME": "1"});
            let transport = if ssh { "ssh" } else { "local" };
            let sub = subject(lab, codex, &format!("ignored-{transport}"), env, json!({})).await;
            if ssh {
                switch(lab, &sub, true).await;
            }
            let a = format!("codex_local on {transport}");
            let s1 = run(lab, &sub, "write one.txt one")
                .await
                .assert_success(&sub, "one.txt", transport);
            let r2 = run(lab, &sub, "write two.txt two").await;
            let s2 = r2.assert_success(&sub, "two.txt", transport);
            assert_ne!(s2, s1, "{a}: the new thread is saved");
            let log = sub.log_lines();
            assert_eq!(log.len(), 2, "{a}: no retry: {log:?}");
            assert!(codex.resumes(&log[1], &s1), "{a}: {log:?}");
            let step = r2.steps("session_resume_ignored");
            assert_eq!(step.len(), 1, "{a}: {:?}", r2.events);
            assert_eq!(step[0]["sessionId"], s2.as_str(), "{a}");
        }
    }));
    futures::join!(unknown, ignored);
}

/// A CLI that keeps running after its final result is stopped 5 s later (TERM, then KILL after
/// `graceSec`), nothing of it survives, and its run still succeeds.
#[tokio::test]
async fn a_cli_lingering_after_its_result_is_stopped_and_the_run_succeeds() {
    if !have_sshd() {
        return;
    }
    let lab = lab().await;
    let cases: Vec<(Cli, bool)> = CLIS
        .iter()
        .flat_map(|c| [(*c, false), (*c, true)])
        .collect();
    join_all(cases.into_iter().enumerate().map(|(n, (cli, ssh))| {
        let lab = &lab;
        async move {
            let marker = format!("berth-e2e-linger-{}-{n}-end", std::process::id());
            let env = json!({"FAKE_CLI_LINGER": "60", "FAKE_E2E_MARKER": marker});
            let transport = if ssh { "ssh" } else { "local" };
            let sub = subject(
                lab,
                cli,
                &format!("linger-{transport}"),
                env,
                json!({"graceSec": 2}),
            )
            .await;
            if ssh {
                switch(lab, &sub, true).await;
            }
            let a = format!("{} on {transport}", cli.adapter);
            let done = run(lab, &sub, "write linger.txt linger").await;
            done.assert_success(&sub, "linger.txt", transport);
            assert_eq!(
                done.run["result"]["stopped"], "Lingering",
                "{a}: {}",
                done.run
            );
            assert_eq!(done.steps("stopping").len(), 1, "{a}");
            // Stopped 5 s after the result, and gone within the 2 s grace (plus slack for two
            // busy, shared cores; far below the 60 s the CLI would linger): timed from the events.
            let at = |e: &Value| {
                chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap())
                    .unwrap_or_else(|err| panic!("{a}: {e}: {err}"))
            };
            let result = done
                .events
                .iter()
                .find(|e| e["stream"] == "agent" && e["payload"]["type"] == "result")
                .unwrap();
            let stop = done
                .events
                .iter()
                .position(|e| e["payload"]["step"] == "stopping")
                .unwrap();
            let after = done.events[stop + 1..]
                .iter()
                .find(|e| e["stream"] == "lifecycle")
                .unwrap();
            let waited = (at(&done.events[stop]) - at(result)).num_milliseconds();
            assert!(
                (4_900..9_000).contains(&waited),
                "{a}: stopped {waited} ms after the result"
            );
            let stopping = (at(after) - at(&done.events[stop])).num_milliseconds();
            assert!(
                stopping < 10_000,
                "{a}: the stop took {stopping} ms: {after}"
            );
            assert!(done.took < Duration::from_secs(60), "{a}: {:?}", done.took);
            assert!(
                alive_with(&marker).is_empty(),
                "{a}: a lingering process survived"
            );
        }
    }))
    .await;
}

/// A CLI that ignores TERM and outlives `timeoutSec` ends `timed_out`, and no process of it
/// survives (the group gets KILL after `graceSec`).
#[tokio::test]
async fn a_cli_ignoring_term_times_out_and_leaves_no_process() {
    if !have_sshd() {
        return;
    }
    let lab = lab().await;
    let cases: Vec<(Cli, bool)> = CLIS
        .iter()
        .flat_map(|c| [(*c, false), (*c, true)])
        .collect();
    join_all(cases.into_iter().enumerate().map(|(n, (cli, ssh))| {
        let lab = &lab;
        async move {
            let marker = format!("berth-e2e-timeout-{}-{n}-end", std::process::id());
            let env = json!({"FAKE_CLI_LINGER": "60", "FAKE_CLI_IGNORE_TERM": "1",
                "FAKE_E2E_MARKER": marker});
            let transport = if ssh { "ssh" } else { "local" };
            let extra =
                json!({"timeoutSec": 2, "graceSec": 1, "extraArgs": [format!("--{marker}")]});
            let sub = subject(lab, cli, &format!("timeout-{transport}"), env, extra).await;
            if ssh {
                switch(lab, &sub, true).await;
            }
            let a = format!("{} on {transport}", cli.adapter);
            let done = run(lab, &sub, "write slow.txt slow").await;
            assert_eq!(done.run["status"], "timed_out", "{a}: {}", done.run);
            assert_eq!(done.run["errorCode"], "timed_out", "{a}");
            let log = sub.log_lines();
            assert_eq!(log.len(), 1, "{a}: {log:?}");
            assert!(log[0].contains(&marker), "{a}: {log:?}");
            assert!(
                alive_with(&marker).is_empty(),
                "{a}: a process survived the timeout"
            );
        }
    }))
    .await;
}
