//! The same API on PostgreSQL: a fresh database per test, dropped afterwards.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use berth_testkit::pg::TestDatabase;
use common::{TestServer, ssh_config};
use serde_json::{Value, json};

#[tokio::test]
async fn environment_lifecycle_and_delete_semantics_on_postgres() {
    let Some(db) = TestDatabase::create_or_skip().await.unwrap() else {
        return;
    };
    let mut s = TestServer::start_with(Some(db.url().to_string()), Vec::new()).await;
    assert_eq!(s.get("/api/health").await.body["database"], "postgres");
    let c = s.default_company().await;
    let r = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "Box", "driver": "ssh", "config": ssh_config(Some("pg-key"))}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "Box", "driver": "ssh", "config": ssh_config(None)}),
        )
        .await;
    assert_eq!(r.status, 409, "duplicate name: {}", r.text);
    let r = s
        .patch(
            &format!("/api/environments/{id}"),
            json!({"config": {"port": 2022}}),
        )
        .await;
    assert_eq!(r.body["config"]["port"], 2022);
    assert!(r.body["config"]["privateKeySecretRef"]["secretId"].is_string());
    let p = s
        .post(
            &format!("/api/companies/{c}/projects"),
            json!({"name": "p", "executionWorkspacePolicy": {"environmentId": id}}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.text);
    let r = s.delete(&format!("/api/environments/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let p = s
        .get(&format!("/api/projects/{}", p.body["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        p.body["executionWorkspacePolicy"]["environmentId"],
        Value::Null
    );
    assert_eq!(
        s.get(&format!("/api/companies/{c}/secrets")).await.body,
        json!([])
    );
    s.stop().await;
    db.cleanup().await.unwrap();
}
