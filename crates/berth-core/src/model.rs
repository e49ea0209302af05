//! Plain records of the data model (SPEC §3), shared by the stores and the API. Their JSON
//! form (camelCase) is the API's wire format.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ConfigIssue, ParseMode, ParsedConfig, parse_config};
use crate::enums::{
    CleanupStatus, Driver, EnvironmentSource, EnvironmentStatus, LeasePolicy, LeaseStatus,
    RunStatus, TokenKind,
};
use crate::ids::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Company {
    pub id: CompanyId,
    pub name: String,
    pub default_environment_id: Option<EnvironmentId>,
    /// Whether its agents may run on the control-plane host (the `local` driver) when the
    /// server requires tokens: an instance admin's grant (SPEC §11). The first company of an
    /// install has it.
    pub host_execution: bool,
    pub created_at: DateTime<Utc>,
}

/// An execution environment. `config` is the canonical stored JSON of its driver config
/// (see [`crate::config::DriverConfig::to_json`]); it never holds a raw secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub id: EnvironmentId,
    pub company_id: CompanyId,
    pub name: String,
    pub description: Option<String>,
    pub driver: Driver,
    pub status: EnvironmentStatus,
    pub config: Value,
    pub metadata: Option<Value>,
    pub capacity: Option<i64>,
    pub lease_policy: LeasePolicy,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Environment {
    /// The typed config; a stored row that no longer validates is reported, not hidden.
    pub fn typed_config(&self) -> Result<ParsedConfig, Vec<ConfigIssue>> {
        parse_config(self.driver, &self.config, ParseMode::Stored)
    }

    /// Whether this is the company's managed local environment (never archived or deleted).
    pub fn is_managed_local(&self) -> bool {
        self.driver == Driver::Local
            && self
                .metadata
                .as_ref()
                .and_then(|m| m.get("managedByBerth"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
    }
}

/// Fields of a new environment row (already validated).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEnvironment {
    pub company_id: CompanyId,
    pub name: String,
    pub description: Option<String>,
    pub driver: Driver,
    pub status: EnvironmentStatus,
    pub config: Value,
    pub metadata: Option<Value>,
    pub capacity: Option<i64>,
    pub lease_policy: LeasePolicy,
}

/// A partial update. `Some(None)` clears a nullable field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvironmentPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub driver: Option<Driver>,
    pub status: Option<EnvironmentStatus>,
    pub config: Option<Value>,
    pub metadata: Option<Option<Value>>,
    pub capacity: Option<Option<i64>>,
    pub lease_policy: Option<LeasePolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub id: LeaseId,
    pub company_id: CompanyId,
    pub environment_id: EnvironmentId,
    pub execution_workspace_id: Option<ExecutionWorkspaceId>,
    pub issue_id: Option<IssueId>,
    /// Paperclip's name for the run holding the lease.
    #[serde(rename = "heartbeatRunId")]
    pub run_id: Option<RunId>,
    pub agent_id: Option<AgentId>,
    pub status: LeaseStatus,
    pub lease_policy: LeasePolicy,
    pub scope_key: String,
    pub fence: i64,
    pub provider: Option<String>,
    pub provider_lease_id: Option<String>,
    pub resumed_from_lease_id: Option<LeaseId>,
    pub acquired_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// When the lease lapses unless renewed (Berth's heartbeat TTL). Paperclip's `expiresAt`
    /// is null for local and SSH leases, so the API answers it under this name.
    #[serde(rename = "heartbeatExpiresAt")]
    pub expires_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    pub cleanup_status: Option<CleanupStatus>,
    pub metadata: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SecretMeta {
    pub id: SecretId,
    pub company_id: CompanyId,
    pub name: String,
    pub description: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An encrypted secret as stored: the ciphertext and nonce, never the plaintext.
#[derive(Clone, PartialEq)]
pub struct SecretRecord {
    pub meta: SecretMeta,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: AgentId,
    pub company_id: CompanyId,
    pub name: String,
    pub adapter_type: String,
    pub adapter_config: Value,
    pub default_environment_id: Option<EnvironmentId>,
    pub grants: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: ProjectId,
    pub company_id: CompanyId,
    pub name: String,
    pub execution_workspace_policy: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    pub id: IssueId,
    pub company_id: CompanyId,
    pub project_id: Option<ProjectId>,
    pub title: String,
    pub assignee_agent_id: Option<AgentId>,
    pub execution_workspace_id: Option<ExecutionWorkspaceId>,
    pub execution_workspace_settings: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExecutionWorkspace {
    pub id: ExecutionWorkspaceId,
    pub company_id: CompanyId,
    pub project_id: Option<ProjectId>,
    pub local_path: String,
    pub config: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub id: RunId,
    pub company_id: CompanyId,
    pub agent_id: AgentId,
    pub issue_id: Option<IssueId>,
    pub execution_workspace_id: Option<ExecutionWorkspaceId>,
    pub environment_id: Option<EnvironmentId>,
    pub environment_source: Option<EnvironmentSource>,
    pub lease_id: Option<LeaseId>,
    pub status: RunStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub exit_code: Option<i64>,
    pub prompt: String,
    pub session_params: Option<Value>,
    pub result: Option<Value>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub claimed_by: Option<String>,
    /// Where a running run is in its pipeline (`select`, `lease`, `realize`, `launch`,
    /// `stream`, `restore`, `finish`), kept as it advances so a restarted or another instance
    /// knows how to pick it up; null before the run is claimed.
    #[serde(default)]
    pub phase: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    pub run_id: RunId,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub stream: String,
    pub payload: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    pub id: TokenId,
    pub name: String,
    /// The first characters of the token, shown to help the user tell tokens apart.
    pub prefix: String,
    pub kind: TokenKind,
    pub company_ids: Vec<CompanyId>,
    pub agent_id: Option<AgentId>,
    pub grants: Vec<String>,
    pub instance_admin: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ActivityEntry {
    pub id: ActivityId,
    pub company_id: CompanyId,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub details: Value,
    pub created_at: DateTime<Utc>,
}

/// Instance-wide experimental flags (`instance_settings.experimental`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExperimentalSettings {
    #[serde(default)]
    pub enable_environments: bool,
    /// Paperclip's flag; stored and returned so its clients round-trip it. Berth's selection
    /// does not depend on it (docs/paperclip-compat.md).
    #[serde(default)]
    pub enable_isolated_workspaces: bool,
    /// Paperclip's flag; stored and returned, no effect in Berth.
    #[serde(default)]
    pub auto_restart_dev_server_when_idle: bool,
}

/// The permission that mutations of environments need.
pub const GRANT_ENVIRONMENTS_MANAGE: &str = "environments:manage";
