//! Adapters against recorded transcripts of each CLI's documented output, and command building
//! for fresh and resumed sessions (exact argv).
//!
//! Each `tests/transcripts/<adapter>/<case>.jsonl` is the CLI's stdout, `<case>.stderr` (if any)
//! its stderr, and `<case>.events.json` the normalized events the adapter must produce. Set
//! `BERTH_BLESS=1` to rewrite the `.events.json` files after an intended change, then review
//! the diff.
#![expect(clippy::panic, reason = "test helpers fail loudly")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_agents::{
    Adapter, AdapterError, BuildContext, Event, Invocation, RemoteIdentity, Role, RunSummary,
    SessionParams, adapter, parse_all,
};
use serde_json::{Value, json};

const CWD: &str = "/srv/berth/.berth/ws/scope-1";
const PI_SESSION: &str =
    "/srv/berth/.berth/assets/pi_local/sessions/0198f0c2-7a10-7000-8000-000000000001.jsonl";

fn transcripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts")
}

fn get(adapter_type: &str) -> &'static dyn Adapter {
    match adapter(adapter_type) {
        Some(a) => a,
        None => panic!("no adapter {adapter_type}"),
    }
}

fn ctx(config: Value) -> BuildContext {
    let mut c = BuildContext::new(config, "write hello.txt hi there", CWD);
    c.assets_dir_on_environment = Some("/srv/berth/.berth/assets/x".into());
    c
}

fn resumed(config: Value, session_id: &str) -> BuildContext {
    let mut c = ctx(config);
    c.resume = Some(SessionParams {
        session_id: session_id.into(),
        cwd: CWD.into(),
        remote_identity: RemoteIdentity::ssh("127.0.0.1", 2222, "fixture", CWD),
    });
    c
}

fn build(adapter_type: &str, c: &BuildContext) -> Invocation {
    match get(adapter_type).build(c) {
        Ok(inv) => inv,
        Err(e) => panic!("{adapter_type}: {e}"),
    }
}

fn args(inv: &Invocation) -> Vec<&str> {
    inv.args.iter().map(String::as_str).collect()
}

/// Parses one transcript; returns the events, the parser's verdicts and the session id.
fn run_transcript(
    adapter_type: &str,
    dir: &str,
    case: &str,
) -> (Vec<Event>, bool, bool, Option<String>) {
    let base = transcripts().join(dir);
    let stdout = std::fs::read_to_string(base.join(format!("{case}.jsonl"))).unwrap_or_default();
    let stderr = std::fs::read_to_string(base.join(format!("{case}.stderr"))).unwrap_or_default();
    let config = if adapter_type == "gemini_local" {
        json!({"model":"gemini-2.5-flash"})
    } else {
        json!({})
    };
    let c = if adapter_type == "pi_local" {
        resumed(config, PI_SESSION)
    } else {
        ctx(config)
    };
    let inv = build(adapter_type, &c);
    let mut parser = get(adapter_type).parser(&inv);
    let events = parse_all(parser.as_mut(), &stdout, &stderr);
    let expected_path = base.join(format!("{case}.events.json"));
    let actual = serde_json::to_value(&events).unwrap_or(Value::Null);
    if std::env::var_os("BERTH_BLESS").is_some() {
        let text = serde_json::to_string_pretty(&actual).unwrap_or_default();
        std::fs::write(&expected_path, text + "\n").unwrap_or_else(|e| panic!("{e}"));
    }
    let expected: Value = std::fs::read_to_string(&expected_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("missing or invalid {}", expected_path.display()));
    assert_eq!(
        actual,
        expected,
        "{dir}/{case}: events differ from {}",
        expected_path.display()
    );
    (
        events,
        parser.is_terminal_result(),
        parser.unknown_session(),
        parser.session_id().map(str::to_string),
    )
}

struct Case {
    adapter: &'static str,
    dir: &'static str,
    session: &'static str,
    tool: &'static str,
    summary: &'static str,
    usage: (u64, u64, u64),
    cost: Option<f64>,
}

const CASES: &[Case] = &[
    Case {
        adapter: "claude_local",
        dir: "claude",
        session: "3f9f74a6-6b7c-4a3e-9e1d-2f1f0a9b8c7d",
        tool: "Write",
        summary: "Created hello.txt.",
        usage: (30, 45, 22000),
        cost: Some(0.0123),
    },
    Case {
        adapter: "codex_local",
        dir: "codex",
        session: "0199a213-81c0-7800-8aa1-bbab2a035a53",
        tool: "shell",
        summary: "Created hello.txt and noted it in README.md.",
        usage: (24763, 122, 24448),
        cost: None,
    },
    Case {
        adapter: "cursor",
        dir: "cursor",
        session: "c6b0a1f2-9d7e-4c1b-8a3f-2e5d6c7b8a90",
        tool: "write",
        summary: "Creating hello.txt.Done: hello.txt written.",
        usage: (0, 0, 0),
        cost: None,
    },
    Case {
        adapter: "gemini_local",
        dir: "gemini",
        session: "9d3c2b1a-4e5f-4a6b-8c7d-0e1f2a3b4c5d",
        tool: "write_file",
        summary: "I created hello.txt.",
        usage: (500, 30, 120),
        cost: None,
    },
    Case {
        adapter: "opencode_local",
        dir: "opencode",
        session: "ses_494719016ffe85dkDMj0FPRbHK",
        tool: "write",
        summary: "Created hello.txt.",
        usage: (2500, 52, 1800),
        cost: Some(0.003),
    },
    Case {
        adapter: "pi_local",
        dir: "pi",
        session: PI_SESSION,
        tool: "write",
        summary: "Wrote hello.txt.",
        usage: (1860, 38, 512),
        cost: Some(0.0004),
    },
];

#[test]
fn success_transcripts_yield_init_tool_use_usage_and_a_successful_result() {
    for c in CASES {
        let (events, terminal, unknown, session) = run_transcript(c.adapter, c.dir, "success");
        assert!(terminal, "{}: terminal", c.adapter);
        assert!(!unknown, "{}: unknown session", c.adapter);
        assert_eq!(session.as_deref(), Some(c.session), "{}", c.adapter);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::ToolUse { name, .. } if name == c.tool)),
            "{}: tool use {}",
            c.adapter,
            c.tool
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::ToolResult { ok: true, .. })),
            "{}",
            c.adapter
        );
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::Message {
                    role: Role::Assistant,
                    ..
                }
            )),
            "{}",
            c.adapter
        );
        let s = RunSummary::from_events(&events);
        assert_eq!(s.session_id.as_deref(), Some(c.session), "{}", c.adapter);
        assert_eq!(s.ok, Some(true), "{}", c.adapter);
        assert_eq!(s.summary.as_deref(), Some(c.summary), "{}", c.adapter);
        assert_eq!(
            (s.input_tokens, s.output_tokens, s.cached_input_tokens),
            c.usage,
            "{}",
            c.adapter
        );
        match (s.cost_usd, c.cost) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{}: cost {a} vs {b}", c.adapter),
            (a, b) => assert_eq!(a, b, "{}", c.adapter),
        }
        assert!(s.errors.is_empty(), "{}: {:?}", c.adapter, s.errors);
    }
}

#[test]
fn error_transcripts_yield_a_failed_tool_and_an_error() {
    for c in CASES {
        let (events, terminal, unknown, _) = run_transcript(c.adapter, c.dir, "error");
        assert!(!unknown, "{}", c.adapter);
        let s = RunSummary::from_events(&events);
        assert!(
            !s.errors.is_empty() || s.ok == Some(false),
            "{}: {s:?}",
            c.adapter
        );
        if c.adapter == "cursor" {
            // Cursor reports failures on stderr and emits no result object.
            assert!(!terminal);
            assert_eq!(s.ok, None);
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, Event::ToolResult { ok: false, .. }))
            );
        } else {
            assert!(terminal, "{}", c.adapter);
            assert_eq!(s.ok, Some(false), "{}", c.adapter);
        }
    }
}

#[test]
fn unknown_session_transcripts_are_recognised() {
    for c in CASES {
        let (_, _, unknown, _) = run_transcript(c.adapter, c.dir, "unknown_session");
        assert!(unknown, "{}: unknown session not recognised", c.adapter);
    }
}

#[test]
fn older_codex_unknown_session_wording_is_recognised() {
    let inv = build("codex_local", &ctx(json!({})));
    let mut p = get("codex_local").parser(&inv);
    p.parse_line(
        berth_agents::Stream::Stderr,
        "ERROR: No saved session found with ID unknown-1. Run `codex resume` without an ID to choose from existing sessions.",
    );
    assert!(p.unknown_session());
}

// ---------------------------------------------------------------- command building

#[test]
fn claude_fresh_and_resumed_argv() {
    let fresh = build("claude_local", &ctx(json!({})));
    assert_eq!(fresh.program, "claude");
    assert_eq!(
        args(&fresh),
        [
            "--print",
            "-",
            "--output-format",
            "stream-json",
            "--verbose"
        ]
    );
    assert_eq!(fresh.stdin, b"write hello.txt hi there");
    let res = build("claude_local", &resumed(json!({}), "sess-1"));
    assert_eq!(
        args(&res),
        [
            "--print",
            "-",
            "--output-format",
            "stream-json",
            "--verbose",
            "--resume",
            "sess-1"
        ]
    );
}

#[test]
fn claude_full_config_argv_and_instructions_only_on_first_attempt() {
    let config = json!({
        "command": "/opt/claude/bin/claude",
        "model": "claude-sonnet-4-5",
        "maxTurnsPerRun": 30,
        "permissionMode": "acceptEdits",
        "allowedTools": ["Write", "Bash(git status)"],
        "instructionsFilePath": "/home/me/agents/AGENTS.md",
        "extraArgs": ["--debug"]
    });
    let mut c = ctx(config.clone());
    c.local_assets
        .insert("skills".into(), PathBuf::from("/tmp/bundle/skills"));
    let inv = build("claude_local", &c);
    assert_eq!(inv.program, "/opt/claude/bin/claude");
    let a = "/srv/berth/.berth/assets/x";
    assert_eq!(
        args(&inv),
        [
            "--print",
            "-",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            "claude-sonnet-4-5",
            "--max-turns",
            "30",
            "--permission-mode",
            "acceptEdits",
            "--allowedTools",
            "Write,Bash(git status)",
            "--append-system-prompt-file",
            &format!("{a}/instructions/AGENTS.md"),
            "--add-dir",
            &format!("{a}/skills"),
            "--debug",
        ]
    );
    let keys: Vec<&str> = inv.assets.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["skills", "instructions"]);
    assert_eq!(inv.assets[1].local_dir, PathBuf::from("/home/me/agents"));
    assert_eq!(inv.assets[1].only, ["AGENTS.md"]);

    let mut r = resumed(config, "sess-9");
    r.local_assets = c.local_assets.clone();
    let res = build("claude_local", &r);
    assert!(!res.args.iter().any(|x| x == "--append-system-prompt-file"));
    assert!(res.args.windows(2).any(|w| w == ["--resume", "sess-9"]));
}

#[test]
fn claude_never_skips_permissions_as_root() {
    let config = json!({"dangerouslySkipPermissions": true});
    let user = build("claude_local", &ctx(config.clone()));
    assert!(
        user.args
            .iter()
            .any(|a| a == "--dangerously-skip-permissions")
    );

    let mut c = ctx(config);
    c.is_root = true;
    let root = build("claude_local", &c);
    assert!(
        !root
            .args
            .iter()
            .any(|a| a == "--dangerously-skip-permissions"),
        "{:?}",
        root.args
    );
    let i = root.args.iter().position(|a| a == "--allowedTools");
    let tools = i
        .and_then(|i| root.args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    assert!(tools.split(',').any(|t| t == "Write"), "{tools}");
    assert!(!root.notes.is_empty());

    let mut c = ctx(json!({"extraArgs": ["--dangerously-skip-permissions", "--debug"]}));
    c.is_root = true;
    let root = build("claude_local", &c);
    assert!(
        !root
            .args
            .iter()
            .any(|a| a == "--dangerously-skip-permissions"),
        "{:?}",
        root.args
    );
    assert!(
        root.args.iter().any(|a| a == "--allowedTools") && root.args.iter().any(|a| a == "--debug")
    );

    let mut c = ctx(json!({"permissionMode": "bypassPermissions", "allowedTools": "Write"}));
    c.is_root = true;
    let root = build("claude_local", &c);
    assert!(
        !root.args.iter().any(|a| a == "bypassPermissions"),
        "{:?}",
        root.args
    );
    assert!(
        root.args
            .windows(2)
            .any(|w| w == ["--allowedTools", "Write"])
    );
}

#[test]
fn codex_fresh_and_resumed_argv_exactly_as_paperclip() {
    let fresh = build("codex_local", &ctx(json!({})));
    assert_eq!(fresh.program, "codex");
    assert_eq!(args(&fresh), ["exec", "--json", "-"]);
    let res = build("codex_local", &resumed(json!({}), "session-123"));
    assert_eq!(args(&res), ["exec", "--json", "resume", "session-123", "-"]);
    assert!(!res.args.iter().any(|a| a == "--skip-git-repo-check"));
}

#[test]
fn codex_skips_the_git_repo_check_only_when_asked() {
    let inv = build("codex_local", &ctx(json!({"skipGitRepoCheck": true})));
    assert_eq!(args(&inv), ["exec", "--json", "--skip-git-repo-check", "-"]);
    let inv = build(
        "codex_local",
        &resumed(json!({"skipGitRepoCheck": false}), "s-1"),
    );
    assert_eq!(args(&inv), ["exec", "--json", "resume", "s-1", "-"]);
}

#[test]
fn codex_flags_go_between_exec_and_resume_and_home_becomes_codex_home() {
    let mut c = resumed(
        json!({"model": "gpt-5-codex", "sandbox": "workspace-write", "extraArgs": ["-c", "x=1"]}),
        "s-1",
    );
    c.local_assets
        .insert("home".into(), PathBuf::from("/var/berth/codex-home"));
    let inv = build("codex_local", &c);
    assert_eq!(
        args(&inv),
        [
            "exec",
            "--json",
            "--model",
            "gpt-5-codex",
            "--sandbox",
            "workspace-write",
            "-c",
            "x=1",
            "resume",
            "s-1",
            "-"
        ]
    );
    assert_eq!(
        inv.env.get("CODEX_HOME").map(String::as_str),
        Some("/srv/berth/.berth/assets/x/home")
    );
}

#[test]
fn cursor_fresh_and_resumed_argv() {
    let fresh = build("cursor", &ctx(json!({})));
    assert_eq!(fresh.program, "agent");
    assert_eq!(
        args(&fresh),
        ["-p", "--output-format", "stream-json", "--workspace", CWD]
    );
    let res = build(
        "cursor",
        &resumed(json!({"model": "sonnet-4.5", "force": true}), "chat-1"),
    );
    assert_eq!(
        args(&res),
        [
            "-p",
            "--output-format",
            "stream-json",
            "--workspace",
            CWD,
            "--resume",
            "chat-1",
            "--model",
            "sonnet-4.5",
            "--force"
        ]
    );
}

#[test]
fn gemini_needs_a_model_and_trusts_the_workspace() {
    let err = get("gemini_local").build(&ctx(json!({}))).err();
    assert_eq!(
        err,
        Some(AdapterError::MissingConfig {
            adapter: "gemini_local",
            key: "model"
        })
    );
    let fresh = build("gemini_local", &ctx(json!({"model": "gemini-2.5-flash"})));
    assert_eq!(fresh.program, "gemini");
    assert_eq!(
        args(&fresh),
        ["--output-format", "stream-json", "-m", "gemini-2.5-flash"]
    );
    assert_eq!(
        fresh
            .env
            .get("GEMINI_CLI_TRUST_WORKSPACE")
            .map(String::as_str),
        Some("true")
    );
    let res = build(
        "gemini_local",
        &resumed(json!({"model": "m", "yolo": true}), "g-1"),
    );
    assert_eq!(
        args(&res),
        [
            "--output-format",
            "stream-json",
            "-m",
            "m",
            "--resume",
            "g-1",
            "--yolo"
        ]
    );
}

#[test]
fn opencode_fresh_and_resumed_argv() {
    let fresh = build("opencode_local", &ctx(json!({})));
    assert_eq!(fresh.program, "opencode");
    assert_eq!(args(&fresh), ["run", "--format", "json"]);
    let mut c = resumed(json!({"model": "anthropic/claude-sonnet-4-5"}), "ses_1");
    c.local_assets
        .insert("xdgConfig".into(), PathBuf::from("/tmp/xdg"));
    let res = build("opencode_local", &c);
    assert_eq!(
        args(&res),
        [
            "run",
            "--format",
            "json",
            "--session",
            "ses_1",
            "--model",
            "anthropic/claude-sonnet-4-5"
        ]
    );
    assert_eq!(
        res.env.get("XDG_CONFIG_HOME").map(String::as_str),
        Some("/srv/berth/.berth/assets/x/xdgConfig")
    );
}

#[test]
fn pi_session_is_a_file_under_the_asset_dir_and_resume_reuses_it() {
    let mut c = ctx(json!({}));
    c.local_assets
        .insert("skills".into(), PathBuf::from("/tmp/skills"));
    let fresh = build("pi_local", &c);
    let file = format!("/srv/berth/.berth/assets/x/sessions/{}.jsonl", c.run_id);
    assert_eq!(
        args(&fresh),
        [
            "--mode",
            "json",
            "-p",
            "--session",
            &file,
            "--skill",
            "/srv/berth/.berth/assets/x/skills"
        ]
    );
    assert_eq!(fresh.session_id.as_deref(), Some(file.as_str()));
    assert_eq!(fresh.ensure_dirs, ["/srv/berth/.berth/assets/x/sessions"]);
    let res = build("pi_local", &resumed(json!({}), PI_SESSION));
    assert_eq!(
        args(&res),
        ["--mode", "json", "-p", "--session", PI_SESSION]
    );

    let mut no_assets = ctx(json!({}));
    no_assets.assets_dir_on_environment = None;
    assert!(matches!(
        get("pi_local").build(&no_assets),
        Err(AdapterError::NoAssetDir { .. })
    ));
}

#[test]
fn pi_session_header_must_name_the_current_directory() {
    let header = format!(r#"{{"type":"session","version":3,"id":"x","cwd":"{CWD}"}}"#);
    assert!(berth_agents::pi::check_session_header(&header, CWD).is_ok());
    assert!(berth_agents::pi::check_session_header(&header, "/elsewhere").is_err());
    assert!(berth_agents::pi::check_session_header("", CWD).is_err());
    assert!(berth_agents::pi::check_session_header(r#"{"type":"message"}"#, CWD).is_err());
}

#[test]
fn process_runs_the_configured_command_with_raw_output() {
    let config = json!({"command": "./run.sh", "args": ["--fast"], "env": {"MODE": "ci"}, "timeoutSec": 60, "graceSec": 5});
    let inv = build("process", &ctx(config));
    assert_eq!(inv.program, "./run.sh");
    assert_eq!(args(&inv), ["--fast"]);
    assert_eq!((inv.timeout_sec, inv.grace_sec), (60, 5));
    assert_eq!(inv.env.get("MODE").map(String::as_str), Some("ci"));
    let mut p = get("process").parser(&inv);
    let e = p.parse_line(berth_agents::Stream::Stdout, r#"{"type":"result"}"#);
    assert_eq!(
        e,
        [Event::Output {
            stream: berth_agents::Stream::Stdout,
            line: r#"{"type":"result"}"#.into()
        }]
    );
    assert!(!p.is_terminal_result());
    assert_eq!(
        get("process").build(&ctx(json!({}))).err(),
        Some(AdapterError::MissingConfig {
            adapter: "process",
            key: "command"
        })
    );
}

// ---------------------------------------------------------------- shared rules

#[test]
fn every_adapter_rejects_forbidden_env_keys_by_name() {
    for t in berth_core::adapters::ADAPTER_TYPES {
        for key in ["LD_PRELOAD", "BASH_ENV", "ENV", "DYLD_INSERT_LIBRARIES"] {
            let config = json!({"command": "x", "model": "m", "env": {key: "1"}});
            let err = get(t).build(&ctx(config)).err();
            assert_eq!(
                err,
                Some(AdapterError::ForbiddenEnvKey { key: key.into() }),
                "{t}"
            );
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains(key), "{msg}");
        }
        let reserved = json!({"command": "x", "model": "m", "env": {"BERTH_API_TOKEN": "x"}});
        assert!(
            matches!(
                get(t).build(&ctx(reserved)),
                Err(AdapterError::ReservedEnvKey { .. })
            ),
            "{t}"
        );
        let bad = json!({"command": "x", "model": "m", "env": {"BAD KEY": "x"}});
        assert!(
            matches!(
                get(t).build(&ctx(bad)),
                Err(AdapterError::InvalidConfig { .. })
            ),
            "{t}"
        );
    }
}

#[test]
fn every_adapter_exports_berth_variables_and_config_env_but_nothing_from_the_host() {
    for t in berth_core::adapters::ADAPTER_TYPES {
        let mut c =
            ctx(json!({"command": "x", "model": "m", "env": {"ANTHROPIC_API_KEY": "sk-1"}}));
        c.api_url = Some("http://127.0.0.1:41234".into());
        c.api_token = Some(berth_core::Secret::new("tok-secret-9".to_string()));
        let inv = build(t, &c);
        let env: BTreeMap<&str, &str> = inv
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env.get("BERTH_RUN_ID").copied(),
            Some(c.run_id.to_string().as_str()),
            "{t}"
        );
        assert_eq!(env.get("BERTH_WORKSPACE_CWD").copied(), Some(CWD), "{t}");
        assert_eq!(
            env.get("BERTH_API_URL").copied(),
            Some("http://127.0.0.1:41234"),
            "{t}"
        );
        assert_eq!(
            env.get("BERTH_API_TOKEN").copied(),
            Some("tok-secret-9"),
            "{t}"
        );
        assert_eq!(env.get("ANTHROPIC_API_KEY").copied(), Some("sk-1"), "{t}");
        for host in ["HOME", "PATH", "USER", "TMPDIR"] {
            assert!(!env.contains_key(host), "{t}: {host}");
        }
        assert!(
            !format!("{inv:?}").contains("sk-1"),
            "{t}: Debug leaks env values"
        );
        assert!(
            !format!("{c:?}").contains("sk-1") && !format!("{c:?}").contains("tok-secret-9"),
            "{t}: BuildContext Debug leaks"
        );
        assert!(
            !inv.args
                .iter()
                .any(|a| a.contains("sk-1") || a.contains("tok-secret-9")),
            "{t}: secret on argv"
        );
        assert_eq!((inv.timeout_sec, inv.grace_sec), (0, 20), "{t}: defaults");
    }
}

#[test]
fn unknown_assets_and_assets_without_a_destination_are_errors() {
    let mut c = ctx(json!({}));
    c.local_assets
        .insert("nonsense".into(), PathBuf::from("/tmp"));
    assert!(matches!(
        get("claude_local").build(&c),
        Err(AdapterError::UnknownAsset { .. })
    ));
    let mut c = ctx(json!({"instructionsFilePath": "/home/me/AGENTS.md"}));
    c.assets_dir_on_environment = None;
    assert!(matches!(
        get("codex_local").build(&c),
        Err(AdapterError::NoAssetDir { .. })
    ));
}

#[test]
fn non_claude_adapters_point_the_prompt_at_the_instructions_file() {
    for t in [
        "codex_local",
        "cursor",
        "gemini_local",
        "opencode_local",
        "pi_local",
    ] {
        let inv = build(
            t,
            &ctx(json!({"model": "m", "instructionsFilePath": "/home/me/AGENTS.md"})),
        );
        let stdin = String::from_utf8_lossy(&inv.stdin).to_string();
        assert!(
            stdin.contains("/srv/berth/.berth/assets/x/instructions/AGENTS.md"),
            "{t}: {stdin}"
        );
        assert!(stdin.ends_with("write hello.txt hi there"), "{t}");
    }
}

#[test]
fn mistyped_config_values_name_their_key() {
    let err = get("claude_local")
        .build(&ctx(json!({"timeoutSec": "soon"})))
        .err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(
            "invalid adapterConfig.timeoutSec: must be 0 (no timeout) or an integer from 1 to 604800 (7 days)"
                .into()
        )
    );
    let err = get("codex_local")
        .build(&ctx(json!({"extraArgs": "--x"})))
        .err();
    assert!(err.is_some_and(|e| e.to_string().contains("extraArgs")));
    let err = get("claude_local")
        .build(&ctx(json!({"permissionMode": "yolo"})))
        .err();
    assert!(err.is_some_and(|e| e.to_string().contains("permissionMode")));
}

/// Recorded from the real `pi` 1.6.0 (npm `@earendil-works/pi-coding-agent`) run as the adapter
/// builds it, prompt on stdin, against a local mock OpenAI-compatible model that asked for one
/// `write` tool call. 1.6.0 still sends `partial` in `message_update` and no `willRetry`.
#[test]
fn real_pi_transcript_parses_like_the_documented_one() {
    let stdout = std::fs::read_to_string(transcripts().join("pi/real_1.6.0_success.jsonl"))
        .unwrap_or_default();
    let session = "/tmp/fk/pi1/sessions/run1.jsonl";
    let inv = build("pi_local", &resumed(json!({}), session));
    let mut p = get("pi_local").parser(&inv);
    let events = parse_all(p.as_mut(), &stdout, "");
    assert!(p.is_terminal_result());
    let s = RunSummary::from_events(&events);
    assert_eq!(s.session_id.as_deref(), Some(session));
    assert_eq!(s.ok, Some(true));
    assert_eq!(s.summary.as_deref(), Some("Wrote hello.txt."));
    assert_eq!(
        (s.input_tokens, s.output_tokens, s.cached_input_tokens),
        (120, 20, 80)
    );
    let tools: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::ToolUse { .. } | Event::ToolResult { .. }))
        .collect();
    assert_eq!(
        serde_json::to_value(&tools).unwrap_or(Value::Null),
        json!([
            {"type":"tool_use","name":"write","input":{"path":"hello.txt","filePath":"hello.txt","file_path":"hello.txt","content":"hi there"}},
            {"type":"tool_result","ok":true,"output":"Successfully wrote 8 bytes to hello.txt"}
        ])
    );
}

/// Recorded from the real `opencode` 1.18.33 (npm `opencode-ai`) run as the adapter builds it,
/// prompt on stdin, against a local mock OpenAI-compatible model; and its answer to an unknown
/// `--session` (1.18 exits 1 with `Error: Session not found` in colour; 1.14 exited 0).
#[test]
fn real_opencode_transcripts_parse_like_the_documented_ones() {
    let dir = transcripts().join("opencode");
    let stdout =
        std::fs::read_to_string(dir.join("real_1.18.33_success.jsonl")).unwrap_or_default();
    let inv = build("opencode_local", &ctx(json!({})));
    let mut p = get("opencode_local").parser(&inv);
    let events = parse_all(p.as_mut(), &stdout, "");
    assert!(p.is_terminal_result());
    let s = RunSummary::from_events(&events);
    assert_eq!(
        s.session_id.as_deref(),
        Some("ses_de47e5086ffegaiHPGxnf79Mz9")
    );
    assert_eq!(s.ok, Some(true));
    assert_eq!(s.summary.as_deref(), Some("Wrote hello.txt."));
    assert_eq!((s.input_tokens, s.output_tokens), (120, 20));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ToolUse { name, .. } if name == "write"))
    );
    assert!(events.iter().any(|e| matches!(e, Event::ToolResult { ok: true, output } if output == "Wrote file successfully.")));

    let stderr = std::fs::read_to_string(dir.join("real_1.18.33_unknown_session.stderr"))
        .unwrap_or_default();
    let mut p = get("opencode_local").parser(&inv);
    parse_all(p.as_mut(), "", &stderr);
    assert!(p.unknown_session());
}

/// Recorded from the real Claude Code 2.1.197 (npm `@anthropic-ai/claude-code`), run as root
/// exactly as the adapter builds it (`--allowedTools Write`), against a local mock of the
/// Anthropic Messages API: a fresh run with one `Write`, its resumption (same session id), and
/// both unknown-session answers (a UUID not in the store; a value that is not a UUID).
#[test]
fn real_claude_transcripts_parse_like_the_documented_ones() {
    let dir = transcripts().join("claude");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let inv = build("claude_local", &ctx(json!({})));
    let sid = "9b2069af-63ec-4c5c-8c58-94aa8e5ad7c1";
    for case in ["real_2.1.197_success.jsonl", "real_2.1.197_resumed.jsonl"] {
        let mut p = get("claude_local").parser(&inv);
        let events = parse_all(p.as_mut(), &read(case), "");
        assert!(p.is_terminal_result() && !p.unknown_session(), "{case}");
        let s = RunSummary::from_events(&events);
        assert_eq!(s.session_id.as_deref(), Some(sid), "{case}");
        assert_eq!(s.ok, Some(true), "{case}");
        assert!(s.cost_usd.is_some_and(|c| c > 0.0), "{case}");
    }
    let mut p = get("claude_local").parser(&inv);
    let events = parse_all(p.as_mut(), &read("real_2.1.197_success.jsonl"), "");
    let s = RunSummary::from_events(&events);
    assert_eq!(s.summary.as_deref(), Some("Wrote hello.txt."));
    assert_eq!(
        (s.input_tokens, s.output_tokens, s.cached_input_tokens),
        (100, 10, 40)
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ToolUse { name, .. } if name == "Write"))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ToolResult { ok: true, .. }))
    );

    for case in [
        "real_2.1.197_unknown_session",
        "real_2.1.197_unknown_session_not_uuid",
    ] {
        let mut p = get("claude_local").parser(&inv);
        let events = parse_all(
            p.as_mut(),
            &read(&format!("{case}.jsonl")),
            &read(&format!("{case}.stderr")),
        );
        assert!(p.unknown_session(), "{case}");
        assert!(
            p.session_id().is_none(),
            "{case}: the error result's id is no session"
        );
        assert_eq!(RunSummary::from_events(&events).ok, Some(false), "{case}");
    }
}

/// Recorded from the real Gemini CLI 0.61.0 (npm `@google/gemini-cli`) run as the adapter
/// builds it (prompt on stdin only, `-m`, `GEMINI_CLI_TRUST_WORKSPACE=true`) against a local
/// mock of the Gemini API: a fresh run with one `write_file`, its resumption, and the answer to
/// an unknown `--resume` id (exit 42, nothing on stdout).
#[test]
fn real_gemini_transcripts_parse_like_the_documented_ones() {
    let dir = transcripts().join("gemini");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let inv = build("gemini_local", &ctx(json!({"model": "gemini-2.5-flash"})));
    let sid = "ab7b763e-4615-40df-bd75-c4d562605399";

    let mut p = get("gemini_local").parser(&inv);
    let events = parse_all(
        p.as_mut(),
        &read("real_0.61.0_success.jsonl"),
        &read("real_0.61.0_success.stderr"),
    );
    assert!(p.is_terminal_result() && !p.unknown_session());
    let s = RunSummary::from_events(&events);
    assert_eq!(s.session_id.as_deref(), Some(sid));
    assert_eq!(s.ok, Some(true));
    assert_eq!(s.summary.as_deref(), Some("Wrote hello.txt."));
    assert_eq!(
        (s.input_tokens, s.output_tokens, s.cached_input_tokens),
        (100, 10, 40)
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ToolUse { name, .. } if name == "write_file"))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ToolResult { ok: true, .. }))
    );

    let mut p = get("gemini_local").parser(&inv);
    let events = parse_all(p.as_mut(), &read("real_0.61.0_resumed.jsonl"), "");
    assert_eq!(
        RunSummary::from_events(&events).session_id.as_deref(),
        Some(sid)
    );

    for case in [
        "real_0.61.0_unknown_session.stderr",
        "real_0.61.0_unknown_session_no_sessions.stderr",
    ] {
        let mut p = get("gemini_local").parser(&inv);
        parse_all(p.as_mut(), "", &read(case));
        assert!(p.unknown_session(), "{case}");
    }
}

/// Recorded from the real Codex CLI 0.171.0 (npm `@openai/codex`) run as the adapter builds it
/// (`exec --json -`, `exec --json resume <id> -`) against a local mock of the Responses API:
/// a fresh run with one shell command, its resumption, an unknown UUID (exit 1, stderr only),
/// and a non-UUID id, which Codex silently answers with a brand-new thread.
#[test]
fn real_codex_transcripts_parse_like_the_documented_ones() {
    let dir = transcripts().join("codex");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let tid = "01a21b85-5833-7fa1-9462-5613008f6f20";

    let fresh = build("codex_local", &ctx(json!({})));
    let mut p = get("codex_local").parser(&fresh);
    let events = parse_all(p.as_mut(), &read("real_0.171.0_success.jsonl"), "");
    assert!(p.is_terminal_result() && !p.unknown_session() && !p.resume_ignored());
    let s = RunSummary::from_events(&events);
    assert_eq!(s.session_id.as_deref(), Some(tid));
    assert_eq!(s.ok, Some(true));
    assert_eq!(s.summary.as_deref(), Some("Wrote hello.txt."));
    assert_eq!(
        (s.input_tokens, s.output_tokens, s.cached_input_tokens),
        (100, 10, 40)
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ToolResult { ok: true, .. }))
    );
    // Codex reports a missing model-metadata warning as an `error` item; it is not fatal.
    assert_eq!(s.errors.len(), 1);

    let resumed_inv = build("codex_local", &resumed(json!({}), tid));
    let mut p = get("codex_local").parser(&resumed_inv);
    let events = parse_all(p.as_mut(), &read("real_0.171.0_resumed.jsonl"), "");
    assert!(!p.resume_ignored());
    assert_eq!(
        RunSummary::from_events(&events).session_id.as_deref(),
        Some(tid)
    );

    let unknown = build(
        "codex_local",
        &resumed(json!({}), "0b8c1e44-1111-4222-8333-444455556666"),
    );
    let mut p = get("codex_local").parser(&unknown);
    parse_all(p.as_mut(), "", &read("real_0.171.0_unknown_session.stderr"));
    assert!(p.unknown_session());

    let not_uuid = build("codex_local", &resumed(json!({}), "unknown-42"));
    let mut p = get("codex_local").parser(&not_uuid);
    let events = parse_all(p.as_mut(), &read("real_0.171.0_resume_not_uuid.jsonl"), "");
    assert!(!p.unknown_session());
    assert!(p.resume_ignored());
    assert_eq!(p.session_id(), Some("01a21b85-6c40-75f3-b645-a5168c117d15"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Error { message } if message.contains("unknown-42")))
    );
}

/// Checks a fresh recording made by `tools/record-real.sh DIR` (real CLIs from npm against the
/// mock model API): `BERTH_REAL_TRANSCRIPTS=DIR cargo test -p berth-agents -- --ignored`.
#[test]
#[ignore = "needs a recording from tools/record-real.sh (network access to npm)"]
fn fresh_real_cli_recordings_parse() {
    let dir = PathBuf::from(
        std::env::var_os("BERTH_REAL_TRANSCRIPTS").unwrap_or_else(|| {
            panic!("set BERTH_REAL_TRANSCRIPTS to a tools/record-real.sh output dir")
        }),
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    for (adapter_type, name) in [
        ("claude_local", "claude"),
        ("codex_local", "codex"),
        ("gemini_local", "gemini"),
        ("opencode_local", "opencode"),
        ("pi_local", "pi"),
    ] {
        let config = json!({"model": "m"});
        let inv = build(adapter_type, &ctx(config.clone()));
        let mut p = get(adapter_type).parser(&inv);
        let events = parse_all(
            p.as_mut(),
            &read(&format!("{name}_success.jsonl")),
            &read(&format!("{name}_success.stderr")),
        );
        let s = RunSummary::from_events(&events);
        assert!(p.is_terminal_result(), "{name}: {events:?}");
        assert_eq!(s.ok, Some(true), "{name}: {s:?}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::ToolResult { ok: true, .. })),
            "{name}"
        );
        let sid = s.session_id.clone().unwrap_or_default();
        assert!(!sid.is_empty(), "{name}");

        let resumed_inv = build(adapter_type, &resumed(config.clone(), &sid));
        let mut p = get(adapter_type).parser(&resumed_inv);
        let events = parse_all(p.as_mut(), &read(&format!("{name}_resumed.jsonl")), "");
        let header_id = RunSummary::from_events(&events).session_id;
        if adapter_type == "pi_local" {
            // Pi's session is the file; the parser names it by the path it was given.
            assert_eq!(header_id.as_deref(), Some(sid.as_str()), "{name}");
        } else {
            assert_eq!(
                header_id.as_deref(),
                Some(sid.as_str()),
                "{name}: resume kept the id"
            );
            assert!(!p.resume_ignored(), "{name}");
        }

        if adapter_type != "pi_local" {
            let mut p = get(adapter_type).parser(&inv);
            parse_all(
                p.as_mut(),
                &read(&format!("{name}_unknown_session.jsonl")),
                &read(&format!("{name}_unknown_session.stderr")),
            );
            assert!(
                p.unknown_session(),
                "{name}: unknown session not recognised"
            );
        }
    }
}
