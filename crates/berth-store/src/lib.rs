//! Berth's persistence. One [`Store`] trait, two implementations: [`sqlite::SqliteStore`]
//! (embedded default, WAL) and [`postgres::PgStore`] (several control-plane instances sharing
//! the work). Each backend has its own dialect's migrations embedded in the binary.
//!
//! Rules that are pure (lease transitions, release by outcome, config validation) live in
//! `berth-core`; this crate applies them with guarded SQL so that an illegal or stale update is
//! an error, never a silent overwrite. `tests/conformance.rs` runs every method against both
//! backends.
//!
//! Must not depend on axum, russh or anything that spawns processes.

mod codec;
mod error;
pub mod postgres;
pub mod sqlite;
mod types;
mod waiters;

pub use error::{ConflictCode, StoreError};
pub use types::*;

use async_trait::async_trait;
use berth_core::lease::{LeaseEvent, RunOutcome};
use berth_core::model::*;
use berth_core::*;
use chrono::{DateTime, Utc};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Everything Berth persists. Every method is one transaction unless it says otherwise.
///
/// Company scoping is the caller's job for `get_*` by id (they return the row whatever its
/// company, and the API answers 404 for another company's row); list methods take the company.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    // ---- companies ----------------------------------------------------------------------

    /// Create a company and, in the same transaction, its managed local environment.
    async fn create_company(&self, name: &str) -> Result<Company>;
    /// On a fresh database create the company `default` (with its local environment); else
    /// return the oldest company. Safe under concurrency.
    async fn ensure_default_company(&self) -> Result<Company>;
    async fn get_company(&self, id: CompanyId) -> Result<Option<Company>>;
    async fn list_companies(&self, page: &Page) -> Result<PageOf<Company>>;
    /// Set or clear the company default environment (must belong to the company: else
    /// `NotFound`).
    /// Grant or withdraw running agents on the control-plane host (`hostExecution`).
    async fn set_company_host_execution(&self, id: CompanyId, allowed: bool) -> Result<Company>;
    async fn set_company_default_environment(
        &self,
        id: CompanyId,
        environment_id: Option<EnvironmentId>,
    ) -> Result<Company>;

    // ---- environments -------------------------------------------------------------------

    /// Insert the managed local environment (name `Local`, metadata
    /// `{"managedByBerth":true,"defaultForCompany":true}`) if the company has no local
    /// environment; return the existing one untouched otherwise. Idempotent and safe under
    /// concurrency (the partial unique index decides; exactly one row ever exists).
    async fn ensure_local_environment(&self, company_id: CompanyId) -> Result<Environment>;
    /// Insert an environment together with the secrets its config references, atomically.
    /// Duplicate name in the company → `Conflict(EnvironmentNameTaken)`; a second `local` →
    /// `Conflict(LocalEnvironmentExists)`. Nothing is written on error.
    async fn create_environment(
        &self,
        new: NewEnvironment,
        secrets: Vec<NewSecret>,
    ) -> Result<Environment>;
    async fn get_environment(&self, id: EnvironmentId) -> Result<Option<Environment>>;
    async fn list_environments(
        &self,
        company_id: CompanyId,
        filter: &EnvironmentFilter,
        page: &Page,
    ) -> Result<PageOf<Environment>>;
    /// Apply `patch` (fields present only; `updated_at` always bumped), insert `new_secrets`,
    /// then delete each of `drop_secrets` that no environment config references any more —
    /// all in one transaction. Same conflicts as create. `NotFound` if missing.
    async fn update_environment(
        &self,
        id: EnvironmentId,
        patch: EnvironmentPatch,
        new_secrets: Vec<NewSecret>,
        drop_secrets: Vec<SecretId>,
    ) -> Result<Environment>;
    /// Delete an environment (SPEC §3), in one transaction:
    /// refuse with `Conflict(ManagedLocal)` / `Conflict(CompanyDefault)`; with active leases
    /// refuse with `Conflict(ActiveLeases)` (details `{activeLeaseCount}`) unless `force`, which
    /// first expires them (status `expired`, failure_reason `environment_deleted`, cleanup
    /// `pending`); clear every JSON selection naming it (issues' `executionWorkspaceSettings`,
    /// projects' `executionWorkspacePolicy`, execution workspaces' `config`: `environmentId`
    /// set to null); null agent defaults; delete the secrets its config references unless
    /// another environment references them; delete the row; return it.
    async fn delete_environment(&self, id: EnvironmentId, force: bool) -> Result<Environment>;
    /// Counts used by the delete guard and the UI's blast radius.
    async fn environment_references(&self, id: EnvironmentId) -> Result<EnvironmentReferences>;

    // ---- leases -------------------------------------------------------------------------

    /// Acquire a lease (SPEC §5):
    /// - single flight: at most one `active` lease per `(environment_id, scope_key)`;
    /// - capacity: at most `environments.capacity` active leases per environment (null =
    ///   unlimited);
    /// - when blocked: with `wait = None` fail at once with `Conflict(LeaseConflict)`
    ///   (`environment_lease_conflict`); with `wait = Some(d)` wait up to `d`, woken when a
    ///   lease of the environment is released or expired, waiters served in FIFO order, then
    ///   `LeaseWaitTimeout`;
    /// - a `retained` lease of the same `(environment, scope_key)` is resumed: it becomes
    ///   `released` and the new lease carries `resumed_from_lease_id` (and inherits its
    ///   `provider_lease_id` and `metadata` when the request gives none);
    /// - every acquisition takes a strictly increasing `fence` (global);
    /// - `expires_at = now + ttl`, `heartbeat_at = acquired_at = last_used_at = now`.
    async fn acquire_lease(&self, request: AcquireLease) -> Result<Lease>;
    /// Extend an active lease: `expires_at = now + ttl`, `heartbeat_at = now`. A lease that is
    /// not active, has another fence, or is past `expires_at` → `LeaseLost`.
    async fn renew_lease(&self, id: LeaseId, fence: i64, ttl_secs: i64) -> Result<Lease>;
    /// Release an active lease by run outcome with the policy table of
    /// `berth_core::lease::release_target`; sets `released_at` (except `retained`),
    /// `failure_reason`, `cleanup_status`. Stale fence or not active → `LeaseLost`.
    /// Wakes waiters of the environment.
    async fn release_lease(
        &self,
        id: LeaseId,
        fence: i64,
        outcome: RunOutcome,
        cleanup_status: Option<CleanupStatus>,
    ) -> Result<Lease>;
    /// Apply a non-release event (`Expire`, `Resume`, `Destroy`, `CleanupFailed`,
    /// `CleanupSucceeded`) through `berth_core::lease::transition`, guarded on the current
    /// status; an illegal one → `IllegalTransition`. Wakes waiters when a lease leaves `active`.
    async fn transition_lease(
        &self,
        id: LeaseId,
        event: LeaseEvent,
        cleanup_status: Option<CleanupStatus>,
    ) -> Result<Lease>;
    /// The reaper's sweep: every `active` lease with `expires_at <= now` becomes `expired`
    /// (failure_reason `expired`, cleanup_status `pending`). Returns them. Wakes waiters.
    async fn expire_due_leases(&self, now: DateTime<Utc>) -> Result<Vec<Lease>>;
    /// Leases needing cleanup or destruction: status `pending_cleanup`, or `expired`/`failed`/
    /// `released` with cleanup_status `pending`, or `retained` whose `last_used_at` is before
    /// `retained_before`.
    async fn leases_needing_cleanup(
        &self,
        retained_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Lease>>;
    /// Replace the lease metadata (active lease with this fence only, else `LeaseLost`).
    async fn set_lease_metadata(
        &self,
        id: LeaseId,
        fence: i64,
        metadata: serde_json::Value,
    ) -> Result<Lease>;
    async fn get_lease(&self, id: LeaseId) -> Result<Option<Lease>>;
    async fn list_leases(
        &self,
        environment_id: EnvironmentId,
        status: Option<LeaseStatus>,
        page: &Page,
    ) -> Result<PageOf<Lease>>;

    // ---- secrets ------------------------------------------------------------------------

    /// Insert a secret (ciphertext only). Duplicate name in the company → `Conflict`.
    async fn create_secret(&self, secret: NewSecret) -> Result<SecretMeta>;
    async fn get_secret(&self, id: SecretId) -> Result<Option<SecretRecord>>;
    async fn list_secrets(&self, company_id: CompanyId, page: &Page) -> Result<PageOf<SecretMeta>>;
    /// Delete a secret; `false` if it did not exist.
    async fn delete_secret(&self, id: SecretId) -> Result<bool>;

    // ---- agents, projects, issues, execution workspaces -----------------------------------

    async fn create_agent(&self, new: NewAgent) -> Result<Agent>;
    async fn get_agent(&self, id: AgentId) -> Result<Option<Agent>>;
    async fn list_agents(&self, company_id: CompanyId, page: &Page) -> Result<PageOf<Agent>>;
    async fn update_agent(&self, id: AgentId, patch: AgentPatch) -> Result<Agent>;
    async fn delete_agent(&self, id: AgentId) -> Result<bool>;

    async fn create_project(&self, new: NewProject) -> Result<Project>;
    async fn get_project(&self, id: ProjectId) -> Result<Option<Project>>;
    async fn list_projects(&self, company_id: CompanyId, page: &Page) -> Result<PageOf<Project>>;
    async fn update_project(&self, id: ProjectId, patch: ProjectPatch) -> Result<Project>;
    async fn delete_project(&self, id: ProjectId) -> Result<bool>;

    async fn create_issue(&self, new: NewIssue) -> Result<Issue>;
    async fn get_issue(&self, id: IssueId) -> Result<Option<Issue>>;
    async fn list_issues(&self, company_id: CompanyId, page: &Page) -> Result<PageOf<Issue>>;
    async fn update_issue(&self, id: IssueId, patch: IssuePatch) -> Result<Issue>;
    async fn delete_issue(&self, id: IssueId) -> Result<bool>;

    async fn create_execution_workspace(
        &self,
        new: NewExecutionWorkspace,
    ) -> Result<ExecutionWorkspace>;
    async fn get_execution_workspace(
        &self,
        id: ExecutionWorkspaceId,
    ) -> Result<Option<ExecutionWorkspace>>;
    async fn list_execution_workspaces(
        &self,
        company_id: CompanyId,
        page: &Page,
    ) -> Result<PageOf<ExecutionWorkspace>>;
    async fn update_execution_workspace(
        &self,
        id: ExecutionWorkspaceId,
        patch: ExecutionWorkspacePatch,
    ) -> Result<ExecutionWorkspace>;
    async fn delete_execution_workspace(&self, id: ExecutionWorkspaceId) -> Result<bool>;

    // ---- runs and their events ------------------------------------------------------------

    async fn create_run(&self, new: NewRun) -> Result<Run>;
    async fn get_run(&self, id: RunId) -> Result<Option<Run>>;
    async fn list_runs(
        &self,
        company_id: CompanyId,
        status: Option<RunStatus>,
        page: &Page,
    ) -> Result<PageOf<Run>>;
    /// The session parameters of the newest run of `agent_id` on `workspace_id` (or on no
    /// workspace) that saved any, other than `except`: what a new run may resume.
    async fn latest_session_params(
        &self,
        company_id: CompanyId,
        agent_id: AgentId,
        workspace_id: Option<ExecutionWorkspaceId>,
        except: RunId,
    ) -> Result<Option<serde_json::Value>>;
    /// Apply `patch`; a run already in a terminal status cannot change status again
    /// (`IllegalRunTransition`).
    async fn update_run(&self, id: RunId, patch: RunPatch) -> Result<Run>;
    /// Claim the oldest `queued` run for `claimer` (status `running`, `claimed_by`,
    /// `started_at`); `SKIP LOCKED` on Postgres. `None` when nothing is queued.
    async fn claim_next_run(&self, claimer: &str) -> Result<Option<Run>>;
    /// Ask whichever instance executes the run to cancel it (recorded on the run, so another
    /// instance sharing the database sees it); `false` when the run already ended.
    async fn request_run_cancel(&self, id: RunId) -> Result<bool>;
    /// Mark every `running` run not claimed by `claimer` as `failed` with `error_code` and
    /// `message`, returning their ids: for a single-process store (SQLite) after a restart,
    /// when those runs' executor is gone.
    async fn fail_runs_not_claimed_by(
        &self,
        claimer: &str,
        error_code: &str,
        message: &str,
    ) -> Result<Vec<RunId>>;
    /// Mark `failed` every `running` run whose lease the reaper expired (its holder stopped
    /// renewing it) before `expired_before`: its executor is gone, or it would have ended the
    /// run itself by now. Returns their ids.
    async fn fail_runs_of_expired_leases(
        &self,
        expired_before: DateTime<Utc>,
        error_code: &str,
        message: &str,
    ) -> Result<Vec<RunId>>;
    /// Take over every `running` run not claimed by `claimer` (`claimed_by = claimer`) and
    /// return them: for a single-process store (SQLite) after a restart, whose previous
    /// process is gone, so its runs' agents can be re-attached.
    async fn reclaim_runs_not_claimed_by(&self, claimer: &str) -> Result<Vec<Run>>;
    /// Take over runs whose executor stopped renewing their lease (another instance died or
    /// detached): the run is `running` with a launched agent (a remote session), its lease
    /// was expired by the reaper and its cleanup has not run, and no newer lease holds the
    /// scope. The lease becomes `active` again under a new fence (the old holder, should it
    /// come back, is fenced out) for `ttl_secs`, and the run is claimed by `claimer`.
    /// At most `limit` runs.
    async fn adopt_orphaned_runs(
        &self,
        claimer: &str,
        ttl_secs: i64,
        limit: u32,
    ) -> Result<Vec<(Run, Lease)>>;
    /// Say that the instance `id` (a worker's claimer) is alive; forgets instances silent for
    /// a day.
    async fn heartbeat_instance(&self, id: &str) -> Result<()>;
    /// Claim (`claimed_by = claimer`) the `running` runs of instances whose last heartbeat is
    /// older than `silent_before` and that never launched their agent: phase unset, `select`,
    /// `lease` or `realize`, and no remote session recorded. The caller queues them again.
    async fn claim_runs_of_silent_instances(
        &self,
        claimer: &str,
        silent_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Run>>;
    /// Record the phase a `running` run has reached (see `Run::phase`).
    async fn set_run_phase(&self, id: RunId, phase: &str) -> Result<()>;
    /// Put a `running` run claimed by `claimer` back in the queue (it never launched its
    /// agent: running it again from the start loses nothing) — or end it `cancelled` when a
    /// cancel was asked for meanwhile; `false` if it is not so.
    async fn requeue_run(&self, id: RunId, claimer: &str) -> Result<bool>;
    /// Record where a run's agent runs on its environment (opaque JSON written by the engine
    /// at launch; never a secret), replacing what was recorded before.
    async fn save_remote_session(
        &self,
        run_id: RunId,
        lease_id: Option<LeaseId>,
        session: serde_json::Value,
    ) -> Result<()>;
    /// What [`Store::save_remote_session`] recorded for the run, if anything.
    async fn get_remote_session(&self, run_id: RunId) -> Result<Option<serde_json::Value>>;
    /// `running` runs claimed by `claimer` with a cancel request pending.
    async fn cancel_requested_runs(&self, claimer: &str) -> Result<Vec<RunId>>;
    /// Append an event with the next `seq` of the run (1, 2, 3, …), durable and ordered.
    async fn append_run_event(
        &self,
        run_id: RunId,
        stream: &str,
        payload: serde_json::Value,
    ) -> Result<RunEvent>;
    /// Events with `seq > after_seq`, in order, at most `limit`.
    async fn list_run_events(
        &self,
        run_id: RunId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<RunEvent>>;

    // ---- API tokens -----------------------------------------------------------------------

    /// Store a token by the SHA-256 of its value (the value itself is never stored).
    async fn create_token(&self, token: ApiToken, sha256_hex: &str) -> Result<ApiToken>;
    /// The unrevoked token with this hash; bumps `last_used_at`.
    async fn find_token_by_hash(&self, sha256_hex: &str) -> Result<Option<ApiToken>>;
    async fn list_tokens(&self, page: &Page) -> Result<PageOf<ApiToken>>;
    /// Set `revoked_at`; `false` if missing or already revoked.
    async fn revoke_token(&self, id: TokenId) -> Result<bool>;
    async fn count_active_tokens(&self) -> Result<u64>;

    // ---- gauges for /metrics --------------------------------------------------------------

    /// How many runs are in each status (statuses with no run are omitted).
    async fn run_status_counts(&self) -> Result<Vec<(RunStatus, u64)>>;
    /// How many leases are in each status (statuses with no lease are omitted).
    async fn lease_status_counts(&self) -> Result<Vec<(LeaseStatus, u64)>>;

    // ---- instance settings and activity ---------------------------------------------------

    async fn get_experimental_settings(&self) -> Result<ExperimentalSettings>;
    async fn set_experimental_settings(
        &self,
        settings: &ExperimentalSettings,
    ) -> Result<ExperimentalSettings>;
    async fn log_activity(&self, entry: NewActivity) -> Result<ActivityEntry>;
    async fn list_activity(
        &self,
        company_id: CompanyId,
        page: &Page,
    ) -> Result<PageOf<ActivityEntry>>;

    // ---- whole-database copy (`berth db copy`) --------------------------------------------

    /// Every row of every table, in an order that satisfies foreign keys on import.
    /// Whether this instance is the one running the lease reaper now (PostgreSQL: it holds
    /// an advisory lock, kept while its connection lives; SQLite: always). Call before each
    /// sweep.
    async fn hold_reaper_lock(&self) -> Result<bool>;

    async fn export_all(&self) -> Result<Dump>;
    /// Insert a dump into an empty database (else `Conflict(NotEmpty)`), one transaction.
    async fn import_all(&self, dump: Dump) -> Result<()>;
}
