//! An agent's `adapterConfig` is judged on create and on patch: a number out of range (however
//! large), a command with a line break, a wrong type — each is a 422 naming the dotted field,
//! and a refused patch leaves the agent exactly as it was. On SQLite and on PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

mod common;

use berth_testkit::pg::TestDatabase;
use common::{Reply, TestServer};
use serde_json::{Value, json};

/// `(adapterType, adapterConfig, field)` a create or patch must refuse.
fn hostile_configs() -> Vec<(&'static str, Value, &'static str)> {
    // A number serde_json keeps as u64::MAX, not rounded through f64.
    let huge: Value = serde_json::from_str("18446744073709551615").unwrap();
    vec![
        (
            "process",
            json!({"command": "true", "graceSec": huge}),
            "adapterConfig.graceSec",
        ),
        (
            "claude_local",
            json!({"graceSec": huge}),
            "adapterConfig.graceSec",
        ),
        (
            "process",
            json!({"command": "true", "timeoutSec": 604801}),
            "adapterConfig.timeoutSec",
        ),
        (
            "codex_local",
            json!({"timeoutSec": -0.0}),
            "adapterConfig.timeoutSec",
        ),
        (
            "claude_local",
            json!({"maxTurnsPerRun": 10001}),
            "adapterConfig.maxTurnsPerRun",
        ),
        (
            "process",
            json!({"command": "true\ntouch /tmp/x"}),
            "adapterConfig.command",
        ),
        (
            "claude_local",
            json!({"command": "claude\n"}),
            "adapterConfig.command",
        ),
        (
            "claude_local",
            json!({"extraArgs": true}),
            "adapterConfig.extraArgs",
        ),
        (
            "gemini_local",
            json!({"extraArgs": ["--ok", "a\nb"]}),
            "adapterConfig.extraArgs.1",
        ),
        (
            "process",
            json!({"graceSec": 1e300}),
            "adapterConfig.graceSec",
        ),
        (
            "process",
            json!({"command": "true", "env": {"1BAD": "x"}}),
            "adapterConfig.env.1BAD",
        ),
        // (A NUL anywhere in a body is already a 400 naming its path, at the JSON boundary.)
    ]
}

fn assert_names(r: &Reply, field: &str, case: &Value) {
    assert_eq!(r.status, 422, "{case}: {}", r.text);
    let paths: Vec<&str> = r.body["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|i| i["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(paths, [field], "{case}: {}", r.text);
}

async fn out_of_range_configs_are_refused_and_change_nothing(s: &TestServer) {
    let c = s.default_company().await;
    for (adapter, config, field) in hostile_configs() {
        let case = json!({"adapterType": adapter, "adapterConfig": config});
        let before = s.get(&format!("/api/companies/{c}/agents")).await.text;
        let r = s
            .post(
                &format!("/api/companies/{c}/agents"),
                json!({"name": "bad", "adapterType": adapter, "adapterConfig": config}),
            )
            .await;
        assert_names(&r, field, &case);
        assert_eq!(
            s.get(&format!("/api/companies/{c}/agents")).await.text,
            before,
            "{case}: a refused create stored something"
        );

        let good = match adapter {
            "process" => json!({"command": "true", "graceSec": 5, "timeoutSec": 60}),
            _ => json!({"graceSec": 5, "timeoutSec": 60}),
        };
        let created = s
            .post(
                &format!("/api/companies/{c}/agents"),
                json!({"name": format!("ok-{adapter}"), "adapterType": adapter, "adapterConfig": good}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        let id = created.body["id"].as_str().unwrap().to_string();
        let r = s
            .patch(
                &format!("/api/agents/{id}"),
                json!({"adapterConfig": config}),
            )
            .await;
        assert_names(&r, field, &case);
        let after = s.get(&format!("/api/agents/{id}")).await;
        assert_eq!(
            after.body, created.body,
            "{case}: a refused patch changed the agent"
        );
        s.delete(&format!("/api/agents/{id}")).await;
    }
    // The bounds themselves are accepted.
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "edge", "adapterType": "claude_local", "adapterConfig":
                {"timeoutSec": 604800, "graceSec": 3600, "maxTurnsPerRun": 10000}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn agent_config_out_of_range_is_a_422_naming_the_field_on_sqlite() {
    let s = TestServer::start().await;
    out_of_range_configs_are_refused_and_change_nothing(&s).await;
}

#[tokio::test]
async fn agent_config_out_of_range_is_a_422_naming_the_field_on_postgres() {
    let Some(db) = TestDatabase::create_or_skip().await.unwrap() else {
        return;
    };
    let mut s = TestServer::start_with(Some(db.url().to_string()), Vec::new()).await;
    out_of_range_configs_are_refused_and_change_nothing(&s).await;
    s.stop().await;
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_secret_an_agent_env_references_cannot_be_deleted_until_the_agent_lets_go() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let r = s
        .post(
            &format!("/api/companies/{c}/secrets"),
            json!({"name": "api-key", "value": "s3cret-value"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let secret = r.body["id"].as_str().unwrap().to_string();
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "uses-key", "adapterType": "process",
                   "adapterConfig": {"command": "true", "env": {"API_KEY":
                       {"type": "secret_ref", "secretId": secret, "version": "latest"}}}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let agent = r.body["id"].as_str().unwrap().to_string();

    let r = s.delete(&format!("/api/secrets/{secret}")).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["details"]["code"], "in_use");
    assert_eq!(r.body["details"]["agents"], json!(["uses-key"]));
    assert!(
        r.body["error"].as_str().unwrap().contains("uses-key"),
        "{}",
        r.text
    );
    assert_eq!(
        s.get(&format!("/api/companies/{c}/secrets"))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1,
        "the refused delete kept the secret"
    );

    // Once the agent's env holds a plain value, the secret can go.
    let r = s
        .patch(
            &format!("/api/agents/{agent}"),
            json!({"adapterConfig": {"command": "true", "env": {"API_KEY": "plain"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.delete(&format!("/api/secrets/{secret}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
}
