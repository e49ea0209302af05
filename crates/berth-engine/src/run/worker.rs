//! Claims queued runs and executes them, several at once. Runs on one environment but on
//! different workspaces overlap; runs on the same workspace serialize on their lease's single
//! flight. Cancel reaches a run through its token wherever it is in its steps. At start it
//! takes over what a previous process left running; at shutdown it detaches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::RunId;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::execute::Orchestrator;
use super::phase::{Phase, Resumption};

pub struct Worker {
    orchestrator: Orchestrator,
    /// Who claims runs (`claimed_by`), unique per process.
    claimer: String,
    wake: Notify,
    running: Mutex<HashMap<RunId, CancellationToken>>,
    slots: Arc<Semaphore>,
    /// Set on graceful shutdown: nothing more is claimed.
    stopping: CancellationToken,
    /// Notified whenever a run leaves `running`.
    idle: Notify,
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
            stopping: CancellationToken::new(),
            idle: Notify::new(),
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
    /// a process that is gone (killed, crashed, or stopped gracefully and detached). Its agent
    /// may still be running on its environment: this process takes the run over and
    /// re-attaches (see [`Orchestrator::reattach`]), which fails it with `lease_lost` when its
    /// lease expired meanwhile. (PostgreSQL instances share runs: there another instance
    /// adopts or requeues them; see [`Self::adopt_orphaned_runs`] and `spawn_heartbeat`.)
    async fn take_over_runs_of_a_previous_process(self: &Arc<Self>) {
        let store = &self.orchestrator.store;
        if store.backend() != berth_store::Backend::Sqlite {
            return;
        }
        let runs = match store.reclaim_runs_not_claimed_by(&self.claimer).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::error!(error = %e, "cannot check for runs left by a previous process");
                return;
            }
        };
        for run in runs {
            let has_session = matches!(store.get_remote_session(run.id).await, Ok(Some(_)));
            match Phase::resumption(run.phase.as_deref(), has_session) {
                Resumption::Requeue => self.requeue(run).await,
                // Reattach, or fail it there (with the reason) when nothing can be found.
                Resumption::Reattach | Resumption::Fail => {
                    tracing::info!(run_id = %run.id, "re-attaching a run left running by a previous process");
                    self.spawn_reattach(run).await;
                }
            }
        }
        self.wake();
    }

    /// PostgreSQL: take over runs another instance stopped executing (it died, or detached
    /// at shutdown) once the reaper expired their lease, and re-attach to their agents.
    async fn adopt_orphaned_runs(self: &Arc<Self>) {
        let store = &self.orchestrator.store;
        if store.backend() == berth_store::Backend::Sqlite || self.stopping.is_cancelled() {
            return;
        }
        let free = self.slots.available_permits().min(8) as u32;
        if free == 0 {
            return;
        }
        let adopted = match store
            .adopt_orphaned_runs(&self.claimer, self.orchestrator.lease_ttl_secs, free)
            .await
        {
            Ok(adopted) => adopted,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for runs orphaned by another instance");
                return;
            }
        };
        for (run, lease) in adopted {
            tracing::info!(run_id = %run.id, lease_id = %lease.id, fence = lease.fence,
                "adopting a run another instance stopped executing");
            self.spawn_reattach(run).await;
        }
    }

    async fn spawn_reattach(self: &Arc<Self>, run: berth_core::model::Run) {
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let token = CancellationToken::new();
        if let Ok(mut map) = self.running.lock() {
            map.insert(run.id, token.clone());
        }
        let me = self.clone();
        tokio::spawn(async move {
            let id = run.id;
            let span = super::events::run_span(&run);
            me.orchestrator.reattach(run, token).instrument(span).await;
            me.finished(id);
            drop(permit);
        });
    }

    /// A run the previous process never launched an agent for: give back its lease (its
    /// cleanup removes a half-synced copy) and queue it again, to run from the start.
    async fn requeue(&self, run: berth_core::model::Run) {
        let store = &self.orchestrator.store;
        if let Some(lease_id) = run.lease_id
            && let Ok(Some(lease)) = store.get_lease(lease_id).await
            && lease.status == berth_core::LeaseStatus::Active
        {
            let released = store
                .release_lease(
                    lease.id,
                    lease.fence,
                    berth_core::lease::RunOutcome::Failed,
                    Some(berth_core::CleanupStatus::Pending),
                )
                .await;
            if let Err(e) = released {
                tracing::warn!(run_id = %run.id, error = %e, "cannot release the lease of a requeued run");
            }
        }
        match store.requeue_run(run.id, &self.claimer).await {
            Ok(true) => {
                let phase = run.phase.as_deref().unwrap_or("claimed");
                let cancelled = matches!(store.get_run(run.id).await,
                    Ok(Some(r)) if r.status == berth_core::RunStatus::Cancelled);
                let (step, message) = if cancelled {
                    (
                        "cancelled",
                        format!(
                            "The control plane executing the run stopped before the agent was launched (phase {phase}); it was cancelled meanwhile, so it does not start again."
                        ),
                    )
                } else {
                    (
                        "requeued",
                        format!(
                            "The control plane executing the run stopped before the agent was launched (phase {phase}); the run starts again."
                        ),
                    )
                };
                tracing::info!(run_id = %run.id, phase, step, "picked up a run that never launched its agent");
                let _ = store
                    .append_run_event(
                        run.id,
                        "lifecycle",
                        serde_json::json!({"step": step, "message": message}),
                    )
                    .await;
            }
            Ok(false) => {}
            Err(e) => tracing::error!(run_id = %run.id, error = %e, "cannot requeue a run"),
        }
    }

    fn finished(&self, id: RunId) {
        if let Ok(mut map) = self.running.lock() {
            map.remove(&id);
        }
        self.idle.notify_waiters();
    }

    /// Graceful shutdown: claim nothing more; runs whose agent is running detach from it
    /// (it keeps running; the next start re-attaches), runs before launch go on to launch
    /// and detach, runs restoring or releasing finish. Waits at most `within` for all that.
    /// Returns how many runs were still here when it gave up.
    pub async fn shutdown(&self, within: Duration) -> usize {
        self.stopping.cancel();
        self.orchestrator.detach.cancel();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = self.idle.notified();
            let left = self.running.lock().map(|m| m.len()).unwrap_or(0);
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                let left = self.running.lock().map(|m| m.len()).unwrap_or(0);
                tracing::warn!(runs = left, "shutdown did not wait for every run to detach");
                return left;
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

    /// PostgreSQL: say this instance is alive (until its last run left at shutdown), and
    /// queue again the runs of instances silent for longer than the lease TTL that never
    /// launched their agent (those that did are adopted once their lease expires; see
    /// [`Self::adopt_orphaned_runs`]). A run waiting for a lease holds none that could expire.
    fn spawn_heartbeat(self: &Arc<Self>) {
        if self.orchestrator.store.backend() == berth_store::Backend::Sqlite {
            return;
        }
        let ttl = self.orchestrator.lease_ttl_secs.max(3);
        let every = Duration::from_secs((ttl as u64 / 3).clamp(1, 20));
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let idle = me.running.lock().map(|m| m.is_empty()).unwrap_or(true);
                if me.stopping.is_cancelled() && idle {
                    return;
                }
                let store = &me.orchestrator.store;
                if let Err(e) = store.heartbeat_instance(&me.claimer).await {
                    tracing::warn!(error = %e, "cannot record this instance's heartbeat");
                }
                if !me.stopping.is_cancelled() {
                    let silent_before = chrono::Utc::now() - chrono::TimeDelta::seconds(ttl);
                    match store
                        .claim_runs_of_silent_instances(&me.claimer, silent_before)
                        .await
                    {
                        Ok(runs) => {
                            for run in runs {
                                tracing::info!(run_id = %run.id, from = ?run.claimed_by,
                                    "requeueing a run whose instance fell silent before launching it");
                                me.requeue(run).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot look for runs of silent instances")
                        }
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Claim and execute runs until aborted. Polls every second too, so runs queued by another
    /// instance (PostgreSQL) are picked up.
    pub fn spawn(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            self.spawn_heartbeat();
            self.take_over_runs_of_a_previous_process().await;
            loop {
                loop {
                    if self.stopping.is_cancelled() {
                        return;
                    }
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
                        let span = super::events::run_span(&claimed);
                        me.orchestrator
                            .execute(claimed, token)
                            .instrument(span)
                            .await;
                        me.finished(id);
                        drop(permit);
                    });
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = self.stopping.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                self.cancel_requested_elsewhere().await;
                self.adopt_orphaned_runs().await;
            }
        })
    }
}
