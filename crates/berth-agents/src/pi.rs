//! `pi_local`: the Pi coding agent in JSON event-stream mode.
//!
//! Command: `pi --mode json -p --session <file> [--skill <dir>] [--provider p] [--model m]
//! <extraArgs>`, prompt on stdin. Pi's session id *is* a session file on the environment:
//! fresh runs get `<assets>/sessions/<runId>.jsonl` (the launcher creates the directory, see
//! [`Invocation::ensure_dirs`]), resumed runs reuse the saved path. Asset `skills` is passed with
//! `--skill`; asset `agentConfig` becomes `PI_CODING_AGENT_DIR`.
//!
//! Documented (pi `docs/json.md`): `--mode json` prints JSONL; the first record is the session
//! header `{"type":"session","version":…,"id":…,"cwd":…}`, then `agent_start`, `turn_start`,
//! `message_start`/`message_update`/`message_end` (final message with `role`, `content` parts
//! `text`/`toolCall`, `usage`, `stopReason`), `tool_execution_start` (`toolName`, `args`),
//! `tool_execution_end` (`result`, `isError`), `turn_end`, `agent_end` (`willRetry`).
//! `--session`, `--skill`, `--provider`, `--model` from Pi's CLI and Paperclip's adapter.
//! Verified against the real pi 1.6.0 (`tools/record-real.sh`): `-p` with the prompt on stdin,
//! the `usage` field names (`input`, `output`, `cacheRead`, `cost.total`), and that a `--session`
//! path that does not exist silently starts a new session. Inferred: the unknown-session wording
//! (only the fake uses it); the real guard is [`check_session_header`], which the engine runs on
//! the file's first line before resuming, as Paperclip does.

use serde_json::Value;

use crate::config::{
    CommonConfig, base_invocation, note_unsupported, object, place_assets,
    prompt_with_instructions, str_opt,
};
use crate::event::{Event, Role, Stream};
use crate::json::{
    bool_at, f64_at, mentions, object_line, render, round_usd, str_at, text_of, type_of, u64_at,
};
use crate::session::ResumeRefused;
use crate::{Adapter, AdapterError, BuildContext, Invocation, OutputParser};

pub const ADAPTER_TYPE: &str = "pi_local";

/// Phrases (case-insensitive) taken to mean the session file to resume is unusable. Inferred.
pub const UNKNOWN_SESSION_MARKERS: &[&str] = &["session file not found", "no session found"];

#[derive(Debug, Clone, Copy, Default)]
pub struct PiAdapter;

impl Adapter for PiAdapter {
    fn adapter_type(&self) -> &'static str {
        ADAPTER_TYPE
    }

    /// Pi's session id is the path of its session file on the environment.
    fn session_file(&self, saved: &crate::SessionParams) -> Option<String> {
        Some(saved.session_id.clone())
    }

    fn check_session_file_header(
        &self,
        header: &str,
        cwd: &str,
    ) -> Result<(), crate::ResumeRefused> {
        check_session_header(header, cwd)
    }

    fn asset_keys(&self) -> &'static [&'static str] {
        &["skills", "agentConfig"]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Invocation, AdapterError> {
        let common = CommonConfig::parse(ADAPTER_TYPE, &ctx.adapter_config)?;
        let obj = object(&ctx.adapter_config)?;
        let provider = str_opt(obj, "provider")?;
        let Some(assets) = ctx
            .assets_dir_on_environment
            .as_deref()
            .map(|a| a.trim_end_matches('/'))
        else {
            return Err(AdapterError::NoAssetDir {
                adapter: ADAPTER_TYPE,
                why: "Pi keeps its session files there".to_string(),
            });
        };
        let placed = place_assets(ADAPTER_TYPE, self.asset_keys(), &common, ctx)?;
        let prompt = prompt_with_instructions(&ctx.prompt, placed.instructions_file.as_deref());
        let mut inv = base_invocation(&common, ctx, &[], prompt)?;
        if let Some(dir) = placed.remote.get("agentConfig") {
            inv.env.insert("PI_CODING_AGENT_DIR".into(), dir.clone());
        }
        let sessions_dir = format!("{assets}/sessions");
        let session_file = match ctx.resume_id() {
            Some(file) => file.to_string(),
            None => format!("{sessions_dir}/{}.jsonl", ctx.run_id),
        };
        let mut args: Vec<String> = ["--mode", "json", "-p", "--session"]
            .map(String::from)
            .into();
        args.push(session_file.clone());
        if let Some(skills) = placed.remote.get("skills") {
            args.extend(["--skill".into(), skills.clone()]);
        }
        if let Some(p) = provider {
            args.extend(["--provider".into(), p]);
        }
        if let Some(model) = &common.model {
            args.extend(["--model".into(), model.clone()]);
        }
        args.extend(common.extra_args.iter().cloned());
        inv.args = args;
        inv.assets = placed.specs;
        inv.session_id = Some(session_file);
        inv.ensure_dirs.push(sessions_dir);
        note_unsupported(
            &mut inv,
            ADAPTER_TYPE,
            "maxTurnsPerRun",
            common.max_turns_per_run.is_some(),
        );
        Ok(inv)
    }

    fn parser(&self, invocation: &Invocation) -> Box<dyn OutputParser> {
        Box::new(PiParser {
            session_file: invocation.session_id.clone(),
            ..PiParser::default()
        })
    }
}

/// Checks the first line of a Pi session file before resuming it: it must be a session header
/// whose `cwd` is the current working directory (a path on the environment).
pub fn check_session_header(header_line: &str, cwd: &str) -> Result<(), ResumeRefused> {
    let refuse = |why: String| {
        Err(ResumeRefused {
            reason: format!("{why}; starting a fresh Pi session file"),
        })
    };
    let Some(v) = object_line(header_line) else {
        return refuse("the Pi session file has no readable header".to_string());
    };
    if type_of(&v) != "session" {
        return refuse("the Pi session file does not start with a session header".to_string());
    }
    match str_at(&v, &["cwd"]) {
        Some(c) if c.trim_end_matches('/') == cwd.trim_end_matches('/') => Ok(()),
        Some(c) => refuse(format!(
            "the Pi session ran in {c} but this run is in {cwd}"
        )),
        None => refuse("the Pi session header has no cwd".to_string()),
    }
}

/// Parser state for one Pi attempt.
#[derive(Debug, Default)]
pub struct PiParser {
    session_file: Option<String>,
    session_id: Option<String>,
    terminal: bool,
    unknown_session: bool,
    last_text: Option<String>,
    last_stop: Option<String>,
    last_error: Option<String>,
    cost_usd: f64,
    saw_cost: bool,
}

impl PiParser {
    fn parse_json(&mut self, v: &Value) -> Vec<Event> {
        let mut out = Vec::new();
        match type_of(v) {
            "session" => {
                let id = self
                    .session_file
                    .clone()
                    .or_else(|| str_at(v, &["id"]).map(str::to_string));
                if let Some(id) = id {
                    self.session_id = Some(id.clone());
                    out.push(Event::Init { session_id: id });
                }
            }
            "message_end" => {
                let Some(msg) = v.get("message") else {
                    return out;
                };
                if str_at(msg, &["role"]) != Some("assistant") {
                    return out;
                }
                let text = text_of(msg.get("content").unwrap_or(&Value::Null));
                if !text.is_empty() {
                    self.last_text = Some(text.clone());
                    out.push(Event::Message {
                        role: Role::Assistant,
                        text,
                    });
                }
                if let Some(u) = msg.get("usage") {
                    out.push(Event::Usage {
                        input_tokens: u64_at(u, &["input"]).unwrap_or(0),
                        output_tokens: u64_at(u, &["output"]).unwrap_or(0),
                        cached_input_tokens: u64_at(u, &["cacheRead"]),
                    });
                    if let Some(c) = f64_at(u, &["cost", "total"]) {
                        self.cost_usd += c;
                        self.saw_cost = true;
                    }
                }
                self.last_stop = str_at(msg, &["stopReason"]).map(str::to_string);
                if let Some(e) = str_at(msg, &["errorMessage"]) {
                    self.last_error = Some(e.to_string());
                    out.push(Event::Error {
                        message: e.to_string(),
                    });
                }
            }
            "tool_execution_start" => out.push(Event::ToolUse {
                name: str_at(v, &["toolName"]).unwrap_or("").to_string(),
                input: v.get("args").cloned().unwrap_or(Value::Null),
            }),
            "tool_execution_end" => {
                let result = v.get("result").unwrap_or(&Value::Null);
                out.push(Event::ToolResult {
                    ok: !bool_at(v, &["isError"]).unwrap_or(false),
                    output: render(result.get("content").unwrap_or(result)),
                });
            }
            "agent_end" if !bool_at(v, &["willRetry"]).unwrap_or(false) => {
                self.terminal = true;
                let ok = !matches!(self.last_stop.as_deref(), Some("error" | "aborted"));
                let summary = if ok {
                    self.last_text.clone().unwrap_or_default()
                } else {
                    self.last_error
                        .clone()
                        .unwrap_or_else(|| "pi run failed".to_string())
                };
                out.push(Event::Result {
                    ok,
                    summary,
                    cost_usd: self.saw_cost.then_some(round_usd(self.cost_usd)),
                });
            }
            _ => {}
        }
        out
    }

    fn note_unknown(&mut self, text: &str) {
        if UNKNOWN_SESSION_MARKERS.iter().any(|m| mentions(text, m)) {
            self.unknown_session = true;
        }
    }
}

impl OutputParser for PiParser {
    fn parse_line(&mut self, stream: Stream, line: &str) -> Vec<Event> {
        match (stream, object_line(line)) {
            (Stream::Stdout, Some(v)) => self.parse_json(&v),
            _ if line.trim().is_empty() => Vec::new(),
            _ => {
                self.note_unknown(line);
                vec![Event::Output {
                    stream,
                    line: line.to_string(),
                }]
            }
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
}
