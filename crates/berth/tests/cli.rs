//! The real `berth` binary against a real server started in-process (SQLite, temp home).

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on any problem"
)]

mod support;

use serde_json::Value;
use support::{Berth, TestServer, dead_server_url, key_lines, private_key_file};

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a JSON array, got {list}"))
        .iter()
        .filter_map(|e| e.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn ssh_create_args<'a>(name: &'a str, key: &'a str) -> Vec<&'a str> {
    vec![
        "env",
        "create",
        "--name",
        name,
        "--driver",
        "ssh",
        "--host",
        "127.0.0.1",
        "--port",
        "2222",
        "--username",
        "dev",
        "--remote-workspace-path",
        "/home/dev/berth",
        "--private-key-file",
        key,
    ]
}

#[test]
fn ssh_environment_lifecycle_create_list_show_update_delete() {
    let server = TestServer::start();
    let keys = tempfile::tempdir().unwrap();
    let key = private_key_file(keys.path(), "id_ed25519");
    let key_text = key.to_str().unwrap();
    let secret_lines = key_lines(&key);
    let assert_no_key = |text: &str| {
        for line in &secret_lines {
            assert!(
                !text.contains(line.as_str()),
                "private key material leaked:\n{text}"
            );
        }
    };

    // create (JSON)
    let mut args = ssh_create_args("build-box", key_text);
    args.push("--json");
    let run = server.berth().run(&args).ok();
    assert_no_key(&run.stdout);
    assert_no_key(&run.stderr);
    let created = run.json();
    assert_eq!(created["name"], "build-box");
    assert_eq!(created["driver"], "ssh");
    assert_eq!(created["config"]["host"], "127.0.0.1");
    assert_eq!(created["config"]["port"], 2222);
    assert!(
        created["config"]["privateKey"].is_null(),
        "the key is stored as a secret reference: {created}"
    );
    assert_eq!(
        created["config"]["privateKeySecretRef"]["type"], "secret_ref",
        "{created}"
    );
    let id = created["id"].as_str().unwrap().to_string();

    // list --json contains it
    let list = server.berth().run(["env", "list", "--json"]).ok().json();
    assert!(names(&list).contains(&"build-box".to_string()), "{list}");

    // list (human) shows a table with it
    let run = server.berth().run(["env", "list"]).ok();
    assert!(run.stdout.contains("NAME"), "{}", run.stdout);
    assert!(run.stdout.contains("build-box"), "{}", run.stdout);
    assert!(run.stdout.contains("dev@127.0.0.1:2222"), "{}", run.stdout);

    // show by id and by name
    let shown = server
        .berth()
        .run(["env", "show", &id, "--json"])
        .ok()
        .json();
    assert_eq!(shown["id"], id.as_str());
    let by_name = server
        .berth()
        .run(["env", "show", "build-box", "--json"])
        .ok()
        .json();
    assert_eq!(by_name["id"], id.as_str());
    let run = server.berth().run(["env", "show", "build-box"]).ok();
    assert!(run.stdout.contains("build-box") && run.stdout.contains("ssh"));
    assert_no_key(&run.stdout);

    // update: a config key (merged) and a top-level field
    let updated = server
        .berth()
        .run([
            "env",
            "update",
            &id,
            "--port",
            "2200",
            "--description",
            "the build box",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(updated["config"]["port"], 2200, "{updated}");
    assert_eq!(
        updated["config"]["host"], "127.0.0.1",
        "merged, not replaced"
    );
    assert_eq!(updated["description"], "the build box");
    let shown = server
        .berth()
        .run(["env", "show", &id, "--json"])
        .ok()
        .json();
    assert_eq!(shown["config"]["port"], 2200);

    // leases: none yet
    let leases = server
        .berth()
        .run(["env", "leases", &id, "--json"])
        .ok()
        .json();
    assert_eq!(leases.as_array().map(Vec::len), Some(0));

    // delete, then it is gone (exit 3)
    server.berth().run(["env", "delete", &id]).ok();
    server.berth().run(["env", "show", &id]).code(3);
    let list = server.berth().run(["env", "list", "--json"]).ok().json();
    assert!(!names(&list).contains(&"build-box".to_string()), "{list}");
}

#[test]
fn config_file_and_stdin_config_are_accepted() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.json");
    std::fs::write(
        &file,
        r#"{"host":"example.internal","username":"ci","remoteWorkspacePath":"/srv/berth"}"#,
    )
    .unwrap();
    let created = server
        .berth()
        .run([
            "env",
            "create",
            "--name",
            "from-file",
            "--driver",
            "ssh",
            "--config-file",
            file.to_str().unwrap(),
            "--port",
            "2022",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(created["config"]["host"], "example.internal");
    assert_eq!(created["config"]["port"], 2022, "flags layer over the file");

    let created = server
        .berth()
        .stdin(r#"{"host":"stdin.internal","username":"ci","remoteWorkspacePath":"/srv"}"#)
        .run([
            "env",
            "create",
            "--name",
            "from-stdin",
            "--driver",
            "ssh",
            "--config-file",
            "-",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(created["config"]["host"], "stdin.internal");
}

#[test]
fn exit_codes_for_not_found_conflict_and_invalid_input() {
    let server = TestServer::start();
    let keys = tempfile::tempdir().unwrap();
    let key = private_key_file(keys.path(), "id_ed25519");
    let key_text = key.to_str().unwrap();

    // 3: not found, by id and by name
    let run = server
        .berth()
        .run(["env", "show", "0190a0a0-0000-7000-8000-000000000000"])
        .code(3);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("hint: "), "{}", run.stderr);
    server.berth().run(["env", "show", "no-such-env"]).code(3);
    server
        .berth()
        .run(["env", "delete", "0190a0a0-0000-7000-8000-000000000000"])
        .code(3);

    // 4: duplicate name
    server.berth().run(ssh_create_args("twin", key_text)).ok();
    let run = server
        .berth()
        .run(ssh_create_args("twin", key_text))
        .code(4);
    assert!(
        run.stderr.contains("failed to create environment"),
        "{}",
        run.stderr
    );

    // 5: invalid config (relative remote path, missing host)
    let run = server
        .berth()
        .run([
            "env",
            "create",
            "--name",
            "bad",
            "--driver",
            "ssh",
            "--username",
            "dev",
            "--remote-workspace-path",
            "relative/path",
        ])
        .code(5);
    assert!(run.stderr.contains("error: "), "{}", run.stderr);
    // 5: unknown config key
    server
        .berth()
        .run([
            "env",
            "create",
            "--name",
            "bad2",
            "--driver",
            "local",
            "--config",
            r#"{"nonsense": true}"#,
        ])
        .code(5);

    // The managed local environment cannot be deleted: 4
    let list = server
        .berth()
        .run(["env", "list", "--driver", "local", "--json"])
        .ok()
        .json();
    let local_id = list[0]["id"].as_str().expect("a managed local environment");
    server.berth().run(["env", "delete", local_id]).code(4);
}

#[test]
fn every_list_prints_parseable_json() {
    let server = TestServer::start();
    for args in [
        vec!["env", "list", "--json"],
        vec!["agent", "list", "--json"],
        vec!["project", "list", "--json"],
        vec!["issue", "list", "--json"],
        vec!["workspace", "list", "--json"],
        vec!["company", "list", "--json"],
        vec!["token", "list", "--json"],
    ] {
        let value = server.berth().run(&args).ok().json();
        assert!(value.is_array(), "{args:?}: {value}");
    }
    let settings = server
        .berth()
        .run(["settings", "experimental", "--json"])
        .ok()
        .json();
    assert!(settings.get("enableEnvironments").is_some(), "{settings}");
    let settings = server
        .berth()
        .run([
            "settings",
            "experimental",
            "--enable-environments",
            "true",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(settings["enableEnvironments"], true);
}

#[test]
fn token_create_then_list() {
    let server = TestServer::start();
    let created = server
        .berth()
        .run([
            "token",
            "create",
            "--name",
            "ci",
            "--instance-admin",
            "--grant",
            "environments:manage",
            "--json",
        ])
        .ok()
        .json();
    let plaintext = created["token"]
        .as_str()
        .expect("the plaintext token")
        .to_string();
    assert!(!plaintext.is_empty());
    let id = created["id"].as_str().unwrap().to_string();

    // With a token configured the server requires one (SPEC §11): without it, exit 6.
    server.berth().run(["token", "list"]).code(6);

    let run = server
        .berth()
        .env("BERTH_TOKEN", &plaintext)
        .run(["token", "list", "--json"])
        .ok();
    assert!(
        !run.stdout.contains(&plaintext),
        "a token is shown only once"
    );
    let list = run.json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str() && t["name"] == "ci"),
        "{list}"
    );

    // A token on argv is visible in `ps`: refused, with the ways that are not.
    let refused = server
        .berth()
        .run(["--token", &plaintext, "token", "list"])
        .code(2);
    assert!(
        refused.stderr.contains("--token-file"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(&plaintext), "{}", refused.stderr);

    // A token file others can read is refused like ssh refuses such a key.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{plaintext}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = server
        .berth()
        .run(["--token-file", file.to_str().unwrap(), "token", "list"])
        .code(1);
    assert!(loose.stderr.contains("chmod 600"), "{}", loose.stderr);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let human = server
        .berth()
        .run(["--token-file", file.to_str().unwrap(), "token", "list"])
        .ok();
    assert!(human.stdout.contains("ci"), "{}", human.stdout);

    server
        .berth()
        .env("BERTH_TOKEN_FILE", &file)
        .run(["token", "revoke", &id])
        .ok();
}

#[test]
fn agent_project_issue_workspace_basics() {
    let server = TestServer::start();
    let agent = server
        .berth()
        .run([
            "agent",
            "create",
            "--name",
            "coder",
            "--adapter-type",
            "process",
            "--adapter-config",
            r#"{"command":"true"}"#,
            "--json",
        ])
        .ok()
        .json();
    let agent_id = agent["id"].as_str().unwrap().to_string();
    server.berth().run(["agent", "show", &agent_id]).ok();

    let project = server
        .berth()
        .run([
            "project",
            "create",
            "--name",
            "web",
            "--environment",
            "default",
            "--json",
        ])
        .ok()
        .json();
    assert!(
        project["executionWorkspacePolicy"]["environmentId"].is_null(),
        "{project}"
    );
    let project_id = project["id"].as_str().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let ws = server
        .berth()
        .run([
            "workspace",
            "create",
            "--path",
            dir.path().to_str().unwrap(),
            "--project",
            &project_id,
            "--json",
        ])
        .ok()
        .json();
    let ws_id = ws["id"].as_str().unwrap().to_string();

    let issue = server
        .berth()
        .run([
            "issue",
            "create",
            "--title",
            "fix the build",
            "--project",
            &project_id,
            "--assignee",
            &agent_id,
            "--workspace",
            &ws_id,
            "--json",
        ])
        .ok()
        .json();
    let issue_id = issue["id"].as_str().unwrap().to_string();
    let updated = server
        .berth()
        .run(["issue", "update", &issue_id, "--title", "fix it", "--json"])
        .ok()
        .json();
    assert_eq!(updated["title"], "fix it");

    server.berth().run(["issue", "delete", &issue_id]).ok();
    server.berth().run(["workspace", "delete", &ws_id]).ok();
    server.berth().run(["project", "delete", &project_id]).ok();
    server.berth().run(["agent", "delete", &agent_id]).ok();
    server.berth().run(["agent", "show", &agent_id]).code(3);
}

// ---- tests that need no server ------------------------------------------------------------

#[test]
fn completions_bash_prints_a_script() {
    let home = tempfile::tempdir().unwrap();
    let run = Berth::new(&dead_server_url(), home.path())
        .run(["completions", "bash"])
        .ok();
    assert!(run.stdout.contains("_berth()"), "{}", run.stdout);
    assert!(run.stdout.contains("complete"), "{}", run.stdout);
    assert!(run.stdout.contains("trust"), "subcommands are completed");
}

#[test]
fn help_documents_the_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let run = Berth::new(&dead_server_url(), home.path())
        .run(["--help"])
        .ok();
    for line in [
        "Exit codes:",
        "3  not found",
        "7  server unreachable",
        "8  probe",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let berth = || Berth::new(&dead_server_url(), home.path());
    berth().run(["env", "create", "--driver", "ssh"]).code(2);
    berth().run(["env", "frobnicate"]).code(2);
    // Bad JSON is found before any request is made.
    let run = berth()
        .run([
            "env", "create", "--name", "x", "--driver", "ssh", "--config", "{nope",
        ])
        .code(2);
    assert!(
        run.stderr.contains("--config is not valid JSON"),
        "{}",
        run.stderr
    );
    // SSH flags on another driver.
    berth()
        .run([
            "env", "create", "--name", "x", "--driver", "local", "--host", "h",
        ])
        .code(2);
    // An unreadable key file names the file, not its content.
    let run = berth()
        .run([
            "env",
            "create",
            "--name",
            "x",
            "--driver",
            "ssh",
            "--private-key-file",
            "/nonexistent/key",
        ])
        .code(1);
    assert!(run.stderr.contains("/nonexistent/key"), "{}", run.stderr);
}

#[test]
fn an_unreachable_server_exits_7_with_a_hint() {
    let home = tempfile::tempdir().unwrap();
    let run = Berth::new(&dead_server_url(), home.path())
        .run(["env", "list"])
        .code(7);
    assert!(run.stderr.contains("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("berth serve"), "{}", run.stderr);
}

#[test]
fn doctor_fails_with_8_when_the_server_is_down() {
    let home = tempfile::tempdir().unwrap();
    let run = Berth::new(&dead_server_url(), home.path())
        .run(["doctor", "--json"])
        .code(8);
    let report = run.json();
    assert_eq!(report["ok"], false);
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "server" && c["level"] == "error"),
        "{report}"
    );
}

#[test]
fn unknown_config_keys_are_warned_about_on_stderr() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("berth.toml"), "srever = \"http://x\"\n").unwrap();
    let run = Berth::new(&dead_server_url(), home.path())
        .run(["env", "list"])
        .code(7);
    assert!(
        run.stderr.contains("warning: unknown key `srever`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_wrongly_typed_config_key_is_an_error_naming_it() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("berth.toml"), "workspaceRoots = \"/a\"\n").unwrap();
    let run = Berth::new(&dead_server_url(), home.path())
        .run(["env", "list"])
        .code(1);
    assert!(run.stderr.contains("`workspaceRoots`"), "{}", run.stderr);
}

#[test]
fn trust_refuses_without_confirmation_when_not_interactive() {
    // The probe needs a server; without one the failure is "unreachable", never a silent trust.
    let home = tempfile::tempdir().unwrap();
    Berth::new(&dead_server_url(), home.path())
        .run(["env", "trust", "some-env"])
        .code(7);
}

#[test]
fn secret_values_go_in_by_file_and_never_come_out() {
    let server = TestServer::start();
    let value = "s3cr3t-value-that-must-not-leak";
    let created = server
        .berth()
        .stdin(&format!("{value}\n"))
        .run([
            "secret",
            "create",
            "--name",
            "api-key",
            "--value-file",
            "-",
            "--json",
        ])
        .ok();
    assert!(!created.stdout.contains(value));
    assert_eq!(created.json()["name"], "api-key");
    let run = server.berth().run(["secret", "list", "--json"]).ok();
    assert!(!run.stdout.contains(value));
    assert!(names(&run.json()).contains(&"api-key".to_string()));

    let activity = server.berth().run(["activity", "--json"]).ok();
    assert!(!activity.stdout.contains(value));
    assert!(activity.json().is_array());
}

#[test]
fn lists_follow_cursors_unless_a_page_is_asked_for() {
    let server = TestServer::start();
    for name in ["a", "b"] {
        server
            .berth()
            .run([
                "env",
                "create",
                "--name",
                name,
                "--driver",
                "ssh",
                "--config",
                r#"{"host":"127.0.0.1","username":"u","remoteWorkspacePath":"/w"}"#,
            ])
            .ok();
    }
    let all = server.berth().run(["env", "list", "--json"]).ok().json();
    assert_eq!(all.as_array().map(Vec::len), Some(3), "{all}");

    let first = server
        .berth()
        .run(["env", "list", "--limit", "1", "--json"])
        .ok();
    assert_eq!(first.json().as_array().map(Vec::len), Some(1));
    let cursor = first
        .stderr
        .split("--cursor ")
        .nth(1)
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no cursor on stderr: {}", first.stderr));
    let next = server
        .berth()
        .run(["env", "list", "--limit", "1", "--cursor", &cursor, "--json"])
        .ok()
        .json();
    assert_eq!(next.as_array().map(Vec::len), Some(1));
    assert_ne!(next[0]["id"], first.json()[0]["id"]);
}

#[test]
fn rotating_the_private_key_replaces_its_secret() {
    let server = TestServer::start();
    let keys = tempfile::tempdir().unwrap();
    let old_key = private_key_file(keys.path(), "old");
    let new_key = private_key_file(keys.path(), "new");
    let created = server
        .berth()
        .run({
            let mut args = ssh_create_args("rot", old_key.to_str().unwrap());
            args.push("--json");
            args
        })
        .ok()
        .json();
    let old_ref = created["config"]["privateKeySecretRef"]["secretId"].clone();
    let run = server
        .berth()
        .run([
            "env",
            "update",
            "rot",
            "--private-key-file",
            new_key.to_str().unwrap(),
            "--json",
        ])
        .ok();
    for line in key_lines(&new_key) {
        assert!(!run.stdout.contains(&line), "private key material leaked");
    }
    let updated = run.json();
    let new_ref = updated["config"]["privateKeySecretRef"]["secretId"].clone();
    assert!(new_ref.is_string(), "{updated}");
    assert_ne!(old_ref, new_ref, "a new key is a new secret");
    let secrets = server.berth().run(["secret", "list", "--json"]).ok().json();
    let ids: Vec<&Value> = secrets
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();
    assert!(ids.contains(&&new_ref), "{secrets}");
    assert!(
        !ids.contains(&&old_ref),
        "the old key's secret is deleted: {secrets}"
    );
}

#[test]
fn company_selects_the_tenant_by_name_or_id() {
    let server = TestServer::start();
    let acme = server
        .berth()
        .run(["company", "create", "acme", "--json"])
        .ok()
        .json();
    let acme_id = acme["id"].as_str().unwrap().to_string();
    server
        .berth()
        .run([
            "--company",
            "acme",
            "env",
            "create",
            "--name",
            "only-acme",
            "--driver",
            "ssh",
            "--config",
            r#"{"host":"127.0.0.1","username":"u","remoteWorkspacePath":"/w"}"#,
        ])
        .ok();
    let in_acme = server
        .berth()
        .run(["env", "list", "--json", "--company", &acme_id])
        .ok()
        .json();
    assert!(
        names(&in_acme).contains(&"only-acme".to_string()),
        "{in_acme}"
    );
    let in_default = server.berth().run(["env", "list", "--json"]).ok().json();
    assert!(
        !names(&in_default).contains(&"only-acme".to_string()),
        "{in_default}"
    );
    let run = server
        .berth()
        .env("BERTH_COMPANY", "no-such-company")
        .run(["env", "list"])
        .code(3);
    assert!(
        run.stderr.contains("acme"),
        "the hint lists the companies: {}",
        run.stderr
    );
}

#[test]
fn doctor_passes_against_a_healthy_server() {
    let server = TestServer::start();
    let run = server.berth().run(["doctor"]).ok();
    assert!(run.stdout.contains("✓ server"), "{}", run.stdout);
    assert!(run.stdout.contains("is ok"), "{}", run.stdout);
}
