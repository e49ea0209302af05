//! The REAL Claude Code and Codex CLIs (pinned, `scripts/install-agent-clis`) complete a
//! write-a-file run inside a bubblewrap sandbox environment against the scripted model API on
//! 127.0.0.1. The sandbox binds only the CLIs' install directory read-only (`readOnlyPaths`);
//! its network is `open` because the model API stands in for a model provider on the internet
//! (`none` would cut it off; the egress allowlist is not built yet). The file comes back into
//! the local workspace through the restore.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::path::{Path, PathBuf};

use berth_testkit::model_api::ModelApi;
use common::TestServer;
use serde_json::{Value, json};

/// The pinned CLIs' bin directory (as `real_clis.rs` finds it); missing under `CI=true` fails.
fn agent_bin() -> Option<PathBuf> {
    let found = std::env::var_os("BERTH_AGENT_CLI_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-agent-clis");
            let out = std::process::Command::new(script)
                .arg("--print-bin")
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .filter(|b| {
            ["claude", "codex", "node"]
                .iter()
                .all(|c| b.join(c).exists())
        });
    berth_testkit::require(
        "the pinned agent CLIs (run scripts/install-agent-clis, or set BERTH_AGENT_CLI_BIN)",
        found.is_some(),
    )
    .unwrap()
    .then_some(())?;
    found
}

fn bwrap_works() -> bool {
    let support = berth_exec::sandbox::host_support();
    berth_testkit::require(
        &format!("a working bwrap ({:?})", support.as_ref().err()),
        support.is_ok(),
    )
    .unwrap()
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

#[tokio::test]
async fn real_claude_and_codex_write_a_file_inside_the_sandbox() {
    let Some(bin) = agent_bin() else { return };
    if !bwrap_works() {
        return;
    }
    // node_modules/.bin links into node_modules: bind the whole install directory.
    let install = bin.parent().and_then(Path::parent).unwrap().to_path_buf();
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let env = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "box", "driver": "sandbox", "config": {"provider": "bubblewrap",
                "network": "open", "readOnlyPaths": [install]}}),
        )
        .await;
    assert_eq!(env.status, 201, "{}", env.text);
    let eid = env.body["id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    for cli in ["claude", "codex"] {
        let root = dir.path().join(cli);
        let repo = root.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("README.md"), "hello\n").unwrap();
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
        let api = ModelApi::start().await.unwrap();
        let url = &api.base_url;
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
        let mut env = json!({"PATH": path});
        let mut config = json!({"command": bin.join(cli), "timeoutSec": 120, "graceSec": 5});
        let adapter = if cli == "claude" {
            env["ANTHROPIC_BASE_URL"] = json!(url);
            env["ANTHROPIC_API_KEY"] = json!("mock");
            env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = json!("1");
            env["DISABLE_AUTOUPDATER"] = json!("1");
            config["allowedTools"] = json!(["Write"]);
            "claude_local"
        } else {
            let codex_home = root.join("codex-home");
            std::fs::create_dir_all(&codex_home).unwrap();
            std::fs::write(
                codex_home.join("config.toml"),
                format!(
                    "model = \"mock-1\"\nmodel_provider = \"mock\"\n\n[model_providers.mock]\n\
                     name = \"Mock\"\nbase_url = \"{url}/v1\"\nenv_key = \"MOCK_API_KEY\"\n\
                     wire_api = \"responses\"\n"
                ),
            )
            .unwrap();
            env["MOCK_API_KEY"] = json!("mock");
            config["assets"] = json!({"home": codex_home});
            // Codex's own sandbox would nest inside bwrap's; bwrap is the boundary here.
            config["sandbox"] = json!("danger-full-access");
            "codex_local"
        };
        config["env"] = env;
        let ws = s
            .post(
                &format!("/api/companies/{c}/execution-workspaces"),
                json!({"localPath": repo}),
            )
            .await;
        assert_eq!(ws.status, 201, "{}", ws.text);
        let agent = s
            .post(
                &format!("/api/companies/{c}/agents"),
                json!({"name": cli, "adapterType": adapter, "adapterConfig": config,
                    "defaultEnvironmentId": eid}),
            )
            .await;
        assert_eq!(agent.status, 201, "{}", agent.text);
        let run = s
            .post(
                &format!("/api/companies/{c}/runs"),
                json!({"agentId": agent.body["id"], "prompt": "write out-1.txt out-1",
                    "executionWorkspaceId": ws.body["id"]}),
            )
            .await;
        assert_eq!(run.status, 202, "{}", run.text);
        let id = run.body["id"].as_str().unwrap();
        // The event stream ends once the run has ended.
        let events = s.get(&format!("/api/runs/{id}/events")).await.text;
        let done: Value = s.get(&format!("/api/runs/{id}")).await.body;
        let tail: String = events
            .chars()
            .skip(events.chars().count().saturating_sub(5000))
            .collect();
        assert_eq!(done["status"], "succeeded", "{cli}: {done}\n…{tail}");
        assert_eq!(done["environmentId"], eid.as_str(), "{done}");
        assert_eq!(
            done["sessionParams"]["remoteIdentity"]["transport"], "sandbox",
            "{cli}: {done}"
        );
        assert_eq!(
            std::fs::read_to_string(repo.join("out-1.txt"))
                .ok()
                .as_deref()
                .map(str::trim_end),
            Some("out-1"),
            "{cli}: the file the CLI wrote in the sandbox is restored into the workspace\n…{tail}"
        );
        assert!(
            api.turns().len() >= 2,
            "{cli}: a tool call and the final answer"
        );
    }
}
