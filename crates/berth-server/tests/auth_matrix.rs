//! Every route × {no token, another company's token, unprivileged tokens, privileged token,
//! a live run's `BERTH_API_TOKEN`} gives the right status, and nothing of company A leaks to
//! someone who may not see it.

mod common;

use common::{TestServer, ssh_config};

use reqwest::Method;
use serde_json::{Value, json};

/// A marker only privileged readers may see (in the config); the host itself is loopback with
/// a closed port so probes fail fast and stay on this machine.
const SECRET_HOST: &str = "confidential-user-7731";
const SECRET_NAME: &str = "Confidential build box";

#[derive(Clone, Copy, Debug)]
enum Who {
    Nobody,
    OtherCompany,
    Unprivileged,
    AgentToken,
    Privileged,
    /// The run token of a live run of company A: its own run, agent, issue, project and
    /// workspace, and nothing else.
    RunToken,
}

const WHO: [Who; 6] = [
    Who::Nobody,
    Who::OtherCompany,
    Who::Unprivileged,
    Who::AgentToken,
    Who::Privileged,
    Who::RunToken,
];

/// A plain env value of the live run's agent: only the board reads it.
const PLAIN_ENV_VALUE: &str = "plain-env-value-5521";

#[tokio::test]
async fn every_route_answers_each_actor_correctly_and_never_leaks() {
    let s = TestServer::start().await;
    let a = s.default_company().await;
    let b = s
        .post("/api/companies", json!({"name": "rival"}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let env = s
        .post(
            &format!("/api/companies/{a}/environments"),
            json!({"name": SECRET_NAME, "driver": "ssh", "config": {"host": "127.0.0.1", "port": 1, "username": SECRET_HOST, "remoteWorkspacePath": "/w", "privateKey": "k"}, "metadata": {"owner": "ops"}}),
        )
        .await;
    assert_eq!(env.status, 201, "{}", env.text);
    let e = env.body["id"].as_str().unwrap().to_string();
    let agent = s
        .post(
            &format!("/api/companies/{a}/agents"),
            json!({"name": "agent-a", "adapterType": "process"}),
        )
        .await;
    let ag = agent.body["id"].as_str().unwrap().to_string();
    let project = s
        .post(
            &format!("/api/companies/{a}/projects"),
            json!({"name": "proj"}),
        )
        .await;
    let pr = project.body["id"].as_str().unwrap().to_string();
    let issue = s
        .post(
            &format!("/api/companies/{a}/issues"),
            json!({"title": "iss", "projectId": pr}),
        )
        .await;
    let is = issue.body["id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let ws = s
        .post(
            &format!("/api/companies/{a}/execution-workspaces"),
            json!({"localPath": dir.path()}),
        )
        .await;
    let w = ws.body["id"].as_str().unwrap().to_string();
    // A live run of company A on that issue and workspace; its agent leaves its run token
    // where the test can read it, then waits.
    let live_agent = s
        .post(
            &format!("/api/companies/{a}/agents"),
            json!({"name": "live", "adapterType": "process", "adapterConfig": {
                "command": "sh",
                "args": ["-c", "printf %s \"$BERTH_API_TOKEN\" > .run-token.tmp && mv .run-token.tmp .run-token && sleep 600"],
                "env": {"PLAIN": PLAIN_ENV_VALUE}}}),
        )
        .await;
    assert_eq!(live_agent.status, 201, "{}", live_agent.text);
    let live_agent = live_agent.body["id"].as_str().unwrap().to_string();
    let live = s
        .post(
            &format!("/api/companies/{a}/runs"),
            json!({"agentId": live_agent, "prompt": "p", "issueId": is, "executionWorkspaceId": w}),
        )
        .await;
    assert_eq!(live.status, 202, "{}", live.text);
    let live = live.body["id"].as_str().unwrap().to_string();
    let token_file = dir.path().join(".run-token");
    let mut run_token = String::new();
    for _ in 0..800 {
        if let Ok(t) = std::fs::read_to_string(&token_file) {
            run_token = t;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        run_token.starts_with("berthrun_"),
        "the live run's agent wrote no run token: {:?} ({})",
        run_token,
        s.get(&format!("/api/runs/{live}")).await.text
    );
    // A finished run of company A (an agent whose command is `true`).
    let quick = s
        .post(&format!("/api/companies/{a}/agents"), json!({"name": "quick", "adapterType": "process", "adapterConfig": {"command": "true"}}))
        .await;
    let quick = quick.body["id"].as_str().unwrap().to_string();
    let run = s
        .post(
            &format!("/api/companies/{a}/runs"),
            json!({"agentId": quick, "prompt": "p"}),
        )
        .await;
    assert_eq!(run.status, 202, "{}", run.text);
    let ru = run.body["id"].as_str().unwrap().to_string();
    for _ in 0..400 {
        let r = s.get(&format!("/api/runs/{ru}")).await;
        if r.body["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    // Victims for the DELETE routes (one each; whoever may delete does so first).
    let id_of = |r: &common::Reply| r.body["id"].as_str().unwrap().to_string();
    let e2 = id_of(
        &s.post(
            &format!("/api/companies/{a}/environments"),
            json!({"name": "doomed", "driver": "ssh", "config": ssh_config(None)}),
        )
        .await,
    );
    let ag2 = id_of(
        &s.post(
            &format!("/api/companies/{a}/agents"),
            json!({"name": "doomed", "adapterType": "process"}),
        )
        .await,
    );
    let pr2 = id_of(
        &s.post(
            &format!("/api/companies/{a}/projects"),
            json!({"name": "doomed"}),
        )
        .await,
    );
    let is2 = id_of(
        &s.post(
            &format!("/api/companies/{a}/issues"),
            json!({"title": "doomed"}),
        )
        .await,
    );
    let dir2 = tempfile::tempdir().unwrap();
    let w2 = id_of(
        &s.post(
            &format!("/api/companies/{a}/execution-workspaces"),
            json!({"localPath": dir2.path()}),
        )
        .await,
    );
    let sec2 = id_of(
        &s.post(
            &format!("/api/companies/{a}/secrets"),
            json!({"name": "doomed", "value": "v"}),
        )
        .await,
    );

    // Tokens: the first one ends local_trusted mode, so it is the admin used for the rest.
    let admin = s
        .post(
            "/api/tokens",
            json!({"name": "admin", "kind": "board", "instanceAdmin": true}),
        )
        .await;
    assert_eq!(admin.status, 201, "{}", admin.text);
    let admin = admin.body["token"].as_str().unwrap().to_string();
    assert_eq!(s.get("/api/health").await.body["authMode"], "token");
    let mk = |body: Value| {
        let s = &s;
        let admin = admin.clone();
        async move {
            let r = s
                .call(Method::POST, "/api/tokens", Some(&admin), Some(body))
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            assert!(!r.text.contains("sha256"), "the hash is never returned");
            r.body["token"].as_str().unwrap().to_string()
        }
    };
    let privileged = mk(
        json!({"name": "p", "kind": "board", "companyIds": [a], "grants": ["environments:manage"]}),
    )
    .await;
    let unprivileged = mk(json!({"name": "u", "kind": "board", "companyIds": [a]})).await;
    let agent_token = mk(json!({"name": "ag", "kind": "agent", "agentId": ag})).await;
    let other = mk(
        json!({"name": "o", "kind": "board", "companyIds": [b], "grants": ["environments:manage"]}),
    )
    .await;
    let token_of = |who: Who| -> Option<String> {
        match who {
            Who::Nobody => None,
            Who::OtherCompany => Some(other.clone()),
            Who::Unprivileged => Some(unprivileged.clone()),
            Who::AgentToken => Some(agent_token.clone()),
            Who::Privileged => Some(privileged.clone()),
            Who::RunToken => Some(run_token.clone()),
        }
    };

    let mut n = 0;
    let mut fresh = || {
        n += 1;
        format!("n{n}")
    };
    // (method, path, body maker, expected statuses for WHO in order)
    type Body = Box<dyn FnMut() -> Option<Value>>;
    let none = || -> Body { Box::new(|| None) };
    let mut routes: Vec<(Method, String, Body, [u16; 6])> = vec![
        (
            Method::GET,
            format!("/api/companies/{a}"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/companies/{a}/environments"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/companies/{a}/environments/capabilities"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/environments/{e}"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::PATCH,
            format!("/api/environments/{e}"),
            Box::new(|| Some(json!({"description": "d"}))),
            [401, 404, 403, 403, 200, 404],
        ),
        (
            Method::POST,
            format!("/api/environments/{e}/probe"),
            Box::new(|| Some(json!({}))),
            [401, 404, 403, 403, 200, 404],
        ),
        (
            Method::POST,
            format!("/api/companies/{a}/environments/probe-config"),
            Box::new(|| Some(json!({"driver": "local"}))),
            [401, 404, 403, 403, 200, 404],
        ),
        (
            Method::POST,
            format!("/api/environments/{e}/trust-host-key"),
            Box::new(|| Some(json!({"fingerprint": "SHA256:abc"}))),
            [401, 404, 403, 403, 422, 404],
        ),
        (
            Method::GET,
            format!("/api/environments/{e}/leases"),
            none(),
            [401, 404, 403, 403, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/environment-leases/{}", uuid_like()),
            none(),
            [401, 404, 404, 404, 404, 404],
        ),
        (
            Method::GET,
            format!("/api/companies/{a}/secrets"),
            none(),
            [401, 404, 403, 403, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/companies/{a}/agents"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/agents/{ag}"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::PATCH,
            format!("/api/agents/{ag}"),
            Box::new(|| Some(json!({"name": "agent-a"}))),
            [401, 404, 200, 403, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/companies/{a}/projects"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/projects/{pr}"),
            none(),
            [401, 404, 200, 200, 200, 200],
        ),
        (
            Method::PATCH,
            format!("/api/projects/{pr}"),
            Box::new(|| Some(json!({"name": "proj"}))),
            [401, 404, 200, 403, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/companies/{a}/issues"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/issues/{is}"),
            none(),
            [401, 404, 200, 200, 200, 200],
        ),
        (
            Method::PATCH,
            format!("/api/issues/{is}"),
            Box::new(|| Some(json!({"title": "iss"}))),
            [401, 404, 200, 403, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/companies/{a}/runs"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/runs/{live}"),
            none(),
            [401, 404, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/agents/{live_agent}"),
            none(),
            [401, 404, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/runs/{ru}"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/runs/{ru}/events"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::POST,
            format!("/api/runs/{ru}/cancel"),
            Box::new(|| Some(json!({}))),
            [401, 404, 409, 403, 409, 404],
        ),
        (
            Method::GET,
            format!("/api/companies/{a}/execution-workspaces"),
            none(),
            [401, 404, 200, 200, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/execution-workspaces/{w}"),
            none(),
            [401, 404, 200, 200, 200, 200],
        ),
        (
            Method::PATCH,
            format!("/api/execution-workspaces/{w}"),
            Box::new(|| Some(json!({"config": {}}))),
            [401, 404, 200, 403, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/companies/{a}/activity"),
            none(),
            [401, 404, 200, 403, 200, 404],
        ),
        (
            Method::GET,
            "/api/instance/settings/experimental".into(),
            none(),
            [401, 200, 200, 403, 200, 404],
        ),
        (
            Method::PATCH,
            "/api/instance/settings/experimental".into(),
            Box::new(|| Some(json!({"enableEnvironments": true}))),
            [401, 403, 403, 403, 403, 404],
        ),
        (
            Method::GET,
            "/api/tokens".into(),
            none(),
            [401, 403, 403, 403, 403, 404],
        ),
        (
            Method::POST,
            "/api/companies".into(),
            Box::new(|| Some(json!({"name": "x"}))),
            [401, 403, 403, 403, 403, 404],
        ),
        (
            Method::GET,
            "/api/health".into(),
            none(),
            [200, 200, 200, 200, 200, 200],
        ),
    ];
    let token_victim = {
        let r = s
            .call(
                Method::POST,
                "/api/tokens",
                Some(&admin),
                Some(json!({"name": "victim", "kind": "board"})),
            )
            .await;
        r.body["id"].as_str().unwrap().to_string()
    };
    routes.extend([
        (
            Method::GET,
            "/api/companies".to_string(),
            none(),
            [401, 200, 200, 200, 200, 404],
        ),
        (
            Method::PATCH,
            format!("/api/companies/{a}"),
            Box::new(|| Some(json!({"defaultEnvironmentId": null}))) as Body,
            [401, 404, 403, 403, 200, 404],
        ),
        (
            Method::POST,
            "/api/tokens".to_string(),
            Box::new(|| Some(json!({"name": "t", "kind": "board"}))) as Body,
            [401, 403, 403, 403, 403, 404],
        ),
        (
            Method::DELETE,
            format!("/api/tokens/{token_victim}"),
            none(),
            [401, 403, 403, 403, 403, 404],
        ),
        (
            Method::GET,
            "/metrics".to_string(),
            none(),
            // Every company's counts: instance admins only.
            [401, 403, 403, 403, 403, 404],
        ),
        (
            Method::GET,
            "/api/openapi.json".to_string(),
            none(),
            [200, 200, 200, 200, 200, 200],
        ),
        (
            Method::DELETE,
            format!("/api/environments/{e2}"),
            none(),
            [401, 404, 403, 403, 200, 404],
        ),
        (
            Method::DELETE,
            format!("/api/secrets/{sec2}"),
            none(),
            [401, 404, 403, 403, 200, 404],
        ),
        // Board members may delete these: the unprivileged board token does, then it is gone.
        (
            Method::DELETE,
            format!("/api/agents/{ag2}"),
            none(),
            [401, 404, 200, 404, 404, 404],
        ),
        (
            Method::DELETE,
            format!("/api/projects/{pr2}"),
            none(),
            [401, 404, 200, 404, 404, 404],
        ),
        (
            Method::DELETE,
            format!("/api/issues/{is2}"),
            none(),
            [401, 404, 200, 404, 404, 404],
        ),
        (
            Method::DELETE,
            format!("/api/execution-workspaces/{w2}"),
            none(),
            [401, 404, 200, 404, 404, 404],
        ),
    ]);
    // Creations need fresh names per call.
    let names: Vec<String> = (0..5).map(|_| fresh()).collect();
    let mut i = 0;
    let mut names_env = names.clone().into_iter();
    routes.push((
        Method::POST,
        format!("/api/companies/{a}/environments"),
        Box::new(move || Some(json!({"name": names_env.next().unwrap_or_default(), "driver": "ssh", "config": ssh_config(None)}))),
        [401, 404, 403, 403, 201, 404],
    ));
    let mut names_secret = names.clone().into_iter();
    routes.push((
        Method::POST,
        format!("/api/companies/{a}/secrets"),
        Box::new(move || {
            Some(json!({"name": names_secret.next().unwrap_or_default(), "value": "v"}))
        }),
        [401, 404, 403, 403, 201, 404],
    ));
    let quick_for_runs = quick.clone();
    routes.push((
        Method::POST,
        format!("/api/companies/{a}/runs"),
        Box::new(move || Some(json!({"agentId": quick_for_runs, "prompt": "p"}))),
        [401, 404, 202, 403, 202, 404],
    ));
    for (kind, body) in [
        ("agents", json!({"name": "x", "adapterType": "process"})),
        ("projects", json!({"name": "x"})),
        ("issues", json!({"title": "x"})),
    ] {
        routes.push((
            Method::POST,
            format!("/api/companies/{a}/{kind}"),
            Box::new(move || Some(body.clone())),
            [401, 404, 201, 403, 201, 404],
        ));
    }

    for (method, path, body, expected) in routes.iter_mut() {
        for (who, want) in WHO.iter().zip(expected.iter()) {
            i += 1;
            let r = s
                .call(method.clone(), path, token_of(*who).as_deref(), body())
                .await;
            assert_eq!(
                r.status.as_u16(),
                *want,
                "{method} {path} as {who:?}: {}",
                r.text
            );
            let can_see_config = matches!(who, Who::Privileged);
            if !can_see_config {
                assert!(
                    !r.text.contains(SECRET_HOST),
                    "{method} {path} as {who:?} leaked the config: {}",
                    r.text
                );
            }
            if !matches!(who, Who::Unprivileged | Who::Privileged) {
                assert!(
                    !r.text.contains(PLAIN_ENV_VALUE),
                    "{method} {path} as {who:?} leaked an agent's env value: {}",
                    r.text
                );
            }
            if matches!(who, Who::Nobody | Who::OtherCompany | Who::RunToken) {
                assert!(
                    !r.text.contains(SECRET_NAME),
                    "{method} {path} as {who:?} leaked the name: {}",
                    r.text
                );
            }
            if r.status == 404 {
                assert!(
                    r.body["error"]
                        .as_str()
                        .is_some_and(|m| m.ends_with("not found")),
                    "{}",
                    r.text
                );
            }
        }
    }
    assert!(i > 100);

    // The run token reads its agent with env values redacted; the board reads them.
    let r = s
        .call(
            Method::GET,
            &format!("/api/agents/{live_agent}"),
            Some(&run_token),
            None,
        )
        .await;
    assert_eq!(r.body["adapterConfig"]["env"]["PLAIN"], "***", "{}", r.text);
    let r = s
        .call(
            Method::GET,
            &format!("/api/agents/{live_agent}"),
            Some(&unprivileged),
            None,
        )
        .await;
    assert_eq!(r.body["adapterConfig"]["env"]["PLAIN"], PLAIN_ENV_VALUE);
    // It cannot cancel its own run (no mutation), and dies with the run.
    let r = s
        .call(
            Method::POST,
            &format!("/api/runs/{live}/cancel"),
            Some(&run_token),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = s
        .call(
            Method::POST,
            &format!("/api/runs/{live}/cancel"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let mut dead = false;
    for _ in 0..400 {
        let r = s
            .call(
                Method::GET,
                &format!("/api/runs/{live}"),
                Some(&run_token),
                None,
            )
            .await;
        if r.status == 401 {
            dead = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(dead, "the run token outlived its run");

    // Redacted view for readers without environments:manage.
    let r = s
        .call(
            Method::GET,
            &format!("/api/environments/{e}"),
            Some(&unprivileged),
            None,
        )
        .await;
    assert_eq!(r.body["config"], json!({}));
    assert_eq!(r.body["metadata"], Value::Null);
    assert_eq!(r.body["configRedacted"], true);
    assert_eq!(r.body["metadataRedacted"], true);
    let r = s
        .call(
            Method::GET,
            &format!("/api/environments/{e}"),
            Some(&privileged),
            None,
        )
        .await;
    assert_eq!(r.body["config"]["username"], SECRET_HOST);
    assert!(r.body.get("configRedacted").is_none());
    // The other company's list of companies does not show company A.
    let r = s
        .call(Method::GET, "/api/companies", Some(&other), None)
        .await;
    assert!(!r.text.contains(&a), "{}", r.text);
    // A revoked token stops working at once.
    let list = s.call(Method::GET, "/api/tokens", Some(&admin), None).await;
    let u_id = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "u")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("/api/tokens/{u_id}"),
            Some(&admin),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        s.call(
            Method::GET,
            &format!("/api/companies/{a}"),
            Some(&unprivileged),
            None
        )
        .await
        .status,
        401
    );
    assert_eq!(
        s.call(
            Method::GET,
            &format!("/api/companies/{a}"),
            Some("berth_forged"),
            None
        )
        .await
        .status,
        401
    );
}

fn uuid_like() -> String {
    "0190a0a0-0000-7000-8000-000000000001".to_string()
}
