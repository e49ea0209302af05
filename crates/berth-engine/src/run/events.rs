//! A run's durable, ordered event stream (`run_events`): lifecycle steps, raw output, and the
//! adapter's normalized events. Every step of a run is visible here.

use std::sync::Arc;

use berth_core::RunId;
use berth_store::Store;
use serde_json::{Value, json};

/// Appends events for one run. Append failures are logged, never fatal to the run: losing a
/// log line must not lose the agent's work.
#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn Store>,
    run_id: RunId,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("run_id", &self.run_id)
            .finish()
    }
}

impl EventLog {
    pub fn new(store: Arc<dyn Store>, run_id: RunId) -> Self {
        Self { store, run_id }
    }

    pub async fn append(&self, stream: &str, payload: Value) {
        if let Err(e) = self
            .store
            .append_run_event(self.run_id, stream, payload)
            .await
        {
            tracing::warn!(run_id = %self.run_id, error = %e, "failed to record a run event");
        }
    }

    /// A lifecycle step: `{step, message, ...extra}`.
    pub async fn step(&self, step: &str, message: impl Into<String>, extra: Value) {
        let mut payload = json!({"step": step, "message": message.into()});
        if let (Value::Object(map), Value::Object(more)) = (&mut payload, extra) {
            map.extend(more);
        }
        tracing::info!(run_id = %self.run_id, step, "{}", payload["message"].as_str().unwrap_or_default());
        self.append("lifecycle", payload).await;
    }
}

/// The span a run executes in (also after a restart or on another instance): every log line of
/// its phases carries its ids; the environment and lease are recorded once known.
pub(crate) fn run_span(run: &berth_core::model::Run) -> tracing::Span {
    tracing::info_span!(
        "run",
        run_id = %run.id,
        agent_id = %run.agent_id,
        company_id = %run.company_id,
        environment_id = tracing::field::Empty,
        lease_id = tracing::field::Empty,
        fence = tracing::field::Empty,
    )
}
