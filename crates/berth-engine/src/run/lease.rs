//! The lease around a run: released by outcome on every path (step 9), with cleanup pending
//! when the agent's processes could not be confirmed stopped.

use berth_core::CleanupStatus;
use berth_core::LeaseStatus;
use berth_core::model::Lease;
use berth_store::{NewActivity, StoreError};
use serde_json::json;

use super::error::{ErrorCode, RunError};
use super::events::EventLog;
use super::execute::Orchestrator;
use super::finish::Finish;
use crate::holder::HeldLease;

impl Orchestrator {
    /// Paperclip's `environment.lease_acquired` / `environment.lease_released` activity
    /// entries. A failure to log is reported, never a run failure.
    pub(crate) async fn lease_activity(
        &self,
        action: &str,
        lease: &Lease,
        status: Option<LeaseStatus>,
    ) {
        let driver = lease
            .metadata
            .as_ref()
            .and_then(|m| m.get("driver"))
            .cloned()
            .unwrap_or_else(|| json!("local"));
        let mut details = json!({
            "environmentId": lease.environment_id,
            "driver": driver,
            "leasePolicy": lease.lease_policy,
            "provider": lease.provider,
            "executionWorkspaceId": lease.execution_workspace_id,
            "issueId": lease.issue_id,
            "heartbeatRunId": lease.run_id,
        });
        if let (Some(s), Some(map)) = (status, details.as_object_mut()) {
            map.insert("status".into(), json!(s));
        }
        let entry = NewActivity {
            company_id: lease.company_id,
            actor_type: "system".into(),
            actor_id: "berth".into(),
            action: action.into(),
            entity_type: "environment_lease".into(),
            entity_id: lease.id.to_string(),
            details,
        };
        if let Err(e) = self.store.log_activity(entry).await {
            tracing::warn!(error = %e, lease_id = %lease.id, "failed to log lease activity");
        }
    }

    /// Step 9: release by outcome, on every path.
    pub(crate) async fn release(
        &self,
        held: HeldLease,
        finish: Finish,
        log: &EventLog,
    ) -> Result<Finish, RunError> {
        let cleanup = finish.cleanup_pending.then_some(CleanupStatus::Pending);
        if cleanup.is_some() {
            log.step(
                "cleanup_pending",
                "The agent's processes could not be confirmed stopped: the lease's cleanup stops them once the environment answers.",
                json!({}),
            )
            .await;
        }
        let finish = match held.release(finish.lease_outcome(), cleanup).await {
            Ok(l) => {
                self.lease_activity("environment.lease_released", &l, Some(l.status))
                    .await;
                log.step(
                    "lease_released",
                    format!("Lease released as {}.", l.status),
                    json!({"leaseId": l.id, "status": l.status, "failureReason": l.failure_reason}),
                )
                .await;
                finish
            }
            Err(StoreError::LeaseLost { reason, .. }) => {
                log.step(
                    "lease_lost",
                    format!("The lease was lost: {reason}"),
                    json!({}),
                )
                .await;
                if finish.error.is_none() {
                    Finish::failed(RunError::new(ErrorCode::LeaseLost, reason))
                } else {
                    finish
                }
            }
            Err(e) => return Err(e.into()),
        };
        Ok(finish)
    }
}
