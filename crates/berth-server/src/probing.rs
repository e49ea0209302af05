//! Resolving an environment into something the engine can probe: secrets decrypted into
//! memory, the agent CLIs configured for the company, and the host-key trust flow.

use std::path::PathBuf;

use berth_core::adapters::default_command;
use berth_core::config::{DriverConfig, SecretRef, SshConfig};
use berth_core::{CompanyId, Secret};
use berth_engine::probe::{DEFAULT_DEADLINE, ProbeResult, ProbeTarget, probe};
use berth_exec::SshTarget;
use berth_store::Page;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Decrypt a secret reference of this company into memory.
pub async fn resolve_secret(
    state: &AppState,
    company_id: CompanyId,
    reference: &SecretRef,
) -> ApiResult<Secret<String>> {
    let record = match state.store.get_secret(reference.secret_id).await? {
        Some(r) if r.meta.company_id == company_id => r,
        _ => {
            return Err(ApiError::unprocessable(format!(
                "Secret {} referenced by this environment no longer exists; set the private key again.",
                reference.secret_id
            )));
        }
    };
    state
        .secrets
        .decrypt(
            company_id,
            record.meta.id,
            &record.ciphertext,
            &record.nonce,
        )
        .map_err(ApiError::internal)
}

/// An SSH target with its key and passphrase in memory (raw ones from an unsaved config win
/// over stored references).
pub async fn ssh_target(
    state: &AppState,
    company_id: CompanyId,
    config: &SshConfig,
    raw_key: Option<Secret<String>>,
    raw_passphrase: Option<Secret<String>>,
) -> ApiResult<SshTarget> {
    let mut target = SshTarget::new(config.host.clone(), config.port, config.username.clone());
    target.private_key = match (raw_key, &config.private_key_secret_ref) {
        (Some(k), _) => Some(k),
        (None, Some(r)) => Some(resolve_secret(state, company_id, r).await?),
        (None, None) => None,
    };
    target.passphrase = match (raw_passphrase, &config.private_key_passphrase_secret_ref) {
        (Some(p), _) => Some(p),
        (None, Some(r)) => Some(resolve_secret(state, company_id, r).await?),
        (None, None) => None,
    };
    target.known_hosts = config.known_hosts.clone();
    target.strict_host_key_checking = config.strict_host_key_checking;
    target.max_sessions = config.max_sessions;
    Ok(target)
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
                .unwrap_or_else(|| state.berth_home.clone()),
        },
        DriverConfig::Ssh(ssh) => {
            let target = ssh_target(state, company_id, ssh, raw_key, raw_passphrase).await?;
            let path = match (&ssh.workspace_mode, &ssh.in_place_path) {
                (berth_core::config::WorkspaceMode::InPlace, Some(p)) => p.clone(),
                _ => ssh.remote_workspace_path.clone(),
            };
            ProbeTarget::Ssh {
                target,
                remote_workspace_path: path,
            }
        }
        other => ProbeTarget::Unsupported(other.driver()),
    };
    let commands = agent_commands(state, company_id).await?;
    Ok(probe(&state.ssh_pool, target, &commands, DEFAULT_DEADLINE).await)
}
