//! `codex_local`: OpenAI Codex CLI, non-interactive `exec` with JSONL events.
//!
//! Command: `codex exec --json [--model m] [--sandbox s] [--dangerously-bypass-approvals-and-sandbox]
//! <extraArgs> -` fresh, `codex exec --json … resume <id> -` resumed; prompt on stdin (`-`).
//! Asset `home` becomes `CODEX_HOME` (auth.json, config.toml, skills). No `--skip-git-repo-check`
//! unless `skipGitRepoCheck` is true: the real 0.171.0 exits 1 with `Not inside a trusted
//! directory and --skip-git-repo-check was not specified.` in a workspace that is not a git
//! repository.
//!
//! Documented (codex `docs/exec.md`): `--json` events `thread.started` (`thread_id`),
//! `turn.started`, `turn.completed` (`usage`: `input_tokens`, `cached_input_tokens`,
//! `output_tokens`), `turn.failed` (`error.message`), `item.started`/`item.updated`/
//! `item.completed` with item types `agent_message`, `reasoning`, `command_execution`,
//! `file_change`, `mcp_tool_call`, `web_search`; `exec resume <SESSION_ID>`; flags go between
//! `exec` and `resume`. Top-level `error` events and `error` items come from third-party
//! parsers of the same stream. Unknown-session wording is from user reports: older releases say
//! `No saved session found with ID <id>`, 0.130 says `… no rollout found for thread id <id>`.
//! Verified against the real 0.171.0 (`tools/record-real.sh`): the argv, stdin, the events and
//! usage above, the `no rollout found` wording (exit 1), and that a non-UUID resume id silently
//! starts a new thread (caught by [`OutputParser::resume_ignored`]).
//! Inferred: Codex has no turn limit flag, so `maxTurnsPerRun` is ignored with a note; the
//! instructions file is referenced from the prompt.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::config::{
    CommonConfig, base_invocation, bool_opt, choice, note_unsupported, object, place_assets,
    prompt_with_instructions,
};
use crate::event::{Event, Role, Stream};
use crate::json::{mentions, object_line, render, str_at, type_of, u64_at};
use crate::session::ResumeCheck;
use crate::{Adapter, AdapterError, BuildContext, Invocation, OutputParser};

pub const ADAPTER_TYPE: &str = "codex_local";

/// Stderr wordings of an unknown `exec resume` id, across Codex releases.
pub const UNKNOWN_SESSION_MARKERS: &[&str] =
    &["No saved session found with ID", "no rollout found"];

const SANDBOX_MODES: &[&str] = &["read-only", "workspace-write", "danger-full-access"];

#[derive(Debug, Clone, Copy, Default)]
pub struct CodexAdapter;

impl Adapter for CodexAdapter {
    fn adapter_type(&self) -> &'static str {
        ADAPTER_TYPE
    }

    fn asset_keys(&self) -> &'static [&'static str] {
        &["home"]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Invocation, AdapterError> {
        let common = CommonConfig::parse(ADAPTER_TYPE, &ctx.adapter_config)?;
        let obj = object(&ctx.adapter_config)?;
        let sandbox = choice(obj, "sandbox", SANDBOX_MODES)?;
        let bypass = bool_opt(obj, "dangerouslyBypassApprovalsAndSandbox")?.unwrap_or(false);
        let skip_git_check = bool_opt(obj, "skipGitRepoCheck")?.unwrap_or(false);
        let mut placed = place_assets(ADAPTER_TYPE, self.asset_keys(), &common, ctx)?;
        // Codex writes its sessions (and history, logs) into CODEX_HOME: a resume needs them
        // to survive the next sync of the home asset.
        for spec in &mut placed.specs {
            spec.merge |= spec.key == "home";
        }
        let prompt = prompt_with_instructions(&ctx.prompt, placed.instructions_file.as_deref());
        let mut inv = base_invocation(&common, ctx, &[], prompt)?;
        if let Some(home) = placed.remote.get("home") {
            inv.env.insert("CODEX_HOME".into(), home.clone());
        }
        let mut args: Vec<String> = vec!["exec".into(), "--json".into()];
        if let Some(model) = &common.model {
            args.extend(["--model".into(), model.clone()]);
        }
        if let Some(s) = sandbox {
            args.extend(["--sandbox".into(), s]);
        }
        if bypass {
            args.push("--dangerously-bypass-approvals-and-sandbox".into());
        }
        // Opt-in only (Paperclip never passes it): Codex refuses to run outside a git
        // repository without it.
        if skip_git_check {
            args.push("--skip-git-repo-check".into());
        }
        args.extend(common.extra_args.iter().cloned());
        if let Some(id) = ctx.resume_id() {
            args.extend(["resume".into(), id.to_string()]);
        }
        args.push("-".into());
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
        Box::new(CodexParser {
            resume: ResumeCheck::new(invocation.resume_session_id.clone()),
            ..CodexParser::default()
        })
    }
}

/// Parser state for one Codex attempt.
#[derive(Debug, Default)]
pub struct CodexParser {
    resume: ResumeCheck,
    session_id: Option<String>,
    terminal: bool,
    unknown_session: bool,
    last_message: Option<String>,
    started_tools: HashSet<String>,
}

fn tool_use(item: &Value) -> Option<Event> {
    let (name, input) = match type_of(item) {
        "command_execution" => ("shell".to_string(), json!({"command": item.get("command")})),
        "file_change" => (
            "file_change".to_string(),
            json!({"changes": item.get("changes")}),
        ),
        "mcp_tool_call" => (
            format!(
                "mcp:{}/{}",
                str_at(item, &["server"]).unwrap_or(""),
                str_at(item, &["tool"]).unwrap_or("")
            ),
            item.get("arguments").cloned().unwrap_or(Value::Null),
        ),
        "web_search" => (
            "web_search".to_string(),
            json!({"query": item.get("query")}),
        ),
        _ => return None,
    };
    Some(Event::ToolUse { name, input })
}

fn tool_result(item: &Value) -> Option<Event> {
    let status = str_at(item, &["status"]).unwrap_or("completed");
    let (ok, output) = match type_of(item) {
        "command_execution" => (
            status == "completed" && u64_at(item, &["exit_code"]).unwrap_or(0) == 0,
            render(item.get("aggregated_output").unwrap_or(&Value::Null)),
        ),
        "file_change" => (
            status == "completed",
            render(item.get("changes").unwrap_or(&Value::Null)),
        ),
        "mcp_tool_call" => (
            status == "completed",
            item.get("error")
                .and_then(|e| e.get("message"))
                .or_else(|| item.get("result"))
                .map(render)
                .unwrap_or_default(),
        ),
        "web_search" => (true, String::new()),
        _ => return None,
    };
    Some(Event::ToolResult { ok, output })
}

impl CodexParser {
    fn parse_json(&mut self, v: &Value) -> Vec<Event> {
        let mut out = Vec::new();
        match type_of(v) {
            "thread.started" => {
                if let Some(id) = str_at(v, &["thread_id"]) {
                    self.session_id = Some(id.to_string());
                    out.push(Event::Init {
                        session_id: id.to_string(),
                    });
                    self.resume.on_init(id, &mut out);
                }
            }
            "item.started" => {
                if let Some(item) = v.get("item")
                    && let Some(e) = tool_use(item)
                {
                    self.started_tools
                        .insert(str_at(item, &["id"]).unwrap_or("").to_string());
                    out.push(e);
                }
            }
            "item.completed" => {
                let Some(item) = v.get("item") else {
                    return out;
                };
                match type_of(item) {
                    "agent_message" => {
                        let text = str_at(item, &["text"]).unwrap_or("").to_string();
                        self.last_message = Some(text.clone());
                        out.push(Event::Message {
                            role: Role::Assistant,
                            text,
                        });
                    }
                    "error" => out.push(Event::Error {
                        message: str_at(item, &["message"]).unwrap_or("").to_string(),
                    }),
                    _ => {
                        let id = str_at(item, &["id"]).unwrap_or("");
                        if !self.started_tools.remove(id)
                            && let Some(e) = tool_use(item)
                        {
                            out.push(e);
                        }
                        out.extend(tool_result(item));
                    }
                }
            }
            "turn.completed" => {
                self.terminal = true;
                if let Some(u) = v.get("usage") {
                    out.push(Event::Usage {
                        input_tokens: u64_at(u, &["input_tokens"]).unwrap_or(0),
                        output_tokens: u64_at(u, &["output_tokens"]).unwrap_or(0),
                        cached_input_tokens: u64_at(u, &["cached_input_tokens"]),
                    });
                }
                out.push(Event::Result {
                    ok: true,
                    summary: self.last_message.clone().unwrap_or_default(),
                    cost_usd: None,
                });
            }
            "turn.failed" => {
                self.terminal = true;
                let message = str_at(v, &["error", "message"])
                    .unwrap_or("turn failed")
                    .to_string();
                self.note_unknown(&message);
                out.push(Event::Error {
                    message: message.clone(),
                });
                out.push(Event::Result {
                    ok: false,
                    summary: message,
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

impl OutputParser for CodexParser {
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
