//! Phase 3, realize: where the agent works on its environment (transport, root, working
//! directory, session identity) and what is synced there. No side effect.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_agents::RemoteIdentity;
use berth_core::Driver;
use berth_core::config::{DriverConfig, WorkspaceMode};
use berth_core::model::{Environment, Run};
use berth_exec::{RemoteLayout, Transport};
use serde_json::{Value, json};

use super::error::{ErrorCode, RunError};
use super::events::EventLog;
use super::execute::Orchestrator;
use super::select::RunContext;
use crate::reaper::scope_dir;
use crate::resolve::transport_for;

/// Sync options from an execution workspace's config (`exclude`, `syncIgnored`), with
/// transfer progress as run events.
pub(crate) fn sync_options(config: &Value, log: &EventLog) -> berth_sync::SyncOptions {
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

impl Orchestrator {
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
            (DriverConfig::Sandbox(sandbox), ws) => {
                // Nothing of BERTH_HOME may be bound into the sandbox, not even read-only.
                let dirs = std::iter::once(root.as_str())
                    .chain(sandbox.read_only_paths.iter().map(String::as_str));
                for dir in dirs {
                    if crate::host::overlaps_home(Path::new(dir), &self.berth_home) {
                        return Err(RunError::new(
                            ErrorCode::WorkspaceRealizationFailed,
                            crate::host::home_overlap_message(Path::new(dir), &self.berth_home),
                        ));
                    }
                }
                // Nor the runs root: every sandbox's copies, every local run's scratch.
                for dir in &sandbox.read_only_paths {
                    if crate::host::overlaps_home(Path::new(dir), &self.local_root) {
                        return Err(RunError::new(
                            ErrorCode::WorkspaceRealizationFailed,
                            format!(
                                "readOnlyPaths entry {dir} overlaps the runs root {}",
                                self.local_root.display()
                            ),
                        ));
                    }
                }
                let cwd = match ws {
                    Some(_) => layout.workspace_copy(&scope_dir(scope)),
                    None => run_work.clone(),
                };
                let identity = RemoteIdentity::sandbox(&env.id.to_string(), &cwd);
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
        // Copy workspaces to environments other than this host itself (in-place SSH works on
        // the developer's own checkout: no copy; a sandbox gets a copy in its own root).
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
}
