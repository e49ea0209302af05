//! The lease reaper (SPEC §5): no lease stays `active` past its TTL, and nothing a lease left
//! on its environment outlives the lease's cleanup.
//!
//! Each sweep: (1) every active lease past `expires_at` becomes `expired` (cleanup pending);
//! (2) retained leases idle past their retention are destroyed; (3) leases with pending
//! cleanup are cleaned through a [`LeaseCleaner`] — success records `cleanup_status =
//! success`, failure parks the lease in `pending_cleanup` and the next sweeps retry it with
//! backoff. On PostgreSQL one instance sweeps at a time (an advisory lock held on a connection
//! of its own; another instance takes over when it dies), and every transition is guarded in
//! SQL besides, so a lease is moved once whoever gets there first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument as _;

use berth_core::lease::{FAILURE_RETENTION_SECS, LeaseEvent, REUSE_RETENTION_SECS};
use berth_core::model::{Environment, Lease};
use berth_core::{
    CleanupStatus, Driver, EnvironmentStatus, LeaseId, LeasePolicy, LeaseStatus, RunId,
};
use berth_exec::SshPool;
use berth_exec::launcher::{Launcher, RemoteRun, StopReason};
use berth_exec::shell::quote;
use berth_store::{EnvironmentFilter, Page, Store};
use chrono::Utc;
use tokio::task::JoinHandle;

use crate::resolve::transport_for;
use crate::secrets::SecretBox;

/// Cleans what a lease left on its environment.
#[async_trait::async_trait]
pub trait LeaseCleaner: Send + Sync {
    async fn cleanup(&self, lease: &Lease) -> Result<(), String>;

    /// Remove what no lease accounts for any more (workspace copies of scopes without a
    /// lease); returns how many copies were removed.
    async fn collect_garbage(&self) -> Result<usize, String> {
        Ok(0)
    }
}

/// How often the reaper collects remote garbage.
pub const GC_INTERVAL: Duration = Duration::from_secs(3600);
/// Copies younger than this are never collected (one may belong to a lease created while the
/// collector ran).
pub const GC_IDLE_MINUTES: u32 = 30;

/// What one sweep did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: Vec<LeaseId>,
    pub destroyed: Vec<LeaseId>,
    pub cleaned: Vec<LeaseId>,
    pub cleanup_failed: Vec<LeaseId>,
    /// Runs still `running` on a lease expired long enough ago: their executor is gone.
    pub orphaned_runs: Vec<RunId>,
    /// Another instance holds the reaper lock: this one did nothing.
    pub skipped: bool,
}

/// How long after its lease expired a run still `running` is taken for orphaned. A live
/// executor notices the lost lease within a renewal period and ends the run itself (after its
/// restore), so this only catches runs whose executor died.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(300);

pub struct Reaper {
    store: Arc<dyn Store>,
    cleaner: Arc<dyn LeaseCleaner>,
    /// Failed cleanups: attempts so far and when the next one is due.
    backoff: Mutex<HashMap<LeaseId, (u32, chrono::DateTime<Utc>)>>,
    orphan_grace: Duration,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper").finish_non_exhaustive()
    }
}

impl Reaper {
    pub fn new(store: Arc<dyn Store>, cleaner: Arc<dyn LeaseCleaner>) -> Self {
        Self {
            store,
            cleaner,
            backoff: Mutex::new(HashMap::new()),
            orphan_grace: ORPHAN_GRACE,
        }
    }

    /// Take runs for orphaned this long after their lease expired (default [`ORPHAN_GRACE`]).
    pub fn with_orphan_grace(mut self, grace: Duration) -> Self {
        self.orphan_grace = grace;
        self
    }

    /// Run one sweep.
    pub async fn sweep(&self) -> Result<SweepReport, berth_store::StoreError> {
        let mut report = SweepReport::default();
        // PostgreSQL: one instance sweeps at a time (the others would race it to the same
        // cleanups on the same hosts).
        if !self.store.hold_reaper_lock().await? {
            report.skipped = true;
            return Ok(report);
        }
        let now = Utc::now();
        for lease in self.store.expire_due_leases(now).await? {
            tracing::warn!(lease_id = %lease.id, environment_id = %lease.environment_id,
                "lease expired: its holder stopped renewing it before the TTL");
            report.expired.push(lease.id);
        }
        let oldest_retention = chrono::Duration::seconds(FAILURE_RETENTION_SECS);
        let candidates = self
            .store
            .leases_needing_cleanup(now - oldest_retention, 100)
            .await?;
        for mut lease in candidates {
            if lease.status == LeaseStatus::Retained {
                let retention = match lease.lease_policy {
                    LeasePolicy::RetainOnFailure => FAILURE_RETENTION_SECS,
                    _ => REUSE_RETENTION_SECS,
                };
                if lease.last_used_at > now - chrono::Duration::seconds(retention) {
                    continue;
                }
                match self
                    .store
                    .transition_lease(lease.id, LeaseEvent::Destroy, Some(CleanupStatus::Pending))
                    .await
                {
                    Ok(l) => {
                        report.destroyed.push(l.id);
                        lease = l;
                    }
                    // Resumed by a run in the meantime: not ours to destroy any more.
                    Err(berth_store::StoreError::IllegalTransition(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            if !self.due(lease.id, now) {
                continue;
            }
            // A lease that expired under a run still running: its executor died or detached,
            // and its agent may be running on. Another instance may adopt the run and
            // re-attach (PostgreSQL), so the agent is left alone for the orphan grace; after
            // it the run is failed below and the next sweep cleans.
            if self.awaits_adoption(&lease, now).await? {
                continue;
            }
            let span = tracing::info_span!("lease_cleanup", lease_id = %lease.id,
                environment_id = %lease.environment_id, fence = lease.fence);
            match self.cleaner.cleanup(&lease).instrument(span).await {
                Ok(()) => {
                    let done = self
                        .store
                        .transition_lease(
                            lease.id,
                            LeaseEvent::CleanupSucceeded,
                            Some(CleanupStatus::Success),
                        )
                        .await;
                    match done {
                        Ok(_) | Err(berth_store::StoreError::IllegalTransition(_)) => {}
                        Err(e) => return Err(e),
                    }
                    self.forget(lease.id);
                    report.cleaned.push(lease.id);
                }
                Err(reason) => {
                    tracing::warn!(lease_id = %lease.id, %reason, "lease cleanup failed; will retry");
                    let parked = self
                        .store
                        .transition_lease(
                            lease.id,
                            LeaseEvent::CleanupFailed,
                            Some(CleanupStatus::Failed),
                        )
                        .await;
                    match parked {
                        Ok(_) | Err(berth_store::StoreError::IllegalTransition(_)) => {}
                        Err(e) => return Err(e),
                    }
                    self.schedule_retry(lease.id, now);
                    report.cleanup_failed.push(lease.id);
                }
            }
        }
        let grace = chrono::Duration::from_std(self.orphan_grace)
            .unwrap_or_else(|_| chrono::Duration::seconds(300));
        let message = "the run's executor stopped renewing its lease (the control plane \
                       instance died or lost the database); the reaper stopped the agent";
        for id in self
            .store
            .fail_runs_of_expired_leases(Utc::now() - grace, "lease_lost", message)
            .await?
        {
            tracing::warn!(run = %id, "run orphaned by a dead executor marked failed");
            let _ = self
                .store
                .append_run_event(
                    id,
                    "lifecycle",
                    serde_json::json!({"step": "orphaned", "message": message}),
                )
                .await;
            report.orphaned_runs.push(id);
        }
        Ok(report)
    }

    async fn awaits_adoption(
        &self,
        lease: &Lease,
        now: chrono::DateTime<Utc>,
    ) -> Result<bool, berth_store::StoreError> {
        if self.orphan_grace.is_zero()
            || lease.status != LeaseStatus::Expired
            || lease.failure_reason.as_deref() != Some("expired")
        {
            return Ok(false);
        }
        let grace = chrono::Duration::from_std(self.orphan_grace)
            .unwrap_or_else(|_| chrono::Duration::seconds(300));
        if lease.updated_at <= now - grace {
            return Ok(false);
        }
        let Some(run_id) = lease.run_id else {
            return Ok(false);
        };
        Ok(self
            .store
            .get_run(run_id)
            .await?
            .is_some_and(|r| r.status == berth_core::RunStatus::Running))
    }

    fn due(&self, id: LeaseId, now: chrono::DateTime<Utc>) -> bool {
        self.backoff
            .lock()
            .map(|b| b.get(&id).is_none_or(|(_, next)| *next <= now))
            .unwrap_or(true)
    }

    fn schedule_retry(&self, id: LeaseId, now: chrono::DateTime<Utc>) {
        if let Ok(mut b) = self.backoff.lock() {
            let attempts = b.get(&id).map(|(n, _)| n + 1).unwrap_or(1);
            // 5 s, 10 s, 20 s … capped at 10 min.
            let delay = (5i64 << attempts.min(7)).min(600);
            b.insert(id, (attempts, now + chrono::Duration::seconds(delay)));
        }
    }

    fn forget(&self, id: LeaseId) {
        if let Ok(mut b) = self.backoff.lock() {
            b.remove(&id);
        }
    }

    /// Sweep every `interval`, and collect remote garbage every [`GC_INTERVAL`], until the
    /// returned handle is aborted.
    pub fn spawn(self: Arc<Self>, interval: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_gc: Option<std::time::Instant> = None;
            loop {
                tick.tick().await;
                if let Err(e) = self.sweep().await {
                    tracing::error!(error = %e, "lease reaper sweep failed");
                }
                if last_gc.is_none_or(|t| t.elapsed() >= GC_INTERVAL) {
                    last_gc = Some(std::time::Instant::now());
                    match self.cleaner.collect_garbage().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            removed = n,
                            "removed remote workspace copies no lease accounts for"
                        ),
                        Err(e) => tracing::warn!(error = %e, "remote garbage collection failed"),
                    }
                }
            }
        })
    }
}

/// Cleans the environment side through the lease's environment transport: stops the process
/// group of the run and of each retry attempt (its id is in the run directory's `pgid` file;
/// TERM, grace, KILL, verified) and removes the run directories `<root>/.berth/runs/<runId>/`
/// and `<runId>-<n>/`; for leases that are not kept for reuse, also removes the
/// workspace copy `<root>/.berth/ws/<scope>/`. A lease whose environment is gone has nothing
/// left to clean that Berth can reach.
pub struct EnvironmentCleaner {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<SecretBox>,
    pub pool: SshPool,
    /// Where local runs keep their state (the orchestrator's `local_root`).
    pub local_root: PathBuf,
    /// How long a run's processes get between TERM and KILL.
    pub grace: Duration,
}

impl std::fmt::Debug for EnvironmentCleaner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvironmentCleaner").finish_non_exhaustive()
    }
}

/// Run directories of `run_id` from a remote listing of `<name> <pgid>` lines: only
/// `<runId>` and `<runId>-<n>` are accepted (the listing comes from the environment), with
/// their process group when it is a plausible one.
fn attempt_dirs(listing: &str, run_id: &str) -> Vec<(String, Option<u32>)> {
    listing
        .lines()
        .filter_map(|line| {
            let (name, pgid) = line.split_once(' ')?;
            let ours = name == run_id
                || name
                    .strip_prefix(run_id)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|n| {
                        !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit())
                    });
            ours.then(|| {
                let pgid = pgid.trim().parse::<u32>().ok().filter(|p| *p > 1);
                (name.to_string(), pgid)
            })
        })
        .collect()
}

/// A scope key as a directory name (`workspace:<uuid>` → `workspace-<uuid>`).
pub fn scope_dir(scope_key: &str) -> String {
    scope_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl EnvironmentCleaner {
    /// Whether an active or retained lease with a higher fence holds `lease`'s scope.
    async fn newer_holder(&self, lease: &Lease) -> Result<bool, berth_store::StoreError> {
        Ok(self
            .leases_of(
                lease.environment_id,
                &[LeaseStatus::Active, LeaseStatus::Retained],
            )
            .await?
            .iter()
            .any(|l| l.scope_key == lease.scope_key && l.fence > lease.fence))
    }

    /// Every lease of `env` in one of `statuses` (all of them for none), every page.
    async fn leases_of(
        &self,
        env: berth_core::EnvironmentId,
        statuses: &[LeaseStatus],
    ) -> Result<Vec<Lease>, berth_store::StoreError> {
        let filters: Vec<Option<LeaseStatus>> = if statuses.is_empty() {
            vec![None]
        } else {
            statuses.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for status in filters {
            let mut cursor = None;
            loop {
                let page = Page {
                    limit: Page::MAX_LIMIT,
                    cursor: cursor.take(),
                };
                let got = self.store.list_leases(env, status, &page).await?;
                out.extend(got.items);
                match got.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Every environment Berth can reach (local and SSH, not archived), across companies.
    async fn reachable_environments(&self) -> Result<Vec<Environment>, String> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = Page {
                limit: Page::MAX_LIMIT,
                cursor: cursor.take(),
            };
            let companies = self
                .store
                .list_companies(&page)
                .await
                .map_err(|e| e.to_string())?;
            for company in companies.items {
                let mut env_cursor = None;
                loop {
                    let page = Page {
                        limit: Page::MAX_LIMIT,
                        cursor: env_cursor.take(),
                    };
                    let envs = self
                        .store
                        .list_environments(company.id, &EnvironmentFilter::default(), &page)
                        .await
                        .map_err(|e| e.to_string())?;
                    out.extend(envs.items.into_iter().filter(|e| {
                        matches!(e.driver, Driver::Local | Driver::Ssh | Driver::Sandbox)
                            && e.status != EnvironmentStatus::Archived
                    }));
                    match envs.next_cursor {
                        Some(c) => env_cursor = Some(c),
                        None => break,
                    }
                }
            }
            match companies.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Scope directories of the leases that may still use their copy on `env`.
    async fn live_scopes(&self, env: &Environment) -> Result<Vec<String>, String> {
        let leases = self
            .leases_of(env.id, &[LeaseStatus::Active, LeaseStatus::Retained])
            .await
            .map_err(|e| e.to_string())?;
        Ok(leases.iter().map(|l| scope_dir(&l.scope_key)).collect())
    }
}

/// A lease whose remote state could not be cleaned (the environment did not answer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrandedLease {
    pub lease_id: LeaseId,
    pub scope_key: String,
    pub reason: String,
}

impl EnvironmentCleaner {
    /// Before an environment is deleted: clean everything its leases left on it (stop and
    /// remove run directories, remove workspace copies, retained ones included), so nothing
    /// is stranded on the host once the lease rows are gone. Active leases must have been
    /// released or expired first. Returns what could not be cleaned; deleting the environment
    /// then strands it.
    pub async fn clean_environment(
        &self,
        env: &Environment,
    ) -> Result<Vec<StrandedLease>, berth_store::StoreError> {
        let leases = self.leases_of(env.id, &[]).await?;
        let mut stranded = Vec::new();
        let mut copies = std::collections::BTreeSet::new();
        for mut lease in leases {
            if lease.status == LeaseStatus::Active {
                continue;
            }
            copies.insert(scope_dir(&lease.scope_key));
            let pending = matches!(
                lease.status,
                LeaseStatus::Retained | LeaseStatus::Expired | LeaseStatus::PendingCleanup
            ) || matches!(
                lease.cleanup_status,
                Some(CleanupStatus::Pending | CleanupStatus::Failed)
            );
            if !pending {
                continue;
            }
            if lease.status == LeaseStatus::Retained {
                match self
                    .store
                    .transition_lease(lease.id, LeaseEvent::Destroy, Some(CleanupStatus::Pending))
                    .await
                {
                    Ok(l) => lease = l,
                    Err(berth_store::StoreError::IllegalTransition(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            let (event, status) = match self.cleanup(&lease).await {
                Ok(()) => (LeaseEvent::CleanupSucceeded, CleanupStatus::Success),
                Err(reason) => {
                    stranded.push(StrandedLease {
                        lease_id: lease.id,
                        scope_key: lease.scope_key.clone(),
                        reason,
                    });
                    (LeaseEvent::CleanupFailed, CleanupStatus::Failed)
                }
            };
            match self
                .store
                .transition_lease(lease.id, event, Some(status))
                .await
            {
                Ok(_) | Err(berth_store::StoreError::IllegalTransition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Copies of scopes whose leases ended without a cleanup (a failed run's copy waits
        // for the garbage collector, which cannot reach a deleted environment).
        if stranded.is_empty() && !copies.is_empty() {
            let removed = self.remove_copies(env, &copies).await;
            if let Err(reason) = removed {
                stranded.push(StrandedLease {
                    lease_id: LeaseId(uuid::Uuid::nil()),
                    scope_key: "*".into(),
                    reason,
                });
            }
        }
        // A sandbox's whole root (its HOME, assets and sockets as well as the copies) is this
        // host's and this environment's alone: it goes with the environment.
        if stranded.is_empty() && env.driver == Driver::Sandbox {
            let root = crate::resolve::sandbox_root(&self.local_root, env.id);
            match tokio::fs::remove_dir_all(&root).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => stranded.push(StrandedLease {
                    lease_id: LeaseId(uuid::Uuid::nil()),
                    scope_key: "*".into(),
                    reason: format!("failed to remove the sandbox root {}: {e}", root.display()),
                }),
            }
        }
        Ok(stranded)
    }

    async fn remove_copies(
        &self,
        env: &Environment,
        scopes: &std::collections::BTreeSet<String>,
    ) -> Result<(), String> {
        let (transport, root) = transport_for(
            self.store.as_ref(),
            &self.secrets,
            &self.pool,
            &self.local_root,
            env,
        )
        .await
        .map_err(|e| e.to_string())?;
        let layout = berth_exec::RemoteLayout::new(&root);
        let scopes: Vec<&String> = scopes.iter().collect();
        for chunk in scopes.chunks(200) {
            let paths: Vec<String> = chunk
                .iter()
                .map(|s| quote(&layout.workspace_copy(s)))
                .collect();
            let done = transport
                .run(
                    &format!("rm -rf -- {}", paths.join(" ")),
                    bytes::Bytes::new(),
                )
                .await
                .map_err(|e| e.to_string())?;
            if !done.outcome.success() {
                return Err(format!(
                    "failed to remove workspace copies on {}: {}",
                    transport.describe(),
                    done.stderr_text().trim()
                ));
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl LeaseCleaner for EnvironmentCleaner {
    /// Workspace copies under `<root>/.berth/ws/` of every reachable environment whose scope
    /// has no active or retained lease, idle for [`GC_IDLE_MINUTES`]: left by a lease row that
    /// vanished (its company deleted, a database restored) or a crash between release and
    /// cleanup. An unreachable environment is skipped and tried at the next collection.
    async fn collect_garbage(&self) -> Result<usize, String> {
        let mut removed = 0;
        for env in self.reachable_environments().await? {
            let keep = self.live_scopes(&env).await?;
            let reached = transport_for(
                self.store.as_ref(),
                &self.secrets,
                &self.pool,
                &self.local_root,
                &env,
            )
            .await;
            let (transport, root) = match reached {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(environment_id = %env.id, error = %e, "garbage collection skipped");
                    continue;
                }
            };
            match berth_sync::gc_idle_remote_scopes(
                transport.as_ref(),
                &root,
                &keep,
                GC_IDLE_MINUTES,
            )
            .await
            {
                Ok(scopes) => {
                    for scope in &scopes {
                        tracing::info!(environment_id = %env.id, scope, "removed a workspace copy no lease accounts for");
                    }
                    removed += scopes.len();
                }
                Err(e) => {
                    tracing::warn!(environment_id = %env.id, error = %e, "garbage collection failed on this environment");
                }
            }
        }
        Ok(removed)
    }

    async fn cleanup(&self, lease: &Lease) -> Result<(), String> {
        let Some(env) = self
            .store
            .get_environment(lease.environment_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let (transport, root) = transport_for(
            self.store.as_ref(),
            &self.secrets,
            &self.pool,
            &self.local_root,
            &env,
        )
        .await
        .map_err(|e| e.to_string())?;
        let launcher = Launcher::new(transport.clone(), root.clone());
        if let Some(run_id) = lease.run_id {
            // The run's directory and those of its retry attempts (`<runId>-<n>`), each with
            // the process group it recorded.
            let runs = berth_exec::RemoteLayout::new(&root).runs_dir();
            let listing = transport
                .run(
                    &format!(
                        "cd {} 2>/dev/null || exit 0; id={}; for d in \"$id\" \"$id\"-*; do \
                         [ -d \"$d\" ] || continue; p=$(cat \"$d/pgid\" 2>/dev/null) || p=0; \
                         printf '%s %s\\n' \"$d\" \"${{p:-0}}\"; done",
                        quote(&runs),
                        quote(&run_id.to_string())
                    ),
                    bytes::Bytes::new(),
                )
                .await
                .map_err(|e| e.to_string())?;
            for (name, pgid) in attempt_dirs(&listing.stdout_text(), &run_id.to_string()) {
                let run = RemoteRun {
                    run_id: name.clone(),
                    dir: format!("{runs}/{name}"),
                    pgid: pgid.unwrap_or(0),
                };
                if pgid.is_some() {
                    launcher
                        .stop(&run, self.grace, StopReason::Timeout)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                launcher.cleanup(&run).await.map_err(|e| e.to_string())?;
            }
        }
        // Fencing: a newer lease of the same scope (a run that started after this one
        // expired) owns the copy now; removing it would delete that run's live workspace.
        let keep_copy = matches!(lease.status, LeaseStatus::Retained)
            || self.newer_holder(lease).await.map_err(|e| e.to_string())?;
        if !keep_copy {
            let ws =
                berth_exec::RemoteLayout::new(&root).workspace_copy(&scope_dir(&lease.scope_key));
            let done = transport
                .run(&format!("rm -rf -- {}", quote(&ws)), bytes::Bytes::new())
                .await
                .map_err(|e| e.to_string())?;
            if !done.outcome.success() {
                return Err(format!(
                    "failed to remove {ws} on {}: {}",
                    transport.describe(),
                    done.stderr_text().trim()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_runs_own_directories_are_taken_from_a_listing() {
        let id = "01a2528d-dea2-7421-b356-4dfad70ac6fa";
        let listing = format!(
            "{id} 4242\n{id}-2 4343\n{id}-2x 1\n{id}-../../etc 7\n{id}-3 0\n{id}-4 1\nother 9\n{id}-5 junk\n"
        );
        assert_eq!(
            attempt_dirs(&listing, id),
            vec![
                (id.to_string(), Some(4242)),
                (format!("{id}-2"), Some(4343)),
                (format!("{id}-3"), None),
                (format!("{id}-4"), None),
                (format!("{id}-5"), None),
            ]
        );
    }
}
