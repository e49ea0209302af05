//! Normalized agent events (SPEC §9) and a fold of them into a run's summary.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which pipe a line came from. Stdout and stderr stay separate (no PTY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One normalized event. On the wire (run event stream) it is tagged by `type` with camelCase
/// fields, e.g. `{"type":"init","sessionId":"…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Event {
    /// The CLI announced (or the adapter chose) the session this attempt runs in.
    Init { session_id: String },
    /// A complete message (or, for CLIs that only stream deltas, an accumulated one).
    Message { role: Role, text: String },
    /// The agent invoked a tool.
    ToolUse { name: String, input: Value },
    /// A tool finished.
    ToolResult { ok: bool, output: String },
    /// Tokens spent since the previous `Usage` event of this attempt: sum them for the total.
    Usage {
        input_tokens: u64,
        output_tokens: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cached_input_tokens: Option<u64>,
    },
    /// The CLI's final result for the attempt.
    Result {
        ok: bool,
        summary: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
    /// An error the CLI reported (fatal or not; the `Result` says how the attempt ended).
    Error { message: String },
    /// A line that is not part of the CLI's structured format (stderr, banners, or every line
    /// of the `process` adapter), passed through unchanged.
    Output { stream: Stream, line: String },
}

/// What a finished attempt amounts to: the fold of its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub session_id: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    /// `Some` once a `Result` event was seen; `None` means the CLI never reported one.
    pub ok: Option<bool>,
    pub summary: Option<String>,
    pub cost_usd: Option<f64>,
    pub errors: Vec<String>,
}

impl RunSummary {
    /// Folds events in order; the last `Init` and the last `Result` win.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut s = Self::default();
        for e in events {
            s.apply(e);
        }
        s
    }

    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Init { session_id } => self.session_id = Some(session_id.clone()),
            Event::Usage {
                input_tokens,
                output_tokens,
                cached_input_tokens,
            } => {
                self.input_tokens += input_tokens;
                self.output_tokens += output_tokens;
                self.cached_input_tokens += cached_input_tokens.unwrap_or(0);
            }
            Event::Result {
                ok,
                summary,
                cost_usd,
            } => {
                self.ok = Some(*ok);
                self.summary = Some(summary.clone());
                if cost_usd.is_some() {
                    self.cost_usd = *cost_usd;
                }
            }
            Event::Error { message } => self.errors.push(message.clone()),
            Event::Message { .. }
            | Event::ToolUse { .. }
            | Event::ToolResult { .. }
            | Event::Output { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_tagged_with_camel_case_fields() {
        let e = Event::Init {
            session_id: "s1".into(),
        };
        assert_eq!(
            serde_json::to_value(&e).ok(),
            Some(serde_json::json!({"type":"init","sessionId":"s1"}))
        );
        let r = Event::Result {
            ok: true,
            summary: "done".into(),
            cost_usd: Some(0.5),
        };
        assert_eq!(
            serde_json::to_value(&r).ok(),
            Some(serde_json::json!({"type":"result","ok":true,"summary":"done","costUsd":0.5}))
        );
    }

    #[test]
    fn summary_sums_usage_and_keeps_the_last_result() {
        let events = [
            Event::Init {
                session_id: "a".into(),
            },
            Event::Usage {
                input_tokens: 3,
                output_tokens: 1,
                cached_input_tokens: Some(2),
            },
            Event::Usage {
                input_tokens: 4,
                output_tokens: 2,
                cached_input_tokens: None,
            },
            Event::Error {
                message: "boom".into(),
            },
            Event::Result {
                ok: false,
                summary: "x".into(),
                cost_usd: Some(0.25),
            },
        ];
        let s = RunSummary::from_events(&events);
        assert_eq!(s.session_id.as_deref(), Some("a"));
        assert_eq!(
            (s.input_tokens, s.output_tokens, s.cached_input_tokens),
            (7, 3, 2)
        );
        assert_eq!(s.ok, Some(false));
        assert_eq!(s.cost_usd, Some(0.25));
        assert_eq!(s.errors, vec!["boom".to_string()]);
    }
}
