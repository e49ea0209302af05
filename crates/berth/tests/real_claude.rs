//! Issue 5's "done means", through the real `berth` binary and the REAL Claude Code CLI
//! (pinned, from npm: `scripts/install-agent-clis`) against the mock model API of the test kit:
//! `berth run --agent <claude-agent> --workspace ./repo --prompt … --follow` runs on the
//! agent's SSH environment (a real sshd), streams the agent's output live, resumes its session
//! the next time, and leaves the local repository with the agent's changes and every local
//! edit intact.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on any problem"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_testkit::model_api::ModelApi;
use berth_testkit::sshd::Sshd;
use support::TestServer;

/// The pinned CLIs' bin directory (`BERTH_AGENT_CLI_BIN`, else an existing install); missing
/// under `CI=true` fails the test.
fn agent_bin() -> Option<PathBuf> {
    let found = std::env::var_os("BERTH_AGENT_CLI_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-agent-clis");
            let out = Command::new(script).arg("--print-bin").output().ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .filter(|b| b.join("claude").exists());
    berth_testkit::require(
        "the pinned agent CLIs (run scripts/install-agent-clis, or set BERTH_AGENT_CLI_BIN)",
        found.is_some(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .then_some(())?;
    found
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

#[test]
fn berth_run_follow_drives_real_claude_on_ssh_and_resumes() {
    let Some(bin) = agent_bin() else { return };
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api = rt.block_on(ModelApi::start()).unwrap();
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, &sshd.client_private_key).unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, &sshd.known_hosts).unwrap();
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
            &sshd.port.to_string(),
            "--username",
            &sshd.username,
            "--remote-workspace-path",
            sshd.workspace.to_str().unwrap(),
            "--private-key-file",
            key.to_str().unwrap(),
            "--known-hosts-file",
            known.to_str().unwrap(),
        ])
        .ok();

    let home = dir.path().join("claude-home");
    std::fs::create_dir_all(&home).unwrap();
    let config = serde_json::json!({
        "command": bin.join("claude"),
        "allowedTools": ["Write"],
        "timeoutSec": 120,
        "env": {
            "HOME": home,
            "PATH": format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
            "ANTHROPIC_BASE_URL": api.base_url,
            "ANTHROPIC_API_KEY": "mock",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        },
    });
    server
        .berth()
        .run([
            "agent",
            "create",
            "--name",
            "claude",
            "--adapter-type",
            "claude_local",
            "--adapter-config",
            &config.to_string(),
            "--default-environment",
            "lab",
        ])
        .ok();

    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    // A local edit that is not committed: it must survive both runs.
    std::fs::write(repo.join("NOTES.md"), "mine, uncommitted\n").unwrap();

    let first = server
        .berth()
        .run([
            "run",
            "--agent",
            "claude",
            "--workspace",
            repo.to_str().unwrap(),
            "--prompt",
            "write from-claude.txt written by the real CLI",
            "--follow",
        ])
        .ok();
    // The model's closing text, streamed as the CLI printed it.
    assert!(
        first.stdout.contains("Wrote from-claude.txt"),
        "{}\n{}",
        first.stdout,
        first.stderr
    );
    assert!(first.stderr.contains("[berth]"), "{}", first.stderr);
    assert_eq!(
        std::fs::read_to_string(repo.join("from-claude.txt"))
            .unwrap()
            .trim(),
        "written by the real CLI",
        "the file Claude Code's Write tool made on the environment came back"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("NOTES.md")).unwrap(),
        "mine, uncommitted\n"
    );

    // The next run on the same workspace resumes: the model sees the first prompt again.
    std::fs::write(repo.join("NOTES.md"), "mine, edited again\n").unwrap();
    api.clear_requests();
    server
        .berth()
        .run([
            "run",
            "--agent",
            "claude",
            "--workspace",
            repo.to_str().unwrap(),
            "--prompt",
            "say hello",
            "--follow",
        ])
        .ok();
    let turns = api.turns();
    assert!(!turns.is_empty(), "the model saw no turn");
    assert!(
        turns
            .iter()
            .all(|t| t.has_prompt_containing("write from-claude.txt")),
        "the resumed session carried the first prompt: {:?}",
        turns.iter().map(|t| t.summary()).collect::<Vec<_>>()
    );
    let runs = server.berth().run(["runs", "list", "--json"]).ok().json();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    assert_eq!(
        runs[0]["sessionParams"]["sessionId"], runs[1]["sessionParams"]["sessionId"],
        "one session across both runs"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("NOTES.md")).unwrap(),
        "mine, edited again\n",
        "a local edit made between runs is intact"
    );
    drop(api);
    drop(rt);
}
