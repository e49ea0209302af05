//! One run from claim to final status. Restore and release run on every path: every early
//! return below the lease goes through `with_lease`'s single exit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_core::EnvironmentSource;
use berth_core::lease::{DEFAULT_TTL_SECS, scope_key};
use berth_core::model::{Environment, Run};
use berth_exec::SshPool;
use berth_exec::shell::quote;
use berth_store::{AcquireLease, ExecutionWorkspacePatch, RunPatch, Store};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::error::{ErrorCode, RunError};
use super::events::EventLog;
use super::finish::Finish;
use super::phase::{self, Phase};
use super::realize::Plan;
use super::select::{RunContext, load_context, select_environment};
use crate::holder::HeldLease;
use crate::secrets::SecretBox;

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
    /// `RunError::detached`); runs restoring or releasing finish first.
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
        phase::enter(&self.store, run.id, Phase::Select).await;
        let finish = match self.prepare_and_run(&run, &log, cancel).await {
            Ok(finish) => finish,
            Err(error) => Finish::failed(error),
        };
        self.conclude(run, finish, &log).await
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
        tracing::Span::current().record("environment_id", tracing::field::display(env.id));
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
            provider_lease_id: provider_lease_id(&env),
            metadata: Some(lease_metadata(&env, ctx.workspace.is_some())),
            wait: Some(self.lease_wait),
        };
        phase::enter(&self.store, run.id, Phase::Lease).await;
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
        tracing::Span::current()
            .record("lease_id", tracing::field::display(lease.id))
            .record("fence", lease.fence);
        self.lease_activity("environment.lease_acquired", &lease, None)
            .await;
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
        phase::enter(&self.store, run.id, Phase::Realize).await;

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
}

/// Paperclip's `providerLeaseId`: `ssh://user@host:port<remoteCwd>` for SSH, none otherwise.
/// Berth's remote cwd is the configured workspace path (per-workspace directories live
/// under it).
fn provider_lease_id(env: &Environment) -> Option<String> {
    match env.typed_config().ok()?.config {
        berth_core::config::DriverConfig::Ssh(ssh) => Some(format!(
            "ssh://{}@{}:{}{}",
            ssh.username, ssh.host, ssh.port, ssh.remote_workspace_path
        )),
        _ => None,
    }
}

/// Paperclip's lease metadata: `{driver, executionWorkspaceMode}` and for SSH the host,
/// port, username, remoteWorkspacePath and remoteCwd.
fn lease_metadata(env: &Environment, has_workspace: bool) -> serde_json::Value {
    let mode = if has_workspace { "isolated" } else { "shared" };
    let mut meta = json!({"driver": env.driver, "executionWorkspaceMode": mode});
    if let Ok(parsed) = env.typed_config()
        && let berth_core::config::DriverConfig::Ssh(ssh) = parsed.config
        && let Some(map) = meta.as_object_mut()
    {
        map.insert("host".into(), json!(ssh.host));
        map.insert("port".into(), json!(ssh.port));
        map.insert("username".into(), json!(ssh.username));
        map.insert(
            "remoteWorkspacePath".into(),
            json!(ssh.remote_workspace_path),
        );
        map.insert("remoteCwd".into(), json!(ssh.remote_workspace_path));
    }
    meta
}
