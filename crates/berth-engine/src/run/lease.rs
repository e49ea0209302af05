//! The lease around a run: released by outcome on every path (step 9), with cleanup pending
//! when the agent's processes could not be confirmed stopped.

use berth_core::CleanupStatus;
use berth_store::StoreError;
use serde_json::json;

use super::error::{ErrorCode, RunError};
use super::events::EventLog;
use super::execute::Orchestrator;
use super::finish::Finish;
use crate::holder::HeldLease;

impl Orchestrator {
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
