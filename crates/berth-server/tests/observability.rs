//! Logs carry the ids of what they are about: a handler's log lines sit in the request's span,
//! a run's in the run's span (run, agent, company, then environment and lease once known).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::{LogCapture, TestServer};
use serde_json::{Value, json};

/// The names and fields of the spans a JSON record was written in.
fn spans(record: &Value) -> Vec<&Value> {
    record["spans"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn log_lines_carry_their_request_and_run_ids() {
    // sqlx logs each statement at debug level: inside a handler it is in the request's span.
    let logs = LogCapture::install_json("info,sqlx::query=debug");
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "echo", "adapterType": "process",
                "adapterConfig": {"command": "sh", "args": ["-c", "echo hi"]}}),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    let run = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent.body["id"], "prompt": "p"}),
        )
        .await;
    let id = run.body["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let r = s.get(&format!("/api/runs/{id}")).await;
        if !matches!(r.body["status"].as_str(), Some("queued" | "running")) {
            break r.body;
        }
        assert!(Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    let records = logs.records();

    // A statement of the agent-creating handler runs inside its request span.
    let in_request = records.iter().any(|r| {
        r["target"] == "sqlx::query"
            && spans(r).iter().any(|s| {
                s["name"] == "request"
                    && s["route"] == "/api/companies/{company_id}/agents"
                    && s["method"] == "POST"
            })
    });
    assert!(
        in_request,
        "no sqlx record inside the POST agents request span"
    );

    // The run's lifecycle lines carry its ids; those after the lease its environment and lease.
    let run_span = |r: &Value| -> Option<Value> {
        spans(r)
            .into_iter()
            .find(|s| s["name"] == "run" && s["run_id"] == id.as_str())
            .cloned()
    };
    let started = records
        .iter()
        .find(|r| r["fields"]["message"] == "Run started.")
        .unwrap_or_else(|| panic!("no 'Run started.' record"));
    let span = run_span(started).unwrap_or_else(|| panic!("not in the run's span: {started}"));
    assert_eq!(span["agent_id"], agent.body["id"]);
    assert_eq!(span["company_id"], c.as_str());
    let released = records
        .iter()
        .filter(|r| run_span(r).is_some())
        .find(|r| r["fields"]["step"] == "lease_released")
        .unwrap_or_else(|| panic!("no lease_released record in the run's span"));
    let span = run_span(released).unwrap();
    assert_eq!(span["environment_id"], done["environmentId"], "{span}");
    assert_eq!(span["lease_id"], done["leaseId"], "{span}");
}
