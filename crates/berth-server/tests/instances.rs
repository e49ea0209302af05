//! Several instances on one PostgreSQL database: when one stops executing a run (it died, or
//! detached at shutdown), another adopts the run once the reaper expired its lease, fences
//! the old holder out, re-attaches to the agent and finishes the run byte-exact.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use berth_server::LaunchOptions;
use berth_testkit::sshd::Sshd;
use common::TestServer;
use serde_json::{Value, json};

const MASTER_KEY: &str = "5d1f0c7e9a3b4c2d8e6f7a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d";

async fn instance(url: &str) -> TestServer {
    let url = url.to_string();
    TestServer::start_full(
        move |c| {
            c.database_url = url;
            c.master_key_hex = Some(MASTER_KEY.into());
            c.lease_ttl_secs = Some(3);
        },
        LaunchOptions {
            reaper_interval: Some(Duration::from_millis(500)),
            run_worker: true,
            shutdown_grace: Duration::from_secs(30),
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_adopts_a_run_whose_instance_stopped_and_finishes_it() {
    let Some(db) = berth_testkit::pg::TestDatabase::create_or_skip()
        .await
        .unwrap()
    else {
        return;
    };
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let mut a = instance(db.url()).await;
    let c = a.default_company().await;
    let eid = a.lab_environment(&c, "lab", &sshd).await;
    let progress = tempfile::tempdir().unwrap();
    let marker = progress.path().join("n");
    let lines = 30;
    let agent = a
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "steady", "adapterType": "process", "defaultEnvironmentId": eid,
                "adapterConfig": {"command": "sh", "args": ["-c",
                    format!("for i in $(seq 1 {lines}); do echo \"line $i\"; echo $i > {}; sleep 0.4; done", marker.display())]}}),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    let run = a
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent.body["id"], "prompt": "p"}),
        )
        .await;
    let id = run.body["id"].as_str().unwrap().to_string();
    let seen = || {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen() < 2 {
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_claimer = a.get(&format!("/api/runs/{id}")).await.body["claimedBy"].clone();

    // The second instance starts; the first one goes away with the run still running.
    let b = instance(db.url()).await;
    a.stop().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = loop {
        let r = b.get(&format!("/api/runs/{id}")).await;
        if !matches!(r.body["status"].as_str(), Some("queued" | "running")) {
            break r.body;
        }
        assert!(
            Instant::now() < deadline,
            "the run was never finished: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_ne!(done["claimedBy"], first_claimer, "{done}");
    assert!(seen() == lines, "the agent ran to its end");
    let events = b.get(&format!("/api/runs/{id}/events")).await;
    let parsed: Vec<Value> = events
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .collect();
    let out: String = parsed
        .iter()
        .filter(|e| e["stream"] == "stdout")
        .filter_map(|e| e["payload"]["text"].as_str())
        .collect();
    let expected: String = (1..=lines).map(|i| format!("line {i}\n")).collect();
    assert_eq!(out, expected, "every line exactly once");
    let steps: Vec<&str> = parsed
        .iter()
        .filter_map(|e| e["payload"]["step"].as_str())
        .collect();
    assert!(steps.contains(&"detached"), "{steps:?}");
    assert!(steps.contains(&"reattaching"), "{steps:?}");
    // The adopted lease was re-fenced and released normally.
    let lease = b
        .get(&format!(
            "/api/environment-leases/{}",
            done["leaseId"].as_str().unwrap()
        ))
        .await;
    assert_ne!(lease.body["status"], "active", "{}", lease.text);
    assert!(lease.body["fence"].as_i64().unwrap() > 1, "{}", lease.text);
}
