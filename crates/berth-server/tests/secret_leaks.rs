//! SPEC §12: no secret value appears in the database file, the logs, any API response or the
//! activity log — nor, while a real run probes, syncs and executes over sshd, in any process's
//! argv, in run events, or in files under BERTH_HOME, the runs root or the remote workspace root.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, sentinel_key, ssh_config};
use reqwest::Method;
use serde_json::json;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_sentinel_private_key_never_appears_in_db_logs_responses_or_activity() {
    let logs = common::LogCapture::install_json("trace");

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
    let log_bytes = logs.bytes();
    assert!(log_bytes.len() > 1000, "logs were captured");
    for sentinel in sentinels {
        assert!(!contains(&log_bytes, sentinel), "logs leaked {sentinel}");
    }
    let mut files = 0;
    for entry in std::fs::read_dir(&home).unwrap() {
        let path = entry.unwrap().path();
        // SQLite's journal comes and goes with each write of the still running server.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
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

/// Every distinct `/proc/*/cmdline` seen while `stop` is unset, sampled every 20 ms.
fn sample_argv(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<BTreeSet<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok(dir) = std::fs::read_dir("/proc") {
                for entry in dir.flatten() {
                    if let Ok(argv) = std::fs::read(entry.path().join("cmdline"))
                        && !argv.is_empty()
                    {
                        seen.insert(argv);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

/// Every regular file under `root` (symlinks not followed).
fn files_under(root: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(dir) = std::fs::read_dir(root) else {
        return;
    };
    for entry in dir.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files_under(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

#[tokio::test]
async fn secrets_never_reach_argv_events_or_files_during_probe_sync_and_run() {
    let logs = common::LogCapture::install_json("trace");
    let Some(sshd) = berth_testkit::sshd::Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let secret_value = format!("SENTINELENVSECRET{tag}");
    let file_name = format!("SENTINELFILENAME{tag}");
    let file_content = format!("SENTINELCONTENT{tag}");
    // The fixture's real client key: its second line is base64 found nowhere else.
    let key_line = sshd
        .client_private_key
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert!(key_line.len() > 40, "{key_line}");

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_argv(stop.clone());

    let eid = s.lab_environment(&c, "lab", &sshd).await;
    let probe = s
        .post(&format!("/api/environments/{eid}/probe"), json!({}))
        .await;
    assert_eq!(probe.status, 200, "{}", probe.text);
    assert_eq!(probe.body["ok"], true, "{}", probe.text);

    let secret = s
        .post(
            &format!("/api/companies/{c}/secrets"),
            json!({"name": "model-key", "value": secret_value}),
        )
        .await;
    assert_eq!(secret.status, 201, "{}", secret.text);
    let sid = secret.body["id"].as_str().unwrap();

    let parent = tempfile::tempdir().unwrap();
    let repo = parent.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join(&file_name), &file_content).unwrap();
    let out = parent.path().join("seen");
    std::fs::create_dir(&out).unwrap();
    let ws = s
        .post(
            &format!("/api/companies/{c}/execution-workspaces"),
            json!({"localPath": repo}),
        )
        .await;
    assert_eq!(ws.status, 201, "{}", ws.text);
    // The agent proves it received both values (written outside every scanned root) and
    // lives long enough for the sampler to see its argv.
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "leaky", "adapterType": "process", "defaultEnvironmentId": eid,
                "adapterConfig": {"command": "sh", "args": ["-c",
                    "printf %s \"$BERTH_API_TOKEN\" > \"$OUT/token\"; printf %s \"$MODEL_KEY\" > \"$OUT/key\"; \
                     for f in SENTINELFILENAME*; do echo changed >> \"$f\"; done; sleep 1; echo done"],
                    "env": {"OUT": out, "MODEL_KEY": {"type": "secret_ref", "secretId": sid, "version": "latest"}}}}),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    let run = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent.body["id"], "prompt": "go",
                "executionWorkspaceId": ws.body["id"]}),
        )
        .await;
    assert_eq!(run.status, 202, "{}", run.text);
    let run_id = run.body["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let finished = loop {
        let r = s.get(&format!("/api/runs/{run_id}")).await;
        if !matches!(r.body["status"].as_str(), Some("queued" | "running")) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(finished.body["status"], "succeeded", "{}", finished.text);
    let events = s.get(&format!("/api/runs/{run_id}/events")).await;
    let activity = s.get(&format!("/api/companies/{c}/activity")).await;
    stop.store(true, Ordering::SeqCst);
    let argvs = sampler.join().unwrap();

    // The agent did get them: the sweep below looks for values that really flowed.
    let run_token = std::fs::read_to_string(out.join("token")).unwrap();
    assert!(run_token.len() >= 20, "{run_token}");
    assert_eq!(
        std::fs::read_to_string(out.join("key")).unwrap(),
        secret_value
    );
    assert!(
        std::fs::read_to_string(repo.join(&file_name))
            .unwrap()
            .contains("changed"),
        "the workspace came back: {} {}",
        finished.text,
        events.text
    );

    let secrets = [key_line.as_str(), secret_value.as_str(), run_token.as_str()];
    let on_argv = [
        key_line.as_str(),
        secret_value.as_str(),
        run_token.as_str(),
        file_name.as_str(),
        file_content.as_str(),
    ];
    assert!(argvs.len() > 10, "the sampler saw processes");
    assert!(
        argvs.iter().any(|a| contains(a, "sleep")),
        "the sampler saw the agent's processes"
    );
    for argv in &argvs {
        for sentinel in on_argv {
            assert!(
                !contains(argv, sentinel),
                "a process argv carried {sentinel}: {}",
                String::from_utf8_lossy(argv)
            );
        }
    }
    for (what, text) in [
        ("events", &events.text),
        ("activity", &activity.text),
        ("run", &finished.text),
        ("probe", &probe.text),
    ] {
        for sentinel in secrets {
            assert!(!text.contains(sentinel), "{what} leaked {sentinel}: {text}");
        }
    }
    let log_bytes = logs.bytes();
    for sentinel in secrets {
        assert!(!contains(&log_bytes, sentinel), "logs leaked {sentinel}");
    }
    let mut files = Vec::new();
    for root in [s.home.path(), s.runs.path(), sshd.workspace.as_path()] {
        files_under(root, &mut files);
    }
    assert!(
        files.iter().any(|f| f.starts_with(&sshd.workspace)),
        "the remote workspace root was searched"
    );
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        for sentinel in secrets {
            assert!(
                !contains(&bytes, sentinel),
                "{} contains {sentinel}",
                file.display()
            );
        }
    }
}
