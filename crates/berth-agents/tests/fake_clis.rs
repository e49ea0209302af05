//! The fake CLIs in `fake-clis/` driven with the exact commands the adapters build, their
//! output parsed by the same adapters. The processes are started here, in the tests only: the
//! library itself never spawns anything.
#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_agents::{
    BuildContext, Event, Invocation, OutputParser, RemoteIdentity, RunSummary, SessionParams,
    Stream, adapter, parse_all,
};
use serde_json::{Value, json};

const ADAPTERS: &[(&str, &str)] = &[
    ("claude_local", "claude"),
    ("codex_local", "codex"),
    ("cursor", "agent"),
    ("gemini_local", "gemini"),
    ("opencode_local", "opencode"),
    ("pi_local", "pi"),
];

fn fake(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fake-clis")
        .join(script)
}

struct Env {
    _tmp: tempfile::TempDir,
    ws: PathBuf,
    assets: PathBuf,
    log: PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ws = tmp.path().join("ws");
    let assets = tmp.path().join("assets");
    std::fs::create_dir_all(&ws).expect("ws");
    let log = tmp.path().join("argv.log");
    Env {
        ws,
        assets,
        log,
        _tmp: tmp,
    }
}

fn config(adapter_type: &str, script: &str) -> Value {
    let mut c = json!({"command": fake(script).to_string_lossy()});
    if adapter_type == "gemini_local" {
        c["model"] = json!("gemini-2.5-flash");
    }
    c
}

fn context(
    e: &Env,
    adapter_type: &str,
    script: &str,
    prompt: &str,
    resume: Option<&str>,
) -> BuildContext {
    let cwd = e.ws.to_string_lossy().to_string();
    let mut ctx = BuildContext::new(config(adapter_type, script), prompt, &cwd);
    ctx.assets_dir_on_environment = Some(e.assets.to_string_lossy().to_string());
    ctx.resume = resume.map(|id| SessionParams {
        session_id: id.to_string(),
        cwd: cwd.clone(),
        remote_identity: RemoteIdentity::local(),
    });
    ctx
}

fn build(adapter_type: &str, ctx: &BuildContext) -> Invocation {
    let a = adapter(adapter_type).expect("adapter");
    a.build(ctx)
        .unwrap_or_else(|e| panic!("{adapter_type}: {e}"))
}

/// What the remote launcher does, minus the remoteness: create the directories the adapter
/// asked for, start the program with exactly the invocation's args, env and stdin.
fn command(inv: &Invocation, cwd: &Path, extra_env: &[(&str, &str)]) -> Command {
    for d in &inv.ensure_dirs {
        std::fs::create_dir_all(d).expect("ensure dir");
    }
    let mut cmd = Command::new(&inv.program);
    cmd.args(&inv.args)
        .current_dir(cwd)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .envs(&inv.env)
        .envs(extra_env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(inv: &Invocation, cwd: &Path, extra_env: &[(&str, &str)]) -> Output {
    let mut child = command(inv, cwd, extra_env).spawn().expect("spawn fake");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&inv.stdin).expect("stdin");
    }
    child.wait_with_output().expect("wait")
}

fn parse(
    adapter_type: &str,
    inv: &Invocation,
    out: &Output,
) -> (Vec<Event>, Box<dyn OutputParser>) {
    let mut p = adapter(adapter_type).expect("adapter").parser(inv);
    let events = parse_all(
        p.as_mut(),
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    );
    (events, p)
}

/// Runs a fresh `write` attempt and returns the session id the adapter parsed.
fn fresh_run(e: &Env, adapter_type: &str, script: &str) -> String {
    let ctx = context(e, adapter_type, script, "write hello.txt hi there", None);
    let inv = build(adapter_type, &ctx);
    let log = e.log.to_string_lossy().to_string();
    let out = run(&inv, &e.ws, &[("FAKE_CLI_LOG", &log)]);
    assert!(out.status.success(), "{adapter_type}: {out:?}");
    let (events, parser) = parse(adapter_type, &inv, &out);
    assert!(parser.is_terminal_result(), "{adapter_type}: {events:?}");
    assert!(!parser.unknown_session(), "{adapter_type}");
    let s = RunSummary::from_events(&events);
    assert_eq!(s.ok, Some(true), "{adapter_type}: {events:?}");
    assert!(
        events.iter().any(|e| matches!(e, Event::ToolUse { .. })),
        "{adapter_type}: no tool use in {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ToolResult { ok: true, .. })),
        "{adapter_type}"
    );
    let sid = parser.session_id().map(str::to_string).unwrap_or_default();
    assert!(!sid.is_empty(), "{adapter_type}: no session id");
    assert_eq!(
        s.session_id.as_deref(),
        Some(sid.as_str()),
        "{adapter_type}"
    );
    sid
}

#[test]
fn each_fake_cli_runs_fresh_writes_the_file_and_reports_its_session() {
    for (adapter_type, script) in ADAPTERS {
        let e = env();
        fresh_run(&e, adapter_type, script);
        let written = std::fs::read_to_string(e.ws.join("hello.txt")).unwrap_or_default();
        assert_eq!(written, "hi there", "{adapter_type}");
        let log = std::fs::read_to_string(&e.log).unwrap_or_default();
        assert!(
            log.starts_with(&format!("{script} ")),
            "{adapter_type}: {log}"
        );
    }
}

#[test]
fn each_fake_cli_resumes_its_session_and_logs_the_resume_args() {
    for (adapter_type, script) in ADAPTERS {
        let e = env();
        let sid = fresh_run(&e, adapter_type, script);
        let ctx = context(
            &e,
            adapter_type,
            script,
            "write second.txt again",
            Some(&sid),
        );
        let inv = build(adapter_type, &ctx);
        let log = e.log.to_string_lossy().to_string();
        let out = run(&inv, &e.ws, &[("FAKE_CLI_LOG", &log)]);
        assert!(out.status.success(), "{adapter_type}: {out:?}");
        let (events, parser) = parse(adapter_type, &inv, &out);
        assert_eq!(
            parser.session_id(),
            Some(sid.as_str()),
            "{adapter_type}: {events:?}"
        );
        assert_eq!(
            RunSummary::from_events(&events).ok,
            Some(true),
            "{adapter_type}"
        );
        let expected = match *adapter_type {
            "codex_local" => format!(" resume {sid} -"),
            "opencode_local" | "pi_local" => format!(" --session {sid}"),
            _ => format!(" --resume {sid}"),
        };
        let logged = std::fs::read_to_string(&e.log).unwrap_or_default();
        let lines: Vec<&str> = logged.lines().collect();
        assert_eq!(lines.len(), 2, "{adapter_type}: {logged}");
        assert!(
            lines[1].contains(&expected),
            "{adapter_type}: {:?} lacks {expected:?}",
            lines[1]
        );
        if *adapter_type != "pi_local" {
            assert!(
                !lines[0].contains(&sid),
                "{adapter_type}: fresh run named the session"
            );
        }
        assert_eq!(
            std::fs::read_to_string(e.ws.join("second.txt")).unwrap_or_default(),
            "again"
        );
    }
}

#[test]
fn each_fake_cli_reports_an_unknown_session_that_its_adapter_recognises() {
    for (adapter_type, script) in ADAPTERS {
        let e = env();
        let id = if *adapter_type == "pi_local" {
            e.assets
                .join("sessions/unknown-42.jsonl")
                .to_string_lossy()
                .to_string()
        } else {
            "unknown-42".to_string()
        };
        let ctx = context(&e, adapter_type, script, "write never.txt x", Some(&id));
        let inv = build(adapter_type, &ctx);
        let out = run(&inv, &e.ws, &[]);
        let (events, parser) = parse(adapter_type, &inv, &out);
        assert!(parser.unknown_session(), "{adapter_type}: {events:?}");
        assert!(!e.ws.join("never.txt").exists(), "{adapter_type}");
        // The engine's retry: same run, no resume, and it works.
        fresh_run(&e, adapter_type, script);
    }
}

#[test]
fn each_fake_cli_failure_ends_the_attempt_unsuccessfully() {
    for (adapter_type, script) in ADAPTERS {
        let e = env();
        let ctx = context(&e, adapter_type, script, "fail model quota exceeded", None);
        let inv = build(adapter_type, &ctx);
        let out = run(&inv, &e.ws, &[]);
        assert!(!out.status.success(), "{adapter_type}");
        let (events, parser) = parse(adapter_type, &inv, &out);
        let s = RunSummary::from_events(&events);
        assert_ne!(s.ok, Some(true), "{adapter_type}: {events:?}");
        assert!(
            s.errors.iter().any(|m| m.contains("model quota exceeded"))
                || s.summary
                    .as_deref()
                    .is_some_and(|m| m.contains("model quota exceeded")),
            "{adapter_type}: {s:?}"
        );
        assert!(!parser.unknown_session(), "{adapter_type}");
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn claude_skip_permissions_request_still_runs_as_root() {
    let e = env();
    let mut ctx = context(&e, "claude_local", "claude", "write root.txt ok", None);
    ctx.adapter_config["dangerouslySkipPermissions"] = json!(true);
    ctx.is_root = is_root();
    let inv = build("claude_local", &ctx);
    let out = run(&inv, &e.ws, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(e.ws.join("root.txt")).unwrap_or_default(),
        "ok"
    );
}

/// Kills the whole process group of `pid` (the fake and its `sleep`).
fn kill_group(signal: &str, pid: u32) {
    // Through `sh` so that the shell's builtin `kill` is used; no procps needed.
    let _ = Command::new("sh")
        .args(["-c", &format!("kill {signal} -{pid}")])
        .status();
}

fn spawn_lingering(
    e: &Env,
    extra: &[(&str, &str)],
) -> (std::process::Child, Box<dyn OutputParser>) {
    use std::os::unix::process::CommandExt;
    let ctx = context(e, "claude_local", "claude", "write linger.txt x", None);
    let inv = build("claude_local", &ctx);
    let mut child = command(&inv, &e.ws, extra)
        .process_group(0)
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&inv.stdin).expect("stdin");
    }
    let mut parser = adapter("claude_local").expect("adapter").parser(&inv);
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    while !parser.is_terminal_result() {
        match lines.next() {
            Some(Ok(line)) => {
                parser.parse_line(Stream::Stdout, &line);
            }
            _ => break,
        }
    }
    (child, parser)
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_lingering_fake_is_still_running_after_its_result_and_stops_on_term() {
    let e = env();
    let (mut child, parser) = spawn_lingering(&e, &[("FAKE_CLI_LINGER", "30")]);
    assert!(parser.is_terminal_result());
    assert!(
        !wait_exit(&mut child, Duration::from_millis(300)),
        "fake did not linger"
    );
    kill_group("-TERM", child.id());
    assert!(
        wait_exit(&mut child, Duration::from_secs(5)),
        "TERM did not stop the fake"
    );
}

#[test]
fn a_fake_ignoring_term_needs_kill() {
    let e = env();
    let (mut child, parser) = spawn_lingering(
        &e,
        &[("FAKE_CLI_LINGER", "30"), ("FAKE_CLI_IGNORE_TERM", "1")],
    );
    assert!(parser.is_terminal_result());
    kill_group("-TERM", child.id());
    let survived = !wait_exit(&mut child, Duration::from_millis(500));
    kill_group("-KILL", child.id());
    assert!(
        wait_exit(&mut child, Duration::from_secs(5)),
        "KILL did not stop the fake"
    );
    assert!(survived, "the fake did not ignore TERM");
}

#[test]
fn fakes_are_executable_and_say_they_are_fakes() {
    use std::os::unix::fs::PermissionsExt;
    for (_, script) in ADAPTERS {
        let path = fake(script);
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let header: String = text.lines().take(3).collect::<Vec<_>>().join("\n");
        assert!(
            header.starts_with("#!/bin/sh") && header.contains("FAKE"),
            "{script}"
        );
    }
}
