//! Phases 4-5, resume and launch: the session decision, the API the agent reaches, assets,
//! the launcher, one retry with a fresh session, and the run directories afterwards.

use std::sync::Arc;
use std::time::Duration;

use berth_agents::{RemoteIdentity, SessionParams, should_resume};
use berth_core::Secret;
use berth_core::model::Run;
use berth_exec::launcher::{LaunchSpec, Launcher};
use berth_exec::shell::quote;
use berth_exec::{RemoteLayout, Transport};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::error::{ErrorCode, RunError};
use super::events::EventLog;
use super::execute::Orchestrator;
use super::finish::Finish;
use super::reattach::RemoteSession;
use super::select::RunContext;
use super::stream::{Attempt, StreamStart};

/// Longest run timeout honoured (7 days, as `timeoutSec` is validated): a stored config from
/// before validation cannot make a sleep overflow.
pub(crate) const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The wait between TERM and KILL for `graceSec`: at least 1 s, at most
/// [`MAX_STOP_GRACE`](berth_exec::launcher::MAX_STOP_GRACE), so no arithmetic on it can overflow.
pub(crate) fn stop_grace(grace_sec: u64) -> Duration {
    let max = berth_exec::launcher::MAX_STOP_GRACE.as_secs();
    Duration::from_secs(grace_sec.clamp(1, max))
}

/// The run's time limit for `timeoutSec` (0 = none), capped at [`MAX_RUN_TIMEOUT`].
pub(crate) fn run_timeout(timeout_sec: u64) -> Option<Duration> {
    (timeout_sec > 0).then(|| Duration::from_secs(timeout_sec).min(MAX_RUN_TIMEOUT))
}

/// Records egress refusals as run events while held; stops (with the proxy) when dropped.
pub(crate) struct EgressWatch(tokio::task::JoinHandle<()>);

impl Drop for EgressWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Orchestrator {
    /// The newest saved session of this agent on this workspace.
    pub(crate) async fn saved_session(
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

    /// `BERTH_API_URL` as the environment reaches this instance (the address itself locally,
    /// a remote forward over SSH) and a `BERTH_API_TOKEN` valid while this run is active.
    /// Without it the run goes on without the API, and says why.
    pub(crate) async fn api_for_agent(
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

    /// Start the environment's egress policy for this run (the sandbox allowlist proxy) and
    /// record every refusal as a run event until the guard is dropped.
    pub(crate) async fn watch_egress(
        &self,
        run: &Run,
        transport: &dyn Transport,
        log: &EventLog,
    ) -> Result<Option<EgressWatch>, String> {
        let Some(mut refusals) = transport
            .egress(&run.id.to_string())
            .await
            .map_err(|e| format!("cannot start the egress proxy: {e}"))?
        else {
            return Ok(None);
        };
        let log = log.clone();
        Ok(Some(EgressWatch(tokio::spawn(async move {
            while let Some(r) = refusals.recv().await {
                log.step(
                    "egress_refused",
                    format!("Egress to {} refused: {}.", r.target, r.reason),
                    json!({"target": r.target, "reason": r.reason}),
                )
                .await;
            }
        }))))
    }

    /// The run's agent, its adapter, its config with secret references resolved, and the
    /// secret values to redact from its output; failures carry `code`.
    pub(crate) async fn agent_for<'c>(
        &self,
        run: &Run,
        ctx: &'c RunContext,
        code: ErrorCode,
    ) -> Result<
        (
            &'c berth_core::model::Agent,
            &'static dyn berth_agents::Adapter,
            serde_json::Value,
            Vec<Secret<String>>,
        ),
        RunError,
    > {
        let agent = ctx
            .agent
            .as_ref()
            .ok_or_else(|| RunError::new(code, "the run's agent was deleted"))?;
        let adapter = berth_agents::adapter(&agent.adapter_type).ok_or_else(|| {
            RunError::new(
                ErrorCode::UnsupportedAdapterEnvironment,
                format!("unknown adapter type \"{}\"", agent.adapter_type),
            )
        })?;
        let (config, secrets) = crate::redact::resolve_env_secrets(
            self.store.as_ref(),
            &self.secrets,
            run.company_id,
            &agent.adapter_config,
        )
        .await
        .map_err(|e| RunError::new(code, e.to_string()))?;
        Ok((agent, adapter, config, secrets))
    }

    /// Steps 4-7: resume decision, launch, stream, retry once on an unknown session; the run
    /// directories are removed afterwards.
    #[allow(
        clippy::too_many_arguments,
        reason = "the steps need the whole run context"
    )]
    pub(crate) async fn run_agent(
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
        // Secret references in the agent's env are resolved into memory for this run only;
        // their values are redacted from everything the run records.
        let (agent, adapter, adapter_config, mut env_secrets) = self
            .agent_for(run, ctx, ErrorCode::AgentStartFailed)
            .await?;
        let api = self.api_for_agent(run, transport.as_ref(), log).await;
        let _egress = self
            .watch_egress(run, transport.as_ref(), log)
            .await
            .map_err(|e| RunError::new(ErrorCode::AgentStartFailed, e))?;
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
    pub(crate) async fn check_session_file(
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
    pub(crate) async fn attempt(
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
        // From here a restart must not run the agent a second time (see `Phase::before_launch`).
        super::phase::enter(&self.store, run.id, super::phase::Phase::Launch).await;
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
        super::phase::enter(&self.store, run.id, super::phase::Phase::Stream).await;
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
