//! `gemini_local`: Gemini CLI headless with `stream-json` output.
//!
//! Command: `gemini --output-format stream-json -m <model> [--resume <id>]
//! [--approval-mode m | --yolo] <extraArgs>`, prompt on stdin (headless because stdin is not a
//! TTY); env `GEMINI_CLI_TRUST_WORKSPACE=true`, `NO_BROWSER=1`.
//!
//! Documented (geminicli.com headless reference): headless when not on a TTY or with `-p`;
//! stdin is read as input; `--output-format stream-json` events `init` (session id, model),
//! `message` (user/assistant chunks), `tool_use`, `tool_result`, `error` (non-fatal warnings and
//! errors), `result` (final outcome with aggregated `stats`); exit codes 0/1/42/53. Field names
//! (`session_id`, `role`, `content`, `delta`, `tool_name`, `tool_id`, `parameters`, `status`,
//! `output`, `stats.input_tokens`/`output_tokens`/`cached`) are those of the CLI's own stream
//! formatter as mirrored by public wrappers. Unknown session (from gemini-cli issues, and seen on
//! 0.61.0): `Error resuming session: Invalid session identifier "<id>".`, or `Error resuming
//! session: No previous sessions found for this project.` when the project has none. Observed on 0.61: headless runs
//! need `GEMINI_CLI_TRUST_WORKSPACE=true` and an explicit `-m`, so `model` is required here.
//! Verified against the real 0.61.0 (`tools/record-real.sh`): the prompt on stdin alone runs
//! headless, the field names above, and an unknown id exits 42 with the wording above.

use serde_json::Value;

use crate::config::{
    CommonConfig, base_invocation, bool_opt, choice, note_unsupported, object, place_assets,
    prompt_with_instructions,
};
use crate::event::{Event, Role, Stream};
use crate::json::{mentions, object_line, render, str_at, type_of, u64_at};
use crate::session::ResumeCheck;
use crate::{Adapter, AdapterError, BuildContext, Invocation, OutputParser};

pub const ADAPTER_TYPE: &str = "gemini_local";

/// What Gemini CLI says when `--resume` names a session it does not have: an id it cannot find
/// among the project's sessions, or (0.61) a project that has no sessions at all.
pub const UNKNOWN_SESSION_MARKERS: &[&str] =
    &["Invalid session identifier", "No previous sessions found"];

const APPROVAL_MODES: &[&str] = &["default", "auto_edit", "yolo", "plan"];

#[derive(Debug, Clone, Copy, Default)]
pub struct GeminiAdapter;

impl Adapter for GeminiAdapter {
    fn adapter_type(&self) -> &'static str {
        ADAPTER_TYPE
    }

    fn asset_keys(&self) -> &'static [&'static str] {
        // Gemini reads skills from `$HOME/.gemini/skills` only; Berth does not overwrite the
        // user's remote $HOME (SPEC §8), unlike Paperclip.
        &[]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Invocation, AdapterError> {
        let common = CommonConfig::parse(ADAPTER_TYPE, &ctx.adapter_config)?;
        let obj = object(&ctx.adapter_config)?;
        let model = common.model.clone().ok_or(AdapterError::MissingConfig {
            adapter: ADAPTER_TYPE,
            key: "model",
        })?;
        let approval = choice(obj, "approvalMode", APPROVAL_MODES)?;
        let yolo = bool_opt(obj, "yolo")?.unwrap_or(false);
        let placed = place_assets(ADAPTER_TYPE, self.asset_keys(), &common, ctx)?;
        let prompt = prompt_with_instructions(&ctx.prompt, placed.instructions_file.as_deref());
        let mut inv = base_invocation(
            &common,
            ctx,
            &[("GEMINI_CLI_TRUST_WORKSPACE", "true"), ("NO_BROWSER", "1")],
            prompt,
        )?;
        let mut args: Vec<String> = vec![
            "--output-format".into(),
            "stream-json".into(),
            "-m".into(),
            model,
        ];
        if let Some(id) = ctx.resume_id() {
            args.extend(["--resume".into(), id.to_string()]);
        }
        match (approval, yolo) {
            (Some(mode), _) => args.extend(["--approval-mode".into(), mode]),
            (None, true) => args.push("--yolo".into()),
            (None, false) => {}
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
        Box::new(GeminiParser {
            resume: ResumeCheck::new(invocation.resume_session_id.clone()),
            ..GeminiParser::default()
        })
    }
}

/// Parser state for one Gemini attempt. Assistant deltas are joined into one `Message`,
/// emitted when the next non-delta event arrives.
#[derive(Debug, Default)]
pub struct GeminiParser {
    resume: ResumeCheck,
    session_id: Option<String>,
    terminal: bool,
    unknown_session: bool,
    pending: String,
    last_message: Option<String>,
}

impl GeminiParser {
    fn flush(&mut self, out: &mut Vec<Event>) {
        if !self.pending.is_empty() {
            let text = std::mem::take(&mut self.pending);
            self.last_message = Some(text.clone());
            out.push(Event::Message {
                role: Role::Assistant,
                text,
            });
        }
    }

    fn parse_json(&mut self, v: &Value) -> Vec<Event> {
        let mut out = Vec::new();
        let kind = type_of(v);
        let is_delta = kind == "message"
            && str_at(v, &["role"]) == Some("assistant")
            && v.get("delta").and_then(Value::as_bool).unwrap_or(false);
        if !is_delta {
            self.flush(&mut out);
        }
        match kind {
            "init" => {
                if let Some(id) = str_at(v, &["session_id"]) {
                    self.session_id = Some(id.to_string());
                    out.push(Event::Init {
                        session_id: id.to_string(),
                    });
                    self.resume.on_init(id, &mut out);
                }
            }
            "message" => {
                let text = render(v.get("content").unwrap_or(&Value::Null));
                match (str_at(v, &["role"]), is_delta) {
                    (Some("assistant"), true) => self.pending.push_str(&text),
                    (Some("assistant"), false) => {
                        self.last_message = Some(text.clone());
                        out.push(Event::Message {
                            role: Role::Assistant,
                            text,
                        });
                    }
                    _ => out.push(Event::Message {
                        role: Role::User,
                        text,
                    }),
                }
            }
            "tool_use" => out.push(Event::ToolUse {
                name: str_at(v, &["tool_name"]).unwrap_or("").to_string(),
                input: v.get("parameters").cloned().unwrap_or(Value::Null),
            }),
            "tool_result" => {
                let ok = str_at(v, &["status"]) == Some("success");
                let output = match v.get("output") {
                    Some(o) if !o.is_null() => render(o),
                    _ => str_at(v, &["error", "message"]).unwrap_or("").to_string(),
                };
                out.push(Event::ToolResult { ok, output });
            }
            "error" => {
                let message = str_at(v, &["message"]).unwrap_or("").to_string();
                self.note_unknown(&message);
                out.push(Event::Error { message });
            }
            "result" => {
                self.terminal = true;
                if let Some(s) = v.get("stats") {
                    out.push(Event::Usage {
                        input_tokens: u64_at(s, &["input_tokens"]).unwrap_or(0),
                        output_tokens: u64_at(s, &["output_tokens"]).unwrap_or(0),
                        cached_input_tokens: u64_at(s, &["cached"]),
                    });
                }
                let ok = str_at(v, &["status"]) == Some("success");
                let summary = if ok {
                    self.last_message.clone().unwrap_or_default()
                } else {
                    let m = str_at(v, &["error", "message"]).unwrap_or("gemini run failed");
                    out.push(Event::Error {
                        message: m.to_string(),
                    });
                    m.to_string()
                };
                out.push(Event::Result {
                    ok,
                    summary,
                    cost_usd: None,
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

impl OutputParser for GeminiParser {
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
