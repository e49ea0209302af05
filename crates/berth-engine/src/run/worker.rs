//! Claims queued runs and executes them, several at once. Runs on one environment but on
//! different workspaces overlap; runs on the same workspace serialize on their lease's single
//! flight. Cancel reaches a run through its token wherever it is in its steps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::RunId;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::execute::Orchestrator;

pub struct Worker {
    orchestrator: Orchestrator,
    /// Who claims runs (`claimed_by`), unique per process.
    claimer: String,
    wake: Notify,
    running: Mutex<HashMap<RunId, CancellationToken>>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("claimer", &self.claimer)
            .finish_non_exhaustive()
    }
}

impl Worker {
    pub fn new(orchestrator: Orchestrator, max_concurrent: usize) -> Arc<Self> {
        Arc::new(Self {
            orchestrator,
            claimer: format!("berth-{}-{}", std::process::id(), uuid::Uuid::now_v7()),
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
        })
    }

    /// A run was queued: claim it now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Cancel a run executing in this process; `false` if it is not here.
    pub fn cancel(&self, run_id: RunId) -> bool {
        match self.running.lock() {
            Ok(map) => map.get(&run_id).map(|t| t.cancel()).is_some(),
            Err(_) => false,
        }
    }

    /// SQLite is one process: a run still `running` when the worker starts was executing in
    /// a process that is gone. It fails now rather than showing `running` forever; its lease,
    /// no longer renewed, expires at its TTL and the reaper stops what is left of the agent on
    /// the environment and removes its run directory. (PostgreSQL instances share runs, so
    /// there the lease's expiry is the only signal; re-attaching is not implemented yet.)
    async fn fail_runs_of_a_previous_process(&self) {
        let store = &self.orchestrator.store;
        if store.backend() != berth_store::Backend::Sqlite {
            return;
        }
        let message = "the control plane stopped while this run was executing; its lease \
                       expires at its TTL and the reaper then stops the agent on the environment";
        match store
            .fail_runs_not_claimed_by(&self.claimer, "lease_lost", message)
            .await
        {
            Ok(ids) => {
                for id in ids {
                    tracing::warn!(run = %id, "run left running by a previous process marked failed");
                    let _ = store
                        .append_run_event(
                            id,
                            "lifecycle",
                            serde_json::json!({"step": "orphaned", "message": message}),
                        )
                        .await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot check for runs left by a previous process")
            }
        }
    }

    /// Cancel the runs executing here that a cancel request reached through the database
    /// (asked of another instance sharing it).
    async fn cancel_requested_elsewhere(&self) {
        let busy = self.running.lock().map(|m| !m.is_empty()).unwrap_or(false);
        if !busy {
            return;
        }
        match self
            .orchestrator
            .store
            .cancel_requested_runs(&self.claimer)
            .await
        {
            Ok(ids) => {
                for id in ids {
                    if self.cancel(id) {
                        tracing::info!(run = %id, "cancel requested through the database");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read cancel requests"),
        }
    }

    /// Claim and execute runs until aborted. Polls every second too, so runs queued by another
    /// instance (PostgreSQL) are picked up.
    pub fn spawn(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            self.fail_runs_of_a_previous_process().await;
            loop {
                loop {
                    let Ok(permit) = self.slots.clone().acquire_owned().await else {
                        return;
                    };
                    let claimed = match self.orchestrator.store.claim_next_run(&self.claimer).await
                    {
                        Ok(Some(run)) => run,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "failed to claim a queued run");
                            break;
                        }
                    };
                    let token = CancellationToken::new();
                    if let Ok(mut map) = self.running.lock() {
                        map.insert(claimed.id, token.clone());
                    }
                    let me = self.clone();
                    tokio::spawn(async move {
                        let id = claimed.id;
                        me.orchestrator.execute(claimed, token).await;
                        if let Ok(mut map) = me.running.lock() {
                            map.remove(&id);
                        }
                        drop(permit);
                    });
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                self.cancel_requested_elsewhere().await;
            }
        })
    }
}
