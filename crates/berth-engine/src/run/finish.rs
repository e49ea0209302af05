//! Phase 7, finish: how a run ended (its attempt's outcome, the restore, the lease) becomes
//! its final status, error code, session and result on the run row.

use berth_agents::{RemoteIdentity, SessionParams};
use berth_core::RunStatus;
use berth_core::lease::RunOutcome as LeaseOutcome;
use berth_core::model::Run;
use berth_store::RunPatch;
use chrono::Utc;
use serde_json::{Value, json};

use super::error::{ErrorCode, RunError};
use super::events::EventLog;
use super::execute::Orchestrator;
use super::stream::{Attempt, Stopped};

/// How a run ended, before it is written to the run row.
#[derive(Debug, Clone)]
pub(crate) struct Finish {
    pub(crate) status: RunStatus,
    pub(crate) error: Option<RunError>,
    pub(crate) exit_code: Option<i64>,
    pub(crate) session_params: Option<Value>,
    pub(crate) result: Option<Value>,
    /// The agent's process group may still run (the stop could not be confirmed): the lease
    /// is released with cleanup pending, so the reaper stops it once the host answers.
    pub(crate) cleanup_pending: bool,
}

impl Finish {
    pub(crate) fn failed(error: RunError) -> Self {
        let status = match error.code {
            ErrorCode::Cancelled => RunStatus::Cancelled,
            ErrorCode::TimedOut => RunStatus::TimedOut,
            _ => RunStatus::Failed,
        };
        Self {
            status,
            error: Some(error),
            exit_code: None,
            session_params: None,
            result: None,
            cleanup_pending: false,
        }
    }

    pub(crate) fn lease_outcome(&self) -> LeaseOutcome {
        match self.status {
            RunStatus::Succeeded => LeaseOutcome::Succeeded,
            RunStatus::TimedOut => LeaseOutcome::TimedOut,
            RunStatus::Cancelled => LeaseOutcome::Cancelled,
            _ => LeaseOutcome::Failed,
        }
    }
}

impl Orchestrator {
    /// Write the run's final status (or, when it detached, leave it `running` for the next
    /// start to re-attach).
    pub(crate) async fn conclude(&self, run: Run, finish: Finish, log: &EventLog) -> Run {
        if finish.error.as_ref().is_some_and(RunError::is_detached) {
            log.step(
                "detached",
                "The control plane stopped; the agent keeps running and is re-attached at the next start.",
                json!({}),
            )
            .await;
            return run;
        }
        super::phase::enter(&self.store, run.id, super::phase::Phase::Finish).await;
        let code = finish.error.as_ref().map(|e| e.code.to_string());
        let message = finish.error.as_ref().map(|e| e.message.clone());
        log.step(
            "finished",
            match &finish.error {
                None => "Run succeeded.".to_string(),
                Some(e) => format!("Run ended {}: {}", finish.status, e.message),
            },
            json!({"status": finish.status, "errorCode": code}),
        )
        .await;
        let patch = RunPatch {
            status: Some(finish.status),
            error_code: Some(code),
            error_message: Some(message),
            exit_code: Some(finish.exit_code),
            session_params: finish.session_params.map(Some),
            result: Some(finish.result),
            finished_at: Some(Some(Utc::now())),
            ..RunPatch::default()
        };
        match self.store.update_run(run.id, patch).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(run_id = %run.id, error = %e, "failed to record the end of a run");
                run
            }
        }
    }

    pub(crate) async fn finish_from(
        &self,
        attempt: Attempt,
        cwd: &str,
        identity: RemoteIdentity,
        log: &EventLog,
    ) -> Finish {
        let s = &attempt.summary;
        let session_params = s.session_id.as_ref().map(|id| {
            serde_json::to_value(SessionParams::new(id, cwd, identity.clone()))
                .unwrap_or(Value::Null)
        });
        let result = json!({
            "ok": s.ok,
            "summary": s.summary,
            "costUsd": s.cost_usd,
            "sessionId": s.session_id,
            "usage": {"inputTokens": s.input_tokens, "outputTokens": s.output_tokens, "cachedInputTokens": s.cached_input_tokens},
            "errors": s.errors,
            "conflicts": [],
            "stopped": attempt.stopped.map(|st| format!("{st:?}")),
        });
        let exit_code = attempt.outcome.exit_code.map(i64::from);
        let mut finish = Finish {
            status: RunStatus::Succeeded,
            error: None,
            exit_code,
            session_params,
            result: Some(result),
            cleanup_pending: attempt.survivors.is_some() || attempt.lost_stream.is_some(),
        };
        let fail = |code: ErrorCode, message: String| Some(RunError::new(code, message));
        let (status, error) = match attempt.stopped {
            Some(Stopped::Cancelled) => (
                RunStatus::Cancelled,
                fail(ErrorCode::Cancelled, "the run was cancelled".into()),
            ),
            Some(Stopped::TimedOut) => (
                RunStatus::TimedOut,
                fail(ErrorCode::TimedOut, "the run exceeded its timeout".into()),
            ),
            Some(Stopped::LeaseLost) => (
                RunStatus::Failed,
                fail(ErrorCode::LeaseLost, "the lease was lost mid-run".into()),
            ),
            None if attempt.lost_stream.is_some() => (
                RunStatus::Failed,
                fail(
                    ErrorCode::LeaseLost,
                    format!(
                        "the environment was unreachable for longer than the lease TTL ({}); the agent's processes are stopped by the lease's cleanup once it answers",
                        attempt.lost_stream.as_deref().unwrap_or_default()
                    ),
                ),
            ),
            Some(Stopped::Lingering) | None => {
                let lingering = attempt.stopped == Some(Stopped::Lingering);
                // A CLI stopped after its final result ended by our signal; its result counts.
                let exited_ok = attempt.outcome.exit_code == Some(0) || lingering;
                match (s.ok, exited_ok) {
                    (Some(true), true) | (None, true) => (RunStatus::Succeeded, None),
                    (Some(false), _) => (
                        RunStatus::Failed,
                        fail(
                            ErrorCode::AgentFailed,
                            s.summary
                                .clone()
                                .or_else(|| s.errors.first().cloned())
                                .unwrap_or_else(|| "the agent reported a failed result".into()),
                        ),
                    ),
                    (_, false) => {
                        let tail = attempt.stderr_tail.trim();
                        let how = match (&attempt.outcome.exit_code, &attempt.outcome.signal) {
                            _ if attempt.outcome.launcher_lost => "lost its launcher: the launcher shell on the environment died before recording the exit status (killed from outside, or the disk is full), and the agent's process group was stopped".into(),
                            (_, Some(sig)) => format!("was killed by signal {sig}"),
                            (Some(code), None) => format!("exited with code {code}"),
                            (None, None) => "ended without an exit status".into(),
                        };
                        let last = tail.lines().last().unwrap_or_default();
                        (
                            RunStatus::Failed,
                            fail(
                                ErrorCode::AgentFailed,
                                if last.is_empty() {
                                    format!("the agent {how}")
                                } else {
                                    format!("the agent {how}: {last}")
                                },
                            ),
                        )
                    }
                }
            }
        };
        finish.status = status;
        finish.error = error;
        if let Some(survivors) = attempt.survivors {
            log.step(
                "stop_incomplete",
                format!("Processes may have survived the stop: {survivors}"),
                json!({}),
            )
            .await;
            if finish.error.is_none() {
                finish.status = RunStatus::Failed;
                finish.error = Some(RunError::new(ErrorCode::AgentFailed, survivors));
            }
        }
        finish
    }
}
