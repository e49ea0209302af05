//! `opencode_local`: OpenCode's `run` command with JSON events.
//!
//! Command: `opencode run --format json [--session <id>] [--model provider/model] [--agent a]
//! <extraArgs>`, prompt on stdin. Asset `xdgConfig` becomes `XDG_CONFIG_HOME` (the generated
//! runtime config); the instructions file is referenced from the prompt, as Paperclip does.
//!
//! Documented (opencode.ai CLI reference): `run`, `--session`/`-s`, `--continue`, `--model`/`-m`
//! (`provider/model`), `--agent`, `--format json`. The event shapes come from public parsers of
//! `run --format json` (not from OpenCode's own docs): every line has `type`, `timestamp`,
//! `sessionID`; types `step_start`, `text` (`part.text`), `tool_use` (`part.tool`,
//! `part.state.{status,input,output,error}`), `step_finish` (`part.reason`, `part.cost`,
//! `part.tokens.{input,output,cache.read}`), `error` (`error.name`, `error.data.message`).
//! Inferred: OpenCode has no init or final-result event, so the first `sessionID` seen is the
//! `Init` and a `step_finish` whose reason is not `tool-calls` is the terminal `Result`. From
//! user reports: an unknown `--session` prints `NotFoundError … Session not found: <id>` on
//! stderr and may exit 0 with no stdout at all. Verified against the real 1.18.33
//! (`tools/record-real.sh`): stdin as the message, the event shapes above, and an unknown
//! session printing `Error: Session not found` and exiting 1.

use serde_json::Value;

use crate::config::{
    CommonConfig, base_invocation, note_unsupported, object, place_assets,
    prompt_with_instructions, str_opt,
};
use crate::event::{Event, Role, Stream};
use crate::json::{f64_at, mentions, object_line, render, round_usd, str_at, type_of, u64_at};
use crate::session::ResumeCheck;
use crate::{Adapter, AdapterError, BuildContext, Invocation, OutputParser};

pub const ADAPTER_TYPE: &str = "opencode_local";

/// What OpenCode says when `--session` names a session it does not have.
pub const UNKNOWN_SESSION_MARKER: &str = "Session not found";

#[derive(Debug, Clone, Copy, Default)]
pub struct OpencodeAdapter;

impl Adapter for OpencodeAdapter {
    fn adapter_type(&self) -> &'static str {
        ADAPTER_TYPE
    }

    fn asset_keys(&self) -> &'static [&'static str] {
        &["xdgConfig"]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Invocation, AdapterError> {
        let common = CommonConfig::parse(ADAPTER_TYPE, &ctx.adapter_config)?;
        let obj = object(&ctx.adapter_config)?;
        let agent = str_opt(obj, "agent")?;
        let placed = place_assets(ADAPTER_TYPE, self.asset_keys(), &common, ctx)?;
        let prompt = prompt_with_instructions(&ctx.prompt, placed.instructions_file.as_deref());
        let mut inv = base_invocation(&common, ctx, &[], prompt)?;
        if let Some(xdg) = placed.remote.get("xdgConfig") {
            inv.env.insert("XDG_CONFIG_HOME".into(), xdg.clone());
        }
        let mut args: Vec<String> = ["run", "--format", "json"].map(String::from).into();
        if let Some(id) = ctx.resume_id() {
            args.extend(["--session".into(), id.to_string()]);
        }
        if let Some(model) = &common.model {
            args.extend(["--model".into(), model.clone()]);
        }
        if let Some(agent) = agent {
            args.extend(["--agent".into(), agent]);
        }
        args.extend(common.extra_args.iter().cloned());
        inv.args = args;
        inv.assets = placed.specs;
        note_unsupported(
            &mut inv,
            ADAPTER_TYPE,
            "maxTurnsPerRun",
            common.max_turns_per_run.is_some(),
        );
        Ok(inv)
    }

    fn parser(&self, invocation: &Invocation) -> Box<dyn OutputParser> {
        Box::new(OpencodeParser {
            resume: ResumeCheck::new(invocation.resume_session_id.clone()),
            ..OpencodeParser::default()
        })
    }
}

/// Parser state for one OpenCode attempt.
#[derive(Debug, Default)]
pub struct OpencodeParser {
    resume: ResumeCheck,
    session_id: Option<String>,
    terminal: bool,
    unknown_session: bool,
    last_text: Option<String>,
    cost_usd: f64,
    saw_cost: bool,
}

impl OpencodeParser {
    fn parse_json(&mut self, v: &Value) -> Vec<Event> {
        let mut out = Vec::new();
        if self.session_id.is_none()
            && let Some(id) = str_at(v, &["sessionID"]).filter(|s| !s.is_empty())
        {
            self.session_id = Some(id.to_string());
            out.push(Event::Init {
                session_id: id.to_string(),
            });
            self.resume.on_init(id, &mut out);
        }
        let part = v.get("part").unwrap_or(&Value::Null);
        match type_of(v) {
            "text" => {
                let text = str_at(part, &["text"]).unwrap_or("").to_string();
                self.last_text = Some(text.clone());
                out.push(Event::Message {
                    role: Role::Assistant,
                    text,
                });
            }
            "tool_use" => {
                let state = part.get("state").unwrap_or(&Value::Null);
                out.push(Event::ToolUse {
                    name: str_at(part, &["tool"]).unwrap_or("").to_string(),
                    input: state.get("input").cloned().unwrap_or(Value::Null),
                });
                match str_at(state, &["status"]) {
                    Some("completed") => out.push(Event::ToolResult {
                        ok: true,
                        output: render(state.get("output").unwrap_or(&Value::Null)),
                    }),
                    Some("error") => out.push(Event::ToolResult {
                        ok: false,
                        output: render(state.get("error").unwrap_or(&Value::Null)),
                    }),
                    _ => {}
                }
            }
            "step_finish" => {
                if let Some(t) = part.get("tokens") {
                    out.push(Event::Usage {
                        input_tokens: u64_at(t, &["input"]).unwrap_or(0),
                        output_tokens: u64_at(t, &["output"]).unwrap_or(0),
                        cached_input_tokens: u64_at(t, &["cache", "read"]),
                    });
                }
                if let Some(c) = f64_at(part, &["cost"]) {
                    self.cost_usd += c;
                    self.saw_cost = true;
                }
                if str_at(part, &["reason"]) != Some("tool-calls") {
                    self.terminal = true;
                    out.push(Event::Result {
                        ok: true,
                        summary: self.last_text.clone().unwrap_or_default(),
                        cost_usd: self.saw_cost.then_some(round_usd(self.cost_usd)),
                    });
                }
            }
            "error" => {
                let message = str_at(v, &["error", "data", "message"])
                    .or(str_at(v, &["error", "message"]))
                    .or(str_at(v, &["error", "name"]))
                    .unwrap_or("opencode error")
                    .to_string();
                self.note_unknown(&message);
                self.terminal = true;
                out.push(Event::Error {
                    message: message.clone(),
                });
                out.push(Event::Result {
                    ok: false,
                    summary: message,
                    cost_usd: self.saw_cost.then_some(round_usd(self.cost_usd)),
                });
            }
            _ => {}
        }
        out
    }

    fn note_unknown(&mut self, text: &str) {
        if mentions(text, UNKNOWN_SESSION_MARKER) {
            self.unknown_session = true;
        }
    }
}

impl OutputParser for OpencodeParser {
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

    fn resume_ignored(&self) -> bool {
        self.resume.ignored
    }
}
