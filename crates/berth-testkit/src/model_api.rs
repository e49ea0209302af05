//! A scripted model API on `127.0.0.1:<random port>` for running the REAL agent CLIs offline.
//!
//! Not a model: it answers each request from a script, speaking just enough of four wire
//! protocols for the CLIs to complete a turn:
//!
//! | path | protocol | used by |
//! |---|---|---|
//! | `POST /v1/messages` | Anthropic Messages, streamed (SSE) | Claude Code |
//! | `POST /v1beta/models/<m>:streamGenerateContent` (and `:generateContent`) | Gemini API | Gemini CLI |
//! | `POST /v1/chat/completions` | OpenAI Chat Completions, streamed | OpenCode, Pi |
//! | `POST /v1/responses` | OpenAI Responses, streamed | Codex |
//!
//! Every request is recorded ([`ModelApi::requests`]) so a test can assert what the CLI sent,
//! e.g. that a resumed session carried the earlier turns.
//!
//! **Turns** are the requests that offer tools (the CLI's agent loop); side requests (token
//! counts, titles, Gemini's next-speaker checks) get a fixed answer and never consume the script.
//! Each turn takes the next [`Reply`] queued with [`ModelApi::push`], or [`Reply::Auto`] when the
//! queue is empty. `Auto` follows the fake CLIs' prompt convention: when the latest user prompt
//! has a line `write <file> <content>` and no tool result has come back since, the reply is one
//! tool call writing that file (Claude `Write` with an absolute path, Gemini `write_file`, Codex
//! `exec_command`/`shell` running `printf`, OpenCode/Pi `write`); once the tool result is in, the
//! reply is the text `Wrote <file>.`; otherwise `Hello.`. Usage is fixed: [`INPUT_TOKENS`] in,
//! [`OUTPUT_TOKENS`] out, [`CACHED_TOKENS`] cached.
//!
//! Ported from `berth-agents/tools/mock_model_api.py`, which recorded the real transcripts.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Input tokens reported for every reply.
pub const INPUT_TOKENS: u64 = 50;
/// Output tokens reported for every reply.
pub const OUTPUT_TOKENS: u64 = 5;
/// Cached input tokens reported for every reply.
pub const CACHED_TOKENS: u64 = 20;

/// What the next turn answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Follow the prompt (`write <file> <content>`; see the module docs).
    Auto,
    /// A plain assistant text.
    Text(String),
    /// One tool call that writes `content` into `path` (relative to the CLI's working
    /// directory; Claude gets it made absolute). Queue a [`Reply::Text`] (or let `Auto`
    /// answer) for the turn after the tool result.
    WriteFile { path: String, content: String },
    /// An HTTP error in the protocol's own error shape. Use a 4xx status to avoid the CLIs'
    /// retries (they retry 429 and 5xx with backoff).
    Error { status: u16, message: String },
    /// `text` streamed in `chunks` pieces, `delay` before each.
    Slow {
        text: String,
        chunks: usize,
        delay: Duration,
    },
}

/// Which protocol a request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Anthropic,
    Gemini,
    OpenAiChat,
    OpenAiResponses,
    /// Anything else (model lists, `HEAD /`, …).
    Other,
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Request {
    pub api: Api,
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The JSON body (`null` when there was none or it was not JSON).
    pub body: Value,
    /// Whether it was an agent turn (offered tools) rather than a side request.
    pub turn: bool,
}

impl Request {
    /// The user prompts of the conversation, oldest first (text only; tool results excluded).
    pub fn user_prompts(&self) -> Vec<String> {
        conversation(self.api, &self.body)
            .into_iter()
            .filter_map(|m| match m {
                Msg::User(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// Whether any user prompt of the conversation contains `needle`.
    pub fn has_prompt_containing(&self, needle: &str) -> bool {
        self.user_prompts().iter().any(|p| p.contains(needle))
    }

    /// The conversation as the mock reads it, one short line per message (failure messages).
    pub fn summary(&self) -> String {
        conversation(self.api, &self.body)
            .iter()
            .map(|m| match m {
                Msg::User(t) => format!("user: {}", t.chars().take(120).collect::<String>()),
                Msg::ToolResult => "tool result".to_string(),
                Msg::Assistant => "assistant".to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The whole body as JSON text (for `contains` checks and failure messages).
    pub fn body_text(&self) -> String {
        self.body.to_string()
    }
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Request>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running mock model API; stops on `Drop`.
pub struct ModelApi {
    /// `http://127.0.0.1:<port>` (no trailing slash). OpenAI clients want `{base_url}/v1`.
    pub base_url: String,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for ModelApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelApi")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ModelApi {
    /// Start on a random loopback port (inside a Tokio runtime).
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("failed to bind the mock model API on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let app = Router::new().fallback({
            let state = state.clone();
            move |method: Method, uri: Uri, body: Bytes| {
                let state = state.clone();
                async move { handle(&state, method, uri, body) }
            }
        });
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            base_url: format!("http://{addr}"),
            state,
            shutdown: Some(tx),
        })
    }

    /// Queue the reply for the next turn not yet scripted.
    pub fn push(&self, reply: Reply) {
        lock(&self.state.script).push_back(reply);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state.requests).clone()
    }

    /// The agent turns so far (requests that offered tools).
    pub fn turns(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.turn).collect()
    }

    /// Forget the recorded requests (the script is kept).
    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }
}

impl Drop for ModelApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A conversation message, normalized across protocols.
#[derive(Debug, Clone, PartialEq)]
enum Msg {
    /// A user prompt (text).
    User(String),
    /// A tool result coming back.
    ToolResult,
    /// Anything the assistant said.
    Assistant,
}

fn texts(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn conversation(api: Api, body: &Value) -> Vec<Msg> {
    let mut out = Vec::new();
    match api {
        Api::Anthropic => {
            for m in array(body, "messages") {
                let content = m.get("content").unwrap_or(&Value::Null);
                match m.get("role").and_then(Value::as_str) {
                    Some("user") => {}
                    Some("assistant") => {
                        out.push(Msg::Assistant);
                        continue;
                    }
                    // Claude Code 2.1 also sends `system` reminders among the messages.
                    _ => continue,
                }
                let Some(parts) = content.as_array() else {
                    out.push(Msg::User(texts(content)));
                    continue;
                };
                // Claude Code puts a new prompt into the same user message as the previous
                // turn's tool results when it resumes a session: keep their order.
                let mut text: Vec<&str> = Vec::new();
                for p in parts {
                    match p.get("type").and_then(Value::as_str) {
                        Some("tool_result") => {
                            if !text.is_empty() {
                                out.push(Msg::User(text.join("\n")));
                                text.clear();
                            }
                            out.push(Msg::ToolResult);
                        }
                        _ => text.extend(p.get("text").and_then(Value::as_str)),
                    }
                }
                if !text.is_empty() {
                    out.push(Msg::User(text.join("\n")));
                }
            }
        }
        Api::OpenAiChat => {
            for m in array(body, "messages") {
                match m.get("role").and_then(Value::as_str) {
                    Some("user") => {
                        out.push(Msg::User(texts(m.get("content").unwrap_or(&Value::Null))))
                    }
                    Some("tool") => out.push(Msg::ToolResult),
                    Some("assistant") => out.push(Msg::Assistant),
                    _ => {}
                }
            }
        }
        Api::OpenAiResponses => {
            for i in array(body, "input") {
                let kind = i.get("type").and_then(Value::as_str).unwrap_or("message");
                match (kind, i.get("role").and_then(Value::as_str)) {
                    ("function_call_output" | "custom_tool_call_output", _) => {
                        out.push(Msg::ToolResult);
                    }
                    ("message", Some("user")) => {
                        out.push(Msg::User(texts(i.get("content").unwrap_or(&Value::Null))))
                    }
                    ("message", Some("assistant")) | ("function_call" | "custom_tool_call", _) => {
                        out.push(Msg::Assistant);
                    }
                    _ => {}
                }
            }
        }
        Api::Gemini => {
            for c in array(body, "contents") {
                let parts = array(c, "parts");
                if c.get("role").and_then(Value::as_str) == Some("model") {
                    out.push(Msg::Assistant);
                } else if parts.iter().any(|p| p.get("functionResponse").is_some()) {
                    out.push(Msg::ToolResult);
                } else {
                    out.push(Msg::User(texts(&Value::Array(parts.to_vec()))));
                }
            }
        }
        Api::Other => {}
    }
    out
}

/// `(file, content)` from the last line `write <file> <content>` of `prompt`.
fn write_request(prompt: &str) -> Option<(String, String)> {
    prompt.lines().rev().find_map(|l| {
        let rest = l.trim().strip_prefix("write ")?;
        let (file, content) = rest.split_once(' ').unwrap_or((rest, ""));
        (!file.is_empty()).then(|| (file.to_string(), content.trim().to_string()))
    })
}

/// What `Auto` means for this conversation: the latest prompt and whether a tool result came
/// back after it.
fn auto_reply(conv: &[Msg]) -> Reply {
    let Some(last_prompt) = conv.iter().rposition(|m| matches!(m, Msg::User(_))) else {
        return Reply::Text("Hello.".into());
    };
    let Msg::User(prompt) = &conv[last_prompt] else {
        return Reply::Text("Hello.".into());
    };
    let answered = conv[last_prompt..]
        .iter()
        .any(|m| matches!(m, Msg::ToolResult));
    match write_request(prompt) {
        Some((file, _)) if answered => Reply::Text(format!("Wrote {file}.")),
        Some((path, content)) => Reply::WriteFile { path, content },
        None => Reply::Text("Hello.".into()),
    }
}

fn api_of(path: &str) -> Api {
    if path.starts_with("/v1/messages") {
        Api::Anthropic
    } else if path.starts_with("/v1/chat/completions") {
        Api::OpenAiChat
    } else if path.starts_with("/v1/responses") {
        Api::OpenAiResponses
    } else if path.contains("/models/") && path.contains(":") && path.contains("enerateContent") {
        Api::Gemini
    } else {
        Api::Other
    }
}

fn tool_names(api: Api, body: &Value) -> Vec<String> {
    let name = |v: &Value| v.as_str().map(str::to_string);
    match api {
        Api::Anthropic | Api::OpenAiResponses => array(body, "tools")
            .iter()
            .filter_map(|t| name(t.get("name")?))
            .collect(),
        Api::OpenAiChat => array(body, "tools")
            .iter()
            .filter_map(|t| name(t.get("function")?.get("name")?))
            .collect(),
        Api::Gemini => array(body, "tools")
            .iter()
            .flat_map(|t| array(t, "functionDeclarations"))
            .filter_map(|d| name(d.get("name")?))
            .collect(),
        Api::Other => Vec::new(),
    }
}

fn handle(state: &State, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let api = if method == Method::POST {
        api_of(&path)
    } else {
        Api::Other
    };
    let tools = tool_names(api, &body);
    let side = path.contains("count_tokens") || path.contains(":countTokens");
    let streaming = match api {
        Api::Gemini => path.contains(":streamGenerateContent"),
        Api::Other => false,
        _ => body.get("stream").and_then(Value::as_bool).unwrap_or(false),
    };
    let turn = !side && !tools.is_empty() && (streaming || api == Api::Gemini);
    lock(&state.requests).push(Request {
        api,
        method: method.to_string(),
        path: path.clone(),
        body: body.clone(),
        turn,
    });
    if side {
        return json_response(json!({"input_tokens": 10, "totalTokens": 10}));
    }
    if api == Api::Other {
        if method == Method::GET {
            return json_response(
                json!({"object": "list", "data": [{"id": "mock-1", "object": "model"}], "models": []}),
            );
        }
        return StatusCode::NOT_FOUND.into_response();
    }
    let conv = conversation(api, &body);
    let reply = if turn {
        lock(&state.script).pop_front().unwrap_or(Reply::Auto)
    } else {
        Reply::Auto
    };
    let reply = match reply {
        Reply::Auto => match auto_reply(&conv) {
            // Only a turn that offers a file-writing tool can get a tool call.
            Reply::WriteFile { .. } if !turn => Reply::Text("Hello.".into()),
            r => r,
        },
        r => r,
    };
    if let Reply::Error { status, message } = &reply {
        return error_response(api, *status, message);
    }
    match api {
        Api::Anthropic => anthropic(&body, &tools, &reply, streaming),
        Api::OpenAiChat => chat(&tools, &reply),
        Api::OpenAiResponses => responses(&tools, &reply),
        Api::Gemini => gemini(&tools, &reply, streaming, turn),
        Api::Other => StatusCode::NOT_FOUND.into_response(),
    }
}

fn json_response(v: Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(api: Api, status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = match api {
        Api::Anthropic => {
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        }
        Api::Gemini => {
            json!({"error": {"code": status.as_u16(), "message": message, "status": "INVALID_ARGUMENT"}})
        }
        _ => {
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
        }
    };
    let mut r = json_response(body);
    *r.status_mut() = status;
    r
}

/// An SSE body: `(delay before, chunk)` pairs.
fn sse(chunks: Vec<(Duration, String)>) -> Response {
    let stream = futures::stream::iter(chunks).then(|(delay, chunk)| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, Infallible>(Bytes::from(chunk))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The text of a text-like reply as `(delay, piece)` pairs.
fn text_pieces(reply: &Reply) -> Vec<(Duration, String)> {
    match reply {
        Reply::Text(t) => vec![(Duration::ZERO, t.clone())],
        Reply::Slow {
            text,
            chunks,
            delay,
        } => {
            let chars: Vec<char> = text.chars().collect();
            let n = (*chunks).clamp(1, chars.len().max(1));
            let size = chars.len().div_ceil(n).max(1);
            chars
                .chunks(size)
                .map(|c| (*delay, c.iter().collect()))
                .collect()
        }
        _ => vec![(Duration::ZERO, "Hello.".into())],
    }
}

/// A fresh id suffix: Claude Code merges transcript messages that share an id, so every reply
/// (and every tool call) needs its own.
fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn first_tool<'a>(tools: &'a [String], wanted: &[&str]) -> Option<&'a str> {
    wanted
        .iter()
        .find_map(|w| tools.iter().find(|t| t == w))
        .map(String::as_str)
}

// -- Anthropic Messages -------------------------------------------------------------------------

/// Claude Code's system prompt names its working directory (`Working directory: /path`).
fn claude_cwd(body: &Value) -> Option<String> {
    let system = body.get("system")?.to_string();
    let lower = system.to_ascii_lowercase();
    let at = lower.find("working directory: ")? + "working directory: ".len();
    let rest = &system[at..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        .unwrap_or(rest.len());
    Some(rest[..end].to_string()).filter(|s| s.starts_with('/'))
}

fn anthropic(body: &Value, tools: &[String], reply: &Reply, stream: bool) -> Response {
    let usage = json!({"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": CACHED_TOKENS});
    let model = body.get("model").cloned().unwrap_or(json!("mock"));
    let n = next_id();
    let msg = json!({"id": format!("msg_mock_{n}"), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage});
    let write = match reply {
        Reply::WriteFile { path, content } if tools.iter().any(|t| t == "Write") => {
            Some((path, content))
        }
        _ => None,
    };
    if !stream {
        let text = text_pieces(reply)
            .into_iter()
            .map(|(_, t)| t)
            .collect::<String>();
        let mut m = msg;
        m["content"] = json!([{"type": "text", "text": text}]);
        m["stop_reason"] = json!("end_turn");
        return json_response(m);
    }
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = vec![(
        Duration::ZERO,
        ev(
            "message_start",
            json!({"type": "message_start", "message": msg}),
        ),
    )];
    let stop = if let Some((path, content)) = write {
        let abs = if path.starts_with('/') {
            path.clone()
        } else {
            format!(
                "{}/{path}",
                claude_cwd(body).unwrap_or_else(|| "/tmp".into())
            )
        };
        out.push((Duration::ZERO, ev("content_block_start", json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": format!("toolu_mock_{n}"), "name": "Write", "input": {}}}))));
        let input = json!({"file_path": abs, "content": content}).to_string();
        out.push((
            Duration::ZERO,
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": input}}),
            ),
        ));
        "tool_use"
    } else {
        out.push((
            Duration::ZERO,
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
            ),
        ));
        for (delay, piece) in text_pieces(reply) {
            out.push((
                delay,
                ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece}}),
                ),
            ));
        }
        "end_turn"
    };
    out.push((
        Duration::ZERO,
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
    ));
    out.push((Duration::ZERO, ev("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": OUTPUT_TOKENS}}))));
    out.push((
        Duration::ZERO,
        ev("message_stop", json!({"type": "message_stop"})),
    ));
    sse(out)
}

// -- OpenAI Chat Completions --------------------------------------------------------------------

fn chat(tools: &[String], reply: &Reply) -> Response {
    let n = next_id();
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": format!("chatcmpl-mock-{n}"), "object": "chat.completion.chunk", "created": 0,
            "model": "mock-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut out = Vec::new();
    let tool = first_tool(tools, &["write", "write_file", "Write"]);
    match (reply, tool) {
        (Reply::WriteFile { path, content }, Some(tool)) => {
            let args =
                json!({"path": path, "filePath": path, "file_path": path, "content": content})
                    .to_string();
            out.push((Duration::ZERO, chunk(json!({"role": "assistant", "tool_calls": [{"index": 0,
                "id": format!("call_mock_{n}"), "type": "function", "function": {"name": tool, "arguments": ""}}]}),
                Value::Null)));
            out.push((
                Duration::ZERO,
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}),
                    Value::Null,
                ),
            ));
            out.push((Duration::ZERO, chunk(json!({}), json!("tool_calls"))));
        }
        _ => {
            let mut first = true;
            for (delay, piece) in text_pieces(reply) {
                let delta = if first {
                    json!({"role": "assistant", "content": piece})
                } else {
                    json!({"content": piece})
                };
                first = false;
                out.push((delay, chunk(delta, Value::Null)));
            }
            out.push((Duration::ZERO, chunk(json!({}), json!("stop"))));
        }
    }
    let usage = json!({"id": format!("chatcmpl-mock-{n}"), "object": "chat.completion.chunk", "created": 0,
        "model": "mock-1", "choices": [], "usage": {"prompt_tokens": INPUT_TOKENS,
        "completion_tokens": OUTPUT_TOKENS, "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS}}});
    out.push((Duration::ZERO, format!("data: {usage}\n\n")));
    out.push((Duration::ZERO, "data: [DONE]\n\n".into()));
    sse(out)
}

// -- OpenAI Responses ---------------------------------------------------------------------------

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn responses(tools: &[String], reply: &Reply) -> Response {
    let n = next_id();
    let ev = |o: Value| {
        format!(
            "event: {}\ndata: {o}\n\n",
            o["type"].as_str().unwrap_or_default()
        )
    };
    let usage = json!({"input_tokens": INPUT_TOKENS, "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "output_tokens": OUTPUT_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS});
    let mut out = vec![(
        Duration::ZERO,
        ev(json!({"type": "response.created", "response": {"id": format!("resp_mock_{n}")}})),
    )];
    let tool = first_tool(tools, &["exec_command", "shell"]);
    let item = match (reply, tool) {
        (Reply::WriteFile { path, content }, Some(tool)) => {
            let cmd = format!(
                "printf '%s' {} > {}",
                shell_quote(content),
                shell_quote(path)
            );
            let args = if tool == "exec_command" {
                json!({"cmd": cmd})
            } else {
                json!({"command": ["bash", "-lc", cmd]})
            };
            json!({"type": "function_call", "id": format!("fc_mock_{n}"), "call_id": format!("call_mock_{n}"), "name": tool,
                "arguments": args.to_string(), "status": "completed"})
        }
        _ => {
            let pieces = text_pieces(reply);
            let text: String = pieces.iter().map(|(_, t)| t.as_str()).collect();
            out.push((
                Duration::ZERO,
                ev(json!({"type": "response.output_item.added",
                "output_index": 0, "item": {"type": "message", "id": format!("msg_mock_{n}"),
                "role": "assistant", "status": "in_progress", "content": []}})),
            ));
            for (delay, piece) in pieces {
                out.push((
                    delay,
                    ev(
                        json!({"type": "response.output_text.delta", "item_id": format!("msg_mock_{n}"),
                    "output_index": 0, "content_index": 0, "delta": piece}),
                    ),
                ));
            }
            json!({"type": "message", "id": format!("msg_mock_{n}"), "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]})
        }
    };
    out.push((
        Duration::ZERO,
        ev(json!({"type": "response.output_item.done", "output_index": 0, "item": item})),
    ));
    out.push((
        Duration::ZERO,
        ev(json!({"type": "response.completed",
        "response": {"id": "resp_mock", "usage": usage, "output": [item]}})),
    ));
    sse(out)
}

// -- Gemini -------------------------------------------------------------------------------------

fn gemini(tools: &[String], reply: &Reply, stream: bool, turn: bool) -> Response {
    let usage = json!({"promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS,
        "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS, "cachedContentTokenCount": CACHED_TOKENS});
    let resp = |parts: Value| {
        json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP",
            "index": 0}], "usageMetadata": usage, "modelVersion": "mock"})
    };
    let pieces: Vec<(Duration, Value)> = match reply {
        Reply::WriteFile { path, content } if tools.iter().any(|t| t == "write_file") => vec![(
            Duration::ZERO,
            json!([{"functionCall": {"name": "write_file",
                "args": {"file_path": path, "content": content}}}]),
        )],
        // Side requests (next-speaker checks, routing) want a JSON text.
        _ if !turn && !stream => vec![(
            Duration::ZERO,
            json!([{"text": json!({"next_speaker": "user", "reasoning": "done",
                "model_choice": "flash"}).to_string()}]),
        )],
        _ => text_pieces(reply)
            .into_iter()
            .map(|(d, t)| (d, json!([{"text": t}])))
            .collect(),
    };
    if !stream {
        let text: Vec<Value> = pieces
            .into_iter()
            .flat_map(|(_, p)| p.as_array().cloned().unwrap_or_default())
            .collect();
        return json_response(resp(Value::Array(text)));
    }
    sse(pieces
        .into_iter()
        .map(|(d, parts)| (d, format!("data: {}\r\n\r\n", resp(parts))))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn auto_follows_the_latest_prompt_only() {
        let conv = vec![
            Msg::User("write a.txt one".into()),
            Msg::Assistant,
            Msg::ToolResult,
            Msg::Assistant,
            Msg::User("-\nwrite b.txt two words".into()),
        ];
        assert_eq!(
            auto_reply(&conv),
            Reply::WriteFile {
                path: "b.txt".into(),
                content: "two words".into()
            }
        );
        let mut answered = conv.clone();
        answered.extend([Msg::Assistant, Msg::ToolResult]);
        assert_eq!(auto_reply(&answered), Reply::Text("Wrote b.txt.".into()));
        assert_eq!(
            auto_reply(&[Msg::User("hi".into())]),
            Reply::Text("Hello.".into())
        );
    }

    #[test]
    fn conversations_are_read_from_every_protocol() {
        let anthropic = json!({"messages": [
            {"role": "user", "content": [{"type": "text", "text": "write a.txt x"}]},
            {"role": "assistant", "content": [{"type": "tool_use"}]},
            {"role": "user", "content": [{"type": "tool_result", "content": "ok"},
                {"type": "text", "text": "next"}]}]});
        assert_eq!(
            conversation(Api::Anthropic, &anthropic),
            vec![
                Msg::User("write a.txt x".into()),
                Msg::Assistant,
                Msg::ToolResult,
                Msg::User("next".into())
            ]
        );
        let chat = json!({"messages": [{"role": "system", "content": "s"},
            {"role": "user", "content": "p"}, {"role": "tool", "content": "r"}]});
        assert_eq!(
            conversation(Api::OpenAiChat, &chat),
            vec![Msg::User("p".into()), Msg::ToolResult]
        );
        let responses = json!({"input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "p"}]},
            {"type": "function_call", "name": "shell"},
            {"type": "function_call_output", "output": "x"}]});
        assert_eq!(
            conversation(Api::OpenAiResponses, &responses),
            vec![Msg::User("p".into()), Msg::Assistant, Msg::ToolResult]
        );
        let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "p"}]},
            {"role": "model", "parts": [{"functionCall": {}}]},
            {"role": "user", "parts": [{"functionResponse": {}}]}]});
        assert_eq!(
            conversation(Api::Gemini, &gemini),
            vec![Msg::User("p".into()), Msg::Assistant, Msg::ToolResult]
        );
    }

    #[test]
    fn claude_cwd_is_read_from_the_system_prompt() {
        let body =
            json!({"system": [{"type": "text", "text": "x\nWorking directory: /srv/ws\nIs git"}]});
        assert_eq!(claude_cwd(&body).as_deref(), Some("/srv/ws"));
        assert_eq!(claude_cwd(&json!({})), None);
    }

    #[test]
    fn slow_text_is_split_into_delayed_pieces() {
        let pieces = text_pieces(&Reply::Slow {
            text: "abcdef".into(),
            chunks: 3,
            delay: Duration::from_millis(5),
        });
        assert_eq!(
            pieces.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(),
            ["ab", "cd", "ef"]
        );
        assert!(pieces.iter().all(|p| p.0 == Duration::from_millis(5)));
    }

    async fn post(api: &ModelApi, path: &str, body: Value) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", api.base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn scripted_replies_are_served_in_order_and_requests_recorded() {
        let api = ModelApi::start().await.unwrap();
        api.push(Reply::Error {
            status: 400,
            message: "scripted failure".into(),
        });
        api.push(Reply::Slow {
            text: "slowly".into(),
            chunks: 3,
            delay: Duration::from_millis(150),
        });
        let body = json!({"stream": true, "tools": [{"type": "function",
            "function": {"name": "write"}}], "messages": [{"role": "user", "content": "write f.txt hi"}]});
        let (status, text) = post(&api, "/v1/chat/completions", body.clone()).await;
        assert_eq!(status, 400);
        assert!(text.contains("scripted failure"), "{text}");
        let t0 = std::time::Instant::now();
        let (status, text) = post(&api, "/v1/chat/completions", body.clone()).await;
        assert_eq!(status, 200);
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
        assert!(text.contains("\"ow\"") && text.contains("[DONE]"), "{text}");
        // The script is empty: Auto asks for the write.
        let (_, text) = post(&api, "/v1/chat/completions", body).await;
        assert!(
            text.contains("tool_calls") && text.contains("f.txt"),
            "{text}"
        );
        // A side request (no tools) neither consumes the script nor counts as a turn.
        api.push(Reply::Text("scripted".into()));
        let (_, text) = post(&api, "/v1/messages/count_tokens", json!({})).await;
        assert!(text.contains("input_tokens"), "{text}");
        let (_, text) = post(
            &api,
            "/v1beta/models/m:streamGenerateContent?alt=sse",
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "tools": [{"functionDeclarations": [{"name": "write_file"}]}]}),
        )
        .await;
        assert!(text.contains("scripted"), "{text}");
        let turns = api.turns();
        assert_eq!(turns.len(), 4, "{turns:?}");
        assert!(turns[0].has_prompt_containing("write f.txt hi"));
        assert_eq!(turns[3].api, Api::Gemini);
        assert_eq!(api.requests().len(), 5);
    }

    #[tokio::test]
    async fn every_protocol_answers_a_write_then_a_text() {
        let api = ModelApi::start().await.unwrap();
        let (_, text) = post(
            &api,
            "/v1/messages",
            json!({"stream": true, "tools": [{"name": "Write"}],
                "system": [{"type": "text", "text": "Working directory: /w"}],
                "messages": [{"role": "user", "content": "write a.txt x"}]}),
        )
        .await;
        assert!(
            text.contains("tool_use") && text.contains("/w/a.txt"),
            "{text}"
        );
        let (_, text) = post(
            &api,
            "/v1/responses",
            json!({"stream": true, "tools": [{"type": "function", "name": "exec_command"}],
                "input": [{"type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "write a.txt x"}]},
                    {"type": "function_call", "name": "exec_command"},
                    {"type": "function_call_output", "output": ""}]}),
        )
        .await;
        assert!(
            text.contains("Wrote a.txt.") && text.contains("response.completed"),
            "{text}"
        );
        let (_, text) = post(
            &api,
            "/v1beta/models/m:streamGenerateContent?alt=sse",
            json!({"contents": [{"role": "user", "parts": [{"text": "write a.txt x"}]}],
                "tools": [{"functionDeclarations": [{"name": "write_file"}]}]}),
        )
        .await;
        assert!(
            text.contains("functionCall") && text.contains("a.txt"),
            "{text}"
        );
    }
}
