//! One run from claim to final status. Restore and release run on every path: every early
//! return below the lease goes through [`Orchestrator::with_lease`]'s single exit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_agents::{Event, RemoteIdentity, RunSummary, SessionParams, Stream, should_resume};
use berth_core::config::{DriverConfig, WorkspaceMode};
use berth_core::lease::{DEFAULT_TTL_SECS, RunOutcome as LeaseOutcome, scope_key};
use berth_core::model::{Environment, Run};
use berth_core::{CleanupStatus, Driver, EnvironmentSource, RunStatus, Secret};
use berth_exec::launcher::{
    AttachEvent, LaunchSpec, Launcher, LauncherError, Offsets, RemoteRun, StopReason, StreamKind,
};
use berth_exec::shell::quote;
use berth_exec::{RemoteLayout, SshPool, Transport};
use berth_store::{AcquireLease, ExecutionWorkspacePatch, RunPatch, Store, StoreError};
use chrono::Utc;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::error::{ErrorCode, RunError};
use super::events::EventLog;
use super::reattach::RemoteSession;
use super::select::{RunContext, load_context, select_environment};
use crate::holder::HeldLease;
use crate::reaper::scope_dir;
use crate::resolve::transport_for;
use crate::secrets::SecretBox;

/// Longest run timeout honoured (7 days, as `timeoutSec` is validated): a stored config from
/// before validation cannot make a sleep overflow.
const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The wait between TERM and KILL for `graceSec`: at least 1 s, at most
/// [`MAX_STOP_GRACE`](berth_exec::launcher::MAX_STOP_GRACE), so no arithmetic on it can overflow.
fn stop_grace(grace_sec: u64) -> Duration {
    let max = berth_exec::launcher::MAX_STOP_GRACE.as_secs();
    Duration::from_secs(grace_sec.clamp(1, max))
}

/// The run's time limit for `timeoutSec` (0 = none), capped at [`MAX_RUN_TIMEOUT`].
fn run_timeout(timeout_sec: u64) -> Option<Duration> {
    (timeout_sec > 0).then(|| Duration::from_secs(timeout_sec).min(MAX_RUN_TIMEOUT))
}

/// Sync options from an execution workspace's config (`exclude`, `syncIgnored`), with
/// transfer progress as run events.
fn sync_options(config: &Value, log: &EventLog) -> berth_sync::SyncOptions {
    let excludes = config
        .get("exclude")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let log = log.clone();
    let handle = tokio::runtime::Handle::current();
    let last = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let progress = berth_sync::ProgressFn::new(move |p: berth_sync::Progress| {
        // A few events a second at most: progress is for people, not a byte log.
        if let Ok(mut at) = last.lock() {
            if at.is_some_and(|t| t.elapsed() < Duration::from_millis(250)) {
                return;
            }
            *at = Some(std::time::Instant::now());
        }
        let log = log.clone();
        handle.spawn(async move {
            log.append(
                "progress",
                json!({"phase": format!("{:?}", p.phase), "files": p.files, "bytes": p.bytes, "bytesPerSec": p.bytes_per_sec}),
            )
            .await;
        });
    });
    berth_sync::SyncOptions {
        excludes,
        sync_ignored: config
            .get("syncIgnored")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        state_dir: None,
        progress: Some(progress),
        spool_entries: None,
    }
}

/// How a run ended, before it is written to the run row.
#[derive(Debug, Clone)]
pub(crate) struct Finish {
    status: RunStatus,
    error: Option<RunError>,
    exit_code: Option<i64>,
    session_params: Option<Value>,
    result: Option<Value>,
    /// The agent's process group may still run (the stop could not be confirmed): the lease
    /// is released with cleanup pending, so the reaper stops it once the host answers.
    cleanup_pending: bool,
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

    fn lease_outcome(&self) -> LeaseOutcome {
        match self.status {
            RunStatus::Succeeded => LeaseOutcome::Succeeded,
            RunStatus::TimedOut => LeaseOutcome::TimedOut,
            RunStatus::Cancelled => LeaseOutcome::Cancelled,
            _ => LeaseOutcome::Failed,
        }
    }
}

/// Where and how a run's agent works on its environment (see [`Orchestrator::plan`]).
pub(crate) struct Plan {
    pub(crate) transport: Arc<dyn Transport>,
    /// The environment's root (`remoteWorkspacePath`, or the local root), no trailing `/`.
    pub(crate) root: String,
    pub(crate) cwd: String,
    pub(crate) identity: RemoteIdentity,
    /// The local workspace, where it goes on the environment, and how (none: no copy).
    pub(crate) sync: Option<(PathBuf, berth_sync::RemoteSpec, berth_sync::SyncOptions)>,
}

/// Where streaming starts: at the beginning, or where a previous process left off.
#[derive(Debug, Default)]
pub(crate) struct StreamStart {
    pub(crate) offsets: Offsets,
    /// The stdout and stderr already recorded for this attempt.
    pub(crate) replay: [Vec<u8>; 2],
    /// How long the agent has been running already (counts against its timeout).
    pub(crate) elapsed: Duration,
}

/// How often a failed stop is tried again, and the pause before each retry: a short
/// disconnect must not leave a cancelled agent running.
const STOP_RETRIES: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// Retry a failed stop until the group is confirmed gone (survivors are retried with KILL
/// too); the error of the last try when it never is.
async fn confirm_stopped(
    launcher: &Launcher,
    remote: &RemoteRun,
    mut result: Result<berth_exec::launcher::RunOutcome, LauncherError>,
    log: &EventLog,
) -> Result<(), LauncherError> {
    for pause in STOP_RETRIES {
        let Err(e) = result else {
            return Ok(());
        };
        log.step(
            "stop_failed",
            format!(
                "Stopping the agent failed: {e}; retrying in {} s.",
                pause.as_secs()
            ),
            json!({}),
        )
        .await;
        tokio::time::sleep(pause).await;
        result = launcher
            .stop(remote, Duration::from_secs(1), StopReason::Cancel)
            .await;
    }
    result.map(|_| ())
}

/// The last `max` bytes of `text` (cut at a character boundary).
fn tail_of(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let cut = text.len() - max;
    let cut = (cut..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[cut..].to_string()
}

/// Why Berth stopped an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    Cancelled,
    TimedOut,
    LeaseLost,
    /// The CLI printed its final result and then did not exit.
    Lingering,
}

/// What one attempt produced.
#[derive(Debug)]
pub(crate) struct Attempt {
    outcome: berth_exec::launcher::RunOutcome,
    stopped: Option<Stopped>,
    summary: RunSummary,
    unknown_session: bool,
    /// The CLI started a new session instead of the one it was asked to resume.
    resume_ignored: bool,
    stderr_tail: String,
    /// Why stopping the agent's group failed or could not be confirmed.
    pub(crate) survivors: Option<String>,
    /// The output stream could not be re-established (the environment stayed unreachable).
    lost_stream: Option<String>,
}

/// Runs runs. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Orchestrator {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<SecretBox>,
    pub pool: SshPool,
    /// `$BERTH_HOME`: no run works in it or above it (see [`crate::host`]).
    pub berth_home: PathBuf,
    /// Where local runs keep scratch and assets when their environment names no
    /// `workspaceRoot` (default: [`crate::host::default_local_root`]).
    pub local_root: PathBuf,
    /// Whether a company needs the `hostExecution` grant to run on this host — true while the
    /// server requires tokens. The default (`false`) suits an embedding with one user.
    pub host_grant_required: Arc<dyn Fn() -> bool + Send + Sync>,
    /// How long to wait for a busy workspace or a full environment (SPEC §5: 10 min).
    pub lease_wait: Duration,
    pub lease_ttl_secs: i64,
    /// A CLI that lingers after its final result is stopped after this long (SPEC §7: 5 s).
    pub linger: Duration,
    /// Where this instance's HTTP API listens, for `BERTH_API_URL` (reverse-forwarded to SSH
    /// environments). `None`: agents get no API URL.
    pub api_addr: Option<std::net::SocketAddr>,
    /// Cancelled on graceful shutdown: runs whose agent is running detach from it (see
    /// [`RunError::detached`]); runs restoring or releasing finish first.
    pub detach: CancellationToken,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").finish_non_exhaustive()
    }
}

impl Orchestrator {
    pub fn new(
        store: Arc<dyn Store>,
        secrets: Arc<SecretBox>,
        pool: SshPool,
        berth_home: PathBuf,
    ) -> Self {
        Self {
            store,
            secrets,
            pool,
            local_root: crate::host::default_local_root(&berth_home),
            host_grant_required: Arc::new(|| false),
            berth_home,
            lease_wait: Duration::from_secs(600),
            lease_ttl_secs: DEFAULT_TTL_SECS,
            linger: Duration::from_secs(5),
            api_addr: None,
            detach: CancellationToken::new(),
        }
    }

    /// Execute a claimed (`running`) run to its final status. Never panics, never leaves the
    /// run `running`: every failure becomes the run's status and error code.
    pub async fn execute(&self, run: Run, cancel: CancellationToken) -> Run {
        let log = EventLog::new(self.store.clone(), run.id);
        log.step("claimed", "Run started.", json!({})).await;
        let finish = match self.prepare_and_run(&run, &log, cancel).await {
            Ok(finish) => finish,
            Err(error) => Finish::failed(error),
        };
        self.conclude(run, finish, &log).await
    }

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

    async fn prepare_and_run(
        &self,
        run: &Run,
        log: &EventLog,
        cancel: CancellationToken,
    ) -> Result<Finish, RunError> {
        let ctx = self.load_context(run).await?;
        let (env, source) = select_environment(self.store.as_ref(), run.company_id, &ctx).await?;
        if let Err(denied) = crate::host::check_host_execution(
            self.store.as_ref(),
            run.company_id,
            &env,
            (self.host_grant_required)(),
        )
        .await?
        {
            return Err(RunError::new(
                ErrorCode::HostExecutionForbidden,
                denied.to_string(),
            ));
        }
        log.step(
            "environment_selected",
            format!(
                "Environment \"{}\" ({}) chosen by the {source} rule.",
                env.name, env.driver
            ),
            json!({"environmentId": env.id, "environmentSource": source, "driver": env.driver}),
        )
        .await;
        self.store
            .update_run(
                run.id,
                RunPatch {
                    environment_id: Some(Some(env.id)),
                    environment_source: Some(Some(source)),
                    execution_workspace_id: Some(ctx.workspace.as_ref().map(|w| w.id)),
                    ..RunPatch::default()
                },
            )
            .await?;
        self.pin_workspace(&ctx, &env, source).await?;

        // Step 2: the lease, waiting per policy, abandoned at once on cancel.
        let policy = env.lease_policy;
        let scope = scope_key(
            policy,
            ctx.workspace.as_ref().map(|w| w.id),
            Some(run.id),
            Some(run.agent_id),
        )
        .ok_or_else(|| RunError::new(ErrorCode::LeaseAcquireFailed, "no scope for the lease"))?;
        let request = AcquireLease {
            company_id: run.company_id,
            environment_id: env.id,
            scope_key: scope.clone(),
            policy,
            ttl_secs: self.lease_ttl_secs,
            execution_workspace_id: ctx.workspace.as_ref().map(|w| w.id),
            issue_id: run.issue_id,
            run_id: Some(run.id),
            agent_id: Some(run.agent_id),
            provider: Some(env.driver.to_string()),
            provider_lease_id: None,
            metadata: Some(json!({"driver": env.driver})),
            wait: Some(self.lease_wait),
        };
        log.step(
            "lease_waiting",
            "Acquiring a lease.",
            json!({"scopeKey": scope}),
        )
        .await;
        let held = tokio::select! {
            held = HeldLease::acquire(self.store.clone(), request) => held.map_err(|e| {
                RunError::new(ErrorCode::LeaseAcquireFailed, format!("could not lease environment \"{}\": {e}", env.name))
            })?,
            _ = cancel.cancelled() => return Err(RunError::new(ErrorCode::Cancelled, "cancelled while waiting for a lease")),
        };
        let lease = held.snapshot().await;
        log.step(
            "lease_acquired",
            format!("Lease acquired (fence {}).", lease.fence),
            json!({"leaseId": lease.id, "policy": policy, "resumedFromLeaseId": lease.resumed_from_lease_id}),
        )
        .await;
        self.store
            .update_run(
                run.id,
                RunPatch {
                    lease_id: Some(Some(lease.id)),
                    ..RunPatch::default()
                },
            )
            .await?;

        let finish = match self
            .with_lease(run, &ctx, &env, &scope, log, cancel, held.lost())
            .await
        {
            Ok(f) => f,
            // The lease stays active (no longer renewed) for the re-attaching process.
            Err(e) if e.is_detached() => return Err(e),
            Err(e) => Finish::failed(e),
        };
        self.release(held, finish, log).await
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

    async fn load_context(&self, run: &Run) -> Result<RunContext, RunError> {
        load_context(
            self.store.as_ref(),
            run.company_id,
            run.agent_id,
            run.issue_id,
            run.execution_workspace_id,
        )
        .await
    }

    /// SPEC §6: the chosen id is written into the execution workspace's config so reused
    /// workspaces stay on the environment they were created against.
    async fn pin_workspace(
        &self,
        ctx: &RunContext,
        env: &Environment,
        source: EnvironmentSource,
    ) -> Result<(), RunError> {
        let Some(ws) = &ctx.workspace else {
            return Ok(());
        };
        if source == EnvironmentSource::Workspace {
            return Ok(());
        }
        let mut config = ws.config.clone();
        if !config.is_object() {
            config = json!({});
        }
        if config.get("environmentId").is_some() {
            return Ok(());
        }
        config["environmentId"] = json!(env.id);
        self.store
            .update_execution_workspace(
                ws.id,
                ExecutionWorkspacePatch {
                    config: Some(config),
                    ..ExecutionWorkspacePatch::default()
                },
            )
            .await?;
        Ok(())
    }

    /// The newest saved session of this agent on this workspace.
    async fn saved_session(
        &self,
        run: &Run,
        ctx: &RunContext,
    ) -> Result<Option<SessionParams>, RunError> {
        let saved = self
            .store
            .latest_session_params(
                run.company_id,
                run.agent_id,
                ctx.workspace.as_ref().map(|w| w.id),
                run.id,
            )
            .await?;
        Ok(saved.and_then(|p| serde_json::from_value::<SessionParams>(p).ok()))
    }

    /// Where and how the agent works on `env`: transport, root, working directory, session
    /// identity and what to sync. No side effect on the environment.
    pub(crate) async fn plan(
        &self,
        run: &Run,
        ctx: &RunContext,
        env: &Environment,
        scope: &str,
        log: &EventLog,
    ) -> Result<Plan, RunError> {
        let (transport, root) = transport_for(
            self.store.as_ref(),
            &self.secrets,
            &self.pool,
            &self.local_root,
            env,
        )
        .await
        .map_err(|e| RunError::new(ErrorCode::WorkspaceRealizationFailed, e.to_string()))?;
        let root = root.trim_end_matches('/').to_string();
        let parsed = env.typed_config().map_err(|_| {
            RunError::new(
                ErrorCode::WorkspaceRealizationFailed,
                "the environment config is invalid",
            )
        })?;

        // Step 3: where the agent works, and what identity its session carries.
        // Scratch for a run without a workspace; the launcher owns `.berth/runs/<runId>/`.
        let layout = RemoteLayout::new(&root);
        let run_work = layout.scratch_dir(&run.id.to_string());
        let (cwd, identity) = match (&parsed.config, &ctx.workspace) {
            (DriverConfig::Local(_), ws) => {
                let cwd = ws
                    .as_ref()
                    .map_or_else(|| run_work.clone(), |ws| ws.local_path.clone());
                // The agent may read anything below its directory: never BERTH_HOME.
                for dir in [Path::new(&cwd), Path::new(&root)] {
                    if crate::host::overlaps_home(dir, &self.berth_home) {
                        return Err(RunError::new(
                            ErrorCode::WorkspaceRealizationFailed,
                            crate::host::home_overlap_message(dir, &self.berth_home),
                        ));
                    }
                }
                (cwd, RemoteIdentity::local())
            }
            (DriverConfig::Ssh(ssh), ws) => {
                let cwd = match (ssh.workspace_mode, &ssh.in_place_path, ws) {
                    (WorkspaceMode::InPlace, Some(p), _) => p.clone(),
                    (_, _, Some(_)) => layout.workspace_copy(&scope_dir(scope)),
                    (_, _, None) => run_work.clone(),
                };
                let identity = RemoteIdentity::ssh(&ssh.host, ssh.port, &ssh.username, &cwd);
                (cwd, identity)
            }
            (other, _) => {
                return Err(RunError::new(
                    ErrorCode::WorkspaceRealizationFailed,
                    format!(
                        "{} environments cannot run agents in this build",
                        other.driver()
                    ),
                ));
            }
        };
        // Copy workspaces to environments other than this host (in-place SSH works on the
        // developer's own checkout: no copy).
        let sync = match &ctx.workspace {
            Some(ws)
                if env.driver != Driver::Local
                    && !matches!(&parsed.config, DriverConfig::Ssh(s) if s.workspace_mode == WorkspaceMode::InPlace) =>
            {
                let spec =
                    berth_sync::RemoteSpec::new(root.clone(), scope_dir(scope)).map_err(|e| {
                        RunError::new(ErrorCode::WorkspaceRealizationFailed, e.to_string())
                    })?;
                Some((
                    PathBuf::from(&ws.local_path),
                    spec,
                    sync_options(&ws.config, log),
                ))
            }
            _ => None,
        };
        Ok(Plan {
            transport,
            root,
            cwd,
            identity,
            sync,
        })
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; the steps need all of it"
    )]
    async fn with_lease(
        &self,
        run: &Run,
        ctx: &RunContext,
        env: &Environment,
        scope: &str,
        log: &EventLog,
        cancel: CancellationToken,
        lost: CancellationToken,
    ) -> Result<Finish, RunError> {
        let plan = self.plan(run, ctx, env, scope, log).await?;
        let Plan {
            transport,
            root,
            cwd,
            identity,
            sync,
        } = &plan;
        if sync.is_some() && lost.is_cancelled() {
            return Err(RunError::new(
                ErrorCode::LeaseLost,
                "the lease was lost before the workspace was synced out",
            ));
        }
        if let Some((local, spec, opts)) = &sync {
            log.step(
                "workspace_sync_out",
                format!("Syncing {} to {}.", local.display(), transport.describe()),
                json!({}),
            )
            .await;
            let pushed = berth_sync::push(transport.as_ref(), local, spec, opts)
                .await
                .map_err(|e| RunError::new(ErrorCode::WorkspaceRealizationFailed, e.to_string()))?;
            log.step(
                "workspace_synced_out",
                format!(
                    "{} sync: {} file(s), {} byte(s){}.",
                    if pushed.full { "Full" } else { "Incremental" },
                    pushed.files,
                    pushed.bytes,
                    if pushed.git_bundle { ", git history included" } else { "" }
                ),
                json!({"full": pushed.full, "files": pushed.files, "bytes": pushed.bytes, "deleted": pushed.deleted}),
            )
            .await;
        }
        let prepared = transport
            .run(
                &format!("mkdir -p -- {} && id -u", quote(cwd)),
                bytes::Bytes::new(),
            )
            .await
            .map_err(|e| RunError::new(ErrorCode::WorkspaceRealizationFailed, e.to_string()))?;
        if !prepared.outcome.success() {
            return Err(RunError::new(
                ErrorCode::WorkspaceRealizationFailed,
                format!(
                    "cannot create {cwd} on {}: {}",
                    transport.describe(),
                    prepared.stderr_text().trim()
                ),
            ));
        }
        let is_root = prepared.stdout_text().trim() == "0";
        log.step(
            "workspace_realized",
            format!("The agent works in {cwd} on {}.", transport.describe()),
            json!({"cwd": cwd}),
        )
        .await;

        let outcome = self
            .run_agent(
                run,
                ctx,
                transport.clone(),
                root,
                cwd,
                identity,
                is_root,
                log,
                &cancel,
                &lost,
            )
            .await;
        if matches!(&outcome, Err(e) if e.is_detached()) {
            return outcome;
        }
        Ok(self.restore(run, &plan, outcome, log, &lost).await)
    }

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

    /// `BERTH_API_URL` as the environment reaches this instance (the address itself locally,
    /// a remote forward over SSH) and a `BERTH_API_TOKEN` valid while this run is active.
    /// Without it the run goes on without the API, and says why.
    async fn api_for_agent(
        &self,
        run: &Run,
        transport: &dyn Transport,
        log: &EventLog,
    ) -> Option<(String, Secret<String>)> {
        let local = self.api_addr?;
        let reachable = match transport.expose_local_port(local).await {
            Ok(Some(addr)) => addr,
            Ok(None) => return None,
            Err(e) => {
                log.step(
                    "api_unreachable",
                    format!("The agent gets no BERTH_API_URL: {e}."),
                    json!({}),
                )
                .await;
                return None;
            }
        };
        match self.secrets.run_token(run.id) {
            Ok(token) => Some((format!("http://{reachable}"), token)),
            Err(e) => {
                tracing::warn!(run = %run.id, error = %e, "cannot mint a run token");
                None
            }
        }
    }

    /// Steps 4-7: resume decision, launch, stream, retry once on an unknown session; the run
    /// directories are removed afterwards.
    #[allow(
        clippy::too_many_arguments,
        reason = "the steps need the whole run context"
    )]
    async fn run_agent(
        &self,
        run: &Run,
        ctx: &RunContext,
        transport: Arc<dyn Transport>,
        root: &str,
        cwd: &str,
        identity: &RemoteIdentity,
        is_root: bool,
        log: &EventLog,
        cancel: &CancellationToken,
        lost: &CancellationToken,
    ) -> Result<Finish, RunError> {
        let layout = RemoteLayout::new(root);
        let run_work = layout.scratch_dir(&run.id.to_string());
        let agent = ctx
            .agent
            .as_ref()
            .ok_or_else(|| RunError::new(ErrorCode::AgentStartFailed, "no agent"))?;
        let adapter = berth_agents::adapter(&agent.adapter_type).ok_or_else(|| {
            RunError::new(
                ErrorCode::UnsupportedAdapterEnvironment,
                format!("unknown adapter type \"{}\"", agent.adapter_type),
            )
        })?;
        // Secret references in the agent's env are resolved into memory for this run only;
        // their values are redacted from everything the run records.
        let (adapter_config, mut env_secrets) = crate::redact::resolve_env_secrets(
            self.store.as_ref(),
            &self.secrets,
            run.company_id,
            &agent.adapter_config,
        )
        .await
        .map_err(|e| RunError::new(ErrorCode::AgentStartFailed, e.to_string()))?;
        let api = self.api_for_agent(run, transport.as_ref(), log).await;
        if let Some((_, token)) = &api {
            env_secrets.push(token.clone());
        }
        // Step 4: resume only on an exact identity match.
        let mut resume = match self.saved_session(run, ctx).await? {
            Some(saved) => match should_resume(&saved, identity, cwd) {
                Ok(()) => match self
                    .check_session_file(adapter, transport.as_ref(), &saved, cwd)
                    .await
                {
                    Ok(()) => {
                        log.step(
                            "session_resume",
                            format!("Resuming session {}.", saved.session_id),
                            json!({"sessionId": saved.session_id}),
                        )
                        .await;
                        Some(saved)
                    }
                    Err(refused) => {
                        log.step(
                            "session_fresh",
                            format!("Starting a fresh session: {}.", refused.reason),
                            json!({"reason": refused.reason}),
                        )
                        .await;
                        None
                    }
                },
                Err(refused) => {
                    log.step(
                        "session_fresh",
                        format!("Starting a fresh session: {}.", refused.reason),
                        json!({"reason": refused.reason}),
                    )
                    .await;
                    None
                }
            },
            None => None,
        };
        let launcher = Launcher::new(transport.clone(), root.to_string());
        let mut attempt_no = 0;
        let attempt = loop {
            attempt_no += 1;
            let mut bctx =
                berth_agents::BuildContext::new(adapter_config.clone(), &run.prompt, cwd);
            bctx.run_id = run.id;
            if let Some((url, token)) = &api {
                bctx.api_url = Some(url.clone());
                bctx.api_token = Some(token.clone());
            }
            bctx.resume = resume.clone();
            bctx.is_root = is_root;
            // Adapters keep per-adapter files there (Pi's session files, synced assets).
            bctx.assets_dir_on_environment = Some(layout.assets_dir(&agent.adapter_type));
            let invocation = adapter
                .build(&bctx)
                .map_err(|e| RunError::new(ErrorCode::AgentStartFailed, e.to_string()))?;
            for note in &invocation.notes {
                log.step("adapter_note", note.clone(), json!({})).await;
            }
            let attempt = self
                .attempt(
                    run,
                    &launcher,
                    transport.as_ref(),
                    cwd,
                    adapter,
                    &invocation,
                    RemoteSession::draft(attempt_no, cwd, resume.clone())
                        .with_api_url(api.as_ref().map(|(url, _)| url.as_str())),
                    &env_secrets,
                    log,
                    cancel,
                    lost,
                )
                .await;
            let attempt = match attempt {
                Ok(a) => a,
                // The run directory is the re-attaching process's to read and remove.
                Err(e) if e.is_detached() => return Err(e),
                Err(e) => {
                    self.remove_run_dirs(
                        run,
                        transport.as_ref(),
                        root,
                        cwd,
                        &run_work,
                        attempt_no,
                        log,
                    )
                    .await;
                    return Err(e);
                }
            };
            if attempt.unknown_session
                && resume.is_some()
                && attempt.stopped.is_none()
                && attempt_no == 1
            {
                log.step(
                    "session_unknown",
                    "The CLI does not know the saved session; retrying once with a fresh session.",
                    json!({}),
                )
                .await;
                resume = None;
                continue;
            }
            if attempt.resume_ignored {
                // The work happened in the new session, which is the one saved.
                log.step(
                    "session_resume_ignored",
                    "The CLI started a new session instead of resuming the saved one; the new one is saved.",
                    json!({"requested": invocation.resume_session_id, "sessionId": attempt.summary.session_id}),
                )
                .await;
            }
            break attempt;
        };
        // A group not confirmed gone keeps its run directory: the lease's cleanup reads its
        // `pgid` there.
        if attempt.survivors.is_none() {
            self.remove_run_dirs(
                run,
                transport.as_ref(),
                root,
                cwd,
                &run_work,
                attempt_no,
                log,
            )
            .await;
        }
        Ok(self.finish_from(attempt, cwd, identity.clone(), log).await)
    }

    /// A CLI whose session is a file on the environment (Pi) resumes only when the file's
    /// header is readable and names this working directory (a missing or foreign file starts
    /// fresh).
    async fn check_session_file(
        &self,
        adapter: &dyn berth_agents::Adapter,
        transport: &dyn Transport,
        saved: &SessionParams,
        cwd: &str,
    ) -> Result<(), berth_agents::ResumeRefused> {
        let Some(file) = adapter.session_file(saved) else {
            return Ok(());
        };
        let header = match transport
            .run(
                &format!("head -n 1 -- {} 2>/dev/null", quote(&file)),
                bytes::Bytes::new(),
            )
            .await
        {
            Ok(out) if out.outcome.success() => out.stdout_text().trim().to_string(),
            Ok(_) => String::new(),
            Err(e) => {
                return Err(berth_agents::ResumeRefused {
                    reason: format!("the session file could not be read ({e})"),
                });
            }
        };
        adapter.check_session_file_header(&header, cwd)
    }

    /// The run directory's output is in the event log now; remove it (SPEC §5: per-run files
    /// do not outlive the run).
    #[allow(clippy::too_many_arguments, reason = "paths of one run")]
    pub(crate) async fn remove_run_dirs(
        &self,
        run: &Run,
        transport: &dyn Transport,
        root: &str,
        cwd: &str,
        run_work: &str,
        attempts: u32,
        log: &EventLog,
    ) {
        let layout = RemoteLayout::new(root);
        let id = run.id.to_string();
        let mut leftovers: Vec<String> = (1..=attempts.max(1))
            .map(|n| quote(&layout.run_dir(&RemoteLayout::attempt_key(&id, n))))
            .collect();
        if cwd == run_work {
            leftovers.push(quote(run_work));
        }
        if let Err(e) = transport
            .run(
                &format!("rm -rf -- {}", leftovers.join(" ")),
                bytes::Bytes::new(),
            )
            .await
        {
            log.step(
                "cleanup_failed",
                format!("Could not remove the run directory: {e}"),
                json!({}),
            )
            .await;
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the attempt needs the whole step context"
    )]
    async fn attempt(
        &self,
        run: &Run,
        launcher: &Launcher,
        transport: &dyn Transport,
        cwd: &str,
        adapter: &dyn berth_agents::Adapter,
        invocation: &berth_agents::Invocation,
        mut session: RemoteSession,
        secrets: &[Secret<String>],
        log: &EventLog,
        cancel: &CancellationToken,
        lost: &CancellationToken,
    ) -> Result<Attempt, RunError> {
        let attempt_no = session.attempt;
        // The adapter's assets (skills, instructions, CLI config) go to
        // <root>/.berth/assets/<adapter>/<key>/, never over the user's own files.
        for asset in &invocation.assets {
            // Assets are copied off this host: never anything of BERTH_HOME.
            if crate::host::overlaps_home(&asset.local_dir, &self.berth_home) {
                return Err(RunError::new(
                    ErrorCode::AssetSyncFailed,
                    format!(
                        "asset {}: {}",
                        asset.key,
                        crate::host::home_overlap_message(&asset.local_dir, &self.berth_home)
                    ),
                ));
            }
            let opts = berth_sync::AssetOptions {
                follow_symlinks: asset.follow_symlinks,
                only: asset.only.clone(),
                merge: asset.merge,
                progress: None,
            };
            let report =
                berth_sync::sync_asset(transport, &asset.local_dir, &asset.remote_dir, &opts)
                    .await
                    .map_err(|e| {
                        RunError::new(
                            ErrorCode::AssetSyncFailed,
                            format!("asset {}: {e}", asset.key),
                        )
                    })?;
            log.step(
                "asset_synced",
                format!(
                    "Asset {}: {}.",
                    asset.key,
                    if report.unchanged {
                        "unchanged".to_string()
                    } else {
                        format!("{} file(s), {} byte(s)", report.files, report.bytes)
                    }
                ),
                json!({"key": asset.key, "unchanged": report.unchanged}),
            )
            .await;
        }
        for dir in &invocation.ensure_dirs {
            let made = transport
                .run(&format!("mkdir -p -- {}", quote(dir)), bytes::Bytes::new())
                .await
                .map_err(|e| RunError::new(ErrorCode::AgentStartFailed, e.to_string()))?;
            if !made.outcome.success() {
                return Err(RunError::new(
                    ErrorCode::AgentStartFailed,
                    format!("cannot create {dir}"),
                ));
            }
        }
        let command = berth_exec::shell::exec_command(&invocation.program, &invocation.args);
        let run_key = RemoteLayout::attempt_key(&run.id.to_string(), attempt_no);
        let spec = LaunchSpec {
            run_id: run_key,
            command,
            cwd: cwd.to_string(),
            env: invocation
                .env
                .iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                .collect(),
            stdin: bytes::Bytes::from(invocation.stdin.clone()),
            login_profile: true,
        };
        let remote = launcher
            .launch(spec)
            .await
            .map_err(|e| RunError::new(ErrorCode::AgentStartFailed, e.to_string()))?;
        log.step(
            "agent_started",
            format!("Started `{}` (attempt {attempt_no}).", invocation.program),
            json!({"program": invocation.program, "args": invocation.args, "attempt": attempt_no, "pgid": remote.pgid}),
        )
        .await;
        // From here on a restarted control plane can pick the agent up again.
        session.launched(&remote);
        if let Err(e) = self
            .store
            .save_remote_session(run.id, run.lease_id, session.to_json())
            .await
        {
            tracing::warn!(run_id = %run.id, error = %e, "cannot record the remote session; a restart will not re-attach this run");
        }
        self.stream(
            launcher,
            &remote,
            adapter,
            invocation,
            secrets,
            log,
            cancel,
            lost,
            StreamStart::default(),
        )
        .await
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the stream loop watches every stop signal"
    )]
    pub(crate) async fn stream(
        &self,
        launcher: &Launcher,
        remote: &RemoteRun,
        adapter: &dyn berth_agents::Adapter,
        invocation: &berth_agents::Invocation,
        secrets: &[Secret<String>],
        log: &EventLog,
        cancel: &CancellationToken,
        lost: &CancellationToken,
        start: StreamStart,
    ) -> Result<Attempt, RunError> {
        let mut parser = adapter.parser(invocation);
        let mut redactors = [
            crate::redact::Redactor::new(secrets.iter()),
            crate::redact::Redactor::new(secrets.iter()),
        ];
        let mut summary = RunSummary::default();
        let mut offsets = start.offsets;
        let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let mut stderr_tail = String::new();
        // Output recorded before a restart: the parser reads it again (its events are already
        // in the log), so the summary and a line cut by the restart come out whole.
        for (idx, kind) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let replay = &start.replay[idx];
            if idx == 1 {
                stderr_tail = tail_of(&String::from_utf8_lossy(replay), 4096);
            }
            partial[idx].extend_from_slice(replay);
            while let Some(pos) = partial[idx].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial[idx].drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
                for event in parser.parse_line(kind, &line) {
                    summary.apply(&event);
                }
            }
        }
        let mut stopped: Option<Stopped> = None;
        let mut stop_task: Option<
            tokio::task::JoinHandle<Result<berth_exec::launcher::RunOutcome, LauncherError>>,
        > = None;
        let timeout = async {
            match run_timeout(invocation.timeout_sec) {
                Some(limit) => tokio::time::sleep(limit.saturating_sub(start.elapsed)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(timeout);
        let mut linger: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let grace = stop_grace(invocation.grace_sec);
        let mut reattaches = 0u32;
        let mut lost_stream: Option<String> = None;
        // Since when the environment has not answered; an environment unreachable for longer
        // than the lease TTL ends the run (`lease_lost`), its agent left to the lease cleanup.
        let mut unreachable_since: Option<std::time::Instant> = None;
        let reach_budget = Duration::from_secs(self.lease_ttl_secs.max(3) as u64);
        let mut stream = Box::pin(launcher.attach(remote, offsets));
        let outcome = loop {
            let mut trigger: Option<Stopped> = None;
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(AttachEvent::Output(chunk))) => {
                        unreachable_since = None;
                        reattaches = 0;
                        let (idx, name, kind) = match chunk.stream {
                            StreamKind::Stdout => (0, "stdout", Stream::Stdout),
                            StreamKind::Stderr => (1, "stderr", Stream::Stderr),
                        };
                        match chunk.stream {
                            StreamKind::Stdout => offsets.stdout = chunk.end(),
                            StreamKind::Stderr => offsets.stderr = chunk.end(),
                        }
                        let data = redactors[idx].push(&chunk.data);
                        // Bytes the redactor holds back are not recorded yet: a re-attach
                        // reads them again from `end`.
                        let end = chunk.end().saturating_sub(redactors[idx].held_back() as u64);
                        let text = String::from_utf8_lossy(&data).to_string();
                        if idx == 1 {
                            stderr_tail.push_str(&text);
                            stderr_tail = tail_of(&stderr_tail, 4096);
                        }
                        log.append(name, json!({"text": text, "offset": chunk.offset, "end": end})).await;
                        partial[idx].extend_from_slice(&data);
                        while let Some(pos) = partial[idx].iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = partial[idx].drain(..=pos).collect();
                            let line = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
                            self.record(parser.parse_line(kind, &line), &mut summary, log).await;
                        }
                        if parser.is_terminal_result() && linger.is_none() && stopped.is_none() {
                            linger = Some(Box::pin(tokio::time::sleep(self.linger)));
                        }
                    }
                    Some(Ok(AttachEvent::Exited(outcome))) => {
                        if outcome.launcher_lost && stop_task.is_none() {
                            log.step("launcher_lost", "The launcher shell on the environment died before recording the agent's exit status; stopping the agent's process group.", json!({})).await;
                            let launcher = launcher.clone();
                            let remote = remote.clone();
                            stop_task = Some(tokio::spawn(async move {
                                launcher.stop(&remote, Duration::from_secs(1), StopReason::Cancel).await
                            }));
                        }
                        break outcome;
                    }
                    Some(Err(e)) => {
                        // A dropped connection: re-attach from the offsets already recorded, so
                        // no byte is lost or duplicated.
                        reattaches += 1;
                        let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() >= reach_budget {
                            // Never leave the agent running unowned: stop its group (retried),
                            // and if that cannot be confirmed either, the lease's cleanup will.
                            log.step("stream_lost", format!("The environment did not answer for {} s, longer than the lease TTL ({e}); stopping the agent's process group.", since.elapsed().as_secs()), json!({})).await;
                            lost_stream = Some(e.to_string());
                            if stop_task.is_none() {
                                let launcher = launcher.clone();
                                let remote = remote.clone();
                                stop_task = Some(tokio::spawn(async move {
                                    launcher.stop(&remote, Duration::from_secs(1), StopReason::Cancel).await
                                }));
                            }
                            break berth_exec::launcher::RunOutcome::default();
                        }
                        log.step("reattach", format!("Output stream interrupted ({e}); re-attaching."), json!({"offsets": {"stdout": offsets.stdout, "stderr": offsets.stderr}})).await;
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(reattaches.min(8)))).await;
                        stream = Box::pin(launcher.attach(remote, offsets));
                    }
                    None => return Err(RunError::new(ErrorCode::AgentFailed, "the agent's output stream ended without an exit status")),
                },
                _ = self.detach.cancelled(), if stopped.is_none() => return Err(RunError::detached()),
                _ = cancel.cancelled(), if stopped.is_none() => trigger = Some(Stopped::Cancelled),
                _ = lost.cancelled(), if stopped.is_none() => trigger = Some(Stopped::LeaseLost),
                _ = &mut timeout, if stopped.is_none() => trigger = Some(Stopped::TimedOut),
                _ = async { match linger.as_mut() { Some(l) => l.await, None => std::future::pending().await } }, if stopped.is_none() => trigger = Some(Stopped::Lingering),
            }
            if let Some(reason) = trigger {
                stopped = Some(reason);
                let why = match reason {
                    Stopped::Cancelled => "Cancel requested: stopping the agent's process group.",
                    Stopped::TimedOut => "Timed out: stopping the agent's process group.",
                    Stopped::LeaseLost => "The lease was lost: stopping the agent at once.",
                    Stopped::Lingering => {
                        "The CLI printed its final result but did not exit: stopping it."
                    }
                };
                log.step("stopping", why, json!({})).await;
                let launcher = launcher.clone();
                let remote = remote.clone();
                let (reason, grace) = match reason {
                    Stopped::TimedOut => (StopReason::Timeout, grace),
                    Stopped::LeaseLost => (StopReason::Cancel, Duration::from_secs(1)),
                    _ => (StopReason::Cancel, grace),
                };
                stop_task = Some(tokio::spawn(async move {
                    launcher.stop(&remote, grace, reason).await
                }));
            }
        };
        // What the redactors held back (a possible start of a secret) is output too.
        for (idx, name, end) in [(0, "stdout", offsets.stdout), (1, "stderr", offsets.stderr)] {
            let rest = redactors[idx].finish();
            if idx == 1 {
                stderr_tail.push_str(&String::from_utf8_lossy(&rest));
            }
            if !rest.is_empty() {
                log.append(
                    name,
                    json!({"text": String::from_utf8_lossy(&rest), "offset": end}),
                )
                .await;
                partial[idx].extend_from_slice(&rest);
            }
        }
        for (idx, kind) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            while let Some(pos) = partial[idx].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial[idx].drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
                self.record(parser.parse_line(kind, &line), &mut summary, log)
                    .await;
            }
            if !partial[idx].is_empty() {
                let line = String::from_utf8_lossy(&partial[idx]).to_string();
                self.record(parser.parse_line(kind, &line), &mut summary, log)
                    .await;
            }
        }
        let mut survivors = None;
        if let Some(task) = stop_task {
            let first = task.await.unwrap_or_else(|e| {
                Err(LauncherError::Remote {
                    action: "stop",
                    run_id: remote.run_id.clone(),
                    env: launcher.transport().describe(),
                    detail: e.to_string(),
                })
            });
            if let Err(e) = confirm_stopped(launcher, remote, first, log).await {
                survivors = Some(e.to_string());
            }
        }
        Ok(Attempt {
            outcome,
            stopped,
            summary,
            unknown_session: parser.unknown_session(),
            resume_ignored: parser.resume_ignored(),
            stderr_tail,
            survivors,
            lost_stream,
        })
    }

    async fn record(&self, events: Vec<Event>, summary: &mut RunSummary, log: &EventLog) {
        for event in events {
            summary.apply(&event);
            // Raw output is already in the log as stdout/stderr chunks.
            if matches!(event, Event::Output { .. }) {
                continue;
            }
            log.append("agent", serde_json::to_value(&event).unwrap_or(Value::Null))
                .await;
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

#[cfg(test)]
mod timing_tests {
    use super::*;

    #[test]
    fn stop_grace_is_bounded_and_never_zero() {
        assert_eq!(stop_grace(0), Duration::from_secs(1));
        assert_eq!(stop_grace(20), Duration::from_secs(20));
        assert_eq!(stop_grace(u64::MAX), berth_exec::launcher::MAX_STOP_GRACE);
        // What the stop path adds to it cannot overflow.
        let _ = stop_grace(u64::MAX) + Duration::from_secs(30);
    }

    #[test]
    fn run_timeout_is_none_for_zero_and_capped() {
        assert_eq!(run_timeout(0), None);
        assert_eq!(run_timeout(5), Some(Duration::from_secs(5)));
        assert_eq!(run_timeout(u64::MAX), Some(MAX_RUN_TIMEOUT));
        assert!(
            tokio::time::Instant::now()
                .checked_add(MAX_RUN_TIMEOUT)
                .is_some()
        );
    }
}
