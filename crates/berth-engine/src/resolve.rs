//! Turning a stored environment into something that can execute: its typed config with secrets
//! decrypted into memory (never a file, never an argv), and a transport.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::config::{DriverConfig, SandboxConfig, SecretRef, SshConfig, WorkspaceMode};
use berth_core::model::Environment;
use berth_core::{CompanyId, EnvironmentId, Secret};
use berth_exec::{
    LocalTransport, SandboxPolicy, SandboxTransport, SshPool, SshTarget, SshTransport, Transport,
};
use berth_store::Store;

use crate::secrets::SecretBox;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("secret {0} referenced by the environment no longer exists; set the private key again")]
    MissingSecret(String),
    #[error("failed to decrypt a secret of the environment: {0}")]
    Decrypt(String),
    #[error("the stored config of environment {name} is invalid: {message}")]
    InvalidConfig { name: String, message: String },
    #[error("{driver} environments cannot execute commands in this build")]
    Unsupported { driver: String },
    #[error(transparent)]
    Store(#[from] berth_store::StoreError),
}

/// Decrypt a secret reference of this company into memory.
pub async fn resolve_secret(
    store: &dyn Store,
    secrets: &SecretBox,
    company_id: CompanyId,
    reference: &SecretRef,
) -> Result<Secret<String>, ResolveError> {
    let record = match store.get_secret(reference.secret_id).await? {
        Some(r) if r.meta.company_id == company_id => r,
        _ => return Err(ResolveError::MissingSecret(reference.secret_id.to_string())),
    };
    secrets
        .decrypt(
            company_id,
            record.meta.id,
            &record.ciphertext,
            &record.nonce,
        )
        .map_err(|e| ResolveError::Decrypt(e.to_string()))
}

/// An SSH target with its key and passphrase in memory; raw ones (from an unsaved config) win
/// over stored references.
pub async fn ssh_target(
    store: &dyn Store,
    secrets: &SecretBox,
    company_id: CompanyId,
    config: &SshConfig,
    raw_key: Option<Secret<String>>,
    raw_passphrase: Option<Secret<String>>,
) -> Result<SshTarget, ResolveError> {
    let mut target = SshTarget::new(config.host.clone(), config.port, config.username.clone());
    target.private_key = match (raw_key, &config.private_key_secret_ref) {
        (Some(k), _) => Some(k),
        (None, Some(r)) => Some(resolve_secret(store, secrets, company_id, r).await?),
        (None, None) => None,
    };
    target.passphrase = match (raw_passphrase, &config.private_key_passphrase_secret_ref) {
        (Some(p), _) => Some(p),
        (None, Some(r)) => Some(resolve_secret(store, secrets, company_id, r).await?),
        (None, None) => None,
    };
    target.known_hosts = config.known_hosts.clone();
    target.strict_host_key_checking = config.strict_host_key_checking;
    target.max_sessions = config.max_sessions;
    target.use_agent = config.use_agent_auth;
    Ok(target)
}

/// Where Berth keeps its per-run and per-workspace state on an SSH environment.
pub fn ssh_root(config: &SshConfig) -> String {
    match (config.workspace_mode, &config.in_place_path) {
        (WorkspaceMode::InPlace, Some(p)) => p.clone(),
        _ => config.remote_workspace_path.clone(),
    }
}

/// Where a sandbox environment keeps its files on this host: `<local root>/sandboxes/<id>`,
/// beside local runs' scratch and never in `BERTH_HOME`. Each lease's workspace copy is
/// `<that>/.berth/ws/<scope>/`.
pub fn sandbox_root(local_root: &Path, environment_id: EnvironmentId) -> PathBuf {
    local_root
        .join("sandboxes")
        .join(environment_id.to_string())
}

/// The bubblewrap policy of a sandbox environment rooted at `root`.
pub fn sandbox_policy(root: PathBuf, config: &SandboxConfig) -> SandboxPolicy {
    SandboxPolicy {
        root,
        network: config.network,
        allow_hosts: config.allow_hosts.clone(),
        read_only_paths: config.read_only_paths.clone(),
        memory_limit_mb: config.memory_limit_mb,
    }
}

/// A transport for a stored environment plus its Berth root (`<root>/.berth/…`); a local
/// environment without a `workspaceRoot` uses `local_root`.
pub async fn transport_for(
    store: &dyn Store,
    secrets: &SecretBox,
    pool: &SshPool,
    local_root: &Path,
    env: &Environment,
) -> Result<(Arc<dyn Transport>, String), ResolveError> {
    let parsed = env
        .typed_config()
        .map_err(|issues| ResolveError::InvalidConfig {
            name: env.name.clone(),
            message: issues
                .first()
                .map(|i| i.message.clone())
                .unwrap_or_default(),
        })?;
    match parsed.config {
        DriverConfig::Local(local) => {
            let root = local
                .workspace_root
                .map(PathBuf::from)
                .unwrap_or_else(|| local_root.to_path_buf());
            Ok((Arc::new(LocalTransport::new()), root.display().to_string()))
        }
        DriverConfig::Ssh(ssh) => {
            let target = ssh_target(store, secrets, env.company_id, &ssh, None, None).await?;
            Ok((
                Arc::new(SshTransport::new(pool.clone(), target)),
                ssh_root(&ssh),
            ))
        }
        DriverConfig::Sandbox(sandbox) if sandbox.provider == "bubblewrap" => {
            let root = sandbox_root(local_root, env.id);
            let display = root.display().to_string();
            Ok((
                Arc::new(SandboxTransport::new(sandbox_policy(root, &sandbox))),
                display,
            ))
        }
        other => Err(ResolveError::Unsupported {
            driver: other.driver().to_string(),
        }),
    }
}
