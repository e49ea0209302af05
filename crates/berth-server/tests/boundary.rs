//! The HTTP trust boundary (SPEC §11, issue 11): a web page the operator visits cannot act as
//! the `local_trusted` admin — not by DNS rebinding (a foreign `Host`), not by a cross-site
//! "simple request" (no JSON content type), not from a foreign `Origin` — and `/metrics` is
//! no open window. Each test drives the real server over HTTP and checks that a refused
//! request changed nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use common::TestServer;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HOST, ORIGIN};
use serde_json::{Value, json};

fn port_of(s: &TestServer) -> u16 {
    s.base.rsplit(':').next().unwrap().parse().unwrap()
}

async fn raw(
    s: &TestServer,
    method: Method,
    path: &str,
    headers: &[(reqwest::header::HeaderName, String)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = s.client.request(method, format!("{}{}", s.base, path));
    for (k, v) in headers {
        req = req.header(k.clone(), v.clone());
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn agent_count(s: &TestServer, company: &str) -> usize {
    s.get(&format!("/api/companies/{company}/agents"))
        .await
        .body
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_rebound_host_is_not_the_local_admin() {
    let s = TestServer::start().await;
    let port = port_of(&s);
    for host in [
        format!("rebind.attacker.example:{port}"),
        format!("127.0.0.1.nip.example:{port}"),
        // Loopback, but another port: a different origin the browser would also share.
        format!("localhost:{}", port.wrapping_add(1)),
    ] {
        let (status, body) = raw(
            &s,
            Method::GET,
            "/api/companies",
            &[(HOST, host.clone())],
            None,
        )
        .await;
        assert_eq!(status, 403, "Host {host}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("server.allowedHosts"), "{message}");
        assert!(
            !body.to_string().contains("default"),
            "no data behind a refusal"
        );
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
    ] {
        let (status, body) = raw(&s, Method::GET, "/api/companies", &[(HOST, host)], None).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn a_rebound_page_cannot_lock_the_operator_out_or_start_a_run() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let port = port_of(&s);
    let evil = [
        (HOST, format!("rebind.attacker.example:{port}")),
        (CONTENT_TYPE, "application/json".to_string()),
        (ORIGIN, format!("http://rebind.attacker.example:{port}")),
    ];
    let (status, _) = raw(
        &s,
        Method::POST,
        "/api/tokens",
        &evil,
        Some(r#"{"name":"pwn","kind":"board","instanceAdmin":true}"#),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = raw(
        &s,
        Method::POST,
        &format!("/api/companies/{c}/agents"),
        &evil,
        Some(r#"{"name":"pwn","adapterType":"process","adapterConfig":{"command":"cat"}}"#),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(s.get("/api/health").await.body["authMode"], "local_trusted");
    assert_eq!(agent_count(&s, &c).await, 0);
}

#[tokio::test]
async fn cross_site_simple_requests_change_nothing() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let agent_body = r#"{"name":"pwn","adapterType":"process","adapterConfig":{"command":"sh","args":["-c","cat ../../master.key"]}}"#;
    // What a foreign page can send without a CORS preflight: form types, text/plain, none.
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut headers = Vec::new();
        if let Some(t) = content_type {
            headers.push((CONTENT_TYPE, t.to_string()));
        }
        let (status, body) = raw(
            &s,
            Method::POST,
            &format!("/api/companies/{c}/agents"),
            &headers,
            Some(agent_body),
        )
        .await;
        assert_eq!(status, 415, "{content_type:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("application/json"));
        let (status, _) = raw(
            &s,
            Method::POST,
            "/api/tokens",
            &headers,
            Some(r#"{"name":"pwn","kind":"board"}"#),
        )
        .await;
        assert_eq!(status, 415);
    }
    assert_eq!(agent_count(&s, &c).await, 0, "no agent was created");
    assert_eq!(s.get("/api/health").await.body["authMode"], "local_trusted");
    // The same request as JSON is what the API is for.
    let (status, body) = raw(
        &s,
        Method::POST,
        &format!("/api/companies/{c}/agents"),
        &[(CONTENT_TYPE, "application/json; charset=utf-8".into())],
        Some(r#"{"name":"ok","adapterType":"process","adapterConfig":{"command":"true"}}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_the_own_one_accepted() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let json_type = (CONTENT_TYPE, "application/json".to_string());
    let body = r#"{"name":"p"}"#;
    for origin in [
        "http://attacker.example",
        "null",
        "https://127.0.0.1",
        "http://localhost:1",
    ] {
        let (status, reply) = raw(
            &s,
            Method::POST,
            &format!("/api/companies/{c}/projects"),
            &[json_type.clone(), (ORIGIN, origin.to_string())],
            Some(body),
        )
        .await;
        assert_eq!(status, 403, "{origin}: {reply}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("server.allowedOrigins")
        );
        // Reads from a foreign origin are refused too.
        let (status, _) = raw(
            &s,
            Method::GET,
            "/api/companies",
            &[(ORIGIN, origin.to_string())],
            None,
        )
        .await;
        assert_eq!(status, 403, "{origin}");
    }
    let projects = s.get(&format!("/api/companies/{c}/projects")).await;
    assert_eq!(projects.body.as_array().unwrap().len(), 0);
    let (status, reply) = raw(
        &s,
        Method::POST,
        &format!("/api/companies/{c}/projects"),
        &[json_type, (ORIGIN, s.base.clone())],
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
}

#[tokio::test]
async fn allowed_hosts_and_origins_widen_the_boundary_only_as_configured() {
    let s = TestServer::start_configured(|c| {
        c.allowed_hosts = vec!["berth.internal".into(), "localhost:8022".into()];
        c.allowed_origins = vec!["http://ui.internal:3000".into()];
    })
    .await;
    let port = port_of(&s);
    for (host, want) in [
        (format!("berth.internal:{port}"), 200),
        ("berth.internal".to_string(), 200),
        ("localhost:8022".to_string(), 200),
        ("localhost:8023".to_string(), 403),
        (format!("other.internal:{port}"), 403),
    ] {
        let (status, body) = raw(
            &s,
            Method::GET,
            "/api/companies",
            &[(HOST, host.clone())],
            None,
        )
        .await;
        assert_eq!(status, want, "{host}: {body}");
    }
    let c = s.default_company().await;
    let (status, body) = raw(
        &s,
        Method::POST,
        &format!("/api/companies/{c}/projects"),
        &[
            (CONTENT_TYPE, "application/json".into()),
            (ORIGIN, "http://ui.internal:3000".into()),
        ],
        Some(r#"{"name":"from-ui"}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn token_mode_keeps_the_boundary_and_guards_metrics() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    assert_eq!(
        s.get("/metrics").await.status,
        200,
        "local_trusted: the local admin"
    );
    let admin = s
        .post(
            "/api/tokens",
            json!({"name": "admin", "kind": "board", "instanceAdmin": true}),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let board = s
        .call(
            Method::POST,
            "/api/tokens",
            Some(&admin),
            Some(json!({"name": "b", "kind": "board", "companyIds": [c], "grants": ["environments:manage"]})),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = |t: &str| (reqwest::header::AUTHORIZATION, format!("Bearer {t}"));
    // A valid token does not excuse a foreign origin or a form post.
    let (status, _) = raw(
        &s,
        Method::POST,
        &format!("/api/companies/{c}/projects"),
        &[
            bearer(&admin),
            (CONTENT_TYPE, "application/json".into()),
            (ORIGIN, "http://attacker.example".into()),
        ],
        Some(r#"{"name":"p"}"#),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = raw(
        &s,
        Method::POST,
        &format!("/api/companies/{c}/projects"),
        &[bearer(&admin), (CONTENT_TYPE, "text/plain".into())],
        Some(r#"{"name":"p"}"#),
    )
    .await;
    assert_eq!(status, 415);
    let (status, _) = raw(
        &s,
        Method::GET,
        "/api/companies",
        &[bearer(&admin), (HOST, "rebind.attacker.example".into())],
        None,
    )
    .await;
    assert_eq!(status, 403);
    // Metrics count every company's work: instance admins only.
    assert_eq!(s.get("/metrics").await.status, 401);
    assert_eq!(
        s.call(Method::GET, "/metrics", Some(&board), None)
            .await
            .status,
        403
    );
    let m = s.call(Method::GET, "/metrics", Some(&admin), None).await;
    assert_eq!(m.status, 200);
    assert!(m.text.contains("berth_http_requests_total"), "{}", m.text);
}

/// The agents' listener is reachable from every SSH host through the run's forward: it
/// never serves `/metrics`, whatever the token.
#[tokio::test]
async fn the_agents_listener_never_serves_metrics() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let dir = tempfile::tempdir().unwrap();
    let ws = s
        .post(
            &format!("/api/companies/{c}/execution-workspaces"),
            json!({"localPath": dir.path()}),
        )
        .await;
    assert_eq!(ws.status, 201, "{}", ws.text);
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "url", "adapterType": "process", "adapterConfig": {
                "command": "sh",
                "args": ["-c", "printf %s \"$BERTH_API_URL\" > .u.tmp && mv .u.tmp .url && printf %s \"$BERTH_API_TOKEN\" > .t.tmp && mv .t.tmp .token && sleep 60"]}}),
        )
        .await;
    let run = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent.body["id"], "prompt": "p", "executionWorkspaceId": ws.body["id"]}),
        )
        .await;
    assert_eq!(run.status, 202, "{}", run.text);
    let run_id = run.body["id"].as_str().unwrap().to_string();
    let mut url = String::new();
    for _ in 0..800 {
        if let (Ok(u), true) = (
            std::fs::read_to_string(dir.path().join(".url")),
            dir.path().join(".token").exists(),
        ) {
            url = u;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "no BERTH_API_URL: {url:?}"
    );
    let token = std::fs::read_to_string(dir.path().join(".token")).unwrap();
    let client = reqwest::Client::new();
    let plain = client.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 404);
    let with_token = client
        .get(format!("{url}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status().as_u16(), 404);
    // The run token does work there for its own run.
    let own = client
        .get(format!("{url}/api/runs/{run_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status().as_u16(), 200);
    let cancel = s
        .post(&format!("/api/runs/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.text);
}

#[tokio::test]
async fn a_second_server_on_one_sqlite_file_refuses_to_start() {
    let s = TestServer::start().await;
    let database_url = format!("sqlite://{}", s.home.path().join("berth.db").display());
    let other_runs = tempfile::tempdir().unwrap();
    let config = berth_server::ServerConfig {
        database_url,
        berth_home: s.home.path().to_path_buf(),
        runs_root: Some(other_runs.path().to_path_buf()),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        berth_server::launch_with_listener(config, listener, std::future::pending()),
    )
    .await
    .expect("the second server must refuse at once, not serve")
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("another Berth server"), "{message}");
    assert!(message.contains("berth.db"), "{message}");
    // The first one is untouched.
    assert_eq!(s.get("/api/health").await.status, 200);
}
