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

/// Two instances share one database: a cancel asked of the instance that does not execute the
/// run reaches the one that does, which stops the whole process group.
#[tokio::test]
async fn a_cancel_reaches_the_instance_executing_the_run() {
    let Some(db) = TestDatabase::create_or_skip().await.unwrap() else {
        return;
    };
    let mut a = TestServer::start_with(Some(db.url().to_string()), Vec::new()).await;
    let c = a.default_company().await;
    let marker = format!("berth-xcancel-{}", uuid::Uuid::new_v4().simple());
    let agent = a
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "sleeper", "adapterType": "process", "adapterConfig": {
                "command": "sh", "args": ["-c", format!("sleep 120 & sleep 120 # {marker}\n")],
                "graceSec": 1}}),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    let run = a
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent.body["id"], "prompt": "sleep"}),
        )
        .await;
    let id = run.body["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !alive(&marker) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The second instance starts after the run was claimed, so it cannot be the executor.
    let mut b = TestServer::start_with(Some(db.url().to_string()), Vec::new()).await;
    let r = b.post(&format!("/api/runs/{id}/cancel"), json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let done = loop {
        let r = b.get(&format!("/api/runs/{id}")).await;
        if r.body["status"] != "running" {
            break r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not cancelled: {}",
            r.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(!alive(&marker), "a process of the cancelled run survived");
    let lease = a
        .get(&format!(
            "/api/environment-leases/{}",
            done["leaseId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(lease.body["status"], "released", "{}", lease.text);
    assert_eq!(lease.body["failureReason"], "cancelled", "{}", lease.text);
    b.stop().await;
    a.stop().await;
}

/// Whether a live (not zombie) process has `marker` in its command line.
fn alive(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
        })
}
