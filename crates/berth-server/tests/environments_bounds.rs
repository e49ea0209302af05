//! Every number an environment carries is bounded on create and on patch: capacity, the SSH
//! port and session cap, however large or oddly typed the value. Each is a 422 naming the field
//! and a refused patch changes nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

mod common;

use common::{Reply, TestServer, ssh_config};
use serde_json::{Value, json};

/// The field paths a 422 names: `details[].path` or the config issues' paths.
fn named_paths(r: &Reply) -> Vec<String> {
    let details = &r.body["details"];
    let items = details
        .as_array()
        .or_else(|| details["issues"].as_array())
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|i| i["field"].as_str().map(str::to_string))
        .collect()
}

fn huge() -> Value {
    serde_json::from_str("18446744073709551615").unwrap()
}

#[tokio::test]
async fn out_of_range_environment_numbers_are_a_422_naming_the_field() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let list = format!("/api/companies/{c}/environments");
    let count = |r: &Reply| r.body.as_array().map(Vec::len);
    let before_all = count(&s.get(&list).await);
    let created = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "box", "driver": "ssh", "config": ssh_config(None), "capacity": 2}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_string();

    let mut cases: Vec<(Value, &str)> = Vec::new();
    for bad in [json!(0), json!(10_001), json!(-1)] {
        cases.push((json!({"capacity": bad}), "capacity"));
    }
    for bad in [
        json!(0),
        json!(65_536),
        huge(),
        json!(-0.0),
        json!(22.5),
        json!(1e300),
        json!("x"),
    ] {
        cases.push((json!({"config": {"port": bad}}), "config.port"));
    }
    for bad in [json!(0), json!(1025), huge(), json!(-0.0)] {
        cases.push((
            json!({"config": {"maxSessions": bad}}),
            "config.maxSessions",
        ));
    }
    for (patch, field) in cases {
        let before = s.get(&format!("/api/environments/{id}")).await.body;
        let r = s
            .patch(&format!("/api/environments/{id}"), patch.clone())
            .await;
        assert_eq!(r.status, 422, "{patch}: {}", r.text);
        assert_eq!(named_paths(&r), [field], "{patch}: {}", r.text);
        assert_eq!(
            s.get(&format!("/api/environments/{id}")).await.body,
            before,
            "{patch}: a refused patch changed the environment"
        );

        let mut body = json!({"name": "new", "driver": "ssh", "config": ssh_config(None)});
        if let Some(cap) = patch.get("capacity") {
            body["capacity"] = cap.clone();
        }
        if let Some(Value::Object(config)) = patch.get("config") {
            for (k, v) in config {
                body["config"][k] = v.clone();
            }
        }
        let r = s
            .post(&format!("/api/companies/{c}/environments"), body)
            .await;
        assert_eq!(r.status, 422, "create with {patch}: {}", r.text);
        assert_eq!(named_paths(&r), [field], "create with {patch}: {}", r.text);
    }
    let all = s.get(&list).await;
    assert_eq!(
        count(&all),
        before_all.map(|n| n + 1),
        "a refused create stored something: {}",
        all.text
    );

    // The bounds themselves are accepted.
    let r = s
        .patch(
            &format!("/api/environments/{id}"),
            json!({"capacity": 10_000, "config": {"port": 65_535, "maxSessions": 1024}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
