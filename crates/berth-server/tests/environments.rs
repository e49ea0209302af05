//! Environment routes through the real server: create/patch/delete semantics, validation
//! shapes and status codes, secrets handling, pagination.

mod common;

use common::{TestServer, sentinel_key, ssh_config};
use serde_json::{Value, json};

#[tokio::test]
async fn ssh_environment_lifecycle_moves_the_key_into_a_secret_and_rotates_it() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let r = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "Build box", "driver": "ssh", "config": ssh_config(Some("  key-one  "))}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let env = r.body;
    let id = env["id"].as_str().unwrap().to_string();
    assert_eq!(env["config"]["privateKey"], Value::Null);
    assert_eq!(env["config"]["privateKeySecretRef"]["type"], "secret_ref");
    assert_eq!(env["config"]["privateKeySecretRef"]["version"], "latest");
    assert_eq!(env["leasePolicy"], "reuse_by_execution_workspace");
    assert_eq!(env["capacity"], 4);
    let first_secret = env["config"]["privateKeySecretRef"]["secretId"].clone();

    let secrets = s.get(&format!("/api/companies/{c}/secrets")).await;
    assert_eq!(secrets.status, 200);
    let names: Vec<&str> = secrets
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(
        names[0].starts_with("environment-ssh-build-box-private-key-"),
        "{names:?}"
    );
    assert!(!secrets.text.contains("key-one"));

    // A partial config edit keeps the other fields and the secret ref.
    let r = s
        .patch(
            &format!("/api/environments/{id}"),
            json!({"config": {"port": 2200}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["config"]["port"], 2200);
    assert_eq!(r.body["config"]["host"], "127.0.0.1");
    assert_eq!(
        r.body["config"]["privateKeySecretRef"]["secretId"],
        first_secret
    );

    // A new key creates a new secret and deletes the old one.
    let r = s
        .patch(
            &format!("/api/environments/{id}"),
            json!({"config": {"privateKey": "key-two"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let second_secret = r.body["config"]["privateKeySecretRef"]["secretId"].clone();
    assert_ne!(second_secret, first_secret);
    let secrets = s.get(&format!("/api/companies/{c}/secrets")).await;
    let ids: Vec<Value> = secrets
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].clone())
        .collect();
    assert_eq!(ids, vec![second_secret]);

    // Switching to local without a config resets it and drops the key secret (no orphan).
    let r = s
        .patch(
            &format!("/api/environments/{id}"),
            json!({"driver": "plugin"}),
        )
        .await;
    assert_eq!(r.status, 422, "plugin needs a command: {}", r.text);
    let activity = s
        .get(&format!("/api/companies/{c}/activity?limit=1000"))
        .await;
    let updates: Vec<&Value> = activity
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "environment.updated")
        .collect();
    assert_eq!(updates.len(), 2, "the refused patch logged nothing");
    let summary = &updates[0]["details"];
    assert_eq!(summary["changedFields"], json!(["config"]));
    assert_eq!(summary["configChanged"], true);

    let r = s.delete(&format!("/api/environments/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let secrets = s.get(&format!("/api/companies/{c}/secrets")).await;
    assert_eq!(
        secrets.body,
        json!([]),
        "the key secret is deleted with its environment"
    );
    let r = s.get(&format!("/api/environments/{id}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, json!({"error": "Environment not found"}));
}

#[tokio::test]
async fn bad_shapes_are_400_and_bad_configs_are_422_naming_the_field() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let url = format!("/api/companies/{c}/environments");
    let r = s
        .post(&url, json!({"name": "x", "driver": "ssh", "bogus": 1}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "Validation error");
    assert!(r.text.contains("bogus"), "{}", r.text);
    let r = s.post(&url, json!({"name": "x", "driver": "docker"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["details"][0]["field"], "driver");
    let r = s.post(&url, json!({"name": "x", "driver": "ssh", "config": {"username": "u", "remoteWorkspacePath": "/w"}})).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"], "SSH environments require a host.");
    assert_eq!(r.body["details"]["issues"][0]["field"], "config.host");
    let r = s.post(&url, json!({"name": "x", "driver": "ssh", "config": {"host": "h", "username": "u", "remoteWorkspacePath": "relative"}})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["error"].as_str().unwrap().contains("absolute"));
    let r = s.post(&url, json!({"name": "x", "driver": "ssh", "config": {"host": "h", "username": "u", "remoteWorkspacePath": "/w", "colour": "red"}})).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"], "Unknown key \"config.colour\".");
    let r = s.post(&url, json!({"name": "  ", "driver": "local"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["details"][0]["field"], "name");
    let r = s.call(reqwest::Method::POST, &url, None, None).await;
    assert_eq!(
        r.status, 415,
        "a state change without Content-Type: application/json: {}",
        r.text
    );
    let r = s.post(&url, json!({})).await;
    assert_eq!(
        r.status, 400,
        "an empty body lacks the required fields: {}",
        r.text
    );
    // Nothing half-written.
    let list = s.get(&url).await;
    assert_eq!(
        list.body.as_array().unwrap().len(),
        1,
        "only the managed local environment"
    );
}

#[tokio::test]
async fn conflicts_are_409_second_local_duplicate_name_and_managed_local() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let url = format!("/api/companies/{c}/environments");
    let r = s
        .post(&url, json!({"name": "Another local", "driver": "local"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = s
        .post(
            &url,
            json!({"name": "Local", "driver": "ssh", "config": ssh_config(None)}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.body["error"].as_str().unwrap().contains("already exists"));
    let r = s
        .post(
            &url,
            json!({"name": "Box", "driver": "ssh", "config": ssh_config(None)}),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = s
        .patch(
            &format!("/api/environments/{}", r.body["id"].as_str().unwrap()),
            json!({"name": "Local"}),
        )
        .await;
    assert_eq!(r.status, 409, "rename onto an existing name: {}", r.text);

    let envs = s.get(&url).await;
    let local = envs
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["driver"] == "local")
        .unwrap()
        .clone();
    assert_eq!(local["metadata"]["managedByBerth"], true);
    let lid = local["id"].as_str().unwrap();
    assert_eq!(
        s.delete(&format!("/api/environments/{lid}")).await.status,
        409
    );
    assert_eq!(
        s.patch(
            &format!("/api/environments/{lid}"),
            json!({"status": "archived"})
        )
        .await
        .status,
        409
    );
}

#[tokio::test]
async fn delete_clears_selections_and_refuses_the_company_default() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let env = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "Box", "driver": "ssh", "config": ssh_config(None)}),
        )
        .await;
    let eid = env.body["id"].as_str().unwrap().to_string();
    let ws_dir = tempfile::tempdir().unwrap();
    let agent = s.post(&format!("/api/companies/{c}/agents"), json!({"name": "a", "adapterType": "process", "adapterConfig": {"command": "true"}, "defaultEnvironmentId": eid})).await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    let project = s
        .post(
            &format!("/api/companies/{c}/projects"),
            json!({"name": "p", "executionWorkspacePolicy": {"environmentId": eid}}),
        )
        .await;
    assert_eq!(project.status, 201, "{}", project.text);
    let ws = s
        .post(
            &format!("/api/companies/{c}/execution-workspaces"),
            json!({"localPath": ws_dir.path(), "config": {"environmentId": eid}}),
        )
        .await;
    assert_eq!(ws.status, 201, "{}", ws.text);
    let issue = s
        .post(
            &format!("/api/companies/{c}/issues"),
            json!({"title": "t", "executionWorkspaceSettings": {"environmentId": eid}}),
        )
        .await;
    assert_eq!(issue.status, 201, "{}", issue.text);

    // The company default cannot be deleted.
    let r = s
        .patch(
            &format!("/api/companies/{c}"),
            json!({"defaultEnvironmentId": eid}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        s.delete(&format!("/api/environments/{eid}")).await.status,
        409
    );
    s.patch(
        &format!("/api/companies/{c}"),
        json!({"defaultEnvironmentId": null}),
    )
    .await;

    let r = s.delete(&format!("/api/environments/{eid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let agent = s
        .get(&format!(
            "/api/agents/{}",
            agent.body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(agent.body["defaultEnvironmentId"], Value::Null);
    let project = s
        .get(&format!(
            "/api/projects/{}",
            project.body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        project.body["executionWorkspacePolicy"]["environmentId"],
        Value::Null
    );
    let ws = s
        .get(&format!(
            "/api/execution-workspaces/{}",
            ws.body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ws.body["config"]["environmentId"], Value::Null);
    let issue = s
        .get(&format!(
            "/api/issues/{}",
            issue.body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        issue.body["executionWorkspaceSettings"]["environmentId"],
        Value::Null
    );
}

#[tokio::test]
async fn selection_guards_refuse_missing_foreign_and_archived_environments() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let other = s.post("/api/companies", json!({"name": "other"})).await;
    assert_eq!(other.status, 201);
    let oc = other.body["id"].as_str().unwrap();
    let foreign = s
        .post(
            &format!("/api/companies/{oc}/environments"),
            json!({"name": "Theirs", "driver": "ssh", "config": ssh_config(None)}),
        )
        .await;
    let fid = foreign.body["id"].as_str().unwrap();
    let archived = s.post(&format!("/api/companies/{c}/environments"), json!({"name": "Old", "driver": "ssh", "status": "archived", "config": ssh_config(None)})).await;
    let aid = archived.body["id"].as_str().unwrap();

    for (url, body) in [
        (
            format!("/api/companies/{c}/projects"),
            json!({"name": "p", "executionWorkspacePolicy": {"environmentId": fid}}),
        ),
        (
            format!("/api/companies/{c}/issues"),
            json!({"title": "t", "executionWorkspaceSettings": {"environmentId": fid}}),
        ),
        (
            format!("/api/companies/{c}/agents"),
            json!({"name": "a", "adapterType": "claude_local", "defaultEnvironmentId": fid}),
        ),
    ] {
        let r = s.post(&url, body).await;
        assert_eq!(r.status, 422, "{url}: {}", r.text);
        assert_eq!(r.body["error"], "Environment not found.");
    }
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "a", "adapterType": "claude_local", "defaultEnvironmentId": aid}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"], "Environment is archived.");
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "a", "adapterType": "http"}),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = s.post(&format!("/api/companies/{c}/agents"), json!({"name": "a", "adapterType": "process", "adapterConfig": {"env": {"LD_PRELOAD": "/x.so"}}})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["error"].as_str().unwrap().contains("LD_PRELOAD"));
    // Assets: known keys only, absolute directories only, the field named.
    for (assets, field) in [
        (
            json!({"skills": "/srv/skills"}),
            "adapterConfig.assets.skills",
        ),
        (json!({"home": "relative/dir"}), "adapterConfig.assets.home"),
        (json!(["/srv"]), "adapterConfig.assets"),
    ] {
        let r = s
            .post(
                &format!("/api/companies/{c}/agents"),
                json!({"name": "a", "adapterType": "codex_local", "adapterConfig": {"assets": assets}}),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
    // An asset directory must exist (it is copied at run time).
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "a", "adapterType": "codex_local", "adapterConfig": {"assets": {"home": "/srv/codex-home"}}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["details"][0]["field"], "adapterConfig.assets.home");
    let home = tempfile::tempdir().unwrap();
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "a", "adapterType": "codex_local", "adapterConfig": {"assets": {"home": home.path()}}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn lists_paginate_with_a_cursor_header() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    for i in 0..5 {
        let r = s
            .post(
                &format!("/api/companies/{c}/environments"),
                json!({"name": format!("env-{i}"), "driver": "ssh", "config": ssh_config(None)}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cur) => format!("/api/companies/{c}/environments?limit=2&cursor={cur}"),
            None => format!("/api/companies/{c}/environments?limit=2"),
        };
        let r = s.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let items = r.body.as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        cursor = r
            .headers
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 6, "5 ssh + the managed local");
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 6);
    assert_eq!(
        s.get(&format!("/api/companies/{c}/environments?limit=0"))
            .await
            .status,
        400
    );
    assert_eq!(
        s.get(&format!("/api/companies/{c}/environments?status=gone"))
            .await
            .status,
        400
    );
    let r = s
        .get(&format!("/api/companies/{c}/environments?driver=local"))
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn probes_report_checks_and_never_fail_the_request_for_an_unreachable_host() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    // The managed local environment probes the real host.
    let envs = s
        .get(&format!("/api/companies/{c}/environments?driver=local"))
        .await;
    let local = envs.body[0]["id"].as_str().unwrap().to_string();
    let r = s
        .post(&format!("/api/environments/{local}/probe"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ok"], true, "{}", r.text);
    assert_eq!(r.body["driver"], "local");
    let codes: Vec<&str> = r.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    for code in ["os", "workspace_path", "tool_sh", "tool_tar", "disk"] {
        assert!(codes.contains(&code), "missing check {code}: {codes:?}");
    }
    assert!(r.body["durationMs"].as_u64().is_some());
    let metrics = s.get("/metrics").await.text;
    assert!(
        metrics.contains("berth_probe_duration_seconds_count{driver=\"local\",ok=\"true\"} 1"),
        "{metrics}"
    );

    // An unsaved SSH config against a closed port: 200, ok false, a connect error with a hint.
    let r = s
        .post(
            &format!("/api/companies/{c}/environments/probe-config"),
            json!({"driver": "ssh", "config": ssh_config(None)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ok"], false);
    let check = &r.body["checks"][0];
    assert_eq!(check["code"], "connect", "{}", r.text);
    assert_eq!(check["level"], "error");
    assert!(check["hint"].as_str().is_some());
    assert_eq!(r.body["summary"], "SSH probe failed for agent@127.0.0.1.");
    assert_eq!(r.body["details"]["code"], 255, "{}", r.text);
    assert!(r.body["details"]["error"].is_string(), "{}", r.text);
    // A key that does not parse is reported as such, before anything is sent.
    let r = s
        .post(
            &format!("/api/companies/{c}/environments/probe-config"),
            json!({"driver": "ssh", "config": ssh_config(Some(&sentinel_key("probe")))}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["checks"][0]["code"], "auth", "{}", r.text);
    assert!(!r.text.contains("SENTINEL"));
    let r = s
        .post(
            &format!("/api/companies/{c}/environments/probe-config"),
            json!({"driver": "ssh", "config": {}}),
        )
        .await;
    assert_eq!(r.status, 422, "config is still validated first");
    let secrets = s.get(&format!("/api/companies/{c}/secrets")).await;
    assert_eq!(secrets.body, json!([]), "an unsaved probe stores no secret");
    let activity = s
        .get(&format!("/api/companies/{c}/activity?limit=1000"))
        .await;
    assert!(
        activity
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "environment.probed_unsaved" && a["entityId"] == "unsaved")
    );
}

#[tokio::test]
async fn workspaces_must_live_under_a_workspace_root() {
    let root = tempfile::tempdir().unwrap();
    let inside = root.path().join("repo");
    std::fs::create_dir(&inside).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
    let s = TestServer::start_with(None, vec![root.path().to_path_buf()]).await;
    let c = s.default_company().await;
    let url = format!("/api/companies/{c}/execution-workspaces");
    let r = s.post(&url, json!({"localPath": inside})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s.post(&url, json!({"localPath": outside.path()})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = s
        .post(&url, json!({"localPath": root.path().join("escape")}))
        .await;
    assert_eq!(
        r.status, 422,
        "a symlink out of the root is resolved and refused: {}",
        r.text
    );
    let r = s.post(&url, json!({"localPath": "relative/path"})).await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn health_openapi_metrics_and_settings() {
    let s = TestServer::start().await;
    let r = s.get("/api/health").await;
    assert_eq!(r.body["status"], "ok");
    assert_eq!(r.body["database"], "sqlite");
    assert_eq!(r.body["authMode"], "local_trusted");
    let r = s.get("/api/openapi.json").await;
    assert_eq!(r.status, 200);
    let paths = r.body["paths"].as_object().unwrap();
    for p in [
        "/api/companies/{company_id}/environments",
        "/api/environments/{id}",
        "/api/environments/{id}/leases",
        "/api/environment-leases/{lease_id}",
        "/api/companies/{company_id}/environments/probe-config",
        "/api/instance/settings/experimental",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
    let r = s.get("/metrics").await;
    assert!(
        r.text.contains(
            "berth_http_requests_total{method=\"GET\",route=\"/api/openapi.json\",status=\"200\"} 1"
        ),
        "{}",
        r.text
    );
    let r = s.get("/api/instance/settings/experimental").await;
    assert_eq!(
        r.body,
        json!({"enableEnvironments": false, "enableIsolatedWorkspaces": false,
               "autoRestartDevServerWhenIdle": false})
    );
    let r = s
        .patch(
            "/api/instance/settings/experimental",
            json!({"enableEnvironments": true}),
        )
        .await;
    assert_eq!(r.body["enableEnvironments"], true);
    let r = s
        .patch(
            "/api/instance/settings/experimental",
            json!({"enableEverything": true}),
        )
        .await;
    assert_eq!(r.status, 400);
    // The web UI's front page follows the flag: the environments while it is on.
    let r = s.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("<h1>Environments</h1>"), "{}", r.text);
}

#[tokio::test]
async fn agent_env_values_may_be_secret_references_of_the_company_only() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let secret = s
        .post(
            &format!("/api/companies/{c}/secrets"),
            json!({"name": "anthropic", "value": "sk-SENTINEL-ENV-1"}),
        )
        .await;
    let sid = secret.body["id"].as_str().unwrap().to_string();
    let reference = json!({"type": "secret_ref", "secretId": sid, "version": "latest"});
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "a", "adapterType": "process", "adapterConfig": {"command": "true", "env": {"API_KEY": reference, "PLAIN": "x"}}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["adapterConfig"]["env"]["API_KEY"]["secretId"],
        sid.as_str()
    );
    assert!(!r.text.contains("SENTINEL"));
    let other = s.post("/api/companies", json!({"name": "other"})).await;
    let oc = other.body["id"].as_str().unwrap();
    let r = s
        .post(
            &format!("/api/companies/{oc}/agents"),
            json!({"name": "b", "adapterType": "process", "adapterConfig": {"command": "true", "env": {"API_KEY": reference}}}),
        )
        .await;
    assert_eq!(
        r.status, 422,
        "another company's secret cannot be referenced: {}",
        r.text
    );
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "c", "adapterType": "process", "adapterConfig": {"command": "true", "env": {"API_KEY": 42}}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["details"][0]["field"], "adapterConfig.env.API_KEY");
}

/// Sandbox and plugin drivers are not built yet: capabilities say so, and creating one (or
/// switching to one) is refused naming the field, instead of runs failing later with
/// `workspace_realization_failed`.
#[tokio::test]
async fn drivers_that_cannot_run_here_are_reported_and_refused_up_front() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let caps = s
        .get(&format!("/api/companies/{c}/environments/capabilities"))
        .await;
    assert_eq!(caps.status, 200, "{}", caps.text);
    // The sandbox runs where bwrap works (the test command installs it; CI must have it).
    let bwrap = berth_exec::sandbox::host_support();
    assert!(
        bwrap.is_ok() || !berth_testkit::in_ci(),
        "bwrap must work under CI=true: {bwrap:?}"
    );
    let sandbox = if bwrap.is_ok() {
        "supported"
    } else {
        "unsupported"
    };
    for (driver, expected) in [
        ("local", "supported"),
        ("ssh", "supported"),
        ("sandbox", sandbox),
        ("plugin", "unsupported"),
    ] {
        assert_eq!(caps.body["drivers"][driver], expected, "{}", caps.text);
        for adapter in caps.body["adapters"].as_array().unwrap() {
            assert_eq!(adapter["drivers"][driver], expected, "{adapter}");
        }
    }
    let before = s.get(&format!("/api/companies/{c}/environments")).await;
    for (driver, config, path, says) in [
        (
            "plugin",
            json!({"command": "/bin/true"}),
            "driver",
            "use local, ssh or sandbox",
        ),
        (
            "sandbox",
            json!({"provider": "e2b"}),
            "config.provider",
            "plugins cannot run in this build",
        ),
        (
            "sandbox",
            json!({"network": "allowlist", "allowHosts": ["no-port.example"]}),
            "config.allowHosts",
            "host:port",
        ),
        (
            "sandbox",
            json!({"readOnlyPaths": [s.home.path()]}),
            "config.readOnlyPaths",
            "BERTH_HOME",
        ),
    ] {
        let r = s
            .post(
                &format!("/api/companies/{c}/environments"),
                json!({"name": format!("x-{driver}"), "driver": driver, "config": config}),
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.text);
        let issue = if r.body["details"].is_array() {
            &r.body["details"][0]["field"]
        } else {
            &r.body["details"]["issues"][0]["field"]
        };
        assert_eq!(issue, path, "{}", r.text);
        assert!(
            r.body["error"].as_str().unwrap().contains(says),
            "{}",
            r.text
        );
    }
    let sandbox = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "sb", "driver": "sandbox", "config": {"provider": "bubblewrap", "network": "none"}}),
        )
        .await;
    if bwrap.is_ok() {
        assert_eq!(sandbox.status, 201, "{}", sandbox.text);
        assert_eq!(
            sandbox.body["config"]["network"], "none",
            "{}",
            sandbox.text
        );
        s.delete(&format!(
            "/api/environments/{}",
            sandbox.body["id"].as_str().unwrap()
        ))
        .await;
    } else {
        assert_eq!(sandbox.status, 422, "{}", sandbox.text);
        assert!(sandbox.text.contains("bwrap"), "{}", sandbox.text);
    }
    let after = s.get(&format!("/api/companies/{c}/environments")).await;
    assert_eq!(before.body, after.body, "nothing was written");
}
