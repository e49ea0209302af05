//! The REAL agent CLIs (pinned, from npm: `scripts/install-agent-clis`, whose bin directory the
//! test command exports as `BERTH_AGENT_CLI_BIN`) end to end through the real server, on the
//! local environment and on a real sshd, each against its own scripted model API
//! (`berth_testkit::model_api`, the only stand-in) on 127.0.0.1. Per CLI and environment: a run
//! whose model asks for a file ends `succeeded` with the file restored into the local workspace
//! and init/usage/result events; a second run resumes the same session (the model sees the
//! first run's turn); after the CLI's own session store loses the session, the CLI's real
//! unknown-session error gets one fresh retry (Pi: the missing session file starts fresh); a
//! model API error ends the run `failed` with the API's message in its events. Then the probe
//! of both environments reports each CLI's version.
//!
//! Debugging knobs: `BERTH_REAL_CLIS=codex,pi` runs only those CLIs; `BERTH_DUMP_TURNS=<file>`
//! writes every request the model API got to `<file>` when a run fails. Cursor's CLI is not on npm and is not covered here.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use berth_testkit::model_api::{ModelApi, Reply, Request};
use berth_testkit::sshd::Sshd;
use common::TestServer;
use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// CLI runs at once: each is a Node process that needs most of a core while it starts.
const PARALLEL: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cli {
    Claude,
    Codex,
    Gemini,
    Opencode,
    Pi,
}

const CLIS: [Cli; 5] = [Cli::Claude, Cli::Codex, Cli::Gemini, Cli::Opencode, Cli::Pi];

impl Cli {
    fn adapter(self) -> &'static str {
        match self {
            Cli::Claude => "claude_local",
            Cli::Codex => "codex_local",
            Cli::Gemini => "gemini_local",
            Cli::Opencode => "opencode_local",
            Cli::Pi => "pi_local",
        }
    }

    fn bin(self) -> &'static str {
        match self {
            Cli::Claude => "claude",
            Cli::Codex => "codex",
            Cli::Gemini => "gemini",
            Cli::Opencode => "opencode",
            Cli::Pi => "pi",
        }
    }

    /// The version `scripts/install-agent-clis` pins, as `--version` prints it.
    fn version(self) -> &'static str {
        match self {
            Cli::Claude => "2.1.197",
            Cli::Codex => "0.171.0",
            Cli::Gemini => "0.61.0",
            Cli::Opencode => "1.18.33",
            Cli::Pi => "1.5.2",
        }
    }
}

/// The pinned CLIs' bin directory: `BERTH_AGENT_CLI_BIN`, else an existing install of
/// `scripts/install-agent-clis`. Missing under `CI=true` fails the test.
fn agent_bin() -> Option<PathBuf> {
    let from_env = std::env::var_os("BERTH_AGENT_CLI_BIN").map(PathBuf::from);
    let found = from_env.or_else(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-agent-clis");
        let out = std::process::Command::new(script)
            .arg("--print-bin")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    let found = found.filter(|b| CLIS.iter().all(|c| b.join(c.bin()).exists()));
    berth_testkit::require(
        "the pinned agent CLIs (run scripts/install-agent-clis, or set BERTH_AGENT_CLI_BIN)",
        found.is_some(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .then_some(())?;
    found
}

fn have_sshd() -> bool {
    Sshd::available().unwrap()
}

struct Lab {
    s: TestServer,
    c: String,
    ssh: String,
    _sshd: Sshd,
    dir: tempfile::TempDir,
    bin: PathBuf,
    slots: Arc<Semaphore>,
}

async fn lab(bin: PathBuf) -> Lab {
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
        bin,
        slots: Arc::new(Semaphore::new(PARALLEL)),
    }
}

/// One agent on one environment, with its own workspace, HOME, config and model API.
struct Subject {
    cli: Cli,
    ssh: bool,
    agent: String,
    ws: String,
    repo: PathBuf,
    home: PathBuf,
    /// `<root>/.berth/assets` of the subject's environment (both are on this machine).
    assets: PathBuf,
    api: ModelApi,
}

impl Subject {
    fn who(&self) -> String {
        format!(
            "{} on {}",
            self.cli.adapter(),
            if self.ssh { "ssh" } else { "local" }
        )
    }

    fn transport(&self) -> &'static str {
        if self.ssh { "ssh" } else { "local" }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The adapterConfig that points `cli` at `api` with every file it writes under `root`.
fn adapter_config(lab: &Lab, cli: Cli, root: &Path, home: &Path, api: &ModelApi) -> Value {
    let url = &api.base_url;
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", lab.bin.display());
    let mut env = json!({"HOME": home, "PATH": path});
    let mut config = json!({"command": lab.bin.join(cli.bin()), "timeoutSec": 60, "graceSec": 5});
    match cli {
        Cli::Claude => {
            env["ANTHROPIC_BASE_URL"] = json!(url);
            env["ANTHROPIC_API_KEY"] = json!("mock");
            env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = json!("1");
            env["DISABLE_AUTOUPDATER"] = json!("1");
            config["allowedTools"] = json!(["Write"]);
        }
        Cli::Codex => {
            // The `home` asset becomes CODEX_HOME on the environment; it is synced in merge
            // mode, so the rollouts Codex writes there survive the next run's sync.
            let codex_home = root.join("codex-home");
            write(
                &codex_home.join("config.toml"),
                &format!(
                    "model = \"mock-1\"\nmodel_provider = \"mock\"\n\n[model_providers.mock]\n\
                     name = \"Mock\"\nbase_url = \"{url}/v1\"\nenv_key = \"MOCK_API_KEY\"\n\
                     wire_api = \"responses\"\n"
                ),
            );
            env["MOCK_API_KEY"] = json!("mock");
            config["assets"] = json!({"home": codex_home});
            config["sandbox"] = json!("danger-full-access");
        }
        Cli::Gemini => {
            write(
                &home.join(".gemini/settings.json"),
                r#"{"security":{"auth":{"selectedType":"gemini-api-key"}}}"#,
            );
            env["GEMINI_API_KEY"] = json!("mock");
            env["GOOGLE_GEMINI_BASE_URL"] = json!(url);
            config["model"] = json!("gemini-2.5-flash");
            config["yolo"] = json!(true);
        }
        Cli::Opencode => {
            let xdg = root.join("xdg-config");
            write(
                &xdg.join("opencode/opencode.json"),
                &json!({"autoupdate": false, "share": "disabled", "provider": {"mock": {
                    "npm": "@ai-sdk/openai-compatible", "name": "Mock",
                    "options": {"baseURL": format!("{url}/v1"), "apiKey": "mock"},
                    "models": {"mock-1": {"name": "Mock 1", "tool_call": true}}}}})
                .to_string(),
            );
            env["OPENCODE_DISABLE_MODELS_FETCH"] = json!("1");
            env["OPENCODE_DISABLE_AUTOUPDATE"] = json!("1");
            config["assets"] = json!({"xdgConfig": xdg});
            config["model"] = json!("mock/mock-1");
        }
        Cli::Pi => {
            let agent_dir = root.join("pi-agent");
            write(
                &agent_dir.join("models.json"),
                &json!({"providers": {"mock": {"baseUrl": format!("{url}/v1"),
                    "api": "openai-completions", "apiKey": "mock",
                    "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
                    "models": [{"id": "mock-1"}]}}})
                .to_string(),
            );
            env["PI_OFFLINE"] = json!("1");
            config["assets"] = json!({"agentConfig": agent_dir});
            config["provider"] = json!("mock");
            config["model"] = json!("mock-1");
        }
    }
    config["env"] = env;
    config
}

async fn subject(lab: &Lab, cli: Cli, ssh: bool) -> Subject {
    let tag = if ssh { "ssh" } else { "local" };
    let root = lab.dir.path().join(format!("{}-{tag}", cli.adapter()));
    let repo = root.join("repo");
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();
    write(&repo.join("README.md"), "hello\n");
    // A git repository, as agents' workspaces usually are — except Codex's on SSH, which proves
    // `skipGitRepoCheck` (Codex refuses to run outside a git repository without it).
    let plain = cli == Cli::Codex && ssh;
    if !plain {
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(
            &repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "init",
            ],
        );
    }
    let api = ModelApi::start().await.unwrap();
    let ws = lab
        .s
        .post(
            &format!("/api/companies/{}/execution-workspaces", lab.c),
            json!({"localPath": repo}),
        )
        .await;
    assert_eq!(ws.status, 201, "{}", ws.text);
    let mut config = adapter_config(lab, cli, &root, &home, &api);
    if plain {
        config["skipGitRepoCheck"] = json!(true);
    }
    let mut body = json!({"name": format!("{}-{tag}", cli.adapter()),
        "adapterType": cli.adapter(), "adapterConfig": config});
    if ssh {
        body["defaultEnvironmentId"] = json!(lab.ssh);
    }
    let agent = lab
        .s
        .post(&format!("/api/companies/{}/agents", lab.c), body)
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    Subject {
        cli,
        ssh,
        agent: agent.body["id"].as_str().unwrap().to_string(),
        ws: ws.body["id"].as_str().unwrap().to_string(),
        repo,
        home,
        assets: if ssh {
            lab._sshd.workspace.join(".berth/assets")
        } else {
            lab.s.runs.path().join(".berth/assets")
        },
        api,
    }
}

/// The finished run and its events.
struct Done {
    run: Value,
    events: Vec<Value>,
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

    /// The run's events, one JSON payload a line (for failure messages).
    fn transcript(&self) -> String {
        self.events
            .iter()
            .map(|e| e["payload"].to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Succeeded, `file` is in the local workspace, and the events carry init (with the
    /// saved session id), usage and an ok result. Returns the saved session id.
    fn assert_success(&self, sub: &Subject, file: &str) -> String {
        let who = sub.who();
        if self.run["status"] != "succeeded" {
            if let Ok(f) = std::env::var("BERTH_DUMP_TURNS") {
                let all: Vec<Value> = sub
                    .api
                    .requests()
                    .iter()
                    .map(|r| json!({"path": r.path, "turn": r.turn, "body": r.body}))
                    .collect();
                std::fs::write(f, serde_json::to_string_pretty(&all).unwrap()).unwrap();
            }
            let last = sub.api.turns().last().map(|t| t.summary());
            let lines = self.transcript();
            let tail: String = lines
                .chars()
                .skip(lines.chars().count().saturating_sub(6000))
                .collect();
            panic!(
                "{who}: {}\n…{tail}\nthe model's last turn:\n{}",
                self.run,
                last.unwrap_or_default()
            );
        }
        assert_eq!(
            std::fs::read_to_string(sub.repo.join(file))
                .ok()
                .as_deref()
                .map(str::trim_end),
            Some(file.trim_end_matches(".txt")),
            "{who}: the CLI's file is in the local workspace\n{}",
            self.transcript()
        );
        let session = self.run["sessionParams"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("{who}: no saved session: {}", self.run))
            .to_string();
        assert_eq!(
            self.run["sessionParams"]["remoteIdentity"]["transport"],
            sub.transport(),
            "{who}: {}",
            self.run
        );
        let inits = self.agent_events("init");
        assert!(
            inits.iter().any(|e| e["sessionId"] == session.as_str()),
            "{who}: init {inits:?} vs saved {session}"
        );
        let usage = self.agent_events("usage");
        let input: u64 = usage
            .iter()
            .map(|u| u["inputTokens"].as_u64().unwrap_or(0))
            .sum();
        let output: u64 = usage
            .iter()
            .map(|u| u["outputTokens"].as_u64().unwrap_or(0))
            .sum();
        assert!(
            input >= berth_testkit::model_api::INPUT_TOKENS
                && output >= berth_testkit::model_api::OUTPUT_TOKENS,
            "{who}: usage {usage:?}"
        );
        let results = self.agent_events("result");
        assert!(
            results.iter().any(|e| e["ok"] == true),
            "{who}: {results:?}"
        );
        let tools = self.agent_events("tool_use");
        assert!(!tools.is_empty(), "{who}: the CLI reported no tool call");
        session
    }
}

async fn run(lab: &Lab, sub: &Subject, prompt: &str) -> Done {
    let _slot = lab.slots.acquire().await.unwrap();
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
    Done { run, events }
}

/// Files under `dir` whose name contains `needle` (recursively).
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files_containing(&p, needle));
        } else if e.file_name().to_string_lossy().contains(needle) {
            out.push(p);
        }
    }
    out
}

/// Make the CLI lose `session` from its own store, as a wiped or foreign machine would.
fn forget_session(sub: &Subject, session: &str) {
    let who = sub.who();
    match sub.cli {
        Cli::Claude => {
            let files = files_containing(&sub.home.join(".claude/projects"), session);
            assert!(!files.is_empty(), "{who}: no transcript of {session}");
            for f in files {
                std::fs::remove_file(f).unwrap();
            }
        }
        Cli::Codex => {
            let files = files_containing(&sub.assets.join("codex_local/home/sessions"), session);
            assert!(!files.is_empty(), "{who}: no rollout of {session}");
            for f in files {
                std::fs::remove_file(f).unwrap();
            }
        }
        Cli::Gemini => {
            let dir = sub.home.join(".gemini/tmp");
            assert!(dir.is_dir(), "{who}: no {}", dir.display());
            std::fs::remove_dir_all(dir).unwrap();
        }
        Cli::Opencode => {
            let dir = sub.home.join(".local/share/opencode");
            assert!(dir.is_dir(), "{who}: no {}", dir.display());
            std::fs::remove_dir_all(dir).unwrap();
        }
        Cli::Pi => std::fs::remove_file(session).unwrap(),
    }
}

/// Per CLI and environment: success with the file restored and the events, a resume of the
/// same session that the model sees, and one fresh retry after the CLI lost the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_real_cli_succeeds_resumes_and_retries_an_unknown_session_on_both_environments() {
    let Some(bin) = agent_bin() else { return };
    if !have_sshd() {
        return;
    }
    let t0 = Instant::now();
    let lab = lab(bin).await;
    // BERTH_REAL_CLIS=codex,pi narrows the matrix while debugging one CLI.
    let only = std::env::var("BERTH_REAL_CLIS").unwrap_or_default();
    let cases: Vec<(Cli, bool)> = CLIS
        .iter()
        .filter(|c| only.is_empty() || only.split(',').any(|o| o == c.bin()))
        .flat_map(|c| [(*c, false), (*c, true)])
        .collect();
    join_all(cases.into_iter().map(|(cli, ssh)| {
        let lab = &lab;
        async move {
            let sub = subject(lab, cli, ssh).await;
            let who = sub.who();

            let r1 = run(lab, &sub, "write out-1.txt out-1").await;
            let s1 = r1.assert_success(&sub, "out-1.txt");
            let turns = sub.api.turns();
            assert!(
                turns.len() >= 2,
                "{who}: a tool call and the final answer: {turns:?}"
            );

            sub.api.clear_requests();
            let r2 = run(lab, &sub, "write out-2.txt out-2").await;
            let s2 = r2.assert_success(&sub, "out-2.txt");
            assert_eq!(
                s2,
                s1,
                "{who}: the second run resumed the session\n{}",
                r2.transcript()
            );
            assert_eq!(r2.steps("session_resume").len(), 1, "{who}");
            assert!(r2.steps("session_unknown").is_empty(), "{who}");
            let turns = sub.api.turns();
            assert!(
                !turns.is_empty()
                    && turns
                        .iter()
                        .all(|t| t.has_prompt_containing("write out-1.txt out-1")
                            && t.has_prompt_containing("write out-2.txt out-2")),
                "{who}: the model saw the first run's turn: {:?}",
                turns.iter().map(Request::user_prompts).collect::<Vec<_>>()
            );

            forget_session(&sub, &s2);
            sub.api.clear_requests();
            let r3 = run(lab, &sub, "write out-3.txt out-3").await;
            let s3 = r3.assert_success(&sub, "out-3.txt");
            assert_ne!(s3, s1, "{who}: the fresh session is saved");
            if cli == Cli::Pi {
                // Berth reads the session file before resuming: a missing one starts fresh.
                let fresh = r3.steps("session_fresh");
                assert_eq!(fresh.len(), 1, "{who}: {}", r3.transcript());
            } else {
                assert_eq!(
                    r3.steps("session_unknown").len(),
                    1,
                    "{who}: the CLI's unknown-session error was recognized\n{}",
                    r3.transcript()
                );
                let started = r3.steps("agent_started");
                assert_eq!(started.len(), 2, "{who}: one fresh retry");
            }
            let turns = sub.api.turns();
            assert!(
                turns
                    .iter()
                    .all(|t| !t.has_prompt_containing("write out-1.txt out-1")),
                "{who}: the fresh session does not carry the lost turns"
            );

            // A model API error ends the run failed, with the API's message in its events.
            sub.api.push(Reply::Error {
                status: 400,
                message: "berth-mock-refusal".into(),
            });
            let r4 = run(lab, &sub, "write out-4.txt out-4").await;
            assert_eq!(r4.run["status"], "failed", "{who}: {}", r4.transcript());
            assert!(
                r4.transcript().contains("berth-mock-refusal"),
                "{who}: the API error is reported\n{}",
                r4.transcript()
            );
            assert!(!sub.repo.join("out-4.txt").exists(), "{who}");
        }
    }))
    .await;
    eprintln!("real CLIs: runs done in {:?}", t0.elapsed());
    let clis: Vec<Cli> = CLIS
        .into_iter()
        .filter(|c| only.is_empty() || only.split(',').any(|o| o == c.bin()))
        .collect();
    assert_probe_reports_versions(&lab, &clis).await;
    eprintln!("real CLIs: probed in {:?}", t0.elapsed());
}

/// The probe finds each configured CLI (the agents' absolute `command`s) on both environments
/// and reports the version it prints.
async fn assert_probe_reports_versions(lab: &Lab, clis: &[Cli]) {
    let envs = lab
        .s
        .get(&format!("/api/companies/{}/environments", lab.c))
        .await;
    let local = envs
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["driver"] == "local")
        .unwrap_or_else(|| panic!("no local environment: {}", envs.text))["id"]
        .as_str()
        .unwrap()
        .to_string();
    for env in [local, lab.ssh.clone()] {
        let r = lab
            .s
            .post(&format!("/api/environments/{env}/probe"), json!({}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let details = &r.body["details"];
        let facts = if details["remote"].is_object() {
            &details["remote"]
        } else {
            &details["host"]
        };
        for cli in clis {
            let path = lab.bin.join(cli.bin()).display().to_string();
            let found = &facts["agentClis"][&path];
            let version = found["version"].as_str().unwrap_or_default();
            assert!(
                version.contains(cli.version()),
                "{}: {found} in {}",
                cli.bin(),
                r.text
            );
        }
    }
}
