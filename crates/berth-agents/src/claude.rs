//! `claude_local`: Claude Code in print mode with `stream-json` output.
//!
//! Command: `claude --print - --output-format stream-json --verbose [--resume <id>] [--model m]
//! [--max-turns n] [--permission-mode m] [--dangerously-skip-permissions | --allowedTools a,b]
//! [--append-system-prompt-file f] [--add-dir d] <extraArgs>`, prompt on stdin.
//!
//! Documented (Claude Code headless / CLI reference): every flag above; `stream-json` lines
//! `system`/`init` (with `session_id`), `assistant` (content parts `text`, `tool_use`), `user`
//! (content parts `tool_result` with `is_error`), and the final `result` (`subtype`, `is_error`,
//! `result`, `total_cost_usd`, `usage`). Observed on Claude Code 2.1.x: an unknown `--resume` id
//! prints `No conversation found with session ID: <id>` on stderr, emits a `result` with subtype
//! `error_during_execution` and exits 1; as root `--dangerously-skip-permissions` is refused.
//! Verified against the real 2.1.197 (`tools/record-real.sh`): all of the above, plus a second
//! unknown-session wording for ids that are not UUIDs, and that `-` is taken literally as
//! prompt text with stdin appended (harmless). Inferred: the root fallback tool list below (Paperclip replaces the flag by an explicit
//! `--allowedTools` list; the list itself is Berth's choice).

use serde_json::Value;

use crate::config::{
    CommonConfig, base_invocation, bool_opt, choice, object, place_assets, string_list_or_csv,
};
use crate::event::{Event, Role, Stream};
use crate::json::{bool_at, f64_at, object_line, render, str_at, text_of, type_of, u64_at};
use crate::session::ResumeCheck;
use crate::{Adapter, AdapterError, BuildContext, Invocation, OutputParser};

pub const ADAPTER_TYPE: &str = "claude_local";

/// What stderr says when `--resume` names a session Claude Code does not have: a UUID that is
/// not in its store, or (2.1.197) a value that is neither a UUID nor a session title.
pub const UNKNOWN_SESSION_MARKERS: &[&str] = &[
    "No conversation found with session ID",
    "does not match any session title",
];

/// Tools allowed when skipping permissions was asked for but the agent runs as root, where
/// Claude Code refuses `--dangerously-skip-permissions`.
pub const ROOT_DEFAULT_ALLOWED_TOOLS: &[&str] = &[
    "Bash",
    "Edit",
    "Write",
    "Read",
    "Glob",
    "Grep",
    "NotebookEdit",
    "WebFetch",
    "WebSearch",
    "TodoWrite",
    "Task",
];

const PERMISSION_MODES: &[&str] = &[
    "default",
    "acceptEdits",
    "plan",
    "bypassPermissions",
    "dontAsk",
];

#[derive(Debug, Clone, Copy, Default)]
pub struct ClaudeAdapter;

impl Adapter for ClaudeAdapter {
    fn adapter_type(&self) -> &'static str {
        ADAPTER_TYPE
    }

    fn asset_keys(&self) -> &'static [&'static str] {
        &["skills"]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Invocation, AdapterError> {
        let common = CommonConfig::parse(ADAPTER_TYPE, &ctx.adapter_config)?;
        let obj = object(&ctx.adapter_config)?;
        let skip = bool_opt(obj, "dangerouslySkipPermissions")?.unwrap_or(false);
        let mut mode = choice(obj, "permissionMode", PERMISSION_MODES)?;
        let mut allowed = string_list_or_csv(obj, "allowedTools")?.unwrap_or_default();
        let placed = place_assets(ADAPTER_TYPE, self.asset_keys(), &common, ctx)?;

        let mut inv = base_invocation(&common, ctx, &[], ctx.prompt.clone())?;
        let mut args: Vec<String> = [
            "--print",
            "-",
            "--output-format",
            "stream-json",
            "--verbose",
        ]
        .map(String::from)
        .into();
        if let Some(id) = ctx.resume_id() {
            args.extend(["--resume".into(), id.to_string()]);
        }
        if let Some(model) = &common.model {
            args.extend(["--model".into(), model.clone()]);
        }
        if let Some(n) = common.max_turns_per_run {
            args.extend(["--max-turns".into(), n.to_string()]);
        }
        const SKIP_FLAG: &str = "--dangerously-skip-permissions";
        let skip_in_extra = common.extra_args.iter().any(|a| a == SKIP_FLAG);
        let wants_bypass = skip || skip_in_extra || mode.as_deref() == Some("bypassPermissions");
        if wants_bypass && ctx.is_root {
            if mode.as_deref() == Some("bypassPermissions") {
                mode = None;
            }
            if allowed.is_empty() {
                allowed = ROOT_DEFAULT_ALLOWED_TOOLS
                    .iter()
                    .map(|t| t.to_string())
                    .collect();
            }
            inv.notes.push(format!(
                "running as root: Claude Code refuses to skip permissions, so Berth passes \
                 --allowedTools {} instead",
                allowed.join(",")
            ));
        }
        if let Some(mode) = mode {
            args.extend(["--permission-mode".into(), mode]);
        }
        if skip && !ctx.is_root {
            args.push(SKIP_FLAG.into());
        }
        if !allowed.is_empty() {
            args.extend(["--allowedTools".into(), allowed.join(",")]);
        }
        // The instructions are part of the system prompt of the session's first turn only; a
        // resumed session already has them.
        if let (None, Some(file)) = (ctx.resume_id(), &placed.instructions_file) {
            args.extend(["--append-system-prompt-file".into(), file.clone()]);
        }
        if let Some(skills) = placed.remote.get("skills") {
            args.extend(["--add-dir".into(), skills.clone()]);
        }
        // Not even through extraArgs: as root the flag makes Claude Code exit at once.
        args.extend(
            common
                .extra_args
                .iter()
                .filter(|a| !(ctx.is_root && *a == SKIP_FLAG))
                .cloned(),
        );
        inv.args = args;
        inv.assets = placed.specs;
        Ok(inv)
    }

    fn parser(&self, invocation: &Invocation) -> Box<dyn OutputParser> {
        Box::new(ClaudeParser {
            resume: ResumeCheck::new(invocation.resume_session_id.clone()),
            ..ClaudeParser::default()
        })
    }
}

/// Parser state for one Claude Code attempt.
#[derive(Debug, Default)]
pub struct ClaudeParser {
    resume: ResumeCheck,
    session_id: Option<String>,
    terminal: bool,
    unknown_session: bool,
}

impl ClaudeParser {
    fn parse_json(&mut self, v: &Value) -> Vec<Event> {
        let mut out = Vec::new();
        match type_of(v) {
            "system" if str_at(v, &["subtype"]) == Some("init") => {
                if let Some(id) = str_at(v, &["session_id"]) {
                    self.session_id = Some(id.to_string());
                    out.push(Event::Init {
                        session_id: id.to_string(),
                    });
                    self.resume.on_init(id, &mut out);
                }
            }
            "assistant" => {
                let parts = v.pointer("/message/content").and_then(Value::as_array);
                for part in parts.into_iter().flatten() {
                    match type_of(part) {
                        "text" => out.push(Event::Message {
                            role: Role::Assistant,
                            text: str_at(part, &["text"]).unwrap_or("").to_string(),
                        }),
                        "tool_use" => out.push(Event::ToolUse {
                            name: str_at(part, &["name"]).unwrap_or("").to_string(),
                            input: part.get("input").cloned().unwrap_or(Value::Null),
                        }),
                        _ => {}
                    }
                }
            }
            "user" => match v.pointer("/message/content") {
                Some(Value::Array(parts)) => {
                    for part in parts {
                        match type_of(part) {
                            "tool_result" => out.push(Event::ToolResult {
                                ok: !bool_at(part, &["is_error"]).unwrap_or(false),
                                output: render(part.get("content").unwrap_or(&Value::Null)),
                            }),
                            "text" => out.push(Event::Message {
                                role: Role::User,
                                text: str_at(part, &["text"]).unwrap_or("").to_string(),
                            }),
                            _ => {}
                        }
                    }
                }
                Some(content @ Value::String(_)) => out.push(Event::Message {
                    role: Role::User,
                    text: text_of(content),
                }),
                _ => {}
            },
            "result" => {
                self.terminal = true;
                // No `Init` from the result's `session_id`: a result without a preceding init is
                // what an unknown `--resume` id produces, and that id names no usable session.
                if let Some(u) = v.get("usage") {
                    out.push(Event::Usage {
                        input_tokens: u64_at(u, &["input_tokens"]).unwrap_or(0),
                        output_tokens: u64_at(u, &["output_tokens"]).unwrap_or(0),
                        cached_input_tokens: u64_at(u, &["cache_read_input_tokens"]),
                    });
                }
                let subtype = str_at(v, &["subtype"]).unwrap_or("");
                let ok = subtype == "success" && !bool_at(v, &["is_error"]).unwrap_or(false);
                let errors = v.get("errors").map(text_of).filter(|e| !e.is_empty());
                let summary = str_at(v, &["result"])
                    .map(str::to_string)
                    .or(errors)
                    .unwrap_or_else(|| subtype.to_string());
                if !ok {
                    out.push(Event::Error {
                        message: if summary == subtype {
                            format!("Claude Code ended with {subtype}")
                        } else {
                            format!("Claude Code ended with {subtype}: {summary}")
                        },
                    });
                }
                out.push(Event::Result {
                    ok,
                    summary,
                    cost_usd: f64_at(v, &["total_cost_usd"]),
                });
            }
            _ => {}
        }
        out
    }
}

impl OutputParser for ClaudeParser {
    fn parse_line(&mut self, stream: Stream, line: &str) -> Vec<Event> {
        if UNKNOWN_SESSION_MARKERS.iter().any(|m| line.contains(m)) {
            self.unknown_session = true;
        }
        match (stream, object_line(line)) {
            (Stream::Stdout, Some(v)) => self.parse_json(&v),
            _ if line.trim().is_empty() => Vec::new(),
            _ => vec![Event::Output {
                stream,
                line: line.to_string(),
            }],
        }
    }

    fn is_terminal_result(&self) -> bool {
        self.terminal
    }

    fn unknown_session(&self) -> bool {
        self.unknown_session
    }

    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    fn resume_ignored(&self) -> bool {
        self.resume.ignored
    }
}
