//! `berth run … --follow` streams the agent's output live and exits with the run's outcome;
//! `berth runs list|show|logs|cancel` read and steer runs. Real binary, real server.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on any problem"
)]

mod support;

use support::TestServer;

#[test]
fn run_follow_streams_output_and_exits_with_the_outcome() {
    let server = TestServer::start();
    let repo = tempfile::tempdir().unwrap();
    server
        .berth()
        .run([
            "agent",
            "create",
            "--name",
            "writer",
            "--adapter-type",
            "process",
            "--adapter-config",
            r#"{"command": "sh", "args": ["-c", "read p; echo \"agent says: $p\"; echo done > result.txt"]}"#,
        ])
        .ok();
    let run = server
        .berth()
        .run([
            "run",
            "--agent",
            "writer",
            "--workspace",
            repo.path().to_str().unwrap(),
            "--prompt",
            "hi there",
            "--follow",
        ])
        .ok();
    assert!(
        run.stdout.contains("agent says: hi there"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("[berth]"),
        "lifecycle steps on stderr: {}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join("result.txt")).unwrap(),
        "done\n",
        "the agent worked in the workspace"
    );

    server
        .berth()
        .run([
            "agent",
            "create",
            "--name",
            "breaker",
            "--adapter-type",
            "process",
            "--adapter-config",
            r#"{"command": "sh", "args": ["-c", "echo nope >&2; exit 4"]}"#,
        ])
        .ok();
    let failed = server
        .berth()
        .run(["run", "--agent", "breaker", "--prompt", "x", "--follow"])
        .code(9);
    assert!(failed.stderr.contains("nope"), "{}", failed.stderr);

    let runs = server.berth().run(["runs", "list", "--json"]).ok().json();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    // The table names the agent and the environment (with the rule that chose it) and the
    // duration.
    let table = server.berth().run(["runs", "list"]).ok().stdout;
    for expected in [
        "AGENT",
        "DURATION",
        "writer",
        "breaker",
        "Local (company_default)",
    ] {
        assert!(table.contains(expected), "{expected} missing:\n{table}");
    }
    let has_duration = |line: &str| {
        line.split_whitespace().any(|w| {
            w.strip_suffix('s')
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
    };
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("writer") || l.contains("breaker"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows.iter().all(|l| has_duration(l)), "{table}");
    let failed_id = runs.iter().find(|r| r["status"] == "failed").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = server
        .berth()
        .run(["runs", "show", &failed_id, "--json"])
        .ok()
        .json();
    assert_eq!(shown["errorCode"], "agent_failed");
    assert_eq!(shown["exitCode"], 4);
    let logs = server.berth().run(["runs", "logs", &failed_id]).ok();
    assert!(logs.stderr.contains("nope"), "{}", logs.stderr);
    server.berth().run(["runs", "cancel", &failed_id]).code(4);
    // The same workspace path maps to the same execution workspace.
    let listed = server
        .berth()
        .run(["workspace", "list", "--json"])
        .ok()
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

/// Output with many multi-byte characters (200 KB in one event, so the event stream arrives in
/// many network reads, cut anywhere) is printed by `--follow` exactly as the agent wrote it.
#[test]
fn run_follow_prints_multibyte_output_intact() {
    let server = TestServer::start();
    server
        .berth()
        .run([
            "agent",
            "create",
            "--name",
            "unicode",
            "--adapter-type",
            "process",
            "--adapter-config",
            r#"{"command": "python3", "args": ["-c", "import sys; sys.stdout.write('é日🚀' * 20000 + '\\n')"]}"#,
        ])
        .ok();
    let run = server
        .berth()
        .run(["run", "--agent", "unicode", "--prompt", "x", "--follow"])
        .ok();
    let expected = format!("{}\n", "é日🚀".repeat(20_000));
    assert!(
        run.stdout.contains(&expected),
        "the output came out garbled ({} replacement characters)",
        run.stdout.matches('\u{fffd}').count()
    );
}
