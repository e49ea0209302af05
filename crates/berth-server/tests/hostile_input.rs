//! Hostile input (issue 11): thousands of malformed, oversized, deeply nested, wrong-typed and
//! unicode-edge bodies, query strings and path parameters sent to every route the OpenAPI
//! document lists, on SQLite and on PostgreSQL. Zero 5xx, zero panics, zero dropped
//! connections, and the database byte-for-byte unchanged by every refused (4xx) request.
//!
//! The cases are generated from a seed (`BERTH_HOSTILE_SEED`, default fixed) so a failure
//! replays; `BERTH_HOSTILE_ROUNDS` (default 1) repeats the randomized part with fresh values
//! for longer runs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_server::LaunchOptions;
use common::TestServer;
use reqwest::Method;
use serde_json::{Map, Value, json};

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Values that break naive handlers: wrong types, number edges, unicode edges, sizes.
fn hostile_values(rng: &mut Rng) -> Vec<Value> {
    let long = "x".repeat(70_000);
    let mut v = vec![
        Value::Null,
        json!(true),
        json!(-1),
        json!(0),
        json!(1.5),
        json!(-0.0),
        json!(1e308),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!(" "),
        json!("\u{0}"),
        json!("a\nb\r\nc"),
        json!("\u{202e}gnp.exe"),
        json!("😀🏳️‍🌈"),
        json!("ｆｕｌｌｗｉｄｔｈ"),
        json!("'; DROP TABLE companies; --"),
        json!("$(touch /tmp/berth-hostile-pwned)`id`"),
        json!("../../../../etc/passwd"),
        json!("0190a0a0-0000-7000-8000-000000000001"),
        json!("00000000-0000-0000-0000-000000000000"),
        json!(long),
        json!([]),
        json!({}),
        json!([[[[[]]]]]),
        json!({"type": "secret_ref", "secretId": "not-a-uuid"}),
        json!({"__proto__": {"admin": true}}),
    ];
    v.push(json!(format!("{}", rng.next())));
    v.push(json!(rng.next() as f64 / 3.0));
    v
}

/// Raw bodies that are not (good) JSON at all.
fn malformed_bodies(rng: &mut Rng) -> Vec<Vec<u8>> {
    let depth = 20_000 + rng.below(1000);
    vec![
        b"{".to_vec(),
        b"{\"a\":}".to_vec(),
        b"{\"name\":\"x\",}".to_vec(),
        b"{} trailing".to_vec(),
        b"[1,2,3".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        b"{\"name\":\"\\ud800\"}".to_vec(),
        b"{\"name\":\"\xc3\x28\"}".to_vec(),
        b"\xef\xbb\xbf{}".to_vec(),
        b"null".to_vec(),
        b"\"just a string\"".to_vec(),
        b"123e99999".to_vec(),
        b"{\"name\":1e99999}".to_vec(),
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
        format!("{}1{}", "{\"a\":".repeat(depth / 4), "}".repeat(depth / 4)).into_bytes(),
        // Larger than any limit: 3 MiB of one string.
        format!("{{\"name\":\"{}\"}}", "y".repeat(3 << 20)).into_bytes(),
        // Many keys.
        {
            let mut m = Map::new();
            for i in 0..20_000 {
                m.insert(format!("k{i}"), json!(i));
            }
            serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
        },
        // Duplicate keys.
        b"{\"name\":\"a\",\"name\":\"b\",\"name\":{}}".to_vec(),
    ]
}

fn hostile_queries() -> Vec<&'static str> {
    vec![
        "?limit=-1",
        "?limit=0",
        "?limit=4294967296",
        "?limit=1e3",
        "?limit=",
        "?cursor=not-a-cursor",
        "?cursor=%FF%FE",
        "?cursor=%00",
        "?status=%00",
        "?status=active&status=archived",
        "?driver=ftp",
        "?unknownKey=1",
        "?%zz=1",
        "?after=-9223372036854775808",
        "?after=99999999999999999999999",
        "?limit=10&limit=20",
    ]
}

fn bad_ids() -> Vec<String> {
    vec![
        "not-a-uuid".into(),
        "%00".into(),
        "..%2F..%2Fetc".into(),
        "0190a0a0-0000-7000-8000-000000000001".into(),
        "%F0%9F%98%80".into(),
        "z".repeat(5000),
    ]
}

/// A plausible body for a route, whose fields are then broken one at a time.
fn template(method: &str, path: &str, ids: &Ids) -> Value {
    let ssh = json!({"host": "127.0.0.1", "port": 1, "username": "u", "remoteWorkspacePath": "/w"});
    match (method, path) {
        ("post", "/api/companies") => json!({"name": "c"}),
        ("patch", "/api/companies/{company_id}") => {
            json!({"defaultEnvironmentId": null, "hostExecution": false})
        }
        ("post", "/api/companies/{company_id}/environments") => {
            json!({"name": "e", "driver": "ssh", "config": ssh, "capacity": 1, "leasePolicy": "ephemeral", "metadata": {}})
        }
        ("patch", "/api/environments/{id}") => {
            json!({"name": "e", "config": {"port": 22}, "capacity": 2, "status": "active"})
        }
        ("post", "/api/companies/{company_id}/environments/probe-config") => {
            json!({"driver": "ssh", "config": ssh})
        }
        ("post", "/api/environments/{id}/trust-host-key") => json!({"fingerprint": "SHA256:x"}),
        ("post", "/api/companies/{company_id}/agents") | ("patch", "/api/agents/{id}") => json!({
            "name": "a", "adapterType": "process", "defaultEnvironmentId": null,
            "adapterConfig": {"command": "true", "args": ["a"], "timeoutSec": 5, "graceSec": 1,
                "env": {"A": "b"}, "extraArgs": []}}),
        ("post", "/api/companies/{company_id}/projects") | ("patch", "/api/projects/{id}") => {
            json!({"name": "p", "executionWorkspacePolicy": {}})
        }
        ("post", "/api/companies/{company_id}/issues") | ("patch", "/api/issues/{id}") => {
            json!({"title": "t", "projectId": null, "executionWorkspaceSettings": {}})
        }
        ("post", "/api/companies/{company_id}/execution-workspaces")
        | ("patch", "/api/execution-workspaces/{id}") => {
            json!({"localPath": ids.workspace_dir, "config": {"syncIgnored": true, "exclude": []}})
        }
        ("post", "/api/companies/{company_id}/secrets") => json!({"name": "s", "value": "v"}),
        ("post", "/api/companies/{company_id}/runs") => {
            json!({"agentId": ids.agent, "prompt": "p", "issueId": null})
        }
        ("post", "/api/tokens") => {
            json!({"name": "t", "kind": "board", "companyIds": [ids.company], "grants": []})
        }
        ("patch", "/api/instance/settings/experimental") => json!({"enableEnvironments": true}),
        _ => json!({}),
    }
}

#[derive(Debug, Clone)]
struct Ids {
    company: String,
    environment: String,
    agent: String,
    project: String,
    issue: String,
    workspace: String,
    workspace_dir: String,
    secret: String,
    run: String,
}

impl Ids {
    /// A real id for a path parameter, chosen by the route's resource.
    fn for_param(&self, path: &str, param: &str) -> String {
        if param == "company_id" {
            return self.company.clone();
        }
        let resource = path
            .trim_start_matches("/api/")
            .split('/')
            .next()
            .unwrap_or("");
        match resource {
            "environments" => self.environment.clone(),
            "agents" => self.agent.clone(),
            "projects" => self.project.clone(),
            "issues" => self.issue.clone(),
            "execution-workspaces" => self.workspace.clone(),
            "secrets" => self.secret.clone(),
            "runs" => self.run.clone(),
            _ => "0190a0a0-0000-7000-8000-000000000001".into(),
        }
    }
}

fn fill(path: &str, mut value_for: impl FnMut(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
        out.push_str(&value_for(&rest[start + 1..end]));
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

struct Case {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
}

fn cases(routes: &[(String, String)], ids: &Ids, rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for (method_name, template_path) in routes {
        let method = Method::from_bytes(method_name.to_uppercase().as_bytes()).unwrap();
        let real = fill(template_path, |p| ids.for_param(template_path, p));
        let has_params = template_path.contains('{');
        // Path parameters that are no id at all, or ids of nothing.
        if has_params {
            for bad in bad_ids() {
                cases.push(Case {
                    method: method.clone(),
                    path: fill(template_path, |_| bad.clone()),
                    body: (method != Method::GET).then(|| b"{}".to_vec()),
                    content_type: Some("application/json"),
                });
            }
        }
        if method == Method::GET {
            for q in hostile_queries() {
                cases.push(Case {
                    method: method.clone(),
                    path: format!("{real}{q}"),
                    body: None,
                    content_type: None,
                });
            }
            continue;
        }
        for body in malformed_bodies(rng) {
            cases.push(Case {
                method: method.clone(),
                path: real.clone(),
                body: Some(body),
                content_type: Some("application/json"),
            });
        }
        // The route's own shape, one field broken at a time (nested objects too).
        let base = template(method_name, template_path, ids);
        let values = hostile_values(rng);
        let mut variants = Vec::new();
        if let Value::Object(map) = &base {
            for (key, field) in map {
                for v in &values {
                    let mut broken = map.clone();
                    broken.insert(key.clone(), v.clone());
                    variants.push(Value::Object(broken));
                }
                if let Value::Object(inner) = field {
                    for (ik, _) in inner {
                        let v = rng.pick(&values).clone();
                        let mut broken_inner = inner.clone();
                        broken_inner.insert(ik.clone(), v);
                        let mut broken = map.clone();
                        broken.insert(key.clone(), Value::Object(broken_inner));
                        variants.push(Value::Object(broken));
                    }
                }
            }
            let mut extra = map.clone();
            extra.insert("unexpectedKey".into(), json!(1));
            variants.push(Value::Object(extra));
        }
        for v in [json!([]), json!(null), json!("s"), json!(7)] {
            variants.push(v);
        }
        for v in variants {
            cases.push(Case {
                method: method.clone(),
                path: real.clone(),
                body: Some(serde_json::to_vec(&v).unwrap()),
                content_type: Some("application/json"),
            });
        }
        // The wrong media type, whatever the body.
        cases.push(Case {
            method: method.clone(),
            path: real.clone(),
            body: Some(serde_json::to_vec(&base).unwrap()),
            content_type: Some("text/plain"),
        });
    }
    // Destructive routes last, so the rest meet live rows.
    cases.sort_by_key(|c| c.method == Method::DELETE);
    cases
}

async fn hostile_input_changes_nothing_it_refuses(database_url: Option<String>) {
    count_panics();
    let pg_url = database_url.clone();
    let s = TestServer::start_full(
        |c| {
            if let Some(url) = database_url {
                c.database_url = url;
            }
        },
        // No background writers: every change to the database is the request's.
        LaunchOptions {
            reaper_interval: None,
            run_worker: false,
            ..LaunchOptions::default()
        },
    )
    .await;
    let c = s.default_company().await;
    let id = |r: common::Reply| {
        assert!(r.status.is_success(), "{}", r.text);
        r.body["id"].as_str().unwrap().to_string()
    };
    let ws_dir = tempfile::tempdir().unwrap();
    let environment = id(s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "box", "driver": "ssh", "config": {"host": "127.0.0.1", "port": 1, "username": "u", "remoteWorkspacePath": "/w"}}),
        )
        .await);
    let agent = id(s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "a", "adapterType": "process", "adapterConfig": {"command": "true"}}),
        )
        .await);
    let project = id(s
        .post(
            &format!("/api/companies/{c}/projects"),
            json!({"name": "p"}),
        )
        .await);
    let issue = id(s
        .post(
            &format!("/api/companies/{c}/issues"),
            json!({"title": "i", "projectId": project}),
        )
        .await);
    let workspace = id(s
        .post(
            &format!("/api/companies/{c}/execution-workspaces"),
            json!({"localPath": ws_dir.path()}),
        )
        .await);
    let secret = id(s
        .post(
            &format!("/api/companies/{c}/secrets"),
            json!({"name": "s", "value": "v"}),
        )
        .await);
    let run = id(s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent, "prompt": "p"}),
        )
        .await);
    // Token mode with an instance admin: every route is reachable, and a valid token request
    // among the cases cannot change the mode under the rest.
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
    let ids = Ids {
        company: c,
        environment,
        agent,
        project,
        issue,
        workspace,
        workspace_dir: ws_dir.path().display().to_string(),
        secret,
        run,
    };

    let openapi = s.get("/api/openapi.json").await.body;
    let mut routes: Vec<(String, String)> = openapi["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    routes.push(("get".into(), "/metrics".into()));
    routes.sort();
    assert!(routes.len() >= 45, "every route: {routes:?}");

    // A second handle on the same database, to see every row the requests touched.
    let store_url =
        pg_url.unwrap_or_else(|| format!("sqlite://{}", s.home.path().join("berth.db").display()));
    let store = berth_server::open_store(&store_url).await.unwrap();
    let seed: u64 = std::env::var("BERTH_HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_be27);
    let rounds: u64 = std::env::var("BERTH_HOSTILE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Authenticating records when a token was last used: that is the bearer's, not the
    // request's, and is left out of the comparison.
    let export = || async {
        let mut dump = store.export_all().await.unwrap();
        for t in &mut dump.tokens {
            t.token.last_used_at = None;
        }
        dump
    };
    let mut snapshot = export().await;
    let mut sent = 0usize;
    let mut refused = 0usize;
    for round in 0..rounds {
        let mut rng = Rng(seed.wrapping_add(round).max(1));
        for case in cases(&routes, &ids, &mut rng) {
            let mut req = client
                .request(case.method.clone(), format!("{}{}", s.base, case.path))
                .bearer_auth(&admin);
            if let Some(t) = case.content_type {
                req = req.header(reqwest::header::CONTENT_TYPE, t);
            }
            if let Some(b) = case.body.clone() {
                req = req.body(b);
            }
            let what = format!(
                "{} {} ({} body bytes)",
                case.method,
                case.path.chars().take(120).collect::<String>(),
                case.body.as_ref().map_or(0, Vec::len)
            );
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: the connection failed: {e}"));
            let status = resp.status().as_u16();
            // An event stream stays open: its status is all there is to check.
            if !case.path.contains("/events") {
                let _ = resp.bytes().await;
            }
            sent += 1;
            assert!(status < 500, "{what} answered {status}");
            let now = export().await;
            if (400..500).contains(&status) {
                refused += 1;
                assert!(
                    now == snapshot,
                    "{what} was refused with {status} but changed the database: {}",
                    changed_tables(&snapshot, &now)
                );
            }
            if status < 400 && std::env::var_os("BERTH_HOSTILE_SHOW").is_some() {
                eprintln!(
                    "accepted {status}: {what}: {}",
                    case.body
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b)
                            .chars()
                            .take(200)
                            .collect::<String>())
                        .unwrap_or_default()
                );
            }
            snapshot = now;
        }
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a handler panicked");
    assert!(sent >= 2000, "only {sent} hostile requests");
    // Routes without query parameters ignore unknown ones (200), and some hostile-looking
    // strings are fine names or prompts: most, not all, cases are refused.
    assert!(
        refused * 4 >= sent * 3,
        "most cases must be refused: {refused}/{sent}"
    );
    assert_eq!(s.get("/api/health").await.status, 200);
}

/// Which parts of two dumps differ (for the failure message).
fn changed_tables(a: &berth_store::Dump, b: &berth_store::Dump) -> String {
    let (a, b) = (
        serde_json::to_value(a).unwrap_or_default(),
        serde_json::to_value(b).unwrap_or_default(),
    );
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return String::new();
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v} -> {}", b.get(k).cloned().unwrap_or_default()))
        .map(|d| d.chars().take(2000).collect::<String>())
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn hostile_input_on_sqlite() {
    hostile_input_changes_nothing_it_refuses(None).await;
}

#[tokio::test]
async fn hostile_input_on_postgres() {
    let Some(db) = berth_testkit::pg::TestDatabase::create_or_skip()
        .await
        .unwrap()
    else {
        return;
    };
    hostile_input_changes_nothing_it_refuses(Some(db.url().to_string())).await;
    db.cleanup().await.unwrap();
}
