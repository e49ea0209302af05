//! `berth db copy`: every row from one database into an empty one, without a server.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on any problem"
)]

mod support;

use berth_store::Store;
use berth_store::sqlite::SqliteStore;
use support::{Berth, dead_server_url};

fn count(report: &serde_json::Value, table: &str) -> u64 {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .and_then(|t| t["rows"].as_u64())
        .unwrap()
}

async fn seed(url: &str) {
    let store = SqliteStore::open(url).await.unwrap();
    store.ensure_default_company().await.unwrap();
    store.create_company("acme").await.unwrap();
}

#[test]
fn sqlite_to_sqlite_copies_every_row_and_refuses_a_non_empty_target() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", dir.path().join("from.db").display());
    let to = format!("sqlite://{}", dir.path().join("to.db").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(seed(&from));

    let berth = || Berth::new(&dead_server_url(), dir.path());
    let report = berth()
        .run(["db", "copy", "--from", &from, "--to", &to, "--json"])
        .ok()
        .json();
    // Two companies, each with its managed local environment.
    assert_eq!(count(&report, "companies"), 2, "{report}");
    assert_eq!(count(&report, "environments"), 2, "{report}");

    let copied = runtime.block_on(async {
        let store = SqliteStore::open(&to).await.unwrap();
        store.export_all().await.unwrap()
    });
    let mut names: Vec<String> = copied.companies.iter().map(|c| c.name.clone()).collect();
    names.sort();
    assert_eq!(names, vec!["acme".to_string(), "default".to_string()]);

    // The human form prints a table of counts.
    let target2 = format!("sqlite://{}", dir.path().join("to2.db").display());
    let run = berth()
        .run(["db", "copy", "--from", &from, "--to", &target2])
        .ok();
    assert!(run.stdout.contains("companies"), "{}", run.stdout);

    // A second copy into the same target: conflict (4), nothing half-written.
    let run = berth()
        .run(["db", "copy", "--from", &from, "--to", &to])
        .code(4);
    assert!(run.stderr.contains("error: "), "{}", run.stderr);
}

#[test]
fn a_missing_source_is_not_found_and_a_bad_url_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let berth = || Berth::new(&dead_server_url(), dir.path());
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let to = format!("sqlite://{}", dir.path().join("to.db").display());
    berth()
        .run(["db", "copy", "--from", &missing, "--to", &to])
        .code(3);
    assert!(
        !dir.path().join("nope.db").exists(),
        "the source is never created"
    );
    berth()
        .run(["db", "copy", "--from", "mysql://x/y", "--to", &to])
        .code(2);
}

#[test]
fn sqlite_to_postgres() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = runtime
        .block_on(berth_testkit::pg::TestDatabase::create_or_skip())
        .unwrap()
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", dir.path().join("from.db").display());
    runtime.block_on(seed(&from));
    let report = Berth::new(&dead_server_url(), dir.path())
        .run(["db", "copy", "--from", &from, "--to", db.url(), "--json"])
        .ok()
        .json();
    assert_eq!(count(&report, "companies"), 2, "{report}");
    // A password in the URL is never echoed.
    let password = db
        .url()
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password.to_string());
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        assert!(!report.to_string().contains(&password), "{report}");
    }
    runtime.block_on(db.cleanup()).unwrap();
}
