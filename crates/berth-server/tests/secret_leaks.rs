//! SPEC §12: no secret value appears in the database file, the logs, any API response or the
//! activity log.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{TestServer, sentinel_key, ssh_config};
use reqwest::Method;
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_sentinel_private_key_never_appears_in_db_logs_responses_or_activity() {
    let logs = Capture::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .json()
        .init();

    let mut s = TestServer::start().await;
    let c = s.default_company().await;
    let key = sentinel_key("KEYONE");
    let passphrase = "SENTINELPASSPHRASE123";
    let rotated = sentinel_key("KEYTWO");
    let unsaved = sentinel_key("UNSAVED");
    let mut responses = Vec::new();

    let mut config = ssh_config(Some(&key));
    config["privateKeyPassphrase"] = json!(passphrase);
    let r = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "Box", "driver": "ssh", "config": config}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    responses.push(r.text);
    for (m, path, body) in [
        (Method::GET, format!("/api/environments/{id}"), None),
        (
            Method::GET,
            format!("/api/companies/{c}/environments"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/environments/{id}"),
            Some(json!({"config": {"port": 2201}})),
        ),
        (
            Method::PATCH,
            format!("/api/environments/{id}"),
            Some(json!({"config": {"privateKey": rotated}})),
        ),
        (
            Method::POST,
            format!("/api/companies/{c}/environments/probe-config"),
            Some(json!({"driver": "ssh", "config": ssh_config(Some(&unsaved))})),
        ),
        (
            Method::POST,
            format!("/api/companies/{c}/secrets"),
            Some(json!({"name": "api", "value": "SENTINELSECRETVALUE"})),
        ),
        (Method::GET, format!("/api/companies/{c}/secrets"), None),
        (
            Method::GET,
            format!("/api/companies/{c}/activity?limit=1000"),
            None,
        ),
        (Method::GET, "/metrics".to_string(), None),
        (Method::GET, "/api/openapi.json".to_string(), None),
    ] {
        let r = s.call(m, &path, None, body).await;
        assert!(r.status.is_success(), "{path}: {}", r.text);
        responses.push(r.text);
    }
    let home = s.home.path().to_path_buf();
    s.stop().await;

    let sentinels = [
        "SENTINELKEYONE",
        "SENTINELKEYTWO",
        "SENTINELUNSAVED",
        passphrase,
        "SENTINELSECRETVALUE",
    ];
    for text in &responses {
        for sentinel in sentinels {
            assert!(
                !text.contains(sentinel),
                "API response leaked {sentinel}: {text}"
            );
        }
    }
    let log_bytes = logs.0.lock().unwrap().clone();
    assert!(log_bytes.len() > 1000, "logs were captured");
    for sentinel in sentinels {
        assert!(!contains(&log_bytes, sentinel), "logs leaked {sentinel}");
    }
    let mut files = 0;
    for entry in std::fs::read_dir(&home).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for sentinel in sentinels {
            assert!(
                !contains(&bytes, sentinel),
                "{} contains {sentinel}",
                path.display()
            );
        }
    }
    assert!(files >= 2, "the database and the master key were searched");
}

#[tokio::test]
async fn the_database_and_master_key_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start().await;
    s.default_company().await;
    for name in ["berth.db", "master.key"] {
        let mode = std::fs::metadata(s.home.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
    }
}
