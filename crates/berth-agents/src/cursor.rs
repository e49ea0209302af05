//! `cursor`: the Cursor Agent CLI (`agent`) in print mode with `stream-json` output.
//!
//! Command: `agent -p --output-format stream-json --workspace <cwd> [--resume <id>] [--model m]
//! [--force] <extraArgs>`, prompt on stdin (print mode also reads piped stdin).
//!
//! Documented (cursor.com CLI output-format reference): `--print`/`-p`, `--output-format
//! stream-json`, the terminal `result` object (`subtype`, `is_error`, `result`, `session_id`,
//! `duration_ms`); `system`/`init`, `user`, `assistant` and `tool_call` (`started`/`completed`,
//! tool keyed as `<name>ToolCall` with `args` and `result`) events. `--resume`, `--workspace`,
//! `--model`, `--force` from the CLI reference and Paperclip's adapter. Cursor reports no token
//! usage (a `usage` object is read if present). Inferred: the unknown-session wording (Cursor is
//! closed source and we found no report of it); Berth matches the phrases below, which the fake
//! `agent` uses.

use serde_json::Value;

use crate::config::{
    CommonConfig, base_invocation, bool_opt, note_unsupported, object, place_assets,
    prompt_with_instructions,
};
use crate::event::{Event, Role, Stream};
use crate::json::{at, bool_at, mentions, object_line, render, str_at, text_of, type_of, u64_at};
use crate::session::ResumeCheck;
use crate::{Adapter, AdapterError, BuildContext, Invocation, OutputParser};

pub const ADAPTER_TYPE: &str = "cursor";

/// Phrases (case-insensitive) taken to mean "the session to resume does not exist". Inferred.
pub const UNKNOWN_SESSION_MARKERS: &[&str] = &["session not found", "chat not found"];

#[derive(Debug, Clone, Copy, Default)]
pub struct CursorAdapter;

impl Adapter for CursorAdapter {
    fn adapter_type(&self) -> &'static str {
        ADAPTER_TYPE
    }

    fn asset_keys(&self) -> &'static [&'static str] {
        // Cursor reads skills only from `$HOME/.cursor/skills`; Berth never writes into the
        // user's remote $HOME (SPEC §8), so it ships no skills asset for Cursor.
        &[]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Invocation, AdapterError> {
        let common = CommonConfig::parse(ADAPTER_TYPE, &ctx.adapter_config)?;
        let obj = object(&ctx.adapter_config)?;
        let force = bool_opt(obj, "force")?.unwrap_or(false);
        let placed = place_assets(ADAPTER_TYPE, self.asset_keys(), &common, ctx)?;
        let prompt = prompt_with_instructions(&ctx.prompt, placed.instructions_file.as_deref());
        let mut inv = base_invocation(&common, ctx, &[], prompt)?;
        let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--workspace"]
            .map(String::from)
            .into();
        args.push(ctx.cwd_on_environment.clone());
        if let Some(id) = ctx.resume_id() {
            args.extend(["--resume".into(), id.to_string()]);
        }
        if let Some(model) = &common.model {
            args.extend(["--model".into(), model.clone()]);
        }
        if force {
            args.push("--force".into());
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
        Box::new(CursorParser {
            resume: ResumeCheck::new(invocation.resume_session_id.clone()),
            ..CursorParser::default()
        })
    }
}

/// Parser state for one Cursor attempt.
#[derive(Debug, Default)]
pub struct CursorParser {
    resume: ResumeCheck,
    session_id: Option<String>,
    terminal: bool,
    unknown_session: bool,
}

/// `{"readToolCall":{"args":…,"result":…}}` → ("read", that inner object); `{"function":
/// {"name":…,"arguments":…}}` → (name, inner).
fn tool_of(call: &Value) -> Option<(String, &Value)> {
    let (key, inner) = call.as_object()?.iter().next()?;
    let name = match key.strip_suffix("ToolCall") {
        Some(n) => n.to_string(),
        None => str_at(inner, &["name"]).unwrap_or(key).to_string(),
    };
    Some((name, inner))
}

impl CursorParser {
    fn set_session(&mut self, v: &Value, out: &mut Vec<Event>) {
        if self.session_id.is_none()
            && let Some(id) = str_at(v, &["session_id"]).filter(|s| !s.is_empty())
        {
            self.session_id = Some(id.to_string());
            out.push(Event::Init {
                session_id: id.to_string(),
            });
            self.resume.on_init(id, out);
        }
    }

    fn parse_json(&mut self, v: &Value) -> Vec<Event> {
        let mut out = Vec::new();
        match type_of(v) {
            "system" => self.set_session(v, &mut out),
            "user" | "assistant" => {
                let role = if type_of(v) == "user" {
                    Role::User
                } else {
                    Role::Assistant
                };
                let text = text_of(v.pointer("/message/content").unwrap_or(&Value::Null));
                if !text.is_empty() {
                    out.push(Event::Message { role, text });
                }
            }
            "tool_call" => {
                let Some((name, inner)) = v.get("tool_call").and_then(tool_of) else {
                    return out;
                };
                match str_at(v, &["subtype"]) {
                    Some("started") => out.push(Event::ToolUse {
                        name,
                        input: inner
                            .get("args")
                            .or(inner.get("arguments"))
                            .cloned()
                            .unwrap_or(Value::Null),
                    }),
                    Some("completed") => {
                        let result = inner.get("result").unwrap_or(&Value::Null);
                        let (ok, body) = match result.get("success") {
                            Some(s) => (true, s.get("content").unwrap_or(s)),
                            None => (
                                false,
                                at(result, &["error", "errorMessage"])
                                    .or(at(result, &["error", "message"]))
                                    .unwrap_or(result),
                            ),
                        };
                        out.push(Event::ToolResult {
                            ok,
                            output: render(body),
                        });
                    }
                    _ => {}
                }
            }
            "result" => {
                self.terminal = true;
                self.set_session(v, &mut out);
                if let Some(u) = v.get("usage") {
                    out.push(Event::Usage {
                        input_tokens: u64_at(u, &["input_tokens"]).unwrap_or(0),
                        output_tokens: u64_at(u, &["output_tokens"]).unwrap_or(0),
                        cached_input_tokens: u64_at(u, &["cached_input_tokens"]),
                    });
                }
                let ok = str_at(v, &["subtype"]) == Some("success")
                    && !bool_at(v, &["is_error"]).unwrap_or(false);
                let summary = str_at(v, &["result"]).unwrap_or("").to_string();
                if !ok {
                    out.push(Event::Error {
                        message: format!("cursor result: {summary}"),
                    });
                }
                out.push(Event::Result {
                    ok,
                    summary,
                    cost_usd: None,
                });
            }
            "error" => {
                let message = str_at(v, &["message"]).unwrap_or("").to_string();
                self.note_unknown(&message);
                out.push(Event::Error { message });
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

impl OutputParser for CursorParser {
    fn parse_line(&mut self, stream: Stream, line: &str) -> Vec<Event> {
        match (stream, object_line(line)) {
            (Stream::Stdout, Some(v)) => self.parse_json(&v),
            _ if line.trim().is_empty() => Vec::new(),
            _ => {
                self.note_unknown(line);
                let mut out = vec![Event::Output {
                    stream,
                    line: line.to_string(),
                }];
                // Cursor reports failures as `Error: …` on stderr, without a result object.
                if let (Stream::Stderr, Some(message)) = (stream, line.strip_prefix("Error: ")) {
                    out.push(Event::Error {
                        message: message.to_string(),
                    });
                }
                out
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
