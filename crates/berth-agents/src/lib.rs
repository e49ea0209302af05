//! Agent adapters: for each supported coding-agent CLI, a pure command builder (program, args,
//! env, stdin, assets for a fresh or a resumed session), a line parser that turns the CLI's
//! output into normalized [`Event`]s, and the session-identity rule that decides whether a saved
//! session may be resumed on the current environment.
//!
//! This crate owns *what* to run and *how to read it*, never the running: it must not spawn a
//! process, open a file or a socket, and it depends only on `berth-core`, serde and thiserror.
//! The engine hands an [`Invocation`] to the remote launcher (berth-exec) and feeds every output
//! line back into the adapter's [`OutputParser`]. Per-adapter flags and event formats, and which
//! of them are documented upstream versus inferred, are listed in `ADAPTERS.md` beside this crate.
//! `fake-clis/` holds POSIX-sh stand-ins for the six CLIs (for this crate's and the engine's
//! tests); `tools/` records transcripts of the real CLIs against a mock model API.
//!
//! One attempt, as the engine drives it:
//!
//! ```
//! use berth_agents::{BuildContext, RemoteIdentity, RunSummary, SessionParams, Stream};
//! use serde_json::json;
//!
//! let claude = berth_agents::adapter("claude_local").ok_or("unknown adapter")?;
//! let here = RemoteIdentity::ssh("10.0.0.5", 22, "agent", "/srv/ws");
//! let saved = SessionParams::new("s-1", "/srv/ws", here.clone());
//!
//! let mut ctx = BuildContext::new(json!({"model": "claude-sonnet-4-5"}), "Fix the bug", "/srv/ws");
//! // Resume only on an exact identity match; otherwise log the reason and start fresh.
//! ctx.resume = berth_agents::should_resume(&saved, &here, "/srv/ws").ok().map(|()| saved);
//! let invocation = claude.build(&ctx)?;
//! assert_eq!(&invocation.args[5..7], ["--resume", "s-1"]);
//!
//! // …the launcher runs `invocation`; every output line goes through the parser:
//! let mut parser = claude.parser(&invocation);
//! let events = parser.parse_line(
//!     Stream::Stdout,
//!     r#"{"type":"result","subtype":"success","is_error":false,"result":"Fixed.","session_id":"s-1","total_cost_usd":0.01}"#,
//! );
//! assert!(parser.is_terminal_result() && !parser.unknown_session());
//! assert_eq!(RunSummary::from_events(&events).summary.as_deref(), Some("Fixed."));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod claude;
pub mod codex;
mod config;
pub mod cursor;
mod error;
mod event;
pub mod gemini;
mod invocation;
mod json;
pub mod opencode;
pub mod pi;
pub mod process;
mod session;
mod validate;

pub use config::{
    CommonConfig, DEFAULT_GRACE_SEC, MAX_GRACE_SEC, MAX_TIMEOUT_SEC, MAX_TURNS_PER_RUN,
};
pub use error::AdapterError;
pub use event::{Event, Role, RunSummary, Stream};
pub use invocation::{AssetSpec, BuildContext, Invocation};
pub use session::{RemoteIdentity, ResumeRefused, SessionParams, should_resume};
pub use validate::validate_config;

/// One agent CLI: builds its command and creates parsers for its output. Implementations are
/// stateless unit structs; all per-run state lives in the [`OutputParser`] they create.
pub trait Adapter: Send + Sync {
    /// The adapter type as stored in `agents.adapter_type` (e.g. `claude_local`).
    fn adapter_type(&self) -> &'static str;

    /// Asset keys this adapter knows how to point its CLI at (see [`BuildContext::local_assets`]).
    fn asset_keys(&self) -> &'static [&'static str];

    /// The command for one attempt. `ctx.resume` is the session to continue, already approved
    /// by [`should_resume`]; `None` starts a fresh session.
    fn build(&self, ctx: &BuildContext) -> Result<Invocation, AdapterError>;

    /// A fresh parser for the output of `invocation` (built by this adapter).
    fn parser(&self, invocation: &Invocation) -> Box<dyn OutputParser>;

    /// A CLI whose session is a file on the environment names it here: the engine reads its
    /// first line there and asks [`Adapter::check_session_file_header`] before resuming.
    /// `None` (the default): the session lives inside the CLI and needs no check.
    fn session_file(&self, _saved: &SessionParams) -> Option<String> {
        None
    }

    /// Whether the first line of the session file (empty when missing or unreadable) allows
    /// resuming in `cwd`.
    fn check_session_file_header(&self, _header: &str, _cwd: &str) -> Result<(), ResumeRefused> {
        Ok(())
    }
}

/// Reads one attempt's output, line by line, in the order the lines were produced per stream.
pub trait OutputParser: Send {
    /// Normalized events for one line (without its trailing newline) of stdout or stderr.
    fn parse_line(&mut self, stream: Stream, line: &str) -> Vec<Event>;

    /// True once the CLI has reported its final result. The engine stops a CLI that lingers
    /// after this (SPEC §7: 5 s, then TERM to the group, then KILL after `graceSec`).
    fn is_terminal_result(&self) -> bool;

    /// True when the CLI said the session it was asked to resume does not exist; the engine
    /// then retries once with a fresh session and clears the saved one.
    fn unknown_session(&self) -> bool;

    /// The session id the CLI reported (or that the adapter chose up-front), if any yet.
    fn session_id(&self) -> Option<&str>;

    /// True when the attempt asked to resume a session but the CLI reported a different one
    /// (it started fresh without saying the old one is unknown). The work happened in the new
    /// session, so the engine saves that one instead of retrying.
    fn resume_ignored(&self) -> bool {
        false
    }
}

static CLAUDE: claude::ClaudeAdapter = claude::ClaudeAdapter;
static CODEX: codex::CodexAdapter = codex::CodexAdapter;
static CURSOR: cursor::CursorAdapter = cursor::CursorAdapter;
static GEMINI: gemini::GeminiAdapter = gemini::GeminiAdapter;
static OPENCODE: opencode::OpencodeAdapter = opencode::OpencodeAdapter;
static PI: pi::PiAdapter = pi::PiAdapter;
static PROCESS: process::ProcessAdapter = process::ProcessAdapter;

/// The adapter for an adapter type (one of `berth_core::adapters::ADAPTER_TYPES`).
pub fn adapter(adapter_type: &str) -> Option<&'static dyn Adapter> {
    let a: &'static dyn Adapter = match adapter_type {
        "claude_local" => &CLAUDE,
        "codex_local" => &CODEX,
        "cursor" => &CURSOR,
        "gemini_local" => &GEMINI,
        "opencode_local" => &OPENCODE,
        "pi_local" => &PI,
        "process" => &PROCESS,
        _ => return None,
    };
    Some(a)
}

/// Parses a whole captured output (stdout lines, then stderr lines) in one go; convenient for
/// tests and for re-reading a finished run's logs.
pub fn parse_all(parser: &mut dyn OutputParser, stdout: &str, stderr: &str) -> Vec<Event> {
    let mut events = Vec::new();
    for line in stdout.lines() {
        events.extend(parser.parse_line(Stream::Stdout, line));
    }
    for line in stderr.lines() {
        events.extend(parser.parse_line(Stream::Stderr, line));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_adapter_type_has_an_adapter() {
        for t in berth_core::adapters::ADAPTER_TYPES {
            let a = adapter(t);
            assert!(a.is_some(), "{t}");
            assert_eq!(a.map(|a| a.adapter_type()), Some(*t));
        }
        assert!(adapter("http").is_none());
    }
}
