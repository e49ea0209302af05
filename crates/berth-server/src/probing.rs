//! Probing from the API: the environment's config with secrets decrypted into memory (by the
//! engine's resolver) and the agent CLIs configured for the company.

use std::path::PathBuf;
use tracing::Instrument as _;

use berth_core::adapters::default_command;
use berth_core::config::DriverConfig;
use berth_core::{CompanyId, EnvironmentId, Secret};
use berth_engine::probe::{DEFAULT_DEADLINE, ProbeResult, ProbeTarget, probe};
use berth_engine::resolve::{ResolveError, sandbox_policy, sandbox_root, ssh_root, ssh_target};
use berth_store::Page;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn resolve_err(e: ResolveError) -> ApiError {
    match e {
        ResolveError::Store(e) => e.into(),
        ResolveError::Decrypt(detail) => ApiError::internal(detail),
        other => ApiError::unprocessable(other.to_string()),
    }
}

/// The agent CLIs configured in this company (looked up on the environment's login PATH).
async fn agent_commands(state: &AppState, company_id: CompanyId) -> ApiResult<Vec<String>> {
    let agents = state.store.list_agents(company_id, &Page::all()).await?;
    let mut commands: Vec<String> = agents
        .items
        .iter()
        .filter_map(|a| {
            a.adapter_config
                .get("command")
                .and_then(|c| c.as_str())
                .map(str::to_string)
                .or_else(|| default_command(&a.adapter_type).map(str::to_string))
        })
        .collect();
    commands.sort();
    commands.dedup();
    Ok(commands)
}

/// Probe a (saved or unsaved) config. Never an error for an unreachable host: that is a
/// failed check in the result.
pub async fn probe_config(
    state: &AppState,
    company_id: CompanyId,
    environment_id: Option<EnvironmentId>,
    config: &DriverConfig,
    raw_key: Option<Secret<String>>,
    raw_passphrase: Option<Secret<String>>,
) -> ApiResult<ProbeResult> {
    let target = match config {
        DriverConfig::Local(local) => ProbeTarget::Local {
            workspace_root: local
                .workspace_root
                .as_ref()
                .map(PathBuf::from)
                .unwrap_or_else(|| state.local_root.clone()),
        },
        DriverConfig::Ssh(ssh) => {
            let target = ssh_target(
                state.store.as_ref(),
                &state.secrets,
                company_id,
                ssh,
                raw_key,
                raw_passphrase,
            )
            .await
            .map_err(resolve_err)?;
            ProbeTarget::Ssh {
                target,
                remote_workspace_path: ssh_root(ssh),
            }
        }
        DriverConfig::Sandbox(sandbox) if sandbox.provider == "bubblewrap" => {
            // A saved environment probes its own root; an unsaved config a shared one.
            let root = match environment_id {
                Some(id) => sandbox_root(&state.local_root, id),
                None => state.local_root.join("sandboxes").join("probe"),
            };
            ProbeTarget::Sandbox {
                policy: sandbox_policy(root, sandbox),
            }
        }
        other => ProbeTarget::Unsupported(other.driver()),
    };
    let commands = agent_commands(state, company_id).await?;
    let span = tracing::info_span!("probe", company_id = %company_id,
        environment_id = ?environment_id, driver = ?config.driver());
    Ok(probe(&state.ssh_pool, target, &commands, DEFAULT_DEADLINE)
        .instrument(span)
        .await)
}
