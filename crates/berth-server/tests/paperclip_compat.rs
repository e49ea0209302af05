//! Paperclip compatibility: Paperclip-shaped requests against the real server, checked for
//! Paperclip-shaped answers (field names, order, codes, strings). The deliberate differences
//! are listed in docs/paperclip-compat.md; this suite pins the rest.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, ssh_config};
use serde_json::{Value, json};

async fn process_agent(s: &TestServer, c: &str, name: &str, script: &str) -> String {
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": name, "adapterType": "process",
                   "adapterConfig": {"command": "sh", "args": ["-c", script]}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

async fn run_to_end(s: &TestServer, c: &str, agent: &str) -> Value {
    let r = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent, "prompt": "x"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.get(&format!("/api/runs/{id}")).await;
        let status = r.body["status"].as_str().unwrap_or_default();
        if !["queued", "running"].contains(&status) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "run {id} still {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn local_environment(s: &TestServer, c: &str) -> String {
    let r = s
        .get(&format!("/api/companies/{c}/environments?driver=local"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body[0]["id"].as_str().unwrap().to_string()
}

fn stdout_of(s: &str) -> String {
    s.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["stream"] == "stdout")
        .filter_map(|e| e["payload"]["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn local_run_leases_answer_paperclip_fields_and_log_lease_activity() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let a = process_agent(
        &s,
        &c,
        "compat-local",
        "[ -n \"$PAPERCLIP_API_KEY\" ] && [ \"$PAPERCLIP_API_KEY\" = \"$BERTH_API_TOKEN\" ] \
         && [ \"$PAPERCLIP_API_URL\" = \"$BERTH_API_URL\" ] && echo callback-env-same",
    )
    .await;
    let first = run_to_end(&s, &c, &a).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let second = run_to_end(&s, &c, &a).await;
    assert_eq!(second["status"], "succeeded", "{second}");

    // Skills written for Paperclip find its callback names with Berth's values.
    let events = s
        .get(&format!(
            "/api/runs/{}/events",
            first["id"].as_str().unwrap()
        ))
        .await;
    assert!(
        stdout_of(&events.text).contains("callback-env-same"),
        "{}",
        events.text
    );

    let env = local_environment(&s, &c).await;
    let r = s.get(&format!("/api/environments/{env}/leases")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.headers.get("x-next-cursor").is_none(),
        "no cursor without limit"
    );
    let leases = r.body.as_array().unwrap();
    assert!(!leases.is_empty(), "{}", r.text);
    // Paperclip's order: lastUsedAt desc.
    let used: Vec<&str> = leases
        .iter()
        .map(|l| l["lastUsedAt"].as_str().unwrap())
        .collect();
    let mut sorted = used.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(used, sorted);
    let newest = &leases[0];
    assert_eq!(newest["heartbeatRunId"], second["id"], "{newest}");
    assert_eq!(newest["runId"], second["id"], "Berth's clients keep runId");
    assert_eq!(newest["expiresAt"], Value::Null);
    assert_eq!(newest["providerLeaseId"], Value::Null);
    assert_eq!(newest["provider"], "local");
    assert_eq!(newest["metadata"]["driver"], "local");
    assert!(newest["metadata"]["executionWorkspaceMode"].is_string());
    assert_eq!(newest["status"], "released");
    for key in [
        "id",
        "companyId",
        "environmentId",
        "executionWorkspaceId",
        "issueId",
        "leasePolicy",
        "acquiredAt",
        "lastUsedAt",
        "releasedAt",
        "failureReason",
        "cleanupStatus",
        "createdAt",
        "updatedAt",
    ] {
        assert!(newest.get(key).is_some(), "lease lacks {key}: {newest}");
    }

    let one = s
        .get(&format!(
            "/api/environment-leases/{}",
            newest["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.body["heartbeatRunId"], second["id"]);
    assert_eq!(one.body["expiresAt"], Value::Null);

    let activity = s.get(&format!("/api/companies/{c}/activity")).await;
    assert_eq!(activity.status, 200, "{}", activity.text);
    let entries = activity.body.as_array().unwrap();
    let for_lease = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["entityId"] == newest["id"])
            .unwrap_or_else(|| panic!("no {action} for the lease: {}", activity.text))
            .clone()
    };
    let acquired = for_lease("environment.lease_acquired");
    assert_eq!(acquired["details"]["environmentId"], env.as_str());
    assert_eq!(acquired["details"]["driver"], "local");
    assert_eq!(acquired["details"]["provider"], "local");
    assert!(acquired["details"]["leasePolicy"].is_string());
    let released = for_lease("environment.lease_released");
    assert_eq!(released["details"]["status"], "released");
    assert_eq!(released["details"]["driver"], "local");
}

#[tokio::test]
async fn ssh_leases_carry_the_provider_lease_id_and_connection_metadata() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let r = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "Unreachable box", "driver": "ssh", "config": ssh_config(None)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let env = r.body["id"].as_str().unwrap().to_string();
    let a = process_agent(&s, &c, "compat-ssh", "true").await;
    let r = s
        .patch(
            &format!("/api/agents/{a}"),
            json!({"defaultEnvironmentId": env}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Port 1 refuses: the run fails after its lease was taken, and releases it as failed.
    let run = run_to_end(&s, &c, &a).await;
    assert_eq!(run["status"], "failed", "{run}");

    let r = s.get(&format!("/api/environments/{env}/leases")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lease = &r.body[0];
    assert_eq!(lease["heartbeatRunId"], run["id"], "{}", r.text);
    assert_eq!(lease["provider"], "ssh");
    assert_eq!(
        lease["providerLeaseId"],
        "ssh://agent@127.0.0.1:1/srv/berth"
    );
    assert_eq!(lease["expiresAt"], Value::Null);
    let meta = &lease["metadata"];
    assert_eq!(meta["driver"], "ssh");
    assert_eq!(meta["host"], "127.0.0.1");
    assert_eq!(meta["port"], 1);
    assert_eq!(meta["username"], "agent");
    assert_eq!(meta["remoteWorkspacePath"], "/srv/berth");
    assert_eq!(meta["remoteCwd"], "/srv/berth");
    assert_eq!(lease["status"], "failed");
}

#[tokio::test]
async fn environment_lists_return_every_row_by_updated_at_desc_unless_paged() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let mut ids = Vec::new();
    // More than Berth's default page of 100: Paperclip returns them all.
    for i in 0..105 {
        let r = s
            .post(
                &format!("/api/companies/{c}/environments"),
                json!({"name": format!("env-{i}"), "driver": "ssh", "config": ssh_config(None)}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    // Touch the first one: it becomes the most recently updated.
    let r = s
        .patch(
            &format!("/api/environments/{}", ids[0]),
            json!({"description": "touched"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = s.get(&format!("/api/companies/{c}/environments")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.headers.get("x-next-cursor").is_none());
    let items = r.body.as_array().unwrap();
    assert_eq!(items.len(), 106, "105 ssh + the managed local");
    assert_eq!(items[0]["id"], ids[0].as_str());
    let updated: Vec<&str> = items
        .iter()
        .map(|e| e["updatedAt"].as_str().unwrap())
        .collect();
    let mut sorted = updated.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(updated, sorted, "updatedAt desc");

    // Asking for a page keeps Berth's cursor pagination.
    let r = s
        .get(&format!("/api/companies/{c}/environments?limit=10"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body.as_array().unwrap().len(), 10);
    assert!(r.headers.get("x-next-cursor").is_some());
}

#[tokio::test]
async fn experimental_settings_store_and_return_paperclips_other_keys() {
    let s = TestServer::start().await;
    let r = s
        .patch(
            "/api/instance/settings/experimental",
            json!({"enableIsolatedWorkspaces": true, "autoRestartDevServerWhenIdle": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["enableIsolatedWorkspaces"], true);
    assert_eq!(r.body["autoRestartDevServerWhenIdle"], true);
    assert_eq!(r.body["enableEnvironments"], false);

    let r = s.get("/api/instance/settings/experimental").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["enableIsolatedWorkspaces"], true);
    assert_eq!(r.body["autoRestartDevServerWhenIdle"], true);

    let r = s
        .patch(
            "/api/instance/settings/experimental",
            json!({"enableIsolatedWorkspaces": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["enableIsolatedWorkspaces"], false);
    assert_eq!(r.body["autoRestartDevServerWhenIdle"], true);

    // Keys neither Paperclip nor Berth knows stay refused (a deliberate difference).
    let r = s
        .patch(
            "/api/instance/settings/experimental",
            json!({"enableTimeTravel": true}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"], "Validation error");
    assert_eq!(r.body["details"][0]["code"], "unrecognized_keys");
}

#[tokio::test]
async fn validation_errors_carry_a_path_array_and_a_code() {
    let s = TestServer::start().await;
    let c = s.default_company().await;

    let r = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": 5, "driver": "local"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"], "Validation error");
    let issue = &r.body["details"][0];
    assert_eq!(issue["path"], json!(["name"]), "{issue}");
    assert_eq!(issue["code"], "invalid_type");
    assert_eq!(issue["field"], "name");
    assert!(issue["message"].is_string());

    let r = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "   ", "driver": "local"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["details"][0]["path"], json!(["name"]));
    assert_eq!(r.body["details"][0]["code"], "custom");

    // Per-driver config problems: 422, the first message as `error`, every issue listed.
    let r = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "no host", "driver": "ssh",
                   "config": {"username": "u", "remoteWorkspacePath": "/w"}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"], "SSH environments require a host.");
    let issue = &r.body["details"]["issues"][0];
    assert_eq!(issue["path"], json!(["config", "host"]), "{issue}");
    assert_eq!(issue["field"], "config.host");
    assert_eq!(issue["code"], "custom");
}

#[tokio::test]
async fn probes_answer_paperclips_summaries_and_details() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let local = local_environment(&s, &c).await;
    let r = s
        .post(&format!("/api/environments/{local}/probe"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ok"], true, "{}", r.text);
    assert_eq!(r.body["driver"], "local");
    assert_eq!(
        r.body["summary"],
        "Local environment is available on this Paperclip host."
    );
    assert!(r.body["details"]["hostname"].is_string(), "{}", r.text);
    assert!(r.body["details"]["cwd"].is_string(), "{}", r.text);

    // Nothing listens on port 1: Paperclip's failure summary, `error` and ssh's exit code.
    let r = s
        .post(
            &format!("/api/companies/{c}/environments/probe-config"),
            json!({"name": "draft", "driver": "ssh", "config": ssh_config(None)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ok"], false);
    assert_eq!(r.body["driver"], "ssh");
    assert_eq!(r.body["summary"], "SSH probe failed for agent@127.0.0.1.");
    let d = &r.body["details"];
    assert_eq!(d["host"], "127.0.0.1");
    assert_eq!(d["port"], 1);
    assert_eq!(d["username"], "agent");
    assert_eq!(d["remoteWorkspacePath"], "/srv/berth");
    assert!(
        !d["error"].as_str().unwrap_or_default().is_empty(),
        "{}",
        r.text
    );
    assert_eq!(d["code"], 255);
}

#[tokio::test]
async fn openapi_types_the_environment_request_bodies() {
    let s = TestServer::start().await;
    let r = s.get("/api/openapi.json").await;
    assert_eq!(r.status, 200);
    let body_ref = |path: &str, method: &str| {
        r.body["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has an untyped body"))
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    };
    let create = body_ref("/api/companies/{company_id}/environments", "post");
    let props = &r.body["components"]["schemas"][&create]["properties"];
    for key in [
        "name",
        "description",
        "driver",
        "status",
        "config",
        "metadata",
    ] {
        assert!(props.get(key).is_some(), "{create} lacks {key}: {props}");
    }
    let patch = body_ref("/api/environments/{id}", "patch");
    assert!(r.body["components"]["schemas"][&patch]["properties"]["config"].is_object());
    let probe = body_ref(
        "/api/companies/{company_id}/environments/probe-config",
        "post",
    );
    assert!(r.body["components"]["schemas"][&probe]["properties"]["driver"].is_object());
    let settings = body_ref("/api/instance/settings/experimental", "patch");
    let props = &r.body["components"]["schemas"][&settings]["properties"];
    for key in [
        "enableEnvironments",
        "enableIsolatedWorkspaces",
        "autoRestartDevServerWhenIdle",
    ] {
        assert!(props.get(key).is_some(), "{settings} lacks {key}");
    }
}
