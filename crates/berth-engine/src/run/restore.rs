//! Phase 8, restore: the workspace comes back from the environment on every path, unless
//! the lease was lost (fencing).

use berth_core::RunStatus;
use berth_core::model::Run;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::error::{ErrorCode, RunError};
use super::events::EventLog;
use super::execute::Orchestrator;
use super::finish::Finish;
use super::realize::Plan;

impl Orchestrator {
    /// Step 8: restore the workspace, on every path (also after failures and cancel), and
    /// judge the run with what came back.
    pub(crate) async fn restore(
        &self,
        run: &Run,
        plan: &Plan,
        outcome: Result<Finish, RunError>,
        log: &EventLog,
        lost: &CancellationToken,
    ) -> Finish {
        let Plan {
            transport, sync, ..
        } = plan;
        // Fencing: a holder that lost its lease touches nothing the newer holder of the scope
        // may own (the remote copy is theirs now; restoring it would bring their work-in-progress
        // here).
        if sync.is_some() && lost.is_cancelled() {
            log.step(
                "workspace_restore_skipped",
                "The lease was lost: the remote copy may belong to a newer run now, so it is not restored.",
                json!({}),
            )
            .await;
            let mut finish = match outcome {
                Ok(f) => f,
                Err(e) => Finish::failed(e),
            };
            if finish.error.is_none() {
                finish.status = RunStatus::Failed;
                finish.error = Some(RunError::new(
                    ErrorCode::LeaseLost,
                    "the lease was lost before the workspace was restored; the remote copy was left to its newer holder",
                ));
            }
            return finish;
        }
        super::phase::enter(&self.store, run.id, super::phase::Phase::Restore).await;
        let mut conflicts: Vec<String> = Vec::new();
        let mut restore_error: Option<RunError> = None;
        if let Some((local, spec, opts)) = &sync {
            log.step(
                "workspace_sync_back",
                "Restoring the workspace from the environment.",
                json!({}),
            )
            .await;
            match berth_sync::restore(transport.as_ref(), local, spec, &run.id.to_string(), opts)
                .await
            {
                Ok(report) => {
                    conflicts = report.conflicts.iter().map(|p| p.to_string()).collect();
                    log.step(
                        "workspace_restored",
                        format!(
                            "Restored: {} applied, {} deleted, {} kept local, {} conflict(s).",
                            report.applied.len(),
                            report.deleted.len(),
                            report.kept_local.len(),
                            report.conflicts.len()
                        ),
                        serde_json::to_value(&report).unwrap_or(Value::Null),
                    )
                    .await;
                }
                Err(e) => {
                    log.step(
                        "workspace_restore_failed",
                        format!("Restoring the workspace failed: {e}"),
                        json!({}),
                    )
                    .await;
                    restore_error = Some(RunError::new(
                        ErrorCode::WorkspaceRestoreFailed,
                        e.to_string(),
                    ));
                }
            }
        }
        let mut finish = match outcome {
            Ok(f) => f,
            Err(e) => Finish::failed(e),
        };
        if let Some(result) = finish.result.as_mut() {
            result["conflicts"] = json!(conflicts);
        }
        if let Some(e) = restore_error {
            if finish.error.is_none() {
                finish.status = RunStatus::Failed;
                finish.error = Some(e);
            }
        } else if !conflicts.is_empty() && finish.error.is_none() {
            // The run succeeded; some paths changed on both sides (local kept, remote beside it).
            finish.error = Some(RunError::new(
                ErrorCode::WorkspaceRestoreConflict,
                format!(
                    "{} path(s) changed on both sides: {}",
                    conflicts.len(),
                    conflicts.join(", ")
                ),
            ));
        }
        finish
    }
}
