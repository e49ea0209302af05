//! Host execution is a privilege (SPEC §11, issue 11): no run works inside or above
//! `BERTH_HOME`, a tenant needs an instance admin's `hostExecution` grant to run agents on the
//! control-plane host, directories synced off the host stay under the workspace roots and out
//! of `BERTH_HOME`, and the operator's SSH agent is lent only by an instance admin.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::time::Duration;

use common::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

/// Whether bwrap works here (under `CI=true` its absence fails the test).
fn bwrap_works() -> bool {
    let support = berth_exec::sandbox::host_support();
    berth_testkit::require(
        &format!("a working bwrap ({:?})", support.as_ref().err()),
        support.is_ok(),
    )
    .unwrap()
}

/// A new instance-admin board token.
async fn admin_token(s: &TestServer) -> String {
    s.post(
        "/api/tokens",
        json!({"name": "admin", "kind": "board", "instanceAdmin": true}),
    )
    .await
    .body["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A company `tenant`, an instance-admin token, and a board token of the tenant with
/// `environments:manage`.
async fn tenant_admin_and_manager(s: &TestServer) -> (String, String, String) {
    let tenant = s
        .post("/api/companies", json!({"name": "tenant"}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = admin_token(s).await;
    let board = s
        .call(
            Method::POST,
            "/api/tokens",
            Some(&admin),
            Some(json!({"name": "t", "kind": "board", "companyIds": [tenant],
                "grants": ["environments:manage"]})),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    (tenant, admin, board)
}

async fn wait_for_end(s: &TestServer, run: &str, token: Option<&str>) -> Value {
    for _ in 0..800 {
        let r = s
            .call(Method::GET, &format!("/api/runs/{run}"), token, None)
            .await;
        if ["succeeded", "failed", "cancelled", "timed_out"]
            .contains(&r.body["status"].as_str().unwrap_or(""))
        {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {run} did not end");
}

async fn run_output(s: &TestServer, run: &str) -> String {
    let r = s.get(&format!("/api/runs/{run}/events")).await;
    assert_eq!(r.status, 200);
    r.text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["stream"] == "stdout")
        .filter_map(|e| e["payload"]["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_run_without_a_workspace_works_outside_berth_home() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "where", "adapterType": "process", "adapterConfig": {
                "command": "sh", "args": ["-c", "pwd -P; ls ../../../master.key ../../master.key ../master.key 2>/dev/null; true"]}}),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    let run = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent.body["id"], "prompt": "p"}),
        )
        .await;
    let run = run.body["id"].as_str().unwrap().to_string();
    let end = wait_for_end(&s, &run, None).await;
    assert_eq!(end["status"], "succeeded", "{end}");
    let output = run_output(&s, &run).await;
    let runs_root = std::fs::canonicalize(s.runs.path()).unwrap();
    let home = std::fs::canonicalize(s.home.path()).unwrap();
    assert!(
        output.contains(&runs_root.display().to_string()),
        "the scratch directory lies under runsRoot: {output}"
    );
    assert!(
        !output.contains(&home.display().to_string()),
        "nothing of BERTH_HOME is in reach: {output}"
    );
    assert!(!output.contains("master.key"), "{output}");
}

#[tokio::test]
async fn workspaces_inside_or_above_berth_home_are_refused() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let url = format!("/api/companies/{c}/execution-workspaces");
    let inside = s.home.path().join("inside");
    std::fs::create_dir_all(&inside).unwrap();
    let parent = s.home.path().parent().unwrap().to_path_buf();
    for path in [s.home.path().to_path_buf(), inside, parent, "/".into()] {
        let r = s.post(&url, json!({"localPath": path})).await;
        assert_eq!(r.status, 422, "{}: {}", path.display(), r.text);
        assert_eq!(r.body["details"][0]["field"], "localPath", "{}", r.text);
        assert!(r.text.contains("BERTH_HOME"), "{}", r.text);
    }
    assert_eq!(s.get(&url).await.body.as_array().unwrap().len(), 0);
    // A local environment cannot put its runs there either.
    let r = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "home", "driver": "local", "config": {"workspaceRoot": s.home.path()}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("config.workspaceRoot"), "{}", r.text);
}

#[tokio::test]
async fn asset_directories_stay_out_of_berth_home() {
    // Default roots (`/`): only BERTH_HOME stands in the way.
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let url = format!("/api/companies/{c}/agents");
    let inside = s.home.path().join("lab");
    std::fs::create_dir_all(&inside).unwrap();
    for dir in [s.home.path().to_path_buf(), inside, "/".into()] {
        let r = s
            .post(
                &url,
                json!({"name": "codex", "adapterType": "codex_local", "adapterConfig": {"assets": {"home": dir}}}),
            )
            .await;
        assert_eq!(r.status, 422, "{}: {}", dir.display(), r.text);
        assert_eq!(r.body["details"][0]["field"], "adapterConfig.assets.home");
        assert!(r.text.contains("BERTH_HOME"), "{}", r.text);
    }
    let r = s
        .post(
            &url,
            json!({"name": "claude", "adapterType": "claude_local", "adapterConfig": {
                "instructionsFilePath": s.home.path().join("master.key")}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.body["details"][0]["field"],
        "adapterConfig.instructionsFilePath"
    );
    assert_eq!(s.get(&url).await.body.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn asset_directories_stay_under_the_workspace_roots() {
    let allowed = tempfile::tempdir().unwrap();
    let roots = vec![std::fs::canonicalize(allowed.path()).unwrap()];
    let s = TestServer::start_configured(move |c| c.workspace_roots = roots).await;
    let c = s.default_company().await;
    let url = format!("/api/companies/{c}/agents");
    let outside = tempfile::tempdir().unwrap();
    let inside = allowed.path().join("codex-home");
    std::fs::create_dir_all(&inside).unwrap();
    // Through a symlink under the root that points outside: judged where it leads.
    let sneaky = allowed.path().join("sneaky");
    std::os::unix::fs::symlink(outside.path(), &sneaky).unwrap();
    for dir in [outside.path().to_path_buf(), sneaky] {
        let r = s
            .post(
                &url,
                json!({"name": "codex", "adapterType": "codex_local", "adapterConfig": {"assets": {"home": dir}}}),
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.body["details"][0]["field"], "adapterConfig.assets.home");
        assert!(
            r.text.contains("outside every workspace root"),
            "{}",
            r.text
        );
    }
    assert_eq!(s.get(&url).await.body.as_array().unwrap().len(), 0);
    let r = s
        .post(
            &url,
            json!({"name": "codex", "adapterType": "codex_local", "adapterConfig": {"assets": {"home": inside}}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn a_tenant_needs_the_host_execution_grant_in_token_mode() {
    let s = TestServer::start().await;
    let default = s.default_company().await;
    let (tenant, admin, _) = tenant_admin_and_manager(&s).await;
    let token = |body: Value| {
        let s = &s;
        let admin = admin.clone();
        async move {
            let r = s
                .call(Method::POST, "/api/tokens", Some(&admin), Some(body))
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.body["token"].as_str().unwrap().to_string()
        }
    };
    let tenant_board = token(json!({"name": "t", "kind": "board", "companyIds": [tenant],
        "grants": ["environments:manage"]}))
    .await;
    let agent = s
        .call(
            Method::POST,
            &format!("/api/companies/{tenant}/agents"),
            Some(&tenant_board),
            Some(json!({"name": "cat", "adapterType": "process", "adapterConfig": {"command": "true"}})),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    let run_body = json!({"agentId": agent.body["id"], "prompt": "p"});
    let runs = format!("/api/companies/{tenant}/runs");
    let r = s
        .call(
            Method::POST,
            &runs,
            Some(&tenant_board),
            Some(run_body.clone()),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("hostExecution"), "{}", r.text);
    let listed = s.call(Method::GET, &runs, Some(&tenant_board), None).await;
    assert_eq!(
        listed.body.as_array().unwrap().len(),
        0,
        "nothing was queued"
    );
    // The tenant cannot grant itself the privilege.
    let r = s
        .call(
            Method::PATCH,
            &format!("/api/companies/{tenant}"),
            Some(&tenant_board),
            Some(json!({"hostExecution": true})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let company = s
        .call(
            Method::GET,
            &format!("/api/companies/{tenant}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(company.body["hostExecution"], false);
    // An instance admin can.
    let r = s
        .call(
            Method::PATCH,
            &format!("/api/companies/{tenant}"),
            Some(&admin),
            Some(json!({"hostExecution": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["hostExecution"], true);
    let r = s
        .call(Method::POST, &runs, Some(&tenant_board), Some(run_body))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let end = wait_for_end(&s, r.body["id"].as_str().unwrap(), Some(&admin)).await;
    assert_eq!(end["status"], "succeeded", "{end}");
    // The install's own company runs on its host with no set-up.
    let mine = s
        .call(
            Method::POST,
            &format!("/api/companies/{default}/agents"),
            Some(&admin),
            Some(json!({"name": "mine", "adapterType": "process", "adapterConfig": {"command": "true"}})),
        )
        .await;
    let r = s
        .call(
            Method::POST,
            &format!("/api/companies/{default}/runs"),
            Some(&admin),
            Some(json!({"agentId": mine.body["id"], "prompt": "p"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
}

#[tokio::test]
async fn only_an_instance_admin_lends_the_operators_ssh_agent() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let admin = admin_token(&s).await;
    let manager = s
        .call(
            Method::POST,
            "/api/tokens",
            Some(&admin),
            Some(json!({"name": "m", "kind": "board", "companyIds": [c], "grants": ["environments:manage"]})),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let config = json!({"host": "127.0.0.1", "port": 1, "username": "u",
        "remoteWorkspacePath": "/w", "useAgentAuth": true});
    let url = format!("/api/companies/{c}/environments");
    let r = s
        .call(
            Method::POST,
            &url,
            Some(&manager),
            Some(json!({"name": "agent-auth", "driver": "ssh", "config": config})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("useAgentAuth"), "{}", r.text);
    let r = s
        .call(
            Method::POST,
            &format!("{url}/probe-config"),
            Some(&manager),
            Some(json!({"driver": "ssh", "config": config})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s
        .call(
            Method::POST,
            &url,
            Some(&admin),
            Some(json!({"name": "agent-auth", "driver": "ssh", "config": config})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["config"]["useAgentAuth"], true);
    let env = r.body["id"].as_str().unwrap().to_string();
    // A manager may not point the lent identities at another host.
    let r = s
        .call(
            Method::PATCH,
            &format!("/api/environments/{env}"),
            Some(&manager),
            Some(json!({"config": {"host": "127.0.0.2"}})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let stored = s
        .call(
            Method::GET,
            &format!("/api/environments/{env}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(stored.body["config"]["host"], "127.0.0.1");
}

/// A sandbox with network `none` sees none of the host's files beyond its own root and none of
/// its network, so a tenant runs there without `hostExecution`; with network `open` it shares
/// the host's loopback services, so it needs the grant like `local`.
#[tokio::test]
async fn a_sandbox_without_network_needs_no_host_grant_and_one_with_network_does() {
    if !bwrap_works() {
        return;
    }
    let s = TestServer::start().await;
    let (tenant, _admin, board) = tenant_admin_and_manager(&s).await;
    let mut outcomes = Vec::new();
    for network in ["none", "open"] {
        let env = s
            .call(
                Method::POST,
                &format!("/api/companies/{tenant}/environments"),
                Some(&board),
                Some(
                    json!({"name": format!("box-{network}"), "driver": "sandbox",
                    "config": {"network": network}}),
                ),
            )
            .await;
        assert_eq!(env.status, 201, "{}", env.text);
        let agent = s
            .call(
                Method::POST,
                &format!("/api/companies/{tenant}/agents"),
                Some(&board),
                Some(
                    json!({"name": format!("a-{network}"), "adapterType": "process",
                    "defaultEnvironmentId": env.body["id"],
                    "adapterConfig": {"command": "true"}}),
                ),
            )
            .await;
        assert_eq!(agent.status, 201, "{}", agent.text);
        let r = s
            .call(
                Method::POST,
                &format!("/api/companies/{tenant}/runs"),
                Some(&board),
                Some(json!({"agentId": agent.body["id"], "prompt": "p"})),
            )
            .await;
        outcomes.push((network, r.status.as_u16(), r.text.clone(), r.body.clone()));
    }
    let (_, status, text, run) = &outcomes[0];
    assert_eq!(*status, 202, "network none needs no grant: {text}");
    let id = run["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = s
            .call(Method::GET, &format!("/api/runs/{id}"), Some(&board), None)
            .await;
        if !matches!(r.body["status"].as_str(), Some("queued" | "running")) {
            assert_eq!(r.body["status"], "succeeded", "{}", r.text);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, status, text, _) = &outcomes[1];
    assert_eq!(*status, 403, "network open needs the grant: {text}");
    assert!(text.contains("hostExecution"), "{text}");
}

/// `readOnlyPaths` shows host directories (another company's workspace, if named) to a
/// sandbox's agents: only an instance admin sets them, and never over BERTH_HOME or the runs
/// root that holds every sandbox's copies.
#[tokio::test]
async fn only_an_instance_admin_sets_sandbox_read_only_paths_and_never_over_the_runs_root() {
    if !bwrap_works() {
        return;
    }
    let s = TestServer::start().await;
    let (tenant, admin, board) = tenant_admin_and_manager(&s).await;
    let create = |token: String, paths: Value| {
        let s = &s;
        let tenant = tenant.clone();
        async move {
            s.call(
                Method::POST,
                &format!("/api/companies/{tenant}/environments"),
                Some(&token),
                Some(
                    json!({"name": format!("box-{}", uuid::Uuid::now_v7()), "driver": "sandbox",
                    "config": {"readOnlyPaths": paths}}),
                ),
            )
            .await
        }
    };
    let other_company = tempfile::tempdir().unwrap();
    let r = create(board.clone(), json!([other_company.path()])).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("instance admin"), "{}", r.text);
    let r = create(admin.clone(), json!([s.runs.path()])).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("runs root"), "{}", r.text);
    let r = create(admin.clone(), json!(["/opt"])).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // The tenant may still create a sandbox without them.
    let r = create(board.clone(), json!([])).await;
    assert_eq!(r.status, 201, "{}", r.text);
}
